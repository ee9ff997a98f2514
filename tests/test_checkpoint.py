"""Checkpoints: exact round trip, atomic saves, and clear refusals of damaged or unsafe files."""

import io
import json
import zipfile

import numpy as np
import pytest

from numpygpt.io.checkpoint import (
    CheckpointError,
    checkpoint_exists,
    load_checkpoint,
    save_checkpoint,
    validate_params,
)

CONFIG = {"n_layer": 2, "n_head": 2, "n_embd": 8, "block_size": 16, "vocab_size": 11}
TOKENIZER = {"type": "char", "chars": list("abc \n\u00e9\u4e2d")}


def make_params(rng):
    return {
        "wte.weight": rng.standard_normal((11, 8)).astype(np.float32),
        "wpe.weight": rng.standard_normal((16, 8)).astype(np.float32),
        "h.0.attn.c_attn.weight": rng.standard_normal((8, 24)).astype(np.float32),
        "h.0.ln_1.bias": rng.standard_normal(8).astype(np.float32),
        "scalar": np.array(0.5, dtype=np.float32),
    }


def save_simple(out, **kw):
    args = dict(config=CONFIG, tokenizer=TOKENIZER, params=make_params(np.random.default_rng(0)))
    args.update(kw)
    return save_checkpoint(out, **args)


def valid_meta_bytes():
    meta = {"format": "numpygpt-checkpoint", "version": 1, "config": {}, "tokenizer": {},
            "optimizer": None, "train_state": {}}
    return np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)


