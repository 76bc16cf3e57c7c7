"""Numba kernels for the hot loops, on the (T steps, N envs) layout of a vector-env rollout.

Each has a plain-NumPy reference in tests/reference.py, written as a different algorithm, and
tests/test_kernels.py checks they agree to 1e-12. Conventions for every kernel:
    term[t, i]      the episode terminated at step t: the value after it is 0, no bootstrap
    trunc[t, i]     the episode was truncated (time limit): bootstrap with next_val[t, i]
    next_val[t, i]  V of the TRUE next state (at truncation: of the final observation; at
                    t = T-1: of the state the rollout was cut in, also bootstrapped)
Nothing flows backward across a step with term or trunc.
"""

from __future__ import annotations

import numba
import numpy as np

from pgnumpy.fileio import deferred_sigint


@numba.njit(cache=True)
def categorical_logp(logits: np.ndarray, act: np.ndarray) -> np.ndarray:
    """log softmax(logits)[act] per row, max-shifted so logits of +-1e4 stay exact  (CAT.1).

    log p_a = z_a - m - log sum_j exp(z_j - m), m = max_j z_j: every exp argument is <= 0, and
    the sum is >= 1, so nothing overflows and the log never sees 0. Output in float64.
    """
    out = np.empty(len(logits))
    for i in range(len(logits)):
        m, s = _max_and_shifted_sum(logits[i])
        out[i] = logits[i, act[i]] - m - np.log(s)
    return out


@numba.njit(cache=True)
def _max_and_shifted_sum(z):
    """m = max_j z_j and s = sum_j exp(z_j - m) >= 1 for one row of logits (CAT.1)."""
    m = z[0]
    for j in range(1, len(z)):
        m = max(m, z[j])
    s = 0.0
    for j in range(len(z)):
        s += np.exp(z[j] - m)
    return m, s


