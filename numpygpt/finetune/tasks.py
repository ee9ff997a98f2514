"""Fine-tuning tasks: their data, the prompt template, the encoded batches, and the scores.

Pretraining teaches a model to continue text. Fine-tuning teaches it one job, from examples of
that job. This module turns examples into what the training loop needs; nothing here knows the
model. Two kinds of task:

- classify: a text -> one of a few labels (topic detection, sentiment). The model reads the
  text, a small head on the hidden state of its last token picks the label.
  Examples are (text, label) pairs.
- instruct: an instruction (and sometimes an input) -> a response (question answering,
  summarisation). Examples are dicts {"instruction", "input", "output"}, the layout of the
  Alpaca data set. The model reads a prompt made from a *template* and learns to continue it
  with the response and an end marker:

      ### Instruction:                        Q: What does `numpy.fft.fft` do?
      What does `numpy.fft.fft` do?           A: Compute the one-dimensional discrete ...
                                              (the "compact" template, for small contexts)
      ### Response:
      Compute the one-dimensional discrete Fourier Transform.

  The loss is taken on the response and the end marker only: the targets of prompt
  positions are -1, which the cross-entropy ignores, so the model is not trained to write
  prompts, only to answer them.

Data comes from a file (CSV or JSON lines) or from built-in tasks, so that everything works
offline: three made from the NumPy docstrings that the "numpy-docs" corpus gathers, and one
made by two small functions:
- numpy-topics (classify): a docstring's text -> its namespace (`numpy.linalg`, `numpy.fft`,
  ...), balanced, with a held-out split by docstring;
- numpy-qa (instruct): "What does `numpy.linalg.norm` do?" -> "Matrix or vector norm.";
- numpy-summaries (instruct): a docstring's extended description -> its summary line;
- number-translation (instruct): English number words -> Chinese numerals (numbers.py).

Every split is deterministic (a seed and, for the built-in tasks, the installed numpy
version) and never puts the same text on both sides: a score on the held-out part measures
what the model learnt, not what it remembers.

A user's mistake (a bad file, an empty one, a missing or unseen label, a character the
tokenizer cannot encode) is a TaskError, with a one-line message naming the file and line.

Shapes: B batch, T the longest sequence in a batch (<= block_size), L one sequence.
"""

from __future__ import annotations

import csv
import functools
import io
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..data.bpe import BPETokenizer
from ..data.corpora import numpy_docstrings
from ..data.tokenizer_base import TokenizerError
from ..errors import UserError, check_int, check_real
from ..io.files import parse_json, quote, read_text
from . import numbers
from .docstrings import ParsedDoc, parse_docstring, text_windows
from .scores import char_overlap, exact_match, lcs_length


class TaskError(UserError, ValueError):
    """A problem with a task's data: a file that cannot be used, a missing or unseen label,
    a text the tokenizer cannot encode. The message is one line naming the file and line."""


# A task file is read whole, and its examples become Python strings, dicts and arrays of about
# ten times the file's size: 32 MB (Alpaca's 52k examples are 22 MB) keeps that under 1 GB.
# Fine-tuning sees batch_size x max_iters examples (4,800 by default): sample a larger file.
MAX_TASK_BYTES = 32_000_000
CLASSIFY_VAL_FRACTION = 0.2  # of each class's texts, held out for validation
INSTRUCT_VAL_FRACTION = 0.1  # of the instruction files' examples

# The namespaces of numpy-topics, in label order (sorted, as every label list is).
TOPIC_LABELS = ("numpy", "numpy.fft", "numpy.linalg", "numpy.ma", "numpy.polynomial",
                "numpy.random", "numpy.strings")
TOPIC_VAL_FRACTION = 0.22  # share of each namespace's docstrings held out
TOPIC_WINDOWS = 6  # windows of max_chars characters taken from one docstring, at most
QA_VAL_FRACTION = 0.1
MAX_SUMMARY_CHARS = 200  # a longer "summary line" is a paragraph, not an answer
MIN_CUT_TOKENS = 8  # an input or a response cut shorter than this is not worth learning


# --- splits ------------------------------------------------------------------------------------


