"""The command line: `python -m numpygpt {train, finetune, sample, bench, gradcheck, course}`.

The error rule (see numpygpt.errors): a user's mistake (a file, a flag, a checkpoint, a folder)
is a UserError and ends with one line on stderr and exit code 1; anything else is a bug (in
numpygpt, or in a learner's edit of a layer) and shows its full traceback. `--debug` (before
the command) or NUMPYGPT_DEBUG=1 shows the traceback of user errors too. Ctrl-C at any moment
exits with 130 and one line; during training it first saves a checkpoint.

This module imports nothing heavy at the top (NumPy comes with the commands), so that main()
is running, and catching Ctrl-C, a few milliseconds after the interpreter starts.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from dataclasses import fields
from pathlib import Path

from .errors import ConfigError, NumpygptWarning, Stopped, UserError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a process stopped by Ctrl-C
# Ceilings of flags that would otherwise run on without an answer (documented in --help):
MAX_SAMPLE_TOKENS = 100_000  # sample --tokens, train --sample-tokens
MAX_BENCH_COUNT = 1000  # bench --rounds, --steps


_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


def _raise_stopped(signum, frame):
    raise Stopped(signum)


def _interrupted(signame):
    """The exit code of a run stopped by the signal `signame` ("SIGTERM": 143, ...; 130)."""
    return 128 + getattr(signal, signame, signal.SIGINT) if signame else EXIT_INTERRUPTED


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the default prints the usage block too)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _add_train_flags(p):
    from .training.train import PRESETS, TrainConfig

    p.add_argument("--preset", choices=list(PRESETS), default=argparse.SUPPRESS,
                   help="model and schedule recipe (default: baby)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out (other flags override its settings)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out folder that holds one (replaces only the "
                        "run's own files)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--sample-tokens", type=int, default=300,
                   help=f"tokens of sample to print at the end (default 300, at most "
                        f"{MAX_SAMPLE_TOKENS:,})")
    helps = {"data": "'numpy-docs' (default), 'shakespeare', or a path to a UTF-8 text file",
             "out": "folder for checkpoint, log.jsonl and metrics.json (default ./out)",
             "lr_decay_iters": "length of the cosine schedule (default: max-iters)",
             "grad_accum": "micro-batches per optimizer step",
             "tokenizer": "'char' (one token per character, default) or 'bpe' (byte-level BPE)",
             "vocab_size": "vocabulary size of a BPE tokenizer (default 512)",
             "arch": "'gpt' (GPT-2, default) or 'llama' (RoPE, RMSNorm, SwiGLU, grouped-query "
                     "attention; the preset's sizes, no dropout)",
             "n_kv_head": "llama: key/value heads (default n-head / 2)",
             "intermediate_size": "llama: MLP width (default 8 n-embd / 3, up to a multiple "
                                  "of 128)",
             "rope_theta": "llama: RoPE's base (default 10000)",
             "threads": "threads that share each step's batch, one BLAS thread each (default "
                        "1: one thread, BLAS's own threads for the matrix products; at most "
                        "this machine's cores)"}
    for f in fields(TrainConfig):
        if f.name == "preset":
            continue
        kind = {"int | None": int}.get(str(f.type), None) or {"int": int, "float": float,
                                                              "str": str}[str(f.type)]
        extra = {"pos_encoding": {"choices": ["learned", "sinusoidal"]},
                 "tokenizer": {"choices": ["char", "bpe"]},
                 "arch": {"choices": ["gpt", "llama"]}}.get(f.name, {})
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=argparse.SUPPRESS,
                       help=helps.get(f.name, "overrides the preset"), **extra)


def _train_config(args):
    """Preset (or, with --resume, the saved run's settings) overridden by the given flags."""
    from .io.checkpoint import CheckpointError, load_checkpoint
    from .training.train import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if args.resume:
        if "preset" in given:
            raise ConfigError("--preset cannot be combined with --resume: a resumed run keeps "
                              "its own settings (override single ones with their flags)")
        if args.overwrite:
            raise ConfigError("--overwrite cannot be combined with --resume: choose one")
        out = given.get("out", "out")
        saved = load_checkpoint(out).config.get("train")
        if not isinstance(saved, dict):
            raise CheckpointError(f"checkpoint in '{out}' has no config.train: it was not saved "
                                  "by `numpygpt train` and cannot be resumed")
        saved = dict(saved)
        if saved.get("lr_decay_iters") is None and "max_iters" in saved:
            # The run's schedule was as long as its max_iters. Keep it so: a new --max-iters
            # must not silently reshape the part of the schedule already trained (stretch it
            # explicitly with --lr-decay-iters).
            saved["lr_decay_iters"] = saved["max_iters"]
        # The saved settings alone first: a damaged file is the checkpoint's fault, a bad
        # value after the flags are applied is the flag's.
        unknown = sorted(str(k) for k in saved if k not in {f.name for f in fields(TrainConfig)})
        try:
            if unknown:
                raise ConfigError(f"unknown settings {', '.join(unknown)}")
            TrainConfig(**saved)
        except ConfigError as e:
            raise CheckpointError(f"checkpoint in '{out}' holds settings that are not valid: "
                                  f"{e}") from None
        # The run continues where it was loaded from, even if it was saved elsewhere (a
        # folder moved or renamed): never in the folder its config names.
        return TrainConfig(**{**saved, **given, "out": str(out)})
    return TrainConfig.preset_config(given.pop("preset", "baby"), **given)


def cmd_train(args):
    import contextlib

    import numpy as np

    from .training.parallel import abort_on_error, get_world, shard_rows, together
    from .training.run import check_out_folder
    from .training.train import check_run_memory, train

    # `mpiexec -n N python -m numpygpt train`: N ranks run this function. A bad flag fails on
    # every rank, and `together` makes any failure stop all ranks, with one message: rank 0's
    # (the others exit quietly, see main()). Only rank 0 prints and looks at the out folder.
    world = get_world()
    with together(world):
        _check_tokens("--sample-tokens", args.sample_tokens)
        cfg = _train_config(args)
        check_run_memory(cfg)  # train() checks these too; here they come before the banner
        shard_rows(cfg.batch_size, world.rank, world.size)  # a batch the ranks cannot share
        if world.size == 1:  # N ranks: train() checks it on rank 0 and tells the others
            check_out_folder(cfg.out, resume=args.resume, overwrite=args.overwrite)
    if world.is_root:
        arch = "" if cfg.arch == "gpt" else f" ({cfg.arch})"
        print(f"training preset '{cfg.preset}'{arch} on '{cfg.data}' for {cfg.max_iters} "
              f"iterations (n_layer={cfg.n_layer}, n_head={cfg.n_head}, n_embd={cfg.n_embd}, "
              f"block_size={cfg.block_size}, batch_size={cfg.batch_size})", flush=True)
    if world.size > 1 and world.is_root:
        print(f"data-parallel on {world.size} MPI processes: {cfg.batch_size // world.size} "
              f"rows of each batch per process", flush=True)
    elif world.size == 1:
        line = _threads_line(cfg.threads, cfg.batch_size, os.cpu_count() or 1)
        if line:
            print(line, flush=True)
    # A run that blows up ends in one line ("loss became nan at step 7 ..."); NumPy's overflow
    # warnings on the way there are noise, except when debugging.
    quiet = contextlib.nullcontext() if args.debug else np.errstate(all="ignore")
    with quiet, abort_on_error(world, "numpygpt train"):
        result = train(cfg, resume=args.resume, progress=world.is_root and not args.no_progress,
                       overwrite=args.overwrite, world=world)
    if not world.is_root:  # rank 0 reports (and samples) for all
        return _interrupted(result.metrics["signal"]) if result.metrics["interrupted"] else 0
    m = result.metrics
    status = "interrupted at" if m["interrupted"] else "finished"
    print(f"{status} step {m['step']}: {_losses(m)}, "
          f"{m['tokens_per_sec'] or 0:,.0f} tokens/s, "
          f"{m['wall_seconds']:.1f} s, {m['n_params']:,} parameters")
    print(f"saved checkpoint, log.jsonl and metrics.json in '{cfg.out}'")
    if m["interrupted"]:  # saved, and no sample: the user asked to stop
        print(f"numpygpt train: interrupted{_by(m)} at step {m['step']}; the checkpoint is "
              f"saved in '{cfg.out}' (continue with --resume)", file=sys.stderr)
        return _interrupted(m["signal"])
    if args.sample_tokens:
        # "": start from a newline if the vocabulary has one (a corpus may have none)
        text = _sample_text(result.model, result.tokenizer, "", args.sample_tokens,
                            temperature=0.8, top_k=None, top_p=None, seed=cfg.seed)
        print("--- sample " + "-" * 60)
        print(text)
        print("-" * 71)
        print(f"more: python -m numpygpt sample --ckpt {cfg.out} --prompt \"...\"")
    return 0


def _threads_line(threads, batch_size, cores):
    """The banner's line on how a one-process run uses the cores ("" on a one-core machine
    running one thread): what --threads N does is easy to miss, and worth knowing of."""
    if threads > 1:
        return (f"{threads} threads share each batch of {batch_size} rows, one BLAS thread each "
                f"(--threads)")
    if cores > 1:
        return (f"one thread runs each step and BLAS's threads run its matrix products; "
                f"--threads N (N <= {cores}, the cores) shares each batch among N threads: "
                f"docs/training.md")
    return ""


def _losses(m):
    """'train loss 2.1234, val loss 2.2345' (a run stopped in its first evaluation has none)."""
    if m["val_loss"] is None:
        return "stopped before its first evaluation finished"
    return f"train loss {m['train_loss']:.4f}, val loss {m['val_loss']:.4f}"


def _by(metrics):
    """' by SIGTERM' for a run a signal other than Ctrl-C stopped."""
    s = metrics.get("signal")
    return f" by {s}" if s and s != "SIGINT" else ""


def _add_finetune_flags(p):
    from .finetune.dpo import DPOConfig
    from .finetune.run import TASKS, FinetuneConfig

    helps = {
        "ckpt": "the model to start from: a numpygpt checkpoint folder (default ./out, the "
                "default `train` run), a GPT-2 folder in Hugging Face format, or gpt2, "
                "gpt2-medium, ...; number-translation: a new model unless given",
        "task": "classify (text -> label), instruct (instruction -> response), or "
                "number-translation (English number words -> Chinese numerals: a new model "
                "trained by its own recipe, 2000 steps)",
        "keep": "instruct: the run's result, the last weights or the best by the held-out "
                "answers' exact match at the evaluations (number-translation: best)",
        "data": "numpy-topics (classify), numpy-qa or numpy-summaries (instruct), or a file: "
                "CSV/JSONL with text,label (classify) or JSONL with instruction, input, output "
                "(instruct); default: numpy-topics / numpy-qa",
        "out": "folder for checkpoint, log.jsonl and metrics.json (default ./out-finetune)",
        "lora_rank": "train LoRA adapters of this rank instead of the weights (0: no LoRA)",
        "lora_alpha": "LoRA's alpha: the update is scaled by alpha / rank (default 16)",
        "lora_targets": "comma-separated linear maps to adapt (default: all four)",
        "freeze": "none (default), embeddings, body (classify: only the head trains) or K "
                  "(the embeddings and the first K blocks)",
        "template": "instruct: alpaca or compact (default: compact below 256 tokens of "
                    "context, else alpaca)",
        "eval_generate": "instruct: held-out instructions answered at the end (default 20)",
        "max_new_tokens": "instruct: the longest generated answer (default 80)",
        "n_test": "number-translation: held-out test numbers answered at the end, the first N "
                  "(default 0: all 10,009)",
        "lr": "peak learning rate (default: 2e-3 when only adapters or the head train, "
              "else 5e-4; number-translation 3e-3; dpo 1e-3)",
        "min_lr_ratio": "the cosine schedule ends at lr times this (default 0.1)",
    }
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out (only --max-iters, --eval-interval, "
                        "--log-interval, --eval-generate, --max-new-tokens, --n-test may change)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out folder that holds one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--method", choices=["sft", "dpo"], default="sft",
                   help="sft (default): learn the task's examples; dpo: preference-tune an "
                        "instruction-tuned run (--init) on pairs of right and wrong answers")
    dpo_helps = {
        "init": "dpo: the instruction-tuned run to start from, also the frozen reference "
                "(default ./out-finetune)",
        "pairs": "dpo: a JSONL file of {instruction, input, chosen, rejected} (default: pairs "
                 "made from the --init run's own wrong answers)",
        "n_pairs": "dpo: training pairs to make from the run's mistakes (default 2000)",
        "beta": "dpo: how far from the reference the model may move (default 0.1)",
        "alpha": "dpo: weight of the chosen answers' NLL beside the DPO loss (default 10; 0: "
                 "plain DPO)",
    }
    shown = {}
    for f in [*fields(FinetuneConfig), *fields(DPOConfig)]:
        if f.name in shown:
            continue
        shown[f.name] = True
        kind = {"int": int, "float": float, "str": str}[str(f.type)]
        extra = {"task": {"choices": list(TASKS)}, "keep": {"choices": ["last", "best"]}
                 }.get(f.name, {})
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=argparse.SUPPRESS,
                       help=helps.get(f.name) or dpo_helps.get(f.name)
                       or f"(default {f.default})", **extra)