def write_raw_npz(path, **arrays):
    """Write an npz by hand (pickle allowed), as a foreign or malicious file would be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, allow_pickle=True, **arrays)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --- round trip -----------------------------------------------------------------------------


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    params = make_params(rng)
    params["half"] = np.arange(5, dtype=np.float16)  # each array keeps its own dtype
    params["double"] = rng.standard_normal((2, 3))  # float64
    slots = {slot: {n: rng.standard_normal(a.shape).astype(np.float32) for n, a in params.items()}
             for slot in ("m", "v")}
    hyper = {"name": "adamw", "lr": 3e-4, "betas": [0.9, 0.95], "t": 7}
    train_rng = np.random.default_rng(123)
    train_rng.standard_normal(10)  # advance it, so the state is not the seed's
    state = train_rng.bit_generator.state
    train_state = {"step": np.int64(7), "rng": state, "best_val": 1.25, "note": None}

    path = save_checkpoint(tmp_path / "out", config=CONFIG, tokenizer=TOKENIZER, params=params,
                           optimizer={"hyper": hyper, "slots": slots}, train_state=train_state)
    assert path == tmp_path / "out" / "ckpt.npz"
    assert checkpoint_exists(tmp_path / "out") and checkpoint_exists(path)
    # The human-readable copies exist and agree, but loading does not need them.
    assert json.loads((tmp_path / "out" / "config.json").read_text("utf-8")) == CONFIG
    assert json.loads((tmp_path / "out" / "tokenizer.json").read_text("utf-8")) == TOKENIZER
    expected = train_rng.standard_normal(5)  # what the original draws next
    expected_int = train_rng.integers(2**62)
    (tmp_path / "out" / "config.json").unlink()
    (tmp_path / "out" / "tokenizer.json").unlink()

    for where in (tmp_path / "out", path, str(path)):
        ck = load_checkpoint(where)
        assert ck.config == CONFIG and ck.tokenizer == TOKENIZER
        assert ck.params.keys() == params.keys()
        for n, a in params.items():
            assert ck.params[n].dtype == a.dtype and ck.params[n].shape == a.shape
            np.testing.assert_array_equal(ck.params[n], a)
        assert ck.optimizer["hyper"] == hyper
        assert ck.optimizer["slots"].keys() == slots.keys()
        for slot, tensors in slots.items():
            for n, a in tensors.items():
                got = ck.optimizer["slots"][slot][n]
                assert got.dtype == a.dtype
                np.testing.assert_array_equal(got, a)
        assert ck.train_state["step"] == 7 and ck.train_state["note"] is None
        assert ck.train_state["rng"] == state

        # A generator restored from the saved state continues exactly where the original was.
        g = np.random.default_rng()
        g.bit_generator.state = ck.train_state["rng"]
        np.testing.assert_array_equal(g.standard_normal(5), expected)
        assert g.integers(2**62) == expected_int


def test_rng_state_has_big_ints_that_survive(tmp_path):
    state = np.random.default_rng(123).bit_generator.state
    assert max(state["state"]["state"], state["state"]["inc"]) > 2**64  # PCG64: 128-bit ints
    save_simple(tmp_path, train_state={"rng": state})
    assert load_checkpoint(tmp_path).train_state["rng"] == state


def test_no_optimizer_and_defaults(tmp_path):
    save_simple(tmp_path)
    ck = load_checkpoint(tmp_path)
    assert ck.optimizer is None and ck.train_state == {}


def test_object_arrays_refused_on_save(tmp_path):
    bad = {"wte.weight": np.array([{"a": 1}], dtype=object)}
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(tmp_path, config=CONFIG, tokenizer=TOKENIZER, params=bad)
    with pytest.raises(TypeError, match="object"):
        save_simple(tmp_path, optimizer={"hyper": {}, "slots": {"m": bad}})
    assert not (tmp_path / "ckpt.npz").exists() and leftovers(tmp_path) == []


def test_non_json_metadata_refused_on_save(tmp_path):
    with pytest.raises(TypeError, match="train_state"):
        save_simple(tmp_path, train_state={"rng": np.random.default_rng(0)})


# --- atomicity ------------------------------------------------------------------------------


def test_saving_twice_leaves_no_temp_files(tmp_path):
    save_simple(tmp_path, train_state={"step": 1})
    save_simple(tmp_path, train_state={"step": 2})
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz", "config.json",
                                                         "tokenizer.json"]
    assert load_checkpoint(tmp_path).train_state == {"step": 2}


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_simple(tmp_path, train_state={"step": 1})
    before = path.read_bytes()

    def savez_that_dies(file, *args, **kwds):
        file.write(b"PK\x03\x04 half a zip")  # partial bytes reach the temp file first
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", savez_that_dies)
    with pytest.raises(OSError, match="disk full"):
        save_simple(tmp_path, train_state={"step": 2})
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    assert load_checkpoint(tmp_path).train_state == {"step": 1}


# --- damaged and unsafe files ---------------------------------------------------------------


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at") as e:
        load_checkpoint(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "ckpt.npz") in str(e.value)
    assert "python -m numpygpt train --out" in str(e.value)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nowhere" / "ckpt.npz")
    assert not checkpoint_exists(tmp_path / "nowhere")


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "npy"])
def test_damaged_file(tmp_path, damage):
    path = save_simple(tmp_path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(1000))
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a plain .npy renamed to .npz
        buf = io.BytesIO()
        np.save(buf, np.zeros(3))
        path.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg


def test_corrupted_member_detected(tmp_path):
    # Flip bytes inside a stored array: the zip CRC check catches it.
    path = save_simple(tmp_path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("param/wte.weight.npy")
    start = info.header_offset + 30 + len(info.filename) + 200  # past the headers
    data[start:start + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path)


class Bomb:
    """Unpickling this creates a marker file; a safe loader must never let that happen."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_refused_and_never_executed(tmp_path):
    marker = tmp_path / "BOOM"
    path = tmp_path / "out" / "ckpt.npz"
    write_raw_npz(path, **{"meta.json": valid_meta_bytes(),
                           "param/wte.weight": np.array([Bomb(marker)], dtype=object)})
    with pytest.raises(CheckpointError, match="pickle") as e:
        load_checkpoint(path.parent)
    assert str(path) in str(e.value)
    assert not marker.exists()

    # The bomb is armed: an unsafe load would have run it. (Proves the test means something.)
    with np.load(path, allow_pickle=True) as z:
        z["param/wte.weight"]
    assert marker.exists()


