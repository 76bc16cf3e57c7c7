"""Exact unbiasedness checks of a user's policy-gradient estimator on small tabular MDPs.

Every batch the estimator can see is enumerated with its exact probability (EX.2) by running
pgnumpy's own rollout code (`rollout.collect`, NEXT_STEP autoreset) on an env whose random
outcomes follow a script (`pgnumpy.exact.enumerate_columns`), so the estimator's expectation is
a finite sum, exact to float64 rounding, and is compared with the exact gradient to 1e-10 instead
of to a few standard errors. The machinery is pgnumpy.exact's (derivations/variance.md,
derivations/07-termination-truncation.md; tests/test_exact_layout.py checks it).

The policy is the user's: any object with
    probs(s) -> (N, A)                pi(a | s) for integer states s (N,)
    grad_log_prob(s, a) -> (N, n)     grad_theta log pi(a_i | s_i), one row per pair
(pgnumpy's CategoricalPolicy over one-hot states is accepted as it is). The estimator is the
user's too: estimator(batch, policy) -> (n,), its gradient estimate from one TabularBatch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pgnumpy.errors import UserError
from pgnumpy.exact import (
    Columns,
    EpisodicMDP,
    alive_distributions,
    capped_values,
    enumerate_columns,
    stationary_values,
    visits,
)

TOL = 1e-10
STARTS = ("fresh", "reset", "mid")


def random_tabular_mdp(seed: int = 0, S: int = 2, A: int = 2, gamma: float = 0.9,
                       time_limit: int = 3) -> EpisodicMDP:
    """A random stationary tabular MDP with episodes of random length (pgnumpy.exact.EpisodicMDP):
    s_0 ~ mu, reward r(s, a) ~ N(0, 1), after each step the episode terminates with probability
    p_term(s, a) in [0.2, 0.6] (its final observation is s itself), else moves to s' ~ P(s, a, .);
    a time limit truncates it after `time_limit` steps."""
    for name, v, lo in (("S", S, 1), ("A", A, 1), ("time_limit", time_limit, 1)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise UserError(f"{name} must be an integer >= {lo}, got {v!r}")
    if not 0.0 < gamma <= 1.0:
        raise UserError(f"gamma must be in (0, 1], got {gamma!r}")
    return EpisodicMDP.random(np.random.default_rng(seed), S, A, float(gamma), time_limit)


def tabular_mdps(max_S: int = 3, max_A: int = 3, max_time_limit: int = 3, gamma=None,
                 max_paths: int = 2000):
    """A hypothesis strategy of random_tabular_mdp's, small enough to enumerate fast: the time
    limit is capped so that there are at most max_paths whole episodes (S (A (S + 1))^time_limit
    counts them). gamma: a float, or None to draw it from [0.5, 1]."""
    from hypothesis import strategies as st

    @st.composite
    def strategy(draw):
        S = draw(st.integers(1, max_S))
        A = draw(st.integers(1, max_A))
        L = 1
        while L < max_time_limit and S * (A * (S + 1)) ** (L + 1) <= max_paths:
            L += 1
        L = draw(st.integers(1, L))
        g = draw(st.floats(0.5, 1.0)) if gamma is None else gamma
        return random_tabular_mdp(draw(st.integers(0, 2**32 - 1)), S, A, g, L)

    return strategy()


@dataclass
class TabularBatch:
    """One column of a rollout in pgnumpy's (T, N) layout with N = 1, as `rollout.collect` builds
    it (NEXT_STEP autoreset, derivations/07-termination-truncation.md). Row t: the agent saw state
    s[t], took a[t], got rew[t]; term[t] / trunc[t]: the episode terminated (no bootstrap) / hit
    the time limit (bootstrap with V of the final state) at this step. valid[t] is False at a
    RESET row: the step after an episode ended, where the env ignores the action, starts a new
    episode and returns reward 0; its s[t] is the ended episode's final state (so the next valid
    row's state follows it), its a[t] is 0. last_s: the state the rollout stopped in (the cut, for
    bootstrapping the episode still running). tau[t]: the episode time of row t (steps since its
    episode began, counted from before this batch if it began earlier)."""

    s: np.ndarray  # (T,) int
    a: np.ndarray  # (T,) int
    rew: np.ndarray  # (T,) float
    term: np.ndarray  # (T,) bool
    trunc: np.ndarray  # (T,) bool
    valid: np.ndarray  # (T,) bool
    last_s: int
    tau: np.ndarray  # (T,) int
    S: int

    @property
    def T(self) -> int:
        return len(self.rew)

    @property
    def obs(self) -> np.ndarray:
        """(T, S) one-hot observations, as pgnumpy's vector envs return them."""
        return np.eye(self.S)[self.s]


