"""Tests of numpygpt.data.bpe: GPT-2 compatible byte-level BPE (files, encoding, training), and its
use through prepare_data, train() and the command line."""

import json
from collections import Counter
from contextlib import redirect_stdout
from io import StringIO
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpygpt.data import CharTokenizer, DataError, prepare_data, tokenizer_from_dict
from numpygpt.data.bpe import BPETokenizer, bytes_to_unicode, merge, pre_split

TEXT = ("The cat sat on the mat. The dog sat on the log; the cat and the dog are friends.\n"
        "Ça va? Très bien, merci! Straße, naïve café, 東京 and 🙂🙂 emoji 42 and 1234.\n"
        "A tokenizer turns text into integers, and byte-pair encoding learns which pieces of\n"
        "text deserve an integer of their own: frequent words, common endings like -ing and\n"
        "-tion, spaces before words, and digits. Rare words are spelled out in smaller parts;\n"
        "nothing is ever unknown, because every byte is a token. Quick brown foxes jumped over\n"
        "lazy dogs while the zebra, the yak and the wolf watched quietly from the hills.\n") * 8

# --- a hand-made pair of files in GPT-2's format -----------------------------------------------
#
# GPT-2 numbers its 256 byte tokens in the order of its printable-byte table: first the bytes
# that are printable Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ'), then the 68 others, in byte order,
# written as the characters U+0100 onwards. Known GPT-2 ids: '!' = 0, 'e' = 68, 'h' = 71,
# 't' = 83, '©' = 102, 'Ã' = 127, 'Ġ' (the space) = 220, 'Ċ' (the newline) = 198.
_PRINTABLE = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
_OTHERS = [b for b in range(256) if b not in _PRINTABLE]
BASE = [chr(b) for b in _PRINTABLE] + [chr(0x100 + k) for k in range(len(_OTHERS))]
# The first merges of GPT-2's own merges.txt (ids 256..262 as in GPT-2), plus 'Ã ©', the two
# bytes of 'é' (C3 A9), which in this file get id 263.
MERGES_TXT = "#version: 0.2\nĠ t\nĠ a\nh e\ni n\nr e\no n\nĠt he\nÃ ©\n"
MERGED = ["Ġt", "Ġa", "he", "in", "re", "on", "Ġthe", "Ã©"]
VOCAB = {s: i for i, s in enumerate(BASE + MERGED)}


@pytest.fixture
def gpt2_files(tmp_path):
    vocab_path, merges_path = tmp_path / "vocab.json", tmp_path / "merges.txt"
    vocab_path.write_text(json.dumps(VOCAB), encoding="utf-8")  # \u escapes, as GPT-2's file
    merges_path.write_text(MERGES_TXT, encoding="utf-8")
    return vocab_path, merges_path


@pytest.fixture(scope="module")
def gpt2_tok(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    (folder / "vocab.json").write_text(json.dumps(VOCAB), encoding="utf-8")
    (folder / "merges.txt").write_text(MERGES_TXT, encoding="utf-8")
    return BPETokenizer.from_gpt2_files(folder / "vocab.json", folder / "merges.txt")


@pytest.fixture(scope="module")
def trained():
    return BPETokenizer.train(TEXT, vocab_size=400)


def reference_gpt2_encode(text):
    """GPT-2's algorithm on strings, written independently: per chunk, map bytes to characters,
    merge the lowest-ranked adjacent pair everywhere until none is left, look tokens up."""
    ranks = {tuple(line.split(" ")): r for r, line in enumerate(MERGES_TXT.splitlines()[1:])}
    table = bytes_to_unicode()
    ids = []
    for chunk in pre_split(text):
        word = [table[b] for b in chunk.encode("utf-8")]
        while True:
            pairs = [(ranks[p], p) for p in pairwise(word) if p in ranks]
            if not pairs:
                break
            (a, b) = min(pairs)[1]
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == [a, b]:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        ids += [VOCAB[s] for s in word]
    return ids


def reference_train(text, vocab_size):
    """Plain BPE training: recount every pair after every merge (slow, obviously right)."""
    words = Counter(tuple(c.encode("utf-8")) for c in pre_split(text))
    vocab = [bytes([b]) for b in range(256)]
    merges = []
    while len(vocab) < vocab_size:
        counts = Counter()
        for w, n in words.items():
            for p in pairwise(w):
                counts[p] += n
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))  # most frequent, then smallest
        joined = vocab[pair[0]] + vocab[pair[1]]
        if joined in vocab:
            new = vocab.index(joined)
        else:
            new = len(vocab)
            vocab.append(joined)
        merges.append(pair)
        merged = Counter()
        for w, n in words.items():
            merged[tuple(merge(list(w), pair, new))] += n
        words = merged
    return vocab, merges


