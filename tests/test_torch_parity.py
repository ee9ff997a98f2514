"""Optional: the same GPT written with PyTorch autograd gives the same logits, loss and
gradients as our hand-written passes (float64). Skipped when torch is not installed."""

import numpy as np
import pytest

from numpygpt import GPT, GPTConfig

torch = pytest.importorskip("torch")
F = torch.nn.functional


def torch_gpt_loss(params, cfg, idx, targets):
    """GPT-2 in plain torch ops, on tensors named as in our params dict."""
    B, T = idx.shape
    C, nh = cfg.n_embd, cfg.n_head
    p = params
    x = p["wte.weight"][idx]
    if cfg.pos_encoding == "learned":
        x = x + p["wpe.weight"][:T]
    else:
        from numpygpt.layers import sinusoidal_table

        x = x + torch.tensor(sinusoidal_table(T, C, np.float64))
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(cfg.n_layer):
        pre = f"h.{i}."
        h = F.layer_norm(x, (C,), p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], eps=1e-5)
        q, k, v = (h @ p[pre + "attn.c_attn.weight"] + p[pre + "attn.c_attn.bias"]).split(C, -1)
        q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / (C // nh) ** 0.5
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p[pre + "attn.c_proj.weight"] + p[pre + "attn.c_proj.bias"]
        h = F.layer_norm(x, (C,), p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], eps=1e-5)
        h = F.gelu(h @ p[pre + "mlp.c_fc.weight"] + p[pre + "mlp.c_fc.bias"], approximate="tanh")
        x = x + h @ p[pre + "mlp.c_proj.weight"] + p[pre + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], eps=1e-5)
    logits = x @ p["wte.weight"].T
    loss = F.cross_entropy(logits.view(B * T, -1), targets.view(-1), ignore_index=-1)
    return logits, loss


@pytest.mark.parametrize("pos", ["learned", "sinusoidal"])
def test_logits_loss_and_every_gradient_match_pytorch(pos):
    cfg = GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_head=4, n_embd=16,
                    pos_encoding=pos)
    model = GPT(cfg, seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    for v in model.params.values():
        v += rng.standard_normal(v.shape) * 0.1  # move away from the symmetric init
    idx = rng.integers(0, 13, (3, 11))
    targets = rng.integers(0, 13, (3, 11))
    targets[1, 4] = -1
    logits, loss = model.forward(idx, targets)
    grads = model.backward()

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    tlogits, tloss = torch_gpt_loss(tp, cfg, torch.tensor(idx), torch.tensor(targets))
    tloss.backward()
    np.testing.assert_allclose(logits, tlogits.detach().numpy(), rtol=0, atol=1e-12)
    assert abs(loss - tloss.item()) < 1e-12
    for k, g in grads.items():
        np.testing.assert_allclose(g, tp[k].grad.numpy(), rtol=1e-9, atol=1e-13, err_msg=k)
