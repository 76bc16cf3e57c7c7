"""Exact expectations on the layout training uses (issue 10): every path of a column enumerated by
running rollout.collect itself, so several episodes per column separated by NEXT_STEP reset steps,
terminations, time-limit truncations bootstrapped with V of the final observation, and the cut at
the rollout's end are all in the batch. Each Phi form is checked to 1e-9 against the direction it
really estimates (derivations/03-reward-to-go.md, RTG.3): R(tau) carries gamma^t from its
episode's first step in the batch, the other forms drop it."""

import numpy as np
import pytest

from pgnumpy.exact import (
    EpisodicMDP,
    alive_distributions,
    batch_estimate,
    capped_values,
    discounted_visits,
    enumerate_columns,
    mean_estimate,
    probs,
    stationary_values,
    tabular_policy,
    visits,
    weighted_direction,
)
from pgnumpy.testing import norm_rel_error, numeric_gradient, with_params


def close(a, b, tol=1e-9):
    return np.linalg.norm(a - b) <= tol * max(1.0, np.linalg.norm(b))


def setup(seed, gamma, time_limit, hidden=()):
    rng = np.random.default_rng(seed)
    mdp = EpisodicMDP.random(rng, 2, 2, gamma, time_limit)
    pol = tabular_policy(mdp, rng, hidden=hidden)
    return mdp, pol, probs(pol, mdp.S), rng


@pytest.mark.parametrize("start", ["fresh", "reset", "mid"])
@pytest.mark.parametrize("gamma", [1.0, 0.8])
def test_every_form_on_the_vpg_layout_estimates_its_direction_exactly(gamma, start):
    """T = 4 rows (5 for "mid"), time limit 2: columns hold up to two episodes, a reset step
    between them, and a cut; start "reset" puts a reset step in row 0, "mid" starts inside an
    episode. V and Q are the exact values of J_gamma (EX.5), the critic VPG and PPO bootstrap
    with."""
    mdp, pol, pi, rng = setup(3, gamma, time_limit=2, hidden=(3,) if start == "mid" else ())
    cols = enumerate_columns(mdp, pi, T=5 if start == "mid" else 4, start=start)
    assert abs(cols.prob.sum() - 1) < 1e-12
    ended = cols.valid & (cols.term | cols.trunc)
    assert ended[cols.term].any() and ended[cols.trunc].any() and (cols.episodes >= 2).any()
    assert (~cols.valid[1:]).any() and (cols.valid[-1] & ~ended[-1]).any()  # resets and cuts
    V, Q = stationary_values(mdp, pi)
    H = mdp.time_limit
    g_R = weighted_direction(pol, visits(cols, H, mdp.S, discount=gamma), pi, Q)
    g_1 = weighted_direction(pol, visits(cols, H, mdp.S), pi, Q)
    forms = [("return", {}, g_R), ("rtg", {}, g_1), ("rtg-baseline", {}, g_1),
             ("gae", {"lam": 1.0}, g_1), ("gae", {"lam": 0.5}, g_1), ("gae", {"lam": 0.0}, g_1),
             ("q", {"Q": Q}, g_1), ("q", {"Q": Q - V[:, None]}, g_1)]
    for name, kw, target in forms:
        est = batch_estimate(pol, cols, name, gamma, V=V, bootstrap=True, **kw)
        assert close(est, target), (name, kw.keys(), np.linalg.norm(est - target))
    if gamma < 1:  # the two directions really differ: the test tells R(tau) from the rest
        assert np.linalg.norm(g_R - g_1) > 1e-2 * np.linalg.norm(g_1)


