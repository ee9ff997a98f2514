"""Benchmarks: a training step against PyTorch, the per-layer profile, generation, MPI."""
