"""Benchmark of one training step (forward + backward + clip + AdamW), and of generation.

    python -m numpygpt bench                  # baby and small (batch 16), numpygpt only
    python -m numpygpt bench --vs-torch       # the same step in PyTorch eager, side by side
    python -m numpygpt bench --config gpt2-finetune --vs-torch
                                              # GPT-2 small: full fine-tuning vs LoRA vs PyTorch
    python -m numpygpt bench --profile --config small [--vs-torch]
                                              # where one step's time goes, layer by layer

Every figure that compares two things is measured side by side in one process, in alternating
rounds, and reported as a median ratio: these machines are noisy, absolute times drift.
PyTorch is optional: only --vs-torch imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from .. import layers as L
from ..errors import ConfigError, check_int
from ..models.gpt import GPT, GPTConfig, param_count
from ..training.optim import AdamW, clip_grad_norm
from ..training.train import PRESETS

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


def cpu_name():
    """The CPU's model name from /proc/cpuinfo (e.g. "AMD EPYC"), or the platform's guess."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown"


# --- the training steps -------------------------------------------------------------------


def numpy_step_fn(cfg, B, seed=0, T=None, lora=None):
    """A closure running one numpygpt training step on a fixed random (B, T) batch (T =
    block_size by default), returning the loss. lora=(rank, alpha) adds adapters to all four
    linear maps of every block and trains only them: the optimizer holds (and clip_grad_norm
    sees) the adapters alone, and backward computes no gradient for a frozen weight.
    The closure's .model and .optimizer are what it trains (tests look at them)."""
    T = T or cfg.block_size
    model = GPT(cfg, seed=seed, dtype=np.float32)
    if lora:
        model.add_lora(rank=lora[0], alpha=lora[1], seed=seed)
    opt = AdamW(model.trainable_params(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, cfg.vocab_size, (B, T))
    y = rng.integers(0, cfg.vocab_size, (B, T))

    def step():
        _, loss = model.forward(x, y)
        grads = model.backward()  # the trainable parameters only
        clip_grad_norm(grads, 1.0)
        opt.step(grads)
        return loss

    step.model, step.optimizer, step.batch = model, opt, (x, y)
    return step


def torch_step_fn(cfg, B, seed=0, T=None, params=None):
    """The same step in PyTorch eager, written as nanoGPT writes it (float32, SDPA attention,
    tanh GELU, tied head, AdamW with decay on 2-D params only, clip_grad_norm_), returning the
    loss. params: numpygpt parameters to start from (copied; default: PyTorch's own random
    init), so both libraries can step the same model on the same batch."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(seed)
    C, nh, p = cfg.n_embd, cfg.n_head, cfg.dropout
    T = T or cfg.block_size

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
    if params is not None:
        model.load_state_dict(_torch_state(params))
    decay = [q for q in model.parameters() if q.dim() >= 2]
    no_decay = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(seed)
    if params is None:
        x = torch.randint(0, cfg.vocab_size, (B, T), generator=gen)
        y = torch.randint(0, cfg.vocab_size, (B, T), generator=gen)
    else:  # numpy_step_fn's batch, for the same model
        rng = np.random.default_rng(seed)
        x, y = (torch.from_numpy(rng.integers(0, cfg.vocab_size, (B, T))) for _ in range(2))

    def step():
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    return step


def _torch_state(params):
    """numpygpt's parameters as the state dict of torch_step_fn's model (copies; a torch
    Linear stores its weight (out, in), the transpose of ours)."""
    import torch

    renames = {"attn.c_attn": "c_attn", "attn.c_proj": "c_proj", "mlp.c_fc": "c_fc",
               "mlp.c_proj": "mlp_proj"}
    state = {}
    for k, v in params.items():
        for ours, theirs in renames.items():
            if f".{ours}." in k:
                k, v = k.replace(ours, theirs), (v.T if k.endswith("weight") else v)
                break
        state[k] = torch.tensor(np.ascontiguousarray(v))
    return state


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
    if which == "torch":
        import torch  # noqa: F401  (imported before the baseline: the library is not the step)
    _limit_threads(spec["threads"])
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
    code = f"from numpygpt.bench.bench import _peak_memory_child; _peak_memory_child({spec!r})"
    # A fixed mmap threshold makes glibc return every large freed block to the OS at once;
    # by default it raises the threshold as blocks are freed and keeps later ones in its heap,
    # so the RSS after the warm-up step would already hold memory the step reuses.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"the {which} memory measurement failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


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
           # the whole footprint ("total"), not what one step adds ("step"): numpygpt keeps the
           # last step's caches between steps (attention_probs() reads them), PyTorch frees
           # its saved tensors, so "step" would leave our activations out and not PyTorch's
           "peak_mem_mb": peak_memory("numpy", cfg, B, threads)["total"] / 2**20}
    if th_step:
        ratios = [a / b for a, b in zip(np_times, th_times, strict=True)]
        res.update({"torch_ms_per_step": 1e3 * statistics.median(th_times),
                    "ratio_vs_torch": statistics.median(ratios),
                    "torch_peak_mem_mb": peak_memory("torch", cfg, B, threads)["total"] / 2**20})
        res["mem_ratio_vs_torch"] = res["peak_mem_mb"] / res["torch_peak_mem_mb"]
    return res


# --- fine-tuning at GPT-2 size ------------------------------------------------------------

GPT2_SMALL = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
FINETUNE_BATCH = (4, 256)  # B, T
FINETUNE_LORA = (8, 16)  # rank, alpha; adapters on all four linear maps of every block
FINETUNE_TARGETS = {  # issue 12: (what is compared, the ratio to reach)
    "full_vs_torch": ("full step vs PyTorch eager", 1.0),
    "lora_vs_full": ("LoRA step vs our full step", 0.75),
    "lora_mem_vs_full": ("LoRA peak memory vs full", 0.6),
}


def bench_finetune(rounds=3, steps=1, vs_torch=False, threads=None, peak=None, cfg=None,
                   B=None, T=None, memory=True):
    """One fine-tuning step (forward, backward, clip, AdamW) of a GPT-2-small-shaped model
    (124M parameters, random weights, float32, dropout 0) on B=4 x T=256 tokens, three ways:
    numpygpt full fine-tuning, numpygpt LoRA (r=8, alpha=16, all four targets, AdamW over
    the adapters only) and, with vs_torch, PyTorch eager full fine-tuning of the same weights.
    One warm-up step each, then `rounds` alternating rounds of `steps` steps; times are
    medians over rounds and ratios medians of the per-round ratios. Peak memory: each
    variant in its own fresh process (see _peak_memory_child; memory=False skips it).
    cfg, B, T: another model and shape (the tests use a tiny one).

    Returns a dict of figures; "met" says, per target in FINETUNE_TARGETS, whether it is.
    """
    for arg, value in (("rounds", rounds), ("steps", steps), ("threads", threads)):
        if value is not None and check_int(arg, value) < 1:
            raise ConfigError(f"{arg} must be >= 1, got {value}")
    cfg = cfg or GPT2_SMALL
    B, T = B or FINETUNE_BATCH[0], T or FINETUNE_BATCH[1]
    threads = threads or os.cpu_count()
    if vs_torch:
        import torch

        torch.set_num_threads(threads)
    _limit_threads(threads)
    times, first_loss, lora_params = _time_finetune(cfg, B, T, rounds, steps, vs_torch)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = {"lora_vs_full": statistics.median(
        a / b for a, b in zip(times["lora"], times["full"], strict=True))}
    if vs_torch:
        ratio["full_vs_torch"] = statistics.median(
            a / b for a, b in zip(times["full"], times["torch"], strict=True))
    flops = step_flops(cfg, B, T)
    peak = peak or matmul_peak()
    res = {"config": "gpt2-finetune" if cfg == GPT2_SMALL else "custom",
           "model": cfg.to_dict(), "n_params": param_count(cfg), "batch_size": B,
           "seq_len": T, "lora_rank": FINETUNE_LORA[0], "lora_alpha": FINETUNE_LORA[1],
           "lora_params": lora_params, "cpu": cpu_name(), "blas": blas_description(),
           "threads": threads, "rounds": rounds, "steps": steps, "first_loss": first_loss,
           "full_gflops": flops / med["full"] / 1e9, "peak_gflops": peak / 1e9,
           "full_mfu": flops / med["full"] / peak, **ratio}
    for k, t in med.items():
        res[f"{k}_ms_per_step"] = 1e3 * t
        res[f"{k}_ms_rounds"] = [1e3 * x for x in times[k]]  # to judge the noise
    if memory:
        for which in times:
            mem = peak_memory("torch" if which == "torch" else "numpy", cfg, B, threads, T=T,
                              steps=1, lora=FINETUNE_LORA if which == "lora" else None)
            res[f"{which}_peak_mem_mb"] = mem["total"] / 2**20
            res[f"{which}_step_mem_mb"] = mem["step"] / 2**20
        res["lora_mem_vs_full"] = res["lora_peak_mem_mb"] / res["full_peak_mem_mb"]
    res["targets"] = {k: target for k, (_, target) in FINETUNE_TARGETS.items()}
    res["met"] = {k: res[k] <= target for k, (_, target) in FINETUNE_TARGETS.items() if k in res}
    return res


def _time_finetune(cfg, B, T, rounds, steps, vs_torch):
    """The timing part of bench_finetune, in its own scope so that its models (about 2.4 GB
    for each full fine-tuning at GPT-2 size, with its optimizer state) are freed before the
    memory runs.
    Returns ({variant: [seconds per step, one per round]}, {variant: first loss}, the number
    of LoRA parameters)."""
    full = numpy_step_fn(cfg, B, T=T)
    variants = {"full": full, "lora": numpy_step_fn(cfg, B, T=T, lora=FINETUNE_LORA)}
    if vs_torch:  # the full model's weights, before its first step
        variants["torch"] = torch_step_fn(cfg, B, T=T, params=full.model.params)
    lora_params = sum(p.size for p in variants["lora"].optimizer.params.values())
    # warm-up: first calls allocate, page in, build caches; the three first losses agree
    # (B = 0: LoRA starts as the plain model), a check that all three step the same model
    first_loss = {k: step() for k, step in variants.items()}
    times = {k: [] for k in variants}
    for _ in range(rounds):  # alternate, so drift in machine speed hits all alike
        for k, step in variants.items():
            times[k].append(_time(step, steps))
    return times, first_loss, lora_params


def format_finetune(r):
    """The lines `bench --config gpt2-finetune` prints: each variant, then each target."""
    c = r["model"]
    lines = [
        f"{r['config']}: {c['n_layer']} layers, {c['n_head']} heads, n_embd {c['n_embd']}, "
        f"vocab {c['vocab_size']}, block {c['block_size']} ({r['n_params'] / 1e6:.1f}M params, "
        f"random weights, float32), B={r['batch_size']} T={r['seq_len']}; one step = forward + "
        f"backward + clip + AdamW; {r['rounds']} rounds of {r['steps']} step(s), medians",
        f"CPU: {r['cpu']}, {r['threads']} threads; BLAS: {r['blas']}"]
    names = {"full": "numpygpt full fine-tuning",
             "lora": f"numpygpt LoRA r={r['lora_rank']} alpha={r['lora_alpha']}",
             "torch": "PyTorch eager full"}
    for k, name in names.items():
        if f"{k}_ms_per_step" not in r:
            continue
        line = f"  {name:<30} {r[f'{k}_ms_per_step']:9.0f} ms/step"
        if f"{k}_peak_mem_mb" in r:
            line += (f"   peak mem {r[f'{k}_peak_mem_mb']:7.0f} MB (a step adds "
                     f"{r[f'{k}_step_mem_mb']:.0f})")
        extra = {"full": f"{r['full_gflops']:.0f} GFLOP/s, MFU {100 * r['full_mfu']:.0f}% of "
                         f"{r['peak_gflops']:.0f}",
                 "lora": f"{r['lora_params']:,} trainable params"}.get(k)
        lines.append(line + (f"   ({extra})" if extra else ""))
    lines.append("targets:")
    for k, (what, target) in FINETUNE_TARGETS.items():
        if k in r:
            verdict = "met" if r["met"][k] else "NOT met"
            lines.append(f"  {what:<30} {r[k]:5.2f}x   target <= {target}x   {verdict}")
        else:
            why = " (run with --vs-torch)" if k == "full_vs_torch" else ""
            lines.append(f"  {what:<30} not measured{why}")
    losses = ", ".join(f"{k} {v:.4f}" for k, v in r["first_loss"].items())
    lines.append(f"first-step losses (the same model and batch): {losses}")
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
    """Forward + backward of the vectorised attention vs the loop reference. Returns the
    median speed-up."""
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


# --- where the time goes: bench --profile -------------------------------------------------
#
# The model calls every layer as L.<name>(...) (L = numpygpt.layers), looked up at each call.
# So to time the layers we swap those module attributes for timing wrappers while a step runs
# (timed_layers), and put the originals back afterwards. What the wrappers do not see, the
# model's own code between layer calls (residual adds, reshapes, and the tied LM head's
# matmuls, which GPT.forward and GPT.backward do themselves), is the forward or backward time
# minus the layers' time: the row "model glue + LM head".

PROFILED_LAYERS = {  # kind (numpygpt.layers.<kind>_forward / _backward) -> row of the table
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
    """The FLOPs of the matrix products in one call of layer function fn_name (2 per
    multiply-add: 2 M K N for an (M, K) @ (K, N) product), from its arguments' shapes; 0 for
    a layer without matrix products. Attention counts the full T x T scores, as step_flops."""
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
    """Inside `with timed_layers(record):`, every layer function in PROFILED_LAYERS is
    replaced in the numpygpt.layers module by a wrapper that adds its time and matmul FLOPs
    to record[(row, "forward" or "backward")] = [seconds, flops, calls]. The originals are put back
    when the block ends, also when it raises."""
    originals = {}
    try:
        for kind in PROFILED_LAYERS:
            for direction in ("forward", "backward"):
                name = f"{kind}_{direction}"
                originals[name] = getattr(L, name)
                setattr(L, name, _timed(originals[name], kind, direction, record))
        yield record
    finally:
        for name, fn in originals.items():
            setattr(L, name, fn)


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
    for arg, value in (("steps", steps), ("threads", threads)):
        if value is not None and check_int(arg, value) < 1:
            raise ConfigError(f"{arg} must be >= 1, got {value}")
    threads = threads or os.cpu_count()
    _limit_threads(threads)
    cfg = cfg or model_config(name)
    B, T = B or BENCH_CONFIGS[name][1], T or cfg.block_size
    step = numpy_step_fn(cfg, B, T=T)
    (x, y), model, opt = step.batch, step.model, step.optimizer
    for _ in range(2):  # warm up: first calls allocate, page in, build caches
        step()
    plain, profiled, records = [], [], []
    for _ in range(steps):  # alternate, so drift in machine speed hits both alike
        plain.append(_time(step, 1))
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
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
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
    plain = statistics.median(_time(step, 1) for _ in range(steps))
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
        f"CPU: {r['cpu']}, {r['threads']} threads; BLAS: {r['blas']}; float32 GEMM peak "
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

# numpygpt's rows in PyTorch's operator groups, to put the two breakdowns side by side
ROW_TO_TORCH_GROUP = {
    "attention heads": "attention (SDPA)", "GELU": "GELU", "layer norm": "layer norm",
    "softmax cross-entropy": "cross-entropy (log_softmax, nll)", "embedding": "embedding",
    "dropout": "dropout", "clip": "AdamW + clip (_foreach ops)",
    "AdamW": "AdamW + clip (_foreach ops)", "positional": TORCH_OTHER,
}


def plot_profile(r, torch_res=None):
    """The profile as a chart (the course's notebook 09): time per row, forward and backward,
    GEMM rows in blue with their % of the GEMM peak, elementwise rows in orange; with
    torch_res (profile_torch_step), a second panel with each group's share of the step in
    numpygpt and in PyTorch. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt  # the course's dependency, not the library's

    rows = r["rows"][::-1]  # the first layer at the top
    panels = 2 if torch_res is not None and "groups" in torch_res else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 0.32 * len(rows) + 1.6),
                             squeeze=False)
    ax = axes[0, 0]
    ypos = np.arange(len(rows))
    for y, row in zip(ypos, rows, strict=True):
        color = "tab:blue" if row["gflop"] else "tab:orange"
        if "update_ms" in row:  # clip and AdamW: one part only
            ax.barh(y, row["total_ms"], color=color, alpha=0.55)
            continue
        fwd, bwd = row.get("forward_ms", 0.0), row.get("backward_ms", 0.0)
        ax.barh(y, fwd, color=color)
        ax.barh(y, bwd, left=fwd, color=color, alpha=0.55)
        if row["gflop"]:
            ax.text(fwd + bwd, y, f" {row['pct_peak']:.0f}% of peak", va="center", fontsize=8)
    ax.set_yticks(ypos, [row["row"] for row in rows])
    ax.set_xlim(0, 1.25 * max(row["total_ms"] for row in rows))
    ax.set(xlabel="ms per training step",
           title=f"{r['config']}, B={r['batch_size']} T={r['seq_len']}: "
                 f"{r['ms_per_step']:.0f} ms per step")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="tab:blue", label="matrix products (GEMM)"),
                       Patch(color="tab:orange", label="elementwise"),
                       Patch(color="0.4", label="forward"),
                       Patch(color="0.4", alpha=0.55, label="backward (lighter)")],
              loc="lower right", fontsize=8)
    if panels == 2:
        ours = dict.fromkeys(torch_res["groups"], 0.0)
        for row in r["rows"]:
            group = ROW_TO_TORCH_GROUP.get(row["row"], "GEMM (mm, addmm, bmm)")
            ours[group] += 100 * row["share"]
        total = sum(torch_res["groups"].values())
        theirs = {g: 100 * ms / total for g, ms in torch_res["groups"].items()}
        groups = [g for g in ours if ours[g] > 0.5 or theirs[g] > 0.5][::-1]
        ax2 = axes[0, 1]
        y = np.arange(len(groups))
        ax2.barh(y + 0.2, [ours[g] for g in groups], height=0.4, label="numpygpt")
        ax2.barh(y - 0.2, [theirs[g] for g in groups], height=0.4, label="PyTorch eager")
        ax2.set_yticks(y, groups)
        ax2.set(xlabel="% of the step (each library's own step)",
                title=f"shares of the step; PyTorch {torch_res['ms_per_step']:.0f} ms per step")
        ax2.legend(fontsize=8)
    fig.suptitle(f"{r['cpu']}; BLAS: {r['blas']}; float32 GEMM peak "
                 f"{r['peak_gflops']:.0f} GFLOP/s", fontsize=9)
    fig.tight_layout()
    return fig