def cmd_finetune(args):
    import contextlib

    import numpy as np

    from .finetune.dpo import DPOConfig
    from .finetune.run import FinetuneConfig, finetune, resume_config
    from .training.run import check_out_folder

    if args.resume and args.overwrite:
        raise ConfigError("--overwrite cannot be combined with --resume: choose one")
    own = {f.name for f in fields(DPOConfig if args.method == "dpo" else FinetuneConfig)}
    every = {f.name for f in (*fields(FinetuneConfig), *fields(DPOConfig))}
    stray = sorted(n for n in every - own if hasattr(args, n))
    if stray:
        flag = "--" + stray[0].replace("_", "-")
        raise ConfigError(f"{flag} is not a setting of --method {args.method}" + (
            " (preference tuning starts from --init, an instruction-tuned run)"
            if args.method == "dpo" else " (it is for --method dpo)"))
    if args.method == "dpo":
        return _finetune_dpo(args)
    given = {f.name: getattr(args, f.name) for f in fields(FinetuneConfig)
             if hasattr(args, f.name)}
    if args.resume:
        out = given.pop("out", "out-finetune")
        cfg = resume_config(out, **given)
    else:
        cfg = FinetuneConfig.for_task(**given)
    check_out_folder(cfg.out, resume=args.resume, overwrite=args.overwrite)
    what = f"LoRA r={cfg.lora_rank}" if cfg.lora_rank else (
        "full fine-tuning" if cfg.freeze == "none" else f"--freeze {cfg.freeze}")
    print(f"fine-tuning {repr(cfg.ckpt) if cfg.ckpt else 'a new model'} for {cfg.task} on "
          f"'{cfg.data_name}' ({what}, "
          f"{cfg.max_iters} iterations, batch {cfg.batch_size})", flush=True)
    quiet = contextlib.nullcontext() if args.debug else np.errstate(all="ignore")
    with quiet:
        result = finetune(cfg, resume=args.resume, progress=not args.no_progress,
                          overwrite=args.overwrite)
    m = result.metrics
    status = "interrupted at" if m["interrupted"] else "finished"
    print(f"{status} step {m['step']}: {_losses(m)}; "
          f"{m['trainable_params']:,} of {m['total_params']:,} "
          f"parameters trained; {m['wall_seconds']:.1f} s")
    if cfg.task == "classify":
        print(f"val accuracy {m['val_accuracy']:.1%} on {m['n_val']} held-out examples "
              f"(majority-class baseline: {m['baseline_accuracy']:.1%}, always "
              f"'{m['baseline_label']}')")
    else:
        if m["initial_val_loss"] is not None:
            print(f"held-out response loss {m['initial_val_loss']:.4f} before, "
                  f"{m['val_loss']:.4f} after")
        if m["answers"]:
            print(f"{len(m['answers'])} held-out instructions answered: exact match "
                  f"{m['exact_match']:.1%}, character overlap {m['char_overlap']:.1%}")
            for row in m["answers"][:3]:
                print(f"  {row['instruction']}\n    -> {row['answer']!r}\n"
                      f"    (reference {row['reference']!r})")
        if m.get("kept_step") is not None:
            print(f"kept the weights of step {m['kept_step']} (held-out exact match "
                  f"{m['val_exact_match']:.1%} at the evaluations)")
        if m.get("n_test"):
            print(f"test: exact match {m['test_exact_match']:.2%} on {m['n_test']:,} numbers "
                  "never trained on")
        print(f"ask it: python -m numpygpt respond --ckpt {cfg.out} \"...\"")
    print(f"saved checkpoint, log.jsonl and metrics.json in '{cfg.out}'")
    if m["interrupted"]:
        print(f"numpygpt finetune: interrupted{_by(m)} at step {m['step']}; the checkpoint is "
              f"saved in '{cfg.out}' (continue with --resume)", file=sys.stderr)
        return _interrupted(m["signal"])
    return 0