def _split_groups(keys, val_fraction, rng, keep_one=False):
    """Which items go to validation, when items with equal keys must stay together.

    Inputs:
    - keys: one sortable key per item (a text, a name, ...)
    - val_fraction: the share of distinct keys to hold out (rounded)
    - rng: np.random.Generator that chooses them
    - keep_one: leave at least one key for training

    Returns:
    - val: list of bools, one per item
    """
    groups = sorted(set(keys))  # sorted first: the same keys give the same split
    n_val = round(len(groups) * val_fraction)
    if keep_one:
        n_val = min(n_val, len(groups) - 1)
    held = {groups[i] for i in rng.permutation(len(groups))[:n_val]}
    return [k in held for k in keys]


def _check_val_fraction(val_fraction):
    return check_real("val_fraction", val_fraction, 0.0, 1.0, high_open=True)


# --- classification data -----------------------------------------------------------------------


@dataclass
class ClassificationData:
    """Examples of a classification task, split into training and validation.

    - train, val: lists of (text, label) pairs, both str
    - labels: the sorted class names; the model's class i is labels[i]
    - name: "numpy-topics" or the file's path
    - train_lines, val_lines: for a file, where each example is ("line 12", or "item 3" of a
      JSON array), for messages; None for a built-in task
    """

    train: list
    val: list
    labels: list
    name: str
    train_lines: list | None = field(default=None, repr=False)
    val_lines: list | None = field(default=None, repr=False)


def _topic(namespace):
    """The numpy-topics label of a module, or None: numpy.polynomial.* -> numpy.polynomial."""
    if namespace.startswith("numpy.polynomial."):
        return "numpy.polynomial"
    return namespace if namespace in TOPIC_LABELS else None


def numpy_topics(max_chars=None, seed=0, *, windows=TOPIC_WINDOWS):
    """Topic detection on NumPy's docstrings: which namespace does this text document?

    The label is the namespace that defines the docstring (numpy.random.Generator.normal ->
    numpy.random; a method belongs to its class's module). A docstring defined in two labelled
    namespaces (np.cos is also np.ma.cos) is left out, as is one defined elsewhere only
    (numpy.char, numpy.rec, numpy.lib): the text cannot tell which label is right.

    A small model reads a few dozen characters, so with `max_chars` each docstring gives up to
    `windows` texts of at most max_chars characters: its summary line first, then its extended
    description, cut at spaces. A window that two docstrings share (RandomState.normal and
    Generator.normal begin alike) is dropped. Without max_chars a text is a whole docstring.

    The split is by docstring (all windows of one docstring on the same side), holding out
    TOPIC_VAL_FRACTION of each namespace's docstrings. Then every class is cut down, at
    random, to the size of the smallest, in train and in val, so that the majority-class
    baseline is 1/7 and accuracy means the same for every class.

    Sizes for numpy 2.4 (examples per class, train + val; 7 classes):
    - max_chars=None: 14 + 4 (98 train and 28 val texts)
    - max_chars=60:   54 + 16 (378 train and 112 val texts)
    The smallest class, numpy.fft (18 docstrings, 4 held out), sets them. Whole docstrings
    often name their namespace in their examples (">>> np.fft.rfft(x)"); windows of the
    summary and description almost never do (1 text of 490 at max_chars=60).

    Inputs:
    - max_chars: the longest text in characters, or None for whole docstrings
    - seed: chooses the held-out docstrings and the examples kept
    - windows: the most texts taken from one docstring (with max_chars)

    Returns:
    - ClassificationData named "numpy-topics"
    """
    if max_chars is not None:
        max_chars = check_int("max_chars", max_chars, minimum=1)
    windows = check_int("windows", windows, minimum=1)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    by_label = {label: [] for label in TOPIC_LABELS}  # label -> [texts of one docstring]
    for d in numpy_docstrings():
        topics = {_topic(ns) for ns in d.namespaces} - {None}
        if len(topics) != 1:
            continue
        if max_chars is None:
            texts = [d.doc]
        else:
            parsed = parse_docstring(d.doc)
            texts = list(dict.fromkeys(text_windows(parsed, max_chars, windows)))
        if texts:
            by_label[topics.pop()].append(texts)
    shared = Counter(t for docs in by_label.values() for texts in docs for t in texts)
    train, val = {}, {}
    for label, docs in by_label.items():
        docs = [[t for t in texts if shared[t] == 1] for texts in docs]
        docs = [texts for texts in docs if texts]
        held = _split_groups(range(len(docs)), TOPIC_VAL_FRACTION, rng, keep_one=True)
        train[label] = [t for texts, h in zip(docs, held, strict=True) if not h for t in texts]
        val[label] = [t for texts, h in zip(docs, held, strict=True) if h for t in texts]
    labels = [label for label in TOPIC_LABELS if train[label] and val[label]]  # all, numpy>=2

    def balanced(split):
        n = min(len(split[label]) for label in labels)
        out = []
        for label in labels:
            keep = np.sort(rng.choice(len(split[label]), size=n, replace=False))
            out += [(split[label][i], label) for i in keep]
        return [out[i] for i in rng.permutation(len(out))]  # classes mixed, for a reader

    return ClassificationData(balanced(train), balanced(val), labels, "numpy-topics")


