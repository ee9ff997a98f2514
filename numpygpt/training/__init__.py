"""Training: the optimizers, the training loop and `train()`, data parallelism over MPI."""
