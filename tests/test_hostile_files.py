"""Hostile and careless files: each is built in tmp_path and must be refused with one clear
line (a CheckpointError or a FileError, both UserErrors), quickly, before it costs memory, and
without printing anything of a file outside the folder it was found in.

Families (issue 10): JSON depth and size; only regular files inside the folder; checkpoint
zip entries (duplicates, declared sizes and shapes, compression, dtypes); non-finite weights;
a tokenizer that does not fit the model; hostile safetensors headers.
"""

import io
import json
import os
import struct
import threading
import time
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

from numpygpt.cli import main
from numpygpt.data import CharTokenizer, load_gpt2_tokenizer
from numpygpt.data.bpe import BPETokenizer, bytes_to_unicode
from numpygpt.errors import UserError
from numpygpt.io import hf_gpt2 as hf
from numpygpt.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from numpygpt.io.files import FileError, read_json
from numpygpt.models.gpt import GPT, GPTConfig, param_shapes
from numpygpt.training.run import model_from_checkpoint

st = pytest.importorskip("safetensors.numpy")

CFG = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8)
CHARS = "abcdefghij"  # 10 characters: CFG's vocabulary
DEEP = "[" * 100_000  # RecursionError in json.loads, before numpygpt bounded it
SECRET = "root:$6$SECRET-HASH:19000:0:99999:7:::"


def one_line_error(fn, *args, error=UserError, match=None, seconds=2.0, **kwargs):
    """Call fn, expecting `error` with a one-line message, raised within `seconds`."""
    start = time.perf_counter()
    with pytest.raises(error, match=match) as info:
        fn(*args, **kwargs)
    assert time.perf_counter() - start < seconds
    msg = str(info.value)
    assert "\n" not in msg and SECRET not in msg and "SECRET" not in msg, msg
    return msg


def peak_memory(fn):
    """(peak bytes traced while fn runs, the exception it raised)."""
    tracemalloc.start()
    try:
        fn()
    except UserError as e:
        raised = e
    else:
        raised = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, raised


def returns_quickly(fn, seconds=5.0):
    """Run fn in a daemon thread: a read that blocks (a FIFO) must not hang the suite."""
    result = {}

    def run():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the read blocked"
    return result.get("error")


# --- builders ---------------------------------------------------------------------------------


def good_checkpoint(out, chars=CHARS, cfg=CFG):
    """A real numpygpt checkpoint (the sample command can use it). Returns ckpt.npz's path."""
    model = GPT(cfg, seed=0)
    return save_checkpoint(out, config={"model": cfg.to_dict()},
                           tokenizer=CharTokenizer(chars).to_dict(), params=model.params)


def read_entries(path):
    """The raw entries of an .npz (by name, without .npy) as np.load reads them."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_npz(path, arrays):
    """Write arrays as an .npz by hand, as a foreign or hostile tool would."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def meta_bytes(config=None, tokenizer=None):
    meta = {"format": "numpygpt-checkpoint", "version": 1, "config": config or {},
            "tokenizer": tokenizer or {}, "optimizer": None, "train_state": {}}
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def npy(shape, descr="<f4", data=b""):
    """.npy bytes whose header declares `shape` and `descr`, followed by `data` (any length)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def npy_of(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def write_zip(path, entries, compression=zipfile.ZIP_STORED):
    """entries: list of (name, bytes); names may repeat (zipfile warns, and writes both)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
        with zipfile.ZipFile(path, "w", compression) as z:
            for name, data in entries:
                z.writestr(name, data)
    return path


def meta_entry():
    return ("meta.json.npy", npy_of(meta_bytes()))


def patch_central(path, name, offset, fmt, value):
    """Overwrite a field of `name`'s central directory record (a lie the zip tells)."""
    data = bytearray(path.read_bytes())
    i = 0
    while (i := data.find(b"PK\x01\x02", i + 1)) > 0:
        n = struct.unpack("<H", data[i + 28:i + 30])[0]
        if bytes(data[i + 46:i + 46 + n]) == name.encode():
            struct.pack_into(fmt, data, i + offset, value)
            path.write_bytes(bytes(data))
            return
    raise AssertionError(f"no central record for {name}")


