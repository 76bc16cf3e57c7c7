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


def exact_grad(mdp: TabularMDP, policy: CategoricalPolicy,
               visit_discount: float | None = None) -> np.ndarray:
    """grad J by the policy-gradient theorem (PG.1), exactly:

        grad J = sum_t gamma^t sum_s d_t(s) sum_a pi(a|s) Q_t(s, a) grad log pi(a|s),

    computed as one weighted backward over every (t, s, a) through the package's own policy.
    visit_discount replaces the gamma^t in front: 1.0 gives g_1 (RTG.4), the direction the forms
    that drop gamma^t (rtg, rtg - b, Q, A) estimate; None keeps gamma (grad J).
    """
    pi = probs(policy, mdp.S)
    _, Q = exact_values(mdp, pi)
    d = state_distributions(mdp, pi)
    t, s, a = (x.ravel() for x in np.meshgrid(np.arange(mdp.H), np.arange(mdp.S),
                                              np.arange(mdp.A), indexing="ij"))
    c = mdp.gamma if visit_discount is None else visit_discount
    w = c**t * d[t, s] * pi[s, a] * Q[t, s, a]
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
              val: np.ndarray | None = None,
              q_sa: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-trajectory estimate g(tau) = sum_t Phi_t grad log pi(a_t|s_t), (K, n), and its exact
    expectation sum_tau P(tau) g(tau), through the training path (EX.3): Phi from `phi.phi`,
    dlogp from `pg_loss`, the gradient from `CategoricalPolicy.backward`. Phi is exactly what
    training computes, no factor added: R(tau) is unbiased for grad J, the forms that drop
    gamma^t for g_1 (`exact_grad(..., visit_discount=1.0)`, RTG.4); equal at gamma = 1."""
    H, K = traj.rew.shape
    term = np.zeros((H, K), bool)
    term[-1] = True  # the horizon ends every trajectory
    weights = phi_fn(name, traj.rew, term, np.zeros((H, K), bool), mdp.gamma, 1.0,
                     valid=np.ones((H, K), bool), val=val,
                     next_val=None if val is None else np.zeros((H, K)), q_sa=q_sa)
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
    """Exact tr Cov of each estimator on one MDP (EX.4), around grad J (meant for gamma = 1, where
    every form is unbiased for it)."""
    pi = probs(policy, mdp.S)
    traj = enumerate_trajectories(mdp, pi)
    grad = exact_grad(mdp, policy)
    V, Q = exact_values(mdp, pi)
    t, s, a = np.arange(mdp.H)[:, None], traj.states, traj.actions
    forms = {
        "R(tau)": ("return", {}),
        "reward-to-go": ("rtg", {}),
        "rtg - V": ("rtg-baseline", {"val": V[t, s]}),
        "Q": ("q", {"q_sa": Q[t, s, a]}),
        "A = Q - V": ("q", {"q_sa": Q[t, s, a] - V[t, s]}),
    }
    out = {}
    for label, (name, kw) in forms.items():
        per_traj, _ = estimator(mdp, policy, traj, name, **kw)
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


# ---------------------------------------------------------------------------------------------
# Exact expectations on the layout training really uses: several episodes per column separated by
# NEXT_STEP reset steps, terminations, time-limit truncations, the cut at the rollout's end.
# Every path of one column is enumerated by running `rollout.collect` itself on an env whose
# random outcomes follow a script, so the batch (masks, stored observations, last_obs) is the one
# training builds; the estimate then goes phi -> pg_loss -> backward as in vpg.py / simple_pg.py.
# ---------------------------------------------------------------------------------------------


@dataclass
class EpisodicMDP:
    """A stationary tabular MDP with episodes of random length: after step (s, a) the episode
    terminates with probability p_term(s, a) (its final observation is s itself), otherwise it
    moves to s' ~ P(s, a, .). A time limit truncates it after `time_limit` steps.

    Two objectives, as the two ways the algorithms treat the time limit (07-termination-truncation):
    J_gamma = E[sum_t gamma^t r_t] with no time limit (VPG, PPO: the limit is the rollout's
    artefact, bootstrapped), and J_gamma^H, the return of the episode capped at H = time_limit
    (simple_pg without a critic: nothing is bootstrapped)."""

    mu: np.ndarray  # (S,)
    P: np.ndarray  # (S, A, S)
    p_term: np.ndarray  # (S, A), > 0 where gamma = 1 so that V is finite
    r: np.ndarray  # (S, A)
    gamma: float
    time_limit: int

    @property
    def S(self) -> int:
        return len(self.mu)

    @property
    def A(self) -> int:
        return self.r.shape[1]

    @classmethod
    def random(cls, rng: np.random.Generator, S: int, A: int, gamma: float, time_limit: int):
        return cls(rng.dirichlet(np.ones(S)), rng.dirichlet(np.ones(S), size=(S, A)),
                   rng.uniform(0.2, 0.6, (S, A)), rng.normal(size=(S, A)), gamma, time_limit)

    def continuing(self) -> np.ndarray:
        """(S, A, S): P(episode continues to s' | s, a) = (1 - p_term(s, a)) P(s' | s, a)."""
        return (1.0 - self.p_term)[:, :, None] * self.P


def stationary_values(mdp: EpisodicMDP, pi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """V and Q of J_gamma (no time limit), by one linear solve  (EX.5):

        V = r_pi + gamma P_pi V,
        Q(s, a) = r(s, a) + gamma sum_s' (1 - p_term(s, a)) P(s'|s, a) V(s')."""
    cont = mdp.continuing()
    V = np.linalg.solve(np.eye(mdp.S) - mdp.gamma * np.einsum("sa,sap->sp", pi, cont),
                        (pi * mdp.r).sum(axis=1))
    return V, mdp.r + mdp.gamma * cont @ V


def capped_values(mdp: EpisodicMDP, pi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """V_tau (H+1, S) and Q_tau (H, S, A) of the capped objective J_gamma^H, H = time_limit, by
    backward dynamic programming (EX.1 with termination): V_H = 0; the Q_tau of (RTG.4)."""
    H, cont = mdp.time_limit, mdp.continuing()
    V, Q = np.zeros((H + 1, mdp.S)), np.zeros((H, mdp.S, mdp.A))
    for t in range(H - 1, -1, -1):
        Q[t] = mdp.r + mdp.gamma * cont @ V[t + 1]
        V[t] = (pi * Q[t]).sum(axis=1)
    return V, Q


def alive_distributions(mdp: EpisodicMDP, pi: np.ndarray) -> np.ndarray:
    """d_tau(s) = P(s_tau = s and the episode still running), tau < time_limit, (H, S)  (RTG.4)."""
    d = np.zeros((mdp.time_limit, mdp.S))
    d[0] = mdp.mu
    for t in range(1, mdp.time_limit):
        d[t] = np.einsum("s,sa,sap->p", d[t - 1], pi, mdp.continuing())
    return d


def weighted_direction(policy, D: np.ndarray, pi: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """sum_{tau, s} D[tau, s] sum_a pi(a|s) Q_tau(s, a) grad log pi(a|s)  (RTG.3), by one backward.

    D[tau, s]: expected weighted visits of state s at episode time tau; Q: (S, A) stationary or
    (H, S, A) time-indexed. With D = the discounted alive distribution gamma^tau d_tau this is
    grad J (PG.1); with D = d_tau it is the direction the forms that drop gamma^t estimate."""
    H, S = D.shape
    A = pi.shape[1]
    Q = np.broadcast_to(Q, (H, S, A))
    t, s, a = (x.ravel() for x in np.meshgrid(np.arange(H), np.arange(S), np.arange(A),
                                              indexing="ij"))
    dist, cache = policy.dist(np.eye(S)[s])
    return policy.backward(cache, dist, a, D[t, s] * pi[s, a] * Q[t, s, a])


class ScriptedColumnEnv(gym.vector.VectorEnv):
    """One sub-env of an EpisodicMDP with NEXT_STEP autoreset whose every random outcome (start
    state, action, termination, next state) is the next entry of a script of choice indices.

    Records what a path needs: its probability, the choices made and how many options each had
    (to enumerate paths like an odometer), and per step the episode time tau and episode index.
    start: "fresh" (s_0 ~ mu), "reset" (row 0 is a reset step: the previous rollout ended an
    episode on its last step) or "mid" (the column begins inside an episode at time 1)."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, mdp: EpisodicMDP, pi: np.ndarray, start: str):
        self.mdp, self.pi, self.start, self.script = mdp, pi, start, []
        self.num_envs = 1
        self.single_observation_space = gym.spaces.Box(0.0, 1.0, (mdp.S,), np.float64)
        self.single_action_space = gym.spaces.Discrete(mdp.A)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, 1)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, 1)

    def choose(self, p: np.ndarray) -> int:
        k = self.script[len(self.chosen)] if len(self.chosen) < len(self.script) else 0
        self.chosen.append(k)
        self.n_options.append(len(p))
        self.prob *= p[k]
        return k

    def _obs(self):
        return np.eye(self.mdp.S)[[self.s]]

    def reset(self, *, seed=None, options=None):
        """Start the path `self.script` describes (set it before Runner.start calls this)."""
        self.prob, self.chosen, self.n_options = 1.0, [], []
        self.tau_log, self.episode_log = [], []
        self.s = self.choose(self.mdp.mu)
        self.tau, self.episode = (1 if self.start == "mid" else 0), 0
        self.pending = self.start == "reset"  # s is then the final obs of an episode gone by
        return self._obs(), {}

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The policy's draw, as a scripted choice; nothing at a reset step (the env ignores it)."""
        a = 0 if self.pending else self.choose(self.pi[self.s])
        return np.array([a]), np.log(self.pi[self.s, [a]])

    def step(self, actions):
        self.tau_log.append(self.tau)
        self.episode_log.append(self.episode)
        term = trunc = False
        if self.pending:  # NEXT_STEP: this step only starts a new episode, with reward 0
            self.s, self.tau, self.pending, rew = self.choose(self.mdp.mu), 0, False, 0.0
            self.episode += 1
        else:
            s, a = self.s, int(actions[0])
            rew = self.mdp.r[s, a]
            k = self.choose(np.concatenate([[self.mdp.p_term[s, a]],
                                            (1 - self.mdp.p_term[s, a]) * self.mdp.P[s, a]]))
            self.tau += 1
            if k == 0:
                term = True  # the final observation is s itself
            else:
                self.s = k - 1
                trunc = self.tau == self.mdp.time_limit
            self.pending = term or trunc
        return self._obs(), np.array([rew]), np.array([term]), np.array([trunc]), {}


@dataclass
class Columns:
    """Every path of one column, padded to a common length in (T, K) layout, with probabilities."""

    state: np.ndarray  # (T, K) the state of the stored observation (reset rows: the final obs)
    act: np.ndarray  # (T, K)
    rew: np.ndarray  # (T, K)
    term: np.ndarray  # (T, K)
    trunc: np.ndarray  # (T, K)
    valid: np.ndarray  # (T, K)
    last_state: np.ndarray  # (K,) the state of last_obs
    tau: np.ndarray  # (T, K) episode time of each row
    tau_batch: np.ndarray  # (T, K) rows since the episode's first valid row in the batch
    episodes: np.ndarray  # (K,) episodes with at least one valid row
    prob: np.ndarray  # (K,)

    def path(self, k: int) -> Columns:
        """Path k alone, as a one-column batch with probability 1."""
        one = [x[:, [k]] for x in (self.state, self.act, self.rew, self.term, self.trunc,
                                   self.valid)]
        return Columns(*one, self.last_state[[k]], self.tau[:, [k]], self.tau_batch[:, [k]],
                       self.episodes[[k]], np.ones(1))


def enumerate_columns(mdp: EpisodicMDP, pi: np.ndarray, *, T: int | None = None,
                      min_steps: int | None = None, start: str = "fresh") -> Columns:
    """Every path of one sub-env through `rollout.collect(T=...)` (VPG, PPO) or
    `collect(min_steps=...)` (simple_pg: whole episodes), with its exact probability (EX.2);
    the paths behind (RTG.3) and (RTG.4)."""
    from pgnumpy.rollout import Runner, collect  # the training path itself

    rows, env = [], ScriptedColumnEnv(mdp, pi, start)
    while True:
        runner = Runner.start(env, seed=None)
        runner.reset_next[:] = start == "reset"
        batch = collect(runner, env.act, T=T, min_steps=min_steps)
        rows.append((batch, env.prob, env.tau_log[: batch.T], env.episode_log[: batch.T]))
        j = len(env.chosen) - 1  # odometer: the last choice that still has an option left
        while j >= 0 and env.chosen[j] + 1 >= env.n_options[j]:
            j -= 1
        if j < 0:
            break
        env.script = env.chosen[:j] + [env.chosen[j] + 1]
    L, K = max(b.T for b, *_ in rows), len(rows)
    out = Columns(*(np.zeros((L, K), dt) for dt in (int, int, float, bool, bool, bool)),
                  np.zeros(K, int), np.zeros((L, K), int), np.zeros((L, K), int),
                  np.zeros(K, int), np.zeros(K))
    for k, (b, p, tau, ep) in enumerate(rows):
        n = b.T
        out.state[:n, k], out.act[:n, k] = b.obs[:, 0].argmax(axis=-1), b.act[:, 0]
        out.rew[:n, k], out.term[:n, k], out.trunc[:n, k] = b.rew[:, 0], b.term[:, 0], b.trunc[:, 0]
        out.valid[:n, k], out.last_state[k], out.prob[k] = b.valid[:, 0], b.last_obs[0].argmax(), p
        out.tau[:n, k] = tau
        ep, v = np.array(ep), b.valid[:, 0]
        first_tau = {e: tau[t] for t, e in reversed(list(enumerate(ep))) if v[t]}
        out.tau_batch[:n, k] = [tau[t] - first_tau.get(e, 0) for t, e in enumerate(ep)]
        out.episodes[k] = len(first_tau)
    return out


def batch_estimate(policy, cols: Columns, name: str, gamma: float, lam: float = 1.0,
                   V: np.ndarray | None = None, Q: np.ndarray | None = None,
                   bootstrap: bool = True) -> np.ndarray:
    """E[ sum over the batch's valid steps of Phi_t grad log pi(a_t|s_t) ] exactly (EX.3, the left
    side of RTG.3), with Phi
    computed as the algorithms compute it:

    bootstrap=True (vpg.py): val = V(obs) on every row, next_val = next_values(val, V(last_obs)),
        so truncations and the cut are bootstrapped with V of the true next state.
    bootstrap=False (simple_pg.py): no critic for "return"/"rtg"; with one, next_val is zeroed at
        truncations (the capped episode's return is the objective).
    V: (S,) state values for the critic; Q: (S, A) for phi "q". The batch's -1/n of pg_loss is
    undone with -n: this is the SUM over the batch; what the mean costs is `ratio_estimator`."""
    from pgnumpy.phi import PHI_FORMS, next_values

    val = next_val = q_sa = None
    if PHI_FORMS[name] == "v":
        val = V[cols.state]
        next_val = next_values(val, V[cols.last_state])
        if not bootstrap:
            next_val = np.where(cols.trunc, 0.0, next_val)
    elif name == "q":
        q_sa = np.where(cols.valid, Q[cols.state, cols.act], 0.0)
    elif bootstrap and V is not None:  # vpg.py hands next_val to every form
        next_val = next_values(V[cols.state], V[cols.last_state])
    weights = phi_fn(name, cols.rew, cols.term, cols.trunc, gamma, lam, valid=cols.valid,
                     val=val, next_val=next_val, q_sa=q_sa)
    m = cols.valid
    w = (weights * cols.prob[None, :])[m]
    s, a = cols.state[m], cols.act[m]
    dist, cache = policy.dist(np.eye(policy.net.sizes[0])[s])
    _, dlogp = pg_loss(dist.log_prob(a), w)
    return -len(w) * policy.backward(cache, dist, a, dlogp)


def visits(cols: Columns, H: int, S: int, discount: float = 1.0) -> np.ndarray:
    """D[tau, s] = E[ sum over valid rows with episode time tau and state s of discount^tau' ]
    (RTG.3),
    tau' the rows since the episode's first valid row in the batch (the weight R(tau) carries)."""
    D = np.zeros((H, S))
    m = cols.valid
    np.add.at(D, (cols.tau[m], cols.state[m]),
              (discount ** cols.tau_batch * cols.prob[None, :])[m])
    return D


def discounted_visits(mdp: EpisodicMDP, pi: np.ndarray, discount: float) -> np.ndarray:
    """d(s) = sum_tau discount^tau P(s_tau = s, alive) with no time limit, (S,): mu (I - c M)^-1."""
    M = np.einsum("sa,sap->sp", pi, mdp.continuing())
    return np.linalg.solve((np.eye(mdp.S) - discount * M).T, mdp.mu)


def mean_estimate(mdp: EpisodicMDP, policy, name: str, B: int) -> tuple[np.ndarray, float]:
    """E[ (1/n) sum_{t in batch} Phi_t grad log pi(a_t|s_t) ] for a batch of B whole episodes
    (simple_pg's layout, no bootstrap), n their total number of steps: the per-step mean that
    pg_loss takes (PG.5). A ratio of two random sums, so not E[sum] / E[n]  (EX.6).

    Exact: by symmetry E = B E[G_1 / (L_1 + L_rest)], G_1 and L_1 the first episode's sum and
    length, L_rest the total length of the other B - 1 episodes, independent of the first; its
    distribution is the (B - 1)-fold convolution of the length distribution. Returns the
    expectation and E[L]."""
    cols = enumerate_columns(mdp, probs(policy, mdp.S), min_steps=1)  # one episode per path
    L = cols.valid.sum(axis=0)
    G = np.stack([batch_estimate(policy, cols.path(k), name, mdp.gamma, bootstrap=False)
                  for k in range(len(L))])
    p_len = np.bincount(L, weights=cols.prob)  # P(L = l)
    rest = np.array([1.0])  # distribution of L_rest: rest[j] = P(L_rest = j)
    for _ in range(B - 1):
        rest = np.convolve(rest, p_len)
    inv = (rest[None, :] / (L[:, None] + np.arange(len(rest))[None, :])).sum(axis=1)
    return B * (cols.prob * inv) @ G, float(cols.prob @ L)