def _finetune_dpo(args):
    """finetune --method dpo: preference tuning of an instruction-tuned run."""
    import contextlib

    import numpy as np

    from .finetune import dpo

    given = {name: getattr(args, name) for name in dpo.dpo_fields() if hasattr(args, name)}
    if args.resume:
        cfg = dpo.resume_config(given.pop("out", "out-dpo"), **given)
    else:
        cfg = dpo.DPOConfig(**given)
    print(f"preference tuning (DPO, beta {cfg.beta:g}, alpha {cfg.alpha:g}) of '{cfg.init}' "
          f"({cfg.max_iters} iterations, {cfg.batch_size} pairs a batch)", flush=True)
    quiet = contextlib.nullcontext() if args.debug else np.errstate(all="ignore")
    with quiet:
        result = dpo.dpo(cfg, resume=args.resume, progress=not args.no_progress,
                         overwrite=args.overwrite)
    m = result.metrics
    status = "interrupted at" if m["interrupted"] else "finished"
    first = m["initial"]
    print(f"{status} step {m['step']} ({m['n_pairs']:,} training pairs, "
          f"{m['n_eval_pairs']:,} held-out): kept the weights of step {m['kept_step']}")
    if first.get("val_pref_accuracy") is not None:
        print(f"held-out preference accuracy {first['val_pref_accuracy']:.1%} -> "
              f"{m['val_pref_accuracy']:.1%}, margin {first['val_margin']:.3f} -> "
              f"{m['val_margin']:.3f}; held-out exact match {first['val_exact_match']:.1%} -> "
              f"{m['val_exact_match']:.1%}")
    if m.get("n_test"):
        print(f"test: exact match {m['test_exact_match']:.2%} on {m['n_test']:,} prompts "
              "never trained on")
    print(f"saved checkpoint, log.jsonl and metrics.json in '{cfg.out}'")
    if m["interrupted"]:
        print(f"numpygpt finetune: interrupted{_by(m)} at step {m['step']}; the checkpoint is "
              f"saved in '{cfg.out}' (continue with --resume)", file=sys.stderr)
        return _interrupted(m["signal"])
    return 0


