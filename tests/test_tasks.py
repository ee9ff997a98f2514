"""Tests of numpygpt.finetune.tasks: the fine-tuning data (built-in and from files), the
templates, the encoded examples and batches, the scores, and every
user error with its one-line message."""

import json
import random
import re

import numpy as np
import pytest

from numpygpt.data import CharTokenizer, numpy_docs_text
from numpygpt.data.bpe import BPETokenizer
from numpygpt.errors import UserError
from numpygpt.finetune import docstrings as D
from numpygpt.finetune import scores as S
from numpygpt.finetune import tasks as K
from numpygpt.finetune.tasks import TEMPLATES, TaskError

ALPACA, COMPACT = TEMPLATES["alpaca"], TEMPLATES["compact"]


@pytest.fixture(scope="module")
def char_tok():
    return CharTokenizer.from_text(numpy_docs_text())


@pytest.fixture(scope="module")
def tiny_bpe():
    return BPETokenizer.train("the cat sat on the mat. " * 20 + "Q: A: ### \n\n", 280)


@pytest.fixture(scope="module")
def eot_bpe(tiny_bpe):
    # GPT-2's vocabulary ends with <|endoftext|>, a token no merge makes
    return BPETokenizer(tiny_bpe.vocab + [K.GPT2_EOT], tiny_bpe.merges)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_task_error_is_a_user_error_and_a_value_error():
    assert issubclass(TaskError, UserError) and issubclass(TaskError, ValueError)


# --- the NumPy docstrings ----------------------------------------------------------------------


def test_numpy_docstrings_and_their_namespaces():
    docs = K.numpy_docstrings()  # numpy_docs_text() joins them: the corpus of `train`
    assert K.numpy_docstrings() is docs  # cached
    by_name = {d.name: d for d in docs}
    assert by_name["numpy.linalg.norm"].namespaces == ("numpy.linalg",)
    # a method MaskedArray only inherits from ndarray belongs to numpy, where it is defined
    assert all("numpy.ma" not in d.namespaces for d in docs if d.name.startswith("numpy.ndarray."))


@pytest.mark.parametrize("line, expected", [
    ("add(x1, x2, /, out=None, *, where=True, dtype=None, subok=True[, signature])", True),
    ("a.copy(order='C')", True),
    ("int8.bit_count() -> int", True),
    ("busday_count( begindates, enddates, out=None )", True),
    ("sum(a) of the elements (see notes)", False),
    ("Return the sum (of the elements).", False),
    ("f(x", False),
])
def test_is_signature(line, expected):
    assert D.is_signature(line) is expected


def test_parse_docstring_skips_signatures_directives_and_code():
    doc = ("frob(a, b=None,\n     c=1)\n\nFrobnicate an array\nalong an axis.\n\n"
           ".. versionadded:: 2.0\n\n.. note::\n\n    Not prose.\n\n>>> frob(1)\n\n"
           "More prose here.\nStill it.\nParameters\n----------\na : int\n    The input.")
    parsed = D.parse_docstring(doc)
    assert parsed.summary == "Frobnicate an array along an axis."
    assert parsed.description == ["More prose here. Still it."]  # the header ends it
    assert D.parse_docstring("dtype(x)\n--\n\nMake a dtype.").summary == "Make a dtype."
    assert D.parse_docstring(".. warning::\n\n    Nothing else.") == D.ParsedDoc("", [])


def test_windows_cut_between_words():
    parsed = D.ParsedDoc("Compute the one-dimensional discrete Fourier Transform.",
                         ["This function computes the n-point DFT with the FFT.",
                          "x " + "y" * 30])
    wins = D.text_windows(parsed, 20, 10)
    assert wins == ["Compute the", "one-dimensional", "discrete Fourier", "Transform. This",
                    "function computes", "the n-point DFT with", "the FFT. x",
                    "yyyyyyyyyyyyyyyyyyyy", "yyyyyyyyyy"]
    assert all(len(w) <= 20 for w in wins)
    assert D.text_windows(parsed, 20, 3) == wins[:3]
    # a short last window says nothing and is dropped (unless it is the only one)
    assert D.text_windows(D.ParsedDoc("Pad an array. Ok", []), 14, 5) == ["Pad an array."]
    assert D.text_windows(D.ParsedDoc("Pad.", []), 60, 5) == ["Pad."]


