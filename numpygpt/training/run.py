"""A training run's folder: what a run writes there, checks before it writes, and reads back to
resume. `train` and `finetune` both keep their runs this way (and run the loop of loop.py).

    OUT/ckpt.npz        the checkpoint: model, optimizer state, step, RNG states (io/checkpoint.py)
    OUT/config.json     a readable copy of the run's settings; OUT/tokenizer.json likewise
    OUT/log.jsonl       one JSON row per logged step and per evaluation
    OUT/metrics.json    the run's results, written at its end

What a run never does: overwrite another run or a user's own files in OUT (a folder holding a
run needs resume or overwrite; a non-empty folder without a run is refused), trust a
checkpoint's training state without checking it, or save a state holding inf or nan.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
from pathlib import Path

import numpy as np

from ..data import tokenizer_for_model
from ..errors import ConfigError, UserError
from ..io.checkpoint import CKPT_NAME, CheckpointError, is_checkpoint, save_checkpoint
from ..io.files import atomic_write_text, quote, read_text
from ..io.lock import LOCK_NAME, check_free
from ..models.registry import build_model, checkpoint_arch, config_from_dict


class TrainingError(UserError, RuntimeError):
    """Training had to stop (e.g. the loss became nan or inf, or the disk is full)."""


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
    check_free(out)  # a run in progress there: say so first
    if resume or not out.exists():
        return
    try:
        entries = sorted(e for e in os.listdir(out)
                         if not _TEMP_FILE.fullmatch(e) and e != LOCK_NAME)
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


def prepare_out_folder(out, resume, history):
    """Create the run folder; a resumed run's log keeps the rows up to its checkpoint
    (`history`). A new run in a folder that held one (--overwrite) leaves the old run's
    log.jsonl and metrics.json alone here: the loop replaces them once the new run's first
    checkpoint is safely written, so a run that fails before that loses nothing."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the --out folder {quote(out)}: "
                          f"{e.strerror or e}") from None
    if resume:  # drop the rows logged after the checkpoint was saved
        write_in_run(out, "log.jsonl", write_log, out / "log.jsonl", history)


# --- a checkpoint: its model, its training state, checked before use -----------------------------


def model_from_checkpoint(ckpt, path):
    """(model, tokenizer) of a `train` run's loaded Checkpoint (`path`: where it was read, for
    messages): the model of the architecture its config names, in eval mode, and its
    tokenizer, checked against the model's vocabulary. A config or tokenizer that does not
    fit is a CheckpointError (a bug keeps its traceback)."""
    where = f"checkpoint {quote(path)}"
    try:
        mcfg = config_from_dict(checkpoint_arch(ckpt.config, where), ckpt.config.get("model"))
        model = build_model(mcfg, params=ckpt.params)
    except UserError as e:
        raise CheckpointError(f"{where} is not usable: {e}") from None
    return model.eval(), tokenizer_for_model(ckpt.tokenizer, mcfg.vocab_size, where)



def check_rng_state(state, like, what, where):
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


def resume_state(ckpt, max_iters, where, section="train"):
    """Check a checkpoint's training state before a resumed run uses it: the step (within
    the run's own max_iters, config[section]["max_iters"], and the max_iters given now), the
    optimizer's step count, the two RNG states.

    Returns (step, data_rng state, model_rng state). Raises CheckpointError (or ConfigError
    for a max_iters that contradicts it)."""
    state = ckpt.train_state
    missing = [k for k in ("step", "data_rng", "model_rng") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint in {where} has no {', '.join(missing)} in its "
                              f"train_state: it cannot be resumed (sample from it instead)")
    step = state["step"]
    if type(step) is not int or step < 0:
        raise CheckpointError(f"checkpoint in {where}: step must be a non-negative integer, "
                              f"got {step!r:.40}")
    saved = ckpt.config.get(section)
    saved_max = saved.get("max_iters") if isinstance(saved, dict) else None
    if type(saved_max) is int and step > saved_max:
        raise CheckpointError(f"checkpoint in {where} is at step {step}, beyond its own "
                              f"max_iters={saved_max}")
    if step > max_iters:
        raise ConfigError(f"the run in {where} is at step {step}, beyond max-iters "
                          f"{max_iters}; give --max-iters {step} or more")
    if ckpt.optimizer is None:
        raise CheckpointError(f"checkpoint in {where} holds no optimizer state: it cannot be "
                              f"resumed (sample from it instead)")
    t = ckpt.optimizer["hyper"].get("t")
    if t != step or type(t) is not int:
        raise CheckpointError(f"checkpoint in {where}: the optimizer's step count {t!r:.40} "
                              f"differs from the run's step {step}")
    rng = np.random.default_rng(0)
    return (step, check_rng_state(state["data_rng"], rng, "data_rng", where),
            check_rng_state(state["model_rng"], rng, "model_rng", where))


def restore_state(ckpt, opt, model, data_rng, states, where):
    """Put a checkpoint's training state back: the optimizer's (AdamW's m, v and step count),
    and the two RNG states checked by resume_state (`states`: data_rng's, model_rng's), so
    that the resumed run draws the same batches and dropout masks as an uninterrupted one."""
    try:
        opt.load_state_dict(ckpt.optimizer)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint in {where} does not fit: {e}") from None
    data_rng.bit_generator.state, model.rng.bit_generator.state = states


def read_history(log_path, step):
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


def write_log(path, rows):
    """Write log.jsonl from the rows in memory, atomically (it is small: a few thousand rows;
    and it is never read back during a run, so whatever is at that path cannot block us)."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


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
    step and both RNG states, so that a resumed run continues exactly. Used by every run
    (train, finetune).

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


# --- while the run runs ----------------------------------------------------------------------


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


class EvaluationStopped(Exception):
    """A signal came during an evaluation: the run stops without finishing it."""


class StopFlag:
    """Ctrl-C (SIGINT), a scheduler's stop (SIGTERM) or a closed terminal (SIGHUP) sets a flag
    that the loop checks between iterations, so a run stops after the current step, saves, and
    never saves a half-applied update. A second signal interrupts at once
    (KeyboardInterrupt). `signum` is the first signal's number (None: none came)."""

    def __init__(self):
        self.signum = None
        self._old = {}
        self._now = False  # inside interruptible(): a signal stops what runs at once

    @property
    def stop(self):
        return self.signum is not None

    @contextlib.contextmanager
    def interruptible(self, enabled=True):
        """Inside, a first signal raises EvaluationStopped at once instead of waiting for the
        end of the step: for an evaluation, which changes nothing and may be long. (A signal
        that came before still lets it run: that is the final evaluation of a stopped run.)"""
        self._now = enabled and not self.stop
        try:
            yield
        finally:
            self._now = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.stop:
            raise KeyboardInterrupt
        self.signum = signum
        if self._now:
            self._now = False
            raise EvaluationStopped(signum)

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}


def progress_bar(total, initial, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm  # auto: a widget in notebooks, text in terminals

    return tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, leave=True)

