"""Fine-tuning a pretrained GPT for a task, with the same hand-written backward passes.

Two tasks (the data and the prompt template live in numpygpt.finetune.tasks):

- classify: text -> one of K labels (topic detection, sentiment). A head (C -> K) reads the
  hidden state of each sequence's last real token (FinetuneGPT.add_classifier / classify); the
  loss is the cross-entropy of the label. Reported: accuracy, the confusion matrix, and the
  majority-class baseline (always answer the most common training label).
- instruct: instruction (+ input) -> response (question answering, summarisation). The
  example is written into a prompt template, and the loss is the language-model loss on the
  response tokens only: prompt and padding targets are -1, which the cross-entropy ignores.
  Reported: the response loss on held-out examples (before and after), and answers generated
  for held-out instructions (KV cache, greedy), scored by exact match and character overlap.

What trains: everything (full fine-tuning), a part (--freeze: the embeddings, the first K
blocks, or the whole body so only the classification head learns), or LoRA adapters
(--lora-rank: the base weights frozen, low-rank updates A @ B trained; see layers/lora.py).
AdamW steps exactly model.trainable_params().

The model is a FinetuneGPT (model.py): the GPT, extended with what trains, the adapters and
the head. The run is train's: the same loop (training/loop.py) and the same run folder
(training/run.py: ckpt.npz with the model, adapters, head, optimizer state and RNG states for
an exact --resume, log.jsonl, metrics.json). load_finetuned(folder) gives the model back;
`python -m numpygpt sample --ckpt FOLDER --prompt "..."` answers an instruction.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..data import CharTokenizer, load_gpt2_tokenizer, tokenizer_for_model
from ..errors import ConfigError, UserError, check_int, check_memory, check_real, check_text
from ..io import hf_gpt2, hub
from ..io.checkpoint import CheckpointError, load_checkpoint, validate_params
from ..io.files import quote
from ..io.lock import RunLock
from ..models.gpt import GPT, GPTConfig, param_shapes
from ..models.registry import checkpoint_arch
from ..training.loop import run_loop
from ..training.optim import AdamW, cosine_lr
from ..training.run import (
    check_out_folder,
    model_from_checkpoint,
    prepare_out_folder,
    read_history,
    restore_state,
    resume_state,
)
from . import numbers, tasks
from .answers import evaluate_answers, exact_match_rate
from .model import HEAD, LORA_TARGETS, FinetuneGPT

TASKS = ("classify", "instruct", "number-translation")
DEFAULT_DATA = {"classify": "numpy-topics", "instruct": "numpy-qa",
                "number-translation": "number-translation"}
# A task's own recipe: defaults that replace the general ones (a flag given still wins).
# number-translation trains the model of numbers.NEW_MODEL from scratch and keeps the
# checkpoint whose dev numbers it answers best: 2000 steps of 64 examples at a peak rate of
# 3e-3 (0.34 s a step on a 2-core AMD EPYC with one BLAS thread, while other jobs shared it;
# 800 steps of 32 examples reached 95.9% of the dev numbers, this 99.4%).
RECIPES = {"number-translation": dict(ckpt="", batch_size=64, max_iters=2000, lr=3e-3,
                                      warmup_iters=50, eval_interval=200, max_new_tokens=12,
                                      keep="best")}
BPE_WINDOW_CHARS = 400  # numpy-topics windows for a BPE model (~100 GPT-2 tokens)
# Settings a resumed run may change: how long it runs and what it reports. The others define
# the run (the data, the model, what trains, the optimizer) and must stay.
RESUMABLE = ("out", "max_iters", "lr_decay_iters", "eval_interval", "log_interval", "eval_generate",
             "max_new_tokens", "n_test")


@dataclass
class FinetuneConfig:
    """Everything that defines a fine-tuning run (the CLI's flags)."""

    ckpt: str = "out"  # a numpygpt checkpoint folder, a GPT-2 folder, a name: gpt2, ...; ""
    # (number-translation only): a new model, trained from scratch
    task: str = "classify"  # "classify", "instruct" or "number-translation" (an instruct task)
    data: str = ""  # "" = the task's default (numpy-topics / numpy-qa), a built-in or a file
    out: str = "out-finetune"
    # what trains
    lora_rank: int = 0  # 0: no LoRA
    lora_alpha: float = 16.0
    lora_targets: str = ",".join(LORA_TARGETS)
    freeze: str = "none"  # "none", "embeddings", "body" or K (embeddings + the first K blocks)
    # instruct only
    template: str = ""  # "" = by context length: "compact" below 256 tokens, else "alpaca"
    eval_generate: int = 20  # held-out instructions answered by generation at the end
    max_new_tokens: int = 80  # at most this many tokens per generated answer
    n_test: int = 0  # held-out test examples answered at the end (0: all; else that many,
    # spread evenly over the test set; number-translation)
    keep: str = "last"  # the run's result: the "last" weights, or the "best" by the exact
    # match of the held-out examples' greedy answers at the evaluations
    # optimisation
    batch_size: int = 16
    max_iters: int = 300
    lr: float = 0.0  # 0 = automatic: 2e-3 when only adapters or the head train, else 5e-4
    min_lr_ratio: float = 0.1  # cosine decay to lr * this
    warmup_iters: int = 20
    lr_decay_iters: int = 0  # length of the cosine schedule; 0 = max_iters
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    dropout: float = 0.0
    # evaluation and logging
    eval_interval: int = 100
    log_interval: int = 10
    seed: int = 0

    def __post_init__(self):
        def flag(name):
            return "--" + name.replace("_", "-")

        for name in ("ckpt", "task", "data", "out", "lora_targets", "freeze", "template"):
            setattr(self, name, check_text(flag(name), getattr(self, name)))
        if self.task not in TASKS:
            raise ConfigError(f"--task must be one of {', '.join(TASKS)}; got {self.task!r}")
        for name in ("batch_size", "eval_interval", "log_interval"):
            setattr(self, name, check_int(flag(name), getattr(self, name), minimum=1))
        for name in ("lora_rank", "max_iters", "warmup_iters", "lr_decay_iters", "eval_generate",
                     "max_new_tokens", "n_test", "seed"):
            setattr(self, name, check_int(flag(name), getattr(self, name), minimum=0))
        for name, low, high in (("lora_alpha", 0.0, None), ("lr", 0.0, None),
                                ("min_lr_ratio", 0.0, 1.0), ("weight_decay", 0.0, None),
                                ("grad_clip", 0.0, None), ("dropout", 0.0, 1.0)):
            setattr(self, name, check_real(flag(name), getattr(self, name), low, high,
                                           high_open=name == "dropout"))
        if self.lora_rank and self.lora_alpha == 0:
            raise ConfigError("--lora-alpha must be > 0")
        self.targets()  # checks --lora-targets
        if self.template and self.template not in tasks.TEMPLATES:
            raise ConfigError(f"--template must be one of {', '.join(tasks.TEMPLATES)}; "
                              f"got {self.template!r}")
        if self.keep not in ("last", "best"):
            raise ConfigError(f"--keep must be last or best; got {self.keep!r}")
        if self.keep == "best" and self.kind != "instruct":
            raise ConfigError("--keep best chooses by the answers to held-out instructions: "
                              "it is for instruction tasks")
        if not self.ckpt and self.task != "number-translation":
            raise ConfigError("--ckpt is needed: a model to fine-tune (only number-translation "
                              "trains a new one from scratch)")
        if self.template and self.kind != "instruct":
            raise ConfigError("--template is for --task instruct (a classifier has no prompt)")
        # ASCII digits only: str.isdigit also takes "²" and "①", which int() refuses
        if self.freeze not in ("none", "embeddings", "body") and \
                not re.fullmatch(r"[0-9]+", self.freeze):
            raise ConfigError(f"--freeze must be none, embeddings, body or a number of blocks "
                              f"K (the embeddings and blocks 0..K-1); got {self.freeze!r}")
        if self.lora_rank and self.freeze != "none":
            raise ConfigError("--freeze cannot be combined with --lora-rank: LoRA freezes every "
                              "base weight already (only the adapters and a head train)")
        if self.freeze == "body" and self.kind == "instruct":
            raise ConfigError("--freeze body leaves nothing to train for --task instruct (its "
                              "head is the frozen token embedding); freeze K blocks or use "
                              "--lora-rank")

    @classmethod
    def for_task(cls, **given):
        """The config of `given` (field -> value), over the task's recipe (RECIPES), over the
        general defaults."""
        return cls(**{**RECIPES.get(given.get("task", cls.task), {}), **given})

    @property
    def kind(self):
        """"classify" or "instruct" (number-translation is an instruction task)."""
        return "classify" if self.task == "classify" else "instruct"

    @property
    def data_name(self):
        return self.data or DEFAULT_DATA[self.task]

    def targets(self):
        """The LoRA targets as a tuple, checked."""
        names = tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())
        unknown = [t for t in names if t not in LORA_TARGETS]
        if unknown or not names:
            raise ConfigError(f"--lora-targets: unknown {', '.join(unknown) or '(none given)'};"
                              f" choose from {', '.join(LORA_TARGETS)} (comma-separated)")
        return names

    def learning_rate(self, model):
        """The peak learning rate: --lr, or by what trains (few new parameters take a larger
        step than a whole pretrained model, which a large step would knock off its minimum)."""
        if self.lr:
            return self.lr
        only_new = all(".lora_" in k or k in HEAD for k in model.trainable)
        return 2e-3 if only_new else 5e-4

    def lr_at(self, it, peak):
        return cosine_lr(it, peak, peak * self.min_lr_ratio, self.warmup_iters,
                         self.lr_decay_iters or self.max_iters)