# --- the pieces --------------------------------------------------------------------------------


def test_byte_table_is_gpt2s():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[0] == "Ā"
    assert table[ord("a")] == "a" and table[0xC3] == "Ã" and table[0xAD] == "Ń"
    assert [VOCAB[c] for c in "!ehtĠĊ©Ã"] == [0, 68, 71, 83, 220, 198, 102, 127]


def test_pre_split_follows_gpt2s_regex():
    assert pre_split("Hello world's 42!!  \n x") == \
        ["Hello", " world", "'s", " 42", "!!", "  \n", " x"]
    assert pre_split("I'll say: naïve 東京🙂 12abc") == \
        ["I", "'ll", " say", ":", " naïve", " 東京", "🙂", " 12", "abc"]
    assert pre_split("") == []


def test_merge_replaces_left_to_right_without_overlap():
    assert merge([1, 2, 3, 1, 2], (1, 2), 7) == [7, 3, 7]
    assert merge([1, 1, 1], (1, 1), 9) == [9, 1]
    assert merge([5], (5, 5), 9) == [5] and merge([], (1, 2), 3) == []


# --- GPT-2's files ---------------------------------------------------------------------------


def test_gpt2_files_encode_to_the_ids_worked_out_by_hand(gpt2_files):
    tok = BPETokenizer.from_gpt2_files(*gpt2_files)
    assert tok.vocab_size == 264
    # "the" -> t, he (no 't he' merge here) ; " the" -> Ġt, h, e -> Ġt, he -> Ġthe (rank 6) ;
    # " é" -> Ġ, Ã, © -> Ġ, Ã© (no 'Ġ Ã' merge) ; "!" -> ! ; "\n" -> Ċ
    ids = tok.encode("the the é!\n")
    assert ids.dtype == np.int64
    assert ids.tolist() == [83, 258, 262, 220, 263, 0, 198]
    assert tok.decode(ids) == "the the é!\n"
    # rank, not frequency, decides: " then" merges Ġ t first, then h e, then Ġt he
    assert tok.encode(" then").tolist() == [262, VOCAB["n"]]
    assert tok.merges[:3] == [(220, 83), (220, 64), (71, 68)]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_gpt2_files_encode_like_gpt2s_string_algorithm(gpt2_tok, text):
    assert gpt2_tok.encode(text).tolist() == reference_gpt2_encode(text)


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet="the aon\nréÃ©", max_size=40))
def test_gpt2_files_on_text_dense_in_merges(gpt2_tok, text):
    assert gpt2_tok.encode(text).tolist() == reference_gpt2_encode(text)
    assert gpt2_tok.decode(gpt2_tok.encode(text)) == text


def test_the_constructor_matches_the_files(gpt2_tok):
    # the same tokenizer from bytes and id pairs worked out by hand: 'a' = 64, 'i' = 72,
    # 'n' = 77, 'o' = 78, 'r' = 81 in GPT-2's byte order
    vocab = [bytes([b]) for b in (*_PRINTABLE, *_OTHERS)]
    vocab += [b" t", b" a", b"he", b"in", b"re", b"on", b" the", "é".encode()]
    merges = [(220, 83), (220, 64), (71, 68), (72, 77), (81, 68), (78, 77), (256, 258),
              (127, 102)]
    assert BPETokenizer(vocab, merges) == gpt2_tok


def test_save_gpt2_files_writes_gpt2s_format(gpt2_files, tmp_path):
    tok = BPETokenizer.from_gpt2_files(*gpt2_files)
    vocab_path, merges_path = tok.save_gpt2_files(tmp_path / "export")
    assert json.loads(vocab_path.read_text(encoding="utf-8")) == VOCAB
    assert merges_path.read_text(encoding="utf-8") == MERGES_TXT
    assert BPETokenizer.from_gpt2_files(vocab_path, merges_path) == tok


