"""Benchmark of one training step (forward + backward + clip + AdamW), and of generation.

    python -m numpygpt bench                  # baby and small (batch 16), numpygpt only
    python -m numpygpt bench --vs-torch       # the same step in PyTorch eager, side by side

Every figure that compares two things is measured side by side in one process, in alternating
rounds, and reported as a median ratio: these machines are noisy, absolute times drift.
PyTorch is optional: only --vs-torch imports it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from .errors import ConfigError, check_int
from .model import GPT, GPTConfig
from .optim import AdamW, clip_grad_norm
from .train import PRESETS

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


def step_flops(cfg, B):
    """Matmul FLOPs of one training step (a multiply-add counts 2; backward = 2x forward).

    Per layer forward: 2BT(3C^2 + C^2 + 4C^2 + 4C^2) for the four linear maps and 2BT^2C
    twice for q k^T and att @ v (the full T x T, as nanoGPT's MFU estimate counts it);
    plus the LM head 2BTCV.
    """
    T, C, L, V = cfg.block_size, cfg.n_embd, cfg.n_layer, cfg.vocab_size
    forward = L * (24 * B * T * C * C + 4 * B * T * T * C) + 2 * B * T * C * V
    return 3 * forward


def blas_description():
    """Which BLAS numpy runs, with which kernel and threads (e.g. "openblas SkylakeX, 2
    threads"): the kernel decides the matmul peak, so every figure depends on it."""
    from threadpoolctl import threadpool_info

    libs = [f"{i['internal_api']} {i.get('architecture') or ''}".strip()
            + f", {i['num_threads']} threads" for i in threadpool_info() if i["user_api"] == "blas"]
    kernel = os.environ.get("OPENBLAS_CORETYPE")
    note = f" (OPENBLAS_CORETYPE={kernel} forces that kernel)" if kernel else ""
    return "; ".join(libs) + note if libs else "unknown"


def matmul_peak(n=2048, repeats=5, dtype=np.float32):
    """Best float32 GEMM throughput (FLOP/s) of this machine with the current BLAS threads."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype=dtype)
    np.matmul(a, b, out=out)  # warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n * n * n / best


# --- the two training steps ---------------------------------------------------------------


def numpy_step_fn(cfg, B, seed=0):
    """A closure running one numpygpt training step on a fixed random batch."""
    model = GPT(cfg, seed=seed, dtype=np.float32)
    opt = AdamW(model.params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, cfg.vocab_size, (B, cfg.block_size))
    y = rng.integers(0, cfg.vocab_size, (B, cfg.block_size))

    def step():
        model.forward(x, y)
        grads = model.backward()
        clip_grad_norm(grads, 1.0)
        opt.step(grads)

    return step


def torch_step_fn(cfg, B, seed=0):
    """The same step in PyTorch eager, written as nanoGPT writes it (float32, SDPA attention,
    tanh GELU, tied head, AdamW with decay on 2-D params only, clip_grad_norm_)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(seed)
    C, nh, p = cfg.n_embd, cfg.n_head, cfg.dropout

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
            self.drop = nn.Dropout(p)

        def forward(self, x):
            Bx, T, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(Bx, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=p if self.training else 0.0)
            x = x + self.drop(self.c_proj(y.transpose(1, 2).reshape(Bx, T, C)))
            h = F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")
            return x + self.drop(self.mlp_proj(h))

    class TorchGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(cfg.vocab_size, C)
            self.wpe = nn.Embedding(cfg.block_size, C)
            self.drop = nn.Dropout(p)
            self.h = nn.ModuleList([Block() for _ in range(cfg.n_layer)])
            self.ln_f = nn.LayerNorm(C)

        def forward(self, idx, targets):
            pos = torch.arange(idx.shape[1])
            x = self.drop(self.wte(idx) + self.wpe(pos))
            for block in self.h:
                x = block(x)
            logits = self.ln_f(x) @ self.wte.weight.T  # tied head
            return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))

    model = TorchGPT()
    decay = [q for q in model.parameters() if q.dim() >= 2]
    no_decay = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, cfg.vocab_size, (B, cfg.block_size), generator=gen)
    y = torch.randint(0, cfg.vocab_size, (B, cfg.block_size), generator=gen)

    def step():
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def _time(step, n):
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def _status_kb(field):
    """A field of /proc/self/status in bytes (VmRSS: resident now, VmHWM: the peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_memory_child(which, name, threads):
    """(Run in a fresh process.) Peak memory of a training step above what the process holds
    between steps (model, optimizer state, batch, the BLAS library's workspace): the
    activations, gradients and temporaries of one step. One warm-up step first, so one-time
    allocations (BLAS buffers, lazy imports) are not counted; then the peak-RSS mark is reset
    (Linux: writing 5 to /proc/self/clear_refs) and three steps run."""
    _limit_threads(threads)
    cfg, B = model_config(name), BENCH_CONFIGS[name][1]
    step = (numpy_step_fn if which == "numpy" else torch_step_fn)(cfg, B)
    step()
    base = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    for _ in range(3):
        step()
    print(json.dumps({"peak_bytes": _status_kb("VmHWM") - base}))


def peak_memory(which, name, threads):
    """Peak step memory (bytes) of numpygpt or torch, measured in a fresh subprocess."""
    code = ("from numpygpt.bench import _peak_memory_child; "
            f"_peak_memory_child({which!r}, {name!r}, {threads})")
    # A fixed mmap threshold makes glibc return every large freed block to the OS at once;
    # by default it raises the threshold as blocks are freed and keeps later ones in its heap,
    # so the RSS after the warm-up step would already hold memory the step reuses.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def _limit_threads(threads):
    """Set the BLAS (and torch, if loaded) thread count for this process."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def bench_training(name, rounds=7, steps=5, vs_torch=False, threads=None, peak=None):
    """Measure one config. Returns a dict of figures (ms per step, tokens/s, GFLOP/s, MFU,
    peak memory, and with vs_torch the median numpygpt / torch time ratio)."""
    for arg, value in (("rounds", rounds), ("steps", steps), ("threads", threads)):
        if value is not None and check_int(arg, value) < 1:
            raise ConfigError(f"{arg} must be >= 1, got {value}")
    threads = threads or os.cpu_count()
    if vs_torch:
        import torch

        torch.set_num_threads(threads)
    _limit_threads(threads)
    cfg, B = model_config(name), BENCH_CONFIGS[name][1]
    np_step = numpy_step_fn(cfg, B)
    th_step = torch_step_fn(cfg, B) if vs_torch else None
    for _ in range(2):  # warm up: first calls allocate, page in, build caches
        np_step()
        if th_step:
            th_step()
    np_times, th_times = [], []
    for _ in range(rounds):  # alternate, so drift in machine speed hits both alike
        np_times.append(_time(np_step, steps))
        if th_step:
            th_times.append(_time(th_step, steps))
    t = statistics.median(np_times)
    flops = step_flops(cfg, B)
    peak = peak or matmul_peak()
    res = {"config": name, "batch_size": B, "block_size": cfg.block_size, "threads": threads,
           "ms_per_step": 1e3 * t, "tokens_per_sec": B * cfg.block_size / t,
           "gflops": flops / t / 1e9, "peak_gflops": peak / 1e9, "mfu": flops / t / peak,
           "peak_mem_mb": peak_memory("numpy", name, threads) / 2**20}
    if th_step:
        ratios = [a / b for a, b in zip(np_times, th_times, strict=True)]
        res.update({"torch_ms_per_step": 1e3 * statistics.median(th_times),
                    "ratio_vs_torch": statistics.median(ratios),
                    "torch_peak_mem_mb": peak_memory("torch", name, threads) / 2**20})
        res["mem_ratio_vs_torch"] = res["peak_mem_mb"] / res["torch_peak_mem_mb"]
    return res


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
    """Forward + backward of the vectorised attention vs the loop reference. Returns the
    median speed-up."""
    from . import layers as L

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


def format_results(results):
    lines = []
    for r in results:
        lines.append(
            f"{r['config']:<6} B={r['batch_size']:<3} T={r['block_size']:<4} "
            f"{r['ms_per_step']:8.1f} ms/step  {r['tokens_per_sec']:9,.0f} tok/s  "
            f"{r['gflops']:6.1f} GFLOP/s  MFU {100 * r['mfu']:4.1f}% of "
            f"{r['peak_gflops']:.0f}  peak mem {r['peak_mem_mb']:7.1f} MB")
        if "ratio_vs_torch" in r:
            lines.append(
                f"{'':6} torch eager {r['torch_ms_per_step']:8.1f} ms/step   "
                f"numpygpt/torch time ratio (median of rounds) {r['ratio_vs_torch']:.2f}   "
                f"memory ratio {r['mem_ratio_vs_torch']:.2f} "
                f"(torch {r['torch_peak_mem_mb']:.1f} MB)")
    return "\n".join(lines)
