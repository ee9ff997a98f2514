"""GPT-2 checkpoints in Hugging Face format: export and import round trips, folders written by
other tools, clear errors, the downloader (against a local server, never the internet), the
`sample` command on a GPT-2 folder, and (optional, with transformers) logit parity with
GPT2LMHeadModel in both directions."""

import json
import socket
from contextlib import redirect_stdout
from io import StringIO

import numpy as np
import pytest
from localhttp import LocalServer

from numpygpt.cli import main
from numpygpt.data import load_gpt2_tokenizer
from numpygpt.io import hf_gpt2 as hf
from numpygpt.io import hub as gpt2_hub
from numpygpt.io.checkpoint import CheckpointError
from numpygpt.models.gpt import GPT, GPTConfig, param_shapes

st = pytest.importorskip("safetensors.numpy")

CFG = GPTConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, n_embd=8, dropout=0.1)
IDX = np.array([[1, 5, 5, 39, 0, 7, 2], [3, 3, 3, 3, 3, 3, 3]])  # (B, T) = (2, 7)


def random_params(cfg, seed=0, dtype=np.float32):
    """Every tensor random, layer-norm gains and biases too (ones and zeros hide bugs)."""
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0.0, 0.3, size=s).astype(dtype) for k, s in param_shapes(cfg).items()}


def model_from(params, cfg=CFG, dtype=np.float32):
    model = GPT(cfg, dtype=dtype)
    model.load_params(params)
    return model.eval()


def logits(model, idx=IDX):
    return model.forward(idx)[0]


def gpt2_config(cfg, **changes):
    """A config.json like the one on the Hub for openai-community/gpt2 (written by hand, not
    by numpygpt.io.hf_gpt2), for the sizes of `cfg`."""
    d = {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
         "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256,
         "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
         "n_ctx": cfg.block_size, "n_embd": cfg.n_embd, "n_head": cfg.n_head,
         "n_layer": cfg.n_layer, "n_positions": cfg.block_size, "resid_pdrop": 0.1,
         "summary_activation": None, "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
         "summary_type": "cls_index", "summary_use_proj": True,
         "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
         "vocab_size": cfg.vocab_size}
    d.update(changes)
    return {k: v for k, v in d.items() if v is not ...}  # `...` deletes a key


def write_gpt2_folder(folder, params, cfg=CFG, prefix=True, buffers=True, lm_head=True,
                      config=None):
    """A GPT-2 folder written with safetensors directly, as other tools write them: HF tensor
    names (with or without "transformer."), attention-mask buffers, a tied lm_head.weight."""
    folder.mkdir(parents=True, exist_ok=True)
    pre = "transformer." if prefix else ""
    tensors = {pre + k: np.ascontiguousarray(v) for k, v in params.items()}
    if buffers:
        T = cfg.block_size
        for i in range(cfg.n_layer):
            tensors[f"{pre}h.{i}.attn.bias"] = np.tril(np.ones((T, T), np.float32))[None, None]
            tensors[f"{pre}h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    if lm_head:
        tensors["lm_head.weight"] = params["wte.weight"].copy()
    st.save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config or gpt2_config(cfg)))
    return folder


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_export_import_round_trip_is_exact(tmp_path, dtype):
    params = random_params(CFG)  # float32 values: the file stores float32
    model = model_from(params, dtype=dtype)
    folder = model.save_pretrained(tmp_path / "export")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    back = GPT.from_pretrained(folder, dtype=dtype)
    assert back.config == CFG  # dropout too, through resid_pdrop
    assert not back.training  # eval mode, as transformers' from_pretrained
    assert list(back.params) == list(model.params)
    for k, v in model.params.items():
        assert back.params[k].dtype == dtype and np.array_equal(back.params[k], v), k
    assert np.array_equal(logits(back), logits(model))
    # what the file holds: HF's names, float32, no lm_head (tied), a "pt" format tag
    tensors = st.load_file(folder / "model.safetensors")
    assert set(tensors) == {"transformer." + k for k in param_shapes(CFG)}
    assert all(t.dtype == np.float32 for t in tensors.values())
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["activation_function"] == "gelu_new"
    assert config["n_positions"] == 12 and config["tie_word_embeddings"] is True
    assert config["bos_token_id"] is None  # not GPT-2's vocabulary: no <|endoftext|> id
    assert hf.hf_config(GPTConfig(vocab_size=50257).to_dict())["eos_token_id"] == 50256