@dataclass
class FinetuneResult:
    model: GPT
    tokenizer: object
    metrics: dict
    history: list


# --- the base model ---------------------------------------------------------------------------


def new_model(dropout=0.0, seed=0):
    """number-translation's model from scratch: (model, tokenizer, description). The sizes
    of numbers.NEW_MODEL, a character tokenizer of the task's characters and the compact
    prompt template's."""
    template = tasks.TEMPLATES["compact"]
    chars = set(numbers.alphabet() + template.without_input.format(instruction="")
                + template.end)
    tokenizer = CharTokenizer("".join(sorted(chars)))
    mcfg = GPTConfig(vocab_size=tokenizer.vocab_size, dropout=dropout, **numbers.NEW_MODEL)
    what = (f"a new model ({mcfg.n_layer} layers, {mcfg.n_head} heads, C={mcfg.n_embd}, "
            f"{tokenizer.vocab_size} characters)")
    return GPT(mcfg, seed=seed), tokenizer, what


def load_base(ckpt, dropout=0.0, seed=0):
    """The model to fine-tune: (model, tokenizer, description).

    ckpt: a numpygpt checkpoint folder (e.g. the default `train` run's ./out), a GPT-2 folder
    in Hugging Face format, or a GPT-2 name (gpt2, gpt2-medium, ...; downloaded once). A
    fine-tuned instruct run works too (its adapters merged); a classifier does not. "": a new
    model (new_model: number-translation from scratch; seed: its initial weights)."""
    if not ckpt:
        return new_model(dropout, seed)
    if hf_gpt2.looks_like_gpt2_folder(ckpt) or (hub.gpt2_name(ckpt) and not Path(ckpt).exists()):
        model = GPT.from_pretrained(ckpt)
        tokenizer = load_gpt2_tokenizer(ckpt)
        if tokenizer is None:
            raise CheckpointError(f"'{ckpt}' has no vocab.json and merges.txt (the tokenizer)")
        what = f"GPT-2 '{ckpt}'"
    else:
        saved = load_checkpoint(ckpt)
        if isinstance(saved.config.get("finetune"), dict):
            model, tokenizer, info = from_checkpoint(saved, ckpt)
            if info["task"] == "classify":
                raise CheckpointError(f"'{ckpt}' is a fine-tuned classifier; fine-tune from a "
                                      f"language model (a `train` run, or GPT-2)")
            if model.lora:
                model.merge_lora()
            what = f"fine-tuned run '{ckpt}'"
        else:
            if checkpoint_arch(saved.config, f"checkpoint '{ckpt}'") != "gpt":
                raise CheckpointError(f"checkpoint '{ckpt}' holds a Llama model: fine-tuning "
                                      f"(its classifier head, LoRA) is built for GPT models")
            model, tokenizer = model_from_checkpoint(saved, ckpt)
            what = f"checkpoint '{ckpt}'"
    if dropout != model.config.dropout:  # dropout is a training setting, not the model's
        cfg = GPTConfig(**{**model.config.to_dict(), "dropout": dropout})
        model = GPT(cfg, params=model.params)
    return model, tokenizer, what