def test_pickled_plain_object_refused(tmp_path):
    path = tmp_path / "ckpt.npz"
    write_raw_npz(path, **{"meta.json": valid_meta_bytes(),
                           "param/x": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match="pickled data; refusing"):
        load_checkpoint(path)


def test_missing_meta(tmp_path):
    path = tmp_path / "ckpt.npz"
    write_raw_npz(path, **{"param/x": np.zeros(3)})
    with pytest.raises(CheckpointError, match="meta.json") as e:
        load_checkpoint(tmp_path)
    assert str(path) in str(e.value)


def _meta_npz(path, meta):
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode("utf-8")
    write_raw_npz(path, **{"meta.json": np.frombuffer(raw, dtype=np.uint8),
                           "param/x": np.zeros(3)})


@pytest.mark.parametrize("change, match", [
    ({"format": "something-else"}, "format"),
    ({"version": 2}, "unsupported version"),
    ({"version": "1"}, "unsupported version"),
    ({"config": None}, "'config'"),
    ({"train_state": [1, 2]}, "'train_state'"),
    ({"optimizer": 3}, "optimizer"),
])
def test_bad_meta(tmp_path, change, match):
    meta = json.loads(valid_meta_bytes().tobytes())
    meta.update(change)
    _meta_npz(tmp_path / "ckpt.npz", meta)
    with pytest.raises(CheckpointError, match=match) as e:
        load_checkpoint(tmp_path)
    assert str(tmp_path / "ckpt.npz") in str(e.value)


@pytest.mark.parametrize("key", ["config", "tokenizer", "train_state"])
def test_meta_missing_key(tmp_path, key):
    meta = json.loads(valid_meta_bytes().tobytes())
    del meta[key]
    _meta_npz(tmp_path / "ckpt.npz", meta)
    with pytest.raises(CheckpointError, match=f"'{key}' is missing"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b"[1, 2]"])
def test_meta_not_json_object(tmp_path, raw):
    _meta_npz(tmp_path / "ckpt.npz", raw)
    with pytest.raises(CheckpointError, match="meta.json|format"):
        load_checkpoint(tmp_path)


def test_unexpected_entry(tmp_path):
    write_raw_npz(tmp_path / "ckpt.npz", **{"meta.json": valid_meta_bytes(), "stray": np.ones(2)})
    with pytest.raises(CheckpointError, match="unexpected entry 'stray'"):
        load_checkpoint(tmp_path)


# --- validate_params ------------------------------------------------------------------------


def test_validate_params_ok():
    params = make_params(np.random.default_rng(0))
    validate_params(params, {n: a.shape for n, a in params.items()}, dtype=np.float32)


def test_validate_params_lists_every_problem():
    params = make_params(np.random.default_rng(0))
    expected = {n: a.shape for n, a in params.items()}
    expected["lm_head.weight"] = (8, 11)          # missing from params
    del expected["scalar"]                        # unexpected in params
    expected["wte.weight"] = (50257, 8)           # wrong shape
    with pytest.raises(CheckpointError) as e:
        validate_params(params, expected, what="checkpoint 'out/ckpt.npz'")
    msg = str(e.value)
    assert msg.startswith("checkpoint 'out/ckpt.npz'")
    assert "missing 1: lm_head.weight" in msg
    assert "unexpected 1: scalar" in msg
    assert "wte.weight expected (50257, 8), got (11, 8)" in msg
    assert "\n" not in msg


def test_validate_params_dtype_and_many():
    params = {f"p{i}": np.zeros(2, dtype=np.float64) for i in range(9)}
    with pytest.raises(CheckpointError, match="wrong dtype 9 \\(expected float32\\)"):
        validate_params(params, {n: (2,) for n in params}, dtype=np.float32)
    with pytest.raises(CheckpointError, match=r"missing 9: p0, p1, p2, p3, p4, \.\.\. \(4 more\)"):
        validate_params({}, {n: (2,) for n in params})
