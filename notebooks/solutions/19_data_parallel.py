# Solutions for notebooks/19_data_parallel.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions).

# %% my_data_parallel_grads
def my_data_parallel_grads(worker, x, y, N):
    """N data-parallel workers on one global batch.

    Inputs:
    - worker: worker(x_rows, y_rows) -> (loss, grads): the mean loss over those rows (a float)
      and {name: gradient array}, one worker's forward and backward pass
    - x, y: (B, T) int arrays, the global batch (B divisible by N)
    - N: the number of workers

    Returns (loss, grads): the mean loss over the whole batch and {name: its gradient}.
    """
    rows = len(x) // N  # B/N rows per worker
    loss_sum, grad_sum = 0.0, None
    for r in range(N):
        part = slice(r * rows, (r + 1) * rows)  # worker r's rows
        loss_r, g = worker(x[part], y[part])
        loss_sum += loss_r
        # the all-reduce: a sum over the workers, tensor by tensor
        grad_sum = dict(g) if grad_sum is None else {k: grad_sum[k] + g[k] for k in g}
    # Each worker's loss is already a mean over its B/N rows x T targets, all of equal size,
    # so the batch's mean is the mean of the N means; the gradient is linear: the same 1/N.
    return loss_sum / N, {k: v / N for k, v in grad_sum.items()}
