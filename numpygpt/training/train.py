"""Training: one function, `train(TrainConfig(...))`, used by the CLI and the notebooks.

Each iteration: draw a batch of random windows, forward, backward (our own passes), clip the
global gradient norm, set the learning rate from the warmup + cosine schedule, AdamW step.
Every eval_interval iterations: estimate train and val loss, append to OUT/log.jsonl and save
a checkpoint. At the end: OUT/metrics.json.

What a run never does: overwrite another run or a user's own files in OUT (a folder holding a
run needs resume=True or overwrite=True; a non-empty folder without a run is refused), trust a
checkpoint's training state without checking it, or allocate a model or a batch that cannot
fit in this machine's RAM (`estimate_memory`, checked before anything is built).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data.corpora import get_batch, load_corpus, prepare_data, tokenizer_from_dict
from ..errors import ConfigError, UserError, check_int, check_real
from ..io.checkpoint import (
    CKPT_NAME,
    CheckpointError,
    is_checkpoint,
    load_checkpoint,
    save_checkpoint,
    validate_params,
)
from ..io.files import atomic_write_json, atomic_write_text, quote, read_text
from ..models.gpt import GPT, POS_ENCODINGS, GPTConfig, check_memory
from ..models.registry import (
    ARCHS,
    build_model,
    checkpoint_arch,
    config_from_dict,
    param_count,
    param_shapes,
)
from .optim import AdamW, clip_grad_norm, cosine_lr
from .parallel import (
    GradAllReduce,
    abort_on_error,
    agreed,
    get_world,
    shard_rows,
    share_cores,
    together,
)

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


class TrainingError(UserError, RuntimeError):
    """Training had to stop (e.g. the loss became nan or inf, or the disk is full)."""


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
    preset: str = "baby"

    @classmethod
    def preset_config(cls, name, **overrides):
        """A config from a preset ('tiny', 'baby', 'small') with some fields overridden.
        With arch="llama" the preset's sizes stay and its dropout becomes 0 (Llama has none)."""
        if not isinstance(name, str) or name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        preset = dict(PRESETS[name])
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
            value = getattr(self, name)
            value = os.fspath(value) if isinstance(value, os.PathLike) else value
            if not isinstance(value, str):
                raise ConfigError(f"{flag(name)} must be a string, got {value!r}")
            setattr(self, name, value)
        for name, choices in (("tokenizer", ("char", "bpe")), ("pos_encoding", POS_ENCODINGS),
                              ("preset", tuple(PRESETS)), ("arch", ARCHS)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise ConfigError(f"{flag(name)} must be one of {', '.join(choices)}; "
                                  f"got {value!r}")
        for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum",
                     "eval_interval", "eval_iters", "log_interval", "vocab_size"):
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
        if self.n_embd % self.n_head != 0:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.tokenizer == "bpe" and self.vocab_size < 256:
            raise ConfigError(f"vocab-size must be >= 256 for a BPE tokenizer (one token per "
                              f"byte), got {self.vocab_size}")

    def model_config(self, vocab_size):
        """The model's config (a GPTConfig or a LlamaConfig) for a vocabulary of vocab_size."""
        if self.arch == "llama":
            from ..models.llama import LlamaConfig

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


# --- the output folder --------------------------------------------------------------------------

MAX_LOG_BYTES = 1 << 28  # log.jsonl: ~100 bytes a row, so 2.5 million rows
RUN_FILES = (CKPT_NAME, "config.json", "tokenizer.json", "log.jsonl", "metrics.json")
# The temporary files of the atomic writes (io/files.py): "." + name + "." + mkstemp's 8 characters
# + ".tmp". A kill during a save leaves one; the next save removes it (ours only, never others).
_TEMP_FILE = re.compile(r"\.(?:" + "|".join(re.escape(n) for n in RUN_FILES)
                        + r")\.[a-z0-9_]{8}\.tmp")


