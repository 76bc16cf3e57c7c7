"""Action distributions, each gradient beside the quantity it differentiates.

Categorical over logits z (B, A), p = softmax(z):
    log p_a = z_a - logsumexp(z)                                                  (CAT.1)
    d log p_a / d z_j = [j = a] - p_j                                             (CAT.2)
    H = -sum_a p_a log p_a                                                        (CAT.3)
    dH/dz_j = -p_j (log p_j + H)                                                  (CAT.4)
    KL(p || q) = sum_a p_a (log p_a - log q_a)                                    (CAT.5)
    d KL(p || q) / d z^q_j = q_j - p_j                                            (CAT.6)
    Fisher in the logits: M = diag(p) - p p^T, so M u = p * u - p (p . u)             (CAT.7)
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """z - logsumexp(z) along the last axis, max-shifted: exact at logits of +-1e4  (CAT.1)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class Categorical:
    def __init__(self, logits: np.ndarray):
        self.logits = logits
        self.logp_all = log_softmax(logits)
        self.probs = np.exp(self.logp_all)

    def __getitem__(self, idx) -> Categorical:
        return Categorical(self.logits[idx])

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Inverse CDF: one uniform per row; count the CDF entries below it."""
        cdf = np.cumsum(self.probs, axis=-1)
        u = rng.random((len(cdf), 1)) * cdf[:, -1:]  # scale by the total against round-off
        return np.minimum((cdf <= u).sum(axis=-1), cdf.shape[-1] - 1).astype(np.int64)

    def mode(self) -> np.ndarray:
        return self.logits.argmax(axis=-1)

    def log_prob(self, act: np.ndarray) -> np.ndarray:
        """log p(act) per row (CAT.1): a gather of the log-softmax already computed."""
        return self.logp_all[np.arange(len(act)), act].astype(np.float64)

    def log_prob_grad(self, act: np.ndarray) -> np.ndarray:
        """d log p(a) / d logits = onehot(a) - p  (CAT.2).

        From (CAT.1): d z_a / d z_j = [j = a] and d logsumexp(z) / d z_j = p_j.
        Its mean under p is sum_a p_a (onehot(a) - p) = 0: the grad-log-prob lemma (EGLP.1).
        """
        g = -self.probs
        g[np.arange(len(act)), act] += 1.0
        return g

    def entropy(self) -> np.ndarray:
        """H = -sum_a p_a log p_a  (CAT.3)."""
        return -(self.probs * self.logp_all).sum(axis=-1).astype(np.float64)

    def entropy_grad(self) -> np.ndarray:
        """dH/dz_j = -p_j (log p_j + H)  (CAT.4).

        dH/dz_j = -sum_a (dp_a/dz_j)(log p_a + 1) with dp_a/dz_j = p_a([a = j] - p_j); the "+1"
        terms cancel because sum_a dp_a/dz_j = 0, leaving -p_j log p_j + p_j sum_a p_a log p_a.
        """
        H = -(self.probs * self.logp_all).sum(axis=-1, keepdims=True)
        return -self.probs * (self.logp_all + H)

    def kl(self, other: Categorical) -> np.ndarray:
        """KL(self || other) = sum_a p_a (log p_a - log q_a)  (CAT.5)."""
        return (self.probs * (self.logp_all - other.logp_all)).sum(axis=-1).astype(np.float64)

    def kl_grad_other(self, other: Categorical) -> np.ndarray:
        """d KL(self || other) / d other.logits = q - p  (CAT.6).

        Only -sum_a p_a log q_a depends on q's logits; by (CAT.2) its gradient is
        -sum_a p_a (onehot(a) - q) = q - p.
        """
        return other.probs - self.probs

    def fisher_vp(self, u: np.ndarray) -> np.ndarray:
        """M u per row, M = diag(p) - p p^T the Fisher information of the logits  (CAT.7).

        M = E_a[(onehot(a) - p)(onehot(a) - p)^T] by (CAT.2); it is also the Hessian of
        KL(p || softmax(z)) in z, at z = the logits (the derivative of (CAT.6), q_j - p_j, in z_k
        is q_j ([j = k] - q_k)). Applied without forming M: O(A) per row, not O(A^2).
        """
        p = self.probs
        return p * (u - (p * u).sum(axis=-1, keepdims=True))


LOG_2PI = float(np.log(2 * np.pi))


class DiagGaussian:
    """N(mean, diag(exp(log_std))^2) over R^D, every formula written in log_std.

        log p(a) = sum_d [-(a_d - mu_d)^2 / (2 sigma_d^2) - log sigma_d - log(2 pi) / 2]  (GAU.1)
        d log p / d mu = (a - mu) / sigma^2,  d log p / d log sigma = z^2 - 1,
            with z = (a - mu) / sigma                                                 (GAU.2)
        H = sum_d [log sigma_d + (1 + log 2 pi) / 2],  dH/d log sigma = 1,  dH/d mu = 0  (GAU.3)
        KL(p || q) = sum_d [log s_q - log s_p + (s_p^2 + (mu_p - mu_q)^2) / (2 s_q^2) - 1/2]
                                                                                      (GAU.4)
        d KL(p||q) / d mu_q = (mu_q - mu_p) / s_q^2,
        d KL(p||q) / d log s_q = 1 - (s_p^2 + (mu_p - mu_q)^2) / s_q^2                  (GAU.5)
        Fisher in (mu, log sigma): diagonal, 1 / sigma^2 on each mean, 2 on each log sigma (GAU.6)

    Working in log sigma keeps sigma > 0 without constraints and keeps log p finite: no exp of
    an unbounded value appears except sigma itself, and z^2 is computed as a ratio of squares.
    """

    def __init__(self, mean: np.ndarray, log_std: np.ndarray):
        self.mean = mean
        self.log_std = np.broadcast_to(log_std, mean.shape)
        self.std = np.exp(self.log_std)

    def __getitem__(self, idx) -> DiagGaussian:
        return DiagGaussian(self.mean[idx], self.log_std[idx])

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return self.mean + self.std * rng.standard_normal(self.mean.shape)

    def mode(self) -> np.ndarray:
        return self.mean

    def log_prob(self, act: np.ndarray) -> np.ndarray:
        """(GAU.1), summed over action dimensions; float64."""
        z = (act - self.mean) / self.std
        return (-0.5 * z * z - self.log_std - 0.5 * LOG_2PI).sum(axis=-1).astype(np.float64)

    def log_prob_grad(self, act: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(d log p / d mean, d log p / d log_std), each (B, D)   (GAU.2).

        Both have mean 0 under p (E z = 0, E z^2 = 1): the grad-log-prob lemma (EGLP.1)."""
        z = (act - self.mean) / self.std
        return z / self.std, z * z - 1.0

    def entropy(self) -> np.ndarray:
        """(GAU.3), summed over dimensions; float64."""
        return (self.log_std + 0.5 * (1.0 + LOG_2PI)).sum(axis=-1).astype(np.float64)

    def entropy_grad(self) -> tuple[np.ndarray, np.ndarray]:
        """(dH/d mean, dH/d log_std) = (0, 1)   (GAU.3)."""
        return np.zeros_like(self.mean), np.ones_like(self.mean)

    def kl(self, other: DiagGaussian) -> np.ndarray:
        """KL(self || other)   (GAU.4), summed over dimensions; float64."""
        num = self.std**2 + (self.mean - other.mean) ** 2
        per_dim = other.log_std - self.log_std + num / (2 * other.std**2) - 0.5
        return per_dim.sum(axis=-1).astype(np.float64)

    def kl_grad_other(self, other: DiagGaussian) -> tuple[np.ndarray, np.ndarray]:
        """(d KL(self || other) / d other.mean, ... / d other.log_std)   (GAU.5)."""
        var_q = other.std**2
        d_mean = (other.mean - self.mean) / var_q
        return d_mean, 1.0 - (self.std**2 + (self.mean - other.mean) ** 2) / var_q

    def fisher_vp(self, u_mean: np.ndarray, u_log_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """M u for the Fisher M of (mean, log_std): (u_mean / sigma^2, 2 u_log_std)   (GAU.6).

        From (GAU.2): E[((a - mu) / sigma^2)^2] = 1 / sigma^2, E[(z^2 - 1)^2] = 2 and the cross
        term E[z (z^2 - 1)] / sigma = 0, each dimension independent. It is the Hessian of (GAU.4)
        in (mu_q, log s_q) at q = p too: differentiate (GAU.5) once more and set q = p.
        """
        return u_mean / self.std**2, 2.0 * u_log_std