# --- numpy-topics ------------------------------------------------------------------------------


@pytest.mark.parametrize("max_chars", [None, 60])
def test_numpy_topics_balanced_deterministic_and_split_by_docstring(max_chars):
    data = K.numpy_topics(max_chars=max_chars)
    assert data.name == "numpy-topics"
    assert data.labels == sorted(data.labels) == list(K.TOPIC_LABELS)
    assert K.numpy_topics(max_chars=max_chars) == data  # deterministic
    assert K.numpy_topics(max_chars=max_chars, seed=1) != data
    for split in (data.train, data.val):  # balanced: the same count for every class
        counts = {label: sum(lab == label for _, lab in split) for label in data.labels}
        assert len(set(counts.values())) == 1 and min(counts.values()) > 0
    n_train, n_val = len(data.train) // 7, len(data.val) // 7
    assert n_train >= 10 and n_val >= 3 and 0.15 <= n_val / (n_train + n_val) <= 0.3
    if np.__version__.startswith("2.4."):  # the sizes numpy_topics' docstring reports
        assert (n_train, n_val) == ((14, 4) if max_chars is None else (54, 16))
    train, val = {t for t, _ in data.train}, {t for t, _ in data.val}
    assert len(train) == len(data.train) and len(val) == len(data.val)  # no duplicates
    assert not train & val
    for text, label in data.train + data.val:
        assert not text.startswith((label, "np.", "numpy"))  # the label is not given away
        if max_chars is not None:
            assert 0 < len(text) <= max_chars and text == " ".join(text.split())
    # split by docstring: no docstring has a text on each side
    docs = {d.name: d for d in K.numpy_docstrings()}
    if max_chars is None:
        sides = {t: side for side, texts in (("train", train), ("val", val)) for t in texts}
        assert all(t in {d.doc for d in docs.values()} for t in sides)
    else:
        for d in docs.values():
            wins = set(D.text_windows(D.parse_docstring(d.doc), max_chars, K.TOPIC_WINDOWS))
            assert not (wins & train and wins & val), d.name


def test_numpy_topics_labels_come_from_the_defining_namespace():
    data = K.numpy_topics(max_chars=None)
    label_of = dict(data.train + data.val)
    docs = {d.doc: d for d in K.numpy_docstrings()}
    for text, label in label_of.items():
        # one labelled home only (numpy.char.rfind is numpy.strings.rfind: numpy.strings)
        topics = {K._topic(ns) for ns in docs[text].namespaces}
        assert topics - {None} == {label}
    by_name = {d.name: d for d in K.numpy_docstrings()}
    assert by_name["numpy.random.Generator.normal"].namespaces == ("numpy.random",)
    assert K._topic("numpy.polynomial.chebyshev") == "numpy.polynomial"
    assert K._topic("numpy.char") is None
    # np.cos and np.ma.cos share a docstring: neither label would be right, so it is left out
    shared = [d for d in K.numpy_docstrings() if d.name in ("numpy.cos", "numpy.ma.sin")]
    assert len(shared) == 2 and all(d.namespaces[:1] == ("numpy",) for d in shared)
    assert not any(d.doc in label_of for d in shared)
    held_out = 4 / (14 + 4)  # numpy.fft, the smallest class: 18 docstrings
    assert 0.2 <= held_out <= 0.25


# --- numpy-qa and numpy-summaries --------------------------------------------------------------


def test_numpy_qa_examples():
    data = K.numpy_qa()
    assert data.name == "numpy-qa" and K.numpy_qa() == data
    every = data.train + data.val
    norm = [e for e in every if e["instruction"] == "What does `numpy.linalg.norm` do?"]
    assert norm == [{"instruction": "What does `numpy.linalg.norm` do?", "input": "",
                     "output": "Matrix or vector norm."}]
    ufunc = [e for e in every if e["instruction"] == "What does `numpy.cos` do?"]
    assert ufunc[0]["output"] == "Cosine element-wise."  # not its signature line "cos(x, /, ..."
    assert any(e["instruction"] == "What does `numpy.array` do?"  # a 3-line signature skipped
               and e["output"] == "Create an array." for e in every)
    for e in every:
        assert re.fullmatch(r"What does `numpy\.[\w.]+` do\?", e["instruction"])
        out = e["output"]
        assert out and out == out.strip() and "\n" not in out and len(out) <= 200
        assert not D.is_signature(out)
    assert 0.08 <= len(data.val) / len(every) <= 0.12
    assert not {e["output"] for e in data.train} & {e["output"] for e in data.val}


