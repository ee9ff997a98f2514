# Solutions for notebooks/15_training_dynamics.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_bigram_model
def my_bigram_model(ids, V, smoothing):
    """The bigram model of a token stream, estimated by counting.

    Inputs:
    - ids: int array of shape (N,), a token stream (N >= 2), every id in [0, V)
    - V: the vocabulary size
    - smoothing: float >= 0, added to the count of every pair (a, b)

    Returns:
    - P: float64 array of shape (V, V); P[a, b] is the probability that token b follows
      token a. Each row of a token that has a follower (or of every token when smoothing > 0)
      sums to 1; without smoothing, the row of a token never followed by anything is 0/0 (nan).
    """
    # On paper: with n[a, b] the number of times b follows a, the log-probability of the stream
    # is sum_{a,b} n[a, b] ln P[a, b]. Row a is its own problem: maximise
    # sum_b n[a, b] ln P[a, b] subject to sum_b P[a, b] = 1. With a Lagrange multiplier lam_a,
    # the derivative in P[a, b] is n[a, b] / P[a, b] - lam_a = 0, so P[a, b] = n[a, b] / lam_a,
    # and the constraint gives lam_a = sum_b n[a, b]: the counts of row a divided by their total.
    # Smoothing adds s pseudo-counts to every n[a, b] before the same division.
    ids = np.asarray(ids)
    # The pair (a, b) as the single number a * V + b: bincount counts every occurrence,
    # repeated pairs included, in one pass over the N - 1 pairs. (np.add.at(counts, (a, b), 1)
    # counts them right too, more slowly; counts[a, b] += 1 would count a repeated pair once.)
    counts = np.bincount(ids[:-1] * V + ids[1:], minlength=V * V).reshape(V, V)
    counts = counts.astype(np.float64) + smoothing
    with np.errstate(invalid="ignore"):  # a row with no counts and no smoothing: 0 / 0
        return counts / counts.sum(axis=1, keepdims=True)  # row a: a distribution over b

# %% position_zero
# No: at best it can *match* the bigram there. At position 0 the model's whole input is one
# character, plus the position embedding of position 0, which carries no information because
# the windows start at random places of the text. The best any predictor can do from one
# character is the true distribution of the next character given that one, and the bigram
# table is an estimate of exactly that, from 1.5 million pairs: so good an estimate that its
# training and validation losses differ by less than 0.01 nats (the smoothing table). A GPT at
# position 0 can approach the bigram's loss from above; it cannot get meaningfully below it
# (only by the noise of a finite evaluation).
#
# In a full run the printout shows the small GPT *behind* the bigram at position 0 and ahead
# of it from two characters of context on. It trails at position 0 because it has trained
# briefly, and only one prediction in 64 that it learned from had a one-character context: the
# same weights serve every position, and most of what it saw had a longer context. Trained ten times longer, its
# position-0 loss would creep down towards the bigram's, and stop there. The gains of longer
# training show at the later positions, where there is context to exploit: that is where a
# better model pulls away from the bigram.

# %% initial_loss_formula
# The loss at one position is $\ell = -z_y + \ln \sum_{v=1}^{V} e^{z_v}$. The target's logit
# $z_y$ has mean 0, so $E[\ell] = E\left[\ln \sum_v e^{z_v}\right]$. When $s$ is small no term
# dominates the sum, and with $V = 126$ terms the sum is close to $V$ times the mean of one
# term, $E[e^{z}] = e^{s^2/2}$ (the mean of a log-normal variable). So
# $E[\ell] \approx \ln\left(V e^{s^2/2}\right) = \ln V + s^2/2$: independent random logits can
# only push the first loss *above* $\ln V$.
#
# For $\sigma = 0.02$ ($s \approx 0.16$) that predicts $4.836 + 0.013 \approx 4.85$, yet the
# table measures a first loss below $\ln V$. The wrong assumption is *independence*. The LM
# head is the token embedding, `logits = ln_f(x) @ wte.T`, and at initialisation the residual
# stream is almost just `wte[current] + wpe[t]` (the blocks add very little yet). After the
# final layer norm (which divides by the stream's spread, about $\sigma\sqrt{2}$), the logit of
# the *current* character is about $\lVert w_\text{current} \rVert^2 / (\sigma\sqrt2) \approx
# C\sigma^2/(\sigma\sqrt2) = \sigma C/\sqrt2 \approx 0.9$, a clear bonus over the other logits
# (spread 0.16). The untrained model already bets a little that the next character repeats
# the current one. In numpy-docs it does about one time in eleven (the spaces of indentation,
# `>>>`, `------`), and at those positions the loss is well below $\ln V$, which pulls the mean
# below it; at the other positions the formula holds to about a hundredth.
#
# For $\sigma = 1$ ($s = 8$) the formula gives $4.8 + 32 \approx 37$, but the measured first
# loss is about 20. A large $s$ breaks the step "the sum is $V$ times the mean of a term":
# $E[e^{z}] = e^{32}$ is made by rare huge values that 126 samples practically never contain.
# The sum is instead dominated by its largest term, $\ln \sum_v e^{z_v} \approx \max_v z_v$,
# and the largest of 126 samples of $\mathcal{N}(0, s^2)$ is about $2.6\,s \approx 21$ (at
# most $s\sqrt{2\ln V} \approx 25$). That matches the measured 20: a confidently wrong model
# pays the gap between its favourite's logit and the target's.
