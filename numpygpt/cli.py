"""The command line: `python -m numpygpt {train, sample, gradcheck}`.

Every user error ends with one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

EXIT_ERROR = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the default prints the usage block too)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _add_train_flags(p):
    from .train import PRESETS, TrainConfig

    p.add_argument("--preset", choices=list(PRESETS), default=argparse.SUPPRESS,
                   help="model and schedule recipe (default: baby)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out (other flags override its settings)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--sample-tokens", type=int, default=300,
                   help="tokens of sample to print at the end (default 300)")
    helps = {"data": "'numpy-docs' (default), 'shakespeare', or a path to a UTF-8 text file",
             "out": "folder for checkpoint, log.jsonl and metrics.json (default ./out)",
             "lr_decay_iters": "length of the cosine schedule (default: max-iters)",
             "grad_accum": "micro-batches per optimizer step",
             "tokenizer": "'char' (one token per character, default) or 'bpe' (byte-level BPE)",
             "vocab_size": "vocabulary size of a BPE tokenizer (default 512)"}
    for f in fields(TrainConfig):
        if f.name == "preset":
            continue
        kind = {"int | None": int}.get(str(f.type), None) or {"int": int, "float": float,
                                                              "str": str}[str(f.type)]
        extra = {"pos_encoding": {"choices": ["learned", "sinusoidal"]},
                 "tokenizer": {"choices": ["char", "bpe"]}}.get(f.name, {})
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=argparse.SUPPRESS,
                       help=helps.get(f.name, "overrides the preset"), **extra)


def _train_config(args):
    """Preset (or, with --resume, the saved run's settings) overridden by the given flags."""
    from .checkpoint import load_checkpoint
    from .train import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if args.resume:
        if "preset" in given:
            raise ValueError("--preset cannot be combined with --resume: a resumed run keeps "
                             "its own settings (override single ones with their flags)")
        saved = dict(load_checkpoint(given.get("out", "out")).config.get("train", {}))
        if saved.get("lr_decay_iters") is None and "max_iters" in saved:
            # The run's schedule was as long as its max_iters. Keep it so: a new --max-iters
            # must not silently reshape the part of the schedule already trained (stretch it
            # explicitly with --lr-decay-iters).
            saved["lr_decay_iters"] = saved["max_iters"]
        return TrainConfig(**{**saved, **given})
    return TrainConfig.preset_config(given.pop("preset", "baby"), **given)


def cmd_train(args):
    from .train import train

    cfg = _train_config(args)
    if args.sample_tokens < 0:
        raise ValueError(f"--sample-tokens must be >= 0, got {args.sample_tokens}")
    print(f"training preset '{cfg.preset}' on '{cfg.data}' for {cfg.max_iters} iterations "
          f"(n_layer={cfg.n_layer}, n_head={cfg.n_head}, n_embd={cfg.n_embd}, "
          f"block_size={cfg.block_size}, batch_size={cfg.batch_size})", flush=True)
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
    m = result.metrics
    status = "interrupted at" if m["interrupted"] else "finished"
    print(f"{status} step {m['step']}: train loss {m['train_loss']:.4f}, "
          f"val loss {m['val_loss']:.4f}, {m['tokens_per_sec'] or 0:,.0f} tokens/s, "
          f"{m['wall_seconds']:.1f} s, {m['n_params']:,} parameters")
    print(f"saved checkpoint, log.jsonl and metrics.json in '{cfg.out}'")
    if args.sample_tokens:
        # "": start from a newline if the vocabulary has one (a corpus may have none)
        text = _sample_text(result.model, result.tokenizer, "", args.sample_tokens,
                            temperature=0.8, top_k=None, top_p=None, seed=cfg.seed)
        print("--- sample " + "-" * 60)
        print(text)
        print("-" * 71)
        print(f"more: python -m numpygpt sample --ckpt {cfg.out} --prompt \"...\"")
    return 0


def _sample_text(model, tokenizer, prompt, n, temperature, top_k, top_p, seed):
    if prompt == "":  # start from a newline when the tokenizer can encode one
        byte_level = getattr(tokenizer, "kind", "") == "bpe"  # encodes any text
        prompt = "\n" if byte_level or "\n" in getattr(tokenizer, "chars", "") else None
    ids = tokenizer.encode(prompt) if prompt is not None else np.array([0])
    out = model.generate(ids[None, :].astype(np.int64), n, temperature=temperature, top_k=top_k,
                         top_p=top_p, seed=seed)
    return tokenizer.decode(out[0])


def cmd_sample(args):
    from .checkpoint import CheckpointError, load_checkpoint
    from .data import tokenizer_from_dict
    from .hf import from_pretrained, gpt2_name, is_gpt2_folder, load_tokenizer
    from .model import GPT, GPTConfig

    if args.tokens < 0:
        raise ValueError(f"--tokens must be >= 0, got {args.tokens}")
    ckpt = args.ckpt
    if is_gpt2_folder(ckpt) or (gpt2_name(ckpt) and not Path(ckpt).exists()):
        # GPT-2 in Hugging Face format: a folder, or a name downloaded once into the cache
        model = from_pretrained(ckpt)
        tokenizer = load_tokenizer(ckpt)
        if tokenizer is None:
            raise CheckpointError(f"'{ckpt}' has no vocab.json and merges.txt (the tokenizer)")
        vocab = tokenizer.vocab
        if args.prompt == "" and b"<|endoftext|>" in vocab:
            # GPT-2 saw documents after <|endoftext|>: start there, and do not print it
            start = np.array([[vocab.index(b"<|endoftext|>")]])
            out = model.generate(start, args.tokens, temperature=args.temperature,
                                 top_k=args.top_k, top_p=args.top_p, seed=args.seed)
            print(tokenizer.decode(out[0, 1:]))
            return 0
    else:
        ckpt = load_checkpoint(ckpt)
        try:
            model = GPT(GPTConfig.from_dict(ckpt.config["model"]), params=ckpt.params)
            tokenizer = tokenizer_from_dict(ckpt.tokenizer)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint '{args.ckpt}' is not usable: {e}") from None
    model.eval()
    print(_sample_text(model, tokenizer, args.prompt, args.tokens, args.temperature, args.top_k,
                       args.top_p, args.seed))
    return 0


def cmd_gradcheck(args):
    from .gradcheck import format_table, run_layer_checks, run_model_checks

    rows = [(layer, label, name, err, thr) for layer, label, name, err, thr
            in run_layer_checks(args.seed)]
    if not args.layers_only:
        rows += [("GPT", label[4:], name, err, thr) for label, name, err, thr
                 in run_model_checks(args.seed)]
    print(format_table(rows))
    bad = [r for r in rows if not r[3] <= r[4]]
    worst = max(r[3] for r in rows)
    print(f"\n{len(rows)} gradients checked in float64, worst max relative error {worst:.2e}: "
          + ("all within their thresholds" if not bad else f"{len(bad)} FAILED"))
    return 0 if not bad else EXIT_ERROR


def cmd_bench(args):
    from .bench import (
        BENCH_CONFIGS,
        bench_attention,
        bench_kv_cache,
        bench_training,
        blas_description,
        format_results,
        matmul_peak,
    )

    names = list(BENCH_CONFIGS) if args.config == "all" else [args.config]
    if args.vs_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ValueError("--vs-torch needs PyTorch (pip install torch); numpygpt itself "
                             "never does") from None
    if args.rounds < 1 or args.steps < 1:
        raise ValueError("--rounds and --steps must be >= 1")
    peak = matmul_peak()
    print(f"BLAS: {blas_description()}; float32 matmul peak: {peak / 1e9:.0f} GFLOP/s",
          flush=True)
    results = []
    for name in names:
        results.append(bench_training(name, rounds=args.rounds, steps=args.steps,
                                      vs_torch=args.vs_torch, threads=args.threads, peak=peak))
        print(format_results(results[-1:]), flush=True)
    if not args.skip_extras:
        speedup = bench_attention()
        print(f"attention fwd+bwd (B=8, T=256, C=128, nh=4): vectorised is {speedup:.0f}x "
              f"faster than the loop reference", flush=True)
        speedup, same = bench_kv_cache()
        print(f"generation, 192 tokens after a 64-token prompt (block 256, baby width): KV cache "
              f"{speedup:.1f}x faster, {'identical' if same else 'DIFFERENT'} greedy tokens")
    if args.json:
        from .io import atomic_write_json

        atomic_write_json(args.json, results)
    return 0


def build_parser():
    parser = _Parser(prog="python -m numpygpt",
                     description="A GPT in pure NumPy with hand-written backward passes.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a GPT (default: the baby preset on numpy-docs)")
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("--ckpt", default="out",
                   help="numpygpt checkpoint folder (default ./out), GPT-2 folder in Hugging "
                        "Face format, or a GPT-2 name: gpt2, gpt2-medium, gpt2-large, gpt2-xl")
    p.add_argument("--prompt", default="", help="text to continue (default: a newline)")
    p.add_argument("--tokens", type=int, default=500, help="how many tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("bench", help="time a training step (and vs PyTorch with --vs-torch)")
    p.add_argument("--config", choices=["baby", "small", "all"], default="all")
    p.add_argument("--vs-torch", action="store_true",
                   help="the same step in PyTorch eager, in alternating rounds")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds (median is kept)")
    p.add_argument("--steps", type=int, default=5, help="training steps per round")
    p.add_argument("--threads", type=int, default=None, help="BLAS/torch threads (default: all)")
    p.add_argument("--skip-extras", action="store_true",
                   help="skip the attention and KV-cache benchmarks")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("gradcheck", help="check every backward pass against finite differences")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers-only", action="store_true", help="skip the whole-model checks")
    p.set_defaults(func=cmd_gradcheck)
    return parser


def main(argv=None):
    from .checkpoint import CheckpointError
    from .data import DataError
    from .train import TrainingError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, CheckpointError, TrainingError, ValueError, TypeError, OSError) as e:
        print(f"numpygpt {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"numpygpt {args.command}: interrupted", file=sys.stderr)
        return 130