def gpt2_folder(folder, cfg=CFG, tensors=None, config=None, vocab=True):
    """A GPT-2 folder written with safetensors directly (as other tools write them), with a
    tokenizer of cfg.vocab_size tokens (the 256 bytes, then merges) if cfg allows one."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if tensors is None:
        tensors = {"transformer." + k: rng.normal(0, 0.3, s).astype(np.float32)
                   for k, s in param_shapes(cfg).items()}
    st.save_file(tensors, str(folder / "model.safetensors"))
    d = {"model_type": "gpt2", "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size,
         "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head}
    (folder / "config.json").write_text(json.dumps(d if config is None else config))
    if vocab:
        write_tokenizer_files(folder, cfg.vocab_size - 256)
    return folder


def write_tokenizer_files(folder, n_merges):
    """vocab.json + merges.txt with the 256 byte tokens and `n_merges` merges ("a" + "a"...)."""
    byte_chars = [bytes_to_unicode()[b] for b in range(256)]
    merges = [("a" * k, "a") for k in range(1, n_merges + 1)]
    vocab = byte_chars + [a + b for a, b in merges]
    (folder / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n"
                                                                  for a, b in merges))


# dropout 0.1: what a config.json without resid_pdrop means
HF_CFG = GPTConfig(vocab_size=260, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.1)


def safetensors_file(path, header, data=b"", pad=True):
    """A safetensors file written by hand: 8-byte length, the JSON header, the data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


# --- 1. JSON: depth, size, duplicate keys ------------------------------------------------------


def test_deep_json_in_checkpoint_meta(tmp_path):
    path = tmp_path / "ckpt.npz"
    write_npz(path, {"meta.json": np.frombuffer(DEEP.encode(), np.uint8)})
    msg = one_line_error(load_checkpoint, path, error=CheckpointError)
    assert "nested more than 32 levels" in msg and "meta.json" in msg


def test_deep_json_in_hf_config(tmp_path):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    (folder / "config.json").write_text(DEEP)
    msg = one_line_error(GPT.from_pretrained, folder, error=CheckpointError)
    assert "config.json" in msg and "nested" in msg


def test_deep_json_in_vocab_json(tmp_path):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    (folder / "vocab.json").write_text('{"a": ' * 100_000)
    msg = one_line_error(load_gpt2_tokenizer, folder, error=CheckpointError)
    assert "vocab.json" in msg and "nested" in msg


def test_deep_json_in_a_tokenizer_file(tmp_path):
    (tmp_path / "tok.json").write_text(DEEP)
    one_line_error(BPETokenizer.load, tmp_path / "tok.json", error=FileError, match="nested")
    one_line_error(CharTokenizer.load, tmp_path / "tok.json", error=FileError, match="nested")


def test_depth_is_bounded_below_the_recursion_limit(tmp_path):
    (tmp_path / "a.json").write_text("[" * 33 + "]" * 33)  # json.loads parses it fine
    one_line_error(read_json, tmp_path / "a.json", "file", match="more than 32 levels")
    (tmp_path / "b.json").write_text("[" * 32 + "]" * 32)
    assert read_json(tmp_path / "b.json", "file") is not None


def test_config_json_too_large(tmp_path):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    with open(folder / "config.json", "r+b") as f:  # a sparse 2 MB file: nothing on disk
        f.truncate(2 << 20)
    msg = one_line_error(GPT.from_pretrained, folder, error=CheckpointError)
    assert "2.1 MB, more than the 1.0 MB" in msg


@pytest.mark.parametrize("name", ["vocab.json", "merges.txt"])
def test_tokenizer_files_too_large_are_not_read(tmp_path, name):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    with open(folder / name, "r+b") as f:
        f.truncate(100 << 30)  # 100 GB, sparse: reading it would take minutes and all RAM
    peak, err = peak_memory(lambda: load_gpt2_tokenizer(folder))
    assert isinstance(err, CheckpointError) and "107.4 GB, more than the 33.6 MB" in str(err)
    assert peak < 10 << 20


def test_meta_json_declaring_too_much_is_refused_before_reading(tmp_path):
    path = write_zip(tmp_path / "ckpt.npz", [("meta.json.npy", npy((40_000_000,), "|u1"))])
    msg = one_line_error(load_checkpoint, path, error=CheckpointError)
    assert "meta.json is 40.0 MB, more than the 33.6 MB" in msg


def test_duplicate_keys_in_json(tmp_path):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    text = (folder / "config.json").read_text()
    (folder / "config.json").write_text(text[:-1] + ', "n_layer": 12}')  # n_layer twice
    msg = one_line_error(GPT.from_pretrained, folder, error=CheckpointError)
    assert "gives the key 'n_layer' twice" in msg


