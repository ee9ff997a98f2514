# Solutions of notebook 14_gpt2_in_numpy: each block replaces the exercise cell of the same
# name, or answers the open question of that name.

# %% my_token_surprisal
def my_token_surprisal(logits, targets):
    """Surprisal of each actual next token, in bits.

    Inputs:
    - logits: (T, V) float, row t: the scores of the token after position t
    - targets: (T,) int, the tokens that came next, each in [0, V)

    Returns (T,) float: -log2 softmax(logits[t])[targets[t]] for every t, finite even for
    logits of size 1e3.
    """
    # log softmax(z)_i = z_i - log sum_j exp(z_j). Subtracting the row's max m from every z
    # changes neither (z_i - m - log sum_j exp(z_j - m) is the same number), but now every
    # exponent is <= 0, so nothing overflows and the largest term is exp(0) = 1: no log(0).
    z = logits - logits.max(axis=-1, keepdims=True)            # (T, V)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))   # (T, V) natural log
    nats = -log_p[np.arange(len(targets)), targets]            # (T,) the targets' entries
    # log2 p = ln p / ln 2; a Python float (not np.log's float64) keeps float32 in float32
    return nats / float(np.log(2.0))

# %% nats_per_token_are_not_comparable
# The two numbers are per *token*, and the tokens differ: a course-model token is one
# character, a GPT-2 token is a piece of a word, about 4 characters of English on average. Per
# character, GPT-2's 3.1 nats per token are about $3.1 / 4 \approx 0.8$ nats, that is
# $0.8 / \ln 2 \approx 1.1$ bits per character, against the course model's
# $1.5 / \ln 2 \approx 2.2$ bits per character. So GPT-2 predicts its text much better, even
# though its number is twice as large.
#
# Even that comparison is loose, because the texts differ too (web pages against NumPy's
# docstrings, which are very regular). A fair comparison scores both models on the *same* text
# and divides the total surprise by a unit both share: bits per character, or bits per byte of
# UTF-8 (what compression benchmarks report). Sum $-\log_2 P$ over all tokens of the text and
# divide by its length in characters (or bytes); the tokenizer then no longer matters.

# %% weight_layout
# With `w` of shape `(out, in)` the forward becomes `y = x @ w.T + b`, and the backward
# `dx = dout @ w` (no transpose any more) and `dw = dout.T @ x` (shape `(out, in)`, summed
# over all positions), while `db` is unchanged. Nothing gets slower: `w.T` is a view, and BLAS
# multiplies by a transposed matrix without copying it.
#
# The loader would have to transpose the four matrices GPT-2 stores as `(in, out)` (its
# `Conv1D` layers: `attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`) when it reads a
# checkpoint, and transpose them back when it writes one, which is exactly what PyTorch ports
# of GPT-2 (nanoGPT's `from_pretrained`, for example) do. The embeddings `wte` and `wpe` are
# lookup tables, not linear layers, and stay as they are; the tied head already uses
# `wte.T`. Every such special case is a place for a silent bug (a square `(C, C)` matrix loads
# without error either way round), which is why we chose GPT-2's layout.