class _CategoricalAdapter:
    """pgnumpy's CategoricalPolicy over one-hot states, in the probs / grad_log_prob protocol."""

    def __init__(self, policy, S: int):
        self.policy, self.S = policy, S

    def probs(self, s):
        return self.policy.dist(np.eye(self.S)[s])[0].probs

    def grad_log_prob(self, s, a):
        out = []
        for si, ai in zip(s, a):
            dist, cache = self.policy.dist(np.eye(self.S)[[si]])
            out.append(self.policy.backward(cache, dist, np.array([ai]), np.ones(1)))
        return np.stack(out)


def _protocol(policy, S: int):
    if hasattr(policy, "probs") and hasattr(policy, "grad_log_prob"):
        return policy
    if hasattr(policy, "dist") and hasattr(policy, "backward"):
        return _CategoricalAdapter(policy, S)
    raise UserError("the policy needs probs(s) -> (N, A) and grad_log_prob(s, a) -> (N, n) for "
                    "integer states s and actions a (or be pgnumpy's CategoricalPolicy)")


def _pi(mdp: EpisodicMDP, pol) -> np.ndarray:
    pi = np.asarray(pol.probs(np.arange(mdp.S)), dtype=np.float64)
    if pi.shape != (mdp.S, mdp.A):
        raise UserError(f"policy.probs(range(S)) must have shape (S, A) = {(mdp.S, mdp.A)}, "
                        f"got {pi.shape}")
    if np.abs(pi.sum(axis=1) - 1).max() > 1e-9 or (pi < 0).any():
        raise UserError("policy.probs must return a probability distribution over actions in "
                        "each row (non-negative, summing to 1)")
    return pi


def _scores(mdp: EpisodicMDP, pol) -> np.ndarray:
    """G[s, a] = grad log pi(a | s), (S, A, n), from the user's grad_log_prob."""
    s, a = (x.ravel() for x in np.meshgrid(np.arange(mdp.S), np.arange(mdp.A), indexing="ij"))
    G = np.asarray(pol.grad_log_prob(s, a), dtype=np.float64)
    if G.ndim != 2 or G.shape[0] != len(s):
        raise UserError(f"policy.grad_log_prob(s, a) must return one row per pair, shape "
                        f"(N, n_params); got {G.shape} for N = {len(s)}")
    return G.reshape(mdp.S, mdp.A, -1)


def _check_layout(mdp: EpisodicMDP, T: int | None, start: str) -> None:
    if not isinstance(mdp, EpisodicMDP):
        raise UserError("mdp must come from random_tabular_mdp (a pgnumpy.exact.EpisodicMDP)")
    if start not in STARTS:
        raise UserError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    if T is None and start != "fresh":
        raise UserError("start applies to a column of T rows; give T")
    if T is not None and (not isinstance(T, (int, np.integer)) or T < 1):
        raise UserError(f"T must be an integer >= 1, got {T!r}")


_CACHE: dict = {}  # the last few enumerations: a test checks several estimators on one layout


def _columns(mdp: EpisodicMDP, pi: np.ndarray, T: int | None, start: str) -> Columns:
    key = (T, start, mdp.gamma, mdp.time_limit,
           *(np.ascontiguousarray(a).tobytes() for a in (mdp.mu, mdp.P, mdp.p_term, mdp.r, pi)))
    if key not in _CACHE:
        if len(_CACHE) >= 8:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = (enumerate_columns(mdp, pi, min_steps=1) if T is None  # one episode
                       else enumerate_columns(mdp, pi, T=T, start=start))
    return _CACHE[key]