def check_out_folder(out, resume=False, overwrite=False):
    """Refuse an output folder where a run would destroy what is there (ConfigError).

    - resume: the folder must hold a run (load_checkpoint says so if it does not)
    - a folder holding a run (ckpt.npz): refused unless overwrite, and overwrite only replaces
      a numpygpt checkpoint (never some other ckpt.npz), and only the files a run writes
    - a non-empty folder without a run: refused (a user's own config.json, log.jsonl or
      metrics.json would be replaced); the temporary files of an interrupted save don't count
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {quote(out)} is a file, not a folder")
    if resume or not out.exists():
        return
    try:
        entries = sorted(e for e in os.listdir(out) if not _TEMP_FILE.fullmatch(e))
    except OSError as e:
        raise ConfigError(f"cannot read the --out folder {quote(out)}: {e.strerror}") from None
    if CKPT_NAME in entries:
        if not overwrite:
            raise ConfigError(f"{quote(out)} already holds a run: use --resume to continue it "
                              f"or --overwrite to start over")
        if not is_checkpoint(out / CKPT_NAME):
            raise ConfigError(f"{quote(os.path.join(out, CKPT_NAME))} is not a numpygpt "
                              f"checkpoint, so --overwrite will not replace it; choose another "
                              f"--out")
    elif entries:
        shown = ", ".join(entries[:3]) + (f", ... ({len(entries)} files)"
                                          if len(entries) > 3 else "")
        raise ConfigError(f"--out {quote(out)} is not empty ({shown}) and holds no numpygpt "
                          f"run; choose a new or empty folder")


def remove_stale_temp_files(out):
    """Delete the temporary files an interrupted save left in the run folder `out`."""
    with os.scandir(out) as it:
        stale = [e.path for e in it if _TEMP_FILE.fullmatch(e.name)
                 and e.is_file(follow_symlinks=False)]
    for path in stale:
        os.unlink(path)


# --- a checkpoint's training state, checked before use ------------------------------------------


def _check_rng_state(state, like, what, where):
    """A bit-generator state from JSON: the same kind as `like`'s, with integers in range."""
    kind = like.bit_generator.state["bit_generator"]

    def uint(value, bits):
        return type(value) is int and 0 <= value < 2**bits

    inner = state.get("state") if isinstance(state, dict) else None
    ok = (isinstance(state, dict) and state.get("bit_generator") == kind
          and isinstance(inner, dict) and set(inner) == {"state", "inc"}
          and uint(inner["state"], 128) and uint(inner["inc"], 128)
          and state.get("has_uint32") in (0, 1) and type(state.get("has_uint32")) is int
          and uint(state.get("uinteger"), 32))
    if not ok:
        raise CheckpointError(f"checkpoint in {where}: {what} is not a well-formed {kind} "
                              f"state")
    return state


def _resume_state(ckpt, cfg, where):
    """Check a checkpoint's training state against cfg. Returns (step, data_rng state,
    model_rng state). Raises CheckpointError (or ConfigError for a flag that contradicts it)."""
    state = ckpt.train_state
    missing = [k for k in ("step", "data_rng", "model_rng") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint in {where} has no {', '.join(missing)} in its "
                              f"train_state: it cannot be resumed (sample from it instead)")
    step = state["step"]
    if type(step) is not int or step < 0:
        raise CheckpointError(f"checkpoint in {where}: step must be a non-negative integer, "
                              f"got {step!r:.40}")
    saved_max = ckpt.config["train"].get("max_iters")
    if type(saved_max) is int and step > saved_max:
        raise CheckpointError(f"checkpoint in {where} is at step {step}, beyond its own "
                              f"max_iters={saved_max}")
    if step > cfg.max_iters:
        raise ConfigError(f"the run in {where} is at step {step}, beyond max-iters "
                          f"{cfg.max_iters}; give --max-iters {step} or more")
    if ckpt.optimizer is None:
        raise CheckpointError(f"checkpoint in {where} holds no optimizer state: it cannot be "
                              f"resumed (sample from it instead)")
    t = ckpt.optimizer["hyper"].get("t")
    if t != step or type(t) is not int:
        raise CheckpointError(f"checkpoint in {where}: the optimizer's step count {t!r:.40} "
                              f"differs from the run's step {step}")
    rng = np.random.default_rng(0)
    return (step, _check_rng_state(state["data_rng"], rng, "data_rng", where),
            _check_rng_state(state["model_rng"], rng, "model_rng", where))


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


def _read_history(log_path, step):
    """The rows of a resumed run's log.jsonl up to `step`; a damaged log is refused."""
    history = []
    text = read_text(log_path, "the run's log", MAX_LOG_BYTES, error=CheckpointError)
    for n, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            row = None
        if not isinstance(row, dict) or type(row.get("step")) is not int:
            raise CheckpointError(f"{quote(log_path)} line {n} is not a log row of numpygpt "
                                  f"(move the file away to resume without it)")
        if row["step"] <= step:
            history.append(row)
    return history


@dataclass
class TrainResult:
    model: GPT  # or a Llama (cfg.arch "llama")
    tokenizer: object
    metrics: dict
    history: list  # the rows written to log.jsonl


