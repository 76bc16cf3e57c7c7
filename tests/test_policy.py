"""Gradients through the whole network: the surrogate, the value and Q losses, the lemma."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgnumpy.distributions import Categorical, DiagGaussian
from pgnumpy.objectives import pg_loss
from pgnumpy.policy import CategoricalPolicy, GaussianPolicy, QCritic, ValueCritic
from pgnumpy.testing import norm_rel_error, numeric_gradient, with_params

TOL = 1e-7  # norm-relative error; float64 central differences reach ~1e-9 on these nets


def setup(seed, obs_dim, n_act, hidden, activation, batch):
    rng = np.random.default_rng(seed)
    pol = CategoricalPolicy(obs_dim, n_act, hidden, activation, rng=rng, dtype=np.float64)
    pol.net.params[:] = rng.normal(0, 0.7, pol.params.shape)  # not the near-uniform init
    obs = rng.normal(size=(batch, obs_dim))
    act = rng.integers(0, n_act, batch)
    phi = rng.normal(size=batch)
    return rng, pol, obs, act, phi


def surrogate(pol, obs, act, phi, ent_coef):
    dist = Categorical(pol.net(obs))
    loss, _ = pg_loss(dist.log_prob(act), phi)
    return loss - ent_coef * dist.entropy().mean()


def analytic(pol, obs, act, phi, ent_coef):
    dist, cache = pol.dist(obs)
    _, dlogp = pg_loss(dist.log_prob(act), phi)
    return pol.backward(cache, dist, act, dlogp, dent=-ent_coef / len(obs))


nets = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**16),
        "obs_dim": st.integers(1, 4),
        "n_act": st.integers(2, 4),
        "hidden": st.lists(st.integers(1, 5), min_size=1, max_size=2),
        "activation": st.just("tanh"),  # relu kinks make finite differences unreliable
        "batch": st.integers(1, 5),
    }
)


@given(nets, st.sampled_from([0.0, 0.3]))
def test_surrogate_gradient_through_the_network_matches_finite_differences(kw, ent_coef):
    _, pol, obs, act, phi = setup(**kw)
    g = analytic(pol, obs, act, phi, ent_coef)
    fd = numeric_gradient(with_params(pol.net.params,
                                      lambda: surrogate(pol, obs, act, phi, ent_coef)),
                          pol.net.params)
    assert norm_rel_error(g, fd) < TOL


def test_a_wrong_policy_gradient_fails_the_same_check():
    _, pol, obs, act, phi = setup(3, 3, 3, [4], "tanh", 4)
    fd = numeric_gradient(with_params(pol.net.params,
                                      lambda: surrogate(pol, obs, act, phi, 0.0)), pol.net.params)
    # plant a bug: the entropy term's sign flipped, with a coefficient where it matters
    g_bad = analytic(pol, obs, act, phi, -0.3)
    fd_ent = numeric_gradient(with_params(pol.net.params,
                                          lambda: surrogate(pol, obs, act, phi, 0.3)),
                              pol.net.params)
    assert norm_rel_error(g_bad, fd_ent) > 1e-3
    # and a scaled gradient (a forgotten 1/n) fails too
    assert norm_rel_error(2 * analytic(pol, obs, act, phi, 0.0), fd) > 1e-3


@given(nets)
def test_grad_log_prob_lemma_exactly_through_the_network(kw):
    """sum_a pi(a|s) grad_theta log pi(a|s) = 0 (EGLP.1), every state, every weight."""
    _, pol, obs, _, _ = setup(**kw)
    n_act = pol.net.sizes[-1]
    for s in obs:
        dist, cache = pol.dist(s[None])
        total = np.zeros_like(pol.params)
        scale = 0.0
        for a in range(n_act):
            g = pol.backward(cache, dist, np.array([a]), np.ones(1))
            total += dist.probs[0, a] * g
            scale += dist.probs[0, a] * np.abs(g).max()
        assert np.abs(total).max() <= 1e-10 * max(1.0, scale)


@given(nets)
def test_value_loss_gradient_matches_finite_differences(kw):
    rng = np.random.default_rng(kw["seed"])
    vf = ValueCritic(kw["obs_dim"], kw["hidden"], "tanh", rng=rng, dtype=np.float64)
    obs, target = rng.normal(size=(kw["batch"], kw["obs_dim"])), rng.normal(size=kw["batch"])
    _, g = vf.loss_and_grad(obs, target)
    fd = numeric_gradient(with_params(vf.net.params, lambda: vf.loss_and_grad(obs, target)[0]),
                          vf.net.params)
    assert norm_rel_error(g, fd) < TOL


@given(nets)
def test_q_loss_gradient_matches_finite_differences(kw):
    rng = np.random.default_rng(kw["seed"])
    qf = QCritic(kw["obs_dim"], kw["n_act"], kw["hidden"], "tanh", rng=rng, dtype=np.float64)
    b = kw["batch"]
    obs, act = rng.normal(size=(b, kw["obs_dim"])), rng.integers(0, kw["n_act"], b)
    target = rng.normal(size=b)
    _, g = qf.loss_and_grad(obs, act, target)
    fd = numeric_gradient(with_params(qf.net.params,
                                      lambda: qf.loss_and_grad(obs, act, target)[0]), qf.net.params)
    assert norm_rel_error(g, fd) < TOL


def test_act_samples_valid_actions_with_their_log_probs():
    rng = np.random.default_rng(0)
    pol = CategoricalPolicy(4, 3, [8], rng=rng, dtype=np.float32)
    obs = rng.normal(size=(1000, 4)).astype(np.float32)
    a, logp = pol.act(obs, rng)
    assert a.shape == (1000,) and set(np.unique(a)) <= {0, 1, 2}
    np.testing.assert_allclose(logp, Categorical(pol.net(obs)).log_prob(a), rtol=1e-6)
    # the small last-layer gain starts near uniform
    assert np.allclose(np.exp(logp), 1 / 3, atol=0.05)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_returns_the_params_dtype(dtype):
    rng = np.random.default_rng(0)
    pol = CategoricalPolicy(4, 2, [8], rng=rng, dtype=dtype)
    dist, cache = pol.dist(rng.normal(size=(5, 4)))
    g = pol.backward(cache, dist, np.zeros(5, np.int64), np.ones(5))
    assert g.dtype == dtype and g.shape == pol.params.shape


@given(st.integers(0, 2**16), st.integers(1, 3), st.integers(1, 5), st.sampled_from([0.0, 0.3]))
def test_gaussian_policy_gradient_through_network_and_log_std(seed, act_dim, batch, coef):
    """-mean(logp * phi) - coef * mean(H) + coef * mean(KL(old || pi)): d/d[MLP params, log_std]."""
    rng = np.random.default_rng(seed)
    pol = GaussianPolicy(3, act_dim, [4], rng=rng, dtype=np.float64)
    pol.params[:] = rng.normal(0, 0.5, pol.params.shape)
    obs, act = rng.normal(size=(batch, 3)), rng.normal(size=(batch, act_dim))
    phi = rng.normal(size=batch)
    old = DiagGaussian(rng.normal(size=(batch, act_dim)), rng.uniform(-1, 0.5, act_dim))

    def loss(_):
        d, _ = pol.dist(obs)
        return (
            pg_loss(d.log_prob(act), phi)[0] - coef * d.entropy().mean() + coef * old.kl(d).mean()
        )

    dist, cache = pol.dist(obs)
    _, dlogp = pg_loss(dist.log_prob(act), phi)
    g = pol.backward(
        cache, dist, act, dlogp, dent=-coef / batch, dkl=np.full(batch, coef / batch), old=old
    )
    assert norm_rel_error(g, numeric_gradient(with_params(pol.params, lambda: loss(None)),
                                              pol.params)) < TOL


def test_gaussian_policy_keeps_log_std_in_its_flat_vector():
    pol = GaussianPolicy(3, 2, [4], rng=np.random.default_rng(0), dtype=np.float32)
    assert np.shares_memory(pol.log_std, pol.params) and np.shares_memory(
        pol.net.params, pol.params
    )
    assert pol.params.size == pol.net.params.size + 2 and np.all(pol.log_std == -0.5)
    a, logp = pol.act(np.zeros((5, 3), np.float32), np.random.default_rng(1))
    assert a.shape == (5, 2) and logp.shape == (5,)


def test_gaussian_act_samples_pi_with_the_log_prob_of_the_sample():
    rng = np.random.default_rng(0)
    pol = GaussianPolicy(3, 2, [8], rng=rng, dtype=np.float32)
    pol.params[:] = rng.normal(0, 0.5, pol.params.shape)  # a mean far from 0, unequal sigmas
    obs = np.tile(rng.normal(size=(1, 3)).astype(np.float32), (20_000, 1))
    a, logp = pol.act(obs, rng)
    dist, _ = pol.dist(obs)
    np.testing.assert_allclose(logp, dist.log_prob(a), rtol=1e-5, atol=1e-5)  # float32 mean
    # one state, 20k draws: the sample mean is within 5 standard errors sigma / sqrt(n) of mu,
    # and the sample std within 5 of its standard error sigma / sqrt(2n)
    mu, sigma, n = dist.mean[0], dist.std[0], len(a)
    assert np.all(np.abs(a.mean(axis=0) - mu) < 5 * sigma / np.sqrt(n))
    assert np.all(np.abs(a.std(axis=0) - sigma) < 5 * sigma / np.sqrt(2 * n))


def test_a_gaussian_distribution_kept_as_old_does_not_move_with_the_parameters():
    """log_std is a view into params; PPO-KL and TRPO keep pi_old's distribution while the
    parameters are updated in place, so dist() must hold a copy (before the fix, the "old"
    log_std followed the update and KL(old || new) lost its log-std part)."""
    pol = GaussianPolicy(3, 2, [4], rng=np.random.default_rng(0), dtype=np.float64)
    obs = np.zeros((2, 3))
    old, _ = pol.dist(obs)
    pol.params[-2:] += 1.0  # log_std moves by 1
    new, _ = pol.dist(obs)
    np.testing.assert_array_equal(old.log_std, -0.5)
    np.testing.assert_allclose(old.kl(new), 2 * (1.0 + np.exp(-2.0) / 2 - 0.5), rtol=1e-12)


@pytest.mark.parametrize("log_std_init", [-5.0, -3.0, -0.5, 0.0, 1.0, 2.0])
def test_gaussian_gradient_at_every_initial_log_std(log_std_init):
    """(GAU.7): the policy starts at log_std_init, and the PPO-clip surrogate's gradient in [MLP
    params, log_std] there matches central differences, with actions drawn from the policy (z ~
    N(0, 1) at every initial scale, as in training)."""
    from pgnumpy.objectives import ppo_clip_loss

    rng = np.random.default_rng(7)
    pol = GaussianPolicy(3, 2, [5], rng=rng, dtype=np.float64, log_std_init=log_std_init)
    assert np.all(pol.log_std == log_std_init)
    obs = rng.normal(size=(16, 3))
    act, logp_old = pol.act(obs, rng)
    # a step of the mean's parameters on the scale of sigma: some ratios inside the clip, some out
    pol.params[: pol.n_net] += rng.normal(0, 0.3 * np.exp(log_std_init), pol.n_net)
    adv = rng.normal(size=16)

    def loss(_):
        d, _ = pol.dist(obs)
        return ppo_clip_loss(d.log_prob(act), logp_old, adv, 0.2)[0]

    dist, cache = pol.dist(obs)
    _, dlogp, info = ppo_clip_loss(dist.log_prob(act), logp_old, adv, 0.2)
    assert 0 < info["clip_frac"] < 1
    g = pol.backward(cache, dist, act, dlogp)
    assert norm_rel_error(g, numeric_gradient(with_params(pol.params, lambda: loss(None)),
                                              pol.params)) < TOL