@numba.njit(cache=True)
def categorical_sample(logits: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample a ~ softmax(logits) per row by inverse CDF with the uniform u, and its log-prob.

    The acting hot path: one pass per row instead of ~8 NumPy calls (log-softmax, exp, cumsum,
    compare, ...), each of which costs more in call overhead than in arithmetic at N <= 64 rows.
    Max-shifted as in (CAT.1); a = the first action whose cumulative probability exceeds u.
    """
    B, A = logits.shape
    act = np.empty(B, np.int64)
    logp = np.empty(B)
    for i in range(B):
        m, s = _max_and_shifted_sum(logits[i])
        target = u[i] * s  # compare unnormalised cumulative sums: no division per entry
        c = 0.0
        a = A - 1  # round-off guard: if u * s is never reached, the last action
        for j in range(A):
            c += np.exp(logits[i, j] - m)
            if c > target:
                a = j
                break
        act[i] = a
        logp[i] = logits[i, a] - m - np.log(s)
    return act, logp


@numba.njit(cache=True)
def reward_to_go(rew, term, trunc, next_val, gamma):
    """rtg[t] = rew[t] + gamma * (0 | next_val[t] | rtg[t+1])   (RTG.1), the weight of (RTG.2)

    0 after a termination; next_val at a truncation or at the rollout's last step; else the
    reward-to-go of the next step. The trick (Spinning Up's `discount_cumsum`): the discounted
    sum sum_{k>=t} gamma^(k-t) r_k obeys rtg_t = r_t + gamma rtg_{t+1}, so one backward pass
    computes every step's sum in O(T) instead of the O(T^2) double sum.
    """
    T, N = rew.shape
    out = np.empty((T, N))
    for i in range(N):
        nxt = 0.0  # rtg of step t + 1 (unused at t = T - 1)
        for t in range(T - 1, -1, -1):
            if term[t, i]:
                boot = 0.0
            elif trunc[t, i] or t == T - 1:
                boot = next_val[t, i]
            else:
                boot = nxt
            nxt = rew[t, i] + gamma * boot
            out[t, i] = nxt
    return out


@numba.njit(cache=True)
def episode_return(rew, term, trunc, valid, next_val, gamma):
    """R(tau) at every valid step: the reward-to-go of its episode's first step  (RET.1).

    The weight of the simplest policy gradient (PG.3). 0 at invalid (NEXT_STEP reset) steps.

    A valid step starts an episode if it is the column's first row, or the row before it ended an
    episode (term or trunc) or was a reset step (not valid). The reset step itself starts nothing:
    it is no episode's step, and its reward-to-go, r = 0 plus gamma times the next episode's,
    would hand gamma * R to the episode after it. An episode that began before the batch counts
    from the batch's first step: the dropped earlier rewards are constants with respect to every
    later action, so their expected contribution to the gradient is zero.
    """
    T, N = rew.shape
    rtg = reward_to_go(rew, term, trunc, next_val, gamma)
    out = np.zeros((T, N))
    for i in range(N):
        R = 0.0
        for t in range(T):
            if not valid[t, i]:
                continue
            if t == 0 or not valid[t - 1, i] or term[t - 1, i] or trunc[t - 1, i]:
                R = rtg[t, i]  # a new episode starts here
            out[t, i] = R
    return out


@numba.njit(cache=True)
def gae(rew, val, next_val, term, trunc, gamma, lam):
    """Generalised advantage estimation.

        delta[t] = rew[t] + gamma (1 - term[t]) next_val[t] - val[t]          (GAE.1)
        adv[t]   = delta[t] + gamma lam (1 - done[t]) adv[t+1],  adv[T] = 0     (GAE.2)

    lam = 1 gives reward_to_go - val, lam = 0 the TD residual (GAE.3).
    done = term | trunc: the recursion stops at every episode end, while the bootstrap in delta
    stops only at a termination (a truncated episode's next state still has a value).
    """
    T, N = rew.shape
    out = np.empty((T, N))
    for i in range(N):
        nxt = 0.0  # adv[t + 1]
        for t in range(T - 1, -1, -1):
            delta = rew[t, i] - val[t, i]
            if not term[t, i]:
                delta += gamma * next_val[t, i]
            if term[t, i] or trunc[t, i]:
                nxt = delta
            else:
                nxt = delta + gamma * lam * nxt
            out[t, i] = nxt
    return out


@numba.njit(cache=True)
def episode_stats(rew, term, trunc, valid, ep_ret, ep_len):
    """Return and length of every episode that ends in the batch, in the order they end.

    ep_ret, ep_len (N,) carry the running episodes in and out (updated in place), so an episode
    that spans two rollouts is counted once, whole. Invalid (reset) steps are skipped.
    """
    T, N = rew.shape
    rets = np.empty(T * N)
    lens = np.empty(T * N, np.int64)
    k = 0
    for t in range(T):
        for i in range(N):
            if not valid[t, i]:
                continue
            ep_ret[i] += rew[t, i]
            ep_len[i] += 1
            if term[t, i] or trunc[t, i]:
                rets[k], lens[k] = ep_ret[i], ep_len[i]
                k += 1
                ep_ret[i], ep_len[i] = 0.0, 0
    return rets[:k], lens[:k]


def warm_up() -> None:
    """Compile (first run) or load from the cache every kernel, with the argument types the
    training path uses, so that the cost lands before the training clock starts.

    Ctrl-C is held until it is done: a KeyboardInterrupt raised inside numba's compiler lands in
    an llvmlite ctypes callback, where Python ignores it ("Exception ignored ..."), and the run
    then either carries on as if never interrupted or fails on a half-cached kernel."""
    z32, z64 = np.zeros((1, 2), np.float32), np.zeros((1, 1))
    b, i64 = np.zeros((1, 1), bool), np.zeros(1, np.int64)
    with deferred_sigint():
        categorical_sample(z32, np.zeros(1))
        categorical_logp(z32, i64)
        categorical_logp(z32.astype(np.float64), i64)
        reward_to_go(z64, b, b, z64, 0.99)
        episode_return(z64, b, b, b, z64, 0.99)
        gae(z64, z64, z64, b, b, 0.99, 0.95)
        episode_stats(z64, b, b, b, np.zeros(1), np.zeros(1, np.int64))
