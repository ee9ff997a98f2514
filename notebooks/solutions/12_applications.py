# Solutions of notebook 12_applications: each block replaces the exercise cell of the same name,
# or answers the open question of that name.

# %% my_prompt_targets
def my_prompt_targets(ids, prompt_len):
    """Inputs and targets for training on prompt -> answer sequences.

    Inputs:
    - ids: int (B, T+1), each row a prompt of prompt_len tokens followed by its answer
    - prompt_len: int, the number of prompt tokens

    Returns (x, y), both int (B, T): x the inputs, y the next-token targets, with -1 for
    every target that is a prompt token (the loss ignores -1). ids is not modified.
    """
    x = ids[:, :-1]
    y = ids[:, 1:].copy()  # a copy: writing -1 into a view would change ids
    # y[:, t] = ids[:, t + 1] is a prompt token while t + 1 < prompt_len, i.e. t < prompt_len - 1.
    # The target at t = prompt_len - 1 (the input there is the last prompt token, '=') is the
    # first answer token: it counts.
    y[:, :prompt_len - 1] = -1
    return x, y

# %% why_mask_the_prompt
# Without the mask the model is also trained to predict digits 2 to 4 of the prompt and the
# `=`. The `=` is easy (always at position 4), but the prompt digits are uniform and
# independent: nothing in the context predicts them, so the best the model can do is
# $\ln 10 \approx 2.3$ nats for each of them, forever. That does not stop the model from
# learning to sort, but it gets in the way:
#
# - the loss is the mean over 8 targets instead of the 4 answer targets, so the answer terms
#   carry half the weight in the gradient (with plain SGD, as if the task's learning rate were
#   halved; AdamW divides out a common scale, but not the next point);
# - the three random-digit targets add gradient noise that carries no information about the
#   task: it enters Adam's running averages $m$ and $v$, so the steps that serve the sorting
#   task get smaller and noisier.
#
# The loss curve would also be misleading: it could never fall below about
# $3 \ln 10 / 8 \approx 0.86$ nats, even for a perfect sorter. In instruction tuning the
# prompts are not random, and training on them would teach the model to *write prompts*
# (imitate the user) rather than to answer; masking keeps the objective exactly
# $-\log P(\text{answer} \mid \text{prompt})$.

# %% how_precise_is_the_accuracy
# Each held-out input is right or wrong, so with an accuracy $a$ the count of right answers
# is binomial, and the standard error of $a$ over $n = 500$ inputs is
# $\sqrt{a(1-a)/n}$: about $0.01$ (one percentage point) at $a = 0.95$, about $0.004$ at
# $a = 0.99$, and largest, about $0.022$, at $a = 0.5$. So differences of a percent or two
# between two runs are noise; a 95% interval is roughly $\pm 2$ standard errors.
#
# When the model gets all 500 right, the formula says 0, which is not certainty: with no
# mistake in $n$ trials, error rates up to about $3/n$ (here 0.6%) are still compatible with
# what we saw at 95% confidence (the "rule of three").
#
# "Never seen" is true literally: the 500 inputs were drawn out of the $10^4$ possible ones
# before training and never put in a batch. But they are close relatives of training inputs
# (the same multiset of digits in another order has the *same* answer, and most of its 24
# orderings are in the training set), so this measures generalisation within a very regular
# space, not to a new kind of input. A harder test would hold out whole multisets, or test on
# 5-digit inputs the model has never been trained on at all.
