# Solutions of notebook 09_training: each block replaces the exercise cell of the same name,
# or answers the open question of that name.

# %% my_cosine_lr
def my_cosine_lr(it, lr, min_lr, warmup_iters, lr_decay_iters):
    """The learning rate at step `it`: linear warmup, half-cosine decay, then a floor.

    Inputs:
    - it: the step, an int >= 0
    - lr: the peak learning rate (alpha_max), reached at the end of the warmup
    - min_lr: the floor (alpha_min), reached at step lr_decay_iters
    - warmup_iters: W, the number of warmup steps
    - lr_decay_iters: D, the step at which the decay ends

    Returns the learning rate, a float.
    """
    if it < warmup_iters:  # the line through 0 at it = -1 and lr at it = W
        return lr * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters or lr_decay_iters <= warmup_iters:  # the floor
        return min_lr
    r = (it - warmup_iters) / (lr_decay_iters - warmup_iters)  # 0 -> 1 over the decay
    # cos(pi r) falls from 1 to -1 with zero slope at both ends; (1 + cos) / 2 from 1 to 0
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr - min_lr)

# %% why_warmup
# At $t = 1$ the running averages hold one gradient: $m = (1-\beta_1) g$ and
# $v = (1-\beta_2) g^2$, and the bias corrections divide exactly these factors out, so
# $\hat m = g$, $\hat v = g^2$ and the update is $g / (|g| + \epsilon) \approx \mathrm{sign}(g)$.
# Every parameter moves by the full learning rate, $\pm\alpha$, whether its gradient was
# large or a tiny bit of noise.
#
# With $\alpha = 10^{-3}$ and weights of size about $0.02$ at initialisation, that first step
# changes every weight by about 5%, in directions taken from one random batch. In the next
# steps $\hat v$ is still an average over very few squared gradients, so the normalisation is
# just as noisy: a parameter whose gradients happened to be small so far gets a large step as
# soon as its gradient grows. Early on the loss surface is also at its steepest and the
# logits change fastest, so large steps there can push the model into a bad region (huge
# logits, saturated softmax) that it takes many steps to leave.
#
# The warmup makes the first steps small, $\alpha/(W+1)$, $2\alpha/(W+1)$, ..., while the
# averages fill up; after $W = 100$ steps ($\beta_2 = 0.99$ averages over about 100 steps)
# $\hat v$ is a trustworthy scale and the full rate is safe.

# %% fixed_eval_windows
# Each evaluation point is a mean over a sample of windows, so it carries sampling noise. With
# new windows every time, each point would get its own noise: the evaluation curves would
# wiggle, and late in training, when the loss improves by a few hundredths of a nat between
# evaluations, the wiggle is of the same size as the improvement. You could not tell whether
# the model got better or the windows got easier.
#
# With the same windows every time, the noise is the same for every point (the same easy and
# hard windows), so it cancels in a difference: the change between two points is the model's
# change. The price is a small fixed bias of the level (the fixed windows are one sample of the
# split, not the whole split), which does not matter for comparing points or runs. Simulations
# call this trick *common random numbers*.
