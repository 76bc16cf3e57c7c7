"""A scripted vector env with gymnasium's NEXT_STEP autoreset, for rollout tests.

Sub-env i plays episodes whose lengths and endings are given by a script: a list of
(length, "term" | "trunc") per sub-env, repeated. The observation is
[episode index, step within episode, sub-env index, 1 if this is a final observation else 0], so a
test can tell exactly which state was stored where. The reward of step k of an episode is k + 1.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class ScriptedVecEnv(gym.vector.VectorEnv):
    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, scripts: list[list[tuple[int, str]]], n_act: int = 2):
        self.num_envs = len(scripts)
        self.scripts = scripts
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float64)
        self.single_action_space = gym.spaces.Discrete(n_act)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.actions_seen: list[np.ndarray] = []

    def _obs(self, final: np.ndarray) -> np.ndarray:
        return np.stack([self.ep, self.k, np.arange(self.num_envs), final], axis=1).astype(float)

    def reset(self, *, seed=None, options=None):
        self.ep = np.zeros(self.num_envs, np.int64)
        self.k = np.zeros(self.num_envs, np.int64)
        self.pending_reset = np.zeros(self.num_envs, bool)
        return self._obs(np.zeros(self.num_envs)), {}

    def step(self, actions):
        self.actions_seen.append(np.asarray(actions).copy())
        n = self.num_envs
        rew, term, trunc, final = np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n)
        for i in range(n):
            if self.pending_reset[i]:  # NEXT_STEP: this step only resets sub-env i
                self.pending_reset[i] = False
                self.ep[i] += 1
                self.k[i] = 0
                continue
            length, end = self.scripts[i][self.ep[i] % len(self.scripts[i])]
            rew[i] = self.k[i] + 1
            self.k[i] += 1
            if self.k[i] == length:
                term[i], trunc[i] = end == "term", end == "trunc"
                final[i] = 1.0
                self.pending_reset[i] = True
        return self._obs(final), rew, term, trunc, {}
