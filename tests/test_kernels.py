"""Numba kernels against their plain-NumPy references, and the properties the math promises."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reference import (
    categorical_logp_ref,
    categorical_sample_ref,
    episode_return_ref,
    episode_stats_ref,
    gae_ref,
    reward_to_go_ref,
)

from pgnumpy import kernels

TOL = dict(rtol=1e-12, atol=1e-12)


@st.composite
def rollouts(draw):
    """(T, N) rollouts in pgnumpy's NEXT_STEP layout (pgnumpy/rollout.py): the row after every
    episode end is a reset step (valid False, reward 0, no end), and so, sometimes, is row 0 (the
    previous rollout ended an episode on its last step). term and trunc never both True."""
    T, N = draw(st.integers(1, 12)), draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    floats = st.floats(-10, 10, width=32)
    rew = draw(hnp.arrays(dtype, (T, N), elements=floats))
    val = draw(hnp.arrays(np.float64, (T, N), elements=floats))
    next_val = draw(hnp.arrays(np.float64, (T, N), elements=floats))
    end = draw(hnp.arrays(np.int8, (T, N), elements=st.sampled_from([0, 0, 0, 1, 2])))
    reset_first = draw(hnp.arrays(bool, N))
    valid = np.ones((T, N), bool)
    for t in range(T):
        reset = reset_first if t == 0 else (end[t - 1] > 0)
        valid[t], end[t] = ~reset, np.where(reset, 0, end[t])
    rew[~valid] = 0
    gamma = draw(st.floats(0.01, 1.0))
    lam = draw(st.floats(0.0, 1.0))
    return rew, val, next_val, end == 1, end == 2, gamma, lam, valid


@given(rollouts())
def test_reward_to_go_matches_reference(r):
    rew, _, next_val, term, trunc, gamma, _, _ = r
    np.testing.assert_allclose(
        kernels.reward_to_go(rew, term, trunc, next_val, gamma),
        reward_to_go_ref(rew, term, trunc, next_val, gamma), **TOL)


@given(rollouts())
def test_episode_return_matches_reference(r):
    rew, _, next_val, term, trunc, gamma, _, valid = r
    np.testing.assert_allclose(
        kernels.episode_return(rew, term, trunc, valid, next_val, gamma),
        episode_return_ref(rew, term, trunc, valid, next_val, gamma), **TOL)


def test_episode_return_after_a_reset_step_is_the_episodes_return():
    """The bug of issue 10: the backward sum flowed through the reset step, so every episode that
    started after one got gamma * R(tau). One column, gamma = 0.5: rows 0 | reset | 2, 3 | reset.
    The reference rows are not reset steps: their R is the episode's own."""
    rew = np.array([[1.0], [0.0], [1.0], [1.0], [0.0]])
    term = np.array([[1], [0], [0], [1], [0]], bool)
    valid = np.array([[1], [0], [1], [1], [0]], bool)
    no = np.zeros_like(term)
    R = kernels.episode_return(rew, term, no, valid, np.zeros((5, 1)), 0.5)
    np.testing.assert_allclose(R[:, 0], [1.0, 0.0, 1.5, 1.5, 0.0])
    # row 0 a reset step too (the previous rollout ended an episode on its last step)
    R = kernels.episode_return(rew[1:], term[1:], no[1:], valid[1:], np.zeros((4, 1)), 0.5)
    np.testing.assert_allclose(R[:, 0], [0.0, 1.5, 1.5, 0.0])


@given(rollouts())
def test_gae_matches_reference(r):
    rew, val, next_val, term, trunc, gamma, lam, valid = r
    np.testing.assert_allclose(
        kernels.gae(rew, val, next_val, term, trunc, gamma, lam),
        gae_ref(rew, val, next_val, term, trunc, gamma, lam), **TOL)


@given(rollouts())
def test_gae_lambda_one_is_rtg_minus_v_and_lambda_zero_is_td_residual(r):
    rew, val, next_val, term, trunc, gamma, _, _ = r
    # the telescoping behind lambda = 1 needs the rollout layout's consistency: inside an
    # episode, next_val[t] is val[t + 1] (rollout.py); only ends and the cut carry their own
    inside = ~(term | trunc)[:-1]
    next_val[:-1][inside] = val[1:][inside]
    rtg = kernels.reward_to_go(rew, term, trunc, next_val, gamma)
    np.testing.assert_allclose(
        kernels.gae(rew, val, next_val, term, trunc, gamma, 1.0), rtg - val, rtol=1e-9, atol=1e-9)
    td = rew + gamma * np.where(term, 0.0, next_val) - val
    np.testing.assert_allclose(kernels.gae(rew, val, next_val, term, trunc, gamma, 0.0), td, **TOL)


@given(rollouts())
def test_termination_ignores_next_val_and_truncation_bootstraps_it(r):
    rew, val, next_val, term, trunc, gamma, lam, valid = r
    bumped = next_val.copy()
    bumped[term] += 100.0
    for f in (lambda nv: kernels.reward_to_go(rew, term, trunc, nv, gamma),
              lambda nv: kernels.gae(rew, val, nv, term, trunc, gamma, lam)):
        np.testing.assert_array_equal(f(next_val), f(bumped))
    # at a truncated step, next_val enters with weight gamma
    for t, i in np.argwhere(trunc):
        nv = next_val.copy()
        nv[t, i] += 1.0
        d = (kernels.reward_to_go(rew, term, trunc, nv, gamma)
             - kernels.reward_to_go(rew, term, trunc, next_val, gamma))
        assert d[t, i] == pytest.approx(gamma, rel=1e-9)


