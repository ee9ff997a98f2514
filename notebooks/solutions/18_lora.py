# Solutions for notebooks/18_lora.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_lora_backward
def my_lora_backward(dout, cache):
    """Backward pass of a linear layer with a LoRA adapter, y = x @ w + b + scale * (x @ A) @ B.

    Inputs:
    - dout: (B, T, Dout) upstream gradient (any number of leading dimensions)
    - cache: (x, w, A, B, u, scale) from layers.lora_forward: x (B, T, Din), w (Din, Dout)
      frozen, A (Din, r), B (r, Dout), u = x @ A flattened to (N, r) with N = B * T, and
      scale = alpha / r (a float)

    Returns (dx, dA, dB) with the shapes of x, A and B (w and b are frozen: no dw, no db).
    """
    x, w, A, B, u, scale = cache
    Din, Dout = w.shape
    dy = dout.reshape(-1, Dout)  # (N, Dout)
    x2 = x.reshape(-1, Din)  # (N, Din)
    # The adapter's output is scale * u @ B: a linear layer on u, with the factor scale.
    du = scale * (dy @ B.T)  # (N, r)
    dB = scale * (u.T @ dy)  # (r, Dout)
    # u = x @ A: another linear layer, on x.
    dA = x2.T @ du  # (Din, r)
    # x reaches y along two paths, through w and through A: the two contributions add.
    dx = dy @ w.T + du @ A.T  # (N, Din)
    return dx.reshape(x.shape), dA, dB

# %% rank_break_even
# An adapter holds $r(D_{in} + D_{out})$ numbers, the matrix $D_{in} D_{out}$. They are equal
# at $r = D_{in} D_{out} / (D_{in} + D_{out})$, half the harmonic mean of the two sizes;
# beyond it the adapter is bigger than the matrix it adapts (and, at $r = \min(D_{in},
# D_{out})$, it can express every update, so larger ranks cannot add anything).
#
# - The course model's `c_attn` is $(128, 384)$: $128 \cdot 384 / 512 = 96$. (FAST mode's
#   $(32, 96)$: 24.)
# - GPT-2's `c_attn` is $(768, 2304)$: $768 \cdot 2304 / 3072 = 576$; its MLP's $(768, 3072)$:
#   614. A rank-8 adapter is 1.4% of either.
#
# Section 1 found that a rank of a fraction of the width (about a quarter of it or less, in the
# full-mode run) holds 90% of the update of full fine-tuning, and section 4 that ranks of a
# few already did as well as full fine-tuning: a rank of 4 or 8 is the sensible choice here,
# far below the break-even rank of 96. The accuracy stops improving because the extra
# directions a larger rank allows are the ones the update hardly uses: the tail of the
# spectrum is small and largely noise from a short stochastic run on a few hundred texts. What limits the accuracy is then the data (short windows, some
# truly ambiguous) and the model's pretrained features, not the freedom of the update. (An
# answer that takes the course model's shapes from `base_model.config` is just as good: the
# break-even rank scales with the width, $3C/4$ for `c_attn`.)
