"""Exact policy-gradient theory on small finite-horizon tabular MDPs.

Everything here is computed exactly (dynamic programming, or enumeration of every trajectory with
its probability), so the tests can check the estimators the training code uses to 1e-9 instead of
to a few standard errors. The policy is the package's own CategoricalPolicy over a one-hot state
(an MLP with sizes [S, A]: logits = onehot(s) W + b), so its hand-derived backward is under test
too; gradients flow through the same `pg_loss` -> `CategoricalPolicy.backward` path as training.

Conventions: states s_0 ~ mu, steps t = 0..H-1, reward r(s_t, a_t), J = E[sum_t gamma^t r_t].
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from pgnumpy.objectives import pg_loss
from pgnumpy.phi import phi as phi_fn
from pgnumpy.policy import CategoricalPolicy


@dataclass
class TabularMDP:
    mu: np.ndarray  # (S,) initial distribution
    P: np.ndarray  # (S, A, S) transition probabilities
    r: np.ndarray  # (S, A) rewards
    H: int  # horizon: steps per episode
    gamma: float

    @property
    def S(self) -> int:
        return len(self.mu)

    @property
    def A(self) -> int:
        return self.r.shape[1]

    @classmethod
    def random(cls, rng: np.random.Generator, S: int, A: int, H: int, gamma: float = 1.0):
        return cls(rng.dirichlet(np.ones(S)), rng.dirichlet(np.ones(S), size=(S, A)),
                   rng.normal(size=(S, A)), H, gamma)


def tabular_policy(mdp: TabularMDP, rng: np.random.Generator, scale: float = 1.0,
                   hidden: tuple[int, ...] = ()):
    """A softmax policy over tabular logits: the package's MLP over one-hot states, with no
    hidden layer (logits = onehot(s) W + b, i.e. tabular) or with `hidden` layers."""
    pol = CategoricalPolicy(mdp.S, mdp.A, list(hidden), rng=rng, dtype=np.float64)
    pol.net.params[:] = rng.normal(0, scale, pol.params.shape)
    return pol


def probs(policy: CategoricalPolicy, S: int) -> np.ndarray:
    """pi(a|s) for every state, (S, A), from the policy's own forward."""
    return policy.dist(np.eye(S))[0].probs