def _set_trainable(model, cfg):
    """Adapters, freezing, or everything, as cfg says (after any head was added)."""
    if cfg.lora_rank:
        try:
            model.add_lora(rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=cfg.targets(),
                           seed=cfg.seed)
        except ConfigError as e:
            raise ConfigError(f"--lora-rank {cfg.lora_rank}: {e}") from None
        return
    if cfg.freeze == "none":
        return
    n_layer = model.config.n_layer
    if cfg.freeze == "body":
        names = set(HEAD)
    else:
        k = 0 if cfg.freeze == "embeddings" else int(cfg.freeze)
        if k > n_layer:
            raise ConfigError(f"--freeze {k}: the model has only {n_layer} blocks")
        frozen = {"wte.weight", "wpe.weight"} | {n for n in model.params if any(
            n.startswith(f"h.{i}.") for i in range(k))}
        names = set(model.params) - frozen
        if not names:
            raise ConfigError(f"--freeze {cfg.freeze} leaves nothing to train")
    model.trainable = names


def _build_model(base_params, mcfg, cfg, n_classes, seed):
    """The FinetuneGPT of a run: the base weights, the head, what trains."""
    model = FinetuneGPT(mcfg, seed=seed, params=base_params)
    if cfg.task == "classify":
        model.add_classifier(n_classes, seed=seed)
    _set_trainable(model, cfg)
    return model