# --- data parallel over MPI: bench --ddp N ------------------------------------------------
#
# The same training step as train() runs it with N ranks: each computes its B/N rows of one
# global batch, one all-reduce averages the gradients, then clip and AdamW. On one machine the
# ranks share its cores, so N ranks x (cores / N) BLAS threads is compared with one process
# using all the cores (and with one thread, the per-core speed). What more machines would give
# is worked out on paper from the measured compute time and the bytes a ring all-reduce sends.

RING_SPEEDS_GBIT = (1, 10, 100)  # network speeds for the paper estimate, Gbit/s


def ring_allreduce_bytes(n_params, N, itemsize=4):
    """Bytes each of N workers sends (and receives) in a ring all-reduce of n_params numbers:
    N-1 reduce-scatter steps and N-1 all-gather steps, each passing one 1/N chunk, so
    2 (N-1)/N x the gradient's bytes, whatever N (about twice the model per step)."""
    return 2 * (N - 1) / N * n_params * itemsize


def _ddp_worker(spec):
    """(Run by bench_ddp in every rank: under mpiexec, or alone for N = 1.) Time spec["rounds"]
    rounds of spec["steps"] training steps; rank 0 prints the medians as one JSON line."""
    from ..training.parallel import GradAllReduce, get_world, shard_rows

    _limit_threads(spec["threads"])
    world = get_world()
    cfg, B = model_config(spec["config"]), spec["B"]
    rows = shard_rows(B, world.rank, world.size)
    model = GPT(cfg, seed=0, dtype=np.float32)
    opt = AdamW(model.params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    rng = np.random.default_rng(0)  # the same global batch on every rank
    x = rng.integers(0, cfg.vocab_size, (B, cfg.block_size))[rows]  # (B/N, T)
    y = rng.integers(0, cfg.vocab_size, (B, cfg.block_size))[rows]
    average = GradAllReduce(world, model.params) if world.size > 1 else None
    comm = [0.0]

    def step():
        _, loss = model.forward(x, y)
        grads = model.backward()
        if average is not None:
            t0 = time.perf_counter()
            grads = average(grads)  # includes waiting for the slower rank
            world.allreduce_scalars([loss, 0.0])  # the loss and stop flag, as train() does
            comm[0] += time.perf_counter() - t0
        clip_grad_norm(grads, 1.0)
        opt.step(grads)

    for _ in range(2):
        step()
    times, comms = [], []
    for _ in range(spec["rounds"]):
        world.barrier()
        comm[0] = 0.0
        times.append(_time(step, spec["steps"]))
        comms.append(comm[0] / spec["steps"])
    if world.is_root:
        t = statistics.median(times)
        print(json.dumps({"ranks": world.size, "threads": spec["threads"], "s_per_step": t,
                          "comm_s": statistics.median(comms),
                          "tokens_per_sec": B * cfg.block_size / t}))


def mpiexec_path():
    """The mpiexec beside this Python (`pip install mpich` puts it there), else PATH's."""
    import shutil

    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.isfile(beside) else shutil.which("mpiexec")


def bench_ddp(N, config="baby", rounds=5, steps=3):
    """tokens/s of data-parallel training on this machine: one process with all cores and
    with one thread, and N MPI ranks with cores // N threads each, at the same global batch.
    Returns a dict: "runs" (one row per setting), "n_params", "cores", and "paper": the ring
    all-reduce's bytes per step for a few N and their time at 1, 10, 100 Gbit/s."""
    N = check_int("--ddp", N, minimum=1)
    cfg, B = model_config(config), BENCH_CONFIGS[config][1]
    if B % N:
        raise ConfigError(f"--ddp {N}: the {config} benchmark's batch of {B} is not divisible "
                          f"by {N} processes")
    cores = os.cpu_count() or 1
    # Other work on the machine takes cores from every setting (and hurts BLAS threads most):
    # the load average before the runs goes with the figures.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    settings = [(1, cores), (1, 1)] + ([(N, max(1, cores // N))] if N > 1 else [])
    mpiexec = mpiexec_path() if N > 1 else None
    if N > 1:
        try:
            import mpi4py  # noqa: F401
        except ImportError:
            mpiexec = None
        if mpiexec is None:
            raise ConfigError("--ddp needs mpi4py and an mpiexec: pip install -e .[mpi]")
    runs = []
    for ranks, threads in settings:
        spec = {"config": config, "B": B, "threads": threads, "rounds": rounds,
                "steps": steps}
        cmd = [sys.executable, "-c",
               f"from numpygpt.bench.bench import _ddp_worker; _ddp_worker({spec!r})"]
        if ranks > 1:
            cmd = [mpiexec, "-n", str(ranks), *cmd]
        # No launcher variables from outside (a bench itself run under mpiexec).
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL"))}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            raise RuntimeError(f"the {ranks}-process run failed:\n{out.stderr[-2000:]}"
                               f"{out.stdout[-2000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    P = param_count(cfg)
    paper = [{"N": n, "bytes": ring_allreduce_bytes(P, n),
              "seconds": {g: ring_allreduce_bytes(P, n) * 8 / (g * 1e9)
                          for g in RING_SPEEDS_GBIT}} for n in (2, 4, 8, 64)]
    return {"config": config, "batch_size": B, "block_size": cfg.block_size, "n_params": P,
            "cores": cores, "load_average": load, "runs": runs, "paper": paper}


def format_ddp(r):
    # the reference: the faster one-process setting (with all cores busy elsewhere, BLAS
    # threads can cost more than they give)
    one = min(run["s_per_step"] for run in r["runs"] if run["ranks"] == 1)
    lines = [f"{r['config']}: global batch {r['batch_size']} x {r['block_size']} tokens, "
             f"{r['n_params']:,} parameters, {r['cores']} cores"
             + (f" (load average {r['load_average']:.1f} before: other work was running, the "
                f"figures are low)" if (r.get("load_average") or 0) > 0.5 else "")]
    for run in r["runs"]:
        comm = (f"  (all-reduce + waiting {1e3 * run['comm_s']:.1f} ms)"
                if run["ranks"] > 1 else "")
        lines.append(f"  {run['ranks']} process(es) x {run['threads']} BLAS thread(s): "
                     f"{1e3 * run['s_per_step']:8.1f} ms/step {run['tokens_per_sec']:9,.0f} "
                     f"tok/s  {one / run['s_per_step']:.2f}x the best 1-process{comm}")
    # On paper: N machines like this one, each with B/N rows; the compute time per step
    # shrinks like 1/N while the ring all-reduce's time does not (2 (N-1)/N x the model).
    lines.append(f"on paper, N machines, one all-reduce of {4 * r['n_params'] / 1e6:.2f} MB "
                 f"of float32 gradients per step (ring: 2 (N-1)/N x that sent per worker), "
                 f"vs the best 1-process step here, {1e3 * one:.1f} ms, / N:")
    header = "    N   MB sent   compute/N  " + "  ".join(f"{g:>4} Gbit/s" for g in
                                                      RING_SPEEDS_GBIT)
    lines.append(header)
    for p in r["paper"]:
        times = "  ".join(f"{1e3 * s:8.2f} ms" for s in p["seconds"].values())
        lines.append(f"  {p['N']:3d} {p['bytes'] / 1e6:8.2f}  {1e3 * one / p['N']:8.2f} ms  "
                     f"{times}")
    return "\n".join(lines)