def test_round_trip_with_a_bpe_tokenizer(tmp_path):
    bpe = pytest.importorskip("numpygpt.data.bpe")
    tok = bpe.BPETokenizer.train("the cat sat on the mat; the dog sat on the log. " * 5,
                                 vocab_size=270)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8)
    model = model_from(random_params(cfg), cfg)
    folder = model.save_pretrained(tmp_path / "export", tokenizer=tok)
    assert {"vocab.json", "merges.txt"} <= {p.name for p in folder.iterdir()}
    back, tok2 = GPT.from_pretrained(folder), load_gpt2_tokenizer(folder)
    assert tok2 == tok
    ids = tok2.encode("the cat sat")[None, :]
    assert np.array_equal(logits(back, ids), logits(model, ids))
    assert load_gpt2_tokenizer(model.save_pretrained(tmp_path / "bare")) is None


def test_reexport_replaces_an_earlier_export_and_keeps_its_tokenizer(tmp_path):
    folder = write_gpt2_folder(tmp_path / "gpt2", random_params(CFG, seed=1))
    (folder / "vocab.json").write_text("{}")  # files of the earlier export stay
    model = model_from(random_params(CFG, seed=2))
    model.save_pretrained(folder)
    assert np.array_equal(logits(GPT.from_pretrained(folder)), logits(model))
    assert (folder / "vocab.json").read_text() == "{}"


@pytest.mark.parametrize("prefix", [True, False], ids=["transformer.-prefix", "bare-names"])
def test_a_folder_written_by_another_tool_loads_and_runs(tmp_path, prefix):
    params = random_params(CFG, seed=3)
    folder = write_gpt2_folder(tmp_path / "gpt2", params, prefix=prefix)
    model = GPT.from_pretrained(str(folder))
    out = logits(model)
    assert out.shape == (2, 7, CFG.vocab_size) and np.isfinite(out).all()
    assert np.array_equal(out, logits(model_from(params)))
    assert model.config.block_size == 12 and model.config.dropout == 0.1


def test_old_configs_with_n_ctx_only_and_without_optional_keys(tmp_path):
    cfg = gpt2_config(CFG, n_positions=..., activation_function=..., layer_norm_epsilon=...,
                      resid_pdrop=...)
    folder = write_gpt2_folder(tmp_path / "old", random_params(CFG), config=cfg, lm_head=False)
    assert GPT.from_pretrained(folder).config.block_size == CFG.block_size


# --- errors ------------------------------------------------------------------------------------


def _drop(name):
    def edit(folder):
        tensors = st.load_file(folder / "model.safetensors")
        del tensors[name]
        st.save_file(tensors, str(folder / "model.safetensors"))
    return edit


def _set(name, value):
    def edit(folder):
        tensors = st.load_file(folder / "model.safetensors")
        tensors[name] = value
        st.save_file(tensors, str(folder / "model.safetensors"))
    return edit


def _config(**changes):
    def edit(folder):
        (folder / "config.json").write_text(json.dumps(gpt2_config(CFG, **changes)))
    return edit