# --- data ------------------------------------------------------------------------------------


@dataclass
class _TaskData:
    """A task's examples, encoded for one tokenizer and context length."""

    data: object  # tasks.ClassificationData or tasks.InstructionData
    train: list  # classify: token-id arrays; instruct: (ids, targets) pairs
    val: list
    train_labels: np.ndarray | None  # classify: (N_train,) class ids
    val_labels: np.ndarray | None
    val_examples: list  # instruct: the held-out examples that fit, aligned with val
    template: object  # instruct: a tasks.Template
    skipped: int  # instruct: examples that do not fit in the context


def _check_held_out(data, cfg, val_fraction, unit):
    """A task file too small to split: say so, and how many examples would do."""
    if data.val:
        return
    # the least n with min(round(n * f), n - 1) >= 1 (the split keeps one for training)
    n = next(n for n in range(2, 10_000) if min(round(n * val_fraction), n - 1) >= 1)
    raise tasks.TaskError(
        f"--data {cfg.data_name!r} has too few examples to hold any out for validation "
        f"({val_fraction:g} of them, rounded, are held out): give at least {n} {unit}")


def _prepare(cfg, tokenizer, block_size, labels=None):
    """Load the task's data and encode it. labels: the classes of a resumed run (the model
    has one output per class and cannot learn a new one)."""
    char = getattr(tokenizer, "kind", "") == "char"
    if cfg.task == "classify":
        # The built-in topics come as windows of a docstring: block_size characters for a char
        # model (all it can read), BPE_WINDOW_CHARS for a BPE one (whole docstrings would be
        # long, and their examples name the namespace: ">>> np.fft.rfft(...)")
        data = tasks.load_task("classify", cfg.data_name,
                               max_chars=block_size if char else BPE_WINDOW_CHARS, seed=cfg.seed)
        _check_held_out(data, cfg, tasks.CLASSIFY_VAL_FRACTION, "different texts in some class")
        if labels is not None:
            tasks.check_labels(data.train + data.val, labels, f"--data {cfg.data_name!r}",
                               (data.train_lines or []) + (data.val_lines or []) or None)
            data.labels = list(labels)
        ids = tasks.label_ids(data)

        def at(lines):  # each text's place in the file ("task file 'x.csv' line 7"), if known
            return [f"--data {cfg.data_name!r} {line}" for line in lines] if lines else None

        return _TaskData(
            data, tasks.encode_texts([t for t, _ in data.train], tokenizer, block_size,
                                     at(data.train_lines)),
            tasks.encode_texts([t for t, _ in data.val], tokenizer, block_size,
                               at(data.val_lines)),
            np.array([ids[y] for _, y in data.train], np.int64),
            np.array([ids[y] for _, y in data.val], np.int64), [], None, 0)
    data = tasks.load_task("instruct", cfg.data_name, seed=cfg.seed)
    _check_held_out(data, cfg, tasks.INSTRUCT_VAL_FRACTION, "examples with different instructions")
    template = tasks.TEMPLATES[cfg.template] if cfg.template else \
        tasks.default_template(block_size)
    train, skipped = tasks.encode_instructions(data.train, tokenizer, template, block_size,
                                               data.train_lines)
    end = tasks.end_ids(tokenizer, template)
    val, val_examples = [], []
    for i, ex in enumerate(data.val):
        enc = tasks.encode_instruction(ex, tokenizer, template, block_size, end=end, index=i,
                                       where=data.val_lines[i] if data.val_lines else None)
        if enc is None:
            skipped += 1
        else:
            val.append(enc)
            val_examples.append(ex)
    if not train or not val:
        raise tasks.TaskError(
            f"--data {cfg.data_name!r}: no {'training' if not train else 'validation'} "
            f"example fits in the model's context of {block_size} tokens with the "
            f"{template.name!r} template")
    return _TaskData(data, train, val, None, None, val_examples, template, skipped)


