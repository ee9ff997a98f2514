"""Fine-tuning at GPT-2 size: `python -m numpygpt bench --config gpt2-finetune [--vs-torch]`.

One step of GPT-2 small (124M parameters, random weights) three ways: numpygpt full
fine-tuning, numpygpt LoRA on all four linear maps of every block, and PyTorch eager full
fine-tuning of the same weights on the same batch. The three first losses agree (LoRA starts
as the plain model): a check that all three step the same model. The figures are ratios, held
against the targets in FINETUNE_TARGETS.
"""

from __future__ import annotations

import os
import statistics

from ..models.gpt import GPTConfig, param_count
from .machine import (
    blas_description,
    cpu_name,
    fair_turns,
    limit_threads,
    matmul_peak,
    threads_text,
)
from .step import check_counts, numpy_step_fn, peak_memory, step_flops

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
    variant in its own fresh process (see step._peak_memory_child; memory=False skips it).
    cfg, B, T: another model and shape (the tests use a tiny one).

    Returns a dict of figures; "met" says, per target in FINETUNE_TARGETS, whether it is.
    """
    check_counts(rounds=rounds, steps=steps, threads=threads)
    cfg = cfg or GPT2_SMALL
    B, T = B or FINETUNE_BATCH[0], T or FINETUNE_BATCH[1]
    threads = threads or os.cpu_count()
    if vs_torch:  # PyTorch is optional: imported for the comparison only
        import torch  # noqa: F401  (before limit_threads, which then sets torch's threads too)
    limit_threads(threads)
    times, first_loss, lora_params = _time_finetune(cfg, B, T, rounds, steps, vs_torch, threads)
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


def _time_finetune(cfg, B, T, rounds, steps, vs_torch, threads):
    """The timing part of bench_finetune, in its own scope so that its models (about 2.4 GB
    for each full fine-tuning at GPT-2 size, with its optimizer state) are freed before the
    memory runs.
    Returns ({variant: [seconds per step, one per round]}, {variant: first loss}, the number
    of LoRA parameters)."""
    full = numpy_step_fn(cfg, B, T=T)
    variants = {"full": full, "lora": numpy_step_fn(cfg, B, T=T, lora=FINETUNE_LORA)}
    if vs_torch:  # the full model's weights, before its first step
        from .torch_step import torch_step_fn

        variants["torch"] = torch_step_fn(cfg, B, T=T, params=full.model.params)
    lora_params = sum(p.size for p in variants["lora"].optimizer.params.values())
    # warm-up: first calls allocate, page in, build caches; the three first losses agree
    # (B = 0: LoRA starts as the plain model), a check that all three step the same model
    first_loss = {k: step() for k, step in variants.items()}
    # a pause before each turn only where PyTorch's idle workers and numpy's take turns
    times = fair_turns(variants, rounds, steps, threads if vs_torch else 1)
    return times, first_loss, lora_params


def format_finetune(r):
    """The lines `bench --config gpt2-finetune` prints: each variant, then each target."""
    c = r["model"]
    lines = [
        f"{r['config']}: {c['n_layer']} layers, {c['n_head']} heads, n_embd {c['n_embd']}, "
        f"vocab {c['vocab_size']}, block {c['block_size']} ({r['n_params'] / 1e6:.1f}M params, "
        f"random weights, float32), B={r['batch_size']} T={r['seq_len']}; one step = forward + "
        f"backward + clip + AdamW; {r['rounds']} rounds of {r['steps']} step(s), medians",
        f"CPU: {r['cpu']}, {threads_text(r['threads'])}; BLAS: {r['blas']}"]
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
