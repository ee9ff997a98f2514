"""Notebook 12 (applications): the inputs and masked targets of 'prompt -> answer' examples."""

import numpy as np

from .checking import Case, run, variant


def reference_prompt_targets(ids, prompt_len):
    """ids (B, T+1) prompt-then-answer sequences -> (x, y), both (B, T): x = ids[:, :-1],
    y = ids[:, 1:] with the targets that are prompt tokens set to -1 (ignored by the loss)."""
    y = ids[:, 1:].copy()
    y[:, :prompt_len - 1] = -1
    return ids[:, :-1], y


def _pt_ref(ids, prompt_len, shift=0, x_masked=False, fill=-1, unshifted=False):
    x = ids[:, :-1].copy()
    y = (ids[:, :-1] if unshifted else ids[:, 1:]).copy()
    n = max(prompt_len - 1 + shift, 0)
    if x_masked:
        x[:, :n] = fill
    else:
        y[:, :n] = fill
    return x, y


def _pt_in_place(ids, prompt_len):
    y = ids[:, 1:]
    y[:, : prompt_len - 1] = -1
    return ids[:, :-1], y


_PT_IN_PLACE = ("modified ids in place: ids[:, 1:] is a view of ids, so writing -1 into it "
                "changes ids (and x); copy first")

PROMPT_TARGETS_MISTAKES = [
    ("masked one position too many: the target at position prompt_len - 1 is the first "
     "answer token, and it counts", variant(_pt_ref, shift=1)),
    ("masked one position too few: targets that are prompt tokens do not count",
     variant(_pt_ref, shift=-1)),
    ("masked the inputs x instead of the targets y", variant(_pt_ref, x_masked=True)),
    ("masked with 0: the loss ignores -1 (its ignore_index), 0 is a real token",
     variant(_pt_ref, fill=0)),
    ("y not shifted: the target at position t is the *next* token ids[t + 1]",
     variant(_pt_ref, unshifted=True)),
    (_PT_IN_PLACE, _pt_in_place),
]


def check_prompt_targets(fn, show=True):
    """fn(ids, prompt_len) -> (x, y) for training on 'prompt -> answer' examples: x = ids[:-1],
    y = ids[1:] with every target that lies inside the prompt set to -1 (ignored), so the
    loss only counts the answer. ids is (B, T+1), prompt_len the number of prompt tokens.
    Tried with prompt_len = 3, with a one-token prompt (no target is a prompt token) and
    with a prompt of T tokens (only the last target counts)."""
    rng = np.random.default_rng(12)
    tried = [("prompt_len=3", np.array([[5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6]]), 3),
             ("prompt_len=1: nothing to mask", rng.integers(1, 20, (3, 5)), 1),
             ("prompt_len=T=4: one answer token", rng.integers(1, 20, (2, 5)), 4)]
    cases = [Case((ids, n), ("x", "y"), reference_prompt_targets(ids, n), label,
                  arg_names=("ids", "prompt_len"), in_place=_PT_IN_PLACE)
             for label, ids, n in tried]
    return run("prompt masking for continuation tasks", fn, cases,
               PROMPT_TARGETS_MISTAKES, {
        "x": "the inputs are every token but the last", "y": "targets are the next tokens; "
        "a target that is still a prompt token is set to -1"}, show)