def _sample_text(model, tokenizer, prompt, n, temperature, top_k, top_p, seed):
    import numpy as np

    from .data.tokenizer_base import TokenizerError

    if prompt == "":  # start from a newline when the tokenizer can encode one
        byte_level = getattr(tokenizer, "kind", "") == "bpe"  # encodes any text
        prompt = "\n" if byte_level or "\n" in getattr(tokenizer, "chars", "") else None
    try:
        ids = tokenizer.encode(prompt) if prompt is not None else np.array([0])
    except TokenizerError as e:  # a character the vocabulary lacks: the user's prompt
        raise ConfigError(f"--prompt: {e}") from None
    out = model.generate(ids[None, :].astype(np.int64), n, temperature=temperature, top_k=top_k,
                         top_p=top_p, seed=seed)
    return tokenizer.decode(out[0])


def cmd_sample(args):
    import numpy as np

    from .data import load_gpt2_tokenizer
    from .io import hf_gpt2, hub
    from .io.checkpoint import CheckpointError, load_checkpoint
    from .models.gpt import GPT
    from .models.sampling import check_sampling
    from .training.run import model_from_checkpoint

    _check_tokens("--tokens", args.tokens)
    _check_seed(args.seed)
    check_sampling(args.temperature, args.top_k, args.top_p)  # before loading anything
    ckpt = args.ckpt
    if hf_gpt2.looks_like_gpt2_folder(ckpt) or (hub.gpt2_name(ckpt) and not Path(ckpt).exists()):
        # GPT-2 in Hugging Face format: a folder (from_pretrained says what it lacks), or a
        # name downloaded once into the cache
        model = GPT.from_pretrained(ckpt)
        tokenizer = load_gpt2_tokenizer(ckpt)
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
        if isinstance(ckpt.config.get("finetune"), dict):  # a `finetune` run
            return _sample_finetuned(ckpt, args)
        model, tokenizer = model_from_checkpoint(ckpt, args.ckpt)
    print(_sample_text(model, tokenizer, args.prompt, args.tokens, args.temperature, args.top_k,
                       args.top_p, args.seed))
    return 0


