"""Surrogate losses: gradients w.r.t. logp by finite differences, the clip's kinks, ratio = 1."""

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from pgnumpy.distributions import Categorical
from pgnumpy.objectives import (
    adapt_beta,
    clipped_value_loss,
    normalize,
    pg_loss,
    ppo_clip_loss,
    ppo_kl_loss,
    value_loss,
)
from pgnumpy.policy import CategoricalPolicy
from pgnumpy.testing import norm_rel_error, numeric_gradient, with_params

TOL = 1e-7


@st.composite
def batches(draw):
    n, seed = draw(st.integers(1, 8)), draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    logp_old = rng.uniform(-3, -0.01, n)
    logp = logp_old + rng.normal(0, 0.3, n)
    adv = rng.normal(size=n)
    return logp, logp_old, adv, draw(st.sampled_from([0.1, 0.2, 0.3]))


@given(batches())
def test_pg_loss_gradient(b):
    logp, _, adv, _ = b
    _, g = pg_loss(logp, adv)
    assert norm_rel_error(g, numeric_gradient(lambda x: pg_loss(x, adv)[0], logp.copy())) < TOL


@given(batches())
def test_ppo_clip_gradient_away_from_kinks(b):
    logp, logp_old, adv, eps = b
    ratio = np.exp(logp - logp_old)
    assume(np.all(np.abs(ratio - (1 + eps)) > 1e-4) and np.all(np.abs(ratio - (1 - eps)) > 1e-4))
    _, g, _ = ppo_clip_loss(logp, logp_old, adv, eps)
    fd = numeric_gradient(lambda x: ppo_clip_loss(x, logp_old, adv, eps)[0], logp.copy())
    assert norm_rel_error(g, fd) < TOL or np.abs(g - fd).max() < 1e-12  # all clipped: both 0


def test_ppo_clip_at_the_kinks_is_one_sided_as_derived():
    eps, h = 0.2, 1e-6
    for A, r in [(1.0, 1 + eps), (-1.0, 1 - eps)]:
        logp_old = np.array([-1.0])
        logp = logp_old + np.log(r)
        _, g, _ = ppo_clip_loss(logp, logp_old, np.array([A]), eps)
        assert g[0] == 0.0  # at the kink we take the clipped side (PPO.3)

        def f(x, logp_old=logp_old, A=A):
            return ppo_clip_loss(x, logp_old, np.array([A]), eps)[0]

        inside = (f(logp) - f(logp - h)) / h if A > 0 else (f(logp + h) - f(logp)) / h
        outside = (f(logp + h) - f(logp)) / h if A > 0 else (f(logp) - f(logp - h)) / h
        np.testing.assert_allclose(inside, -r * A, rtol=1e-5)  # unclipped side: -r A
        assert outside == 0.0  # clipped side: flat


@given(batches())
def test_ppo_clip_at_ratio_one_is_the_vpg_gradient_exactly(b):
    _, logp_old, adv, eps = b
    _, g_clip, info = ppo_clip_loss(logp_old.copy(), logp_old, adv, eps)
    _, g_vpg = pg_loss(logp_old, adv)
    np.testing.assert_array_equal(g_clip, g_vpg)
    assert info["clip_frac"] == 0.0 and info["approx_kl"] == 0.0


@given(batches())
def test_ppo_kl_gradient_through_the_network(b):
    """d/dtheta of -mean(r A) + beta mean(KL(old || pi)), through logits and the MLP."""
    _, _, adv, _ = b
    n = len(adv)
    rng = np.random.default_rng(n)
    pol = CategoricalPolicy(3, 3, [4], rng=rng, dtype=np.float64)
    pol.net.params[:] = rng.normal(0, 0.5, pol.params.shape)
    obs, act = rng.normal(size=(n, 3)), rng.integers(0, 3, n)
    old = Categorical(rng.normal(size=(n, 3)))
    logp_old = old.log_prob(act)
    beta = 0.7

    def loss(_):
        d = Categorical(pol.net(obs))
        return ppo_kl_loss(d.log_prob(act), logp_old, adv, old.kl(d), beta)[0]

    dist, cache = pol.dist(obs)
    _, dlogp, dkl = ppo_kl_loss(dist.log_prob(act), logp_old, adv, old.kl(dist), beta)
    g = pol.backward(cache, dist, act, dlogp, dkl=dkl, old=old)
    assert norm_rel_error(g, numeric_gradient(with_params(pol.net.params, lambda: loss(None)),
                                              pol.net.params)) < TOL


def test_adaptive_beta():
    assert adapt_beta(1.0, 0.1, 0.01) == 2.0
    assert adapt_beta(1.0, 0.001, 0.01) == 0.5
    assert adapt_beta(1.0, 0.01, 0.01) == 1.0


@given(st.integers(1, 8), st.integers(0, 2**16))
def test_value_loss_gradient(n, seed):
    rng = np.random.default_rng(seed)
    pred, target = rng.normal(size=n), rng.normal(size=n)
    _, g = value_loss(pred, target)
    assert norm_rel_error(g, numeric_gradient(lambda x: value_loss(x, target)[0],
                                              pred.copy())) < TOL


@given(st.integers(1, 8), st.integers(0, 2**16))
def test_clipped_value_loss_gradient_away_from_kinks(n, seed):
    rng = np.random.default_rng(seed)
    pred, val_old, target = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    eps = 0.2
    v_clip = val_old + np.clip(pred - val_old, -eps, eps)
    assume(np.all(np.abs(np.abs(pred - val_old) - eps) > 1e-4))
    assume(np.all(np.abs((v_clip - target) ** 2 - (pred - target) ** 2) > 1e-6))
    _, g = clipped_value_loss(pred, val_old, target, eps)
    fd = numeric_gradient(lambda x: clipped_value_loss(x, val_old, target, eps)[0], pred.copy())
    assert norm_rel_error(g, fd) < TOL or np.abs(g - fd).max() < 1e-12


def test_normalize_zero_mean_unit_std():
    x = np.random.default_rng(0).normal(3.0, 5.0, 1000)
    z = normalize(x)
    assert abs(z.mean()) < 1e-12 and abs(z.std() - 1) < 1e-8  # the 1e-8 guard in the divisor
    assert np.all(np.argsort(z) == np.argsort(x))  # order (the sign of each push) kept relative