@given(rollouts())
def test_nothing_flows_backward_across_an_episode_end(r):
    rew, val, next_val, term, trunc, gamma, lam, valid = r
    done = term | trunc
    for t, i in np.argwhere(done[:-1]):
        later = rew.copy()
        later[t + 1 :, i] += 7.0
        for f in (lambda x: kernels.reward_to_go(x, term, trunc, next_val, gamma),
                  lambda x: kernels.episode_return(x, term, trunc, valid, next_val, gamma),
                  lambda x: kernels.gae(x, val, next_val, term, trunc, gamma, lam)):
            np.testing.assert_array_equal(f(rew)[: t + 1, i], f(later)[: t + 1, i])


def test_explicit_edge_cases():
    # column 0: length-1 episodes; column 1: boundary at the first step then a truncation at the
    # last step; column 2: no boundary at all (cut at T, bootstrapped)
    rew = np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [3.0, 3.0, 3.0]])
    term = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0]], bool)
    trunc = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0]], bool)
    nv = np.full((3, 3), 10.0)
    g = 0.5
    rtg = kernels.reward_to_go(rew, term, trunc, nv, g)
    np.testing.assert_allclose(rtg[:, 0], [1, 2, 3])
    np.testing.assert_allclose(rtg[:, 1], [1, 2 + g * (3 + g * 10), 3 + g * 10])
    np.testing.assert_allclose(rtg[:, 2], [1 + g * 2 + g**2 * 3 + g**3 * 10,
                                           2 + g * 3 + g**2 * 10, 3 + g * 10])
    R = kernels.episode_return(rew, term, trunc, np.ones((3, 3), bool), nv, g)
    np.testing.assert_allclose(R[:, 1], [1, rtg[1, 1], rtg[1, 1]])
    np.testing.assert_allclose(R[:, 2], [rtg[0, 2]] * 3)


@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**16))
def test_categorical_logp_matches_reference(B, A, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (B, A))
    act = rng.integers(0, A, B)
    np.testing.assert_allclose(kernels.categorical_logp(logits, act),
                               categorical_logp_ref(logits, act), **TOL)


def test_categorical_logp_is_exact_at_extreme_logits():
    logits = np.array([[1e4, 0.0], [-1e4, 1e4], [1e4, 1e4]])
    lp = kernels.categorical_logp(logits, np.array([0, 0, 1]))
    np.testing.assert_allclose(lp, [0.0, -2e4, -np.log(2)], rtol=1e-12)


@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**16))
def test_categorical_sample_matches_reference(B, A, seed):
    rng = np.random.default_rng(seed)
    logits, u = rng.normal(0, 3, (B, A)), rng.random(B)
    act, logp = kernels.categorical_sample(logits, u)
    act_ref, logp_ref = categorical_sample_ref(logits, u)
    np.testing.assert_array_equal(act, act_ref)
    np.testing.assert_allclose(logp, logp_ref, **TOL)


def test_categorical_sample_frequencies_and_extreme_logits():
    p = np.array([0.1, 0.2, 0.3, 0.4])
    n = 20000
    act, logp = kernels.categorical_sample(np.log(np.tile(p, (n, 1))),
                                           np.random.default_rng(3).random(n))
    counts = np.bincount(act, minlength=4)
    assert np.all(np.abs(counts - n * p) < 5 * np.sqrt(n * p * (1 - p)))  # 5 binomial SEs
    np.testing.assert_allclose(logp, np.log(p[act]), rtol=1e-12)
    act, logp = kernels.categorical_sample(np.array([[1e4, 0.0], [-1e4, 1e4]]),
                                           np.array([0.999, 0.001]))
    assert act.tolist() == [0, 1] and np.all(logp == 0.0)


@given(rollouts(), st.integers(0, 2**16))
def test_episode_stats_matches_reference(r, seed):
    rew, _, _, term, trunc, _, _, _ = r
    rng = np.random.default_rng(seed)
    valid = rng.random(rew.shape) < 0.8
    carry_ret, carry_len = rng.normal(size=rew.shape[1]), rng.integers(0, 5, rew.shape[1])
    a_ret, a_len = carry_ret.copy(), carry_len.copy()
    b_ret, b_len = carry_ret.copy(), carry_len.copy()
    rets, lens = kernels.episode_stats(rew, term, trunc, valid, a_ret, a_len)
    rets_ref, lens_ref = episode_stats_ref(rew, term, trunc, valid, b_ret, b_len)
    np.testing.assert_allclose(rets, rets_ref, **TOL)
    np.testing.assert_array_equal(lens, lens_ref)
    np.testing.assert_allclose(a_ret, b_ret, **TOL)  # the running episodes carried out
    np.testing.assert_array_equal(a_len, b_len)
