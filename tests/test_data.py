"""Tests of numpygpt.data: the character tokenizer, the corpora (downloads go to a local server),
splits and batches."""

import hashlib
import json
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
from localhttp import LocalServer

from numpygpt.data import CharTokenizer, DataError, batches, char, tokenizers
from numpygpt.data import corpora as D
from numpygpt.io import files

# --- tokenizer ---------------------------------------------------------------------------------


def test_roundtrip_unicode_and_newlines():
    text = "Hello,\nwörld!\tÉté 🌍\r\nπ ≈ 3.14\n"
    tok = CharTokenizer.from_text(text)
    assert tok.chars == "".join(sorted(set(text)))
    assert tok.vocab_size == len(set(text))
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert ids.min() >= 0 and ids.max() < tok.vocab_size
    assert tok.decode(ids) == text
    # any iterable of ints decodes, whatever its integer dtype
    assert tok.decode(list(ids)) == text
    assert tok.decode(ids.astype(np.int32)) == text
    assert tok.decode(int(i) for i in ids) == text
    assert tok.decode([]) == "" and tok.encode("").shape == (0,)


def test_char_tokenizer_equals_the_plain_reference():
    # the NumPy code-point table against a dict lookup per character, on text with newlines,
    # accents, an emoji beyond the BMP, a lone surrogate (as os.fsdecode makes) and repeats
    text = "Hello,\nwörld!\tÉté 🌍\r\nπ ≈ 3.14\udcff\n" * 3
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    np.testing.assert_array_equal(ids, char.char_encode_reference(tok.chars, text))
    assert char.char_encode_reference(tok.chars, text).dtype == ids.dtype
    assert tok.decode(ids) == char.char_decode_reference(tok.chars, ids) == text
    rng = np.random.default_rng(0)
    ids = rng.integers(0, tok.vocab_size, size=50)
    assert tok.decode(ids) == char.char_decode_reference(tok.chars, ids)


def test_constructor_takes_a_list_and_rejects_duplicates():
    assert CharTokenizer(["a", "b", "\n"]).chars == "ab\n"
    with pytest.raises(ValueError, match="unique.*'a'"):
        CharTokenizer("aba")
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer("")


def test_encode_unknown_char_names_it():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"character 'é' \(U\+00E9\) is not in the tokenizer's"):
        tok.encode("abé")
    # a newline is shown escaped, so the message stays on one line
    with pytest.raises(ValueError) as info:
        tok.encode("ab\nc")
    msg = str(info.value)
    assert "'\\n' (U+000A)" in msg and "\n" not in msg and "position 2" in msg
    # a code point far beyond the table's end is unknown too
    with pytest.raises(ValueError, match=r"U\+1F30D"):
        tok.encode("🌍")


def test_decode_out_of_range_names_the_id():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match="token id 3 is out of range"):
        tok.decode([0, 1, 3])
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        tok.decode(np.array([-1]))
    with pytest.raises(TypeError):
        tok.decode(np.array([0.0, 1.0]))


def test_save_load_roundtrip(tmp_path):
    tok = CharTokenizer.from_text("to be, or not to be:\nthat is the question. ü")
    path = tmp_path / "sub" / "tokenizer.json"
    tok.save(path)
    assert json.loads(path.read_text(encoding="utf-8")) == {"kind": "char", "chars": tok.chars}
    loaded = CharTokenizer.load(path)
    assert loaded == tok and loaded.chars == tok.chars
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temp files left


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        CharTokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json.*not valid JSON"):
        CharTokenizer.load(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"kind": "bpe", "merges": []}), encoding="utf-8")
    with pytest.raises(ValueError, match="wrong.json.*kind 'bpe'"):
        CharTokenizer.load(wrong)


@pytest.mark.parametrize(
    "d, match",
    [
        ([1, 2], "must be a dict"),
        ({"chars": "abc"}, "kind"),
        ({"kind": "char"}, "'chars' must be a string"),
        ({"kind": "char", "chars": ["a", "b"]}, "'chars' must be a string"),
        ({"kind": "char", "chars": "abca"}, "unique"),
    ],
)
def test_from_dict_validates(d, match):
    with pytest.raises(ValueError, match=match):
        CharTokenizer.from_dict(d)


def test_tokenizer_from_dict_dispatches_on_kind():
    tok = CharTokenizer("xyz")
    assert tokenizers.tokenizer_from_dict(tok.to_dict()) == tok
    with pytest.raises(ValueError, match="unknown tokenizer kind 'word'"):
        tokenizers.tokenizer_from_dict({"kind": "word"})
    with pytest.raises(ValueError, match="'kind'"):
        tokenizers.tokenizer_from_dict({"chars": "xyz"})


