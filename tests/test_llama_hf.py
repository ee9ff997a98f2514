"""numpygpt's Llama against transformers' LlamaForCausalLM (optional: needs torch and
transformers; skipped without them). Nothing is downloaded: the reference models are tiny,
random, built here and saved with save_pretrained into tmp_path.

Measured (float32, AMD EPYC, transformers 5.24 / torch 2.13): max |logits difference|
about 1.3e-6 for logits of size ~2 (bound 1e-5); float64 gradients agree with autograd to
~1e-12 relative (with our float64 RoPE table, see the test).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from numpygpt import Llama  # noqa: E402
from numpygpt.gradcheck import rel_error  # noqa: E402

LOGITS_TOL = 1e-5  # float32, max absolute difference
GRAD_TOL = 1e-9  # float64, max relative error against autograd


def hf_model(tie, dtype=torch.float32, seed=0):
    """A tiny random LlamaForCausalLM with GQA (4 query heads, 2 key/value heads), random
    norm gains and weights large enough that every path matters."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=37, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
        rms_norm_eps=1e-5, tie_word_embeddings=tie,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    model = transformers.LlamaForCausalLM(cfg).to(dtype).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
            else:
                p.mul_(5.0)
    return model


def logits_of(model, idx):
    with torch.no_grad():
        return model(torch.tensor(idx)).logits.numpy()


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_transformers_llama_loads_and_gives_the_same_logits(tmp_path, tie):
    hf = hf_model(tie)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    model = Llama.from_pretrained(tmp_path / "hf")
    assert model.config.n_kv_head == 2 and model.config.tie_embeddings is tie
    assert model.config.rope_theta == 500.0 and model.config.rms_eps == 1e-5
    idx = np.random.default_rng(0).integers(0, 37, (2, 16))
    ref = logits_of(hf, idx)
    ours, _ = model.forward(idx)
    assert ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= LOGITS_TOL
    assert np.abs(ref).max() > 0.5  # logits of real size, not all near 0

    # and back: numpygpt's export loads in transformers with the same logits
    model.save_pretrained(tmp_path / "ours")
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert back.config.num_key_value_heads == 2 and back.config.tie_word_embeddings is tie
    assert np.abs(logits_of(back, idx) - ours).max() <= LOGITS_TOL


def test_generation_matches_transformers_greedy(tmp_path):
    hf = hf_model(False)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    model = Llama.from_pretrained(tmp_path / "hf")
    idx = np.array([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        ref = hf.generate(torch.tensor(idx), max_new_tokens=10, do_sample=False,
                          pad_token_id=0).numpy()
    np.testing.assert_array_equal(model.generate(idx, 10, temperature=0), ref)


def test_backward_matches_torch_autograd(tmp_path):
    """Our hand-written gradients against autograd on the same float64 model and loss (mean
    cross-entropy of given next-token targets, -1 ignored)."""
    hf = hf_model(False, dtype=torch.float64, seed=1)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    model = Llama.from_pretrained(tmp_path / "hf", dtype=np.float64)
    rng = np.random.default_rng(1)
    idx, targets = rng.integers(0, 37, (2, 9)), rng.integers(0, 37, (2, 9))
    targets[0, 2] = -1
    # transformers computes RoPE's angles and RMSNorm in float32 even in a float64 model
    # (relative differences ~1e-8 in the loss); give it float64 versions of both, so that
    # the comparison is float64 throughout
    cos, sin = (torch.tensor(a)[None] for a in model.rope(9))  # (1, T, hs)
    hf.model.rotary_emb.forward = lambda x, position_ids: (cos, sin)
    for m in hf.modules():
        if type(m).__name__ == "LlamaRMSNorm":
            m.forward = lambda h, m=m: m.weight * h * torch.rsqrt(
                (h * h).mean(-1, keepdim=True) + m.variance_epsilon)
    logits = hf(torch.tensor(idx)).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 37),
                                             torch.tensor(targets).reshape(-1), ignore_index=-1)
    loss.backward()
    _, our_loss = model.forward(idx, targets)
    assert our_loss == pytest.approx(loss.item(), rel=1e-12)
    grads = model.backward()
    hf_grads = dict(hf.named_parameters())
    assert set(hf_grads) == set(grads)
    for name, g in grads.items():
        ref = hf_grads[name].grad.numpy()
        ref = ref if ref.ndim == 1 or name == "model.embed_tokens.weight" else ref.T
        assert rel_error(g, ref) < GRAD_TOL, name
