"""Training: one function, `train(TrainConfig(...))`, used by the CLI and the notebooks.

Each iteration: draw a batch of random windows, forward, backward (our own passes), clip the
global gradient norm, set the learning rate from the warmup + cosine schedule, AdamW step.
Every eval_interval iterations: estimate train and val loss, append to OUT/log.jsonl and save
a checkpoint. At the end: OUT/metrics.json.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import get_batch, load_corpus, prepare_data, tokenizer_from_dict
from .io import atomic_write_json, atomic_write_text
from .model import GPT, GPTConfig
from .optim import AdamW, clip_grad_norm, cosine_lr

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


class TrainingError(RuntimeError):
    """Training had to stop (e.g. the loss became nan or inf)."""


@dataclass
class TrainConfig:
    """Everything that defines a training run. Start from a preset: TrainConfig.preset("baby")."""

    # data and output
    data: str = "numpy-docs"
    out: str = "out"
    seed: int = 1337
    tokenizer: str = "char"  # "char" or "bpe" (byte-level BPE trained on the training text)
    vocab_size: int = 512  # tokens of a BPE tokenizer (>= 256); a char tokenizer ignores it
    # model
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    pos_encoding: str = "learned"
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
        """A config from a preset ('tiny', 'baby', 'small') with some fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], "preset": name, **overrides})

    def __post_init__(self):
        positive = ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum",
                    "eval_interval", "eval_iters", "log_interval")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive, "
                                 f"got {getattr(self, name)}")
        for name in ("max_iters", "warmup_iters"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"{name.replace('_', '-')} must be >= 0, got {value}")
        if self.lr_decay_iters is not None and self.lr_decay_iters < 0:
            raise ValueError(f"lr-decay-iters must be >= 0, got {self.lr_decay_iters}")
        for name in ("lr", "min_lr", "beta1", "beta2", "weight_decay", "grad_clip", "dropout"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name.replace('_', '-')} must be a finite number, "
                                 f"got {getattr(self, name)}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if not (self.lr > 0 and self.min_lr >= 0):
            raise ValueError(f"need lr > 0 and min-lr >= 0, got lr={self.lr}, min-lr={self.min_lr}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("grad-clip and weight-decay must be >= 0")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.tokenizer not in ("char", "bpe"):
            raise ValueError(f"tokenizer must be 'char' or 'bpe', got {self.tokenizer!r}")
        if self.tokenizer == "bpe" and self.vocab_size < 256:
            raise ValueError(f"vocab-size must be >= 256 for a BPE tokenizer (one token per "
                             f"byte), got {self.vocab_size}")

    def model_config(self, vocab_size):
        return GPTConfig(vocab_size=vocab_size, block_size=self.block_size,
                         n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                         dropout=self.dropout, pos_encoding=self.pos_encoding)

    def lr_at(self, it):
        decay = self.max_iters if self.lr_decay_iters is None else self.lr_decay_iters
        return cosine_lr(it, self.lr, self.min_lr, self.warmup_iters, decay)


@dataclass
class TrainResult:
    model: GPT
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


def estimate_loss(model, ids, cfg, seed):
    """Mean loss over cfg.eval_iters random batches of ids, without dropout. The batches come
    from a Generator with a fixed seed, so every evaluation sees the same windows."""
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    losses = []
    for _ in range(cfg.eval_iters):
        x, y = get_batch(ids, cfg.block_size, cfg.batch_size, rng)
        losses.append(model.forward(x, y)[1])
    model.train(was_training)
    return float(np.mean(losses))


def _progress_bar(total, initial, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm  # auto: a widget in notebooks, text in terminals

    return tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, leave=True)


def _write_log(path, rows):
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _append_log(path, rows):
    """Append rows to log.jsonl, rewriting it atomically (it is small: a few thousand rows)."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    atomic_write_text(path, old + "".join(json.dumps(r) + "\n" for r in rows))


def train(cfg, resume=False, progress=True, callback=None):
    """Train a GPT as `cfg` says; return a TrainResult (model, tokenizer, metrics, history).

    - resume: continue from the checkpoint in cfg.out (model, optimizer, step, RNG states)
    - progress: show a progress bar (loss, lr, tokens/s, ETA)
    - callback: optional callback(row) for every log row (e.g. to plot live in a notebook)
    """
    out = Path(cfg.out)
    text, _ = load_corpus(cfg.data)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(out)
        tokenizer = tokenizer_from_dict(ckpt.tokenizer)
    else:
        tokenizer = None
    tokenizer, train_ids, val_ids = prepare_data(text, cfg.block_size, tokenizer,
                                                 tokenizer_kind=cfg.tokenizer,
                                                 vocab_size=cfg.vocab_size)

    mcfg = cfg.model_config(tokenizer.vocab_size)
    model = GPT(mcfg, seed=cfg.seed, dtype=np.float32)
    opt = AdamW(model.params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8,
                weight_decay=cfg.weight_decay)
    data_rng = np.random.default_rng([cfg.seed, 1])  # training batches
    eval_seed = [cfg.seed, 2]  # the same evaluation windows every time
    step, history = 0, []
    if ckpt is not None:
        saved = GPTConfig.from_dict(ckpt.config["model"])
        if saved != mcfg:
            raise CheckpointError(f"checkpoint in '{out}' is for a different model ({saved}); "
                                  f"the current settings give {mcfg}")
        try:
            model.load_params(ckpt.params)
            opt.params = model.params
            opt.load_state_dict(ckpt.optimizer)
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"checkpoint in '{out}' does not fit: {e}") from None
        step = int(ckpt.train_state["step"])
        data_rng.bit_generator.state = ckpt.train_state["data_rng"]
        model.rng.bit_generator.state = ckpt.train_state["model_rng"]
        log_path = out / "log.jsonl"
        if log_path.exists():
            history = [json.loads(line) for line in log_path.read_text().splitlines() if line]
            history = [r for r in history if r["step"] <= step]
            _write_log(log_path, history)  # drop rows logged after the checkpoint was saved

    def stop_nonfinite(what, value, step_now):
        raise TrainingError(
            f"{what} became {value} at step {step_now}; stopped without saving. The last "
            f"good checkpoint is in '{out}'. Try a lower --lr or --grad-clip 1.0")

    def save(step_now):
        save_checkpoint(
            out, config={"model": mcfg.to_dict(), "train": asdict(cfg)},
            tokenizer=tokenizer.to_dict(), params=model.params, optimizer=opt.state_dict(),
            train_state={"step": step_now, "data_rng": data_rng.bit_generator.state,
                         "model_rng": model.rng.bit_generator.state})

    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.jsonl"
    if not resume and log_path.exists():
        log_path.unlink()  # a fresh run starts a fresh log
    pending = []

    def log(row):
        history.append(row)
        pending.append(row)
        if callback is not None:
            callback(row)

    def evaluate(step_now):
        row = {"step": step_now, "train_loss": estimate_loss(model, train_ids, cfg, eval_seed),
               "val_loss": estimate_loss(model, val_ids, cfg, eval_seed)}
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
    bar = _progress_bar(cfg.max_iters, step, progress)
    interrupted = False
    try:
        with _StopFlag() as flag:
            while step < cfg.max_iters:
                if flag.stop:
                    interrupted = True
                    break
                if step % cfg.eval_interval == 0 and (last_eval is None
                                                      or last_eval["step"] != step):
                    last_eval = evaluate(step)
                    save(step)
                    _append_log(log_path, pending)
                    pending.clear()
                t0 = time.perf_counter()
                opt.lr = cfg.lr_at(step)
                loss, grads = _accumulated_grads(model, train_ids, cfg, data_rng)
                if not math.isfinite(loss):
                    stop_nonfinite("loss", loss, step)
                norm = clip_grad_norm(grads, cfg.grad_clip) if cfg.grad_clip > 0 else None
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
    _append_log(log_path, pending)
    metrics = {
        "step": step,
        "train_loss": last_eval["train_loss"],
        "val_loss": last_eval["val_loss"],
        "last_batch_loss": loss,
        "tokens_per_sec": tokens_done / train_time if train_time else None,
        "wall_seconds": time.perf_counter() - t_start,
        "n_params": model.num_params(),
        "interrupted": interrupted,
        "preset": cfg.preset,
        "data": cfg.data,
    }
    atomic_write_json(out / "metrics.json", metrics)
    return TrainResult(model, tokenizer, metrics, history)


def _accumulated_grads(model, ids, cfg, rng):
    """Average loss and gradients over cfg.grad_accum micro-batches."""
    total_loss, grads = 0.0, None
    scale = np.float32(1.0 / cfg.grad_accum)
    for _ in range(cfg.grad_accum):
        x, y = get_batch(ids, cfg.block_size, cfg.batch_size, rng)
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