def test_encode_round_trips_a_megabyte():
    # (speed is measured outside the tests, ~0.03 s per MB; tests hold no absolute timings)
    rng = np.random.default_rng(0)
    alphabet = np.array(list("abcdefghij klmnopqrstuvwxyz\n.,;:!?ÄÖÜéè"))
    text = "".join(rng.choice(alphabet, size=1_000_000))
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert ids.shape == (1_000_000,) and ids.dtype == np.int64
    assert tok.decode(ids) == text


# --- numpy-docs corpus -------------------------------------------------------------------------


def test_numpy_docs_deterministic_and_sized():
    D.numpy_docs_text.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gathering the docs must not warn
        first = D.numpy_docs_text()
    D.numpy_docs_text.cache_clear()
    second = D.numpy_docs_text()
    assert first == second
    assert D.numpy_docs_text() is second  # cached in-process
    assert 1.0e6 <= len(first) <= 2.0e6
    assert "numpy.linalg.svd\n" in first and "Singular Value Decomposition" in first
    assert "numpy.ndarray.reshape\n" in first
    assert "\nnumpy._" not in first and not first.startswith("numpy._")  # no private names


def test_load_corpus_numpy_docs_roundtrips_through_tokenizer():
    text, name = D.load_corpus("numpy-docs")
    assert name == "numpy-docs"
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text


# --- shakespeare download (against a local server, never the internet) ------------------------


CONTENT = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
CONTENT_SHA = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture
def server(monkeypatch):
    # A proxy set in the environment must not intercept requests to our local server.
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    s = LocalServer({"input.txt": CONTENT})
    s.url = s.base + "/input.txt"
    yield s
    s.close()


def _files(folder):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_download_then_cache(server, tmp_path):
    cache = tmp_path / "cache"
    path = D.download_shakespeare(cache, url=server.url, sha256=CONTENT_SHA)
    assert path == cache / "tinyshakespeare.txt"
    assert path.read_bytes() == CONTENT
    assert len(server.requests) == 1
    # second call: the cached file has the right hash, so no request is made
    assert D.download_shakespeare(cache, url=server.url, sha256=CONTENT_SHA) == path
    assert len(server.requests) == 1
    assert _files(cache) == ["tinyshakespeare.txt"]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        D.download_shakespeare(cache, url=server.url, sha256="0" * 64)
    msg = str(info.value)
    assert CONTENT_SHA in msg and "0" * 64 in msg
    assert _files(cache) == []


