"""Exact expectations over every trajectory of small tabular MDPs: the estimators the training
code uses are unbiased exactly when the theory says so, and biased when it says not."""

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from pgnumpy.exact import (
    TabularMDP,
    enumerate_trajectories,
    estimator,
    exact_grad,
    exact_J,
    exact_values,
    log_prob_grads,
    probs,
    tabular_policy,
    trajectory_logp_grad,
)
from pgnumpy.testing import norm_rel_error, numeric_gradient, with_params


@st.composite
def mdps(draw, gamma=None):
    H = draw(st.integers(1, 4))
    S = draw(st.integers(1, 4))
    A = draw(st.integers(1, max(1, min(4, int(10_000 ** (1 / H)) // S))))
    assume((S * A) ** H <= 10_000)  # up to 10^4 trajectories: enumeration stays fast
    g = draw(st.floats(0.5, 1.0)) if gamma is None else gamma
    hidden = draw(st.sampled_from([(), (3,)]))  # tabular logits, or an MLP over one-hot states
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    mdp = TabularMDP.random(rng, S, A, H, g)
    return mdp, tabular_policy(mdp, rng, hidden=hidden), rng


def close(a, b, tol=1e-9):
    """Relative to the gradient's scale; absolute near a zero gradient (e.g. A = 1)."""
    return np.linalg.norm(a - b) <= tol * max(1.0, np.linalg.norm(b))


@given(mdps())
def test_exact_grad_matches_finite_differences_of_exact_J(m):
    mdp, pol, _ = m
    g = exact_grad(mdp, pol)
    fd = numeric_gradient(with_params(pol.net.params, lambda: exact_J(mdp, pol)), pol.net.params)
    assert norm_rel_error(g, fd) <= 1e-7 or np.abs(g - fd).max() < 1e-9


@given(mdps())
def test_trajectory_logp_grad_matches_finite_differences(m):
    mdp, pol, _ = m
    traj = enumerate_trajectories(mdp, probs(pol, mdp.S))
    k = int(np.argmax(traj.prob))
    g = trajectory_logp_grad(log_prob_grads(pol, mdp.S, mdp.A), traj)[k]

    def log_p_tau(_):  # the full log P(tau), dynamics included: they drop out of the gradient
        pi = probs(pol, mdp.S)
        s, a = traj.states[:, k], traj.actions[:, k]
        lp = np.log(mdp.mu[s[0]]) + np.log(pi[s, a]).sum()
        return lp + sum(np.log(mdp.P[s[t], a[t], s[t + 1]]) for t in range(mdp.H - 1))

    fd = numeric_gradient(with_params(pol.net.params, lambda: log_p_tau(None)), pol.net.params)
    assert norm_rel_error(g, fd) <= 1e-7 or np.abs(g - fd).max() < 1e-9


def every_phi(mdp, pol, rng):
    """(name, kwargs, target) for each estimator the training code supports, with the direction
    it is unbiased for (RTG.3-4): grad J for R(tau), g_1 for the forms that drop gamma^t."""
    pi = probs(pol, mdp.S)
    traj = enumerate_trajectories(mdp, pi)
    V, Q = exact_values(mdp, pi)
    t = np.arange(mdp.H)[:, None]
    s, a = traj.states, traj.actions
    b = rng.normal(size=(mdp.H, mdp.S))
    grad_J, g_1 = exact_grad(mdp, pol), exact_grad(mdp, pol, visit_discount=1.0)
    return traj, [
        ("return", {}, grad_J),  # R(tau) already carries gamma^k from the episode start
        ("rtg", {}, g_1),
        ("rtg-baseline", {"val": b[t, s]}, g_1),  # any state-only baseline (random)
        ("rtg-baseline", {"val": V[t, s]}, g_1),  # the exact V_t
        ("q", {"q_sa": Q[t, s, a]}, g_1),
        ("q", {"q_sa": Q[t, s, a] - V[t, s]}, g_1),  # the advantage A_t
    ]


@given(mdps())
def test_every_phi_is_unbiased(m):
    """Each form, exactly as training computes it (no gamma^t or other factor added here),
    against the direction it estimates; gamma is drawn from [0.5, 1]."""
    mdp, pol, rng = m
    traj, forms = every_phi(mdp, pol, rng)
    for name, kw, target in forms:
        per_traj, mean = estimator(mdp, pol, traj, name, **kw)
        assert close(mean, target), (name, kw.keys())
        assert close(traj.prob @ per_traj, target)  # per-trajectory path agrees


@given(mdps())
def test_grad_log_prob_and_baseline_lemmas_exactly(m):
    mdp, pol, rng = m
    pi, G = probs(pol, mdp.S), log_prob_grads(pol, mdp.S, mdp.A)
    assert np.abs(np.einsum("sa,san->sn", pi, G)).max() < 1e-12  # (EGLP.1), every state
    b = rng.normal(size=mdp.S)
    assert np.abs(np.einsum("sa,s,san->n", pi, b, G)).max() < 1e-12  # (BL.1)


def biased_setup(seed=1, gamma=0.9):
    rng = np.random.default_rng(seed)
    mdp = TabularMDP.random(rng, 3, 2, 3, gamma)
    pol = tabular_policy(mdp, rng)
    traj = enumerate_trajectories(mdp, probs(pol, mdp.S))
    return mdp, pol, traj, exact_grad(mdp, pol), rng


def test_action_dependent_baseline_is_biased():
    mdp, pol, traj, grad, rng = biased_setup()
    B = rng.normal(size=(mdp.S, mdp.A))  # b(s, a): depends on the action it weights
    _, mean = estimator(mdp, pol, traj, "rtg-baseline", val=B[traj.states, traj.actions])
    assert np.linalg.norm(mean - grad) > 1e-3


def test_baseline_using_future_rewards_is_biased():
    mdp, pol, traj, grad, _ = biased_setup()
    future = np.zeros_like(traj.rew)
    future[:-1] = traj.rew[1:]  # b_t = r_{t+1}: peeks past the action
    _, mean = estimator(mdp, pol, traj, "rtg-baseline", val=future)
    assert np.linalg.norm(mean - grad) > 1e-3


def test_reward_to_go_estimates_g1_not_grad_J_below_gamma_1():
    """What practical implementations do with gamma < 1 (derivations/03-reward-to-go.md): the
    reward-to-go weight without gamma^t is unbiased for g_1 (RTG.4), which is not grad J."""
    mdp, pol, traj, grad, _ = biased_setup(gamma=0.7)
    _, mean = estimator(mdp, pol, traj, "rtg")
    assert close(mean, exact_grad(mdp, pol, visit_discount=1.0))
    assert np.linalg.norm(mean - grad) > 1e-3


def test_a_planted_bug_is_caught():
    """Drop the termination mask at the horizon and reward-to-go bootstraps with a made-up value of
    the last state: later actions move it, so the weights of earlier actions become biased."""
    mdp, pol, traj, grad, rng = biased_setup(gamma=1.0)
    H, K = traj.rew.shape
    from pgnumpy import kernels

    garbage = rng.normal(size=mdp.S)[traj.states]  # next_val: some function of the state
    term = np.zeros((H, K), bool)
    term[-1] = True
    no_trunc = np.zeros((H, K), bool)
    rtg_ok = kernels.reward_to_go(traj.rew, term, no_trunc, garbage, 1.0)
    rtg_bug = kernels.reward_to_go(traj.rew, ~term & False, no_trunc, garbage, 1.0)
    _, ok = estimator(mdp, pol, traj, "q", q_sa=rtg_ok)
    _, bug = estimator(mdp, pol, traj, "q", q_sa=rtg_bug)
    assert close(ok, grad) and np.linalg.norm(bug - grad) > 1e-3


def search(condition, trials=400):
    """First seed whose random MDP and policy satisfy condition(variances), with the variances."""
    from pgnumpy.exact import variances

    for seed in range(trials):
        rng = np.random.default_rng(seed)
        S, A, H = int(rng.integers(1, 4)), int(rng.integers(2, 4)), int(rng.integers(2, 4))
        if (S * A) ** H > 3000:
            continue
        mdp = TabularMDP.random(rng, S, A, H, 1.0)
        v = variances(mdp, tabular_policy(mdp, rng, scale=float(rng.uniform(0.1, 3))))
        if condition(v):
            return seed, v
    return None, None


def test_reward_to_go_can_increase_the_variance():
    """The study note says reward-to-go reduces variance. Usually; not always: dropping past
    rewards also drops their covariance with the future ones. An exact counter-example exists."""
    seed, v = search(lambda v: v["reward-to-go"] > v["R(tau)"] * (1 + 1e-6))
    assert seed is not None, "no counter-example in 400 MDPs"


def test_the_value_baseline_can_increase_the_variance():
    """V is the natural baseline but not the variance-minimising one (that one weights by
    ||grad log pi||^2); on some MDPs rtg - V has MORE variance than plain rtg."""
    seed, v = search(lambda v: v["rtg - V"] > v["reward-to-go"] * (1 + 1e-6))
    assert seed is not None, "no counter-example in 400 MDPs"


def test_monte_carlo_on_the_training_path_is_within_four_standard_errors():
    """Batches from rollout.collect on a tabular vector env, weights from phi.phi, gradient from
    pg_loss -> backward: each coordinate within 4 standard errors of the exact grad J, where the
    standard error is sqrt(Var_i / K) from the EXACT per-trajectory variance (EX.4) and K is the
    number of episodes. (Per coordinate, |z| > 4 has probability 6e-5; the seed is fixed.)"""
    from pgnumpy.exact import TabularVecEnv
    from pgnumpy.objectives import pg_loss
    from pgnumpy.phi import phi
    from pgnumpy.rollout import Runner, collect

    rng = np.random.default_rng(11)
    mdp = TabularMDP.random(rng, 3, 2, 3, 1.0)
    pol = tabular_policy(mdp, rng)
    pi = probs(pol, mdp.S)
    traj = enumerate_trajectories(mdp, pi)
    grad = exact_grad(mdp, pol)
    V, Q = exact_values(mdp, pi)
    b = rng.normal(size=mdp.S)  # a state-only baseline
    runner = Runner.start(TabularVecEnv(mdp, 16), seed=3)
    batch = collect(runner, lambda o: pol.act(o, rng), T=(mdp.H + 1) * 250)  # whole episodes
    m = batch.valid
    s = batch.obs.argmax(axis=-1)
    # time index within the episode, for the exact time-indexed Q_t
    t_in = np.zeros(m.shape, np.int64)
    for t in range(1, len(m)):
        t_in[t] = np.where(m[t], np.where(m[t - 1], t_in[t - 1] + 1, 0), 0)
    episodes = int((batch.term & m).sum())
    t_exact = np.arange(mdp.H)[:, None]
    forms = [("return", {}, {}),
             ("rtg", {}, {}),
             ("rtg-baseline", {"val": b[s]}, {"val": b[traj.states]}),
             ("q", {"q_sa": Q[t_in.clip(max=mdp.H - 1), s, batch.act]},
              {"q_sa": Q[t_exact, traj.states, traj.actions]})]
    for name, kw_batch, kw_exact in forms:
        w = phi(name, batch.rew, batch.term, batch.trunc, 1.0, valid=m, **kw_batch)[m]
        dist, cache = pol.dist(batch.obs[m])
        _, dlogp = pg_loss(dist.log_prob(batch.act[m]), w)
        g_hat = -len(w) * pol.backward(cache, dist, batch.act[m], dlogp) / episodes
        per_traj, _ = estimator(mdp, pol, traj, name, **kw_exact)
        var_i = traj.prob @ per_traj**2 - grad**2
        se = np.sqrt(np.maximum(var_i, 0) / episodes)
        z = np.abs(g_hat - grad) / np.maximum(se, 1e-12)
        assert np.all(z < 4), (name, z.max(), episodes)