def exact_values(mdp: TabularMDP, pi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """V_t(s) (H+1, S) and Q_t(s, a) (H, S, A) by backward dynamic programming (EX.1):

        Q_t(s, a) = r(s, a) + gamma sum_s' P(s'|s, a) V_{t+1}(s'),
        V_t(s) = sum_a pi(a|s) Q_t(s, a),
        V_H = 0.
    """
    V = np.zeros((mdp.H + 1, mdp.S))
    Q = np.zeros((mdp.H, mdp.S, mdp.A))
    for t in range(mdp.H - 1, -1, -1):
        Q[t] = mdp.r + mdp.gamma * mdp.P @ V[t + 1]
        V[t] = (pi * Q[t]).sum(axis=1)
    return V, Q


def exact_J(mdp: TabularMDP, policy: CategoricalPolicy) -> float:
    """J = sum_s mu(s) V_0(s)  (EX.1)."""
    V, _ = exact_values(mdp, probs(policy, mdp.S))
    return float(mdp.mu @ V[0])


def state_distributions(mdp: TabularMDP, pi: np.ndarray) -> np.ndarray:
    """d_t(s) = P(s_t = s), (H, S)."""
    d = np.zeros((mdp.H, mdp.S))
    d[0] = mdp.mu
    for t in range(1, mdp.H):
        d[t] = np.einsum("s,sa,sap->p", d[t - 1], pi, mdp.P)
    return d


def exact_grad(mdp: TabularMDP, policy: CategoricalPolicy) -> np.ndarray:
    """grad J by the policy-gradient theorem (PG.1), exactly:

        grad J = sum_t gamma^t sum_s d_t(s) sum_a pi(a|s) Q_t(s, a) grad log pi(a|s),

    computed as one weighted backward over every (t, s, a) through the package's own policy.
    """
    pi = probs(policy, mdp.S)
    _, Q = exact_values(mdp, pi)
    d = state_distributions(mdp, pi)
    t, s, a = (x.ravel() for x in np.meshgrid(np.arange(mdp.H), np.arange(mdp.S),
                                              np.arange(mdp.A), indexing="ij"))
    w = mdp.gamma**t * d[t, s] * pi[s, a] * Q[t, s, a]
    dist, cache = policy.dist(np.eye(mdp.S)[s])
    return policy.backward(cache, dist, a, w)


def log_prob_grads(policy: CategoricalPolicy, S: int, A: int) -> np.ndarray:
    """G[s, a] = grad_theta log pi(a|s), (S, A, n_params), by the policy's backward."""
    G = np.zeros((S, A, policy.params.size))
    for s in range(S):
        for a in range(A):
            dist, cache = policy.dist(np.eye(S)[[s]])
            G[s, a] = policy.backward(cache, dist, np.array([a]), np.ones(1))
    return G


@dataclass
class Trajectories:
    """Every trajectory of an MDP under a policy, as a (H, K) rollout, with its probability."""

    states: np.ndarray  # (H, K)
    actions: np.ndarray  # (H, K)
    rew: np.ndarray  # (H, K)
    prob: np.ndarray  # (K,)


def enumerate_trajectories(mdp: TabularMDP, pi: np.ndarray) -> Trajectories:
    """All (s_0, a_0, ..., s_{H-1}, a_{H-1}) with their exact probabilities (EX.2):

        P(tau) = mu(s_0) prod_t pi(a_t|s_t) prod_{t<H-1} P(s_{t+1}|s_t, a_t)."""
    sa = list(itertools.product(range(mdp.S), range(mdp.A)))
    combos = np.array(list(itertools.product(range(len(sa)), repeat=mdp.H)))  # (K, H)
    pairs = np.array(sa)[combos]  # (K, H, 2)
    s, a = pairs[..., 0].T, pairs[..., 1].T  # (H, K)
    p = mdp.mu[s[0]] * np.prod(pi[s, a], axis=0)
    for t in range(mdp.H - 1):
        p = p * mdp.P[s[t], a[t], s[t + 1]]
    return Trajectories(s, a, mdp.r[s, a], p)


def trajectory_logp_grad(G: np.ndarray, traj: Trajectories) -> np.ndarray:
    """grad log P(tau) = sum_t grad log pi(a_t|s_t), per trajectory, (K, n_params)  (PG.2).

    The dynamics' and start distribution's terms are absent: they do not depend on theta."""
    return G[traj.states, traj.actions].sum(axis=0)


def estimator(mdp: TabularMDP, policy: CategoricalPolicy, traj: Trajectories, name: str,
              val: np.ndarray | None = None, q_sa: np.ndarray | None = None,
              discount_weight: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-trajectory estimate g(tau) = sum_t gamma^t Phi_t grad log pi(a_t|s_t), (K, n), and its
    exact expectation sum_tau P(tau) g(tau), through the training path (EX.3): Phi from
    `phi.phi`, dlogp from `pg_loss`, the gradient from `CategoricalPolicy.backward`.

    discount_weight: multiply Phi_t by gamma^t, as the discounted objective requires; False is
    what practical implementations do (biased when gamma < 1)."""
    H, K = traj.rew.shape
    term = np.zeros((H, K), bool)
    term[-1] = True  # the horizon ends every trajectory
    weights = phi_fn(name, traj.rew, term, np.zeros((H, K), bool), mdp.gamma, 1.0,
                     valid=np.ones((H, K), bool), val=val,
                     next_val=None if val is None else np.zeros((H, K)), q_sa=q_sa)
    if discount_weight:
        weights = weights * mdp.gamma ** np.arange(H)[:, None]
    # the expectation through the training path: a batch of every step of every trajectory,
    # each weighted by its trajectory's probability; pg_loss's -1/n undone by -n
    flat_s, flat_a = traj.states.ravel(), traj.actions.ravel()
    w = (weights * traj.prob[None, :]).ravel()
    dist, cache = policy.dist(np.eye(mdp.S)[flat_s])
    _, dlogp = pg_loss(dist.log_prob(flat_a), w)
    mean = -len(w) * policy.backward(cache, dist, flat_a, dlogp)
    # per trajectory (for variances): sum_t Phi_t G[s_t, a_t]
    G = log_prob_grads(policy, mdp.S, mdp.A)
    per_traj = np.einsum("hk,hkn->kn", weights, G[traj.states, traj.actions])
    return per_traj, mean


def exact_variance(per_traj: np.ndarray, prob: np.ndarray, grad: np.ndarray) -> float:
    """tr Cov[g] = sum_tau P(tau) ||g(tau)||^2 - ||grad J||^2  (EX.4)."""
    return float(prob @ np.sum(per_traj**2, axis=1) - grad @ grad)


def variances(mdp: TabularMDP, policy: CategoricalPolicy) -> dict[str, float]:
    """Exact tr Cov of each estimator on one MDP (EX.4), Phi forms with their unbiased weights."""
    pi = probs(policy, mdp.S)
    traj = enumerate_trajectories(mdp, pi)
    grad = exact_grad(mdp, policy)
    V, Q = exact_values(mdp, pi)
    t, s, a = np.arange(mdp.H)[:, None], traj.states, traj.actions
    forms = {
        "R(tau)": ("return", {}, False),
        "reward-to-go": ("rtg", {}, True),
        "rtg - V": ("rtg-baseline", {"val": V[t, s]}, True),
        "Q": ("q", {"q_sa": Q[t, s, a]}, True),
        "A = Q - V": ("q", {"q_sa": Q[t, s, a] - V[t, s]}, True),
    }
    out = {}
    for label, (name, kw, dw) in forms.items():
        per_traj, _ = estimator(mdp, policy, traj, name, discount_weight=dw, **kw)
        out[label] = exact_variance(per_traj, traj.prob, grad)
    return out


class TabularVecEnv(gym.vector.VectorEnv):
    """N copies of a tabular MDP as a gymnasium vector env with NEXT_STEP autoreset, so Monte
    Carlo batches come from the training path (`rollout.collect`). Observation: one-hot state;
    every episode terminates after H steps."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, mdp: TabularMDP, num_envs: int):
        self.mdp, self.num_envs = mdp, num_envs
        self.single_observation_space = gym.spaces.Box(0.0, 1.0, (mdp.S,), np.float64)
        self.single_action_space = gym.spaces.Discrete(mdp.A)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space,
                                                              num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed=None, options=None):
        self.rng = np.random.default_rng(seed)
        self.s = self._draw(self.mdp.mu, self.num_envs)
        self.t = np.zeros(self.num_envs, np.int64)
        self.pending = np.zeros(self.num_envs, bool)
        return np.eye(self.mdp.S)[self.s], {}

    def _draw(self, p: np.ndarray, n: int) -> np.ndarray:
        """One sample per row of p (or n samples of one p), by inverse CDF."""
        cdf = np.cumsum(np.broadcast_to(p, (n, p.shape[-1])), axis=1)
        return np.minimum((cdf < self.rng.random((n, 1))).sum(axis=1), p.shape[-1] - 1)

    def step(self, actions):
        a = np.asarray(actions)
        rew = self.mdp.r[self.s, a].copy()
        rew[self.pending] = 0.0
        term = np.zeros(self.num_envs, bool)
        nxt = self._draw(self.mdp.P[self.s, a], self.num_envs)
        self.t += 1
        term[~self.pending] = self.t[~self.pending] == self.mdp.H
        # NEXT_STEP: a sub-env whose episode ended last step resets now, ignoring its action
        nxt[self.pending] = self._draw(self.mdp.mu, self.num_envs)[self.pending]
        self.t[self.pending] = 0
        self.s, self.pending = nxt, term
        return np.eye(self.mdp.S)[self.s], rew, term, np.zeros(self.num_envs, bool), {}