LOAD_ERRORS = {
    # name: (edit of a good folder, words in the message)
    "missing config.json": (lambda f: (f / "config.json").unlink(), ["no config.json"]),
    "missing model.safetensors": (lambda f: (f / "model.safetensors").unlink(),
                                  ["no model.safetensors"]),
    "config.json not JSON": (lambda f: (f / "config.json").write_text("{"), ["config.json"]),
    "damaged safetensors": (lambda f: (f / "model.safetensors").write_bytes(b"\x10" * 40),
                            ["cannot read", "model.safetensors"]),
    "missing tensor": (_drop("transformer.h.1.mlp.c_fc.bias"),
                       ["missing 1", "h.1.mlp.c_fc.bias"]),
    "unexpected tensor": (_set("transformer.h.9.ln_1.weight", np.ones(8, np.float32)),
                          ["unexpected 1", "h.9.ln_1.weight"]),
    "wrong shape": (_set("transformer.h.0.attn.c_attn.weight", np.zeros((24, 8), np.float32)),
                    ["wrong shape", "h.0.attn.c_attn.weight", "(8, 24)"]),
    "integer tensor": (_set("transformer.ln_f.bias", np.zeros(8, np.int32)), ["int32"]),
    "stored twice": (_set("ln_f.bias", np.zeros(8, np.float32)), ["ln_f.bias", "twice"]),
    "untied lm_head": (_set("lm_head.weight", np.zeros((40, 8), np.float32)),
                       ["lm_head.weight differs from wte.weight"]),
    "relu activation": (_config(activation_function="relu"),
                        ["activation_function", "'relu'", "gelu_new"]),
    "exact gelu": (_config(activation_function="gelu"), ["activation_function", "'gelu'"]),
    "layer norm eps": (_config(layer_norm_epsilon=1e-6), ["layer_norm_epsilon", "1e-06"]),
    "untied config": (_config(tie_word_embeddings=False), ["tie_word_embeddings"]),
    "not gpt2": (_config(model_type="llama"), ["model_type", "'llama'"]),
    "missing size": (_config(n_embd=..., n_positions=..., n_ctx=...),
                     ["missing n_embd, n_positions (or n_ctx)"]),
    "bad size": (_config(n_head=3), ["n_embd=8 is not divisible by n_head=3"]),
}


@pytest.mark.parametrize("case", list(LOAD_ERRORS))
def test_load_errors_are_one_clear_line(case, tmp_path):
    edit, needles = LOAD_ERRORS[case]
    folder = write_gpt2_folder(tmp_path / "gpt2", random_params(CFG))
    edit(folder)
    with pytest.raises(CheckpointError) as info:
        GPT.from_pretrained(folder)
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


def test_a_path_that_is_neither_folder_nor_name(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder.*gpt2-medium"):
        GPT.from_pretrained(tmp_path / "nowhere")
    run = tmp_path / "run"  # a numpygpt training run has a config.json too
    run.mkdir()
    (run / "ckpt.npz").write_bytes(b"")
    (run / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="numpygpt training checkpoint, not a GPT-2"):
        GPT.from_pretrained(run)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="a file, not a folder"):
        GPT.from_pretrained(tmp_path / "file")


def test_export_refusals(tmp_path):
    sinusoidal = GPT(GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=1, n_embd=4,
                               pos_encoding="sinusoidal"))
    with pytest.raises(ValueError, match="GPT-2 has learned positions; a model with "
                                         "pos_encoding='sinusoidal' cannot be saved"):
        sinusoidal.save_pretrained(tmp_path / "sin")
    assert not (tmp_path / "sin").exists()

    from numpygpt.data import CharTokenizer

    model = GPT(CFG)
    with pytest.raises(ValueError, match="only a BPE tokenizer.*CharTokenizer"):
        model.save_pretrained(tmp_path / "char", tokenizer=CharTokenizer("abc"))

    # a folder holding anything else is never written into
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    (mine / "config.json").write_text('{"mine": 1}')
    with pytest.raises(ValueError, match="not empty and does not hold a GPT-2 export"):
        model.save_pretrained(mine)
    assert sorted(p.name for p in mine.iterdir()) == ["config.json", "notes.txt"]
    assert (mine / "config.json").read_text() == '{"mine": 1}'
    # nor a numpygpt training run (it has a config.json too)
    (mine / "ckpt.npz").write_bytes(b"")
    (mine / "model.safetensors").write_bytes(b"")
    (mine / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ValueError, match="not empty"):
        model.save_pretrained(mine)


# --- downloading (a local server, never the internet) --------------------------------------


def _no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture(scope="module")
def hub_files(tmp_path_factory):
    """The four files of a tiny random GPT-2, with a tokenizer if numpygpt.data.bpe is there."""
    folder = write_gpt2_folder(tmp_path_factory.mktemp("hub") / "gpt2", random_params(CFG))
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    files["vocab.json"], files["merges.txt"] = b"{}", b"#version: 0.2\n"
    return files