def _batches(cols: Columns, S: int, T: int | None):
    for k in range(len(cols.prob)):
        # a column has T rows; a whole episode's path has as many as it has (valid) steps, the
        # rest is padding
        n = T if T is not None else int(cols.valid[:, k].sum())
        yield cols.prob[k], TabularBatch(
            cols.state[:n, k].copy(), cols.act[:n, k].copy(), cols.rew[:n, k].copy(),
            cols.term[:n, k].copy(), cols.trunc[:n, k].copy(), cols.valid[:n, k].copy(),
            int(cols.last_state[k]), cols.tau[:n, k].copy(), S)


def estimator_expectation(estimator: Callable[[TabularBatch, object], np.ndarray],
                          mdp: EpisodicMDP, policy, *, T: int | None = None,
                          start: str = "fresh") -> np.ndarray:
    """E[estimator(batch, policy)] exactly: the sum over every batch the rollout can produce of
    its probability times the estimate (EX.2, EX.3).

    T=None: the batch is one whole episode (t = 0 .. its end by termination or the time limit).
    T=int: the batch is a column of T rows of pgnumpy's NEXT_STEP layout (VPG / PPO), holding
        several episodes with a reset row between them and cut at row T; start = "fresh" (the
        column starts an episode), "reset" (row 0 is a reset row: the previous rollout ended an
        episode on its last step) or "mid" (row 0 is at episode time 1 of a running episode).
    """
    _check_layout(mdp, T, start)
    pol = _protocol(policy, mdp.S)
    cols = _columns(mdp, _pi(mdp, pol), T, start)
    total, n = None, None
    for p, batch in _batches(cols, mdp.S, T):
        g = np.asarray(estimator(batch, policy))
        if g.dtype.kind == "f" and g.dtype.itemsize < 8:
            raise UserError(f"the estimator returned {g.dtype}: exact checks compare to 1e-10, "
                            f"compute the estimate in float64")
        g = g.astype(np.float64).ravel()
        if n is None:
            n, total = g.size, np.zeros(g.size)
        elif g.size != n:
            raise UserError(f"the estimator returned {g.size} numbers for one batch and {n} for "
                            f"another: one entry per policy parameter")
        total += p * g
    return total


def exact_values(mdp: EpisodicMDP, policy, *, capped: bool = True):
    """The exact values under the policy.

    capped=True: V_tau(s) (time_limit + 1, S) and Q_tau(s, a) (time_limit, S, A) of the episode
        capped at the time limit, J^H = E[sum_{tau < H} gamma^tau r_tau] (EX.1 with termination):
        what a whole-episode estimator with no bootstrap targets.
    capped=False: V(s) (S,) and Q(s, a) (S, A) of J_gamma with no time limit (EX.5): what a
        column that bootstraps truncations and the cut with V targets (gamma < 1, or episodes
        that terminate)."""
    pi = _pi(mdp, _protocol(policy, mdp.S))
    return capped_values(mdp, pi) if capped else stationary_values(mdp, pi)


def exact_J(mdp: EpisodicMDP, policy) -> float:
    """J^H = sum_s mu(s) V_0(s) of the capped objective (exact_values(capped=True))."""
    return float(mdp.mu @ exact_values(mdp, policy)[0][0])


def exact_gradient(mdp: EpisodicMDP, policy, *, T: int | None = None, start: str = "fresh",
                   drop_gamma_t: bool = False) -> np.ndarray:
    """The direction an unbiased estimator's expectation equals, on the same layout.

    T=None (one whole episode): grad J^H, the gradient of the capped objective, by the policy-
        gradient theorem (PG.1): sum_tau gamma^tau sum_s d_tau(s) sum_a pi Q_tau grad log pi,
        d_tau(s) = P(s_tau = s, episode alive). The return R(tau) weighting every step estimates
        it. drop_gamma_t=True: the same without gamma^tau in front (RTG.4), what reward-to-go,
        baselines, Q and GAE as usually written (no gamma^t) estimate; equal at gamma = 1.
    T=int (a NEXT_STEP column): the sum over the column's valid rows of c^t' Q(s, a) grad log pi
        in expectation, with Q the exact Q of J_gamma (the bootstrapped objective) and c = gamma,
        t' counted from the episode's first valid row in this batch (what the return form
        estimates), or c = 1 with drop_gamma_t (every other form) (RTG.3).
    Uses the policy's own grad_log_prob: check it first with assert_gradient (its expectation
    over actions is zero, EGLP.1; and this gradient matches finite differences of exact_J)."""
    _check_layout(mdp, T, start)
    pol = _protocol(policy, mdp.S)
    pi, G = _pi(mdp, pol), _scores(mdp, pol)
    if T is None:
        _, Q = capped_values(mdp, pi)
        d = alive_distributions(mdp, pi)
        c = 1.0 if drop_gamma_t else mdp.gamma
        D = c ** np.arange(mdp.time_limit)[:, None] * d
    else:
        _, Q = stationary_values(mdp, pi)
        cols = _columns(mdp, pi, T, start)
        D = visits(cols, mdp.time_limit, mdp.S,
                   discount=1.0 if drop_gamma_t else mdp.gamma)
        Q = np.broadcast_to(Q, (len(D), mdp.S, mdp.A))
    W = np.einsum("ts,sa,tsa->sa", D, pi, Q)  # (RTG.3): sum_tau D_tau(s) pi(a|s) Q_tau(s, a)
    return np.einsum("sa,san->n", W, G)