def _loss_on(model, td, which, indices, cfg):
    """The mean loss over the examples `indices` of td.<which>, in batches of batch_size,
    without dropout; weighted by what each batch's loss averages over (its examples, or its
    response tokens). classify also returns the predictions."""
    examples = getattr(td, which)
    was_training = model.training
    model.eval()
    total, count, preds = 0.0, 0, []
    try:
        for start in range(0, len(indices), cfg.batch_size):
            chunk = indices[start:start + cfg.batch_size]
            if cfg.task == "classify":
                labels = getattr(td, which + "_labels")
                idx, lengths, y = tasks.classification_batch(examples, labels, chunk)
                logits, loss = model.classify(idx, lengths, y)
                preds.append(logits.argmax(axis=-1))
                n = len(chunk)
            else:
                idx, targets = tasks.instruction_batch(examples, chunk)
                _, loss = model.forward(idx, targets)
                n = int((targets != -1).sum())
            total += loss * n
            count += n
    finally:
        model.train(was_training)
    mean = total / max(count, 1)
    return (mean, np.concatenate(preds)) if cfg.task == "classify" else (mean, None)


def confusion_matrix(y_true, y_pred, n_classes):
    """(K, K) counts: row = the true class, column = the predicted one."""
    check_memory(8 * n_classes * n_classes, f"a confusion matrix of {n_classes:,} classes")
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


MAX_CONFUSION_CLASSES = 100  # metrics.json holds the whole matrix up to this many classes


def confusion_summary(y_true, y_pred, labels, most=20):
    """What metrics.json says of the mistakes: the (K, K) confusion matrix for up to
    MAX_CONFUSION_CLASSES classes; beyond (thousands of labels would make a K x K matrix of
    gigabytes), the `most` most frequent confusions, [true label, predicted label, count],
    counted without any K x K array."""
    if len(labels) <= MAX_CONFUSION_CLASSES:
        return {"confusion": confusion_matrix(y_true, y_pred, len(labels)).tolist()}
    wrong = y_true != y_pred
    pairs, counts = np.unique(np.stack([y_true[wrong], y_pred[wrong]]), axis=1,
                              return_counts=True)
    order = np.argsort(-counts, kind="stable")[:most]
    return {"confusion": None, "top_confusions": [
        [labels[pairs[0, i]], labels[pairs[1, i]], int(counts[i])] for i in order]}


# --- generation ------------------------------------------------------------------------------


# --- the run ---------------------------------------------------------------------------------


def _run_info(cfg, mcfg, td, model):
    lora = None
    if model.lora:
        lora = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "targets": list(cfg.targets())}
    return {"task": cfg.task, "labels": list(td.data.labels) if cfg.task == "classify" else None,
            "template": td.template.name if td.template else None, "lora": lora,
            "trainable": sorted(model.trainable), "data_sha256": _data_sha256(cfg)}


def _data_sha256(cfg):
    """The sha256 of the task's data file (None for a built-in task): a resumed run checks
    that it trains on the same examples."""
    path = Path(cfg.data_name)
    if cfg.data_name in tasks.BUILTIN_TASKS[cfg.kind] or not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def finetune(cfg, resume=False, progress=True, callback=None, overwrite=False):
    """Fine-tune as `cfg` says; return a FinetuneResult (model, tokenizer, metrics, history).

    - resume: continue the run in cfg.out exactly (same batches, same result as without a
      break); its task, data and what trains are the saved run's
    - progress, callback, overwrite: as numpygpt.training.train.train

    One process at a time in a folder (a lock, as train's). Ctrl-C, SIGTERM or SIGHUP stops
    after the current step, evaluates, saves and returns with metrics["interrupted"] True.
    """
    if not isinstance(cfg, FinetuneConfig):
        raise TypeError(f"cfg must be a FinetuneConfig, got {type(cfg).__name__}")
    check_out_folder(cfg.out, resume=resume, overwrite=overwrite)
    with RunLock(cfg.out, "numpygpt finetune"):
        check_out_folder(cfg.out, resume=resume, overwrite=overwrite)  # again, locked
        return _finetune(cfg, resume, progress, callback)