def test_integer_of_5000_digits_in_json(tmp_path):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    (folder / "config.json").write_text('{"n_embd": ' + "7" * 5000 + "}")
    msg = one_line_error(GPT.from_pretrained, folder, error=CheckpointError)
    assert "not valid JSON" in msg and "digits" in msg


# --- 2. only regular files, inside the folder ---------------------------------------------------


@pytest.fixture
def secret(tmp_path):
    """A file outside the model folder, standing for /etc/shadow."""
    path = tmp_path / "shadow"
    path.write_text(SECRET + "\n")
    return path


@pytest.mark.parametrize("name", ["merges.txt", "vocab.json"])
def test_tokenizer_symlink_out_of_the_folder(tmp_path, secret, name, capsys):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    (folder / name).unlink()
    (folder / name).symlink_to(secret)
    msg = one_line_error(load_gpt2_tokenizer, folder, error=CheckpointError)
    assert "symbolic link" in msg and "outside" in msg
    assert main(["sample", "--ckpt", str(folder), "--tokens", "2"]) == 1
    out = capsys.readouterr()
    assert "symbolic link" in out.err and SECRET[:10] not in out.err + out.out


def test_etc_shadow_symlink_is_never_read(tmp_path):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    (folder / "merges.txt").unlink()
    (folder / "merges.txt").symlink_to("/etc/shadow")
    msg = one_line_error(load_gpt2_tokenizer, folder, error=CheckpointError)
    assert "'/etc/shadow', outside" in msg and "root:" not in msg


def test_config_json_linked_to_dev_zero(tmp_path):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("/dev/zero")
    msg = one_line_error(GPT.from_pretrained, folder, error=CheckpointError, seconds=1.0)
    assert "/dev/zero" in msg


def test_a_device_inside_the_folder_is_not_read(tmp_path, monkeypatch):
    # A device file cannot be made without root; a folder whose own root is / can hold one.
    monkeypatch.setattr(hf, "folder_root", lambda folder: "/")
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("/dev/zero")
    msg = one_line_error(GPT.from_pretrained, folder, error=CheckpointError, seconds=1.0)
    assert "is a character device, not a regular file" in msg


needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")


@needs_fifo
@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "vocab.json",
                                  "merges.txt"])
def test_a_fifo_never_blocks(tmp_path, name):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    (folder / name).unlink()
    os.mkfifo(folder / name)
    load = load_gpt2_tokenizer if name in ("vocab.json", "merges.txt") else GPT.from_pretrained
    err = returns_quickly(lambda: load(folder))
    assert isinstance(err, CheckpointError) and "FIFO (named pipe)" in str(err)


@needs_fifo
def test_a_fifo_or_a_folder_as_checkpoint(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / "ckpt.npz")
    err = returns_quickly(lambda: load_checkpoint(out))
    assert isinstance(err, CheckpointError) and "FIFO" in str(err)
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "dir.npz")  # a folder: its ckpt.npz is looked for


def test_a_tokenizer_file_that_is_a_folder(tmp_path):
    (tmp_path / "tok.json").mkdir()
    one_line_error(CharTokenizer.load, tmp_path / "tok.json", error=FileError,
                   match="is a folder, not a regular file")


def test_checkpoint_symlink_out_of_its_folder(tmp_path):
    real = good_checkpoint(tmp_path / "elsewhere")
    run = tmp_path / "run"
    run.mkdir()
    (run / "ckpt.npz").symlink_to(real)
    msg = one_line_error(load_checkpoint, run, error=CheckpointError)
    assert "symbolic link" in msg
    link = tmp_path / "link.npz"  # a file the user names is read where it leads
    link.symlink_to(real)
    assert load_checkpoint(link).config["model"]["vocab_size"] == 10


def test_links_inside_the_folder_and_hf_cache_snapshots_are_fine(tmp_path):
    model = tmp_path / "models--openai-community--gpt2"
    gpt2_folder(model / "blobs", HF_CFG)
    snap = model / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
        (snap / name).symlink_to(f"../../blobs/{name}")  # as huggingface_hub lays them out
    assert GPT.from_pretrained(snap).config == HF_CFG
    assert load_gpt2_tokenizer(snap).vocab_size == 260
    alias = tmp_path / "alias"  # the folder itself may be a link
    alias.symlink_to(snap)
    assert GPT.from_pretrained(alias).config == HF_CFG


def test_a_dangling_link(tmp_path):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("nothing-here.json")
    one_line_error(GPT.from_pretrained, folder, error=CheckpointError,
                   match="symbolic link to a missing file")