class _StopFlag:
    """Ctrl-C sets a flag that the loop checks between iterations, so we never save a
    half-applied update. A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.stop = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def estimate_loss(model, ids, cfg, seed, world=None):
    """Mean loss over cfg.eval_iters random batches of ids, without dropout. The batches come
    from a Generator with a fixed seed, so every evaluation sees the same windows.

    world (numpygpt.training.parallel, default: one process): with N ranks, every rank draws all the
    batches (so the generator is where it would be in one process) and evaluates batch i
    when i % N == rank; the sum over ranks / eval_iters is the one-process mean, up to the
    order of the float64 additions."""
    world = world if world is not None else get_world()
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    losses = []
    for i in range(cfg.eval_iters):
        x, y = get_batch(ids, cfg.block_size, cfg.batch_size, rng)
        if i % world.size == world.rank:
            losses.append(model.forward(x, y)[1])
    model.train(was_training)
    if world.size == 1:
        return float(np.mean(losses))
    return float(world.allreduce_scalars([sum(losses)])[0]) / cfg.eval_iters


def _progress_bar(total, initial, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm  # auto: a widget in notebooks, text in terminals

    return tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, leave=True)


def _write_log(path, rows):
    """Write log.jsonl from the rows in memory, atomically (it is small: a few thousand rows;
    and it is never read back during a run, so whatever is at that path cannot block us)."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def train(cfg, resume=False, progress=True, callback=None, overwrite=False, world=None):
    """Train a GPT as `cfg` says; return a TrainResult (model, tokenizer, metrics, history).

    - resume: continue from the checkpoint in cfg.out (model, optimizer, step, RNG states)
    - progress: show a progress bar (loss, lr, tokens/s, ETA)
    - callback: optional callback(row) for every log row (e.g. to plot live in a notebook)
    - overwrite: start a new run in a folder that holds one (only the run's files are
      replaced); without it such a folder is refused, as is any non-empty folder without a run

    - world: numpygpt.training.parallel's world (default get_world(): one process, or the N ranks of
      `mpiexec -n N`, which train data-parallel; cfg.batch_size stays the global batch)

    Ctrl-C stops after the current step, saves a checkpoint and returns with
    metrics["interrupted"] True; a second Ctrl-C raises KeyboardInterrupt at once.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    world = world if world is not None else get_world()
    out = Path(cfg.out)
    where = quote(out)
    # Data parallel (N > 1 ranks): the setup runs on every rank inside `together`, so an error
    # on any rank stops them all (none is left waiting for one that has stopped). Only rank 0
    # looks at and writes the out folder; every rank reads the checkpoint and the data (one
    # machine, or a cluster's shared file system). With one process `together` does nothing.
    with together(world):
        rows = shard_rows(cfg.batch_size, world.rank, world.size)  # this rank's batch rows
        check_run_memory(cfg)  # before reading anything: refused in milliseconds
        if world.is_root:
            check_out_folder(out, resume=resume, overwrite=overwrite)
        ckpt = tokenizer = None
        if resume:
            ckpt = load_checkpoint(out)
            for key in ("model", "train"):
                if not isinstance(ckpt.config.get(key), dict):
                    raise CheckpointError(f"checkpoint in {where} has no config.{key}: it was "
                                          f"not saved by train() and cannot be resumed")
            step, data_state, model_state = _resume_state(ckpt, cfg, where)
            try:
                saved_arch = checkpoint_arch(ckpt.config, where)
                saved_mcfg = config_from_dict(saved_arch, ckpt.config["model"])
                tokenizer = tokenizer_from_dict(ckpt.tokenizer)
            except (ValueError, TypeError, RecursionError) as e:
                raise CheckpointError(f"checkpoint in {where} is not usable: {e}") from None
            if saved_arch != cfg.arch:
                raise ConfigError(f"the run in {where} trains a {saved_arch} model: --arch "
                                  f"{cfg.arch} cannot resume it (drop --arch)")
            _check_same_tokenizer(ckpt, cfg, tokenizer, where)
            log_path = out / "log.jsonl"
            history = _read_history(log_path, step) if log_path.exists() else []
        text, _ = load_corpus(cfg.data)
        tokenizer, train_ids, val_ids = prepare_data(text, cfg.block_size, tokenizer,
                                                     tokenizer_kind=cfg.tokenizer,
                                                     vocab_size=cfg.vocab_size)
        del text

        mcfg = cfg.model_config(tokenizer.vocab_size)
        check_run_memory(cfg, tokenizer.vocab_size)
        data_rng = np.random.default_rng([cfg.seed, 1])  # training batches
        eval_seed = [cfg.seed, 2]  # the same evaluation windows every time
        if ckpt is None:
            step, history = 0, []
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
            try:
                opt.load_state_dict(ckpt.optimizer)
            except (ValueError, KeyError, TypeError) as e:
                raise CheckpointError(f"checkpoint in {where} does not fit: {e}") from None
            data_rng.bit_generator.state = data_state
            model.rng.bit_generator.state = model_state
    if world.size > 1:
        share_cores(world)
        if cfg.dropout > 0:
            # Every rank must drop different units (one process draws a fresh mask for every
            # row), so each seeds its own dropout generator from its rank and the start step.
            # Such a run equals one process statistically, not bitwise (with dropout 0, as in
            # the tiny preset, it is the same computation). The checkpoint keeps rank 0's.
            model.rng = np.random.default_rng([cfg.seed, 3, world.rank, step])
        average = GradAllReduce(world, model.params)  # one buffer, one all-reduce per step
    shard = (rows,) if world.size > 1 else ()  # one process computes the whole batch

    def stop_nonfinite(what, value, step_now, all_ranks=True):
        # all_ranks: every rank sees the same all-reduced value and stops here too (see
        # parallel.agreed); a check that only rank 0 makes (save's) is not agreed.
        e = TrainingError(
            f"{what} became {value} at step {step_now}; stopped without saving. The last "
            f"good checkpoint is in {where}. Try a lower --lr or --grad-clip 1.0")
        raise agreed(world, e) if all_ranks else e

    def write(what, fn, *args):
        if world.is_root:  # the other ranks never touch the out folder
            return write_in_run(out, what, fn, *args)
        return None

    def save(step_now):
        if not world.is_root:
            return
        bad = save_run(out, {"model": mcfg.to_dict(), "train": asdict(cfg)}, tokenizer, model,
                       opt, step_now, data_rng)
        if bad is not None:
            stop_nonfinite(bad, "non-finite", step_now, all_ranks=False)

    log_path = out / "log.jsonl"
    with together(world):  # after every rank has read the run: rank 0 writes
        if world.is_root:
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"cannot create the --out folder {where}: "
                                  f"{e.strerror or e}") from None
        if resume:  # drop the rows logged after the checkpoint was saved
            write("log.jsonl", _write_log, log_path, history)
        else:  # a fresh run (or an overwrite) starts a fresh log and has no metrics yet
            for name in ("log.jsonl", "metrics.json"):
                if world.is_root and (out / name).is_file():
                    write(name, (out / name).unlink)

    def log(row):
        history.append(row)
        if callback is not None:
            callback(row)

    def evaluate(step_now):
        row = {"step": step_now,
               "train_loss": estimate_loss(model, train_ids, cfg, eval_seed, world),
               "val_loss": estimate_loss(model, val_ids, cfg, eval_seed, world)}
        for key in ("train_loss", "val_loss"):
            # Every save follows an evaluation: a broken update (nan or inf weights) must not
            # overwrite the last good checkpoint.
            if not math.isfinite(row[key]):
                stop_nonfinite(key.replace("_", " "), row[key], step_now)
        log(row)
        return row

    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum
    t_start = time.perf_counter()
    train_time = 0.0
    tokens_done = 0
    evals = [r for r in history if "val_loss" in r]
    last_eval = evals[-1] if evals else None
    loss = float("nan")
    interrupted = False
    stop_agreed = False  # N ranks: some rank's Ctrl-C, known to all at the same step
    # The first Ctrl-C is a request: it stops the loop between steps, and the final
    # evaluation and save below still run, so the checkpoint and metrics.json say where it
    # stopped. A second Ctrl-C raises KeyboardInterrupt at once (the last save stays intact).
    # N ranks: an exception on one rank (rank 0's disk full, a bug) ends the whole job with a
    # message (abort_on_error) instead of leaving the others in an all-reduce forever.
    with _StopFlag() as flag, abort_on_error(world, "numpygpt train"):
        bar = _progress_bar(cfg.max_iters, step, progress and world.is_root)
        try:
            while step < cfg.max_iters:
                if stop_agreed or (world.size == 1 and flag.stop):
                    interrupted = True
                    break
                if step % cfg.eval_interval == 0 and (last_eval is None
                                                      or last_eval["step"] != step):
                    last_eval = evaluate(step)
                    save(step)
                    write("log.jsonl", _write_log, log_path, history)
                t0 = time.perf_counter()
                opt.lr = cfg.lr_at(step)
                loss, grads = _accumulated_grads(model, train_ids, cfg, data_rng, *shard)
                if world.size > 1:
                    # Each rank's loss is the mean over its B/N rows x T targets, so the mean
                    # over the whole batch is the mean of the N rank means, and so is its
                    # gradient (numpygpt.training.parallel's docstring): one all-reduce of all the
                    # gradients, / N. The stop flags travel with the loss (2 numbers).
                    grads = average(grads)
                    loss, stops = world.allreduce_scalars([loss, flag.stop])
                    loss, stop_agreed = loss / world.size, stops > 0
                if not math.isfinite(loss):
                    stop_nonfinite("loss", loss, step)
                norm = clip_grad_norm(grads, cfg.grad_clip) if cfg.grad_clip > 0 else None
                if norm is not None and not math.isfinite(norm):
                    stop_nonfinite("the gradient norm", norm, step)  # before a broken update
                opt.step(grads)
                step += 1
                dt = time.perf_counter() - t0
                train_time += dt
                tokens_done += tokens_per_step
                if step % cfg.log_interval == 0 or step == cfg.max_iters:
                    log({"step": step, "loss": loss, "lr": opt.lr,
                         "grad_norm": norm, "tokens_per_sec": tokens_per_step / dt})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{opt.lr:.1e}",
                                    tok_s=f"{tokens_done / train_time:,.0f}", refresh=False)
        finally:
            if bar is not None:
                bar.close()

        if last_eval is None or last_eval["step"] != step:
            last_eval = evaluate(step)
        save(step)
        write("log.jsonl", _write_log, log_path, history)
        metrics = {
            "step": step,
            "train_loss": last_eval["train_loss"],
            "val_loss": last_eval["val_loss"],
            "last_batch_loss": loss,
            "tokens_per_sec": tokens_done / train_time if train_time else None,
            "wall_seconds": time.perf_counter() - t_start,
            "n_params": model.num_params(),
            "interrupted": interrupted or flag.stop,  # also a Ctrl-C during the final save
            "preset": cfg.preset,
            "arch": cfg.arch,
            "data": cfg.data,
            "world_size": world.size,  # processes that trained data-parallel (mpiexec -n)
        }
        write("metrics.json", atomic_write_json, out / "metrics.json", metrics)
    return TrainResult(model, tokenizer, metrics, history)


def write_in_run(out, what, fn, *args):
    """fn(*args), a write into the run folder `out`: a full disk or a lost permission becomes
    one line (a TrainingError), saying that the last saved checkpoint is intact."""
    try:
        return fn(*args)
    except OSError as e:
        raise TrainingError(f"cannot write {what} in {quote(out)}: {e.strerror or e}; the last "
                            f"saved checkpoint there is intact") from None


def save_run(out, config, tokenizer, model, opt, step, data_rng):
    """Save a run's checkpoint in `out` (atomically): the model, the optimizer's state, the
    step and both RNG states, so that a resumed run continues exactly. Used by train() and
    numpygpt.finetune.run.

    Returns None, or (nothing written) the name of the first array that is not finite: a
    finite loss does not prove a finite state (AdamW's v overflows to inf with gradients
    above ~1e19 while the update stays finite), and inf or nan is never saved.
    """
    state = opt.state_dict()
    arrays = [(f"the weight {k}", a) for k, a in model.params.items()]
    arrays += [(f"AdamW's {slot} of {k}", a) for slot, d in state["slots"].items()
               for k, a in d.items()]
    bad = next((name for name, a in arrays if not np.isfinite(a).all()), None)
    if bad is not None:
        return bad
    write_in_run(out, "the checkpoint", remove_stale_temp_files, out)
    write_in_run(out, "the checkpoint", lambda: save_checkpoint(
        out, config=config, tokenizer=tokenizer.to_dict(), params=model.params,
        optimizer=state, train_state={"step": step, "data_rng": data_rng.bit_generator.state,
                                      "model_rng": model.rng.bit_generator.state}))
    return None


def _accumulated_grads(model, ids, cfg, rng, rows=slice(None)):
    """Average loss and gradients over cfg.grad_accum micro-batches.

    rows: the rows of each global batch this process computes (data parallel: every rank
    draws the same batch, so the generator stays where it would be in one process)."""
    total_loss, grads = 0.0, None
    scale = np.float32(1.0 / cfg.grad_accum)
    for _ in range(cfg.grad_accum):
        x, y = get_batch(ids, cfg.block_size, cfg.batch_size, rng)
        x, y = x[rows], y[rows]  # (B/N, T)
        _, loss = model.forward(x, y)
        g = model.backward()
        total_loss += loss / cfg.grad_accum
        if cfg.grad_accum == 1:
            return total_loss, g
        if grads is None:
            grads = {k: v * scale for k, v in g.items()}
        else:
            for k, v in g.items():
                grads[k] += v * scale
    return total_loss, grads

