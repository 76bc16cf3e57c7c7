"""Running observation normalisation (as SB3's VecNormalize and CleanRL's wrappers do).

obs_n = clip((obs - mean) / sqrt(var + eps), -clip, clip), with mean and var merged batch by batch
(Chan et al.'s parallel algorithm). The statistics are frozen while a rollout is collected and
while the policy trains on it, so logp_old and the update see the same inputs; they are updated
from the rollout's observations afterwards, and saved with the checkpoint.
"""

from __future__ import annotations

import numpy as np


class ObsNorm:
    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8):
        self.mean, self.var, self.count = np.zeros(dim), np.ones(dim), 1e-4
        self.clip, self.eps = clip, eps

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        z = (obs - self.mean) / np.sqrt(self.var + self.eps)
        return np.clip(z, -self.clip, self.clip).astype(obs.dtype, copy=False)

    def update(self, x: np.ndarray) -> None:
        """Merge the mean and variance of a batch x (n, dim) into the running ones."""
        n, mean, var = len(x), x.mean(axis=0), x.var(axis=0)
        delta, total = mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        m2 = self.var * self.count + var * n + delta**2 * self.count * n / total
        self.var, self.count = m2 / total, total

    def state(self) -> dict:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": self.count}

    def load(self, d: dict) -> None:
        self.mean, self.var, self.count = np.array(d["mean"]), np.array(d["var"]), d["count"]
