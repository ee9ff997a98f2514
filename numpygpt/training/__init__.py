"""Training: the optimizers, the training loop and `train()`, data parallelism over MPI
processes (parallel.py) and over one process's threads (threads.py)."""
