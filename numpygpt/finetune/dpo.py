"""Preference tuning (DPO) of an instruction-tuned run, on the training loop every command shares.

    python -m numpygpt finetune --method dpo --init RUN --out RUN2 [--pairs FILE]

An instruction-tuned model still makes mistakes. DPO (layers/dpo.py) learns from pairs: for
a prompt, the right answer (chosen) and a wrong one (rejected). Here the wrong answers are the
model's own: RUN answers its training prompts, greedily and then by sampling, and each wrong
answer becomes a pair with the reference answer (or the pairs come from a file, --pairs).

The loss of a batch of B pairs, with s = the sequence log-probability of a response:

    h    = beta * ((s_c - s_ref_c) - (s_r - s_ref_r))      s_ref: the frozen RUN's, computed once
    loss = mean softplus(-h) + alpha * NLL(chosen)          NLL: the token mean, as in SFT

DPO alone only widens the gap s_c - s_r, and with near-miss rejected answers it often does
so by lowering both (likelihood displacement): the chosen answers lose probability and exact
match falls while the preference accuracy rises. The NLL term (alpha > 0) holds the chosen
answers up; --keep best (the default) keeps the weights whose held-out answers were best at
the evaluations, which can be RUN's own (step 0). The log has what shows it: the mean s_c and
s_r of a fixed sample of the training pairs and of the held-out pairs, the margins, the
preference accuracy (the share of h > 0, a tie counting half: at step 0, where the policy is
the reference and every h is 0, it is 50%) and the held-out exact match.

The chosen and rejected sequences of a batch go through the model as one batch (2B rows);
sequence_logprob and dpo_loss give dlogits, and FinetuneGPT.backward(dlogits) the gradients.
The pairs and their reference log-probabilities are kept in the checkpoint: --resume needs
nothing else.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .. import layers as L
from ..errors import ConfigError, UserError, check_int, check_real, check_text
from ..io.checkpoint import CheckpointError, load_checkpoint, validate_params
from ..io.files import quote
from ..io.lock import RunLock
from ..training.loop import run_loop
from ..training.optim import AdamW, cosine_lr
from ..training.run import (
    check_out_folder,
    prepare_out_folder,
    read_history,
    restore_state,
    resume_state,
)
from . import scores, tasks
from .answers import exact_match_rate, respond_batch
from .model import FinetuneGPT
from .run import FinetuneConfig, FinetuneResult, from_checkpoint

RESUMABLE = ("out", "max_iters", "lr_decay_iters", "eval_interval", "log_interval", "n_test")
PROBE = 256  # training pairs whose log-probabilities every evaluation reports


@dataclass
class DPOConfig:
    """Everything that defines a preference-tuning run (finetune --method dpo's flags)."""

    init: str = "out-finetune"  # the instruction-tuned run to start from; also the reference
    out: str = "out-dpo"
    pairs: str = ""  # "" = made from init's own mistakes; or a JSONL file of pairs
    n_pairs: int = 2000  # pairs to make from the model's mistakes (training pairs)
    beta: float = 0.1  # DPO's temperature: how far the policy may move from the reference
    alpha: float = 10.0  # weight of the chosen answers' NLL (0: plain DPO); 10 with lr 1e-3
    # gained the most of the settings docs/finetuning.md measures
    keep: str = "best"  # the run's result: "best" by held-out exact match, or "last"
    batch_size: int = 32  # pairs per step
    max_iters: int = 300
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_iters: int = 20
    lr_decay_iters: int = 0  # 0 = max_iters
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_interval: int = 25
    log_interval: int = 5
    n_test: int = 0  # held-out test examples answered at the end (0: all; else that many,
    # spread evenly over the test set)
    seed: int = 0

    def __post_init__(self):
        def flag(name):
            return "--" + name.replace("_", "-")

        for name in ("init", "out", "pairs", "keep"):
            setattr(self, name, check_text(flag(name), getattr(self, name)))
        for name in ("n_pairs", "batch_size", "eval_interval", "log_interval"):
            setattr(self, name, check_int(flag(name), getattr(self, name), minimum=1))
        for name in ("max_iters", "warmup_iters", "lr_decay_iters", "n_test", "seed"):
            setattr(self, name, check_int(flag(name), getattr(self, name), minimum=0))
        for name, low, high in (("beta", 0.0, None), ("alpha", 0.0, None), ("lr", 0.0, None),
                                ("min_lr_ratio", 0.0, 1.0), ("weight_decay", 0.0, None),
                                ("grad_clip", 0.0, None)):
            setattr(self, name, check_real(flag(name), getattr(self, name), low, high))
        if self.beta == 0:
            raise ConfigError("--beta must be > 0")
        if self.keep not in ("last", "best"):
            raise ConfigError(f"--keep must be last or best; got {self.keep!r}")

    def lr_at(self, it):
        return cosine_lr(it, self.lr, self.lr * self.min_lr_ratio, self.warmup_iters,
                         self.lr_decay_iters or self.max_iters)


# --- the pairs ----------------------------------------------------------------------------------


def make_pairs(model, tokenizer, template, examples, n, rng, max_new_tokens, tries=4):
    """Up to n pairs from the model's own mistakes on `examples` ({"instruction", "input",
    "output"}): its greedy answer where that is wrong, then, for the examples it answers
    right, answers sampled at temperature 1 (up to `tries` rounds). The chosen response is
    the example's output; the rejected one the wrong, non-empty answer.

    Returns a list of {"instruction", "input", "chosen", "rejected"}, at most one per
    example."""
    order = [examples[i] for i in rng.permutation(len(examples))[:4 * n]]
    pairs, left = [], order
    for attempt in range(1 + tries):
        if len(pairs) >= n or not left:
            break
        answers = respond_batch(model, tokenizer, template, left, max_new_tokens,
                                temperature=0.0 if attempt == 0 else 1.0,
                                seed=int(rng.integers(2**31)))
        still = []
        for ex, answer in zip(left, answers, strict=True):
            if answer.strip() and not scores.exact_match(answer, ex["output"]):
                pairs.append({"instruction": ex["instruction"], "input": ex.get("input", ""),
                              "chosen": ex["output"], "rejected": answer})
            else:
                still.append(ex)
        left = still
    return pairs[:n]


def encode_pair(pair, tokenizer, template, block_size, end, where):
    """(ids_c, targets_c, ids_r, targets_r) of a pair, each (L,) int64, or a TaskError (one
    line, naming `where`) when a response does not fit in the context whole."""
    out = []
    for key in ("chosen", "rejected"):
        example = {"instruction": pair["instruction"], "input": pair.get("input", ""),
                   "output": pair[key]}
        prompt = tasks.format_prompt(example, template)
        try:
            n_prompt = len(tokenizer.encode(prompt))
            n_resp = len(tokenizer.encode(pair[key])) + len(end)
        except UserError as e:
            raise tasks.TaskError(f"{where}: {e}") from None
        if n_prompt + n_resp > block_size + 1:
            raise tasks.TaskError(
                f"{where}: the prompt and the {key} response are {n_prompt + n_resp} tokens, "
                f"longer than the model's context of {block_size} (+1): shorten them")
        out += tasks.encode_instruction(example, tokenizer, template, block_size, end=end,
                                        where=where, min_tokens=1)
    return tuple(out)


def pair_batch(encoded, indices):
    """The chosen and the rejected sequences of the pairs `indices` as one batch: idx and
    targets (2B, T), the B chosen rows first, right-padded as tasks.instruction_batch pads."""
    rows = [(e[0], e[1]) for e in (encoded[i] for i in indices)]
    rows += [(e[2], e[3]) for e in (encoded[i] for i in indices)]
    return tasks.instruction_batch(rows, range(len(rows)))


def sequence_logprobs(model, encoded, batch_size=64):
    """(s_c, s_r): the model's sequence log-probabilities of every pair's chosen and rejected
    responses, float64 (N,) each, without dropout."""
    was_training = model.training
    model.eval()
    s_c, s_r = [], []
    try:
        for start in range(0, len(encoded), batch_size):
            chunk = range(start, min(start + batch_size, len(encoded)))
            idx, targets = pair_batch(encoded, chunk)
            logits, _ = model.forward(idx)
            s, _ = L.sequence_logprob_forward(logits, targets)
            s_c.append(s[:len(chunk)])
            s_r.append(s[len(chunk):])
    finally:
        model.train(was_training)
    if not s_c:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(s_c).astype(np.float64), np.concatenate(s_r).astype(np.float64)


def _pair_rows(pairs):
    return [[p["instruction"], p.get("input", ""), p["chosen"], p["rejected"]] for p in pairs]


def _pairs_of(rows, where):
    try:
        return [{"instruction": a, "input": b, "chosen": c, "rejected": d} for a, b, c, d in rows]
    except (TypeError, ValueError):
        raise CheckpointError(f"checkpoint in {where} holds damaged preference pairs") from None


# --- the run -------------------------------------------------------------------------------------


def _load_init(cfg):
    """The run DPO starts from: (FinetuneGPT training every weight, tokenizer, its task info,
    its FinetuneConfig)."""
    where = f"--init {quote(cfg.init)}"
    saved = load_checkpoint(cfg.init)
    info = saved.config.get("task")
    if not isinstance(saved.config.get("finetune"), dict) or not isinstance(info, dict) or \
            info.get("task") == "classify":
        raise ConfigError(f"{where} is not an instruction-tuned run (make one with finetune "
                          "--task instruct or --task number-translation)")
    model, tokenizer, info = from_checkpoint(saved, cfg.init)
    if model.lora:
        model.merge_lora()
    init_cfg = FinetuneConfig(**saved.config["finetune"])
    policy = FinetuneGPT(model.config, seed=cfg.seed, params=model.params)  # trains everything
    return policy, tokenizer, info, init_cfg


def dpo(cfg, resume=False, progress=True, callback=None, overwrite=False):
    """Preference-tune cfg.init as `cfg` says; return a FinetuneResult (model, tokenizer,
    metrics, history). resume, progress, callback, overwrite: as finetune()."""
    if not isinstance(cfg, DPOConfig):
        raise TypeError(f"cfg must be a DPOConfig, got {type(cfg).__name__}")
    check_out_folder(cfg.out, resume=resume, overwrite=overwrite)
    with RunLock(cfg.out, "numpygpt finetune --method dpo"):
        check_out_folder(cfg.out, resume=resume, overwrite=overwrite)
        return _dpo(cfg, resume, progress, callback)


def resume_config(out, **given):
    """The saved DPO run's config, with the settings in `given` (those in RESUMABLE)."""
    saved = load_checkpoint(out).config.get("dpo")
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint in {quote(out)} is not a preference-tuning run")
    changed = sorted(k for k in given if k not in RESUMABLE and given[k] != saved.get(k))
    if changed:
        flag = "--" + changed[0].replace("_", "-")
        raise ConfigError(f"the run in {quote(out)} was made with {flag} {saved.get(changed[0])!r}"
                          f"; a resumed run keeps it")
    saved = {**saved, "lr_decay_iters": saved.get("lr_decay_iters") or saved.get("max_iters", 0)}
    try:
        return DPOConfig(**{**saved, **given, "out": str(out)})
    except TypeError as e:
        raise CheckpointError(f"checkpoint in {quote(out)} holds unknown settings: {e}") from None


def _dpo(cfg, resume, progress, callback):
    out, t_start = Path(cfg.out), time.perf_counter()
    where = quote(out)
    saved = load_checkpoint(out) if resume else None
    policy, tokenizer, info, init_cfg = _load_init(cfg)
    template, mcfg = info["template_obj"], policy.config
    end = tasks.end_ids(tokenizer, template)
    data = tasks.load_task("instruct", init_cfg.data_name, seed=init_cfg.seed)
    dev = data.val  # they choose the weights to keep (--keep best)
    rng = np.random.default_rng([cfg.seed, 7])

    if saved is not None:  # the pairs and their reference log-probabilities, as they were
        d = saved.config.get("dpo_data") or {}
        train_pairs = _pairs_of(d.get("train", []), where)
        eval_pairs = _pairs_of(d.get("eval", []), where)
        ref_train = np.asarray(d.get("ref_train"), dtype=np.float64).reshape(-1, 2)
        ref_eval = np.asarray(d.get("ref_eval"), dtype=np.float64).reshape(-1, 2)
        lines = (None, None)
    else:
        if cfg.pairs:
            pdata = tasks.load_pairs_file(cfg.pairs, seed=cfg.seed)
            train_pairs, eval_pairs = pdata.train, pdata.val
            lines = (pdata.train_lines, pdata.val_lines)
        else:
            train_pairs = make_pairs(policy, tokenizer, template, data.train, cfg.n_pairs, rng,
                                     init_cfg.max_new_tokens)
            held = data.test or data.val
            eval_pairs = make_pairs(policy, tokenizer, template, held, max(cfg.n_pairs // 4, 1),
                                    rng, init_cfg.max_new_tokens)
            lines = (None, None)
        if not train_pairs or not eval_pairs:
            raise ConfigError(f"--init {quote(cfg.init)} made no wrong answers to learn from "
                              f"({len(train_pairs)} training and {len(eval_pairs)} held-out "
                              "pairs): give pairs with --pairs FILE")
    enc_train = [encode_pair(p, tokenizer, template, mcfg.block_size, end,
                             lines[0][i] if lines[0] else f"training pair {i}")
                 for i, p in enumerate(train_pairs)]
    enc_eval = [encode_pair(p, tokenizer, template, mcfg.block_size, end,
                            lines[1][i] if lines[1] else f"held-out pair {i}")
                for i, p in enumerate(eval_pairs)]
    if saved is None:  # the reference: the starting model, frozen, computed once
        ref_train = np.stack(sequence_logprobs(policy, enc_train), axis=1)  # (N, 2)
        ref_eval = np.stack(sequence_logprobs(policy, enc_eval), axis=1)

    data_rng = np.random.default_rng([cfg.seed, 1])
    opt = AdamW(policy.trainable_params(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                weight_decay=cfg.weight_decay)
    step, history = 0, []
    if saved is not None:
        validate_params(saved.params, {k: v.shape for k, v in policy.params.items()},
                        what=f"checkpoint in {where}")
        for k, v in saved.params.items():
            policy.params[k][...] = v
        step, *rng_states = resume_state(saved, cfg.max_iters, where, "finetune --method dpo")
        restore_state(saved, opt, policy, data_rng, rng_states, where)
        log_path = out / "log.jsonl"
        history = read_history(log_path, step) if log_path.exists() else []
    prepare_out_folder(out, resume, history)

    n = len(enc_train)
    B = min(cfg.batch_size, n)
    probe = np.random.default_rng([cfg.seed, 2]).permutation(n)[:PROBE]

    def batch_grads():
        chosen = data_rng.choice(n, size=B, replace=False)
        idx, targets = pair_batch(enc_train, chosen)  # (2B, T): chosen rows, then rejected
        logits, _ = policy.forward(idx)
        s, s_cache = L.sequence_logprob_forward(logits, targets)
        ref = ref_train[chosen].astype(s.dtype)
        loss, d_cache = L.dpo_loss_forward(s[:B], s[B:], ref[:, 0], ref[:, 1], cfg.beta)
        ds_c, ds_r, _, _ = L.dpo_loss_backward(1.0, d_cache)
        dlogits = L.sequence_logprob_backward(np.concatenate([ds_c, ds_r]), s_cache)
        if cfg.alpha:  # + alpha * the chosen answers' token-mean NLL
            nll, n_cache = L.softmax_cross_entropy_forward(logits[:B], targets[:B])
            dlogits[:B] += cfg.alpha * L.softmax_cross_entropy_backward(1.0, n_cache)
            loss = loss + cfg.alpha * nll
        return float(loss), policy.backward(dlogits)

    def pair_stats(enc, ref, which):
        s_c, s_r = sequence_logprobs(policy, enc)
        h = L.dpo_margins(s_c, s_r, ref[:, 0], ref[:, 1], cfg.beta)
        return {f"{which}_loss": float(np.logaddexp(0.0, -h).mean()),
                f"{which}_margin": float(h.mean()),
                f"{which}_pref_accuracy": float(((h > 0) + 0.5 * (h == 0)).mean()),
                f"{which}_chosen_logp": float(s_c.mean()),
                f"{which}_rejected_logp": float(s_r.mean())}

    kept = {"step": None, "score": -1.0, "params": None}

    def evaluate(step_now):
        row = {"step": step_now, **pair_stats([enc_train[i] for i in probe], ref_train[probe],
                                              "train"),
               **pair_stats(enc_eval, ref_eval, "val")}
        row["val_exact_match"] = exact_match_rate(policy, tokenizer, template, dev,
                                                  init_cfg.max_new_tokens)
        if row["val_exact_match"] > kept["score"]:
            kept.update(step=step_now, score=row["val_exact_match"],
                        params={k: v.copy() for k, v in policy.params.items()})
        return row

    def finish(r):
        if cfg.keep != "best" or kept["step"] is None or kept["step"] == r.step:
            return False
        for k, v in kept["params"].items():
            policy.params[k][...] = v
        return True

    def metrics(r):
        first = next((row for row in history if row.get("step") == 0 and "val_loss" in row), {})
        last_eval = r.last_eval or {}
        m = {"method": "dpo", "init": cfg.init, "step": r.step, "beta": cfg.beta,
             "alpha": cfg.alpha, "n_pairs": n, "n_eval_pairs": len(enc_eval),
             "train_loss": last_eval.get("train_loss"), "val_loss": last_eval.get("val_loss"),
             "last_batch_loss": r.last_loss, "kept_step": kept["step"] if cfg.keep == "best"
             else r.step, "interrupted": r.interrupted, "signal": r.signal,
             "seconds_per_step": r.train_seconds / max(r.step, 1) if r.train_seconds else None,
             "trainable_params": int(sum(p.size for p in policy.trainable_params().values())),
             "total_params": policy.num_params(),
             "initial": {k: first.get(k) for k in ("val_exact_match", "val_pref_accuracy",
                                                   "val_margin", "val_chosen_logp")}}
        m.update(pair_stats(enc_eval, ref_eval, "val"))  # of the kept weights
        m["val_exact_match"] = exact_match_rate(policy, tokenizer, template, dev,
                                                init_cfg.max_new_tokens)
        if data.test:
            test = tasks.spread(data.test, cfg.n_test)
            rate = exact_match_rate(policy, tokenizer, template, test, init_cfg.max_new_tokens)
            m.update(test_exact_match=rate, n_test=len(test))
        m["wall_seconds"] = time.perf_counter() - t_start
        return m

    init_saved = {**asdict(init_cfg), "lora_rank": 0, "freeze": "none", "out": str(out)}
    run_metrics = run_loop(
        cfg, model=policy, opt=opt, out=out, step=step, history=history, lr_at=cfg.lr_at,
        checkpoint_config={
            "model": mcfg.to_dict(), "finetune": init_saved,
            "task": {**{k: v for k, v in info.items() if k not in ("template_obj",
                                                                   "max_new_tokens")},
                     "lora": None, "trainable": sorted(policy.trainable)},
            "base": f"preference-tuned from '{cfg.init}'", "dpo": asdict(cfg),
            "dpo_data": {"train": _pair_rows(train_pairs), "eval": _pair_rows(eval_pairs),
                         "ref_train": ref_train.tolist(), "ref_eval": ref_eval.tolist()}},
        tokenizer=tokenizer, data_rng=data_rng, batch_grads=batch_grads, evaluate=evaluate,
        metrics=metrics, resumed=resume, progress=progress, callback=callback,
        command="numpygpt finetune --method dpo", finish=finish)
    return FinetuneResult(policy, tokenizer, run_metrics, history)


def dpo_fields():
    """The names of DPOConfig's fields (the CLI's flags of --method dpo)."""
    return [f.name for f in fields(DPOConfig)]


__all__ = ["DPOConfig", "dpo", "make_pairs", "encode_pair", "pair_batch", "sequence_logprobs",
           "resume_config", "dpo_fields"]
