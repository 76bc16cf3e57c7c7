"""DPO and IPO: fine-tuning on preference pairs directly, no reward model, no sampling
(derivations/14-rlhf-losses.md, section 5).

With u(y) = log pi(y) - log pi_ref(y) and a labelled pair (y_w preferred to y_l):

    DPO (Rafailov et al., 2023):  L = -log sigmoid(beta (u(y_w) - u(y_l)))          (DPO.1)
    IPO (Azar et al., 2023):      L = (u(y_w) - u(y_l) - 1 / (2 tau))^2              (DPO.2)

Both claim the optimum of RLHF: with Bradley-Terry labels P(a > b) = sigmoid(r_a - r_b) and
infinitely many pairs, DPO's population loss is minimised at pi* = pi_ref e^{r/beta} / Z
(pgnumpy/exact_losses.py checks it on every pair of the enumerated toy). The pipeline's stage 3
with --algo dpo|ipo trains the language model on the pairs of the Bradley-Terry labeller
(reward_model.preference_pairs) with these losses.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from pgnumpy.optim import Adam, clip_grad_norm
from pgnumpy.rlhf.grammar import Grammar, gold_reward, to_words
from pgnumpy.rlhf.lm import TinyLM, token_mask, windows

ALGOS = ("rl", "dpo", "ipo")


def _weights(n: int, weight: np.ndarray | None) -> np.ndarray:
    return np.full(n, 1.0 / n) if weight is None else weight


def dpo_loss(u_w: np.ndarray, u_l: np.ndarray, beta: float, weight: np.ndarray | None = None
             ) -> tuple[float, np.ndarray, np.ndarray]:
    """L = sum_i w_i (-log sigmoid(h_i)), h_i = beta (u_w,i - u_l,i), w_i = 1/n unless given,
    and dL/du_w = -beta w sigmoid(-h), dL/du_l = +beta w sigmoid(-h)  (DPO.1).

    u = log pi - log pi_ref of each sentence; -log sigmoid(h) = logaddexp(0, -h) (no overflow),
    its derivative -sigmoid(-h): each pair pulls by the probability the policy's implicit reward
    gives the wrong order, as the reward model's Bradley-Terry loss does (RLHF.8)."""
    wt = _weights(len(u_w), weight)
    h = beta * (u_w - u_l)
    s = 0.5 * (1.0 - np.tanh(0.5 * h))  # sigmoid(-h), stable
    return float(wt @ np.logaddexp(0.0, -h)), -beta * wt * s, beta * wt * s


def ipo_loss(u_w: np.ndarray, u_l: np.ndarray, tau: float, weight: np.ndarray | None = None
             ) -> tuple[float, np.ndarray, np.ndarray]:
    """L = sum_i w_i (u_w,i - u_l,i - 1/(2 tau))^2 and dL/du_w = 2 w (.) = -dL/du_l  (DPO.2)."""
    wt = _weights(len(u_w), weight)
    e = u_w - u_l - 0.5 / tau
    return float(wt @ e**2), 2.0 * wt * e, -2.0 * wt * e


def pair_loss(u_w: np.ndarray, u_l: np.ndarray, beta: float, algo: str,
              weight: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """dpo_loss or ipo_loss (beta plays IPO's tau)  (DPO.1, DPO.2)."""
    if algo == "dpo":
        return dpo_loss(u_w, u_l, beta, weight)
    if algo == "ipo":
        return ipo_loss(u_w, u_l, beta, weight)
    raise ValueError(f"algo must be dpo or ipo, got {algo!r}")


def pair_loss_and_grad(policy: TinyLM, ref_logp_w: np.ndarray, ref_logp_l: np.ndarray,
                       y_w: np.ndarray, y_l: np.ndarray, beta: float, algo: str
                       ) -> tuple[float, np.ndarray]:
    """The batch's DPO / IPO loss and d loss / d params  (DPO.1, DPO.2): one forward over every
    window of the 2n sentences, log pi(y) = sum_t log pi(y_t | s_t) over each sentence's tokens
    (RLHF.11), dL/du per sentence put on each of its tokens' log-probabilities, backward (CAT.2,
    RLHF.5). ref_logp_*: log pi_ref of each sentence (a constant)."""
    y = np.concatenate([y_w, y_l])
    B, L = y.shape
    mask = token_mask(y)
    dist, cache = policy.dist(windows(y, policy.context).reshape(B * L, -1))
    logp = np.where(mask, dist.log_prob(y.reshape(-1)).reshape(B, L), 0.0).sum(axis=1)
    n = len(y_w)
    loss, du_w, du_l = pair_loss(logp[:n] - ref_logp_w, logp[n:] - ref_logp_l, beta, algo)
    dlogp = np.where(mask, np.concatenate([du_w, du_l])[:, None], 0.0).reshape(-1)
    return loss, policy.backward(cache, dlogp[:, None] * dist.log_prob_grad(y.reshape(-1)))


def sentence_logp(lm: TinyLM, y: np.ndarray) -> np.ndarray:
    """log pi(y) of each row, the sum over its tokens (RLHF.11)."""
    return np.where(token_mask(y), lm.token_logp(y), 0.0).sum(axis=1)


def dpo_finetune(cfg, lm: TinyLM, pairs: dict[str, np.ndarray], grammar: Grammar, rm,
                 rng: np.random.Generator, log: Callable[[dict], None] = lambda row: None
                 ) -> tuple[TinyLM, list[dict]]:
    """Stage 3 without RL (DPO.1, DPO.2): cfg.iterations Adam steps (lr cfg.lr, gradient norm
    clipped at cfg.max_grad_norm) on the DPO or IPO loss (cfg.algo, cfg.beta) of cfg.batch
    pairs drawn from `pairs` (the Bradley-Terry labeller's y_w, y_l). The reward model is not
    used for the step; each row logs, on cfg.batch fresh samples of the policy, the same
    measures as rl_finetune's rows (gold, proxy = rm's score, KL estimate, ...)."""
    policy, ref = lm.clone(), lm
    ref_w, ref_l = sentence_logp(ref, pairs["y_w"]), sentence_logp(ref, pairs["y_l"])
    opt = Adam(policy.params, lr=cfg.lr)
    history, start = [], time.perf_counter()
    for it in range(cfg.iterations):
        idx = rng.integers(0, len(ref_w), cfg.batch)
        loss, g = pair_loss_and_grad(policy, ref_w[idx], ref_l[idx], pairs["y_w"][idx],
                                     pairs["y_l"][idx], cfg.beta, cfg.algo)
        clip_grad_norm(g, cfg.max_grad_norm)
        y = policy.sample(cfg.batch, rng, cfg.max_len)
        mask = token_mask(y)
        kl = np.where(mask, policy.token_logp(y) - ref.token_logp(y), 0.0).sum(axis=1)
        gold = gold_reward(y, grammar)
        B = len(y)
        row = {"iter": it, "proxy": float(rm.score(y).mean()), "gold": float(gold.mean()),
               "gold_se": float(gold.std() / np.sqrt(B)), "kl": float(kl.mean()),
               "kl_se": float(kl.std() / np.sqrt(B)), "beta": cfg.beta, "pair_loss": loss,
               "entropy": float("nan"), "length": float(mask.sum(axis=1).mean()),
               "grammatical": float(np.isfinite(grammar.log_prob(y)).mean()),
               "sample": to_words(y[0]), "wall_s": round(time.perf_counter() - start, 3)}
        opt.step(g)
        history.append(row)
        log(row)
    return policy, history
