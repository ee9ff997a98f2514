"""Pretraining: one function, `train(TrainConfig(...))`, used by the CLI and the notebooks.

A step draws a batch of random windows of the corpus (data/batches.py) and computes the
language-model loss and its gradients (our own backward passes), with gradient accumulation
and, under mpiexec, data parallelism; the loop of loop.py does the rest (schedule, clipping,
AdamW, evaluation, logging, checkpoints, resume). Every eval_interval steps the train and
validation losses are estimated on fixed windows.

Before anything is built, a run is checked: the settings (TrainConfig), the out folder
(run.py), and that the model and a batch fit in this machine's RAM (`estimate_memory`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data import get_batch, prepare_corpus, tokenizer_for_model
from ..errors import ConfigError, check_int, check_memory, check_real, check_text
from ..io.checkpoint import CheckpointError, load_checkpoint, validate_params
from ..io.files import quote
from ..io.lock import RunLock
from ..models.gpt import GPT, POS_ENCODINGS, GPTConfig
from ..models.llama import LlamaConfig
from ..models.registry import (
    ARCHS,
    build_model,
    checkpoint_arch,
    config_from_dict,
    param_count,
    param_shapes,
)
from .loop import run_loop
from .optim import AdamW, cosine_lr
from .parallel import check_same_settings, get_world, shard_rows, share_cores, together
from .run import (
    TrainingError,
    check_out_folder,
    prepare_out_folder,
    read_history,
    restore_state,
    resume_state,
)
from .threads import ThreadTeam, check_threads

# nanoGPT's recipes. `baby` is its CPU recipe, `small` its shakespeare_char config.
PRESETS = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=8, max_iters=60,
                 lr=2e-3, min_lr=2e-4, warmup_iters=5, beta1=0.9, beta2=0.99,
                 weight_decay=0.1, grad_clip=1.0, dropout=0.0, eval_interval=20, eval_iters=4),
    "baby": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, max_iters=2000,
                 lr=1e-3, min_lr=1e-4, warmup_iters=100, beta1=0.9, beta2=0.99,
                 weight_decay=0.1, grad_clip=1.0, dropout=0.0, eval_interval=250,
                 eval_iters=200),
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64,
                  max_iters=5000, lr=1e-3, min_lr=1e-4, warmup_iters=100, beta1=0.9,
                  beta2=0.99, weight_decay=0.1, grad_clip=1.0, dropout=0.2, eval_interval=250,
                  eval_iters=200),
}


@dataclass
class TrainConfig:
    """Everything that defines a training run. Start from a preset, with some fields changed:
    TrainConfig.preset_config("baby", max_iters=500)."""

    # data and output
    data: str = "numpy-docs"
    out: str = "out"
    seed: int = 1337
    tokenizer: str = "char"  # "char" or "bpe" (byte-level BPE trained on the training text)
    vocab_size: int = 512  # tokens of a BPE tokenizer (>= 256); a char tokenizer ignores it
    # model
    arch: str = "gpt"  # "gpt" (GPT-2) or "llama" (RoPE, RMSNorm, SwiGLU, grouped-query attention)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0  # GPT only: Llama has no dropout
    pos_encoding: str = "learned"  # GPT only: Llama rotates q and k (RoPE)
    n_kv_head: int | None = None  # Llama: key/value heads; None = n_head / 2 (n_head if odd)
    intermediate_size: int | None = None  # Llama: MLP width; None = 8C/3 up to a multiple of 128
    rope_theta: float = 10000.0  # Llama: RoPE's base
    # optimisation
    batch_size: int = 12
    grad_accum: int = 1  # micro-batches per step: effective batch = batch_size * grad_accum
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # schedule length; None means max_iters (as nanoGPT)
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 disables clipping
    # evaluation and logging
    eval_interval: int = 250
    eval_iters: int = 200
    log_interval: int = 10
    # execution: threads that share each step's batch, one BLAS thread each (threads.py);
    # 1 = one thread driving BLAS's own threads
    threads: int = 1
    preset: str = "baby"

    @classmethod
    def preset_config(cls, name, **overrides):
        """A config from a preset ('tiny', 'baby', 'small') with some fields overridden.
        With arch="llama" the preset's sizes stay and its dropout becomes 0 (Llama has none)."""
        if not isinstance(name, str) or name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        preset = dict(PRESETS[name])
        lr = overrides.get("lr")
        if "min_lr" not in overrides and isinstance(lr, (int, float)) and \
                0 < lr < preset["min_lr"]:
            raise ConfigError(f"--lr {lr:g} is below the {name} preset's min-lr "
                              f"{preset['min_lr']:g}, where its schedule ends; give --min-lr "
                              f"too (e.g. {lr / 10:g})")
        if overrides.get("arch") == "llama":
            preset["dropout"] = 0.0
        return cls(**{**preset, "preset": name, **overrides})

    def __post_init__(self):
        # Types are checked, not coerced: a config may come from a notebook, a flag or a
        # checkpoint's JSON, and max_iters=1e3 or dropout="0.1" is a mistake to report, not to
        # guess at. Every problem is a ConfigError (a ValueError) naming the flag.
        def flag(name):
            return name.replace("_", "-")

        for name in ("data", "out"):
            setattr(self, name, check_text(flag(name), getattr(self, name)))
        for name, choices in (("tokenizer", ("char", "bpe")), ("pos_encoding", POS_ENCODINGS),
                              ("preset", tuple(PRESETS)), ("arch", ARCHS)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise ConfigError(f"{flag(name)} must be one of {', '.join(choices)}; "
                                  f"got {value!r}")
        for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum",
                     "eval_interval", "eval_iters", "log_interval", "vocab_size", "threads"):
            setattr(self, name, check_int(flag(name), getattr(self, name), minimum=1))
        for name in ("seed", "max_iters", "warmup_iters"):
            setattr(self, name, check_int(flag(name), getattr(self, name), minimum=0))
        if self.lr_decay_iters is not None:
            self.lr_decay_iters = check_int("lr-decay-iters", self.lr_decay_iters, minimum=0)
        for name in ("n_kv_head", "intermediate_size"):
            if getattr(self, name) is not None:
                if self.arch != "llama":
                    raise ConfigError(f"{flag(name)} is a Llama setting: give --arch llama")
                setattr(self, name, check_int(flag(name), getattr(self, name), minimum=1))
        self.rope_theta = check_real("rope-theta", self.rope_theta, 1.0, None)
        if self.arch == "llama":
            if self.dropout > 0:
                raise ConfigError(f"the Llama architecture has no dropout: drop --dropout "
                                  f"{self.dropout:g} (or give 0)")
            if self.pos_encoding != "learned":
                raise ConfigError("pos-encoding is a GPT setting: Llama rotates its queries and "
                                  "keys (RoPE) instead of adding position vectors")
        elif self.rope_theta != 10000.0:
            raise ConfigError("rope-theta is a Llama setting: give --arch llama")
        for name, low, high in (("lr", 0.0, None), ("min_lr", 0.0, None),
                                ("weight_decay", 0.0, None), ("grad_clip", 0.0, None),
                                ("beta1", 0.0, 1.0), ("beta2", 0.0, 1.0), ("dropout", 0.0, 1.0)):
            setattr(self, name, check_real(flag(name), getattr(self, name), low, high,
                                           high_open=high is not None))
        if self.lr == 0:
            raise ConfigError("lr must be > 0, got 0")
        if self.min_lr > self.lr:
            raise ConfigError(f"min-lr {self.min_lr:g} is above lr {self.lr:g}: the schedule "
                              f"would end higher than it peaks; give a --min-lr <= --lr (e.g. "
                              f"{self.lr / 10:g})")
        if self.n_embd % self.n_head != 0:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.tokenizer == "bpe" and self.vocab_size < 256:
            raise ConfigError(f"vocab-size must be >= 256 for a BPE tokenizer (one token per "
                              f"byte), got {self.vocab_size}")

    def model_config(self, vocab_size):
        """The model's config (a GPTConfig or a LlamaConfig) for a vocabulary of vocab_size."""
        if self.arch == "llama":
            C, nh = self.n_embd, self.n_head
            kv = self.n_kv_head or (nh // 2 if nh % 2 == 0 else nh)
            # Llama's MLP width: 2/3 of GPT's 4C (three matrices instead of two, about the
            # same parameters), rounded up to a multiple of 128 (baby: 384; small: 1024)
            width = self.intermediate_size or math.ceil(8 * C / 3 / 128) * 128
            return LlamaConfig(vocab_size=vocab_size, block_size=self.block_size,
                               n_layer=self.n_layer, n_head=nh, n_kv_head=kv, n_embd=C,
                               intermediate_size=width, rope_theta=self.rope_theta)
        return GPTConfig(vocab_size=vocab_size, block_size=self.block_size,
                         n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                         dropout=self.dropout, pos_encoding=self.pos_encoding)

    def lr_at(self, it):
        decay = self.max_iters if self.lr_decay_iters is None else self.lr_decay_iters
        return cosine_lr(it, self.lr, self.min_lr, self.warmup_iters, decay)


def estimate_memory(cfg, vocab_size=None):
    """About how many bytes a training run of `cfg` needs (float32), before building anything.

    - weights: params, grads, AdamW's m and v and its scratch buffer: 5 copies of the P
      parameters (6 with gradient accumulation, which keeps a running sum)
    - activations kept for backward, per block: about 20 (B, T, C) arrays (layer-norm inputs,
      q, k, v, the MLP's 4C-wide hidden layer before and after GELU, ...) and 3 (B, nh, T, T)
      ones (attention probabilities, dropout mask, temporaries); the head: 3 (B, T, V)
      (logits, probabilities, their gradient)

    Measured on the small preset at batch 16: 1.11 GB for the activations, estimated 1.21.
    vocab_size: the tokenizer's, once known; before, the BPE vocab_size or 256 characters.
    """
    V = vocab_size or (cfg.vocab_size if cfg.tokenizer == "bpe" else 256)
    mcfg = cfg.model_config(V)
    P = param_count(mcfg)
    B, T, C, nh = cfg.batch_size, cfg.block_size, cfg.n_embd, cfg.n_head
    weights = (5 + (cfg.grad_accum > 1)) * P
    # Llama's block: the same count with its MLP's three I-wide arrays (gate, up, their
    # product) in place of GPT's two 4C-wide ones
    per_block = 20 * C if cfg.arch == "gpt" else 12 * C + 3 * mcfg.intermediate_size
    activations = cfg.n_layer * (per_block * B * T + 3 * B * nh * T * T) + 3 * B * T * V \
        + 4 * B * T * C
    return 4 * (weights + activations)


def check_run_memory(cfg, vocab_size=None):
    """ConfigError (with the estimate and this machine's RAM) if a run of cfg cannot fit."""
    check_memory(estimate_memory(cfg, vocab_size),
                 f"training n_layer={cfg.n_layer}, n_embd={cfg.n_embd}, "
                 f"block_size={cfg.block_size} at batch_size={cfg.batch_size}")


def _check_same_tokenizer(ckpt, cfg, tokenizer, where):
    """A resumed run keeps its tokenizer: a --tokenizer or --vocab-size that differs from the
    saved run's is refused, not ignored (and then recorded in the config as if it applied)."""
    saved = ckpt.config["train"]
    if cfg.tokenizer != tokenizer.kind or cfg.tokenizer != saved.get("tokenizer",
                                                                      tokenizer.kind):
        raise ConfigError(f"the run in {where} uses the {tokenizer.kind!r} tokenizer; a "
                          f"resumed run keeps its tokenizer (--tokenizer {cfg.tokenizer} "
                          f"refused)")
    if cfg.vocab_size != saved.get("vocab_size", cfg.vocab_size):
        raise ConfigError(f"the run in {where} was made with vocab-size "
                          f"{saved.get('vocab_size')}; a resumed run keeps its tokenizer "
                          f"(--vocab-size {cfg.vocab_size} refused)")


@dataclass
class TrainResult:
    model: GPT  # or a Llama (cfg.arch "llama")
    tokenizer: object
    metrics: dict
    history: list  # the rows written to log.jsonl


def estimate_loss(model, ids, cfg, seed, world=None, team=None):
    """Mean loss over cfg.eval_iters random batches of ids, without dropout. The batches come
    from a Generator with a fixed seed, so every evaluation sees the same windows.

    world (numpygpt.training.parallel, default: one process): with N ranks, every rank draws all the
    batches (so the generator is where it would be in one process) and evaluates batch i
    when i % N == rank; the sum over ranks / eval_iters is the one-process mean, up to the
    order of the float64 additions. team (threads.ThreadTeam): its threads share each batch."""
    world = world if world is not None else get_world()
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    losses = []
    for i in range(cfg.eval_iters):
        x, y = get_batch(ids, cfg.block_size, cfg.batch_size, rng)
        if i % world.size == world.rank:
            losses.append(team.loss(x, y) if team else model.forward(x, y)[1])
    model.train(was_training)
    if world.size == 1:
        return float(np.mean(losses))
    return float(world.allreduce_scalars([sum(losses)])[0]) / cfg.eval_iters


def train(cfg, resume=False, progress=True, callback=None, overwrite=False, world=None):
    """Train a model as `cfg` says; return a TrainResult (model, tokenizer, metrics, history).

    - resume: continue from the checkpoint in cfg.out (model, optimizer, step, RNG states)
    - progress: show a progress bar (loss, lr, tokens/s, ETA)
    - callback: optional callback(row) for every log row (e.g. to plot live in a notebook)
    - overwrite: start a new run in a folder that holds one (only the run's files are
      replaced, once the new run's first checkpoint is written); without it such a folder is
      refused, as is any non-empty folder without a run
    - world: numpygpt.training.parallel's world (default get_world(): one process, or the N
      ranks of `mpiexec -n N`, which train data-parallel; cfg.batch_size stays the global batch)

    One process at a time trains in a folder (io.lock.RunLock): a second one is refused with the
    first one's pid. Ctrl-C, SIGTERM or SIGHUP stops after the current step, saves a checkpoint
    and returns with metrics["interrupted"] True; a second one raises KeyboardInterrupt at once.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    world = world if world is not None else get_world()
    with together(world):  # first: ranks that disagree stop before anything is made
        check_same_settings(world, {**asdict(cfg), "resume": resume, "overwrite": overwrite})
    lock = RunLock(cfg.out, "numpygpt train")
    try:
        with together(world):  # rank 0 locks the folder; every rank stops if it cannot
            check_run_memory(cfg)  # before reading or making anything: refused in milliseconds
            if world.is_root:
                check_out_folder(cfg.out, resume=resume, overwrite=overwrite)
                lock.acquire()
                check_out_folder(cfg.out, resume=resume, overwrite=overwrite)  # locked now
        return _train(cfg, resume, progress, callback, world)
    finally:
        lock.release()


def _train(cfg, resume, progress, callback, world):
    """train(), with the folder locked."""
    out = Path(cfg.out)
    where = quote(out)
    # Data parallel (N > 1 ranks): the setup runs on every rank inside `together`, so an error
    # on any rank stops them all (none is left waiting for one that has stopped). Only rank 0
    # looks at and writes the out folder; every rank reads the checkpoint and the data (one
    # machine, or a cluster's shared file system). With one process `together` does nothing.
    with together(world):
        if cfg.threads > 1 and world.size > 1:
            raise ConfigError("--threads shares each step between threads of one process; "
                              "with mpiexec the processes share it already: give one or the "
                              "other")
        team_threads = check_threads(cfg.threads)  # before any work: at most the cores
        rows = shard_rows(cfg.batch_size, world.rank, world.size)  # this rank's batch rows
        ckpt = tokenizer = None
        step, history = 0, []
        if resume:
            ckpt = load_checkpoint(out)
            for key in ("model", "train"):
                if not isinstance(ckpt.config.get(key), dict):
                    raise CheckpointError(f"checkpoint in {where} has no config.{key}: it was "
                                          f"not saved by train() and cannot be resumed")
            step, *rng_states = resume_state(ckpt, cfg.max_iters, where)
            try:
                saved_arch = checkpoint_arch(ckpt.config, where)
                saved_mcfg = config_from_dict(saved_arch, ckpt.config["model"])
            except (ValueError, TypeError, RecursionError) as e:
                raise CheckpointError(f"checkpoint in {where} is not usable: {e}") from None
            tokenizer = tokenizer_for_model(ckpt.tokenizer, saved_mcfg.vocab_size,
                                            f"checkpoint in {where}")
            if saved_arch != cfg.arch:
                raise ConfigError(f"the run in {where} trains a {saved_arch} model: --arch "
                                  f"{cfg.arch} cannot resume it (drop --arch)")
            _check_same_tokenizer(ckpt, cfg, tokenizer, where)
            log_path = out / "log.jsonl"
            history = read_history(log_path, step) if log_path.exists() else []
        tokenizer, train_ids, val_ids = prepare_corpus(cfg.data, cfg.block_size, tokenizer,
                                                       tokenizer_kind=cfg.tokenizer,
                                                       vocab_size=cfg.vocab_size)

        mcfg = cfg.model_config(tokenizer.vocab_size)
        check_run_memory(cfg, tokenizer.vocab_size)
        data_rng = np.random.default_rng([cfg.seed, 1])  # training batches
        eval_seed = [cfg.seed, 2]  # the same evaluation windows every time
        if ckpt is None:
            model = build_model(mcfg, seed=cfg.seed, dtype=np.float32)
        else:
            # Compare first, build after: the saved config and every array's shape must match
            # the settings, so a checkpoint cannot make us allocate a model it does not hold.
            if saved_mcfg != mcfg:
                raise CheckpointError(f"checkpoint in {where} is for a different model "
                                      f"({saved_mcfg}); the current settings give {mcfg}")
            validate_params(ckpt.params, param_shapes(mcfg), what=f"checkpoint in {where}")
            model = build_model(mcfg, seed=cfg.seed, dtype=np.float32, params=ckpt.params)
        opt = AdamW(model.params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8,
                    weight_decay=cfg.weight_decay)
        if ckpt is not None:
            restore_state(ckpt, opt, model, data_rng, rng_states, where)
    if world.size > 1:
        share_cores(world)
        if cfg.dropout > 0:
            # Every rank must drop different units (one process draws a fresh mask for every
            # row), so each seeds its own dropout generator from its rank and the start step.
            # Such a run equals one process statistically, not bitwise (with dropout 0, as in
            # the tiny preset, it is the same computation). The checkpoint keeps rank 0's.
            model.rng = np.random.default_rng([cfg.seed, 3, world.rank, step])
    shard = (rows,) if world.size > 1 else ()  # one process computes the whole batch
    with together(world):  # after every rank has read the run: rank 0 writes
        if world.is_root:
            prepare_out_folder(out, resume, history)

    # one thread: the model's own forward and backward; more: a team of replicas (threads.py)
    team = ThreadTeam(model, team_threads)

    def evaluate(step_now):
        return {"step": step_now,
                "train_loss": estimate_loss(model, train_ids, cfg, eval_seed, world, team),
                "val_loss": estimate_loss(model, val_ids, cfg, eval_seed, world, team)}

    t_start = time.perf_counter()

    def metrics(r):
        return {
            "step": r.step,
            "train_loss": (r.last_eval or {}).get("train_loss"),
            "val_loss": (r.last_eval or {}).get("val_loss"),
            "last_batch_loss": r.last_loss,
            "tokens_per_sec": r.tokens / r.train_seconds if r.train_seconds else None,
            "wall_seconds": time.perf_counter() - t_start,
            "n_params": model.num_params(),
            "interrupted": r.interrupted,
            "signal": r.signal,  # what interrupted it: SIGINT (Ctrl-C), SIGTERM, SIGHUP
            "preset": cfg.preset,
            "arch": cfg.arch,
            "data": cfg.data,
            "world_size": world.size,  # processes that trained data-parallel (mpiexec -n)
            "threads": cfg.threads,  # threads that shared each step's batch (--threads)
        }

    try:
        run_metrics = run_loop(
            cfg, model=model, opt=opt, out=out, step=step, history=history, lr_at=cfg.lr_at,
            checkpoint_config={"model": mcfg.to_dict(), "train": asdict(cfg)},
            tokenizer=tokenizer, data_rng=data_rng,
            batch_grads=lambda: _accumulated_grads(team.loss_and_grads, train_ids, cfg,
                                                   data_rng, *shard),
            evaluate=evaluate, metrics=metrics,
            tokens_per_step=cfg.batch_size * cfg.block_size * cfg.grad_accum, resumed=resume,
            progress=progress, callback=callback, world=world, command="numpygpt train")
    finally:
        team.close()
    return TrainResult(model, tokenizer, run_metrics, history)


def _accumulated_grads(loss_and_grads, ids, cfg, rng, rows=slice(None)):
    """Average loss and gradients over cfg.grad_accum micro-batches.

    loss_and_grads(x, y): one batch's (loss, grads) (a ThreadTeam's: one thread or more).
    rows: the rows of each global batch this process computes (data parallel: every rank
    draws the same batch, so the generator stays where it would be in one process)."""
    total_loss, grads = 0.0, None
    scale = np.float32(1.0 / cfg.grad_accum)
    for _ in range(cfg.grad_accum):
        x, y = get_batch(ids, cfg.block_size, cfg.batch_size, rng)
        x, y = x[rows], y[rows]  # (B/N, T)
        loss, g = loss_and_grads(x, y)
        total_loss += loss / cfg.grad_accum
        if cfg.grad_accum == 1:
            return total_loss, g
        if grads is None:
            grads = {k: v * scale for k, v in g.items()}
        else:
            for k, v in g.items():
                grads[k] += v * scale
    return total_loss, grads


__all__ = ["train", "TrainConfig", "TrainResult", "TrainingError", "PRESETS", "estimate_memory",
           "check_run_memory", "estimate_loss"]