def test_numpy_summaries_examples():
    data = K.numpy_summaries()
    assert data.name == "numpy-summaries" and K.numpy_summaries(seed=0) == data
    assert K.numpy_summaries(seed=3) != data
    for e in data.train + data.val:
        assert e["instruction"] == K.SUMMARISE
        assert e["input"] and e["output"]
        assert "----" not in e["input"] and ">>>" not in e["input"]  # prose, no sections
    fft = [e for e in data.train + data.val
           if e["output"] == "Compute the one-dimensional discrete Fourier Transform."]
    assert fft and fft[0]["input"].startswith("This function computes the one-dimensional")
    assert not {e["output"] for e in data.train} & {e["output"] for e in data.val}


# --- files of classification examples ----------------------------------------------------------


def test_classification_csv(tmp_path):
    rows = ["id,text,label,note"]
    rows += [f'{i},"text {i}, with a comma",{"ab"[i % 2]},x' for i in range(20)]
    rows.insert(5, "")  # a blank line is skipped
    rows.append('99,"a text\non two lines",b,y')
    rows.append('100,"text 0, with a comma",b,z')  # seen before: on the same side
    path = write(tmp_path, "reviews.csv", "\n".join(rows) + "\n")
    data = K.load_classification_file(path)
    assert data.name == str(path) and data.labels == ["a", "b"]
    assert K.load_classification_file(path) == data
    assert len(data.train) + len(data.val) == 22
    assert {lab for _, lab in data.train} == {"a", "b"}
    assert sum(lab == "a" for _, lab in data.val) == 2  # 20% of 10 texts
    assert ("a text\non two lines", "b") in data.train + data.val
    train_texts = {t for t, _ in data.train}
    assert not train_texts & {t for t, _ in data.val}
    lines = dict(zip(data.train + data.val, data.train_lines + data.val_lines, strict=True))
    assert lines["text 0, with a comma", "a"] == "line 2"
    assert lines["a text\non two lines", "b"] == "line 23"  # where the quoted row starts
    assert lines["text 0, with a comma", "b"] == "line 25"
    assert K.label_ids(data) == {"a": 0, "b": 1}


def test_classification_jsonl_and_json_array(tmp_path):
    records = [{"text": f"t{i}", "label": i % 3, "extra": None} for i in range(9)]
    jl = write(tmp_path, "d.jsonl", "\n".join(json.dumps(r) for r in records) + "\n\n")
    arr = write(tmp_path, "d.json", json.dumps(records))
    a, b = K.load_classification_file(jl, seed=1), K.load_classification_file(arr, seed=1)
    assert a.labels == b.labels == ["0", "1", "2"]  # integer labels become names
    assert a.train == b.train and a.val == b.val
    assert a.train_lines[0].startswith("line") and b.train_lines[0].startswith("item")
    assert K.load_classification_file(jl, val_fraction=0.0).val == []