def _sample_finetuned(ckpt, args):
    """sample --ckpt on a fine-tuning run: an instruct run answers --prompt as an instruction
    (wrapped in its template, cut at the end of the response); a classifier says so."""
    from .finetune.answers import respond
    from .finetune.run import from_checkpoint

    model, tokenizer, info = from_checkpoint(ckpt, args.ckpt)
    if info["task"] == "classify":
        raise ConfigError(f"'{args.ckpt}' is a classifier (fine-tuned for {info['task']}): it "
                          f"predicts labels, not text; see its metrics.json, or "
                          f"numpygpt.finetune.run.predict")
    if not args.prompt:
        raise ConfigError("--prompt: give the instruction to answer (this is an instruct run)")
    print(respond(model, tokenizer, info["template_obj"], args.prompt, "", args.tokens,
                  temperature=args.temperature, top_k=args.top_k, seed=args.seed))
    return 0


def cmd_respond(args):
    """One greedy response per prompt, one per line, from an instruction-tuned run."""
    from .finetune.answers import respond_batch
    from .finetune.run import load_finetuned
    from .io.files import read_text

    if bool(args.text) == bool(args.file):
        raise ConfigError("give the prompts as arguments or with --file F (one per line), "
                          "not both" if args.text else "give prompts to answer: respond --ckpt "
                          "RUN \"twelve\" ..., or --file F (one prompt per line)")
    _check_tokens("--max-new-tokens", args.max_new_tokens or 0)
    model, tokenizer, info = load_finetuned(args.ckpt)
    if info["task"] == "classify":
        raise ConfigError(f"'{args.ckpt}' is a classifier: it predicts labels, not text (see "
                          f"numpygpt.finetune.run.predict)")
    prompts = list(args.text)
    if args.file:
        text = read_text(args.file, "--file", max_bytes=16 << 20)
        prompts = text.splitlines()
    examples = [{"instruction": p, "input": ""} for p in prompts]
    n_new = args.max_new_tokens or info.get("max_new_tokens") or 80
    answers = respond_batch(model, tokenizer, info["template_obj"],
                            [e for e in examples if e["instruction"].strip()], n_new)
    it = iter(answers)
    for e in examples:  # a blank line of the file answers with a blank line: lines stay aligned
        answer = next(it) if e["instruction"].strip() else ""
        print(answer.replace("\n", "\\n"))  # one response, one line
    return 0


def _check_tokens(flag, n):
    """A number of tokens to generate: 0 .. MAX_SAMPLE_TOKENS."""
    if n < 0 or n > MAX_SAMPLE_TOKENS:
        raise ConfigError(f"{flag} must be between 0 and {MAX_SAMPLE_TOKENS:,}, got {n:,}")


def _check_seed(seed):
    if seed is not None and seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {seed}")


