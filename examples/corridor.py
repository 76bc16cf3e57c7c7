"""A user's own environment, the gymnasium way: a module that registers it when imported.

    python -m pgnumpy.train --env examples.corridor:Corridor-v0
    python -m pgnumpy.evaluate RUN_DIR --import examples.corridor

gymnasium imports the module named before the colon (from the current directory, here the
repository root), which registers "Corridor-v0"; pgnumpy then trains on it like any other env.
Evaluating the run later imports the module only because --import names it: pgnumpy never
imports code that a run directory names by itself.
"""

import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    """Walk from cell 0 to the last cell of a corridor: -0.01 per step, +1 on arrival (the
    episode terminates there); 50 steps at most (a time-limit truncation). The observation is
    the position scaled to [0, 1]; actions: 0 = left, 1 = right."""

    def __init__(self, length: int = 8):
        self.length = length
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self) -> np.ndarray:
        return np.array([self.pos / (self.length - 1)], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0
        return self._obs(), {}

    def step(self, action):
        self.pos = int(np.clip(self.pos + (1 if action == 1 else -1), 0, self.length - 1))
        arrived = self.pos == self.length - 1
        return self._obs(), (1.0 if arrived else -0.01), arrived, False, {}


gym.register("Corridor-v0", entry_point=Corridor, max_episode_steps=50, reward_threshold=0.9)
