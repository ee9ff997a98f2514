# Solutions for notebooks/00_overview.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_sequence_nll
def my_sequence_nll(probs, tokens):
    """The post's loss: the mean negative log-probability of the tokens that came.

    Inputs:
    - probs: (T, V) floats, row t is the distribution P(. | x_<t) (each row sums to 1)
    - tokens: (T,) integer ids, the tokens x_t that actually came

    Returns: L = -(1/T) sum_t log P(x_t | x_<t), a Python float
    """
    tokens = np.asarray(tokens)
    T = len(tokens)
    p_true = probs[np.arange(T), tokens]  # (T,) row t, column tokens[t]: P(x_t | x_<t)
    return float(-np.mean(np.log(p_true)))

# %% confident_mistake
# $P(\text{abba}) = 0.5 \cdot 0.6 \cdot 0.4 \cdot 0 = 0$ and
# $\mathcal{L} = -\frac14(\ln 0.5 + \ln 0.6 + \ln 0.4 + \ln 0) = +\infty$: one position is enough.
#
# The log makes the loss punish confidence in the wrong answer without bound. At one position,
# a hesitant $P = 0.3$ costs $-\ln 0.3 \approx 1.2$ nats, $P = 0.01$ costs 4.6 nats,
# $P = 10^{-6}$ costs 13.8 and $P = 0$ costs infinity. A model trained on this loss therefore
# learns to keep a little probability on everything that could plausibly come, rather than bet
# everything on its favourite.
#
# A GPT cannot make that mistake exactly: its probabilities are $e^{z_v} / \sum_u e^{z_u}$, and
# $e^{z}$ is positive for every finite logit $z$. In floating point $e^{z}$ can underflow to 0,
# which is why the package never computes $\log(\text{softmax})$ in two steps: it uses
# $\log p_v = z_v - \max z - \log \sum_u e^{z_u - \max z}$ (notebook 06), which stays finite.

# %% initial_loss
# GPT-2's initialisation draws the weights from $\mathcal{N}(0, 0.02^2)$, and the head is tied
# to `wte`: `logits = ln_f(x) @ wte.T`. The final layer norm gives vectors with entries of size
# about 1, so each logit is a sum of $C$ products of size $\approx 0.02$: its spread is about
# $0.02\sqrt{C} \approx 0.1$ for $C = 32$. Logits that are all nearly equal give a nearly uniform
# softmax, and a uniform guess costs exactly $\ln V$ (the dashed line of section 2's plot).
#
# A first loss far above $\ln V$ means the model starts out *confidently wrong*: its logits are
# large, so it puts most of the probability on a few arbitrary tokens, and the tokens that come
# get tiny probabilities (see the question above). That is a sign of a too-large initialisation.
# For example, drawing `wte` with standard deviation 1 instead of 0.02 makes the logits of the
# `tiny` model spread by about 6 and its initial loss nearly 30 nats instead of about 4.8: the
# first part of training is then spent undoing the confidence instead of learning. Notebook 15
# looks at the init scale.
