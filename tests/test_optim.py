"""AdamW, SGD, clipping and the schedule against values computed by hand."""

import math

import numpy as np
import pytest

from numpygpt import SGD, AdamW, clip_grad_norm, cosine_lr
from numpygpt.kernels import fast, kernels, ops
from numpygpt.layers.adamw import adamw_update, decays


def test_adamw_matches_hand_computation():
    # one 2-D weight (decayed) and one bias (not decayed); three steps with known gradients
    w = np.array([[0.5, -1.0]], dtype=np.float64)
    b = np.array([2.0], dtype=np.float64)
    params = {"w": w, "b": b}
    lr, (b1, b2), eps, wd = 0.1, (0.9, 0.99), 1e-8, 0.5
    opt = AdamW(params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    grads_seq = [(np.array([[1.0, -2.0]]), np.array([0.5])),
                 (np.array([[0.0, 4.0]]), np.array([-1.0])),
                 (np.array([[-3.0, 1.0]]), np.array([0.25]))]
    # by hand, element by element, in plain Python floats
    ew, eb = [0.5, -1.0], 2.0
    mw, vw, mb, vb = [0.0, 0.0], [0.0, 0.0], 0.0, 0.0
    for t, (gw, gb) in enumerate(grads_seq, start=1):
        opt.step({"w": gw.copy(), "b": gb.copy()})
        for j in range(2):
            g = gw[0, j]
            ew[j] *= 1 - lr * wd  # decoupled decay, 2-D only
            mw[j] = b1 * mw[j] + (1 - b1) * g
            vw[j] = b2 * vw[j] + (1 - b2) * g * g
            mhat, vhat = mw[j] / (1 - b1**t), vw[j] / (1 - b2**t)
            ew[j] -= lr * mhat / (math.sqrt(vhat) + eps)
        g = gb[0]
        mb = b1 * mb + (1 - b1) * g
        vb = b2 * vb + (1 - b2) * g * g
        eb -= lr * (mb / (1 - b1**t)) / (math.sqrt(vb / (1 - b2**t)) + eps)
        np.testing.assert_allclose(w[0], ew, rtol=1e-12)
        np.testing.assert_allclose(b[0], eb, rtol=1e-12)
        if t == 1:
            # The first Adam step moves each weight by lr (up to eps), whatever the size of its
            # gradient: bias correction makes m_hat = g and v_hat = g^2. b: 2 - 0.1 = 1.9;
            # w decays first, by the factor 1 - lr * wd = 0.95: 0.475 - 0.1, -0.95 + 0.1.
            assert math.isclose(b[0], 1.9, rel_tol=1e-7)
            np.testing.assert_allclose(w[0], [0.375, -0.85], rtol=1e-7)
    assert opt.t == 3


@pytest.mark.parametrize("which", ["fast", "plain"])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_adamw_step_equals_the_plain_update(dtype, rtol, which):
    # AdamW.step (by default the fast kernel: in place, one scratch buffer) against
    # layers.adamw_update (the textbook lines, on copies), over several steps with a changing
    # lr: equal up to float rounding.
    rng = np.random.default_rng(3)
    shapes = {"w": (4, 3), "b": (3,), "wte": (5, 4)}
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    ref = {k: (p.copy(), np.zeros_like(p), np.zeros_like(p)) for k, p in params.items()}
    betas, eps, wd = (0.9, 0.95), 1e-8, 0.1
    opt = AdamW(params, lr=0.01, betas=betas, eps=eps, weight_decay=wd)
    with kernels(which):
        assert opt_update_is(which)
    for t in range(1, 8):
        lr = 0.01 * (1 - t / 10)
        opt.lr = lr
        grads = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
        with kernels(which):
            opt.step({k: g.copy() for k, g in grads.items()})
        for k, (p, m, v) in ref.items():
            adamw_update(p, grads[k], m, v, t, lr, betas, eps, wd)  # in place, the copies
            assert p.dtype == dtype
            np.testing.assert_allclose(params[k], p, rtol=rtol, err_msg=f"{k} at step {t}")
            np.testing.assert_allclose(opt.m[k], m, rtol=rtol, err_msg=f"m/{k} at step {t}")
            np.testing.assert_allclose(opt.v[k], v, rtol=rtol, err_msg=f"v/{k} at step {t}")
    assert [k for k, p in params.items() if decays(p)] == ["w", "wte"]


def opt_update_is(which):
    """The optimizer's update is the table's: the fast twin, or layers.adamw_update."""
    return ops.adamw_update is (fast.adamw_update if which == "fast" else adamw_update)


def test_adamw_first_step_is_lr_sized():
    p = {"b": np.array([1.0, 1.0])}
    AdamW(p, lr=0.01).step({"b": np.array([1e-3, -50.0])})
    np.testing.assert_allclose(p["b"], [0.99, 1.01], rtol=1e-6)


def test_weight_decay_only_on_2d_params():
    p = {"w": np.ones((2, 2)), "b": np.ones(2), "ln.weight": np.ones(3)}
    opt = AdamW(p, lr=0.1, weight_decay=0.2)
    for _ in range(3):
        opt.step({k: np.zeros_like(v) for k, v in p.items()})
    np.testing.assert_allclose(p["w"], (1 - 0.1 * 0.2) ** 3)
    np.testing.assert_array_equal(p["b"], 1.0)
    np.testing.assert_array_equal(p["ln.weight"], 1.0)


def test_lr_can_change_between_steps_and_float32_stays_float32():
    p = {"w": np.ones((2, 3), dtype=np.float32)}
    opt = AdamW(p, lr=0.1)
    opt.step({"w": np.ones((2, 3), dtype=np.float32)})
    np.testing.assert_allclose(p["w"], 0.9, rtol=1e-6)
    opt.lr = 0.0
    opt.step({"w": np.ones((2, 3), dtype=np.float32)})
    np.testing.assert_allclose(p["w"], 0.9, rtol=1e-6)
    assert p["w"].dtype == np.float32 and opt.m["w"].dtype == np.float32


def test_adamw_state_round_trip_continues_identically():
    rng = np.random.default_rng(0)
    grads = [{"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)} for _ in range(6)]
    a = {"w": np.ones((3, 2)), "b": np.zeros(2)}
    opt_a = AdamW(a, lr=0.05, weight_decay=0.1)
    for g in grads:
        opt_a.step({k: v.copy() for k, v in g.items()})
    b = {"w": np.ones((3, 2)), "b": np.zeros(2)}
    opt_b = AdamW(b, lr=0.05, weight_decay=0.1)
    for g in grads[:3]:
        opt_b.step({k: v.copy() for k, v in g.items()})
    state = opt_b.state_dict()
    c = {k: v.copy() for k, v in b.items()}
    opt_c = AdamW(c, lr=1.0)
    opt_c.load_state_dict(state)
    for g in grads[3:]:
        opt_c.step({k: v.copy() for k, v in g.items()})
    for k in a:
        np.testing.assert_array_equal(a[k], c[k])


def test_optimizer_rejects_mismatched_grads_and_state():
    p = {"w": np.ones((2, 2))}
    opt = AdamW(p)
    with pytest.raises(ValueError, match="missing"):
        opt.step({})
    with pytest.raises(ValueError, match="shape"):
        opt.step({"w": np.ones(3)})
    with pytest.raises(ValueError, match="not AdamW"):
        opt.load_state_dict(SGD(p).state_dict())
    bad = opt.state_dict()
    bad["slots"]["m"] = {"w": np.ones((3, 3))}
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)


def test_sgd_momentum_by_hand():
    p = {"w": np.array([[1.0]])}
    opt = SGD(p, lr=0.1, momentum=0.9)
    expected, buf = 1.0, 0.0
    for g in (1.0, 2.0, -1.0):
        opt.step({"w": np.array([[g]])})
        buf = 0.9 * buf + g
        expected -= 0.1 * buf
        assert math.isclose(p["w"][0, 0], expected, rel_tol=1e-12)
    q = {"w": np.array([[1.0]])}
    SGD(q, lr=0.1).step({"w": np.array([[3.0]])})
    assert math.isclose(q["w"][0, 0], 0.7)


def test_clip_grad_norm():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    total = clip_grad_norm(g, 1.0)
    assert total == 5.0
    np.testing.assert_allclose(np.sqrt(sum((v * v).sum() for v in g.values())), 1.0, rtol=1e-6)
    np.testing.assert_allclose(g["a"], [0.6, 0.0], rtol=1e-6)
    g = {"a": np.array([0.3, 0.4], dtype=np.float32)}
    assert math.isclose(clip_grad_norm(g, 1.0), 0.5, rel_tol=1e-6)
    np.testing.assert_array_equal(g["a"], np.array([0.3, 0.4], dtype=np.float32))  # untouched
    assert g["a"].dtype == np.float32


def test_cosine_schedule_by_hand():
    lr, min_lr, warm, decay = 1e-3, 1e-4, 100, 2000
    assert math.isclose(cosine_lr(0, lr, min_lr, warm, decay), lr * 1 / 101)
    assert math.isclose(cosine_lr(99, lr, min_lr, warm, decay), lr * 100 / 101)
    assert math.isclose(cosine_lr(100, lr, min_lr, warm, decay), lr)  # cosine starts at the top
    assert math.isclose(cosine_lr(1050, lr, min_lr, warm, decay), (lr + min_lr) / 2)
    assert math.isclose(cosine_lr(2000, lr, min_lr, warm, decay), min_lr)
    assert cosine_lr(5000, lr, min_lr, warm, decay) == min_lr
    quarter = 100 + 1900 / 4
    assert math.isclose(cosine_lr(quarter, lr, min_lr, warm, decay),
                        min_lr + 0.5 * (1 + math.cos(math.pi / 4)) * (lr - min_lr))
    lrs = [cosine_lr(i, lr, min_lr, warm, decay) for i in range(100, 2001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))  # decays monotonically


def test_adamw_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w0, b0 = rng.standard_normal((4, 3)), rng.standard_normal(3)
    grads = [(rng.standard_normal((4, 3)), rng.standard_normal(3)) for _ in range(10)]
    p = {"w": w0.copy(), "b": b0.copy()}
    opt = AdamW(p, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    tw, tb = torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    topt = torch.optim.AdamW([{"params": [tw], "weight_decay": 0.1},
                              {"params": [tb], "weight_decay": 0.0}],
                             lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    for i, (gw, gb) in enumerate(grads):
        lr = 0.01 * (1 - i / 20)
        opt.lr = lr
        for group in topt.param_groups:
            group["lr"] = lr
        opt.step({"w": gw.copy(), "b": gb.copy()})
        tw.grad, tb.grad = torch.tensor(gw), torch.tensor(gb)
        topt.step()
    np.testing.assert_allclose(p["w"], tw.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(p["b"], tb.detach().numpy(), rtol=1e-12, atol=1e-14)
