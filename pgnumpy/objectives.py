"""Surrogate losses and their gradients with respect to logp (or the value prediction).

Each function returns (loss, gradient); the gradient is what flows into the policy's backward.
"""

from __future__ import annotations

import numpy as np


def pg_loss(logp: np.ndarray, phi: np.ndarray) -> tuple[float, np.ndarray]:
    """The policy-gradient surrogate L = -(1/n) sum_i logp_i * phi_i  (PG.5).

    Its gradient at the parameters that sampled the batch is minus the sample estimate of
    grad J (PG.4). Its VALUE is no measure of performance: phi is larger when returns are larger,
    so L typically climbs while the policy improves (see derivations/01-simplest-pg.md).

    dL/dlogp_i = -phi_i / n.
    """
    n = len(logp)
    return -float(np.dot(logp, phi)) / n, -phi / n


def value_loss(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """L = 1/(2n) sum (pred - target)^2 and dL/dpred = (pred - target)/n   (VAL.1)."""
    err = pred - target
    return 0.5 * float(np.mean(err**2)), err / len(err)


def normalize(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Advantage normalisation: zero mean, unit std over the batch (VPG.1).

    Subtracting the batch mean is a (slightly data-dependent) constant baseline; scaling by the
    std rescales the step size. Both are standard (Spinning Up, CleanRL, SB3).
    """
    d = x - x.mean()
    return d / (np.sqrt(np.dot(d, d) / len(d)) + eps)  # the std, without a second mean pass


def ppo_clip_loss(
    logp: np.ndarray, logp_old: np.ndarray, adv: np.ndarray, clip_eps: float
) -> tuple[float, np.ndarray, dict]:
    """PPO-clip surrogate L = -(1/n) sum_i min(r_i A_i, g(clip_eps, A_i))  (PPO.1, PPO.2).

    r = exp(logp - logp_old) and g(eps, A) = (1 + eps) A if A >= 0 else (1 - eps) A, which is
    the same as min(r A, clip(r, 1 - eps, 1 + eps) A).

    Gradient case by case (PPO.3): the min picks the unclipped term r A exactly when
        A >= 0 and r < 1 + eps,   or   A < 0 and r > 1 - eps,
    and then d(r A)/dlogp = r A (since dr/dlogp = r); otherwise it picks a constant and the
    gradient is 0. At a kink (r exactly 1 +- eps) we take the clipped side, 0. At r = 1 every
    sample is unclipped and dL/dlogp = -A/n: the VPG gradient (PG.5), exactly.
    """
    n = len(logp)
    log_ratio = logp - logp_old
    ratio = np.exp(log_ratio)
    unclipped = np.where(adv >= 0, ratio < 1 + clip_eps, ratio > 1 - clip_eps)
    r_adv = ratio * adv
    # min(r A, g(eps, A)) == min(r A, clip(r, 1 - eps, 1 + eps) A): the note's rewriting
    surrogate = np.minimum(r_adv, np.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    dlogp = -np.where(unclipped, r_adv, 0.0) / n
    # diagnostics (Spinning Up / CleanRL): KL estimate (r - 1) - log r >= 0, and clip fraction
    info = {
        "approx_kl": float(np.mean(ratio - 1 - log_ratio)),
        "clip_frac": 1.0 - np.count_nonzero(unclipped) / n,
    }
    return -float(surrogate.mean()), dlogp, info


def ppo_kl_loss(
    logp: np.ndarray, logp_old: np.ndarray, adv: np.ndarray, kl: np.ndarray, beta: float
) -> tuple[float, np.ndarray, np.ndarray]:
    """PPO with a KL penalty  (PPOKL.1):

        L = -(1/n) sum_i r_i A_i + beta (1/n) sum_i KL_i(pi_old || pi)


    r = exp(logp - logp_old) is the importance ratio (PPO.1).
    Returns (loss, dL/dlogp, dL/dKL): dL/dlogp = -r A / n (PPOKL.2) and dL/dKL_i = beta / n; the
    distribution turns the latter into a gradient of its own parameters (CAT.6, GAU.*).
    """
    n = len(logp)
    ratio = np.exp(logp - logp_old)
    loss = -float(np.mean(ratio * adv)) + beta * float(np.mean(kl))
    return loss, -ratio * adv / n, np.full(n, beta / n)


def adapt_beta(beta: float, kl: float, target_kl: float) -> float:
    """The PPO paper's adaptive beta (PPOKL.3): x2 if KL > 1.5 d_targ, /2 if KL < d_targ / 1.5."""
    if kl > 1.5 * target_kl:
        return beta * 2.0
    if kl < target_kl / 1.5:
        return beta / 2.0
    return beta


def clipped_value_loss(
    pred: np.ndarray, val_old: np.ndarray, target: np.ndarray, clip_eps: float
) -> tuple[float, np.ndarray]:
    """PPO's clipped value loss (CleanRL's clip_vloss)  (VAL.2):

        L = 1/(2n) sum max((v - R)^2, (v_clip - R)^2),  v_clip = v_old + clip(v - v_old, -eps, eps)

    dL/dv = (v - R)/n where the unclipped error is the larger; (v_clip - R)/n * [|v - v_old| < eps]
    where the clipped one is (v_clip is flat in v outside the band).
    """
    v_clip = val_old + np.clip(pred - val_old, -clip_eps, clip_eps)
    use_clip = (v_clip - target) ** 2 > (pred - target) ** 2
    loss, dv = value_loss(np.where(use_clip, v_clip, pred), target)
    inside = np.abs(pred - val_old) < clip_eps
    return loss, np.where(use_clip & ~inside, 0.0, dv)