def test_hf_folder_without_config_json_says_so(tmp_path, capsys):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    (folder / "config.json").unlink()
    assert main(["sample", "--ckpt", str(folder), "--tokens", "2"]) == 1
    err = capsys.readouterr().err
    assert "no config.json in" in err and "ckpt.npz'" not in err and len(err.splitlines()) == 1


def test_a_run_folder_that_lost_its_checkpoint(tmp_path, capsys):
    good_checkpoint(tmp_path / "run")
    (tmp_path / "run" / "ckpt.npz").unlink()  # config.json, tokenizer.json remain
    assert main(["sample", "--ckpt", str(tmp_path / "run"), "--tokens", "2"]) == 1
    err = capsys.readouterr().err
    assert "no model.safetensors in" in err and "a numpygpt training run, ckpt.npz" in err


# --- 3. checkpoint entries: names, declared sizes, compression, dtypes ---------------------------


def test_duplicate_entry_names(tmp_path):
    path = write_zip(tmp_path / "ckpt.npz", [
        meta_entry(), ("param/wte.weight.npy", npy_of(np.zeros(3, np.float32))),
        ("param/wte.weight.npy", npy_of(np.ones(3, np.float32)))])
    one_line_error(load_checkpoint, path, error=CheckpointError,
                   match="entry names twice, e.g. 'param/wte.weight.npy'")


def test_12_mb_entry_declaring_3e9_float32_is_refused_at_once(tmp_path):
    data = bytes(12_000_000)
    path = write_zip(tmp_path / "ckpt.npz", [
        meta_entry(), ("param/wte.weight.npy", npy((3_000_000_000,), "<f4", data))])
    peak, err = peak_memory(lambda: load_checkpoint(path))
    assert isinstance(err, CheckpointError)
    assert "declares shape (3000000000,) of float32 (12.0 GB) but holds 12.0 MB" in str(err)
    assert peak < 20 << 20  # the 12 GB array is never allocated, the 12 MB never read
    one_line_error(load_checkpoint, path, error=CheckpointError, seconds=0.5)


def test_zip_lying_about_an_entry_size(tmp_path):
    path = write_zip(tmp_path / "ckpt.npz", [
        meta_entry(), ("param/x.npy", npy_of(np.zeros(1000, np.float32)))])
    patch_central(path, "param/x.npy", 24, "<L", 4_000_000_000)  # uncompressed size: 4 GB
    one_line_error(load_checkpoint, path, error=CheckpointError,
                   match="declares 4,000,000,000 bytes but stores 4,128")


def test_honest_deflate_bomb(tmp_path):
    # 100 MB of zeros, deflated to 0.2 MB: a real ratio of 500, refused before inflating
    path = tmp_path / "ckpt.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("meta.json.npy", npy_of(meta_bytes()))
        with z.open("param/x.npy", "w") as w:
            w.write(npy((25 << 20,), "<f4"))
            chunk = bytes(1 << 22)
            for _ in range(25):
                w.write(chunk)
    peak, err = peak_memory(lambda: load_checkpoint(path))
    assert isinstance(err, CheckpointError) and "would expand from" in str(err)
    assert "to 104.9 MB" in str(err) and peak < 10 << 20


def test_small_compressed_entries_are_fine(tmp_path):
    arrays = {**read_entries(good_checkpoint(tmp_path / "a")), }
    path = tmp_path / "b" / "ckpt.npz"
    path.parent.mkdir()
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)  # layer-norm biases of zeros compress 100x and more
    assert load_checkpoint(path).params.keys() == param_shapes(CFG).keys()


def test_other_compression_methods(tmp_path):
    path = write_zip(tmp_path / "ckpt.npz", [meta_entry()], zipfile.ZIP_BZIP2)
    one_line_error(load_checkpoint, path, error=CheckpointError,
                   match="compression method 12; numpygpt reads stored or deflated")


def test_overlapping_entries(tmp_path):
    a = npy_of(np.zeros(100, np.float32))
    path = write_zip(tmp_path / "ckpt.npz", [meta_entry(), ("param/a.npy", a), ("param/b.npy", a)])
    with zipfile.ZipFile(path) as z:
        offset = z.getinfo("param/a.npy").header_offset
    patch_central(path, "param/b.npy", 42, "<L", offset)  # b's bytes are a's bytes
    one_line_error(load_checkpoint, path, error=CheckpointError,
                   match="entries 'param/a.npy' and 'param/b.npy' overlap")


