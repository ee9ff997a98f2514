# Solutions for notebooks/02_positional_encoding.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_sinusoidal_table
def my_sinusoidal_table(T, C):
    """The sinusoidal position table of "Attention Is All You Need".

    Inputs:
    - T: number of positions (rows), t = 0 .. T-1
    - C: number of channels, even or odd

    Returns: PE, (T, C) float64, with PE[t, 2i] = sin(t / 10000^(2i/C)) and
             PE[t, 2i+1] = cos(t / 10000^(2i/C))
    """
    pos = np.arange(T)[:, None]                  # (T, 1)
    two_i = np.arange(0, C, 2)                   # (ceil(C/2),) the even channels 2i
    angle = pos / 10000.0 ** (two_i / C)         # (T, ceil(C/2)), divided by C, not C - 1
    table = np.zeros((T, C))
    table[:, 0::2] = np.sin(angle)               # ceil(C/2) even channels
    table[:, 1::2] = np.cos(angle[:, :C // 2])   # floor(C/2) odd channels: for an odd C the
    return table                                 # last pair has its sine and no cosine

# %% causal_without_positions
# Only the last position, ".", gets the same output in both sentences. The other three differ:
#
# | $t$ | "dog bites man ." | "man bites dog ." | same output? |
# |---|---|---|---|
# | 0 | `dog` sees {dog} | `man` sees {man} | no |
# | 1 | `bites` sees {dog, bites} | `bites` sees {man, bites} | no |
# | 2 | `man` sees {dog, bites, man} | `dog` sees {man, bites, dog} | no |
# | 3 | `.` sees {dog, bites, man, .} | `.` sees {man, bites, dog, .} | **yes** |
#
# The rule: without positions, the output at $t$ is a function of the token *at* $t$ (its query)
# and of the **set** of tokens at positions $\le t$ (their keys and values), because the softmax
# weights and the weighted sum do not depend on the order of the terms. Position 2 differs only
# because its own token differs; position 3 has the same token and the same set, so it is
# identical. (Running `causal(X1) - causal(X2)` row by row shows exactly this: differences of
# order 1 at $t = 0, 1, 2$ and about $10^{-16}$ at $t = 3$.)
#
# The set has a size, though: the output at $t$ averages over $t + 1$ tokens, which is how a
# causal model can learn *how far* into the text it is, but never in which order the words came.

# %% add_or_concatenate
# Concatenating is less different than it looks. Write the first linear map after the
# concatenation with its weight split in two blocks of rows:
#
# $$[\,e;\ p\,]\begin{pmatrix} W_e \\ W_p \end{pmatrix} = e\,W_e + p\,W_p,$$
#
# the sum of a projected token vector and a projected position vector. Adding $e + p$ and then
# applying $W$ gives $e\,W + p\,W$: the same form, with the two projections tied. So
# concatenation buys separate maps for tokens and positions at the price of a wider vector:
# every later layer has to be $C_e + C_p$ wide, and the residual stream with it.
#
# Adding keeps the width $C$ and loses surprisingly little. In many dimensions the model can keep
# token information and position information in different directions of the same space (a
# learned `wpe` is free to do exactly that), and the linear maps of attention can read either one.
# That is why GPT-2 and the original Transformer add.
