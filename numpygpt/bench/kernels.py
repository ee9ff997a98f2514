"""Every kernel of both models, fwd+bwd, against PyTorch's own op: `bench --kernels [--vs-torch]`.

One row per kernel a GPT or a Llama calls through numpygpt.kernels' table, at the small
shapes (B=16, T=256, C=384, 6 heads): numpygpt's plain layer, the table's chosen kernel
("ours": the fast twin where there is one), and with --vs-torch the op a PyTorch user would
write (F.layer_norm, F.rms_norm, F.gelu(approximate="tanh"), F.scaled_dot_product_attention,
F.cross_entropy, torch.optim.AdamW, F.embedding), each forward then backward on the same
inputs. Every round runs each row's contenders one after the other, and each ratio is the
median over rounds of the per-round ratio (bench/__init__.py says why). With more than one
thread, a "team" column runs ours as `train --threads N` does (training/threads.py): N
threads at once, each on its share of the batch with one BLAS thread.

bench_flash: flash attention (kernels/flash.py) against the plain and blocked heads at T=256
and T=1024: the memory the heads keep from forward to backward, the peak while they run
(numpy's allocations, read by tracemalloc), and the time against PyTorch's SDPA.
"""

from __future__ import annotations

import os
import statistics
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

from .. import layers as L
from ..kernels import CHOICES, FLASH, PLAIN, fast, which_kernels
from ..layers.adamw import decays
from ..training.threads import batch_shares, in_threads
from .machine import (
    HANDOVER_SECONDS,
    WARM_UP_SECONDS,
    blas_description,
    cpu_name,
    fair_turns,
    limit_threads,
    memory_note,
    threads_text,
)

SHAPES = dict(B=16, T=256, C=384, nh=6, nkv=2, hidden=1024, V=65)  # GPT small; Llama alike
FLASH_LENGTHS = ((256, 16), (1024, 4))  # (T, B) of bench_flash: the same tokens per batch


@dataclass
class KernelCase:
    """One row: `ours(table)` makes a closure running the kernel's forward and backward with
    that table's functions; `torch()` (None: no PyTorch op) makes PyTorch's. team: whether
    the threads of `train --threads N` share the kernel's batch (AdamW's update runs on one
    thread in their step)."""

    name: str
    ours: object
    torch: object = None
    team: bool = True


