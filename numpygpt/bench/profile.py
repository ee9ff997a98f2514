"""Where one training step's time goes: `python -m numpygpt bench --profile [--vs-torch]`.

numpygpt's side: the models call every kernel through one table, numpygpt.kernels.ops. While
a profiled step runs, timed_layers puts a timing wrapper in front of each of the table's
entries in PROFILED_LAYERS (and puts the kernels back afterwards), so each call adds its time
and its matrix products' FLOPs to a row of the table (PROFILE_ROWS): the four linear maps of a
block get a row each, told apart by their weight's shape. What the wrappers do not see, the
model's own code between kernel calls (residual adds, reshapes, and the tied LM head's
matmuls, which GPT.forward and GPT.backward do themselves), is the forward or backward time
minus the kernels' time: the row "model glue + LM head". Only rows that ran appear, so a
kernel a GPT never calls (the Llama's) has no row.

PyTorch's side (profile_torch_step): the same step under torch.profiler, by operator group.
The picture of both is chart.plot_profile.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time

from ..kernels import ops
from ..training.optim import clip_grad_norm
from .machine import (
    blas_description,
    cpu_name,
    limit_threads,
    matmul_peak,
    seconds_per_call,
    threads_text,
)
from .step import BENCH_CONFIGS, check_counts, model_config, numpy_step_fn

PROFILED_LAYERS = {  # kind (ops.<kind>_forward / _backward) -> row of the table
    "embedding": "embedding",
    "learned_positional": "positional",
    "sinusoidal_positional": "positional",
    "dropout": "dropout",
    "layernorm": "layer norm",
    "linear": "linear",  # split into its four uses by _linear_row
    "attention_core": "attention heads",
    "gelu": "GELU",
    "softmax_cross_entropy": "softmax cross-entropy",
}
GLUE = "model glue + LM head"
PROFILE_ROWS = ("embedding", "positional", "dropout", "layer norm", "linear c_attn",
                "attention heads", "linear attn.c_proj", "linear mlp.c_fc", "GELU",
                "linear mlp.c_proj", GLUE, "softmax cross-entropy", "clip", "AdamW")


def _linear_row(w):
    """Which of a block's four linear maps has weight w (in, out): C->3C c_attn, C->C
    attention's c_proj, C->4C the MLP's c_fc, 4C->C the MLP's c_proj."""
    Din, Dout = w.shape
    return "linear " + {3 * Din: "c_attn", Din: "attn.c_proj", 4 * Din: "mlp.c_fc"}.get(
        Dout, "mlp.c_proj")