def _finetune(cfg, resume, progress, callback):
    """finetune(), with the folder locked."""
    out = Path(cfg.out)
    where = quote(out)
    saved = None
    if resume:
        saved = load_checkpoint(out)
        info = saved.config.get("task")
        if not isinstance(saved.config.get("finetune"), dict) or not isinstance(info, dict):
            raise CheckpointError(f"checkpoint in {where} is not a fine-tuning run (resume a "
                                  f"`train` run with `python -m numpygpt train --resume`)")
        _check_resume_config(saved.config["finetune"], cfg, where)

    t_start = time.perf_counter()
    base, tokenizer, base_what = load_base(cfg.ckpt, dropout=cfg.dropout, seed=cfg.seed)
    mcfg = base.config
    if cfg.task == "number-translation":
        try:
            tokenizer.encode(numbers.alphabet())
        except UserError:
            raise ConfigError(f"--ckpt {cfg.ckpt!r}: its tokenizer cannot write the task's "
                              "characters (the numerals 一 .. 万); train number-translation "
                              "from scratch (no --ckpt), or from a run whose tokenizer has "
                              "them") from None
    labels = saved.config["task"].get("labels") if saved is not None else None
    td = _prepare(cfg, tokenizer, mcfg.block_size, labels)
    if saved is not None:
        before = saved.config["task"].get("data_sha256")
        if before is not None and before != _data_sha256(cfg):
            raise ConfigError(f"--data {cfg.data_name!r} has changed since the run in {where} "
                              "began (its sha256 differs): a resumed run must see the same "
                              "examples; put the file back, or start a new run")
    n_classes = len(td.data.labels) if cfg.task == "classify" else 0

    model = _build_model(base.params, mcfg, cfg, n_classes, cfg.seed)
    del base
    data_rng = np.random.default_rng([cfg.seed, 1])
    peak_lr = cfg.learning_rate(model)
    opt = AdamW(model.trainable_params(), lr=peak_lr, betas=(0.9, 0.999),
                eps=1e-8, weight_decay=cfg.weight_decay)
    step, history = 0, []
    if saved is not None:
        expected = {**param_shapes(mcfg), **{k: v.shape for k, v in model.params.items()}}
        validate_params(saved.params, expected, what=f"checkpoint in {where}")
        for k, v in saved.params.items():
            model.params[k][...] = v
        step, *rng_states = resume_state(saved, cfg.max_iters, where, "finetune")
        restore_state(saved, opt, model, data_rng, rng_states, where)
        log_path = out / "log.jsonl"
        history = read_history(log_path, step) if log_path.exists() else []
    info = _run_info(cfg, mcfg, td, model)
    prepare_out_folder(out, resume, history)

    # fixed examples for the train-loss estimate (at most 256), every evaluation the same
    n_train, n_val = len(td.train), len(td.val)
    probe = np.random.default_rng([cfg.seed, 2]).permutation(n_train)[:256]
    B = min(cfg.batch_size, n_train)
    last = {"preds": None}  # the predictions of the last evaluation (classify)

    def batch_grads():
        chosen = data_rng.choice(n_train, size=B, replace=False)
        if cfg.task == "classify":
            idx, lengths, y = tasks.classification_batch(td.train, td.train_labels, chosen)
            _, loss = model.classify(idx, lengths, y)
        else:
            idx, targets = tasks.instruction_batch(td.train, chosen)
            _, loss = model.forward(idx, targets)
        return loss, model.backward()

    kept = {"step": None, "score": -1.0, "params": None}  # keep="best": the best so far

    def evaluate(step_now):
        train_loss, _ = _loss_on(model, td, "train", probe, cfg)
        val_loss, last["preds"] = _loss_on(model, td, "val", np.arange(n_val), cfg)
        row = {"step": step_now, "train_loss": train_loss, "val_loss": val_loss}
        if last["preds"] is not None:
            row["val_accuracy"] = float(np.mean(last["preds"] == td.val_labels))
        if cfg.keep == "best":  # the held-out answers choose the weights to keep
            row["val_exact_match"] = exact_match_rate(model, tokenizer, td.template,
                                                      td.val_examples, cfg.max_new_tokens)
            if row["val_exact_match"] > kept["score"]:
                kept.update(step=step_now, score=row["val_exact_match"],
                            params={k: model.params[k].copy() for k in model.trainable})
        return row

    def finish(r):
        """keep="best": put back the weights of the best evaluation (saved as the result)."""
        if kept["step"] is None or kept["step"] == r.step:
            return False
        for k, v in kept["params"].items():
            model.params[k][...] = v
        return True

    def metrics(r):
        first = next((row for row in history if "val_loss" in row), {"step": None})
        m = {
            "task": cfg.task, "data": cfg.data_name, "base": base_what, "step": r.step,
            "train_loss": (r.last_eval or {}).get("train_loss"),
            "val_loss": (r.last_eval or {}).get("val_loss"),
            "initial_val_loss": first["val_loss"] if first["step"] == 0 else None,
            "last_batch_loss": r.last_loss, "n_train": n_train, "n_val": n_val,
            "trainable_params": int(sum(p.size for p in model.trainable_params().values())),
            "total_params": model.num_params(), "lora_rank": cfg.lora_rank,
            "freeze": cfg.freeze, "seconds_per_step": r.train_seconds / max(r.step, 1)
            if r.train_seconds else None, "interrupted": r.interrupted, "signal": r.signal,
        }
        if cfg.task == "classify":
            preds = last["preds"]
            if preds is None:  # a resumed run whose last evaluation is in the log: again
                preds = _loss_on(model, td, "val", np.arange(n_val), cfg)[1]
            counts = np.bincount(td.train_labels, minlength=n_classes)
            majority = int(np.argmax(counts))
            m.update({
                "labels": list(td.data.labels),
                "val_accuracy": float(np.mean(preds == td.val_labels)),
                "baseline_accuracy": float(np.mean(td.val_labels == majority)),
                "baseline_label": td.data.labels[majority],
                **confusion_summary(td.val_labels, preds, td.data.labels)})
        else:
            exact, overlap, rows = evaluate_answers(
                model, tokenizer, td.template, td.val_examples[:cfg.eval_generate],
                cfg.max_new_tokens)
            m.update({"template": td.template.name, "skipped_examples": td.skipped,
                      "exact_match": exact, "char_overlap": overlap, "answers": rows})
            if cfg.keep == "best":
                m.update(kept_step=kept["step"], val_exact_match=kept["score"]
                         if kept["step"] is not None else None)
            if td.data.test:  # the held-out test set, answered once, at the end
                m.update(_test_scores(model, tokenizer, td.template,
                                      tasks.spread(td.data.test, cfg.n_test), cfg))
        m["wall_seconds"] = time.perf_counter() - t_start
        return m

    run_metrics = run_loop(
        cfg, model=model, opt=opt, out=out, step=step, history=history,
        lr_at=lambda it: cfg.lr_at(it, peak_lr),
        checkpoint_config={"model": mcfg.to_dict(), "finetune": asdict(cfg), "task": info,
                           "base": base_what},
        tokenizer=tokenizer, data_rng=data_rng, batch_grads=batch_grads, evaluate=evaluate,
        metrics=metrics, resumed=resume, progress=progress, callback=callback,
        command="numpygpt finetune", finish=finish if cfg.keep == "best" else None)
    return FinetuneResult(model, tokenizer, run_metrics, history)