def assert_unbiased(estimator: Callable[[TabularBatch, object], np.ndarray], mdp: EpisodicMDP,
                    policy, target: np.ndarray | None = None, *, T: int | None = None,
                    start: str = "fresh", drop_gamma_t: bool = False,
                    tol: float = TOL) -> np.ndarray:
    """Assert E[estimator(batch, policy)] == target to tol * max(1, ||target||), exactly.

    target: None for exact_gradient(mdp, policy, T=T, start=start, drop_gamma_t=drop_gamma_t),
    or any array (a stated target). On failure the message gives the exact bias, its size
    relative to the target, its cosine with the target, and the worst coordinates. Returns the
    exact expectation."""
    mean = estimator_expectation(estimator, mdp, policy, T=T, start=start)
    stated = target is not None
    if target is None:
        target = exact_gradient(mdp, policy, T=T, start=start, drop_gamma_t=drop_gamma_t)
    target = np.asarray(target, dtype=np.float64).ravel()
    if target.shape != mean.shape:
        raise UserError(f"the target has {target.size} entries, the estimate {mean.size}")
    bias = mean - target
    scale = max(1.0, float(np.linalg.norm(target)))
    if np.linalg.norm(bias) <= tol * scale:
        return mean
    nt, nb, nm = (float(np.linalg.norm(v)) for v in (target, bias, mean))
    cos = float(bias @ target / (nb * nt)) if nt > 0 else float("nan")
    what = ("the stated target" if stated else
            "exact_gradient" + (f"(T={T}, start={start!r}" if T else "(whole episodes")
            + (", drop_gamma_t=True)" if drop_gamma_t else ")"))
    lines = [
        "assert_unbiased: the estimator's exact expectation differs from the target",
        f"  exact bias ||E[g] - target|| = {nb:.6e} ({nb / max(nt, 1e-300):.3e} of ||target|| = "
        f"{nt:.6e}); tolerance {tol:.0e} * max(1, ||target||) (float64 rounding of an exact sum)",
        f"  cosine(bias, target) = {cos:.6f}; cosine(E[g], target) = "
        f"{float(mean @ target / max(nm * nt, 1e-300)):.6f}",
        f"  target: {what}",
        "  worst coordinates (E[g] vs target):",
    ]
    for i in np.argsort(-np.abs(bias), kind="stable")[:5]:
        lines.append(f"    [{i}]: {mean[i]: .6e} vs {target[i]: .6e}  (bias {bias[i]: .2e})")
    if nm > 0 and nt > 0:
        c = float(mean @ target / (nt * nt))
        if np.linalg.norm(mean - c * target) <= 1e-8 * nm:
            lines.append(f"  E[g] = {c:.6g} x target: a constant factor (a 1/n, a batch size?)")
    if not stated:
        other = exact_gradient(mdp, policy, T=T, start=start, drop_gamma_t=not drop_gamma_t)
        if np.linalg.norm(mean - other) <= tol * max(1.0, float(np.linalg.norm(other))):
            lines.append(f"  E[g] equals exact_gradient(..., drop_gamma_t={not drop_gamma_t}): "
                         f"the estimator {'drops' if not drop_gamma_t else 'keeps'} gamma^t; "
                         f"pass drop_gamma_t={not drop_gamma_t} if that is what you intend")
    raise AssertionError("\n".join(lines))