def gemm_flops(fn_name, args, kwargs):
    """The FLOPs of the matrix products in one call of kernel fn_name (2 per multiply-add:
    2 M K N for an (M, K) @ (K, N) product), from its arguments' shapes; 0 for a kernel
    without matrix products. Attention counts the full T x T scores, as step_flops."""
    if fn_name == "linear_forward":  # x @ w: (N, Din) @ (Din, Dout)
        x, w = args[0], args[1]
        return 2 * (x.size // w.shape[0]) * w.size
    if fn_name == "linear_backward":  # dx = dy @ w.T, and dw = x.T @ dy unless w is frozen
        x, w = args[1]
        frozen = kwargs.get("frozen", args[2] if len(args) > 2 else False)
        return (1 if frozen else 2) * 2 * (x.size // w.shape[0]) * w.size
    if fn_name == "attention_core_forward":  # q k^T and att @ v, each 2 T T hs per (b, head)
        B, T, C3 = args[0].shape
        return 2 * 2 * B * T * T * (C3 // 3)
    if fn_name == "attention_core_backward":  # dv, datt, dq and dk
        B, nh, T, hs = args[1].q.shape
        return 4 * 2 * B * nh * T * T * hs
    return 0


def _timed(fn, kind, direction, record):
    """fn, wrapped: each call adds its seconds, its matmul FLOPs and 1 (a count of calls) to
    record[(row, direction)]."""
    name = f"{kind}_{direction}"

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        seconds = time.perf_counter() - t0
        row = PROFILED_LAYERS[kind]
        if row == "linear":  # the weight: forward's second argument, in backward's cache
            row = _linear_row(args[1] if direction == "forward" else args[1][1])
        entry = record.setdefault((row, direction), [0.0, 0, 0])
        entry[0] += seconds
        entry[1] += gemm_flops(name, args, kwargs)
        entry[2] += 1
        return out

    return timed


@contextlib.contextmanager
def timed_layers(record):
    """Inside `with timed_layers(record):`, each kernel of PROFILED_LAYERS that the kernel
    table holds (numpygpt.kernels.ops, fast or plain, whichever is chosen) is replaced in the
    table by a wrapper that calls it and adds its time, its matmul FLOPs and 1 to
    record[(row, "forward" or "backward")] = [seconds, flops, calls]. The table's own entries
    are put back when the block ends, also when it raises. Nothing else is touched: not the
    table's other kernels (adamw_update is timed as the AdamW phase as a whole; a Llama's
    kernels have no row), nor the functions of numpygpt.layers."""
    originals = {}
    try:
        for kind in PROFILED_LAYERS:
            for direction in ("forward", "backward"):
                name = f"{kind}_{direction}"
                if hasattr(ops, name):  # sinusoidal positions have no backward kernel
                    originals[name] = getattr(ops, name)
                    setattr(ops, name, _timed(originals[name], kind, direction, record))
        yield record
    finally:
        for name, fn in originals.items():
            setattr(ops, name, fn)


def _profiled_step(model, opt, x, y):
    """numpy_step_fn's step, timed phase by phase and layer by layer.
    Returns ({(row, direction): [seconds, flops, calls]}, the step's seconds)."""
    cfg = model.config
    B, T = x.shape
    head = 2 * B * T * cfg.n_embd * cfg.vocab_size  # one (B T, C) x (C, V) product
    with timed_layers({}) as record:
        t0 = time.perf_counter()
        model.forward(x, y)
        t1 = time.perf_counter()
        grads = model.backward()
        t2 = time.perf_counter()
        clip_grad_norm(grads, 1.0)
        t3 = time.perf_counter()
        opt.step(grads)
        t4 = time.perf_counter()
    # the glue: forward (backward) time not inside a layer call; its matmuls are the LM head,
    # logits = xf @ wte.T forward, dxf = dlogits @ wte and dwte = dlogits.T @ xf backward
    for direction, seconds, flops in (("forward", t1 - t0, head), ("backward", t2 - t1, 2 * head)):
        layers = sum(s for (_, d), (s, *_) in record.items() if d == direction)
        record[(GLUE, direction)] = [seconds - layers, flops, 0]
    record[("clip", "update")] = [t3 - t2, 0, 0]
    record[("AdamW", "update")] = [t4 - t3, 0, 0]
    return record, t4 - t0


def profile_step(name="small", steps=5, threads=None, peak=None, cfg=None, B=None, T=None):
    """Where one training step's time goes (`bench --profile`): the step of bench_training
    (forward, backward, clip, AdamW) on config `name`'s model and batch, layer by layer.

    Two warm-up steps, then `steps` rounds of one plain step and one profiled step; each row's
    time is its median over the profiled steps. cfg, B, T: another model and shape (tests).

    Returns a dict: "rows", one per row of PROFILE_ROWS that ran, with forward_ms, backward_ms
    (clip and AdamW: update_ms), total_ms, share (of the sum of rows), gflop (its matrix
    products' FLOPs) and, for rows with matrix products, gflops and pct_peak; the step's time
    plain and profiled (the difference: the wrappers' overhead, and noise) and layer_calls,
    the wrapped calls per step; the GEMM rows' and the elementwise rows' time; and
    at_peak_ms, the step if every GEMM ran at the peak.
    """
    check_counts(steps=steps, threads=threads)
    threads = threads or os.cpu_count()
    limit_threads(threads)
    cfg = cfg or model_config(name)
    B, T = B or BENCH_CONFIGS[name][1], T or cfg.block_size
    step = numpy_step_fn(cfg, B, T=T)
    (x, y), model, opt = step.batch, step.model, step.optimizer
    for _ in range(2):  # warm up: first calls allocate, page in, build caches
        step()
    plain, profiled, records = [], [], []
    for _ in range(steps):  # alternate, so drift in machine speed hits both alike
        plain.append(seconds_per_call(step, 1))
        record, seconds = _profiled_step(model, opt, x, y)
        records.append(record)
        profiled.append(seconds)
    peak = peak or matmul_peak()
    ms = {key: 1e3 * statistics.median(r[key][0] for r in records) for key in records[0]}
    flops = {key: records[0][key][1] for key in records[0]}
    total = sum(ms.values())
    rows = []
    for row in PROFILE_ROWS:
        keys = [k for k in ms if k[0] == row]
        if not keys:
            continue
        r = {"row": row, **{f"{d}_ms": ms[(row, d)] for _, d in keys}}
        r["total_ms"] = sum(ms[k] for k in keys)
        r["share"] = r["total_ms"] / total
        r["gflop"] = sum(flops[k] for k in keys) / 1e9
        if r["gflop"]:
            r["gflops"] = r["gflop"] / (r["total_ms"] / 1e3)
            r["pct_peak"] = 100 * r["gflops"] * 1e9 / peak
        rows.append(r)
    gemm_ms = sum(r["total_ms"] for r in rows if r["gflop"])
    gflop = sum(r["gflop"] for r in rows)
    return {"config": name if cfg == model_config(name) else "custom", "batch_size": B,
            "seq_len": T, "model": cfg.to_dict(), "threads": threads, "steps": steps,
            "cpu": cpu_name(), "blas": blas_description(), "peak_gflops": peak / 1e9,
            "rows": rows, "rows_ms": total,
            "layer_calls": sum(entry[2] for entry in records[0].values()),
            "profiled_ms_per_step": 1e3 * statistics.median(profiled),
            "ms_per_step": 1e3 * statistics.median(plain),
            "gemm_gflop": gflop, "gemm_ms": gemm_ms, "elementwise_ms": total - gemm_ms,
            "at_peak_ms": total - gemm_ms + 1e3 * gflop * 1e9 / peak}


# PyTorch's side, from torch.profiler: each operator's own time (self CPU time, children
# excluded), grouped by the outermost operator around it that names a group, so that e.g.
# the transposes inside AddmmBackward0 count as GEMM and the ops inside cross_entropy as
# cross-entropy. Patterns are matched in lower case with underscores removed.
TORCH_GROUPS = (
    ("attention (SDPA)", ("scaleddotproduct", "flashattention")),
    ("GEMM (mm, addmm, bmm)", ("addmm", "aten::mm", "bmm", "mmbackward", "aten::linear",
                               "aten::matmul")),
    ("GELU", ("gelu",)),
    ("layer norm", ("layernorm",)),
    ("cross-entropy (log_softmax, nll)", ("crossentropy", "logsoftmax", "nllloss")),
    ("embedding", ("embedding",)),
    ("dropout", ("dropout", "bernoulli")),
    ("AdamW + clip (_foreach ops)", ("adamw", "foreach", "vectornorm", "clipgrad")),
)
TORCH_OTHER = "other ops (adds, views, autograd)"
TORCH_PYTHON = "Python, outside any op"


def _torch_group(event):
    """The group of a torch.profiler event: that of its outermost ancestor (or itself) whose
    name matches a group's pattern, else TORCH_OTHER."""
    group = TORCH_OTHER
    while event is not None:
        name = event.name.lower().replace("_", "")
        for g, patterns in TORCH_GROUPS:
            if any(p in name for p in patterns):
                group = g
                break
        event = event.cpu_parent
    return group


def profile_torch_step(name="small", steps=5, threads=None, cfg=None, B=None, T=None):
    """The same step in PyTorch eager (torch_step_fn) under torch.profiler (CPU): ms per step
    by group of operators (TORCH_GROUPS), plus the step's time with and without the profiler.
    Returns a dict; {"unavailable": why} if torch.profiler cannot be used."""
    try:  # PyTorch is optional: imported for this comparison only
        import torch
        from torch.profiler import ProfilerActivity, profile

        from .torch_step import torch_step_fn
    except ImportError as e:
        return {"unavailable": f"torch.profiler cannot be imported ({e})"}
    # the profiler's own log lines ("USDT: ... profiler_start") would land in the output,
    # a notebook's included; a level the user set stays
    os.environ.setdefault("KINETO_LOG_LEVEL", "99")
    threads = threads or os.cpu_count()
    torch.set_num_threads(threads)
    cfg = cfg or model_config(name)
    B, T = B or BENCH_CONFIGS[name][1], T or cfg.block_size
    step = torch_step_fn(cfg, B, T=T)
    for _ in range(2):
        step()
    plain = statistics.median(seconds_per_call(step, 1) for _ in range(steps))
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            wall = (time.perf_counter() - t0) / steps
        events = prof.events()
    except Exception as e:  # noqa: BLE001  (the profiler is optional: say why and go on)
        return {"unavailable": f"torch.profiler failed ({type(e).__name__}: {e})"}
    ms = dict.fromkeys([g for g, _ in TORCH_GROUPS] + [TORCH_OTHER], 0.0)
    for event in events:
        ms[_torch_group(event)] += event.self_cpu_time_total / 1e3 / steps  # us -> ms per step
    ms[TORCH_PYTHON] = max(0.0, 1e3 * wall - sum(ms.values()))
    return {"torch_version": torch.__version__, "steps": steps, "groups": ms,
            "profiled_ms_per_step": 1e3 * wall, "ms_per_step": 1e3 * plain}


def format_profile(r, torch_res=None):
    """The table `bench --profile` prints (and, with torch_res, PyTorch's by operator)."""
    c = r["model"]
    lines = [
        f"where one training step's time goes: {r['config']} ({c['n_layer']} layers, "
        f"{c['n_head']} heads, n_embd {c['n_embd']}, dropout {c['dropout']}), "
        f"B={r['batch_size']} T={r['seq_len']}; median of {r['steps']} profiled steps",
        f"CPU: {r['cpu']}, {threads_text(r['threads'])}; BLAS: {r['blas']}; float32 GEMM peak "
        f"{r['peak_gflops']:.0f} GFLOP/s (the best of 2048 x 2048 products: shapes that suit "
        "the kernel better can beat it)",
        "",
        f"{'':24}{'forward':>9}{'backward':>9}{'total':>9}{'share':>7}{'GEMM':>9}"
        f"{'achieved':>10}{'of':>6}",
        f"{'':24}{'ms':>9}{'ms':>9}{'ms':>9}{'':>7}{'GFLOP':>9}{'GFLOP/s':>10}{'peak':>6}"]

    def cell(row, key):
        return f"{row[key]:9.1f}" if key in row else f"{'':9}"

    for row in r["rows"]:
        fwd, bwd = cell(row, "forward_ms"), cell(row, "backward_ms")
        if "update_ms" in row:  # clip and AdamW: neither forward nor backward
            fwd, bwd = f"{'':9}", f"{'':9}"
        gemm = (f"{row['gflop']:9.2f}{row['gflops']:10.1f}{row['pct_peak']:5.0f}%"
                if row["gflop"] else f"{'elementwise':>25}")
        lines.append(f"{row['row']:<24}{fwd}{bwd}{row['total_ms']:9.1f}"
                     f"{100 * row['share']:6.1f}%{gemm}")
    step = r["rows_ms"]
    lines += [
        f"{'sum of the rows':<24}{'':18}{step:9.1f}{100.0:6.1f}%{r['gemm_gflop']:9.2f}"
        f"{r['gemm_gflop'] / (step / 1e3):10.1f}"
        f"{100 * r['gemm_gflop'] / (step / 1e3) / r['peak_gflops']:5.0f}%",
        "",
        f"the profiled step took {r['profiled_ms_per_step']:.1f} ms (median), an unprofiled one "
        f"{r['ms_per_step']:.1f} ms: the timing wrappers ({r['layer_calls']} layer calls per "
        f"step) cost {r['profiled_ms_per_step'] - r['ms_per_step']:+.1f} ms, noise included",
        f"GEMM rows {r['gemm_ms']:.1f} ms ({100 * r['gemm_ms'] / step:.0f}% of the step; their "
        f"time includes their elementwise parts: bias, softmax, residual adds), elementwise rows "
        f"{r['elementwise_ms']:.1f} ms ({100 * r['elementwise_ms'] / step:.0f}%)",
        f"if every GEMM ran at the peak: {r['at_peak_ms']:.1f} ms per step "
        f"({r['at_peak_ms'] / step:.2f}x of now; the elementwise rows unchanged)"]
    if torch_res is not None:
        lines.append("")
        if "unavailable" in torch_res:
            lines.append(f"PyTorch: no breakdown, {torch_res['unavailable']}")
        else:
            t = torch_res
            lines.append(f"PyTorch {t['torch_version']} eager, the same step under "
                         f"torch.profiler (CPU), ms per step by operator (self time):")
            for group, ms in t["groups"].items():
                lines.append(f"  {group:<34}{ms:9.1f}{100 * ms / t['profiled_ms_per_step']:6.1f}%")
            lines.append(f"  {'profiled step':<34}{t['profiled_ms_per_step']:9.1f}   "
                         f"(unprofiled: {t['ms_per_step']:.1f} ms)")
    return "\n".join(lines)

