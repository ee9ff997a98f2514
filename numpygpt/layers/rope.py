"""Rotary position embedding (RoPE), applied to the queries and keys of every head.

Instead of adding a position vector to the token embedding, RoPE rotates q and k: the hs
channels of a head form hs/2 pairs, and pair i at position t turns by the angle
theta_i t, with theta_i = base^(-2i/hs) (base = rope_theta, 10000). Since a rotation by
a and one by b meet in a dot product as one rotation by b - a,

    (R_t q) . (R_s k) = q . (R_(s-t) k)

the attention scores depend on positions only through their difference t - s.

Convention: Hugging Face's Llama ("rotate_half"), which the Llama checkpoints expect: pair i
is the channels (i, i + hs/2), the first half of a head against its second half:

    out = x * cos + rotate_half(x) * sin,      rotate_half([x1, x2]) = [-x2, x1]

(The RoPE paper and GPT-J pair neighbours instead, (2i, 2i + 1), the "interleaved"
convention. Both are the same maths on permuted channels; a checkpoint trained with one gives
wrong logits with the other, so a converter that switches convention permutes the rows of
the q and k projections.)

Shapes: B batch, nh heads, T time, hs head size (even).
"""

import numpy as np


def rope_table(T, hs, theta=10000.0, dtype=np.float32, offset=0):
    """cos and sin of the rotation angles of positions offset .. offset + T - 1.

    Angles are computed in float64 and rounded once to `dtype` (Hugging Face computes them in
    float32; the two agree to ~1e-7 at the positions of a small model).

    Returns (cos, sin), each (T, hs): column i and column i + hs/2 hold the same angle,
    theta_i * position, theta_i = theta^(-2i/hs).
    """
    inv_freq = 1.0 / theta ** (np.arange(0, hs, 2, dtype=np.float64) / hs)  # (hs/2,)
    angles = np.arange(offset, offset + T, dtype=np.float64)[:, None] * inv_freq  # (T, hs/2)
    angles = np.concatenate([angles, angles], axis=1)  # (T, hs): pair (i, i + hs/2) shares
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def rope_forward(x, cos, sin):
    """Rotate each pair of channels (i, i + hs/2) of x by its angle.

    Inputs:
    - x: (B, nh, T, hs) queries or keys of every head
    - cos, sin: (T, hs) from rope_table

    Returns (out, cache): out (B, nh, T, hs); cache (cos, sin).
    For the pair (a, b) = (x_i, x_(i+hs/2)) with angle phi:
        out_i = a cos(phi) - b sin(phi),   out_(i+hs/2) = b cos(phi) + a sin(phi)
    """
    h = x.shape[-1] // 2
    out = x * cos  # (B, nh, T, hs)
    out[..., :h] -= x[..., h:] * sin[:, :h]  # rotate_half: first half gets -x2 sin
    out[..., h:] += x[..., :h] * sin[:, h:]  # second half gets +x1 sin
    return out, (cos, sin)


def rope_backward(dout, cache):
    """Backward of rope_forward.

    The forward multiplies every pair by the rotation matrix R(phi) = [[c, -s], [s, c]]; its
    gradient is multiplication by the transpose, R(phi)^T = R(-phi), the rotation by -phi:
        dx_i = dout_i cos(phi) + dout_(i+hs/2) sin(phi)
        dx_(i+hs/2) = dout_(i+hs/2) cos(phi) - dout_i sin(phi)
    (the same code as the forward with sin negated). A rotation keeps lengths, so
    |dx| = |dout| pair by pair.

    Returns dx (B, nh, T, hs).
    """
    cos, sin = cache
    h = dout.shape[-1] // 2
    dx = dout * cos  # (B, nh, T, hs)
    dx[..., :h] += dout[..., h:] * sin[:, h:]
    dx[..., h:] -= dout[..., :h] * sin[:, :h]
    return dx