def _file_kind(path, kinds):
    """The extension of a task file, if it is one of `kinds`, else a TaskError."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in kinds:
        raise TaskError(f"task file {quote(path)} has the extension {ext or '(none)'!r}; "
                        f"use {' or '.join(kinds)}")
    return ext


def _read_task_file(path):
    text = read_text(path, "task file", MAX_TASK_BYTES, error=TaskError).removeprefix("\ufeff")
    if not text.strip():
        raise TaskError(f"task file {quote(path)} is empty")
    return text


def _json_records(text, where, ext):
    """(line, object) for each record of JSON lines (blank lines skipped), or of a JSON array
    (a .json file whose first character is '['; then `line` is "item N")."""
    if ext == ".json" and text.lstrip().startswith("["):
        items = parse_json(text, where, TaskError)
        if not isinstance(items, list):
            raise TaskError(f"{where} must hold a JSON array of objects or JSON lines")
        return [(f"item {i}", obj) for i, obj in enumerate(items, start=1)]
    records = []
    # split at "\n" only: splitlines() would also cut at U+2028, which a JSON string may hold
    for lineno, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            records.append((f"line {lineno}", parse_json(line, f"{where} line {lineno}",
                                                         TaskError)))
    return records


def _csv_records(text, where):
    """(line, {column: value}) for each row of a CSV file with a header row."""
    reader = csv.reader(io.StringIO(text, newline=""))
    records, header, start = [], None, 1
    try:
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                start = reader.line_num + 1
                continue  # blank line
            if header is None:
                header = [cell.strip() for cell in row]
                twice = sorted({c for c in header if header.count(c) > 1 and c})
                if twice:
                    raise TaskError(f"{where} line {start}: the header names the column "
                                    f"{twice[0]!r} twice; which one is meant is ambiguous")
            elif len(row) != len(header):
                raise TaskError(f"{where} line {start} has {len(row)} fields but the header "
                                f"has {len(header)} (a comma inside a text needs quotes)")
            else:
                records.append((f"line {start}", dict(zip(header, row, strict=True))))
            start = reader.line_num + 1  # a quoted field can span lines: rows start here
    except csv.Error as e:
        raise TaskError(f"{where} line {start} is not valid CSV: {e}") from None
    if header is None:
        raise TaskError(f"{where} is empty")
    for column in ("text", "label"):
        if column not in header:
            columns = ", ".join(repr(c) for c in header[:8])
            raise TaskError(f"{where} has no {column!r} column (its header: {columns}); a "
                            "classification file needs 'text' and 'label' columns")
    return records


def load_classification_file(path, val_fraction=CLASSIFY_VAL_FRACTION, seed=0):
    """Read a classification task from a CSV or JSON-lines file and split it.

    - .csv: a header row with `text` and `label` columns (others are ignored), one example
      per row; quote a text that holds commas or line breaks ("a, b" or "line 1\\nline 2").
    - .jsonl or .json: one object {"text": ..., "label": ...} per line (or, in a .json file,
      a JSON array of them). A label may be a string or an integer.

    The split is stratified (each class gives val_fraction of its texts to validation, and
    keeps at least one for training) and deterministic under `seed`. A text that appears
    twice in the file goes to one side only.

    Inputs:
    - path: the file
    - val_fraction: share of each class held out, in [0, 1)
    - seed: chooses the held-out examples

    Returns:
    - ClassificationData named after the path, with the line of each example
    """
    val_fraction = _check_val_fraction(val_fraction)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    where = f"task file {quote(path)}"
    ext = _file_kind(path, (".csv", ".jsonl", ".json"))
    text = _read_task_file(path)
    records = _csv_records(text, where) if ext == ".csv" else _json_records(text, where, ext)
    examples, lines = [], []
    for line, obj in records:
        if not isinstance(obj, dict):
            raise TaskError(f"{where} {line} is not a JSON object like "
                            '{"text": "...", "label": "..."}')
        values = []
        for key in ("text", "label"):
            value = obj.get(key)
            if key == "label" and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # 0/1 labels are common in sentiment data
            if not isinstance(value, str) or not value.strip():
                problem = "no" if value is None else ("an empty" if isinstance(value, str)
                                                     else f"a non-text ({type(value).__name__})")
                raise TaskError(f"{where} {line} has {problem} {key!r}")
            values.append(value.strip())
        examples.append(tuple(values))
        lines.append(line)
    if not examples:
        raise TaskError(f"{where} has no examples")
    labels = sorted({label for _, label in examples})
    if len(labels) < 2:
        raise TaskError(f"{where} has a single class ({labels[0]!r}); classification needs "
                        "at least 2")
    # Stratify: split each class on its own. A text seen twice goes with its first label.
    first_label = {}
    for t, label in examples:
        first_label.setdefault(t, label)
    held = {}
    for label in labels:
        texts = sorted(t for t, lab in first_label.items() if lab == label)
        held.update(zip(texts, _split_groups(texts, val_fraction, rng, keep_one=True),
                        strict=True))
    train, val, train_lines, val_lines = [], [], [], []
    for example, line in zip(examples, lines, strict=True):
        if held[example[0]]:
            val.append(example)
            val_lines.append(line)
        else:
            train.append(example)
            train_lines.append(line)
    return ClassificationData(train, val, labels, os.fspath(path), train_lines, val_lines)


def label_ids(data):
    """{label: class id}, in the order of data.labels."""
    return {label: i for i, label in enumerate(data.labels)}


def check_labels(examples, labels, where, lines=None):
    """Raise TaskError if an example's label is not one of `labels`.

    Used when a run meets labels it was not trained on: resuming or evaluating a model with
    another file. The model has one output per trained class and cannot predict a new one.

    Inputs:
    - examples: (text, label) pairs
    - labels: the class names the model was trained on
    - where: names the data in messages, e.g. "task file 'reviews.csv'"
    - lines: where each example is, e.g. ClassificationData.val_lines ("line 12"), or None
    """
    known = set(labels)
    for i, (_, label) in enumerate(examples):
        if label not in known:
            at = lines[i] if lines is not None else f"example {i}"
            shown = ", ".join(repr(x) for x in list(labels)[:10])
            more = f" (and {len(labels) - 10} more)" if len(labels) > 10 else ""
            raise TaskError(f"{where}: label {label!r} on {at} is not one of the "
                            f"{len(labels)} classes the model was trained on: {shown}{more}")


# --- instruction data --------------------------------------------------------------------------


@dataclass
class InstructionData:
    """Examples of an instruction task: train and val are lists of dicts with the str keys
    "instruction", "input" ("" when there is none) and "output"; name names the data."""

    train: list
    val: list
    name: str
    train_lines: list | None = None  # a file's: where each example is ("task file ... line 7")
    val_lines: list | None = None
    test: list | None = None  # held-out examples scored only at the end (number-translation)


def _example(instruction, output, inp=""):
    return {"instruction": instruction, "input": inp, "output": output}


def _split_examples(examples, key, val_fraction, seed, name, lines=None):
    """InstructionData with the examples of equal key(example) on one side; `lines`: where
    each example is in its file, split alongside."""
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    held = _split_groups([key(e) for e in examples], val_fraction, rng, keep_one=True)
    data = InstructionData([e for e, h in zip(examples, held, strict=True) if not h],
                           [e for e, h in zip(examples, held, strict=True) if h], name)
    if lines is not None:
        data.train_lines = [w for w, h in zip(lines, held, strict=True) if not h]
        data.val_lines = [w for w, h in zip(lines, held, strict=True) if h]
    return data


@functools.lru_cache(maxsize=1)
def _summaries():
    """(name, summary, description) of each NumPy docstring with a usable summary line."""
    out = []
    for d in numpy_docstrings():
        parsed = parse_docstring(d.doc)
        if parsed.summary and len(parsed.summary) <= MAX_SUMMARY_CHARS:
            out.append((d.name, parsed.summary, "\n".join(parsed.description)))
    return tuple(out)


def numpy_qa(seed=0):
    """Question answering on NumPy's API: "What does `numpy.linalg.norm` do?" -> the summary
    line of its docstring ("Matrix or vector norm.").

    One example per docstring of the "numpy-docs" corpus whose summary line exists and is at
    most MAX_SUMMARY_CHARS long (the name is the one the corpus gives it). About 10% are held
    out, deterministically; examples with the same answer (RandomState.normal and
    Generator.normal) stay on one side, so that a held-out answer was never seen in training.
    numpy 2.4: 1064 examples, 958 train and 106 val.
    """
    examples = [_example(f"What does `{name}` do?", summary)
                for name, summary, _ in _summaries()]
    return _split_examples(examples, lambda e: e["output"], QA_VAL_FRACTION, seed, "numpy-qa")


SUMMARISE = "Summarise this NumPy documentation in one line."


def numpy_summaries(seed=0):
    """Summarisation: a docstring's extended description (its paragraphs between the summary
    and the first section, one line each) -> its summary line.

    Docstrings without an extended description are left out; the split is as numpy_qa's.
    numpy 2.4: 651 examples, 587 train and 64 val.
    """
    examples = [_example(SUMMARISE, summary, description)
                for _, summary, description in _summaries() if description]
    return _split_examples(examples, lambda e: e["output"], QA_VAL_FRACTION, seed,
                           "numpy-summaries")


def _text_records(path, keys, layout):
    """The records of a JSON-lines (or JSON array) task file: for each, (the dict of `keys` and
    "input" — every key text, non-empty but "input", which may be left out —, its place)."""
    where = f"task file {quote(path)}"
    ext = _file_kind(path, (".jsonl", ".json"))
    records = []
    for line, obj in _json_records(_read_task_file(path), where, ext):
        if not isinstance(obj, dict):
            raise TaskError(f"{where} {line} is not a JSON object like {layout}")
        for key in (*keys, "input"):
            value = obj.get(key)
            if key == "input" and value is None:
                continue
            if not isinstance(value, str):
                problem = ("has no" if value is None
                           else f"has a non-text ({type(value).__name__})")
                raise TaskError(f"{where} {line} {problem} {key!r}")
            if key != "input" and not value.strip():
                raise TaskError(f"{where} {line} has an empty {key!r}")
        records.append(({**{k: obj[k] for k in keys}, "input": obj.get("input") or ""},
                        f"{where} {line}"))
    if not records:
        raise TaskError(f"{where} has no examples")
    return records


def load_instruction_file(path, val_fraction=INSTRUCT_VAL_FRACTION, seed=0):
    """Read an instruction task from a JSON-lines file (.jsonl, or .json) and split it.

    One object per line: {"instruction": "...", "input": "...", "output": "..."}, where
    "input" may be left out (or be ""); other keys are ignored, blank lines skipped. A .json
    file may also hold a JSON array of such objects.

    Inputs:
    - path: the file
    - val_fraction: share held out, in [0, 1); examples with the same instruction and input
      stay on one side
    - seed: chooses the held-out examples

    Returns:
    - InstructionData named after the path
    """
    val_fraction = _check_val_fraction(val_fraction)
    records = _text_records(path, ("instruction", "output"),
                            '{"instruction": "...", "input": "...", "output": "..."}')
    examples = [_example(r["instruction"], r["output"], r["input"]) for r, _ in records]
    return _split_examples(examples, lambda e: (e["instruction"], e["input"]), val_fraction,
                           seed, os.fspath(path), [line for _, line in records])


def load_pairs_file(path, val_fraction=INSTRUCT_VAL_FRACTION, seed=0):
    """Read preference pairs from a JSON-lines file (.jsonl, or .json) and split them.

    One object per line: {"instruction": "...", "input": "...", "chosen": "...",
    "rejected": "..."} ("input" may be left out): for that prompt, the response "chosen" is
    preferred over "rejected". Split as load_instruction_file splits (pairs of the same
    prompt on one side); each example's "output" is its chosen response.

    Returns:
    - InstructionData named after the path
    """
    val_fraction = _check_val_fraction(val_fraction)
    records = _text_records(path, ("instruction", "chosen", "rejected"),
                            '{"instruction": "...", "chosen": "...", "rejected": "..."}')
    for r, line in records:
        if r["chosen"].strip() == r["rejected"].strip():
            raise TaskError(f"{line}: 'chosen' and 'rejected' are the same response")
    pairs = [{**r, "output": r["chosen"]} for r, _ in records]
    return _split_examples(pairs, lambda e: (e["instruction"], e["input"]), val_fraction,
                           seed, os.fspath(path), [line for _, line in records])


# --- prompt templates --------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """How an example becomes a prompt: `with_input` and `without_input` are format strings
    with {instruction} (and {input}); `end` marks the end of a response for a tokenizer that
    has no end-of-text token."""

    name: str
    with_input: str
    without_input: str
    end: str


TEMPLATES = {
    # Alpaca's layout: headers a reader (and GPT-2) can see; 33 characters around the
    # instruction, 46 with an input.
    "alpaca": Template(
        "alpaca",
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
        "### Instruction:\n{instruction}\n\n### Response:\n",
        "\n\n"),
    # For small contexts (a char model with block_size 64): 7 characters (8 with an input).
    "compact": Template("compact", "Q: {instruction}\n{input}\nA: ", "Q: {instruction}\nA: ",
                        "\n\n"),
}

GPT2_EOT = b"<|endoftext|>"  # GPT-2's end-of-text token (id 50256 in its vocabulary)


def format_prompt(example, template):
    """The prompt of an example: the template filled in ("input" empty -> without_input)."""
    if example.get("input"):
        return template.with_input.format(instruction=example["instruction"],
                                          input=example["input"])
    return template.without_input.format(instruction=example["instruction"])


def default_template(block_size):
    """The template for a context of block_size tokens: "compact" below 256, else "alpaca"."""
    return TEMPLATES["compact" if block_size < 256 else "alpaca"]


def end_ids(tokenizer, template):
    """The token ids that end a response.

    A BPE tokenizer whose vocabulary holds GPT-2's <|endoftext|> ends it with that one token,
    as GPT-2 ended its documents; any other tokenizer with the template's end text ("\\n\\n").
    Encoding the text "<|endoftext|>" would not give the token (it is written in pieces),
    so it is looked up in the vocabulary.

    Returns:
    - ids: int64 array of shape (E,)
    """
    if isinstance(tokenizer, BPETokenizer):
        vocab = tokenizer.vocab
        if GPT2_EOT in vocab:
            return np.array([vocab.index(GPT2_EOT)], dtype=np.int64)
    return np.asarray(tokenizer.encode(template.end), dtype=np.int64)


# --- encoding ----------------------------------------------------------------------------------


def _encode(tokenizer, text, what):
    """tokenizer.encode(text), with a TaskError naming `what` if it cannot be encoded."""
    try:
        return np.asarray(tokenizer.encode(text), dtype=np.int64)
    except TokenizerError as e:
        raise TaskError(f"{what}: {e}") from None


def _encode_prompt(tokenizer, example, template, where):
    prompt = format_prompt(example, template)
    try:
        return np.asarray(tokenizer.encode(prompt), dtype=np.int64)
    except TokenizerError:
        pass
    # find the culprit: a field of the example, or the template's own text
    for key in ("instruction", "input"):
        _encode(tokenizer, example.get(key) or "", f"{where}, field {key!r}")
    return _encode(tokenizer, prompt, f"the template {template.name!r} (with {where})")


def encode_instruction(example, tokenizer, template, block_size, *, end=None, index=None,
                       min_tokens=MIN_CUT_TOKENS, where=None):
    """Token ids and targets of one instruction example, the loss on the response only.

    The sequence is prompt + response + end marker (N tokens); the model reads all but the
    last token and predicts each next one:

        sequence  p0 p1 p2 r0 r1 e0            (prompt p, response r, end e)
        ids       p0 p1 p2 r0 r1               (L = N - 1 <= block_size)
        targets   -1 -1 r0 r1 e0               (-1: a prompt token, not learnt)

    When N > block_size + 1, something must go:
    - an example with an input loses the end of its input, just enough for the rest to fit
      (the instruction says what to do and the response is what is learnt, so the input is
      what a long example can best spare); the cut is made at a space where there is one;
    - an example without input loses the end of its response (and the end marker: the
      response goes on, it does not end there);
    and an input or a response cut to fewer than `min_tokens` tokens has lost its point: the
    example is skipped (None). So is one whose prompt alone does not fit.

    Inputs:
    - example: dict with "instruction", "output" and optionally "input"
    - tokenizer, template: how text becomes ids, and prompts
    - block_size: the model's context length
    - end: the end marker's ids (default end_ids(tokenizer, template))
    - index: the example's number, for error messages; where: its place in a file (wins)
    - min_tokens: the least of a cut input or response worth training on

    Returns:
    - (ids, targets): int64 arrays of shape (L,), or None when the example does not fit
    """
    block_size = check_int("block_size", block_size, minimum=1)
    where = where or ("an example" if index is None else f"example {index}")
    end = end_ids(tokenizer, template) if end is None else np.asarray(end, dtype=np.int64)
    response = np.concatenate([_encode(tokenizer, example["output"], f"{where}, field 'output'"),
                               end])
    budget = block_size + 1  # tokens of prompt + response that fit
    prompt = _encode_prompt(tokenizer, example, template, where)
    text = example.get("input") or ""
    if len(prompt) + len(response) > budget and text:
        def prompt_with(n_chars):
            return _encode_prompt(tokenizer, {**example, "input": text[:n_chars].rstrip()},
                                  template, where)

        # The longest start of the input with which everything fits, by bisection (each try
        # encodes the prompt again: BPE tokens need not split where characters do).
        lo, hi = 0, len(text)  # everything fits with lo characters of input, not with hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if len(prompt_with(mid)) + len(response) <= budget:
                lo = mid
            else:
                hi = mid
        space = max(text.rfind(" ", 0, lo + 1), text.rfind("\n", 0, lo + 1))
        if space > 0:
            lo = space  # cut between words
        kept = text[:lo].rstrip()
        if len(_encode(tokenizer, kept, f"{where}, field 'input'")) < min_tokens:
            return None
        prompt = prompt_with(lo)
    elif len(prompt) + len(response) > budget:
        if budget - len(prompt) < min_tokens:
            return None
        response = response[:budget - len(prompt)]
    if len(prompt) + len(response) > budget:
        return None  # the prompt alone is too long, or a cut input still did not fit
    seq = np.concatenate([prompt, response])  # (N,)
    ids, targets = seq[:-1], seq[1:].copy()  # (L,) each
    targets[:max(len(prompt) - 1, 0)] = -1  # targets that are prompt tokens
    return ids, targets


def encode_instructions(examples, tokenizer, template, block_size, where=None):
    """encode_instruction for each example (where: their places in a file, for messages).

    Returns:
    - (encoded, n_skipped): the (ids, targets) pairs of the examples that fit, in order, and
      how many did not
    """
    end = end_ids(tokenizer, template)
    encoded = [encode_instruction(ex, tokenizer, template, block_size, end=end, index=i,
                                  where=where[i] if where else None)
               for i, ex in enumerate(examples)]
    kept = [e for e in encoded if e is not None]
    return kept, len(encoded) - len(kept)


def instruction_batch(encoded, indices):
    """A batch of instruction examples, right-padded to its longest sequence.

    Padding: ids 0 (any valid id: no real token attends to it, as attention is causal and it
    comes after them) and targets -1 (the loss ignores them).

    Inputs:
    - encoded: list of (ids, targets) pairs, as encode_instructions returns
    - indices: the B examples of the batch

    Returns:
    - (idx, targets): int64 arrays of shape (B, T), T the longest length in the batch
    """
    rows = [encoded[i] for i in indices]
    T = max(len(ids) for ids, _ in rows)
    idx = np.zeros((len(rows), T), dtype=np.int64)  # (B, T)
    targets = np.full((len(rows), T), -1, dtype=np.int64)  # (B, T)
    for b, (ids, tg) in enumerate(rows):
        idx[b, :len(ids)] = ids
        targets[b, :len(tg)] = tg
    return idx, targets


def encode_texts(texts, tokenizer, block_size, where=None):
    """Token ids of each text, cut to its first block_size tokens (a text's opening is where
    docstrings, reviews and headlines say what they are about).

    where: the place of each text, for messages ("task file 'x.csv' line 7"); default
    "example i".

    Returns:
    - list of int64 arrays of shape (L,), 1 <= L <= block_size
    """
    block_size = check_int("block_size", block_size, minimum=1)
    out = []
    for i, text in enumerate(texts):
        at = where[i] if where is not None else f"example {i}"
        ids = _encode(tokenizer, text, at)[:block_size]
        if len(ids) == 0:
            raise TaskError(f"{at} is empty once encoded; a text needs at least one token to "
                            "be classified")
        out.append(ids)
    return out


def classification_batch(encoded, labels, indices):
    """A batch of texts to classify, right-padded with 0 to its longest text.

    The classification head reads the hidden state at position lengths[b] - 1, the last real
    token, which has seen the whole text and none of the padding.

    Inputs:
    - encoded: list of int64 arrays, as encode_texts returns
    - labels: the class id of each text (a sequence of ints)
    - indices: the B examples of the batch

    Returns:
    - idx: int64 array of shape (B, T), T the longest length in the batch
    - lengths: int64 array of shape (B,), the real lengths (>= 1)
    - y: int64 array of shape (B,), the class ids
    """
    indices = np.asarray(indices, dtype=np.int64)
    lengths = np.array([len(encoded[i]) for i in indices], dtype=np.int64)  # (B,)
    idx = np.zeros((len(indices), int(lengths.max())), dtype=np.int64)  # (B, T)
    for b, i in enumerate(indices):
        idx[b, :lengths[b]] = encoded[i]
    y = np.asarray(labels, dtype=np.int64)[indices]  # (B,)
    return idx, lengths, y


# --- the tasks by name -------------------------------------------------------------------------

def number_translation(seed=0):
    """number-translation (numbers.py): English number words -> Chinese numerals. train: the
    training numbers; val: the dev numbers (they choose the checkpoint to keep); test: the
    10,009 held-out numbers, answered only at the end."""
    train, dev, test = numbers.splits(seed)
    return InstructionData([numbers.example(int(n)) for n in train],
                           [numbers.example(int(n)) for n in dev], "number-translation",
                           test=[numbers.example(int(n)) for n in test])


def spread(examples, n):
    """n of the examples spread evenly over the list (every k-th, in order), or all of them
    when n is 0 or at least their number: a quick score that sees small and large numbers
    alike, where the first n would see only the smallest."""
    if not n or n >= len(examples):
        return list(examples)
    return [examples[i * len(examples) // n] for i in range(n)]


BUILTIN_TASKS = {"classify": {"numpy-topics": numpy_topics},
                 "instruct": {"numpy-qa": numpy_qa, "numpy-summaries": numpy_summaries,
                              "number-translation": number_translation}}


def load_task(task, data, *, max_chars=None, seed=0):
    """The data of a fine-tuning task.

    Inputs:
    - task: "classify" or "instruct"
    - data: a built-in data set ("numpy-topics" to classify; "numpy-qa", "numpy-summaries" or
      "number-translation" to instruct) or the path of a file (.csv, .jsonl or .json)
    - max_chars: numpy-topics' window size (see numpy_topics); other data ignore it
    - seed: chooses the held-out examples

    Returns:
    - ClassificationData (classify) or InstructionData (instruct)
    """
    if task not in BUILTIN_TASKS:
        raise TaskError(f"unknown task {task!r}; choose 'classify' or 'instruct'")
    data = os.fspath(data)
    builtin = BUILTIN_TASKS[task]
    if data in builtin:
        if task == "classify":
            return builtin[data](max_chars=max_chars, seed=seed)
        return builtin[data](seed=seed)
    for other, names in BUILTIN_TASKS.items():
        if data in names:
            choices = " or ".join(repr(n) for n in builtin)
            raise TaskError(f"{data!r} is data for --task {other}, not {task}; for {task} use "
                            f"{choices} or a file")
    if task == "classify":
        return load_classification_file(data, seed=seed)
    return load_instruction_file(data, seed=seed)


__all__ = [
    "TaskError", "ParsedDoc", "numpy_docstrings", "parse_docstring",
    "ClassificationData", "numpy_topics", "load_classification_file", "label_ids",
    "check_labels", "InstructionData", "numpy_qa", "numpy_summaries", "load_instruction_file",
    "Template", "TEMPLATES", "format_prompt", "default_template", "end_ids",
    "encode_instruction", "encode_instructions", "instruction_batch", "encode_texts",
    "classification_batch", "exact_match", "lcs_length", "char_overlap", "load_task",
    "number_translation", "load_pairs_file", "spread",
]
