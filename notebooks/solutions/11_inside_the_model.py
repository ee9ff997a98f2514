# Solutions of notebook 11_inside_the_model: each block replaces the exercise cell of the same
# name, or answers the open question of that name.

# %% my_cosine_similarity
def my_cosine_similarity(E):
    """Cosine similarity between every pair of rows of E.

    Inputs:
    - E: (N, C) one vector per row (none of them zero)

    Returns (N, N): entry [i, j] is cos(E[i], E[j]), in [-1, 1], with 1 on the diagonal.
    """
    # (E @ E.T)[i, j] is the dot product of rows i and j: all N^2 of them in one product.
    # Dividing every row by its length first (axis=1: along C, one length per row) makes each
    # of those dot products a cosine.
    unit = E / np.linalg.norm(E, axis=1, keepdims=True)  # (N, C), every row of length 1
    return unit @ unit.T                                  # (N, N)

# %% why_digits_cluster
# The logit of character $c$ at a position is $h \cdot W_{te}[c]$, with $h = \mathrm{ln}_f(x)$
# the model's final vector there. The gradient of the loss with respect to row $c$ is
# $(p_c - y_c)\,h$ summed over all positions: every time $c$ is the right answer its row is
# pulled towards $h$, and every time it gets probability without being right it is pushed
# away from $h$, in proportion to $p_c$.
#
# After `np.zeros(` or `[1, 2, ` the model cannot know which digit comes next, so the contexts
# in which `3` is the answer and those in which `7` is the answer produce similar $h$ vectors,
# and each of the two rows also gets pushed away from the $h$ vectors where the *other* digit
# was right, in the same way. Two rows that receive nearly the same stream of updates end up
# pointing in similar directions: the model only needs the digit rows to share a direction
# ("a digit comes next") plus small differences for whatever does tell them apart. The input
# side adds to this: characters whose futures are alike are best given similar vectors too,
# and since `wte` is shared, both pressures act on the same rows.

# %% attention_must_go_somewhere
# A softmax row cannot be all zeros: the head *must* hand out a total weight of 1 over the
# positions it can see, and its output is that weighted average of their value vectors, added
# to the residual stream. If nothing is useful, whatever it reads is noise for the next layers.
#
# Models learn to make such a head harmless:
# - **a resting place**: put the weight on one position whose value vector is close to zero,
#   so the average adds almost nothing. The first position is the classic one (GPT-2 and larger
#   models do it a lot): it is visible from every query, and its key can be recognised from the
#   position embedding alone;
# - **the position itself** (the diagonal), when its value vector carries little;
# - **a small output**: the projection after the heads (`c_proj`) can give a head's output a
#   small scale, or the next layer norm and MLP can learn to ignore that direction.
# Our small model, trained on windows that start anywhere in the text, showed no first-token
# resting place in a full run (the "first" column of the table stayed below uniform); its heads
# spread the unneeded weight over nearby characters instead. Some newer models add an explicit
# "attention sink" (a learned extra key, or a softmax with an extra 1 in the denominator) for
# exactly this purpose.
