"""Running observation normalisation and reward scaling (as SB3's VecNormalize and CleanRL's
gymnasium wrappers do), both optional and both saved with the checkpoint.

Observations: obs_n = clip((obs - mean) / sqrt(var + eps), -clip, clip). The statistics are frozen
while a rollout is collected and while the policy trains on it, so logp_old and the update see the
same inputs; they are updated from the rollout's observations afterwards.

Rewards: r_s = clip(r / sqrt(var(G) + eps), -clip, clip), with G the discounted return running in
each sub-env (G_t = gamma G_{t-1} + r_t, restarted after every episode end). Dividing every reward
by one positive number scales every advantage and value target by it, so the policy gradient keeps
its direction; what changes is the size of the critic's regression targets, which stay near 1
whatever the env's reward scale. The mean is not subtracted: that would change the problem
(a constant reward per step rewards or punishes living longer).
"""

from __future__ import annotations

import numpy as np


def merge_moments(mean, var, count: float, x: np.ndarray):
    """Merge the mean and variance of a batch x (n, ...) into running ones (Chan et al.'s
    parallel algorithm: exact, the moments of the concatenation)  (NORM.2).

    Returns (mean, var, count)."""
    n, b_mean, b_var = len(x), x.mean(axis=0), x.var(axis=0)
    delta, total = b_mean - mean, count + n
    m2 = var * count + b_var * n + delta**2 * count * n / total
    return mean + delta * n / total, m2 / total, total


class ObsNorm:
    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8):
        # count 0: the first batch's moments replace the placeholders exactly (SB3's prior count
        # of 1e-4 at mean 0 inflates the variance of an observation far from 0 with a small spread)
        self.mean, self.var, self.count = np.zeros(dim), np.ones(dim), 0.0
        self.clip, self.eps = clip, eps

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        z = (obs - self.mean) / np.sqrt(self.var + self.eps)
        return np.clip(z, -self.clip, self.clip).astype(obs.dtype, copy=False)

    def update(self, x: np.ndarray) -> None:
        """Merge the mean and variance of a batch x (n, dim) into the running ones."""
        if len(x):
            self.mean, self.var, self.count = merge_moments(self.mean, self.var, self.count, x)

    def state(self) -> dict:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": self.count}

    def load(self, d: dict) -> None:
        self.mean, self.var, self.count = np.array(d["mean"]), np.array(d["var"]), d["count"]


class RewScale:
    """Reward scaling by the running standard deviation of the discounted return G (module doc)."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8):
        self.g = np.zeros(num_envs)  # G of the episode running in each sub-env
        self.mean, self.var, self.count = 0.0, 1.0, 0.0  # as in ObsNorm
        self.gamma, self.clip, self.eps = gamma, clip, eps

    def __call__(
        self, rew: np.ndarray, term: np.ndarray, trunc: np.ndarray, valid: np.ndarray
    ) -> np.ndarray:
        """Scaled rewards of a (T, N) rollout  (NORM.1); first merges the rollout's G values
        (valid steps only) into the statistics. A NEXT_STEP reset step has reward 0 and G already
        restarted."""
        G = np.empty_like(rew)
        for t in range(len(rew)):  # a loop over T of (N,)-vector operations
            self.g = self.gamma * self.g + rew[t]
            G[t] = self.g
            self.g[term[t] | trunc[t]] = 0.0
        if valid.any():
            self.mean, self.var, self.count = merge_moments(self.mean, self.var, self.count,
                                                            G[valid])
        return np.clip(rew / np.sqrt(self.var + self.eps), -self.clip, self.clip)

    def state(self) -> dict:
        return {"mean": float(self.mean), "var": float(self.var), "count": float(self.count)}

    def load(self, d: dict) -> None:
        """The statistics; the running G restarts at 0 (a resumed run starts fresh episodes)."""
        self.mean, self.var, self.count = d["mean"], d["var"], d["count"]
        self.g[:] = 0.0
