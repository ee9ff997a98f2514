"""The PyTorch side of every comparison: the same GPT and training step in PyTorch eager.

Written as nanoGPT writes it (float32, SDPA attention, tanh GELU, tied LM head, AdamW with
decay on 2-D parameters only, clip_grad_norm_), with the parameter names of numpygpt's GPT
(torch_state maps one onto the other), so both libraries can step the same model on the same
batch.

PyTorch is optional: this module imports it, and only --vs-torch and a torch profile import
this module.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    """One transformer block, pre-norm: attention then MLP, each in a residual branch."""

    def __init__(self, cfg):
        super().__init__()
        C = cfg.n_embd
        self.n_embd, self.n_head = C, cfg.n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        B, T, C = x.shape
        nh = self.n_head
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.drop.p if self.training else 0.0)
        x = x + self.drop(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))
        h = F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")  # (B, T, 4C)
        return x + self.drop(self.mlp_proj(h))


class TorchGPT(nn.Module):
    """GPT-2: token and learned position embeddings, the blocks, ln_f, the tied LM head;
    forward returns the mean cross-entropy loss."""

    def __init__(self, cfg):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)

    def forward(self, idx, targets):
        pos = torch.arange(idx.shape[1])
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.T  # tied head, (B, T, V)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def torch_step_fn(cfg, B, seed=0, T=None, params=None):
    """A closure running one training step of TorchGPT (forward, backward, clip, AdamW) on a
    fixed random (B, T) batch (T = block_size by default), returning the loss. params:
    numpygpt parameters to start from (copied; default: PyTorch's own random init), and then
    numpy_step_fn's batch, so that both libraries step the same model on the same batch."""
    torch.manual_seed(seed)
    T = T or cfg.block_size
    model = TorchGPT(cfg)
    if params is not None:
        model.load_state_dict(torch_state(params))
    decay = [q for q in model.parameters() if q.dim() >= 2]
    no_decay = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(seed)
    if params is None:
        x = torch.randint(0, cfg.vocab_size, (B, T), generator=gen)
        y = torch.randint(0, cfg.vocab_size, (B, T), generator=gen)
    else:  # numpy_step_fn's batch, for the same model
        rng = np.random.default_rng(seed)
        x, y = (torch.from_numpy(rng.integers(0, cfg.vocab_size, (B, T))) for _ in range(2))

    def step():
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    return step


def torch_state(params):
    """numpygpt's parameters as the state dict of TorchGPT (copies; a torch Linear stores its
    weight (out, in), the transpose of ours)."""
    renames = {"attn.c_attn": "c_attn", "attn.c_proj": "c_proj", "mlp.c_fc": "c_fc",
               "mlp.c_proj": "mlp_proj"}
    state = {}
    for k, v in params.items():
        for ours, theirs in renames.items():
            if f".{ours}." in k:
                k, v = k.replace(ours, theirs), (v.T if k.endswith("weight") else v)
                break
        state[k] = torch.tensor(np.ascontiguousarray(v))
    return state
