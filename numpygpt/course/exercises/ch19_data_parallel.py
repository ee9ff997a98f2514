"""Notebook 19 (data parallelism): N workers' gradients of one global batch, all-reduced.

The learner gets a `worker(x_rows, y_rows) -> (loss, grads)` (a forward and backward of the
model on some rows) and plays N workers of one global batch, then the all-reduce."""

import numpy as np

from ...models.gpt import GPT, GPTConfig
from .checking import Case, run, show_report, variant


def _dp_model(dtype=np.float64):
    cfg = GPTConfig(vocab_size=7, block_size=6, n_layer=1, n_head=2, n_embd=8)
    return GPT(cfg, seed=19, dtype=dtype)


class _Shared:
    """The model the workers run, handed through the checker's deep copies untouched."""

    def __init__(self, model, dtype):
        self.model, self.dtype = model, dtype

    def __deepcopy__(self, memo):
        return self


def _dp_worker(model, record=None):
    def worker(x_rows, y_rows):
        """Forward and backward on some rows: (mean loss over them, {name: gradient})."""
        if record is not None:
            record.append(np.shape(x_rows))
        _, loss = model.forward(np.asarray(x_rows), np.asarray(y_rows))
        return float(loss), model.backward()

    return worker


def _dp(worker, x, y, N, loss_div=None, grad_div=None, shard=None, workers=None):
    """The data-parallel gradient, and its mistakes: worker r takes rows shard(r, B, N)."""
    B = len(x)
    shard = shard or (lambda r, B, N: (slice(r * B // N, (r + 1) * B // N),))
    loss, grads = 0.0, None
    for r in range(N if workers is None else workers):
        rows = shard(r, B, N)
        loss_r, g = worker(x[rows], y[rows])
        loss += loss_r
        grads = {k: v.copy() for k, v in g.items()} if grads is None else \
            {k: grads[k] + g[k] for k in grads}  # the all-reduce: a sum
    loss_div, grad_div = loss_div or N, grad_div or N
    return loss / loss_div, {k: v / grad_div for k, v in grads.items()}


DATA_PARALLEL_MISTAKES = [
    ("no 1/N anywhere: losses and gradients summed over the workers; each worker's loss is "
     "already a mean over its B/N rows, so the batch mean is the mean of the N means",
     variant(_dp, loss_div=1, grad_div=1)),
    ("the losses averaged but the gradients summed: the gradient of a mean of N losses is the "
     "mean of their gradients, so the all-reduced sum needs the same 1/N",
     variant(_dp, grad_div=1)),
    ("the gradients averaged but the losses summed: the batch's loss is the mean of the "
     "workers' losses", variant(_dp, loss_div=1)),
    ("divided by B (the rows) instead of N (the workers): each worker's loss is already a "
     "mean over its rows", lambda w, x, y, N: _dp(w, x, y, N, loss_div=len(x),
                                                  grad_div=len(x))),
    ("every worker took the first B/N rows: worker r's rows start at r B/N",
     variant(_dp, shard=lambda r, B, N: (slice(0, B // N),))),
    ("one worker missing (range(N - 1)?): the last B/N rows never reach the sum",
     lambda w, x, y, N: _dp(w, x, y, N, workers=N - 1)),
    ("split along T (the columns x[:, ...]), not along the batch: a worker then sees pieces of "
     "sequences, at the wrong positions",
     lambda w, x, y, N: _dp(w, x, y, N, shard=lambda r, B, N: (
         slice(None), slice(r * x.shape[1] // N, (r + 1) * x.shape[1] // N)))
     if x.shape[1] % N == 0 else None),
]


def reference_data_parallel_grads(worker, x, y, N):
    """N workers, worker r on rows [r B/N, (r+1) B/N); the mean of their losses and of their
    gradients (the all-reduced sum / N)."""
    return _dp(worker, x, y, N)


def _named(mistake):
    """A mistake that returns None for inputs where it does not apply (raises instead)."""
    def where_it_applies(*args):
        out = mistake(*args)
        if out is None:
            raise ValueError("does not apply")
        return out

    return where_it_applies


def _prefer(report, sentence):
    """Where `sentence` names the mistake under an output, drop the other "this looks like"
    sentences there: "no 1/N anywhere" also fits, output by output, the mistakes that forget
    the 1/N only on the loss or only on the gradients."""
    looks = "    this looks like: "
    head = looks + sentence[:40]
    out, block = [], []
    for line in [*report.lines, "✓"]:  # the sentinel ends the last block (and is dropped)
        if line.startswith(" "):
            block.append(line)
            continue
        entries = _split_entries(block)
        if any(e.startswith(head) for e in entries):
            entries = [e for e in entries if not e.startswith(looks) or e.startswith(head)]
        out += [ln for e in entries for ln in e.split("\n")]
        block = [line]
    report.lines = out
    return report


def _split_entries(block):
    """The lines of a block joined into entries: a line with its wrapped continuations."""
    entries = []
    for line in block:
        if line.startswith("      ") and entries:
            entries[-1] += "\n" + line
        else:
            entries.append(line)
    return entries


def check_data_parallel_grads(fn, show=True):
    """fn(worker, x, y, N) -> (loss, grads): play N data-parallel workers on the global batch
    (x, y) of shape (B, T), worker(x_rows, y_rows) -> (mean loss, {name: gradient}) being one
    worker's forward and backward; the result must be the loss and gradients of the whole
    batch. Tried with B=4, N=2, B=6, N=3 and B=3, N=1 (one worker) on a one-block GPT in
    float64, then with a float32 model."""
    model = _dp_model()
    keys = list(model.params)
    sizes = [model.params[k].size for k in keys]
    starts = np.cumsum([0, *sizes])
    calls = {}

    def flat(result):
        # (loss, {name: grad}) -> (loss, one flat array in the model's order), if it is that;
        # ({name: grad}, loss), the two swapped, the same way round, for the report to say so
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            return result
        swapped = isinstance(result[0], dict) and not isinstance(result[1], dict)
        loss, grads = result[::-1] if swapped else result
        if not isinstance(grads, dict) or set(grads) != set(keys):
            return result
        try:
            grads = np.concatenate([np.asarray(grads[k]).ravel() for k in keys])
        except (ValueError, TypeError):
            return result
        return (grads, loss) if swapped else (loss, grads)

    def call(f, args):
        x, y, N, shared = args
        record = calls[id(f), len(x), N, shared.dtype] = []
        return flat(f(_dp_worker(shared.model, record), x, y, N))

    def index(w):
        i = int(w[0])
        j = int(np.searchsorted(starts, i, side="right")) - 1
        at = np.unravel_index(i - starts[j], model.params[keys[j]].shape)
        return f"grads['{keys[j]}'][{', '.join(str(int(a)) for a in at)}]"

    # a float32 model, and a float64 one with the same (float32) weights for the expected
    model32, wide = _dp_model(np.float32), _dp_model()
    for k in keys:
        wide.params[k][...] = model32.params[k]
    rng = np.random.default_rng(19)
    cases = []
    for B, N, dtype in ((4, 2, np.float64), (6, 3, np.float64), (3, 1, np.float64),
                        (4, 2, np.float32)):
        x, y = rng.integers(0, 7, (B, 6)), rng.integers(0, 7, (B, 6))  # (B, T)
        whole = model if dtype == np.float64 else wide
        _, loss = whole.forward(x, y)
        g = whole.backward()  # the whole batch at once: what N workers must reproduce
        expected = (float(loss), np.concatenate([g[k].ravel() for k in keys]))
        shared = _Shared(model if dtype == np.float64 else model32, np.dtype(dtype))
        label = f"B={B}, N={N}" + (": one worker" if N == 1 else "") + \
            ("" if dtype == np.float64 else ", float32 model")
        # terms: a weight's gradient sums over the B T positions (and the workers' means)
        cases.append(Case((x, y, N, shared), ("loss", "grads"), expected, label,
                          call=call, arg_names=("x", "y", "N", "worker"), index=index,
                          terms=B * 6, dtype=dtype, strict_dtype=False,
                          after_pass=dtype != np.float64))
    report = run("data-parallel gradients", fn, cases, [
        (s, _named(m)) for s, m in DATA_PARALLEL_MISTAKES], {
        "call": "fn(worker, x, y, N): worker(x_rows, y_rows) returns (loss, grads); return "
                "(loss, grads) of the whole batch, grads a dict like the worker's",
        "loss": "each worker's loss is the mean over its own rows",
        "grads": "a dict {name: gradient} with the worker's keys; the gradient of a mean is "
                 "the mean of the gradients"}, show=False)
    _prefer(report, DATA_PARALLEL_MISTAKES[0][0])
    shapes = calls.get((id(fn), 6, 3, np.dtype(np.float64)))  # the B=6, N=3 case's calls
    if report.ok and shapes is not None and shapes != [(2, 6)] * 3:
        report.fail("calls", f"the right numbers, but worker was called on "
                             f"{[s[0] for s in shapes]} rows (B=6, N=3): each of the N "
                             f"workers computes only its B/N rows, one call each")
    return show_report(report, show)