def _test_scores(model, tokenizer, template, test, cfg, shown=200):
    """Exact match on every test example (greedy), and the first `shown` wrong answers."""
    _, _, rows = evaluate_answers(model, tokenizer, template, test, cfg.max_new_tokens)
    wrong = [{k: r[k] for k in ("instruction", "reference", "answer")}
             for r in rows if not r["exact"]]
    return {"test_exact_match": 1.0 - len(wrong) / len(rows), "n_test": len(rows),
            "test_wrong": wrong[:shown]}


def _check_resume_config(saved, cfg, where):
    """A resumed run keeps what defines it: a setting that differs from the saved run's
    (other than how long it runs and what it reports) is refused, not silently applied."""
    names = {f.name for f in fields(FinetuneConfig)}
    if not isinstance(saved, dict) or set(saved) - names:
        raise CheckpointError(f"checkpoint in {where} holds fine-tuning settings this version "
                              f"does not know")
    for f in fields(FinetuneConfig):
        if f.name in RESUMABLE or f.name not in saved:
            continue
        if saved[f.name] != getattr(cfg, f.name):
            flag = "--" + f.name.replace("_", "-")
            raise ConfigError(f"the run in {where} was made with {flag} {saved[f.name]!r}; a "
                              f"resumed run keeps it ({flag} {getattr(cfg, f.name)!r} refused)")