def test_zip_declaring_a_huge_directory(tmp_path):
    path = write_zip(tmp_path / "ckpt.npz", [meta_entry()])
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<L", data, end + 12, 0xFFFFFFF0)  # directory size: 4.3 GB
    path.write_bytes(bytes(data))
    one_line_error(load_checkpoint, path, error=CheckpointError,
                   match="4.3 GB directory; a checkpoint holds at most 100,000")


def test_negative_dimension(tmp_path):
    path = write_zip(tmp_path / "ckpt.npz", [meta_entry(), ("param/x.npy", npy((-5, 2)))])
    one_line_error(load_checkpoint, path, error=CheckpointError, match=r"shape \(-5, 2\)")


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, "datetime64[s]", "timedelta64[s]",
                                   np.complex64, np.longdouble, [("a", "<f4"), ("b", "<i4")],
                                   "U3"])
def test_only_float_params(tmp_path, dtype):
    path = tmp_path / "ckpt.npz"
    write_npz(path, {"meta.json": meta_bytes(), "param/wte.weight": np.zeros(4, dtype=dtype)})
    msg = one_line_error(load_checkpoint, path, error=CheckpointError)
    assert f"parameter 'param/wte.weight' has dtype {str(np.dtype(dtype))[:60]}" in msg
    assert "must be float16, float32, float64" in msg


def test_only_float_optimizer_slots(tmp_path):
    path = tmp_path / "ckpt.npz"
    write_npz(path, {"meta.json": meta_bytes(), "param/w": np.zeros(4, np.float32),
                     "optim/m/w": np.zeros(4, np.int32)})
    one_line_error(load_checkpoint, path, error=CheckpointError,
                   match="optimizer slot 'optim/m/w' has dtype int32")


def test_float16_float64_and_big_endian_load(tmp_path):
    path = tmp_path / "ckpt.npz"
    write_npz(path, {"meta.json": meta_bytes(), "param/a": np.ones(3, np.float16),
                     "param/b": np.ones(3, ">f4"), "param/c": np.ones((2, 3), order="F")})
    params = load_checkpoint(path).params
    assert params["b"].dtype == np.dtype(">f4") and params["c"].shape == (2, 3)
    np.testing.assert_array_equal(params["b"], 1.0)


def test_save_refuses_what_load_refuses(tmp_path):
    with pytest.raises(TypeError, match="int64"):
        save_checkpoint(tmp_path, config={}, tokenizer={}, params={"x": np.arange(3)})
    with pytest.raises(ValueError, match="1 non-finite"):
        save_checkpoint(tmp_path, config={}, tokenizer={},
                        params={"x": np.array([1.0, np.nan])})
    with pytest.raises(TypeError, match="names must be non-empty"):
        save_checkpoint(tmp_path, config={}, tokenizer={}, params={"x": np.zeros(2)},
                        optimizer={"hyper": {}, "slots": {"m": {"": np.zeros(2)}}})
    deep = {}
    for _ in range(40):
        deep = {"a": deep}
    with pytest.raises(ValueError, match="nested more than 32 levels"):
        save_checkpoint(tmp_path, config=deep, tokenizer={}, params={})
    assert not (tmp_path / "ckpt.npz").exists()


# --- 4. non-finite weights ----------------------------------------------------------------------


def with_entry(path, key, change):
    arrays = read_entries(path)
    arrays[key] = change(arrays[key].copy())
    write_npz(path, arrays)