def test_trained_tokenizer_survives_gpt2_files(trained, tmp_path):
    tok = BPETokenizer.from_gpt2_files(*trained.save_gpt2_files(tmp_path))
    assert tok == trained
    assert tok.encode(TEXT).tolist() == trained.encode(TEXT).tolist()


def test_merges_file_without_version_line_and_with_blank_lines(gpt2_files):
    vocab_path, merges_path = gpt2_files
    merges_path.write_text(MERGES_TXT.replace("#version: 0.2\n", "") + "\n\n", encoding="utf-8")
    assert BPETokenizer.from_gpt2_files(vocab_path, merges_path).encode(" the").tolist() == [262]


# --- round trips -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_round_trips(trained, text):
    ids = trained.encode(text)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert ((ids >= 0) & (ids < trained.vocab_size)).all()
    assert trained.decode(ids) == text
    assert "".join(pre_split(text)) == text


def test_decode_accepts_lists_and_any_int_dtype(trained):
    ids = trained.encode(TEXT[:200])
    for form in (ids, list(ids), ids.astype(np.int32), (int(i) for i in ids)):
        assert trained.decode(form) == TEXT[:200]
    assert trained.decode([]) == "" and trained.encode("").shape == (0,)


def test_a_split_multibyte_character_decodes_to_the_replacement_char():
    tok = BPETokenizer.train("", vocab_size=256)  # bytes only
    ids = tok.encode("é🙂")  # 2 + 4 bytes
    assert ids.tolist() == list("é🙂".encode())
    assert tok.decode(ids[:1]) == "\ufffd"
    assert tok.decode(ids[:4]) == "é\ufffd"


def test_save_load_and_tokenizer_from_dict(trained, tmp_path):
    d = trained.to_dict()
    assert d["kind"] == "bpe"
    assert json.loads(json.dumps(d)) == d  # JSON-able
    again = tokenizer_from_dict(json.loads(json.dumps(d)))
    assert isinstance(again, BPETokenizer) and again == trained
    assert hash(again) == hash(trained)
    trained.save(tmp_path / "tok.json")
    loaded = BPETokenizer.load(tmp_path / "tok.json")
    assert loaded == trained and loaded.encode(TEXT).tolist() == trained.encode(TEXT).tolist()
    assert repr(loaded) == "BPETokenizer(vocab_size=400, merges=144)"
    assert loaded != CharTokenizer.from_text(TEXT)


# --- training ----------------------------------------------------------------------------------


def test_training_is_deterministic_and_reaches_vocab_size(trained):
    again = BPETokenizer.train(TEXT, vocab_size=400)
    assert again == trained and again.to_dict() == trained.to_dict()
    assert trained.vocab_size == 400 and len(trained.merges) == 144
    assert trained.vocab[:256] == [bytes([b]) for b in range(256)]  # ids 0..255 are the bytes
    assert all(trained.vocab[256 + k] == trained.vocab[a] + trained.vocab[b]
               for k, (a, b) in enumerate(trained.merges))


@pytest.mark.parametrize("vocab_size", [256, 300, 420])
def test_training_matches_plain_recounting(vocab_size):
    vocab, merges = reference_train(TEXT, vocab_size)
    tok = BPETokenizer.train(TEXT, vocab_size)
    assert tok.merges == merges and tok.vocab == vocab


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ab cé", min_size=1, max_size=12), min_size=1, max_size=12),
       st.integers(256, 320))
def test_training_matches_plain_recounting_on_random_texts(words, vocab_size):
    text = " ".join(words * 2)
    vocab, merges = reference_train(text, vocab_size)
    tok = BPETokenizer.train(text, vocab_size)
    assert tok.merges == merges and tok.vocab == vocab
    assert tok.decode(tok.encode(text)) == text


def test_merges_compress_and_more_merges_compress_more():
    n_bytes = len(TEXT.encode("utf-8"))
    lengths = [len(BPETokenizer.train(TEXT, v).encode(TEXT)) for v in (256, 300, 400, 600)]
    assert lengths[0] == n_bytes
    assert lengths[1] < n_bytes and lengths == sorted(lengths, reverse=True)
    assert lengths[-1] < n_bytes / 3