def test_check_labels_names_the_line(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\nx,a\ny,b\nz,c\n")
    data = K.load_classification_file(path, val_fraction=0.0)
    K.check_labels(data.train, ["a", "b", "c"], "here")
    with pytest.raises(TaskError, match=r"^task file '.*d.csv': label 'c' on line 4 is not one "
                                        r"of the 2 classes the model was trained on: 'a', 'b'$"):
        K.check_labels(data.train, ["a", "b"], f"task file '{path}'", data.train_lines)
    with pytest.raises(TaskError, match="label 'b' on example 1 .* 12 classes.*'x0', .*and 2 "
                                        "more"):
        K.check_labels([("t", "x0"), ("t", "b")], [f"x{i}" for i in range(12)], "numpy-topics")


@pytest.mark.parametrize("name, content, needle", [
    ("d.csv", "", r"is empty"),
    ("d.csv", " \n\n", r"is empty"),
    ("d.csv", "text,label\n", r"has no examples"),
    ("d.csv", "text,topic\nx,a\n", r"has no 'label' column \(its header: 'text', 'topic'\)"),
    ("d.csv", "body,label\nx,a\n", r"has no 'text' column"),
    ("d.csv", "text,label\nx,a\ny,b,c\n", r"line 3 has 3 fields but the header has 2"),
    ("d.csv", "text,label\nx,a\ny,\n", r"line 3 has an empty 'label'"),
    ("d.csv", "text,label\nx,a\nx,a\n", r"has a single class \('a'\); classification needs"),
    ("d.jsonl", '{"text": "x", "label": "a"}\n\n{"text": "y", "label": "b"\n',
     r"line 3 is not valid JSON"),
    ("d.jsonl", '{"text": "x", "label": "a"}\n{"text": "y"}\n', r"line 2 has no 'label'"),
    ("d.jsonl", '{"text": 3, "label": "a"}\n', r"line 1 has a non-text \(int\) 'text'"),
    ("d.jsonl", '["x", "a"]\n', r"line 1 is not a JSON object"),
    ("d.json", '{"text": "x", "label": "a"}', r"has a single class"),
    ("d.json", '[{"text": "x", "label": "a"}, {"label": "b"}]', r"item 2 has no 'text'"),
    ("d.tsv", "text\tlabel\n", r"has the extension '.tsv'; use .csv or .jsonl or .json"),
])
def test_classification_file_errors(tmp_path, name, content, needle):
    path = write(tmp_path, name, content)
    with pytest.raises(TaskError) as info:
        K.load_classification_file(path)
    message = str(info.value)
    assert re.search(needle, message) and "\n" not in message
    assert repr(str(path)) in message  # names the file


def test_classification_file_missing_folder_or_too_big(tmp_path, monkeypatch):
    with pytest.raises(TaskError, match=r"task file '.*nope.csv' does not exist"):
        K.load_classification_file(tmp_path / "nope.csv")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(TaskError, match=r"is a folder, not a regular file"):
        K.load_classification_file(tmp_path / "dir.csv")
    path = write(tmp_path, "big.csv", "text,label\n" + "x,a\ny,b\n" * 50)
    monkeypatch.setattr(K, "MAX_TASK_BYTES", 100)
    with pytest.raises(TaskError, match=r"big.csv' is 411 bytes, more than the 100 bytes"):
        K.load_classification_file(path)


# --- files of instructions ---------------------------------------------------------------------


def test_instruction_file(tmp_path):
    lines = [json.dumps({"instruction": f"say {i}", "output": f"{i}", "extra": 1})
             for i in range(18)]
    lines.insert(3, "")
    lines.append(json.dumps({"instruction": "add", "input": "2 and 3", "output": "5"}))
    lines.append(json.dumps({"instruction": "add", "input": "2 and 3", "output": "five"}))
    # a line separator inside a JSON string does not end the line (str.splitlines would cut)
    lines.append(json.dumps({"instruction": "sep", "output": "a\u2028b"}, ensure_ascii=False))
    path = write(tmp_path, "inst.jsonl", "\r\n".join(lines))
    data = K.load_instruction_file(path)
    assert data.name == str(path) and K.load_instruction_file(path) == data
    assert len(data.train) + len(data.val) == 21 and len(data.val) == 2
    assert {"instruction": "say 0", "input": "", "output": "0"} in data.train + data.val
    assert {"instruction": "sep", "input": "", "output": "a\u2028b"} in data.train + data.val
    adds = [e["output"] for e in data.train if e["instruction"] == "add"]
    assert adds in ([], ["5", "five"])  # the same prompt stays on one side


@pytest.mark.parametrize("content, needle", [
    ("", r"is empty"),
    ("\n \n", r"is empty"),
    ('{"instruction": "a", "output": "b"}\n\n{"instruction": "a", "output": \n',
     r"line 3 is not valid JSON"),
    ('{"instruction": "a"}\n', r"line 1 has no 'output'"),
    ('{"output": "a"}\n', r"line 1 has no 'instruction'"),
    ('{"instruction": "a", "output": "b", "input": 3}\n', r"line 1 has a non-text \(int\) 'input'"),
    ('{"instruction": "a", "output": ["b"]}\n', r"line 1 has a non-text \(list\) 'output'"),
    ('{"instruction": " ", "output": "b"}\n', r"line 1 has an empty 'instruction'"),
    ('"just a string"\n', r"line 1 is not a JSON object"),
    ('{"instruction": "a", "instruction": "b", "output": "c"}',
     r"gives the key 'instruction' twice"),
])
def test_instruction_file_errors(tmp_path, content, needle):
    path = write(tmp_path, "inst.jsonl", content)
    with pytest.raises(TaskError) as info:
        K.load_instruction_file(path)
    assert re.search(needle, str(info.value)) and repr(str(path)) in str(info.value)


def test_load_task(tmp_path):
    assert K.load_task("classify", "numpy-topics", max_chars=60) == K.numpy_topics(60)
    assert K.load_task("instruct", "numpy-qa") == K.numpy_qa()
    assert K.load_task("instruct", "numpy-summaries", seed=2) == K.numpy_summaries(seed=2)
    path = write(tmp_path, "x.csv", "text,label\nx,a\ny,b\n")
    assert K.load_task("classify", path).labels == ["a", "b"]
    path = write(tmp_path, "x.jsonl", '{"instruction": "a", "output": "b"}\n')
    assert K.load_task("instruct", str(path)).train[0]["output"] == "b"
    with pytest.raises(TaskError, match=r"'numpy-qa' is data for --task instruct, not classify; "
                                        r"for classify use 'numpy-topics' or a file"):
        K.load_task("classify", "numpy-qa")
    with pytest.raises(TaskError, match=r"for instruct use 'numpy-qa' or 'numpy-summaries'"):
        K.load_task("instruct", "numpy-topics")
    with pytest.raises(TaskError, match=r"unknown task 'generate'"):
        K.load_task("generate", "numpy-qa")
    with pytest.raises(TaskError, match=r"'numpy-qa.jsonl' does not exist"):
        K.load_task("instruct", "numpy-qa.jsonl")


# --- templates and end markers -----------------------------------------------------------------


def test_templates():
    ex = {"instruction": "Add them.", "input": "2 3", "output": "5"}
    no_input = {"instruction": "Add them.", "input": "", "output": "5"}
    assert K.format_prompt(ex, ALPACA) == (
        "### Instruction:\nAdd them.\n\n### Input:\n2 3\n\n### Response:\n")
    assert K.format_prompt(no_input, ALPACA) == "### Instruction:\nAdd them.\n\n### Response:\n"
    assert K.format_prompt(ex, COMPACT) == "Q: Add them.\n2 3\nA: "
    assert K.format_prompt({"instruction": "{x}"}, COMPACT) == "Q: {x}\nA: "  # no re-format
    assert ALPACA.end == COMPACT.end == "\n\n"
    assert K.default_template(64) is COMPACT and K.default_template(255) is COMPACT
    assert K.default_template(256) is ALPACA and K.default_template(1024) is ALPACA


def test_end_ids(char_tok, tiny_bpe, eot_bpe):
    for tok in (char_tok, tiny_bpe):  # no end-of-text token: the template's end text
        ids = K.end_ids(tok, COMPACT)
        assert ids.dtype == np.int64 and tok.decode(ids) == "\n\n"
    ids = K.end_ids(eot_bpe, ALPACA)
    assert ids.tolist() == [eot_bpe.vocab_size - 1] and eot_bpe.decode(ids) == "<|endoftext|>"


# --- encoding instructions ---------------------------------------------------------------------


def check_encoded(tok, example, template, enc, end_text):
    """ids = prompt + response + end minus the last token; -1 exactly over the prompt."""
    ids, targets = enc
    prompt = tok.encode(K.format_prompt(example, template))
    seq = np.concatenate([prompt, tok.encode(example["output"]), tok.encode(end_text)])
    assert ids.dtype == targets.dtype == np.int64 and ids.shape == targets.shape
    np.testing.assert_array_equal(ids, seq[:-1])
    assert (targets[:len(prompt) - 1] == -1).all() and (targets[len(prompt) - 1:] >= 0).all()
    np.testing.assert_array_equal(targets[len(prompt) - 1:], seq[len(prompt):])


@pytest.mark.parametrize("template", [ALPACA, COMPACT])
def test_encode_instruction_loss_on_the_response_only(char_tok, template):
    ex = {"instruction": "What does `numpy.fft.fft` do?", "input": "",
          "output": "Compute the one-dimensional discrete Fourier Transform."}
    enc = K.encode_instruction(ex, char_tok, template, 256)
    check_encoded(char_tok, ex, template, enc, "\n\n")
    ids, targets = enc
    assert char_tok.decode(targets[targets >= 0]) == ex["output"] + "\n\n"


def test_encode_instruction_with_an_end_of_text_token(tiny_bpe, eot_bpe):
    ex = {"instruction": "the cat", "input": "sat on", "output": "the mat."}
    ids, targets = K.encode_instruction(ex, eot_bpe, ALPACA, 64)
    eot = eot_bpe.vocab_size - 1
    assert targets[-1] == eot and eot not in ids
    n_prompt = len(eot_bpe.encode(K.format_prompt(ex, ALPACA)))
    assert (targets == -1).sum() == n_prompt - 1
    assert eot_bpe.decode(targets[n_prompt - 1:-1]) == "the mat."
    check_encoded(tiny_bpe, ex, ALPACA, K.encode_instruction(ex, tiny_bpe, ALPACA, 64), "\n\n")


def test_encode_instruction_cuts_the_input_first(char_tok):
    ex = {"instruction": "Sum up.", "input": "alpha beta gamma delta epsilon zeta eta theta",
          "output": "Greek letters."}
    # "Q: Sum up.\n" + input + "\nA: " + output + "\n\n": 15 + 45 + 16 = 76 characters
    assert K.encode_instruction(ex, char_tok, COMPACT, 75) is not None  # fits exactly
    ids, targets = K.encode_instruction(ex, char_tok, COMPACT, 50)  # room for 20 of input
    assert len(ids) <= 50
    cut = {**ex, "input": "alpha beta gamma"}  # "alpha beta gamma del", cut between words
    check_encoded(char_tok, cut, COMPACT, (ids, targets), "\n\n")
    # the whole response is still there, and the end marker with it
    assert char_tok.decode(targets[targets >= 0]) == "Greek letters.\n\n"
    # an input cut to fewer than min_tokens (8) tokens has lost its point: skipped
    assert K.encode_instruction(ex, char_tok, COMPACT, 36) is None  # only "alpha" left
    ids, _ = K.encode_instruction(ex, char_tok, COMPACT, 36, min_tokens=5)
    assert char_tok.decode(ids).startswith("Q: Sum up.\nalpha\nA: Greek")


def test_encode_instruction_cuts_a_long_response_or_skips(char_tok):
    ex = {"instruction": "Spell.", "input": "", "output": "abcdefghijklmnopqrstuvwxyz"}
    prompt = K.format_prompt(ex, COMPACT)  # "Q: Spell.\nA: ", 13 characters
    ids, targets = K.encode_instruction(ex, char_tok, COMPACT, 24)
    assert len(ids) == 24 and char_tok.decode(ids) == prompt + "abcdefghijk"
    assert char_tok.decode(targets[targets >= 0]) == "abcdefghijkl"  # no end: the text goes on
    assert K.encode_instruction(ex, char_tok, COMPACT, 20) is not None  # 8 response tokens
    assert K.encode_instruction(ex, char_tok, COMPACT, 19) is None  # only 7
    long_q = {"instruction": "x" * 100, "input": "", "output": "y"}
    assert K.encode_instruction(long_q, char_tok, COMPACT, 64) is None  # the prompt alone


def test_encode_instructions_counts_what_it_skips(char_tok):
    examples = [{"instruction": "a", "input": "", "output": "b"},
                {"instruction": "a" * 80, "input": "", "output": "b"},
                {"instruction": "c", "input": "", "output": "d"}]
    encoded, skipped = K.encode_instructions(examples, char_tok, COMPACT, 32)
    assert skipped == 1 and len(encoded) == 2
    np.testing.assert_array_equal(encoded[1][0], char_tok.encode("Q: c\nA: d\n"))


@pytest.mark.parametrize("field, example", [
    ("instruction", {"instruction": "Qu'est-ce qu'un été ?", "output": "x"}),
    ("input", {"instruction": "a", "input": "☃", "output": "x"}),
    ("output", {"instruction": "a", "input": "", "output": "naïve"}),
])
def test_a_character_the_vocabulary_lacks(field, example):
    tok = CharTokenizer("".join(sorted(set("QA: #\n`'?abcdefghijklmnopqrstuvwxyz,."))))
    with pytest.raises(TaskError, match=rf"^example 7, field '{field}': character '.' "
                                        r"\(U\+[0-9A-F]{4}\) is not in the tokenizer's"):
        K.encode_instructions([{"instruction": "a", "output": "b"}] * 7 + [example], tok,
                              COMPACT, 64)


def test_a_template_the_vocabulary_cannot_write():
    tok = CharTokenizer("QA: \nabc")  # no '#'
    with pytest.raises(TaskError, match=r"^the template 'alpaca' \(with example 0\): character "
                                        r"'#'"):
        K.encode_instructions([{"instruction": "a", "output": "b"}], tok, ALPACA, 64)


def test_instruction_batch_pads_with_0_and_minus_1():
    encoded = [(np.array([5, 6, 7]), np.array([-1, 7, 8])), (np.array([1]), np.array([2])),
               (np.array([3, 4]), np.array([-1, 9]))]
    idx, targets = K.instruction_batch(encoded, [1, 0, 2])
    assert idx.dtype == targets.dtype == np.int64
    np.testing.assert_array_equal(idx, [[1, 0, 0], [5, 6, 7], [3, 4, 0]])
    np.testing.assert_array_equal(targets, [[2, -1, -1], [-1, 7, 8], [-1, 9, -1]])
    idx, targets = K.instruction_batch(encoded, [2])
    assert idx.shape == targets.shape == (1, 2)  # padded to the longest in the batch only


# --- encoding texts to classify ----------------------------------------------------------------


def test_encode_texts_and_classification_batch(char_tok):
    texts = ["Matrix or vector norm.", "fft", "Return a masked array."]
    encoded = K.encode_texts(texts, char_tok, 8)
    assert [e.tolist() for e in encoded] == [char_tok.encode(t[:8]).tolist() for t in texts]
    assert all(e.dtype == np.int64 for e in encoded)
    idx, lengths, y = K.classification_batch(encoded, [2, 0, 1], [1, 2])
    assert idx.dtype == lengths.dtype == y.dtype == np.int64
    np.testing.assert_array_equal(lengths, [3, 8])
    np.testing.assert_array_equal(y, [0, 1])
    np.testing.assert_array_equal(idx[0], np.r_[char_tok.encode("fft"), [0] * 5])
    np.testing.assert_array_equal(idx[1], char_tok.encode("Return a"))
    with pytest.raises(TaskError, match=r"^example 1 is empty once encoded"):
        K.encode_texts(["a", ""], char_tok, 8)
    with pytest.raises(TaskError, match=r"^example 0: character '☃'"):
        K.encode_texts(["☃"], char_tok, 8)


# --- scores ------------------------------------------------------------------------------------


def test_exact_match():
    assert S.exact_match("  Matrix or\nvector  norm. ", "Matrix or vector norm.")
    assert not S.exact_match("Matrix or vector norm", "Matrix or vector norm.")
    assert not S.exact_match("matrix or vector norm.", "Matrix or vector norm.")
    assert S.exact_match("", " \n")


@pytest.mark.parametrize("pred, ref, expected", [
    ("abc", "abc", 1.0),
    ("", "", 1.0),
    ("abc", "", 0.0),
    ("abc", "xyz", 0.0),
    ("abcd", "acbd", 2 * 3 / 8),  # LCS "abd" (or "acd")
    ("kitten", "sitting", 2 * 4 / 13),  # LCS "ittn"
    ("a  b\n", "a b", 1.0),  # whitespace normalised as in exact_match
])
def test_char_overlap(pred, ref, expected):
    assert S.char_overlap(pred, ref) == pytest.approx(expected, abs=1e-12)
    assert S.char_overlap(ref, pred) == pytest.approx(expected, abs=1e-12)


def test_lcs_length_equals_the_plain_table():
    def plain(a, b):
        t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                t[i + 1][j + 1] = t[i][j] + 1 if x == y else max(t[i][j + 1], t[i + 1][j])
        return t[-1][-1]

    rng = random.Random(0)
    for _ in range(200):
        a = "".join(rng.choice("abcé ") for _ in range(rng.randint(0, 12)))
        b = "".join(rng.choice("abcé ") for _ in range(rng.randint(0, 12)))
        assert S.lcs_length(a, b) == plain(a, b), (a, b)
    long = "x" * 5000
    assert S.char_overlap(long, long + "y") == 1.0  # both cut to MAX_SCORED_CHARS
