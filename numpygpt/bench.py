"""Benchmark of one training step (forward + backward + clip + AdamW), and of generation.

    python -m numpygpt bench                  # baby and small (batch 16), numpygpt only
    python -m numpygpt bench --vs-torch       # the same step in PyTorch eager, side by side
    python -m numpygpt bench --config gpt2-finetune --vs-torch
                                              # GPT-2 small: full fine-tuning vs LoRA vs PyTorch

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
from .model import GPT, GPTConfig, param_count
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

    step.model, step.optimizer = model, opt
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
    code = f"from numpygpt.bench import _peak_memory_child; _peak_memory_child({spec!r})"
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
           "peak_mem_mb": peak_memory("numpy", cfg, B, threads)["step"] / 2**20}
    if th_step:
        ratios = [a / b for a, b in zip(np_times, th_times, strict=True)]
        res.update({"torch_ms_per_step": 1e3 * statistics.median(th_times),
                    "ratio_vs_torch": statistics.median(ratios),
                    "torch_peak_mem_mb": peak_memory("torch", cfg, B, threads)["step"] / 2**20})
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
    lines.append("targets (issue 12):")
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