def _floats(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def kernel_cases(B, T, C, nh, nkv, hidden, V, seed=0):
    """The rows of the table, on random float32 inputs of these sizes."""
    rng = np.random.default_rng(seed)
    hs = C // nh
    x, dx = _floats(rng, B, T, C), _floats(rng, B, T, C)
    w, b = _floats(rng, C), _floats(rng, C)
    h, dh = _floats(rng, B, T, 4 * C, scale=2.0), _floats(rng, B, T, 4 * C)
    wg, wu, wd = (_floats(rng, C, hidden, scale=0.05), _floats(rng, C, hidden, scale=0.05),
                  _floats(rng, hidden, C, scale=0.05))
    qkv = _floats(rng, B, T, 3 * C)
    q, k, v = _floats(rng, B, nh, T, hs), _floats(rng, B, nkv, T, hs), _floats(rng, B, nkv, T, hs)
    dq = _floats(rng, B, nh, T, hs)
    logits, targets = _floats(rng, B * T, V, scale=2.0), rng.integers(0, V, B * T)
    idx, wte = rng.integers(0, V, (B, T)), _floats(rng, V, C, scale=0.02)

    def pair(fwd, bwd, args, dout, **kw):  # forward then backward, the table's functions
        def make(t):
            f, g = t[fwd], t[bwd]
            return lambda: g(dout, f(*args, **kw)[1])
        return make

    def attention(p):
        def make(t):
            f, g = t["attention_core_forward"], t["attention_core_backward"]
            return lambda: g(dx, f(qkv, nh, p, np.random.default_rng(0))[1])
        return make

    def gqa(t):  # the heads inside the table's GQA layer
        f, g = _gqa_heads(t)
        return lambda: g(dq, f(q, k, v)[1])

    def adamw(t):
        params = {"w": _floats(rng, C, 4 * C), "b": _floats(rng, 4 * C)} | {
            f"w{i}": _floats(rng, C, C) for i in range(8)}  # 12 C^2 + 4 C: 2-D and 1-D
        grads = {n: _floats(rng, *p.shape) for n, p in params.items()}
        m = {n: np.zeros_like(p) for n, p in params.items()}
        s = {n: np.zeros_like(p) for n, p in params.items()}
        tmp = {n: np.empty_like(p) for n, p in params.items()}
        f = t["adamw_update"]
        return lambda: [f(p, grads[n], m[n], s[n], 1, 1e-3, (0.9, 0.99), 1e-8, 0.1, tmp[n])
                        for n, p in params.items()]

    cases = [
        KernelCase("layer norm", pair("layernorm_forward", "layernorm_backward", (x, w, b), dx),
                   lambda: _torch_pair(lambda F, a: F.layer_norm(a[0], (C,), a[1], a[2], 1e-5),
                                       (x, w, b), dx)),
        KernelCase("RMSNorm", pair("rmsnorm_forward", "rmsnorm_backward", (x, w), dx),
                   lambda: _torch_pair(lambda F, a: F.rms_norm(a[0], (C,), a[1], 1e-5),
                                       (x, w), dx)),
        KernelCase("GELU (tanh)", pair("gelu_forward", "gelu_backward", (h,), dh),
                   lambda: _torch_pair(lambda F, a: F.gelu(a[0], approximate="tanh"), (h,), dh)),
        KernelCase("SwiGLU MLP", pair("swiglu_mlp_forward", "swiglu_mlp_backward",
                                      (x, wg, wu, wd), dx),
                   lambda: _torch_pair(lambda F, a: (F.silu(a[0] @ a[1]) * (a[0] @ a[2])) @ a[3],
                                       (x, wg, wu, wd), dx)),
        KernelCase("attention, causal", attention(0.0), lambda: _torch_attention(qkv, nh, dx, 0.0)),
        KernelCase("attention, dropout 0.2", attention(0.2),
                   lambda: _torch_attention(qkv, nh, dx, 0.2)),
        # flash attention whatever the table holds (the plain column: the plain heads)
        KernelCase("flash attention, causal", lambda t: attention(0.0)(_flash_or_plain(t)),
                   lambda: _torch_attention(qkv, nh, dx, 0.0)),
        KernelCase("flash attention, drop 0.2", lambda t: attention(0.2)(_flash_or_plain(t)),
                   lambda: _torch_attention(qkv, nh, dx, 0.2)),
        KernelCase("GQA heads", gqa,
                   lambda: _torch_pair(lambda F, a: F.scaled_dot_product_attention(
                       a[0], a[1], a[2], is_causal=True, enable_gqa=True), (q, k, v), dq)),
        KernelCase("softmax cross-entropy", pair(
            "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
            (logits, targets), 1.0),
                   lambda: _torch_pair(lambda F, a: F.cross_entropy(a[0], _long(targets)),
                                       (logits,), None)),
        KernelCase("AdamW, 12 C^2 params", adamw, lambda: _torch_adamw(rng, C), team=False),
        KernelCase("embedding", pair("embedding_forward", "embedding_backward", (idx, wte), dx),
                   lambda: _torch_pair(lambda F, a: F.embedding(_long(idx), a[0]), (wte,), dx)),
    ]
    return cases


def _flash_or_plain(table):
    return PLAIN if table is PLAIN else FLASH


def _gqa_heads(table):
    """The heads (forward, backward) inside the table's GQA layer: the blocked ones of
    kernels/fast.py, or the plain layer's."""
    if table["gqa_attention_forward"] is fast.gqa_attention_forward:
        return fast.gqa_core_forward, fast.gqa_core_backward
    return L.gqa_core_forward, L.gqa_core_backward


def _long(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).long()


def _torch_pair(op, args, dout):
    """PyTorch's forward then backward of op(F, leaves) with upstream gradient dout (None:
    op returns a scalar)."""
    import torch
    from torch.nn import functional as F

    leaves = [torch.tensor(a, requires_grad=True) for a in args]
    d = None if dout is None else torch.from_numpy(np.ascontiguousarray(dout))

    def run():
        for t in leaves:
            t.grad = None
        op(F, leaves).backward(d)

    return run


def _torch_attention(qkv, nh, dy, p):
    """PyTorch's heads: SDPA, causal, as nanoGPT calls it, from a (B, T, 3C) leaf."""
    import torch
    from torch.nn import functional as F

    B, T, C3 = qkv.shape
    leaf, d = torch.tensor(qkv, requires_grad=True), torch.from_numpy(dy)

    def run():
        leaf.grad = None
        q, k, v = leaf.view(B, T, 3, nh, C3 // 3 // nh).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        y.transpose(1, 2).reshape(B, T, C3 // 3).backward(d)

    return run


def _torch_adamw(rng, C):
    """torch.optim.AdamW's step on the same parameter shapes, decay on 2-D ones only."""
    import torch

    shapes = [(C, 4 * C), (4 * C,)] + [(C, C)] * 8
    params = [torch.tensor(_floats(rng, *s), requires_grad=True) for s in shapes]
    for t in params:
        t.grad = torch.from_numpy(_floats(rng, *t.shape))
    groups = [{"params": [t for t in params if decays(t)], "weight_decay": 0.1},
              {"params": [t for t in params if not decays(t)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99))
    return opt.step


class _TeamTurn:
    """A contender running one row's kernel as the threads of `train --threads N` run it
    (training/threads.py): N threads at once, thread k on share k of the batch with one BLAS
    thread. Each thread makes `reps` calls in a row before they meet again, as the team's
    threads go through a whole step without waiting on each other: one call of this object
    is `reps` calls of the kernel (_interleaved divides by it)."""

    def __init__(self, closures, pool, blas):
        self.closures, self.pool, self.blas, self.reps = closures, pool, blas, 1

    def _calls(self, k):  # thread k: its share's kernel, reps times
        for _ in range(self.reps):
            self.closures[k]()

    def __call__(self):
        in_threads(self.pool, self.blas, self._calls, len(self.closures))  # as the team does


def _team_closures(shapes, threads, table):
    """{row name: [one closure per share]}: the rows' kernels on the batch shares of
    `threads` threads (batch_shares), each share's inputs drawn at its own size."""
    rows = {}
    for k, share in enumerate(batch_shares(shapes["B"], threads)):
        for case in kernel_cases(**{**shapes, "B": share.stop - share.start}, seed=k + 1):
            if case.team:
                rows.setdefault(case.name, []).append(case.ours(table))
    return rows


def _threads(threads, vs_torch):
    """Limit numpy's BLAS (and PyTorch's, imported first so that the limit reaches it).
    Returns the threads each runs on: 1 without PyTorch, where no pause is needed between
    the contenders (see machine.hand_over)."""
    if vs_torch:
        import torch  # noqa: F401
    if threads:
        limit_threads(threads)
    return (threads or os.cpu_count()) if vs_torch else 1


# A contender's turn lasts at least this long: a short kernel (layer norm, cross-entropy, the
# embedding: a fraction of a millisecond) runs several times in a row, and each call but the
# first finds its inputs in the cache, as it does in a step, where the layer before has just
# written them. One call per turn measured every contender with cold inputs (the other two had
# run in between): PyTorch's fused layer norm took 1.3-1.9 ms that way and 0.88 ms back to back
# on the 2-core AMD EPYC, numpygpt's 3.0-4.8 and 2.9 ms.
TURN_SECONDS = 0.02


def _interleaved(fns, rounds, threads=1, turn=TURN_SECONDS):
    """{name: [seconds per call, one per round]}: after one warm-up call each, each round
    times every fn in turn over as many calls in a row as fill `turn` seconds (at least one;
    the warm-up call's time decides how many). With more than one thread, machine.hand_over's
    pause and untimed calls come before every turn."""
    calls = {}
    for name, f in fns.items():
        t0 = time.perf_counter()
        f()
        calls[name] = max(1, int(turn / max(time.perf_counter() - t0, 1e-9)))
        if isinstance(f, _TeamTurn):  # its threads make the calls, meeting once per turn
            f.reps, calls[name] = calls[name], 1
    times = fair_turns(fns, rounds, calls, threads)
    for name, f in fns.items():
        if isinstance(f, _TeamTurn):
            times[name] = [t / f.reps for t in times[name]]
    return times


def _ratio(a, b):
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def bench_kernels(rounds=7, threads=None, vs_torch=False, shapes=None, names=None):
    """Time every row of kernel_cases: plain, ours (the chosen table) and, with vs_torch,
    PyTorch's op, interleaved over `rounds`; with more than one thread (`threads`, or all the
    cores) also ours as `train --threads N` runs it (_TeamTurn). names: only these rows
    (tests). Returns a dict with one entry per row (ms medians and the median ratios)."""
    n_threads = _threads(threads, vs_torch)
    shapes = {**SHAPES, **(shapes or {})}
    team_threads = min(threads or os.cpu_count() or 1, shapes["B"])  # no thread without rows
    table = CHOICES[which_kernels()]
    team = _team_closures(shapes, team_threads, table) if team_threads > 1 else {}
    if team:  # OpenBLAS's idle worker would spin on the core a thread of the team needs
        n_threads = max(n_threads, team_threads)
    pool = ThreadPoolExecutor(team_threads - 1, thread_name_prefix="numpygpt-bench") \
        if team else None
    blas = ThreadpoolController() if team else None
    rows = []
    try:
        for case in kernel_cases(**shapes):
            if names and case.name not in names:
                continue
            fns = {"plain": case.ours(PLAIN), "ours": case.ours(table)}
            if case.name in team:
                fns["team"] = _TeamTurn(team[case.name], pool, blas)
            if vs_torch and case.torch is not None:
                fns["torch"] = case.torch()
            t = _interleaved(fns, rounds, n_threads)
            row = {"kernel": case.name,
                   **{f"{n}_ms": 1e3 * statistics.median(s) for n, s in t.items()},
                   "ours_vs_plain": _ratio(t["ours"], t["plain"])}
            if "team" in t:
                row["team_vs_ours"] = _ratio(t["team"], t["ours"])
            if "torch" in t:
                row["ours_vs_torch"] = _ratio(t["ours"], t["torch"])
                row["plain_vs_torch"] = _ratio(t["plain"], t["torch"])
                if "team" in t:
                    row["team_vs_torch"] = _ratio(t["team"], t["torch"])
            rows.append(row)
    finally:
        if pool:
            pool.shutdown(wait=True)
    res = {"shapes": shapes, "rounds": rounds, "turn_s": TURN_SECONDS,
           "kernels": which_kernels(), "cpu": cpu_name(), "blas": blas_description(), "rows": rows,
           "handover_s": HANDOVER_SECONDS if n_threads > 1 else 0.0,
           "warm_up_s": WARM_UP_SECONDS if n_threads > 1 else 0.0,
           "team_threads": team_threads if team else 1}
    if vs_torch:
        import torch

        res["torch_version"], res["torch_threads"] = torch.__version__, torch.get_num_threads()
    return res


def format_kernels(r):
    """The table `bench --kernels` prints."""
    s = r["shapes"]
    vs = "torch_version" in r
    lines = [f"kernels, forward + backward each (AdamW: one update), float32, B={s['B']} "
             f"T={s['T']} C={s['C']} nh={s['nh']} (GQA nkv={s['nkv']}, SwiGLU hidden "
             f"{s['hidden']}, V={s['V']}); medians of {r['rounds']} interleaved rounds, each "
             f"turn {1e3 * r['turn_s']:g} ms or more of calls in a row (inputs warm, as in a step)",
             f"CPU: {r['cpu']}; BLAS: {r['blas']}"
             + (f"; PyTorch {r['torch_version']}, {threads_text(r['torch_threads'])}" if vs else "")
             + (f"; {memory_note(r['freed_memory_kept'])}" if "freed_memory_kept" in r else ""),
             f"ours = the '{r['kernels']}' kernel table (NUMPYGPT_KERNELS); flash rows: "
             "kernels/flash.py"
             + (f"; before each timed call a {r['handover_s']:g} s pause (the idle worker threads "
                f"of the call before stop spinning) and {r['warm_up_s']:g} s of untimed calls"
                if r.get("handover_s") else "")]
    n = r.get("team_threads", 1)
    if n > 1:
        lines.append(f"team = ours as `train --threads {n}` runs it: {n} threads at once, each on "
                     f"its share of the batch (B={s['B']} in {n}) with one BLAS thread; AdamW has "
                     "none (that step updates the weights on one thread)")
    lines += ["", f"{'kernel':<28}{'plain ms':>10}{'ours ms':>10}"
              + (f"{'torch ms':>10}{'ours/torch':>12}{'plain/torch':>13}" if vs else "")
              + f"{'ours/plain':>12}"
              + (f"{'team ms':>10}" + (f"{'team/torch':>12}" if vs else f"{'team/ours':>11}")
                 if n > 1 else "")]
    for row in r["rows"]:
        line = f"{row['kernel']:<28}{row['plain_ms']:10.2f}{row['ours_ms']:10.2f}"
        if vs:
            line += (f"{row['torch_ms']:10.2f}{row['ours_vs_torch']:11.2f}x"
                     f"{row['plain_vs_torch']:12.2f}x" if "torch_ms" in row else f"{'':35}")
        line += f"{row['ours_vs_plain']:11.2f}x"
        if "team_ms" in row:
            ratio = row.get("team_vs_torch") if vs else row["team_vs_ours"]
            line += f"{row['team_ms']:10.2f}" + (f"{ratio:11.2f}x" if ratio is not None
                                                 else f"{'':12}")
        lines.append(line.rstrip())
    return "\n".join(lines)


# --- flash attention: memory and speed at two lengths -------------------------------------


def _held_bytes(cache):
    """Bytes of the arrays a cache keeps alive (a view counts its base, once)."""
    seen = {}
    for a in cache:
        if isinstance(a, np.ndarray):
            while isinstance(a.base, np.ndarray):
                a = a.base
            seen[id(a)] = a.nbytes
    return sum(seen.values())


def _memory(table, qkv, dy, nh, p):
    """(bytes the heads' cache holds, peak bytes numpy allocated during forward + backward)."""
    f, g = table["attention_core_forward"], table["attention_core_backward"]
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        _, cache = f(qkv, nh, p, np.random.default_rng(0))
        held = _held_bytes(cache)
        g(dy, cache)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return held, peak


def bench_flash(lengths=None, C=None, nh=None, p=0.0, rounds=5, vs_torch=False, threads=None):
    """Flash attention against the plain and the blocked (fast.py) heads: for each (T, B) of
    `lengths`, the cache's size and the peak memory of forward + backward (float32), and the
    time of each, interleaved, with PyTorch's SDPA when vs_torch. Returns a list of rows."""
    n_threads = _threads(threads, vs_torch)
    C, nh = C or SHAPES["C"], nh or SHAPES["nh"]
    tables = {"plain": PLAIN, "blocked": CHOICES["fast"], "flash": FLASH}
    rows = []
    for T, B in lengths or FLASH_LENGTHS:
        rng = np.random.default_rng(0)
        qkv, dy = _floats(rng, B, T, 3 * C), _floats(rng, B, T, C)
        row = {"T": T, "B": B, "C": C, "nh": nh, "p": p}
        for name, table in tables.items():
            row[f"{name}_cache_mb"], row[f"{name}_peak_mb"] = (
                x / 2**20 for x in _memory(table, qkv, dy, nh, p))
        fns = {}
        for name, table in tables.items():
            f, g = table["attention_core_forward"], table["attention_core_backward"]
            fns[name] = lambda f=f, g=g, qkv=qkv, dy=dy: g(
                dy, f(qkv, nh, p, np.random.default_rng(0))[1])
        if vs_torch:
            fns["torch"] = _torch_attention(qkv, nh, dy, p)
        t = _interleaved(fns, rounds, n_threads)
        for name in fns:
            row[f"{name}_ms"] = 1e3 * statistics.median(t[name])
        row["flash_vs_plain"] = _ratio(t["flash"], t["plain"])
        row["flash_vs_blocked"] = _ratio(t["flash"], t["blocked"])
        if vs_torch:
            row["flash_vs_torch"] = _ratio(t["flash"], t["torch"])
            row["blocked_vs_torch"] = _ratio(t["blocked"], t["torch"])
        rows.append(row)
    return rows


def format_flash(rows):
    lines = [f"attention heads fwd+bwd, C={rows[0]['C']} nh={rows[0]['nh']}, float32: memory "
             "kept for backward (cache) and peak during fwd+bwd (numpy's allocations), and time "
             "(blocked: kernels/fast.py's heads, which keep the (T, T) probabilities)"]
    for r in rows:
        lines.append(f"  T={r['T']} B={r['B']} dropout {r['p']}:")
        for name in ("plain", "blocked", "flash"):
            t = f"{r[f'{name}_ms']:8.1f} ms"
            lines.append(f"    {name:<8} cache {r[f'{name}_cache_mb']:8.1f} MB   peak "
                         f"{r[f'{name}_peak_mb']:8.1f} MB   {t}")
        extra = (f", vs PyTorch SDPA ({r['torch_ms']:.1f} ms): flash {r['flash_vs_torch']:.2f}x, "
                 f"blocked {r['blocked_vs_torch']:.2f}x" if "torch_ms" in r else "")
        lines.append(f"    flash/plain {r['flash_vs_plain']:.2f}x, flash/blocked "
                     f"{r['flash_vs_blocked']:.2f}x{extra}")
    return "\n".join(lines)
