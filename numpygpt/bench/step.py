"""numpygpt's training step, timed: `python -m numpygpt bench [--config baby|small] [--vs-torch]`.

One step is what train() runs: forward, backward, clip the gradient norm, AdamW. bench_training
times it on the baby and small presets (with --vs-torch, PyTorch's same step in alternating
rounds, reported as a median ratio) and measures each library's peak memory in a fresh
process. Two smaller figures come after it: greedy generation with and without the KV cache
(bench_kv_cache) and the vectorised attention against the loop reference (bench_attention).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from .. import layers as L
from ..errors import ConfigError, check_int
from ..finetune.model import FinetuneGPT
from ..models.gpt import GPT, GPTConfig
from ..training.optim import AdamW, clip_grad_norm
from ..training.threads import ThreadTeam
from ..training.train import PRESETS
from .machine import fair_turns, limit_threads, matmul_peak

BENCH_CONFIGS = {  # name -> (preset, batch size)
    "baby": ("baby", 12),
    "small": ("small", 16),  # nanoGPT's shakespeare_char model at batch 16, to keep it short
}
VOCAB = 65  # tiny shakespeare's characters


def model_config(name):
    preset, _ = BENCH_CONFIGS[name]
    p = PRESETS[preset]
    return GPTConfig(vocab_size=VOCAB, block_size=p["block_size"], n_layer=p["n_layer"],
                     n_head=p["n_head"], n_embd=p["n_embd"], dropout=p["dropout"])


def step_flops(cfg, B, T=None):
    """Matmul FLOPs of one training step on (B, T) tokens, T = block_size by default (a
    multiply-add counts 2; backward = 2x forward).

    Per layer forward: 2BT(3C^2 + C^2 + 4C^2 + 4C^2) for the four linear maps and 2BT^2C
    twice for q k^T and att @ v (the full T x T, as nanoGPT's MFU estimate counts it);
    plus the LM head 2BTCV.
    """
    T = T or cfg.block_size
    C, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    forward = L * (24 * B * T * C * C + 4 * B * T * T * C) + 2 * B * T * C * V
    return 3 * forward


def check_counts(**counts):
    """Refuse a count (rounds, steps, threads) that is not an integer >= 1; None passes."""
    for arg, value in counts.items():
        if value is not None and check_int(arg, value) < 1:
            raise ConfigError(f"{arg} must be >= 1, got {value}")


def numpy_step_fn(cfg, B, seed=0, T=None, lora=None, team=1):
    """A closure running one numpygpt training step on a fixed random (B, T) batch (T =
    block_size by default), returning the loss. lora=(rank, alpha) adds adapters to all four
    linear maps of every block and trains only them: the optimizer holds (and clip_grad_norm
    sees) the adapters alone, and backward computes no gradient for a frozen weight.
    team > 1: that many threads share the batch, as `train --threads` runs it (a ThreadTeam).
    The closure's .model and .optimizer are what it trains (tests look at them); .close()
    ends the team's threads."""
    T = T or cfg.block_size
    if lora:
        model = FinetuneGPT(cfg, seed=seed, dtype=np.float32)
        model.add_lora(rank=lora[0], alpha=lora[1], seed=seed)
        params = model.trainable_params()
    else:
        model = GPT(cfg, seed=seed, dtype=np.float32)
        params = model.params
    opt = AdamW(params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, cfg.vocab_size, (B, T))
    y = rng.integers(0, cfg.vocab_size, (B, T))

    threads = ThreadTeam(model, team)  # team = 1: the model's own forward and backward

    def step():
        loss, grads = threads.loss_and_grads(x, y)  # grads: the trainable parameters only
        clip_grad_norm(grads, 1.0)
        opt.step(grads)
        return loss

    step.model, step.optimizer, step.batch = model, opt, (x, y)
    step.close = threads.close
    return step


# --- peak memory, in a fresh process --------------------------------------------------------


def _status_kb(field):
    """A field of /proc/self/status in bytes (VmRSS: resident now, VmHWM: the peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_memory_child(spec):
    """(Run in a fresh process.) Peak memory of training steps, two ways:
    - "total": the peak resident memory above the interpreter with its libraries imported:
      weights, optimizer state, gradients, activations and temporaries, all counted (but not
      the libraries' own code pages that the first step reads in from disk: RssFile's growth);
    - "step": the peak above what the process holds between steps (model, optimizer state,
      batch, the last step's caches, the BLAS library's workspace): what one step adds.
    One warm-up step first, so one-time allocations (building the model, BLAS buffers, lazy
    imports, the optimizer state's first touch) are not counted; then the peak-RSS mark is
    reset (Linux: writing 5 to /proc/self/clear_refs) and spec["steps"] steps run."""
    which = spec["which"]
    if which == "torch":  # imported before the baseline: the library is not the step
        from .torch_step import torch_step_fn
    limit_threads(spec["threads"])
    cfg, B, T = GPTConfig.from_dict(spec["cfg"]), spec["B"], spec["T"]
    base, files = _status_kb("VmRSS"), _status_kb("RssFile")
    step = (torch_step_fn(cfg, B, T=T) if which == "torch"
            else numpy_step_fn(cfg, B, T=T, lora=spec.get("lora")))
    step()
    between = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    for _ in range(spec["steps"]):
        step()
    peak, files = _status_kb("VmHWM"), _status_kb("RssFile") - files
    print(json.dumps({"step": peak - between, "total": peak - base - files}))


def peak_memory(which, cfg, B, threads, T=None, steps=3, lora=None):
    """Peak memory (bytes) of training steps of numpygpt ("numpy") or PyTorch ("torch"),
    measured in a fresh subprocess: {"step": ..., "total": ...} (see _peak_memory_child)."""
    spec = {"which": which, "cfg": cfg.to_dict(), "B": B, "T": T or cfg.block_size,
            "threads": threads, "steps": steps, "lora": lora}
    code = f"from numpygpt.bench.step import _peak_memory_child; _peak_memory_child({spec!r})"
    # A fixed mmap threshold makes glibc return every large freed block to the OS at once;
    # by default it raises the threshold as blocks are freed and keeps later ones in its heap,
    # so the RSS after the warm-up step would already hold memory the step reuses.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"the {which} memory measurement failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the training benchmark ---------------------------------------------------------------


def bench_training(name, rounds=7, steps=5, vs_torch=False, threads=None, peak=None):
    """Measure one config. Returns a dict of figures (ms per step, tokens/s, GFLOP/s, MFU,
    peak memory, and with vs_torch the median numpygpt / torch time ratio)."""
    check_counts(rounds=rounds, steps=steps, threads=threads)
    threads = threads or os.cpu_count()
    if vs_torch:  # PyTorch is optional: imported for the comparison only
        from .torch_step import torch_step_fn
    limit_threads(threads)  # BLAS's threads, and torch's once imported
    cfg, B = model_config(name), BENCH_CONFIGS[name][1]
    np_step = numpy_step_fn(cfg, B)
    # with several threads, also the step of `train --threads N`: N threads share the batch
    team_step = numpy_step_fn(cfg, B, team=threads) if threads > 1 else None
    th_step = torch_step_fn(cfg, B) if vs_torch else None
    steppers = {"numpy": np_step, "team": team_step, "torch": th_step}
    steppers = {k: f for k, f in steppers.items() if f is not None}
    try:
        for _ in range(2):  # warm up: first calls allocate, page in, build caches
            for f in steppers.values():
                f()
        # with more than one thread, more than one contender: each turn waits for the idle
        # workers of the one before (PyTorch's, or OpenBLAS's, which would spin on the core
        # a thread of the team needs)
        times = fair_turns(steppers, rounds, steps, threads)
    finally:
        if team_step:
            team_step.close()  # its pool's threads end here, not with the process
    np_times, th_times = times["numpy"], times.get("torch", [])
    t = statistics.median(np_times)
    flops = step_flops(cfg, B)
    peak = peak or matmul_peak()
    res = {"config": name, "batch_size": B, "block_size": cfg.block_size, "threads": threads,
           "ms_per_step": 1e3 * t, "tokens_per_sec": B * cfg.block_size / t,
           "gflops": flops / t / 1e9, "peak_gflops": peak / 1e9, "mfu": flops / t / peak,
           # the whole footprint ("total"), not what one step adds ("step"): numpygpt keeps the
           # last step's caches between steps (attention_probs() reads them), PyTorch frees
           # its saved tensors, so "step" would leave our activations out and not PyTorch's
           "peak_mem_mb": peak_memory("numpy", cfg, B, threads)["total"] / 2**20}
    if team_step:
        res.update({"team_threads": threads,
                    "team_ms_per_step": 1e3 * statistics.median(times["team"]),
                    "team_vs_one": statistics.median(
                        a / b for a, b in zip(times["team"], np_times, strict=True))})
    if th_step:
        ratios = [a / b for a, b in zip(np_times, th_times, strict=True)]
        if team_step:
            res["team_ratio_vs_torch"] = statistics.median(
                a / b for a, b in zip(times["team"], th_times, strict=True))
        res.update({"torch_ms_per_step": 1e3 * statistics.median(th_times),
                    "ratio_vs_torch": statistics.median(ratios),
                    "torch_peak_mem_mb": peak_memory("torch", cfg, B, threads)["total"] / 2**20})
        res["mem_ratio_vs_torch"] = res["peak_mem_mb"] / res["torch_peak_mem_mb"]
    return res


def format_results(results):
    lines = []
    for r in results:
        lines.append(
            f"{r['config']:<6} B={r['batch_size']:<3} T={r['block_size']:<4} "
            f"{r['ms_per_step']:8.1f} ms/step  {r['tokens_per_sec']:9,.0f} tok/s  "
            f"{r['gflops']:6.1f} GFLOP/s  MFU {100 * r['mfu']:4.1f}% of "
            f"{r['peak_gflops']:.0f}  peak mem {r['peak_mem_mb']:7.1f} MB")
        if "team_ms_per_step" in r:
            lines.append(
                f"{'':6} {r['team_threads']} threads sharing the batch (train --threads "
                f"{r['team_threads']}): {r['team_ms_per_step']:.1f} ms/step, "
                f"{r['team_vs_one']:.2f}x the time of the step above"
                + (f"; numpygpt/torch time ratio {r['team_ratio_vs_torch']:.2f}"
                   if "team_ratio_vs_torch" in r else ""))
        if "ratio_vs_torch" in r:
            lines.append(
                f"{'':6} torch eager {r['torch_ms_per_step']:8.1f} ms/step   "
                f"numpygpt/torch time ratio (median of rounds) {r['ratio_vs_torch']:.2f}   "
                f"memory ratio {r['mem_ratio_vs_torch']:.2f} "
                f"(torch {r['torch_peak_mem_mb']:.1f} MB)")
    return "\n".join(lines)


# --- generation and attention -------------------------------------------------------------


def bench_kv_cache(rounds=3, prompt=64, new=192):
    """Greedy generation of `new` tokens after a `prompt`-token prompt at block_size 256
    (baby width), with and without the KV cache. Returns (speed-up, same tokens?)."""
    cfg = GPTConfig(vocab_size=VOCAB, block_size=256, n_layer=4, n_head=4, n_embd=128)
    model = GPT(cfg, seed=0)
    idx = np.random.default_rng(0).integers(0, VOCAB, (1, prompt))
    ratios, same = [], True
    for _ in range(rounds):
        t0 = time.perf_counter()
        a = model.generate(idx, new, temperature=0, use_cache=True)
        t1 = time.perf_counter()
        b = model.generate(idx, new, temperature=0, use_cache=False)
        t2 = time.perf_counter()
        ratios.append((t2 - t1) / (t1 - t0))
        same &= bool(np.array_equal(a, b))
    return statistics.median(ratios), same


def bench_attention(rounds=3, B=8, T=256, C=128, nh=4):
    """Forward + backward of the vectorised attention layer vs the loop reference (per batch,
    head and step). Returns the median speed-up. Both are plain layers of numpygpt.layers,
    called directly: neither reads the kernel table, so the figure is the same whichever
    kernels the table holds."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    args = (rng.standard_normal((B, T, C)).astype(f32),
            (rng.standard_normal((C, 3 * C)) * 0.02).astype(f32), np.zeros(3 * C, f32),
            (rng.standard_normal((C, C)) * 0.02).astype(f32), np.zeros(C, f32))
    dout = rng.standard_normal((B, T, C)).astype(f32)

    def run(fwd, bwd, n):  # seconds per forward + backward, n calls in a row (as in training)
        t0 = time.perf_counter()
        for _ in range(n):
            _, cache = fwd(*args, nh)
            bwd(dout, cache)
        return (time.perf_counter() - t0) / n

    ratios = []
    for _ in range(rounds):  # alternate the two, so drift in machine speed hits both alike
        fast = run(L.attention_forward, L.attention_backward, 10)
        slow = run(L.attention_reference_forward, L.attention_reference_backward, 1)
        ratios.append(slow / fast)
    return statistics.median(ratios)