@pytest.fixture
def hub(hub_files, monkeypatch):
    _no_proxy(monkeypatch)
    server = LocalServer(dict(hub_files), prefix="/openai-community/gpt2/resolve/main/")
    monkeypatch.setattr(gpt2_hub, "HF_BASE_URL", server.base)
    yield server
    server.close()


def test_download_once_then_use_the_cache(hub, tmp_path):
    model = GPT.from_pretrained("gpt2", cache_dir=tmp_path)
    folder = tmp_path / "hf" / "gpt2"
    assert sorted(p.name for p in folder.iterdir()) == sorted(gpt2_hub.GPT2_FILES)  # no temp files
    assert sorted(hub.requests) == sorted(f"/openai-community/gpt2/resolve/main/{f}"
                                          for f in gpt2_hub.GPT2_FILES)
    assert np.array_equal(logits(model), logits(GPT.from_pretrained(folder)))
    # second call, and the long name: the cache answers, the server is not asked again
    GPT.from_pretrained("openai-community/gpt2", cache_dir=tmp_path)
    assert len(hub.requests) == 4
    # a file missing from the cache is fetched alone
    (folder / "merges.txt").unlink()
    GPT.from_pretrained("gpt2", cache_dir=tmp_path)
    assert hub.requests[4:] == ["/openai-community/gpt2/resolve/main/merges.txt"]


