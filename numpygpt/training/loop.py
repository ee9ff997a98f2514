"""The one training loop: every command that trains (train, finetune) runs it.

    while step < max_iters:
        every eval_interval steps: evaluate, log, save a checkpoint
        lr = schedule(step); loss, grads = batch_grads()   # the command's batch, forward, backward
        stop if the loss or the gradient norm is not finite (before the update breaks the model)
        clip the gradient norm; AdamW step; every log_interval steps: log
    evaluate, save, log; metrics.json

What a command brings: its model and optimizer, how to compute one step's loss and
gradients, how to evaluate, and what its metrics say. What the loop guarantees to both:
- Ctrl-C (or SIGTERM, SIGHUP) stops between steps, never inside an update; the final
  evaluation and save still run, and the metrics say "interrupted" and which signal. A signal
  during an evaluation stops it at once (it changes nothing) and saves. A second signal
  raises KeyboardInterrupt at once (the last save stays intact).
- A new run in a folder that held one replaces the old run's log and metrics only once its
  own first checkpoint is written: until then the folder is the old run, whole.
- nan or inf never reaches a checkpoint: a non-finite loss, gradient norm, evaluation or
  saved array stops the run with a TrainingError naming the last good checkpoint.
- A resumed run continues exactly: the step, the optimizer, both RNG states and the log
  come back from the checkpoint (run.py), the same batches follow.
- With N MPI ranks (training/parallel.py) every rank computes its rows of the batch, one
  all-reduce averages the gradients, only rank 0 writes, and an error on one rank ends them
  all with a message instead of leaving the others waiting.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass

from ..io.files import atomic_write_json
from .memory import keep_freed_memory
from .optim import clip_grad_norm
from .parallel import GradAllReduce, abort_on_error, agreed, get_world
from .run import (
    EvaluationStopped,
    StopFlag,
    TrainingError,
    progress_bar,
    save_run,
    write_in_run,
    write_log,
)


@dataclass
class LoopResult:
    """How the loop ended."""

    step: int  # the step reached
    last_eval: dict | None  # the last evaluation's log row (step, train_loss, val_loss, ...);
    # None if the run was stopped during its first
    last_loss: float | None  # the last training batch's loss (None: no step was taken)
    interrupted: bool  # stopped by a signal (Ctrl-C, SIGTERM, SIGHUP) before max_iters
    signal: str | None  # that signal's name, e.g. "SIGTERM"
    train_seconds: float  # time spent in training steps (evaluation and saving not counted)
    tokens: int  # tokens trained on in this process's run of the loop (all ranks together)


def run_loop(cfg, *, model, opt, out, checkpoint_config, tokenizer, data_rng, step, history,
             lr_at, batch_grads, evaluate, metrics, resumed=False, tokens_per_step=0,
             progress=True, callback=None, world=None, command="numpygpt", finish=None):
    """Train from `step` to cfg.max_iters, then write metrics.json; return its dict.

    Inputs:
    - cfg: the run's settings (a TrainConfig or FinetuneConfig): the loop reads max_iters,
      eval_interval, log_interval and grad_clip (0: no clipping)
    - model, opt: the model and its optimizer (opt.params: what trains, the model's arrays)
    - out: the run folder (a Path); checkpoint_config, tokenizer: what each checkpoint keeps
      beside the arrays (a JSON dict, the tokenizer); data_rng: the batches' Generator
    - step, history: where the run starts (0 and [] unless resumed) and its log rows so far;
      resumed: the folder holds this run (else an old run's metrics.json goes at the first
      save)
    - lr_at(step): the learning rate of a step
    - batch_grads(): one step's (loss, grads) of this process (draws its own batch)
    - evaluate(step): the evaluation's log row {"step", "train_loss", "val_loss", ...}
    - metrics(result): the run's metrics.json dict, from a LoopResult
    - finish(result): optional, once the run has reached max_iters and saved (not after a
      stop): True if it changed the model's weights (e.g. put back the evaluation's best),
      which are then saved again, as the run's result
    - tokens_per_step: tokens in one step's batch (0: no throughput in the log)
    - progress: a progress bar; callback(row): called with every log row
    - world: numpygpt.training.parallel's world (default get_world()); command: its name in
      the messages of a failing rank
    """
    world = world if world is not None else get_world()
    keep_freed_memory()  # each step reuses the last one's memory, no page faults (memory.py)
    max_iters, grad_clip = cfg.max_iters, cfg.grad_clip
    average = GradAllReduce(world, opt.params) if world.size > 1 else None
    log_path = out / "log.jsonl"
    where = repr(str(out))

    def stop_nonfinite(what, value, step_now, all_ranks=True):
        # all_ranks: every rank sees the same all-reduced value and stops here too (see
        # parallel.agreed); a check that only rank 0 makes (save's) is not agreed.
        e = TrainingError(f"{what} became {value} at step {step_now}; stopped without saving. "
                          f"The last good checkpoint is in {where}. Try a lower --lr or "
                          f"--grad-clip 1.0")
        raise agreed(world, e) if all_ranks else e

    def write(what, fn, *args):
        if world.is_root:  # the other ranks never touch the out folder
            write_in_run(out, what, fn, *args)

    def log(row):
        history.append(row)
        if callback is not None:
            callback(row)

    flag = StopFlag()

    def evaluate_and_log(step_now):
        # One process: a signal during an evaluation stops it at once (EvaluationStopped).
        # N ranks finish it together (a rank leaving would leave the others in an all-reduce)
        # and agree to stop at the next step.
        with flag.interruptible(world.size == 1):
            row = evaluate(step_now)
        for key in ("train_loss", "val_loss"):
            # Every save follows an evaluation: a broken update (nan or inf weights) must not
            # overwrite the last good checkpoint.
            if not math.isfinite(row[key]):
                stop_nonfinite(key.replace("_", " "), row[key], step_now)
        log(row)
        return row

    old_metrics = [out / "metrics.json"] if not resumed else []

    def save(step_now):
        if world.is_root:
            bad = save_run(out, checkpoint_config, tokenizer, model, opt, step_now, data_rng)
            if bad is not None:
                stop_nonfinite(bad, "non-finite", step_now, all_ranks=False)
        write("log.jsonl", write_log, log_path, history)
        while old_metrics:  # the new run's checkpoint and log are in: the old record can go
            path = old_metrics.pop()
            if path.is_file():
                write("metrics.json", path.unlink)

    evals = [r for r in history if "val_loss" in r]
    last_eval = evals[-1] if evals else None
    loss = None  # the last batch's (None until a step is taken)
    interrupted, train_seconds, tokens = False, 0.0, 0
    stopped_in_eval = False
    stop_agreed = False  # N ranks: some rank's Ctrl-C, known to all at the same step
    with flag, abort_on_error(world, command):
        bar = progress_bar(max_iters, step, progress and world.is_root)
        try:
            while step < max_iters:
                if stop_agreed or (world.size == 1 and flag.stop):
                    interrupted = True
                    break
                if step % cfg.eval_interval == 0 and (last_eval is None
                                                  or last_eval["step"] != step):
                    try:
                        last_eval = evaluate_and_log(step)
                    except EvaluationStopped:
                        interrupted = stopped_in_eval = True
                        break
                    save(step)
                t0 = time.perf_counter()
                opt.lr = lr_at(step)
                loss, grads = batch_grads()
                if average is not None:
                    # Each rank's loss is the mean over its rows, so the mean over the whole
                    # batch is the mean of the N rank means, and so is its gradient
                    # (parallel.py's docstring): one all-reduce of all the gradients, / N. The
                    # stop flags travel with the loss (2 numbers).
                    grads = average(grads)
                    loss, stops = world.allreduce_scalars([loss, flag.stop])
                    loss, stop_agreed = loss / world.size, stops > 0
                if not math.isfinite(loss):
                    stop_nonfinite("the loss", loss, step)
                norm = clip_grad_norm(grads, grad_clip) if grad_clip > 0 else None
                if norm is not None and not math.isfinite(norm):
                    stop_nonfinite("the gradient norm", norm, step)  # before a broken update
                opt.step(grads)
                step += 1
                dt = time.perf_counter() - t0
                train_seconds += dt
                tokens += tokens_per_step
                if step % cfg.log_interval == 0 or step == max_iters:
                    row = {"step": step, "loss": loss, "lr": opt.lr, "grad_norm": norm}
                    if tokens_per_step:
                        row["tokens_per_sec"] = tokens_per_step / dt
                    log(row)
                if bar is not None:
                    bar.update(1)
                    postfix = {"loss": f"{loss:.3f}", "lr": f"{opt.lr:.1e}"}
                    if tokens_per_step:
                        postfix["tok_s"] = f"{tokens / train_seconds:,.0f}"
                    bar.set_postfix(postfix, refresh=False)
        finally:
            if bar is not None:
                bar.close()

        if not stopped_in_eval and (last_eval is None or last_eval["step"] != step):
            last_eval = evaluate_and_log(step)
        save(step)  # (stopped in an evaluation: the last finished one, if any, is the record)
        signame = signal.Signals(flag.signum).name if flag.stop else None
        result = LoopResult(step, last_eval, loss, interrupted or flag.stop, signame,
                            train_seconds, tokens)
        if finish is not None and not result.interrupted and finish(result):
            save(step)
        run_metrics = metrics(result)
        write("metrics.json", atomic_write_json, out / "metrics.json", run_metrics)
    return run_metrics
