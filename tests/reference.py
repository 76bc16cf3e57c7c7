"""Plain-NumPy references for the numba kernels, written as DIFFERENT algorithms (explicit sums
over each episode segment rather than backward recursions) so they cannot share a bug."""

import numpy as np


def episodes(term, trunc, T):
    """Yield (start, stop, ended) segments of one column: ended=False for the cut at T."""
    start = 0
    for t in range(T):
        if term[t] or trunc[t]:
            yield start, t + 1
            start = t + 1
    if start < T:
        yield start, T


def reward_to_go_ref(rew, term, trunc, next_val, gamma):
    T, N = rew.shape
    out = np.zeros((T, N))
    for i in range(N):
        for a, b in episodes(term[:, i], trunc[:, i], T):
            L = b - a
            # discount matrix D[t, k] = gamma^(k - t) for k >= t: rtg = D @ r + boot term
            k = np.arange(L)
            D = np.triu(gamma ** (k[None, :] - k[:, None]).astype(float))
            boot = 0.0 if term[b - 1, i] else next_val[b - 1, i]
            out[a:b, i] = D @ rew[a:b, i] + gamma ** (L - k) * boot
    return out


def episode_return_ref(rew, term, trunc, valid, next_val, gamma):
    """R(tau) from its definition, episode by episode: list each column's valid steps, split them
    after every episode end, and give each step of an episode k_0 < ... < k_{L-1} the explicit sum
        R = sum_j gamma^j rew[k_j]  +  gamma^L next_val[k_{L-1}]   (the bootstrap: not after a
    termination). Reset steps (valid False) belong to no episode and get 0."""
    T, N = rew.shape
    out = np.zeros((T, N))
    for i in range(N):
        episode = []
        for t in np.flatnonzero(valid[:, i]):
            episode.append(t)
            if term[t, i] or trunc[t, i] or t == np.flatnonzero(valid[:, i])[-1]:
                k = np.array(episode)
                R = sum(gamma**j * float(rew[kj, i]) for j, kj in enumerate(k))
                if not term[k[-1], i]:
                    R += gamma ** len(k) * next_val[k[-1], i]
                out[k, i] = R
                episode = []
    return out


def gae_ref(rew, val, next_val, term, trunc, gamma, lam):
    T, N = rew.shape
    delta = rew + gamma * np.where(term, 0.0, next_val) - val
    out = np.zeros((T, N))
    for i in range(N):
        for a, b in episodes(term[:, i], trunc[:, i], T):
            for t in range(a, b):
                l = np.arange(b - t)
                out[t, i] = np.sum((gamma * lam) ** l * delta[t:b, i])
    return out


def categorical_logp_ref(logits, act):
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    return logp[np.arange(len(act)), act]



def categorical_sample_ref(logits, u):
    """Inverse CDF with normalised probabilities: the first index whose CDF exceeds u."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    cdf = np.cumsum(np.exp(logp), axis=1)
    act = np.minimum((cdf <= u[:, None]).sum(axis=1), logits.shape[1] - 1)
    return act, logp[np.arange(len(act)), act]


def episode_stats_ref(rew, term, trunc, valid, ep_ret, ep_len):
    """Segment sums with cumsum over each column's valid steps; carry-in added to the first."""
    found = []  # (t, i, return, length), sorted by (t, i) at the end
    for i in range(rew.shape[1]):
        steps = np.flatnonzero(valid[:, i])
        ends = steps[(term | trunc)[steps, i]]
        c = np.concatenate([[0.0], np.cumsum(rew[steps, i].astype(np.float64))])
        pos = np.searchsorted(steps, ends)  # index of each end within the valid steps
        prev = -1
        for t, p in zip(ends, pos):
            r, n = c[p + 1] - c[prev + 1], p - prev
            if prev == -1:
                r, n = r + ep_ret[i], n + ep_len[i]
            found.append((t, i, r, n))
            prev = p
        tail = len(steps) - 1 - prev
        ep_ret[i] = (c[-1] - c[prev + 1]) + (ep_ret[i] if prev == -1 else 0.0)
        ep_len[i] = tail + (ep_len[i] if prev == -1 else 0)
    found.sort()
    return np.array([f[2] for f in found]), np.array([f[3] for f in found], np.int64)