def cmd_gradcheck(args):
    from .gradcheck import (
        format_table,
        run_layer_checks,
        run_llama_model_checks,
        run_model_checks,
    )

    _check_seed(args.seed)
    rows = run_layer_checks(args.seed)  # (layer, case, tensor, max rel error, threshold)
    if not args.layers_only:
        # the model's case labels read "GPT <case>": the layer column already says GPT
        rows += [("GPT", label.removeprefix("GPT "), name, err, thr)
                 for label, name, err, thr in run_model_checks(args.seed)]
        rows += [("Llama", label.removeprefix("Llama "), name, err, thr)
                 for label, name, err, thr in run_llama_model_checks(args.seed)]
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
        bench_finetune,
        bench_kv_cache,
        bench_training,
        blas_description,
        cpu_name,
        format_finetune,
        format_profile,
        format_results,
        limit_threads,
        matmul_peak,
        memory_note,
        profile_step,
        profile_torch_step,
    )
    from .training.memory import keep_freed_memory

    if args.ddp is not None:
        return _bench_ddp(args)
    config = args.config or ("small" if args.profile else "all")
    if args.profile and config not in BENCH_CONFIGS:
        raise ConfigError(f"--profile takes one config, baby or small, not {config}")
    finetune = config == "gpt2-finetune"  # a benchmark of its own, never in "all"
    names = list(BENCH_CONFIGS) if config == "all" else [] if finetune else [config]
    rounds = args.rounds if args.rounds is not None else (3 if finetune else 7)
    steps = args.steps if args.steps is not None else (1 if finetune else 5)
    # Every flag is checked before the benchmark runs (minutes), not after it.
    for flag, value in (("--rounds", rounds), ("--steps", steps), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    for flag, value, most in (("--rounds", rounds, MAX_BENCH_COUNT),
                              ("--steps", steps, MAX_BENCH_COUNT),
                              ("--threads", args.threads, os.cpu_count() or 1)):
        if value is not None and value > most:
            why = "this machine's cores" if flag == "--threads" else "a benchmark's ceiling"
            raise ConfigError(f"{flag} must be at most {most} ({why}), got {value}")
    if args.json:
        _check_writable(args.json, "--json")
    if args.vs_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ConfigError("--vs-torch needs PyTorch (pip install torch); numpygpt itself "
                              "never does") from None
    # the process's malloc keeps freed memory, as in training (training/memory.py); PyTorch's
    # side runs in this process with the same setting
    kept = keep_freed_memory()
    if args.kernels:  # every kernel against PyTorch's op, then flash attention's memory
        return _bench_kernels(args, rounds, kept)
    # the threads of the runs below, before the header reports them and the peak is measured
    # on them (the MFU of a one-thread step is a share of one thread's peak)
    limit_threads(args.threads or os.cpu_count() or 1)
    peak = matmul_peak()
    print(f"CPU: {cpu_name()}; BLAS: {blas_description()}; float32 matmul peak: "
          f"{peak / 1e9:.0f} GFLOP/s; {memory_note(kept)}", flush=True)
    results = []
    if args.profile:  # where one step's time goes
        print(f"profiling {config}: 2 warm-up steps, then {steps} plain and {steps} profiled "
              "steps, alternating" + (", then PyTorch's" if args.vs_torch else "") + "...",
              flush=True)
        res = profile_step(config, steps=steps, threads=args.threads, peak=peak)
        th = profile_torch_step(config, steps=steps, threads=args.threads) if args.vs_torch \
            else None
        if th is not None:
            res["torch"] = th
        print(format_profile(res, th), flush=True)
        results.append(res)
        names = []  # the profile replaces the timings below
    if finetune:
        print(f"gpt2-finetune: {rounds} rounds of {steps} step(s) each way, after a warm-up "
              "step, then each way's peak memory in a fresh process (a few minutes)...",
              flush=True)
        results.append(bench_finetune(rounds=rounds, steps=steps, vs_torch=args.vs_torch,
                                      threads=args.threads, peak=peak))
        print(format_finetune(results[-1]), flush=True)
    for name in names:
        results.append(bench_training(name, rounds=rounds, steps=steps,
                                      vs_torch=args.vs_torch, threads=args.threads, peak=peak))
        print(format_results(results[-1:]), flush=True)
    if not (args.skip_extras or finetune or args.profile):
        speedup = bench_attention()
        print(f"attention fwd+bwd (B=8, T=256, C=128, nh=4): vectorised is {speedup:.0f}x "
              f"faster than the loop reference", flush=True)
        speedup, same = bench_kv_cache()
        print(f"generation, 192 tokens after a 64-token prompt (block 256, baby width): KV cache "
              f"{speedup:.1f}x faster, {'identical' if same else 'DIFFERENT'} greedy tokens")
    if args.json:
        _write_json(args.json, [{**r, "freed_memory_kept": kept} for r in results])
    return 0


def _bench_kernels(args, rounds, kept):
    from .bench.kernels import bench_flash, bench_kernels, format_flash, format_kernels

    if args.profile or args.ddp is not None or args.config not in (None, "small"):
        raise ConfigError("--kernels times the kernels at the small shapes: no --profile, "
                          "--ddp or other --config")
    print("timing every kernel, forward + backward, "
          + ("against PyTorch's op, " if args.vs_torch else "") + f"{rounds} interleaved "
          "rounds...", flush=True)
    res = bench_kernels(rounds=rounds, threads=args.threads, vs_torch=args.vs_torch)
    res["freed_memory_kept"] = kept
    print(format_kernels(res), flush=True)
    flash = [row for p in (0.0, 0.2) for row in bench_flash(
        p=p, rounds=max(1, rounds // 2), vs_torch=args.vs_torch, threads=args.threads)]
    print("\n" + format_flash(flash), flush=True)
    res["flash"] = flash
    if args.json:
        _write_json(args.json, res)
    return 0


def _bench_ddp(args):
    from .bench import bench_ddp, blas_description, cpu_name, format_ddp

    config = args.config or "baby"
    if config not in ("baby", "small"):
        raise ConfigError(f"--ddp times baby or small, not {config}")
    for flag, value in (("--ddp", args.ddp), ("--rounds", args.rounds), ("--steps", args.steps)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if args.json:
        _check_writable(args.json, "--json")
    print(f"CPU: {cpu_name()}; BLAS: {blas_description()}; timing 1 process and {args.ddp} "
          f"MPI processes...", flush=True)
    res = bench_ddp(args.ddp, config, rounds=args.rounds or 5, steps=args.steps or 3)
    print(format_ddp(res), flush=True)
    if args.json:
        _write_json(args.json, res)
    return 0


def _write_json(path, obj):
    """bench --json: write the figures (atomically); a write that fails is one line."""
    from .io.files import atomic_write_json

    try:
        atomic_write_json(path, obj)
    except OSError as e:
        raise UserError(f"cannot write --json '{path}': {e.strerror or e}") from None


def _check_writable(path, flag):
    """ConfigError unless a file can be written at `path`: its folder exists and is writable,
    and it is not a folder itself (an atomic write creates a temporary file beside it)."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise ConfigError(f"{flag} '{path}' is a folder, not a file")
    if not folder.is_dir():
        raise ConfigError(f"{flag} '{path}': the folder '{folder}' does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists()
                                                    and not os.access(path, os.W_OK)):
        raise ConfigError(f"{flag} '{path}' is not writable")


def cmd_course_build(args):
    from .course.site import build_site

    def warn(line):
        print(line, file=sys.stderr, flush=True)

    build_site(args.out, args.notebooks, fast=args.fast, stubs=args.stubs,
               log=lambda line: print(line, flush=True), warn=warn)
    return 0


def build_parser():
    parser = _Parser(prog="python -m numpygpt",
                     description="A GPT in pure NumPy with hand-written backward passes.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of every error, a user's mistake too "
                             "(also: NUMPYGPT_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a GPT (default: the baby preset on numpy-docs)",
                       description="Train a GPT. Data-parallel on N processes: mpiexec -n N "
                                   "python -m numpygpt train ... (pip install -e .[mpi] brings "
                                   "mpi4py and MPICH); --batch-size stays the global batch "
                                   "(a multiple of N) and the result equals one process's.")
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="fine-tune a trained GPT (or GPT-2) for a task: "
                                        "classify or instruct, fully, frozen or with LoRA")
    _add_finetune_flags(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("--ckpt", default="out",
                   help="numpygpt checkpoint folder (default ./out), GPT-2 folder in Hugging "
                        "Face format, or a GPT-2 name: gpt2, gpt2-medium, gpt2-large, gpt2-xl")
    p.add_argument("--prompt", default="", help="text to continue (default: a newline)")
    p.add_argument("--tokens", type=int, default=500,
                   help=f"how many tokens to generate (default 500, at most {MAX_SAMPLE_TOKENS:,})")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("respond", help="answer prompts with an instruction-tuned run: one "
                                       "greedy response per line")
    p.add_argument("text", nargs="*", help="the prompts (instructions) to answer")
    p.add_argument("--ckpt", default="out-finetune",
                   help="a fine-tuned instruction run (finetune --task instruct or "
                        "number-translation; default ./out-finetune)")
    p.add_argument("--file", default=None, help="answer each line of this UTF-8 file instead")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="the longest answer (default: the run's own --max-new-tokens)")
    p.set_defaults(func=cmd_respond)

    p = sub.add_parser("bench", help="time a training step (and vs PyTorch with --vs-torch)")
    p.add_argument("--config", choices=["baby", "small", "all", "gpt2-finetune"],
                   default=None,
                   help="default all = baby and small (with --profile: small); gpt2-finetune "
                        "(not in all: minutes) times one step of a 124M GPT-2-shaped model "
                        "(random weights, B=4, T=256): full fine-tuning vs LoRA r=8 (vs "
                        "PyTorch with --vs-torch), with the peak memory of each, against "
                        "its targets (full <= PyTorch; LoRA <= 0.75x the time and <= 0.6x "
                        "the memory of full)")
    p.add_argument("--profile", action="store_true",
                   help="where one training step's time goes, layer by layer, forward and "
                        "backward, GEMM vs elementwise against the GEMM peak (median of "
                        "--steps profiled steps; one config; with --vs-torch also PyTorch's "
                        "step by operator, from torch.profiler)")
    p.add_argument("--vs-torch", action="store_true",
                   help="the same step in PyTorch eager, in alternating rounds")
    p.add_argument("--kernels", action="store_true",
                   help="every kernel of both models (layer norm, RMSNorm, GELU, SwiGLU, "
                        "attention with and without dropout, flash attention, GQA, softmax "
                        "cross-entropy, AdamW, embedding), forward + backward at the small "
                        "shapes: plain vs the chosen kernels (with --vs-torch also PyTorch's "
                        "op; with more than one thread also the chosen kernels as train "
                        "--threads N runs them), then flash attention's memory and time at "
                        "T=256 and T=1024")
    p.add_argument("--rounds", type=int, default=None,
                   help="alternating rounds, the median is kept (default 7; gpt2-finetune: 3)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per round (default 5; gpt2-finetune: 1, after one "
                        "warm-up step each way)")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS/torch threads (default: all; at most this machine's cores)")
    p.add_argument("--skip-extras", action="store_true",
                   help="skip the attention and KV-cache benchmarks (gpt2-finetune never runs "
                        "them)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--ddp", type=int, default=None, metavar="N",
                   help="data-parallel training: tokens/s of N MPI processes (mpiexec, "
                        "pip install -e .[mpi]) vs one process, at the same global batch, and "
                        "the all-reduce's cost on paper for more machines (config baby or "
                        "small, default baby)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("gradcheck", help="check every backward pass against finite differences")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers-only", action="store_true", help="skip the whole-model checks")
    p.set_defaults(func=cmd_gradcheck)

    p = sub.add_parser("course", help="the course: build its web site")
    course = p.add_subparsers(dest="course_command", metavar="{build}", required=True,
                              parser_class=_Parser)
    p = course.add_parser("build", help="run every notebook and write a static site: the "
                                        "course map, one page per notebook with its plots")
    p.add_argument("--out", default="site",
                   help="folder for the site (default ./site); a previous build there is "
                        "replaced, any other non-empty folder is refused")
    p.add_argument("--notebooks", default=None,
                   help="folder of the course notebooks (default: notebooks/ of this checkout)")
    p.add_argument("--fast", action="store_true",
                   help="NUMPYGPT_FAST=1: shrink every training run (a quick build, with "
                        "rougher losses and plots)")
    p.add_argument("--stubs", action="store_true",
                   help="run the exercises as the learner gets them (stubs), not with the "
                        "solutions put in")
    p.set_defaults(func=cmd_course_build)
    return parser


def _rank_label():
    """' (rank 1 of 2)' under mpiexec, where more than one process may print an error."""
    # imported only by a command that uses it
    parallel = sys.modules.get("numpygpt.training.parallel")
    return parallel.rank_label() if parallel is not None else ""


def _one_line_warning(command, show):
    """warnings.showwarning for a command: a NumpygptWarning as `command: warning: ...`
    (rank-labelled under mpiexec), any other warning as Python shows it."""
    def showwarning(message, category, *args, **kwargs):
        if issubclass(category, NumpygptWarning):
            print(f"{command}{_rank_label()}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    return showwarning


def _debug_from_env():
    return os.environ.get("NUMPYGPT_DEBUG", "").strip() not in ("", "0")


def main(argv=None):
    """Run a command; return its exit code: 0, 1 for a user's mistake, 2 for a usage error
    (argparse exits with it), 128 + the signal's number for a stop: 130 Ctrl-C (SIGINT),
    143 SIGTERM, 129 SIGHUP.

    Only a UserError (and Ctrl-C) is turned into one line on stderr. Any other exception is a
    bug, in numpygpt or in a learner's edit of it: it propagates, and Python prints its full
    traceback (exit code 1), which is what finds the bug.
    """
    command, debug = "numpygpt", _debug_from_env()
    # SIGTERM and SIGHUP stop a command as Ctrl-C does (training installs its own handlers,
    # which save a checkpoint first); where signals cannot be set (a thread), nothing changes
    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, _raise_stopped) for s in _STOP_SIGNALS}
    try:  # from the first line: a Ctrl-C while NumPy is still importing is one line too
        args = build_parser().parse_args(argv)
        command, debug = f"numpygpt {args.command}", debug or args.debug
        args.debug = debug
        with warnings.catch_warnings():  # numpygpt's warnings: one line each, on stderr
            warnings.simplefilter("always", NumpygptWarning)
            warnings.showwarning = _one_line_warning(command, warnings.showwarning)
            return args.func(args)
    except UserError as e:
        if debug:
            raise
        if getattr(e, "quiet", False):  # mpiexec: another rank failed and says why
            return EXIT_ERROR
        message = " ".join(str(e).splitlines())  # one line, whatever the message holds
        print(f"{command}{_rank_label()}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as e:
        if debug:
            raise
        signum = getattr(e, "signum", None)
        by = f" ({signal.Signals(signum).name})" if signum else ""
        print(f"{command}: interrupted{by}", file=sys.stderr)
        return 128 + signum if signum else EXIT_INTERRUPTED
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