def resume_config(out, **given):
    """The saved run's FinetuneConfig, with the settings in `given` (e.g. max_iters)."""
    saved = load_checkpoint(out).config.get("finetune")
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint in {quote(out)} is not a fine-tuning run")
    saved = dict(saved)
    if not saved.get("lr_decay_iters"):
        # the run's schedule was as long as its max_iters: a new --max-iters must not reshape
        # the part already trained (as train --resume)
        saved["lr_decay_iters"] = saved.get("max_iters", 0)
    try:
        return FinetuneConfig(**{**saved, **given, "out": str(out)})
    except TypeError as e:
        raise CheckpointError(f"checkpoint in {quote(out)} holds unknown settings: {e}") \
            from None


# --- using a fine-tuned run ---------------------------------------------------------------


def from_checkpoint(ckpt, where):
    """(model, tokenizer, task info) from a fine-tuning run's loaded Checkpoint (see
    load_finetuned); `where` names it in messages."""
    info = ckpt.config.get("task")
    try:
        cfg = FinetuneConfig(**ckpt.config.get("finetune"))
    except (TypeError, ConfigError) as e:  # unknown keys or bad values in the file
        raise CheckpointError(f"checkpoint '{where}' holds fine-tuning settings that are not "
                              f"valid: {e}") from None
    try:
        mcfg = GPTConfig.from_dict(ckpt.config.get("model"))
        tokenizer = tokenizer_for_model(ckpt.tokenizer, mcfg.vocab_size, f"checkpoint '{where}'")
        if not isinstance(info, dict) or info.get("task") not in TASKS:
            raise ConfigError("its task description is missing")
        labels = info.get("labels") or []
        shapes = param_shapes(mcfg)
        validate_params({k: v for k, v in ckpt.params.items() if k in shapes}, shapes,
                        what=f"checkpoint '{where}'")
        model = _build_model({k: ckpt.params[k] for k in shapes}, mcfg, cfg, len(labels),
                             cfg.seed)
        validate_params(ckpt.params, {k: v.shape for k, v in model.params.items()},
                        what=f"checkpoint '{where}'")
    except UserError as e:
        raise CheckpointError(f"checkpoint '{where}' is not a usable fine-tuning run: {e}") \
            from None
    for k, v in ckpt.params.items():
        model.params[k][...] = v
    model.eval()
    return model, tokenizer, {**info, "max_new_tokens": cfg.max_new_tokens,
                              "template_obj": tasks.TEMPLATES.get(info.get("template") or "")}


def load_finetuned(folder):
    """A fine-tuned run's (model, tokenizer, info): info["task"], info["labels"] (classify),
    info["template_obj"] (instruct: the tasks.Template to wrap prompts in)."""
    ckpt = load_checkpoint(folder)
    if not isinstance(ckpt.config.get("finetune"), dict):
        raise CheckpointError(f"'{folder}' is not a fine-tuning run (its checkpoint has no "
                              f"fine-tuning settings)")
    return from_checkpoint(ckpt, folder)


def predict(model, tokenizer, labels, texts, batch_size=32):
    """The predicted label of each text, with a classifier from load_finetuned."""
    encoded = tasks.encode_texts(list(texts), tokenizer, model.config.block_size)
    dummy = np.zeros(len(encoded), dtype=np.int64)
    preds = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(encoded), batch_size):
            idx, lengths, _ = tasks.classification_batch(
                encoded, dummy, np.arange(start, min(start + batch_size, len(encoded))))
            preds.append(model.classify(idx, lengths)[0].argmax(axis=-1))
    finally:
        model.train(was_training)
    return [labels[i] for i in np.concatenate(preds)] if preds else []
