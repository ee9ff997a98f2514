# Solutions for notebooks/13_bpe_tokenizer.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_merge
def my_merge(ids, pair, new_id):
    """One BPE merge step.

    Inputs:
    - ids: list of int token ids
    - pair: (a, b), two ids
    - new_id: the id that replaces each occurrence of a followed by b

    Returns: a new list of ids, every non-overlapping (a, b) replaced by new_id, scanning left
    to right; `ids` itself is not modified
    """
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)      # the pair: emit the new token, skip both halves
            i += 2
        else:
            out.append(ids[i])      # anything else: copy it and move on by one
            i += 1
    return out

# %% rank_order
# They do not agree. The 12 merges of section 2 begin `h+e`, `t+he`, ` +the`, `a+t`, ...
#
# - **Rank order** on `" lathe"` (bytes ` l a t h e`): the lowest-ranked pair present is `h+e`
#   (rank 0), then `t+he` (rank 1): by the time `a+t` (rank 3) is considered, the `t` is gone.
#   Then ` +l` merges. Result: `" l" | "a" | "the"`.
# - **Longest match** from the left: `" l"`, then the longest token starting at `a` is `"at"`,
#   then `"he"`. Result: `" l" | "at" | "he"`.
#
# Why rank order: the tokens of the vocabulary mean what the *model* learned they mean, and the
# model only ever saw text segmented by the merges applied in their order (replaying the merges
# by rank gives exactly the segmentation that training produced for the same chunk). Here
# "the" inside a word was always the token `"the"`; the longest-match rule would show the model
# `"at" + "he"`, a sequence it has rarely or never seen for these letters, so it would predict
# worse, and the ids would no longer be GPT-2's ids for that text. The merge table is a
# procedure, not just a list of tokens: the same vocabulary with another segmentation rule is a
# different tokenizer.
