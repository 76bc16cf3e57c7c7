"""Rollouts under NEXT_STEP autoreset: reset steps dropped, final observations used."""

import gymnasium as gym
import numpy as np
import pytest
from scripted_env import ScriptedVecEnv

from pgnumpy.errors import UserError
from pgnumpy.phi import next_values
from pgnumpy.rollout import Runner, check_env, collect, make_env


def zeros_policy(obs):
    return np.zeros(len(obs), np.int64), np.zeros(len(obs))


def test_reset_steps_are_invalid_and_stats_are_right():
    env = ScriptedVecEnv([[(2, "term"), (3, "trunc")], [(1, "trunc")]])
    runner = Runner.start(env, seed=0)
    b = collect(runner, zeros_policy, T=8)
    # sub-env 0: ep0 = steps 0,1 (term at 1), reset step 2, ep1 = steps 3-5 (trunc at 5),
    # reset step 6, ep2 from step 7
    assert b.valid[:, 0].tolist() == [1, 1, 0, 1, 1, 1, 0, 1]
    assert b.term[:, 0].tolist() == [0, 1, 0, 0, 0, 0, 0, 0]
    assert b.trunc[:, 0].tolist() == [0, 0, 0, 0, 0, 1, 0, 0]
    # sub-env 1: length-1 episodes, each followed by a reset step
    assert b.valid[:, 1].tolist() == [1, 0] * 4
    assert b.trunc[:, 1].tolist() == [1, 0] * 4
    # finished episodes: returns 1+2 = 3 and 1+2+3 = 6 for sub-env 0, 1 for each of sub-env 1's
    assert sorted(runner.episode_returns) == [1, 1, 1, 1, 3, 6]
    assert sorted(runner.episode_lengths) == [1, 1, 1, 1, 2, 3]
    assert runner.env_steps == int(b.valid.sum()) == 6 + 4


def test_reset_step_holds_the_final_observation_so_next_val_is_v_of_true_next_state():
    env = ScriptedVecEnv([[(3, "trunc")]])
    b = collect(Runner.start(env, seed=0), zeros_policy, T=5)
    # step 2 truncates; the obs stored at step 3 (a reset step) is that episode's final obs
    assert b.trunc[2, 0] and not b.valid[3, 0]
    assert b.obs[3, 0].tolist() == [0, 3, 0, 1]  # episode 0, after 3 steps, final
    # V = a function of the obs: next_val at the truncated step is V(final obs)
    v = b.obs[..., 1] * 10 + b.obs[..., 3]
    nv = next_values(v, b.last_obs[:, 1] * 10 + b.last_obs[:, 3])
    assert nv[2, 0] == 31.0
    assert b.obs[4, 0].tolist() == [1, 0, 0, 0]  # the new episode's first obs


def test_finish_episodes_plays_every_running_episode_to_its_end():
    env = ScriptedVecEnv([[(5, "term")], [(2, "term")]])
    runner = Runner.start(env, seed=0)
    b = collect(runner, zeros_policy, min_steps=4)
    # after 2 steps: 4 valid steps recorded; sub-env 1 just ended -> stops; sub-env 0 plays on
    assert b.valid[:, 0].tolist() == [1, 1, 1, 1, 1]
    assert b.valid[:, 1].tolist() == [1, 1, 0, 0, 0]
    assert b.term[4, 0]
    assert sorted(runner.episode_returns) == [3, 15]
    # every recorded episode ended inside the batch: no step is cut
    last_valid = [np.flatnonzero(b.valid[:, i])[-1] for i in range(2)]
    assert all(b.term[t, i] or b.trunc[t, i] for i, t in enumerate(last_valid))


def test_finishing_grows_past_the_first_guess():
    env = ScriptedVecEnv([[(50, "term")]])
    b = collect(Runner.start(env, seed=0), zeros_policy, min_steps=3)
    assert b.T == 50 and b.valid.all() and b.term[-1, 0]


def test_cartpole_vector_env_episode_stats_match_reward_sums():
    env = make_env("CartPole-v1", 4)
    runner = Runner.start(env, seed=1)
    rng = np.random.default_rng(0)
    b = collect(runner, lambda o: (rng.integers(0, 2, len(o)), np.zeros(len(o))), T=200)
    # CartPole pays 1 per valid step: total reward of valid steps = finished + running episodes
    assert b.rew[b.valid].sum() == sum(runner.episode_returns) + runner.ep_ret.sum()
    assert np.all(b.rew[~b.valid] == 0)
    assert len(runner.episode_returns) > 10


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_observation_or_reward_is_named_with_its_step(bad):
    class Bad(ScriptedVecEnv):
        def step(self, actions):
            obs, rew, term, trunc, info = super().step(actions)
            if len(self.actions_seen) == 3:
                rew[1] = bad
            return obs, rew, term, trunc, info

    with pytest.raises(UserError, match=r"non-finite reward .* step 2 of sub-env 1"):
        collect(Runner.start(Bad([[(9, "term")], [(9, "term")]]), seed=0), zeros_policy, T=5)


def test_unknown_env_and_unsupported_spaces_are_refused_clearly():
    with pytest.raises(UserError, match="unknown env id 'NoSuchEnv-v0'"):
        make_env("NoSuchEnv-v0")
    with pytest.raises(UserError, match="observation space Tuple.* not supported: .* flat Box"):
        make_env("Blackjack-v1")
    for space in [gym.spaces.MultiDiscrete([2, 3]), gym.spaces.Box(-np.inf, np.inf, (2,)),
                  gym.spaces.Box(-1, 1, (2, 2))]:
        env = ScriptedVecEnv([[(1, "term")]])
        env.single_action_space = space
        with pytest.raises(UserError, match="not supported; supported: Discrete, and 1-D Box"):
            check_env(env)
    env = ScriptedVecEnv([[(1, "term")]])
    env.metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
    with pytest.raises(UserError, match="autoreset mode .* not supported"):
        check_env(env)
    with pytest.raises(UserError, match="num_envs must be an integer >= 1"):
        make_env("CartPole-v1", 0)