@pytest.mark.parametrize("gamma", [1.0, 0.8])
def test_whole_episodes_R_is_unbiased_for_the_capped_objective(gamma):
    """simple_pg's layout: collect(min_steps) plays episodes to their end, several per column,
    reset steps between them; nothing is bootstrapped and a time-limit end ends the capped episode.
    The number of episodes M is a stopping time, so by Wald's identity E[sum] = E[M] grad J^H for
    R(tau), and E[M] times the undiscounted-visit direction for the forms without gamma^t.
    grad J^H itself is checked against finite differences of the exact capped J."""
    mdp, pol, pi, rng = setup(5, gamma, time_limit=2)
    cols = enumerate_columns(mdp, pi, min_steps=3)
    assert abs(cols.prob.sum() - 1) < 1e-12 and (cols.episodes >= 2).any()
    assert (cols.valid & cols.trunc).any() and (cols.valid & cols.term).any()
    EM = cols.prob @ cols.episodes
    Vc, Qc = capped_values(mdp, pi)
    d = alive_distributions(mdp, pi)
    grad_J = weighted_direction(pol, gamma ** np.arange(mdp.time_limit)[:, None] * d, pi, Qc)
    fd = numeric_gradient(with_params(pol.params, lambda: mdp.mu @ capped_values(
        mdp, probs(pol, mdp.S))[0][0]), pol.params)
    assert norm_rel_error(grad_J, fd) < 1e-7
    g_1 = weighted_direction(pol, d, pi, Qc)
    b = rng.normal(size=mdp.S)  # any state-only baseline
    assert close(batch_estimate(pol, cols, "return", gamma, bootstrap=False), EM * grad_J)
    assert close(batch_estimate(pol, cols, "rtg", gamma, bootstrap=False), EM * g_1)
    assert close(batch_estimate(pol, cols, "rtg-baseline", gamma, V=b, bootstrap=False), EM * g_1)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_the_stationary_objective_and_the_direction_without_gamma_t(gamma):
    """grad J_gamma (discounted visits) against finite differences of the exact J_gamma = mu V;
    the forms without gamma^t estimate the same sum with undiscounted visits: equal at gamma = 1,
    not below it."""
    mdp, pol, pi, _ = setup(7, gamma, time_limit=1)
    V, Q = stationary_values(mdp, pi)
    grad_J = weighted_direction(pol, discounted_visits(mdp, pi, gamma)[None], pi, Q)
    fd = numeric_gradient(with_params(pol.params, lambda: mdp.mu @ stationary_values(
        mdp, probs(pol, mdp.S))[0]), pol.params)
    assert norm_rel_error(grad_J, fd) < 1e-7
    g_1 = weighted_direction(pol, discounted_visits(mdp, pi, 1.0)[None], pi, Q)
    assert close(g_1, grad_J) == (gamma == 1.0)


def test_the_per_step_mean_is_a_ratio_estimator():
    """pg_loss divides by the batch's number of steps n. With equal episode lengths H that is the
    constant H and E[mean] = grad J / H exactly; with lengths that vary it is biased for
    grad J / E[L], and the bias shrinks as the batch holds more episodes (EX.6)."""
    mdp, pol, pi, _ = setup(5, 1.0, time_limit=3)
    Vc, Qc = capped_values(mdp, pi)
    d = alive_distributions(mdp, pi)
    fixed = EpisodicMDP(mdp.mu, mdp.P, np.zeros_like(mdp.p_term), mdp.r, 1.0, 3)
    grad_fixed = weighted_direction(pol, alive_distributions(fixed, pi), pi,
                                    capped_values(fixed, pi)[1])
    for B in (1, 4):
        mean, EL = mean_estimate(fixed, pol, "return", B)
        assert abs(EL - 3) < 1e-12 and close(mean, grad_fixed / 3)
    grad_J = weighted_direction(pol, d, pi, Qc)
    errors = []
    for B in (1, 4, 16):
        mean, EL = mean_estimate(mdp, pol, "return", B)
        errors.append(np.linalg.norm(mean * EL - grad_J) / np.linalg.norm(grad_J))
    assert errors[0] > 1e-3 and errors[0] > errors[1] > errors[2], errors