def test_the_default_cache_is_numpygpt_cache(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("NUMPYGPT_CACHE", str(tmp_path / "c"))
    GPT.from_pretrained("gpt2")
    assert (tmp_path / "c" / "hf" / "gpt2" / "model.safetensors").is_file()


def test_a_failed_download_says_what_to_do_and_leaves_no_partial_file(hub, tmp_path):
    hub.truncate.add("model.safetensors")
    with pytest.raises(CheckpointError) as info:
        GPT.from_pretrained("gpt2", cache_dir=tmp_path)
    msg = str(info.value)
    folder = tmp_path / "hf" / "gpt2"
    assert "model.safetensors" in msg and "by hand" in msg and str(folder) in msg
    # the complete files are kept, the broken one left nothing (not even a temp file)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "merges.txt", "vocab.json"]
    del hub.files["config.json"]
    with pytest.raises(CheckpointError, match="404"):
        GPT.from_pretrained("gpt2", cache_dir=tmp_path / "other")


def _nobody_listens():
    """The URL of a local port that refuses connections, like a machine offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_offline_error_names_the_files_and_the_folder(tmp_path, monkeypatch):
    _no_proxy(monkeypatch)
    monkeypatch.setattr(gpt2_hub, "HF_BASE_URL", _nobody_listens())
    with pytest.raises(CheckpointError) as info:
        GPT.from_pretrained("gpt2-medium", cache_dir=tmp_path)
    msg = str(info.value)
    for needle in ("could not download", "config.json, vocab.json, merges.txt, "
                   "model.safetensors", "by hand", str(tmp_path / "hf" / "gpt2-medium"),
                   "pass that folder's path"):
        assert needle in msg, msg
    assert not (tmp_path / "hf" / "gpt2-medium").exists() or \
        not any((tmp_path / "hf" / "gpt2-medium").iterdir())


def test_names():
    assert [gpt2_hub.gpt2_name(n) for n in ("gpt2", "openai-community/gpt2-xl", "gpt3",
                                      "someone/gpt2", None)] == ["gpt2", "gpt2-xl", None, None,
                                                                 None]


# --- the sample command ----------------------------------------------------------------------


def tiny_gpt2_tokenizer_files(folder):
    """A hand-made GPT-2-format vocab.json/merges.txt: the 256 bytes, a few merges,
    <|endoftext|> last (as in GPT-2). Returns the vocabulary size."""
    bpe = pytest.importorskip("numpygpt.data.bpe")
    byte_chars = [bpe.bytes_to_unicode()[b] for b in range(256)]
    merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("Ġ", "w"), ("o", "r")]
    vocab = byte_chars + [a + b for a, b in merges] + ["<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n"
                                                                  for a, b in merges))
    return len(vocab)


@pytest.fixture
def gpt2_folder(tmp_path):
    folder = tmp_path / "tiny-gpt2"
    folder.mkdir()
    V = tiny_gpt2_tokenizer_files(folder)
    cfg = GPTConfig(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=8)
    write_gpt2_folder(folder, random_params(cfg), cfg)
    return folder


def _sample(argv):
    buf = StringIO()
    with redirect_stdout(buf):
        code = main([str(a) for a in argv])
    return code, buf.getvalue()


def test_sample_from_a_gpt2_folder(gpt2_folder):
    argv = ["sample", "--ckpt", gpt2_folder, "--prompt", "hello world", "--tokens", "5",
            "--seed", "3"]
    code, out = _sample(argv)
    assert code == 0 and out.startswith("hello world")
    assert _sample(argv) == (0, out)  # same seed, same text
    # no prompt: GPT-2 starts after <|endoftext|>, which is not printed
    code, out = _sample(["sample", "--ckpt", gpt2_folder, "--tokens", "3", "--seed", "0",
                         "--temperature", "0"])
    assert code == 0 and not out.startswith("<|endoftext|>")


def test_sample_errors_for_gpt2_are_one_line(gpt2_folder, tmp_path, monkeypatch, capsys):
    (gpt2_folder / "merges.txt").unlink()
    assert main(["sample", "--ckpt", str(gpt2_folder), "--tokens", "2"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "vocab.json but no merges.txt" in err
    (gpt2_folder / "vocab.json").unlink()
    assert main(["sample", "--ckpt", str(gpt2_folder), "--tokens", "2"]) == 1
    assert "has no vocab.json and merges.txt" in capsys.readouterr().err
    # a GPT-2 name, offline: the download error, on one line
    _no_proxy(monkeypatch)
    monkeypatch.setenv("NUMPYGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gpt2_hub, "HF_BASE_URL", _nobody_listens())
    monkeypatch.chdir(tmp_path)  # no folder called gpt2 here
    assert main(["sample", "--ckpt", "gpt2", "--tokens", "2"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "by hand" in err and "Traceback" not in err


# --- parity with transformers (optional: not installed in CI) ---------------------------------


@pytest.fixture(scope="module")
def hf_model():
    """A random GPT2LMHeadModel (every tensor random, layer norms too), in eval mode."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    config = transformers.GPT2Config(vocab_size=CFG.vocab_size, n_positions=CFG.block_size,
                                      n_embd=CFG.n_embd, n_layer=CFG.n_layer, n_head=CFG.n_head,
                                      bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return torch, transformers, model


def _hf_logits(torch, model, idx=IDX, dtype=None):
    if dtype is not None:
        model = model.to(dtype)
    with torch.no_grad():
        out = model(torch.from_numpy(idx)).logits.numpy()
    model.float()
    return out


def test_our_import_matches_gpt2lmheadmodel(hf_model, tmp_path):
    torch, _, model = hf_model
    model.save_pretrained(tmp_path / "hf")  # what transformers itself writes
    ours = logits(GPT.from_pretrained(tmp_path / "hf"))
    theirs = _hf_logits(torch, model)
    diff32 = np.abs(ours - theirs).max()
    ours64 = logits(GPT.from_pretrained(tmp_path / "hf", dtype=np.float64))
    diff64 = np.abs(ours64 - _hf_logits(torch, model, dtype=torch.float64)).max()
    print(f"\nmax |logit difference| vs GPT2LMHeadModel: float32 {diff32:.1e}, "
          f"float64 {diff64:.1e} (logits of size ~{np.abs(theirs).max():.0f})")
    assert diff32 < 1e-4 and diff64 < 1e-10


def test_gpt2lmheadmodel_loads_our_export(hf_model, tmp_path):
    torch, transformers, _ = hf_model
    ours = model_from(random_params(CFG, seed=5))
    ours.save_pretrained(tmp_path / "export")
    theirs, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "export",
                                                                output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    diff = np.abs(_hf_logits(torch, theirs.eval()) - logits(ours)).max()
    print(f"\nmax |logit difference|, our export loaded by GPT2LMHeadModel: {diff:.1e}")
    assert diff < 1e-4