def test_nan_weights_refused_for_sampling_and_resume(tmp_path, capsys):
    path = good_checkpoint(tmp_path / "run")

    def poison(a):
        a[0, :3] = [np.nan, np.inf, -np.inf]
        return a

    with_entry(path, "param/wte.weight", poison)
    msg = one_line_error(load_checkpoint, tmp_path / "run", error=CheckpointError)
    assert "NaN or inf values in 1 arrays: param/wte.weight (3 of 80)" in msg
    assert main(["sample", "--ckpt", str(tmp_path / "run"), "--tokens", "5"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "param/wte.weight (3 of 80)" in out.err
    assert len(out.err.splitlines()) == 1
    # for a post-mortem the file can still be opened
    assert np.isnan(load_checkpoint(path, check_finite=False).params["wte.weight"][0, 0])


def test_inf_in_an_optimizer_slot(tmp_path):
    path = tmp_path / "ckpt.npz"
    write_npz(path, {"meta.json": meta_bytes(), "param/w": np.zeros(4, np.float32),
                     "optim/v/w": np.array([0, 0, np.inf, 0], np.float32)})
    one_line_error(load_checkpoint, path, error=CheckpointError, match=r"optim/v/w \(1 of 4\)")


def test_nan_weights_in_a_safetensors_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    tensors = {k: rng.normal(0, 0.3, s).astype(np.float32)
               for k, s in param_shapes(HF_CFG).items()}
    tensors["h.0.mlp.c_fc.bias"][5] = np.nan
    folder = gpt2_folder(tmp_path / "m", HF_CFG, tensors=tensors)
    one_line_error(GPT.from_pretrained, folder, error=CheckpointError,
                   match=r"NaN or inf values in 1 tensors: h.0.mlp.c_fc.bias \(1 of 32\)")
    assert main(["sample", "--ckpt", str(folder), "--tokens", "3"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "h.0.mlp.c_fc.bias" in out.err


# --- 5. the tokenizer must fit the model ----------------------------------------------------------


@pytest.mark.parametrize("chars, numbers", [
    ("abcdefg", ["7 tokens", "vocab_size is 10", "ids 7 to 9", "could not be decoded"]),
    ("abcdefghijklm", ["13 tokens", "vocab_size is 10", "ids 10 to 12", "no embedding"]),
])
def test_checkpoint_tokenizer_must_match_the_model(tmp_path, chars, numbers, capsys):
    # the checkpoint format knows no model: the run's model and tokenizer are checked
    # against each other where the model is built from it
    good_checkpoint(tmp_path / "run", chars=chars)
    ckpt = load_checkpoint(tmp_path / "run")
    msg = one_line_error(model_from_checkpoint, ckpt, tmp_path / "run", error=CheckpointError)
    for n in numbers:
        assert n in msg, msg
    assert main(["sample", "--ckpt", str(tmp_path / "run"), "--tokens", "5"]) == 1
    assert numbers[0] in capsys.readouterr().err


def test_checkpoint_with_an_unusable_tokenizer(tmp_path):
    model = GPT(CFG)
    save_checkpoint(tmp_path, config={"model": CFG.to_dict()},
                    tokenizer={"kind": "char", "chars": "aa"}, params=model.params)
    one_line_error(model_from_checkpoint, load_checkpoint(tmp_path), tmp_path,
                   error=CheckpointError, match="tokenizer is not usable: .*repeats")


@pytest.mark.parametrize("n_merges, words", [(2, ["258 tokens", "260"]),
                                              (9, ["265 tokens", "260"])])
def test_hf_tokenizer_must_match_config(tmp_path, n_merges, words, capsys):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    write_tokenizer_files(folder, n_merges)
    msg = one_line_error(load_gpt2_tokenizer, folder, error=CheckpointError)
    assert all(w in msg for w in words) and "vocab.json against config.json" in msg
    assert main(["sample", "--ckpt", str(folder), "--tokens", "2"]) == 1
    assert words[0] in capsys.readouterr().err


def test_save_pretrained_refuses_a_tokenizer_of_another_size(tmp_path):
    tok = BPETokenizer.train("hello hello world " * 20, vocab_size=262)
    model = GPT(HF_CFG)  # vocab_size 260
    with pytest.raises(ValueError, match="262 tokens but the model's vocab_size is 260"):
        model.save_pretrained(tmp_path / "x", tokenizer=tok)
    assert not (tmp_path / "x").exists()


# --- 6. safetensors headers -----------------------------------------------------------------


def hf_folder_with_weights(tmp_path, header, data=b""):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    safetensors_file(folder / "model.safetensors", header, data)
    return folder


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("header, data, needle", [
    ({"a": {**F32, "shape": [3_000_000_000]}}, bytes(8),
     "shape (3000000000,) and dtype F32 takes 12,000,000,000 bytes, but its data_offsets span 8"),
    ({"a": {**F32, "data_offsets": [0, 12_000_000_000]}}, bytes(8),
     "data_offsets [0, 12000000000], outside the file's 8 bytes"),
    ({"a": {**F32, "data_offsets": [8, 0]}}, bytes(8), "outside the file's"),
    ({"a": {**F32, "shape": [-2]}}, bytes(8), "shape [-2]"),
    ({"a": {**F32, "shape": [2.0]}}, bytes(8), "shape [2.0]"),
    ({"a": {**F32, "dtype": "BF16", "shape": [4]}}, bytes(8),
     "dtype 'BF16', which NumPy cannot hold"),
    ({"a": {**F32, "dtype": ["F32"]}}, bytes(8), "dtype ['F32']"),
    ({"a": F32, "b": F32}, bytes(8), "tensors 'a' and 'b' share bytes"),
    ({"a": {"dtype": "F32"}}, b"", "has no dtype, shape and data_offsets"),
    ({"a": F32, "__metadata__": [1]}, bytes(8), "__metadata__ is not a JSON object"),
    ([1, 2], b"", "header is not a JSON object"),
    (DEEP.encode(), b"", "nested more than 32 levels"),
    (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "a": {}}', bytes(8),
     "gives the key 'a' twice"),
])
def test_hostile_safetensors_headers(tmp_path, header, data, needle):
    folder = hf_folder_with_weights(tmp_path, header, data)
    peak, err = peak_memory(lambda: GPT.from_pretrained(folder))
    assert isinstance(err, CheckpointError) and needle in str(err), err
    assert "cannot read" in str(err) or "header" in str(err)
    assert peak < 10 << 20


def test_safetensors_header_longer_than_the_file(tmp_path):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    one_line_error(GPT.from_pretrained, folder, error=CheckpointError,
                   match="header declares 1,152,921,504,606,846,976 bytes, more than the "
                         "file's 2")
    (folder / "model.safetensors").write_bytes(b"\x01\x02")
    one_line_error(GPT.from_pretrained, folder, error=CheckpointError, match="too short")


def test_safetensors_dtype_rule(tmp_path):
    tensors = {k: np.zeros(s, np.float32) for k, s in param_shapes(HF_CFG).items()}
    tensors["wpe.weight"] = np.zeros((8, 8), np.int64)
    folder = gpt2_folder(tmp_path / "m", HF_CFG, tensors=tensors)
    one_line_error(GPT.from_pretrained, folder, error=CheckpointError,
                   match="wpe.weight has dtype int64, expected floating point")


def test_config_claiming_a_million_layers(tmp_path):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    d = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**d, "n_layer": 1_000_000}))
    peak, err = peak_memory(lambda: GPT.from_pretrained(folder))
    assert isinstance(err, CheckpointError) and "n_layer is 1,000,000" in str(err)
    assert peak < 10 << 20  # no table of 12 million parameter names