def test_a_short_text_gives_a_smaller_vocabulary():
    tok = BPETokenizer.train("abab", vocab_size=1000)  # pairs: ab, ba -> ab, then ab ab
    assert tok.vocab_size == 258 and tok.vocab[256:] == [b"ab", b"abab"]


# --- errors ------------------------------------------------------------------------------------


def test_bad_arguments(trained):
    with pytest.raises(ValueError, match=">= 256"):
        BPETokenizer.train(TEXT, vocab_size=255)
    with pytest.raises(TypeError, match="str"):
        BPETokenizer.train(b"bytes", vocab_size=300)
    with pytest.raises(TypeError, match="str"):
        trained.encode(b"bytes")
    with pytest.raises(ValueError, match="out of range"):
        trained.decode([0, 400])
    with pytest.raises(ValueError, match="out of range"):
        trained.decode([-1])
    with pytest.raises(TypeError, match="integers"):
        trained.decode([1.5])
    with pytest.raises(ValueError, match="surrogate"):
        trained.encode("a\ud800b")


def test_bad_constructor_arguments():
    base = [bytes([b]) for b in range(256)]
    with pytest.raises(ValueError, match="256 single bytes"):
        BPETokenizer(base[1:], [])
    with pytest.raises(ValueError, match="same bytes"):
        BPETokenizer(base + [b"a"], [])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        BPETokenizer(base, [(97, 98)])
    with pytest.raises(ValueError, match="outside"):
        BPETokenizer(base + [b"ab"], [(97, 999)])
    with pytest.raises(ValueError, match="repeats"):
        BPETokenizer(base + [b"ab"], [(97, 98), (97, 98)])


@pytest.mark.parametrize("case, needle", [
    ("missing vocab", "does not exist"),
    ("missing merges", "does not exist"),
    ("bad json", "not valid JSON"),
    ("vocab not a dict", "JSON object"),
    ("ids with a gap", "each used once"),
    ("unknown token in merges", "'Ġz' is not in the vocabulary"),
    ("merged token not in vocab", "merged token 'ab' is not in the vocabulary"),
    ("malformed merge line", "two tokens"),
    ("character outside the byte table", "not one of GPT-2's 256"),
    ("a byte missing", "lacks 1 of the 256"),
])
def test_bad_gpt2_files(case, needle, gpt2_files, tmp_path):
    vocab_path, merges_path = gpt2_files
    vocab = dict(VOCAB)
    if case == "missing vocab":
        vocab_path = tmp_path / "nope.json"
    elif case == "missing merges":
        merges_path = tmp_path / "nope.txt"
    elif case == "bad json":
        vocab_path.write_text('{"a": 1,', encoding="utf-8")
    elif case == "vocab not a dict":
        vocab_path.write_text("[1, 2]", encoding="utf-8")
    elif case == "ids with a gap":
        vocab["Ġz"] = 1000
    elif case == "unknown token in merges":
        merges_path.write_text(MERGES_TXT + "Ġz oo\n", encoding="utf-8")
    elif case == "merged token not in vocab":
        merges_path.write_text(MERGES_TXT + "a b\n", encoding="utf-8")
    elif case == "malformed merge line":
        merges_path.write_text(MERGES_TXT + "a b c\n", encoding="utf-8")
    elif case == "character outside the byte table":
        vocab["x☃"] = len(vocab)
    elif case == "a byte missing":
        vocab = {s: i for i, s in enumerate(s for s in VOCAB if s != "Ā")}
    if vocab != VOCAB:
        vocab_path.write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(ValueError, match=needle) as info:
        BPETokenizer.from_gpt2_files(vocab_path, merges_path)
    assert "\n" not in str(info.value)


