"""Running observation normalisation and reward scaling against direct computations."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pgnumpy.algos import load_checkpoint, ppo
from pgnumpy.normalize import ObsNorm, RewScale, merge_moments
from pgnumpy.train import main

floats = st.floats(-100, 100, width=32)


@given(st.lists(hnp.arrays(np.float64, st.tuples(st.integers(1, 20), st.just(3)),
                           elements=floats), min_size=1, max_size=5))
def test_merged_moments_are_the_moments_of_the_concatenation(batches):
    mean, var, count = batches[0].mean(axis=0), batches[0].var(axis=0), len(batches[0])
    for x in batches[1:]:
        mean, var, count = merge_moments(mean, var, count, x)
    whole = np.concatenate(batches)
    assert count == len(whole)
    np.testing.assert_allclose(mean, whole.mean(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(var, whole.var(axis=0), rtol=1e-9, atol=1e-9)


def test_obs_norm_whitens_clips_and_keeps_the_dtype():
    rng = np.random.default_rng(0)
    norm = ObsNorm(2)
    for _ in range(5):  # exact moments of 5 x 1000 samples, even of a feature far from 0
        norm.update(rng.normal([3.0, -50.0], [2.0, 0.01], size=(1000, 2)))
    n_fit, n_new = 5000, 20_000
    z = norm(rng.normal([3.0, -50.0], [2.0, 0.01], size=(n_new, 2)).astype(np.float32))
    assert z.dtype == np.float32
    # in whitened units the fitted mean is off by ~N(0, 1/n_fit) and the fresh samples' mean
    # varies by 1/n_new; the std, relatively, by 1/(2 n_fit) and 1/(2 n_new): 5 standard errors
    se_mean, se_std = np.sqrt(1 / n_fit + 1 / n_new), np.sqrt(1 / (2 * n_fit) + 1 / (2 * n_new))
    assert np.all(np.abs(z.mean(axis=0)) < 5 * se_mean)
    assert np.all(np.abs(z.std(axis=0) - 1) < 5 * se_std)
    assert norm(np.array([[3.0, 0.0]]))[0, 1] == norm.clip  # 5000 std away: clipped to +10
    norm.update(np.empty((0, 2)))  # an empty batch changes nothing (no nan)
    assert np.all(np.isfinite(norm.mean))


def discounted_returns_ref(rew, done, valid, gamma):
    """G_t = sum_{k=s}^{t} gamma^(t-k) r_k, s the first step of t's episode, by explicit sums."""
    T, N = rew.shape
    G = np.zeros((T, N))
    for i in range(N):
        start = 0
        for t in range(T):
            if valid[t, i]:
                k = np.arange(start, t + 1)
                G[t, i] = np.sum(gamma ** (t - k) * rew[k, i])
            if done[t, i]:
                start = t + 1
    return G


@st.composite
def nextstep_rollouts(draw):
    """A (T, N) rollout as NEXT_STEP vector envs produce it: the step after an episode end is a
    reset step, invalid, with reward 0."""
    T, N = draw(st.integers(2, 15)), draw(st.integers(1, 4))
    rew = draw(hnp.arrays(np.float64, (T, N), elements=st.floats(-10, 10)))
    end = draw(hnp.arrays(np.int8, (T, N), elements=st.sampled_from([0, 0, 0, 1, 2])))
    term, trunc = end == 1, end == 2
    valid = np.ones((T, N), bool)
    valid[1:] = ~(term | trunc)[:-1]
    term &= valid  # a reset step ends nothing
    trunc &= valid
    rew[~valid] = 0.0
    return rew, term, trunc, valid, draw(st.floats(0.5, 1.0))


@given(nextstep_rollouts())
def test_reward_scale_is_the_std_of_the_running_discounted_return(r):
    rew, term, trunc, valid, gamma = r
    T = len(rew)
    scale = RewScale(rew.shape[1], gamma)
    # two rollouts, cut mid-episode: G must carry across the cut
    cut = T // 2
    out = np.concatenate([
        scale(rew[:cut], term[:cut], trunc[:cut], valid[:cut]),
        scale(rew[cut:], term[cut:], trunc[cut:], valid[cut:]),
    ])
    G = discounted_returns_ref(rew, term | trunc, valid, gamma)[valid]
    assert scale.count == len(G)
    np.testing.assert_allclose(scale.var, G.var(), rtol=1e-9, atol=1e-9)
    # the second rollout is scaled with the statistics of both
    expect = np.clip(rew[cut:] / np.sqrt(G.var() + scale.eps), -10, 10)
    np.testing.assert_allclose(out[cut:], expect, rtol=1e-7, atol=1e-9)


def test_reward_scale_state_round_trips_and_restarts_the_running_return():
    a = RewScale(2, 0.9)
    a(np.ones((5, 2)), np.zeros((5, 2), bool), np.zeros((5, 2), bool), np.ones((5, 2), bool))
    b = RewScale(2, 0.9)
    b.load(a.state())
    assert (b.mean, b.var, b.count) == (a.mean, a.var, a.count) and np.all(b.g == 0)


def test_ppo_with_reward_scaling_checkpoints_and_resumes_it(tmp_path):
    run = tmp_path / "r"
    small = ppo.PRESETS["Pendulum-v1"] | dict(norm_rew=True, num_envs=2, steps_per_env=200,
                                              minibatches=4, update_epochs=2, seed=0)
    assert main(["--env", "Pendulum-v1", "--norm-rew", "--num-envs", "2", "--steps-per-env",
                 "200", "--minibatches", "4", "--update-epochs", "2", "--total-steps", "400",
                 "--out", str(run), "--quiet"]) == 0
    ck = load_checkpoint(run)
    assert ck["extra"]["rew_scale"]["count"] == 400  # 400 valid steps
    r = ppo.train(ppo.PPOConfig(**small | {"total_steps": 800}), resume=ck)  # one more iteration
    assert len(r.history) == 1 and r.history[0]["epoch"] == 1
    # the statistics went on from the checkpoint's: the resumed critic's targets are scaled
    fresh = ppo.train(ppo.PPOConfig(**small | {"norm_rew": False, "total_steps": 400}))
    assert r.history[0]["value_loss"] < fresh.history[0]["value_loss"] / 10