@pytest.mark.parametrize("change, needle", [
    ({"n_embd": {"a": 1}}, "n_embd must be an integer"),
    ({"n_embd": {"a": 1}, "n_inner": 32}, "n_inner"),
    ({"resid_pdrop": "0.1"}, "dropout must be a number"),
    ({"n_head": True}, "n_head must be an integer"),
])
def test_config_values_of_the_wrong_type(tmp_path, change, needle):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    d = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**d, **change}))
    one_line_error(GPT.from_pretrained, folder, error=CheckpointError, match=needle)


def test_only_the_needed_tensors_are_read(tmp_path):
    # a mask buffer with a hostile (but consistent) shape is skipped, never read
    rng = np.random.default_rng(0)
    tensors = {"transformer." + k: rng.normal(0, 0.3, s).astype(np.float32)
               for k, s in param_shapes(HF_CFG).items()}
    tensors["transformer.h.0.attn.bias"] = np.zeros((1, 1, 64, 64), np.int8)
    folder = gpt2_folder(tmp_path / "m", HF_CFG, tensors=tensors)
    assert GPT.from_pretrained(folder).config == HF_CFG


# --- more hostile entries and files (beyond the list) -------------------------------------


def test_npy_header_too_long(tmp_path):
    header = {"descr": "<f4", "fortran_order": False, "shape": (2,), "x": "y" * 20_000}
    raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", 20_100) + repr(header).encode().ljust(20_100)
    path = write_zip(tmp_path / "ckpt.npz", [meta_entry(), ("param/x.npy", raw + bytes(8))])
    one_line_error(load_checkpoint, path, error=CheckpointError, match="damaged")


def test_npy_version_3_and_garbage_headers(tmp_path):
    path = write_zip(tmp_path / "a.npz", [meta_entry(), ("param/x.npy", b"\x93NUMPY\x03\x00")])
    one_line_error(load_checkpoint, path, error=CheckpointError, match="version 3.0")
    raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", 16) + b"__import__('os')"
    path = write_zip(tmp_path / "b.npz", [meta_entry(), ("param/x.npy", raw)])
    one_line_error(load_checkpoint, path, error=CheckpointError, match="damaged")


