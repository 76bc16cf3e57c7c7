"""Actor and critics: an MLP plus a distribution head, and the backward pass from dL/dlogp.

The chain rule a policy-gradient step follows, outermost first:

    dL/dlogp  (the objective, pgnumpy/objectives.py)
      -> dL/dlogits = dL/dlogp * (onehot(a) - p) + dL/dH * dH/dlogits   (CAT.2, CAT.4)
      -> dL/dparams by the MLP's backward                                (MLP.1-3)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pgnumpy import kernels
from pgnumpy.distributions import Categorical
from pgnumpy.nn import MLP
from pgnumpy.objectives import value_loss


class CategoricalPolicy:
    """pi(a|s) = softmax(MLP(s))_a over a Discrete action space."""

    def __init__(
        self,
        obs_dim: int,
        n_act: int,
        hidden: Sequence[int],
        activation: str = "tanh",
        *,
        rng: np.random.Generator,
        dtype=np.float64,
    ):
        # a small last-layer gain starts the policy near uniform (as PPO implementations do)
        self.net = MLP([obs_dim, *hidden, n_act], activation, rng=rng, dtype=dtype, out_gain=0.01)

    @property
    def params(self) -> np.ndarray:
        return self.net.params

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Sample a ~ pi(.|obs) for a batch of observations; return (act, logp)."""
        # one jitted pass samples and scores (kernels.categorical_sample); equal in distribution
        # to Categorical(logits).sample, which the tests check
        return kernels.categorical_sample(self.net(obs), rng.random(len(obs)))

    def act_deterministic(self, obs: np.ndarray) -> np.ndarray:
        return Categorical(self.net(obs)).mode()

    def dist(self, obs: np.ndarray) -> tuple[Categorical, list]:
        logits, cache = self.net.forward(obs)
        return Categorical(logits), cache

    def backward(
        self,
        cache: list,
        dist: Categorical,
        act: np.ndarray,
        dlogp: np.ndarray,
        dent: float = 0.0,
        dkl: np.ndarray | None = None,
        old: Categorical | None = None,
    ) -> np.ndarray:
        """dL/dparams from dL/dlogp (per sample), dL/dH (one weight for every sample's entropy)
        and, for PPO-KL, dL/dKL_i with KL_i = KL(old_i || pi_i) (per sample)."""
        dlogits = dlogp[:, None] * dist.log_prob_grad(act)  # (CAT.2)
        if dent:
            dlogits += dent * dist.entropy_grad()  # (CAT.4)
        if dkl is not None:
            dlogits += dkl[:, None] * old.kl_grad_other(dist)  # (CAT.6)
        grad, _ = self.net.backward(cache, dlogits.astype(self.net.dtype, copy=False))
        return grad


class ValueCritic:
    """V_phi(s): an MLP with one linear output."""

    def __init__(
        self,
        obs_dim: int,
        hidden: Sequence[int],
        activation: str = "tanh",
        *,
        rng: np.random.Generator,
        dtype=np.float64,
    ):
        self.net = MLP([obs_dim, *hidden, 1], activation, rng=rng, dtype=dtype, out_gain=1.0)

    @property
    def params(self) -> np.ndarray:
        return self.net.params

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.net(obs)[:, 0].astype(np.float64)

    def loss_and_grad(self, obs: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean-squared-error regression of V(s) on `target` (VAL.1) and its gradient."""
        v, cache = self.net.forward(obs)
        loss, dv = value_loss(v[:, 0].astype(np.float64), target)
        grad, _ = self.net.backward(cache, dv[:, None].astype(self.net.dtype))
        return loss, grad


class QCritic:
    """Q_w(s, a): an MLP with one output per action; Q(s, a) = MLP(s)[a]."""

    def __init__(
        self,
        obs_dim: int,
        n_act: int,
        hidden: Sequence[int],
        activation: str = "tanh",
        *,
        rng: np.random.Generator,
        dtype=np.float64,
    ):
        self.net = MLP([obs_dim, *hidden, n_act], activation, rng=rng, dtype=dtype, out_gain=1.0)

    @property
    def params(self) -> np.ndarray:
        return self.net.params

    def __call__(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        q = self.net(obs)
        return q[np.arange(len(act)), act].astype(np.float64)

    def loss_and_grad(
        self, obs: np.ndarray, act: np.ndarray, target: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """MSE regression of Q(s, a) on `target` (VAL.1); only the taken action's output moves."""
        q, cache = self.net.forward(obs)
        rows = np.arange(len(act))
        loss, dq_sa = value_loss(q[rows, act].astype(np.float64), target)
        dq = np.zeros_like(q)
        dq[rows, act] = dq_sa  # d q[rows, act] / d q is the one-hot of the taken action
        grad, _ = self.net.backward(cache, dq)
        return loss, grad