def test_corrupted_cache_is_downloaded_again(server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tinyshakespeare.txt").write_bytes(CONTENT[:10])  # e.g. a truncated copy
    path = D.download_shakespeare(cache, url=server.url, sha256=CONTENT_SHA)
    assert path.read_bytes() == CONTENT
    assert len(server.requests) == 1


def test_corrupted_cache_and_bad_download_leave_nothing(server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tinyshakespeare.txt").write_bytes(b"garbage")
    with pytest.raises(DataError, match="sha256"):
        D.download_shakespeare(cache, url=server.url, sha256="0" * 64)
    assert _files(cache) == []


def test_unreachable_url_gives_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port that was just free: nothing listens there now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        D.download_shakespeare(cache, url=f"http://127.0.0.1:{port}/input.txt", timeout=5)
    msg = str(info.value)
    assert "download" in msg and "--data PATH" in msg
    assert str(cache / "tinyshakespeare.txt") in msg and "\n" not in msg
    assert _files(cache) == []


def test_http_error_gives_a_clear_error(server, tmp_path):
    with pytest.raises(DataError, match="could not download.*404"):
        D.download_shakespeare(tmp_path, url=server.url.replace("input", "nope"))


def test_load_corpus_shakespeare_uses_env_cache(server, tmp_path, monkeypatch):
    monkeypatch.setattr(D, "SHAKESPEARE_URL", server.url)
    monkeypatch.setattr(D, "SHAKESPEARE_SHA256", CONTENT_SHA)
    monkeypatch.setenv("NUMPYGPT_CACHE", str(tmp_path / "envcache"))
    text, name = D.load_corpus("shakespeare")
    assert (text, name) == (CONTENT.decode(), "shakespeare")
    assert (tmp_path / "envcache" / "tinyshakespeare.txt").read_bytes() == CONTENT
    # an explicit cache_dir wins over the environment
    D.load_corpus("shakespeare", cache_dir=tmp_path / "explicit")
    assert (tmp_path / "explicit" / "tinyshakespeare.txt").is_file()


def test_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMPYGPT_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert files.default_cache_dir() == tmp_path / ".cache" / "numpygpt"
    monkeypatch.setenv("NUMPYGPT_CACHE", str(tmp_path / "c"))
    assert files.default_cache_dir() == tmp_path / "c"


SHARED_COPY = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


@pytest.mark.skipif(not SHARED_COPY.is_file(), reason="no local copy of tiny shakespeare")
def test_real_shakespeare_hash_and_offline_load(tmp_path):
    data = SHARED_COPY.read_bytes()
    assert hashlib.sha256(data).hexdigest() == D.SHAKESPEARE_SHA256
    # placed in the cache by hand, it loads without the network (the URL is unreachable)
    (tmp_path / "tinyshakespeare.txt").write_bytes(data)
    text, name = D.load_corpus("shakespeare", cache_dir=tmp_path)
    assert name == "shakespeare" and text.startswith("First Citizen:")
    assert len(text) == 1115394


# --- text files --------------------------------------------------------------------------------


def test_load_corpus_from_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes("\ufeffhéllo\nworld\n".encode())  # a BOM is dropped
    assert D.load_corpus(str(path)) == ("héllo\nworld\n", str(path))
    assert D.load_corpus(path)[1] == str(path)  # a Path gives back its str


def _file_error(path):
    with pytest.raises(DataError) as info:
        D.load_corpus(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_file_errors(tmp_path):
    assert "does not exist" in _file_error(str(tmp_path / "missing.txt"))
    assert "is a folder" in _file_error(str(tmp_path))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert "is empty" in _file_error(str(empty))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("abc\xff def".encode("latin-1"))
    assert "not valid UTF-8 (byte 0xff at offset 3)" in _file_error(str(latin1))


# --- splits and batches ------------------------------------------------------------------------


def test_split_ids():
    ids = np.arange(1000)
    train, val = batches.split_ids(ids)
    assert len(train) == 900 and len(val) == 100
    assert np.array_equal(np.concatenate([train, val]), ids)
    train, val = batches.split_ids(np.arange(7), val_fraction=0.25)
    assert len(train) == int(7 * 0.75) and len(val) == 7 - int(7 * 0.75)
    with pytest.raises(ValueError, match="val_fraction"):
        batches.split_ids(ids, val_fraction=1.0)


def test_get_batch_shapes_shift_and_windows():
    ids = np.arange(100, dtype=np.int32)  # id == position, so windows are easy to check
    B, T = 16, 8
    x, y = batches.get_batch(ids, T, B, np.random.default_rng(0))
    assert x.shape == y.shape == (B, T)
    assert x.dtype == y.dtype == np.int64
    assert np.array_equal(x, x[:, :1] + np.arange(T))  # contiguous windows
    assert np.array_equal(y, x + 1)  # y is x shifted by one token
    assert x.min() >= 0 and y.max() <= 99


def test_get_batch_uses_every_start_and_nothing_past_the_end():
    ids = np.arange(10)
    x, y = batches.get_batch(ids, 4, 2000, np.random.default_rng(1))
    assert set(x[:, 0].tolist()) == set(range(6))  # starts 0..n-T-1
    assert y.max() == 9
    # exactly T + 1 tokens: a single possible window
    x, y = batches.get_batch(np.arange(5), 4, 3, np.random.default_rng(2))
    assert np.array_equal(x, np.tile(np.arange(4), (3, 1))) and np.array_equal(y, x + 1)


def test_get_batch_deterministic_under_seed():
    ids = np.random.default_rng(123).integers(0, 50, size=500)
    a = batches.get_batch(ids, 16, 4, np.random.default_rng(7))
    b = batches.get_batch(ids, 16, 4, np.random.default_rng(7))
    c = batches.get_batch(ids, 16, 4, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_get_batch_errors():
    with pytest.raises(DataError, match=r"too short for block_size=8.*8 tokens.*9"):
        batches.get_batch(np.arange(8), 8, 2, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        batches.get_batch(np.arange(100), 8, 2, np.random.RandomState(0))


def test_prepare_data():
    text = "the quick brown fox jumps over the lazy dog\n" * 25  # 1100 chars
    tok, train, val = batches.prepare_data(text, block_size=8)
    assert tok == CharTokenizer.from_text(text)
    assert len(train) == 990 and len(val) == 110
    assert train.dtype == val.dtype == np.int64
    assert tok.decode(np.concatenate([train, val])) == text
    # a given tokenizer is reused as is
    big = CharTokenizer.from_text(text + "XYZ")
    tok2, train2, _ = batches.prepare_data(text, 8, tokenizer=big)
    assert tok2 is big and big.decode(train2) == text[:990]


def test_prepare_data_errors():
    with pytest.raises(DataError, match=r"too short for block_size=16.*90 train and 10 validation"):
        batches.prepare_data("a" * 100, block_size=16)
    with pytest.raises(DataError, match="'!'"):
        batches.prepare_data("hello!" * 100, 8, tokenizer=CharTokenizer("ehlo"))
    with pytest.raises(DataError, match="empty"):
        batches.prepare_data("", 8)