@pytest.mark.parametrize("name, data", [("param/x.npy", b"just some bytes"),
                                        ("param/x.npy", b"\x93NUMPY"),
                                        ("param/x.bin", b"\x93NUMPY")])
def test_entries_that_are_not_npy(tmp_path, name, data):
    path = write_zip(tmp_path / "ckpt.npz", [meta_entry(), (name, data)])
    one_line_error(load_checkpoint, path, error=CheckpointError, match="is not a .npy array")


def test_path_traversal_entry_name(tmp_path):
    path = write_zip(tmp_path / "ckpt.npz", [meta_entry(), ("../../etc/x.npy", npy_of(
        np.zeros(2, np.float32)))])
    one_line_error(load_checkpoint, path, error=CheckpointError,
                   match="unexpected entry '../../etc/x'")
    assert not (tmp_path.parent.parent / "etc" / "x.npy").exists()


def test_encrypted_entry(tmp_path):
    path = write_zip(tmp_path / "ckpt.npz", [meta_entry(), ("param/x.npy", npy_of(
        np.zeros(2, np.float32)))])
    patch_central(path, "param/x.npy", 8, "<H", 0x1)  # the "encrypted" flag
    one_line_error(load_checkpoint, path, error=CheckpointError, match="is encrypted")


def test_zip64_record_declaring_ten_million_entries(tmp_path):
    path = write_zip(tmp_path / "ckpt.npz", [meta_entry()])
    data = path.read_bytes()
    end = data.rfind(b"PK\x05\x06")
    dir_size, dir_offset = struct.unpack("<LL", data[end + 12:end + 20])
    n = 10_000_000
    record = b"PK\x06\x06" + struct.pack("<QHHLLQQQQ", 44, 45, 45, 0, 0, n, n, dir_size,
                                         dir_offset)
    locator = b"PK\x06\x07" + struct.pack("<LQL", 0, end, 1)
    eocd = b"PK\x05\x06" + struct.pack("<HHHHLLH", 0, 0, 0xFFFF, 0xFFFF, dir_size, dir_offset, 0)
    path.write_bytes(data[:end] + record + locator + eocd)
    peak, err = peak_memory(lambda: load_checkpoint(path))
    assert isinstance(err, CheckpointError) and "declares 10,000,000 entries" in str(err)
    assert peak < 10 << 20


def test_duplicate_keys_in_checkpoint_meta(tmp_path):
    raw = b'{"format": "numpygpt-checkpoint", "version": 1, "version": 2}'
    path = tmp_path / "ckpt.npz"
    write_npz(path, {"meta.json": np.frombuffer(raw, np.uint8)})
    one_line_error(load_checkpoint, path, error=CheckpointError,
                   match="meta.json gives the key 'version' twice")


def test_a_huge_sparse_tokenizer_file(tmp_path):
    with open(tmp_path / "tok.json", "wb") as f:
        f.truncate(50 << 30)
    peak, err = peak_memory(lambda: CharTokenizer.load(tmp_path / "tok.json"))
    assert isinstance(err, FileError) and "53.7 GB" in str(err) and peak < 1 << 20


def test_a_long_bad_merges_line_is_not_quoted_whole(tmp_path):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "x" * 100_000 + "\n")
    msg = one_line_error(load_gpt2_tokenizer, folder, error=CheckpointError, match="line 2")
    assert len(msg) < 400


def test_tokenizer_files_that_are_not_utf8(tmp_path):
    folder = gpt2_folder(tmp_path / "m", HF_CFG)
    (folder / "vocab.json").write_bytes(b'{"\xff\xfe": 0}')
    one_line_error(load_gpt2_tokenizer, folder, error=CheckpointError,
                   match="is not UTF-8 text .byte 2: invalid start byte")


def test_checkpoint_config_claiming_a_million_layers(tmp_path, capsys):
    d = {**CFG.to_dict(), "n_layer": 1_000_000}
    save_checkpoint(tmp_path, config={"model": d}, tokenizer=CharTokenizer(CHARS).to_dict(),
                    params=GPT(CFG).params)
    peak, err = peak_memory(lambda: load_checkpoint(tmp_path))
    assert isinstance(err, CheckpointError) and peak < 10 << 20
    assert "n_layer=1,000,000 but it holds the parameters of 1 layers" in str(err)
    start = time.perf_counter()
    assert main(["sample", "--ckpt", str(tmp_path), "--tokens", "2"]) == 1
    assert time.perf_counter() - start < 2 and "n_layer=1,000,000" in capsys.readouterr().err