def test_bad_tokenizer_files_and_dicts(trained, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        BPETokenizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        BPETokenizer.load(tmp_path / "bad.json")
    d = trained.to_dict()
    with pytest.raises(ValueError, match="kind 'bpe'"):
        BPETokenizer.from_dict({**d, "kind": "char"})
    with pytest.raises(ValueError, match="list of strings"):
        BPETokenizer.from_dict({**d, "vocab": "abc"})
    with pytest.raises(ValueError, match="merges"):
        BPETokenizer.from_dict({**d, "merges": None})
    with pytest.raises(ValueError, match="pair of token ids"):
        BPETokenizer.from_dict({**d, "merges": [[1, 2, 3]]})
    (tmp_path / "t.json").write_text(json.dumps({**d, "merges": [[0, 10**6]]}), "utf-8")
    with pytest.raises(ValueError, match="t.json.*outside"):
        BPETokenizer.load(tmp_path / "t.json")


# --- in the training pipeline ----------------------------------------------------------------


def test_prepare_data_builds_a_bpe_tokenizer():
    tok, train_ids, val_ids = prepare_data(TEXT, 8, tokenizer_kind="bpe", vocab_size=300)
    assert isinstance(tok, BPETokenizer) and tok.vocab_size == 300
    # the merges come from the training part of the text only
    assert tok == BPETokenizer.train(TEXT[:int(len(TEXT) * 0.9)], 300)
    assert tok.decode(np.concatenate([train_ids, val_ids])) == TEXT
    char_tok, _, _ = prepare_data(TEXT, 8)  # the default is unchanged
    assert isinstance(char_tok, CharTokenizer)
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        prepare_data(TEXT, 8, tokenizer_kind="word")
    with pytest.raises(DataError, match="too short"):
        prepare_data("hello world " * 3, 32, tokenizer_kind="bpe", vocab_size=300)


def test_train_config_checks_the_tokenizer_fields():
    from numpygpt.training.train import TrainConfig

    assert TrainConfig().tokenizer == "char" and TrainConfig().vocab_size == 512
    with pytest.raises(ValueError, match="tokenizer must be one of char, bpe; got 'word'"):
        TrainConfig(tokenizer="word")
    with pytest.raises(ValueError, match="vocab-size must be >= 256"):
        TrainConfig(tokenizer="bpe", vocab_size=100)
    TrainConfig(tokenizer="char", vocab_size=100)  # a char tokenizer ignores vocab_size


def test_train_with_bpe_end_to_end(tmp_path):
    from numpygpt.io.checkpoint import load_checkpoint
    from numpygpt.models.gpt import GPT, GPTConfig
    from numpygpt.training.train import TrainConfig, train

    data = tmp_path / "data.txt"
    data.write_text(TEXT, encoding="utf-8")
    cfg = TrainConfig.preset_config("tiny", data=str(data), out=str(tmp_path / "run"),
                                    max_iters=5, eval_iters=1, tokenizer="bpe", vocab_size=300)
    result = train(cfg, progress=False)
    assert isinstance(result.tokenizer, BPETokenizer) and result.tokenizer.vocab_size == 300
    assert result.model.config.vocab_size == 300

    ckpt = load_checkpoint(tmp_path / "run")
    tok = tokenizer_from_dict(ckpt.tokenizer)
    assert tok == result.tokenizer
    assert ckpt.config["train"]["tokenizer"] == "bpe"
    model = GPT(GPTConfig.from_dict(ckpt.config["model"]), dtype=np.float32)
    model.load_params(ckpt.params)
    model.eval()
    out = model.generate(tok.encode("The cat")[None, :], 10, seed=0)
    text = tok.decode(out[0])
    assert text.startswith("The cat") and isinstance(text, str)


def test_cli_trains_with_bpe(tmp_path):
    from numpygpt.cli import main

    data = tmp_path / "data.txt"
    data.write_text(TEXT, encoding="utf-8")
    buf = StringIO()
    with redirect_stdout(buf):
        code = main(["train", "--preset", "tiny", "--data", str(data), "--out",
                     str(tmp_path / "run"), "--max-iters", "3", "--eval-iters", "1",
                     "--tokenizer", "bpe", "--vocab-size", "300", "--no-progress",
                     "--sample-tokens", "10"])
    assert code == 0
    assert "--- sample" in buf.getvalue()
    buf = StringIO()
    with redirect_stdout(buf):
        code = main(["sample", "--ckpt", str(tmp_path / "run"), "--prompt", "Très",
                     "--tokens", "5", "--seed", "0"])
    assert code == 0 and buf.getvalue().startswith("Très")
