"""RL fine-tuning: PPO on the language model, against the reward model, under a KL penalty.

Generation is an episodic MDP: the state is the prefix (the policy sees its last k tokens), the
action is the next token, and the episode ends at <eos> or at the length cap, both terminations
(derivations/12-rlhf.md says why). The objective is the KL-regularised reward

    J(theta) = E_{y ~ pi}[ r(y) ] - beta KL(pi || pi_ref)                                (RLHF.10)

and because the sequence KL is the expected sum of per-token log-ratios (RLHF.11), J is the
expected return of the per-token reward

    r_t = -beta (log pi(y_t | s_t) - log pi_ref(y_t | s_t))  +  [t = last] r(y)           (RLHF.12)

with gamma = 1. One iteration, top to bottom:
    1. sample a batch of sentences from pi; score every token under pi and pi_ref, every state
       under the value function, every sentence under the reward model (and the gold rater,
       only to log what really happened);
    2. shaped rewards (RLHF.12), GAE advantages with gamma = 1 (kernels.gae, RLHF.13),
       whitened over the batch (objectives.normalize); value targets adv + V;
    3. update_epochs passes of minibatch Adam steps on PPO-clip (objectives.ppo_clip_loss) and
       the value regression (objectives.value_loss);
    4. with the adaptive controller, move beta towards the KL target (RLHF.14).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pgnumpy import kernels
from pgnumpy.config import check_choice, check_int, user_config
from pgnumpy.errors import UserError
from pgnumpy.objectives import normalize, ppo_clip_loss, value_loss
from pgnumpy.optim import Adam, clip_grad_norm
from pgnumpy.rlhf import losses
from pgnumpy.rlhf.grammar import Grammar, gold_reward, to_words
from pgnumpy.rlhf.lm import TinyLM, WindowNet, token_mask, windows
from pgnumpy.rlhf.reward_model import RewardModel


@user_config
@dataclass
class RLConfig:
    """iterations: PPO iterations; batch: sentences sampled per iteration; max_len: the length
    cap (a termination, RLHF.13); beta: KL coefficient (the start value if adaptive); adaptive:
    Ziegler et al.'s controller (RLHF.14) with kl_target (nats per sentence) and kl_horizon
    (sentences); lr, vf_lr: Adam's for the policy and the value function; update_epochs x
    minibatches: PPO's passes over each batch's tokens; clip_eps: PPO-clip's epsilon; lam: GAE
    lambda (gamma is 1); max_grad_norm: each network's gradient-norm clip.

    estimator: the per-token advantage the PPO-clip step is fed:
        "ppo"        GAE with the learned value, whitened over the batch (RLHF.13, VPG.1)
        "rloo"       R_i - mean of the other k - 1 of its group, summed over tokens (RLX.5)
        "grpo"       (R_i - mean) / (std + 1e-4) over the group, per-sequence token mean (RLX.6)
        "grpo_nostd" R_i - mean, per-sequence token mean
        "dr_grpo"    R_i - mean, summed over tokens (Liu et al., 2025): (k - 1)/k of rloo
    The group forms split the batch into batch / group groups of `group` sentences from the same
    (empty) prompt; R = score - beta sum_t k1_t (RLHF.11) with kl_penalty = "reward", R = score
    with kl_penalty = "k3_loss" (GRPO's beta k3 term in the loss, RLX.9); no value function is
    trained for them. What each estimates, measured exactly on an enumerated toy
    (derivations/13-rlhf-exact.md, tests/test_rlhf_exact.py):
        form (kl_penalty)         E[estimate] against grad J_beta, k = 2 / 3 / 4
        ppo (GAE, token mean,     biased: cos 0.9804 / 0.9913 / 0.9925 for batches of
             whitened)            B = 1 / 2 / 3 sentences (RLX.10)
        rloo (reward)             unbiased (bias <= 3e-15)
        dr_grpo (reward)          exactly (k - 1)/k grad J: cos 1, scale 0.50 / 0.67 / 0.75
        grpo_nostd (reward)       biased by the length normalisation: cos 0.9933
        grpo (reward)             biased: cos 0.9822 / 0.9803 / 0.9806
        any (k3_loss)             biased: cos 0.86 - 0.95; the k3 term follows the reverse
                                  KL per state, states fixed (RLX.9)
    (python -m pgnumpy.plots.rlhf_exact prints the whole table with the variances.)"""

    iterations: int = 100
    batch: int = 64
    max_len: int = 24
    beta: float = 0.05
    adaptive: bool = False
    kl_target: float = 4.0
    kl_horizon: int = 500
    lr: float = 1e-3
    vf_lr: float = 2e-3
    update_epochs: int = 4
    minibatches: int = 4
    clip_eps: float = 0.2
    lam: float = 0.95
    max_grad_norm: float = 1.0
    estimator: str = "ppo"
    group: int = 4
    kl_penalty: str = "reward"
    # The loss options of TRL and verl (derivations/14-rlhf-losses.md), for the group forms; ""
    # and 0 keep each estimator's own form (the line above, bit for bit):
    #   loss_agg      losses.LOSS_AGGS (TRL loss_type, verl loss_agg_mode)          (LOSS.1)
    #   scale_rewards group, batch, none (TRL scale_rewards)                         (LOSS.2)
    #   kl_estimator  k1, k2/mse, k3/low_var_kl, abs, full, in the reward or, with
    #                 kl_penalty = "loss", in the loss (verl kl_penalty, kl_loss_type) (LOSS.3)
    #   micro_batch   sentences per micro-batch, gradients accumulated (bnpo's normaliser)
    #   algo          rl, or dpo / ipo: stage 3 on preference pairs, no RL (DPO.1, DPO.2)
    loss_agg: str = ""
    scale_rewards: str = ""
    kl_estimator: str = ""
    micro_batch: int = 0
    algo: str = "rl"

    def __post_init__(self):
        check_combinations(self)


ESTIMATORS = ("ppo", "rloo", "grpo", "grpo_nostd", "dr_grpo")
KL_PENALTIES = ("reward", "k3_loss", "loss")


def check_combinations(cfg: RLConfig) -> None:
    """Refuse (UserError, one line) a combination training would ignore or break on: a group
    size that cannot split the batch, a k3 loss term with ppo (which puts the KL in the reward),
    the adaptive controller from beta = 0 (it multiplies beta: 0 stays 0). group is checked
    with ppo too (it only goes unused there): 0 is no group size."""
    check_choice("rl.estimator", cfg.estimator, ESTIMATORS)
    check_choice("rl.kl_penalty", cfg.kl_penalty, KL_PENALTIES)
    check_int("rl.group", cfg.group, lo=2)
    if cfg.estimator == "ppo":
        if cfg.kl_penalty != "reward":
            raise UserError("rl.kl_penalty 'k3_loss' goes with a group estimator (rloo, grpo, "
                            "grpo_nostd, dr_grpo); ppo puts the KL in the reward")
    elif isinstance(cfg.batch, int) and cfg.batch % cfg.group:
        raise UserError(f"rl.batch ({cfg.batch}) must be a multiple of rl.group ({cfg.group}): "
                        f"the batch is split into groups")
    if cfg.adaptive is True and cfg.beta == 0:
        raise UserError("rl.adaptive starts from rl.beta and multiplies it (RLHF.14): beta 0 "
                        "would stay 0; give --beta > 0 or drop --adaptive")


def kl_tokens(logp: np.ndarray, logp_ref: np.ndarray, kind: str = "k1") -> np.ndarray:
    """Per-token estimates of KL(pi || pi_ref) from the sampled token's log-probabilities
    (Schulman's k1, k2, k3, as in TRL and OpenRLHF), with log rho = logp_ref - logp  (RLX.7):

        k1 = -log rho,   k2 = (log rho)^2 / 2,   k3 = (rho - 1) - log rho.

    k1 and k3 have expectation KL(pi(.|s) || pi_ref(.|s)) over y_t ~ pi(.|s); k2 does not.
    What their gradients estimate is another matter (RLX.8, RLX.9)."""
    if kind == "k1":
        return logp - logp_ref  # -log rho, as shaped_rewards has always computed it
    log_rho = logp_ref - logp
    if kind == "k2":
        return 0.5 * log_rho**2
    if kind == "k3":
        return np.expm1(log_rho) - log_rho
    raise ValueError(f"kind must be k1, k2 or k3, got {kind!r}")


def kl_tokens_grad(logp: np.ndarray, logp_ref: np.ndarray, kind: str = "k3") -> np.ndarray:
    """d k / d logp of each per-token KL estimate (RLX.7), for a KL term in the loss (RLX.9):

        dk1/dlogp = 1,   dk2/dlogp = logp - logp_ref,   dk3/dlogp = 1 - rho

    (logp_ref is a constant and d log rho / d logp = -1)."""
    if kind == "k1":
        return np.ones_like(logp)
    if kind == "k2":
        return logp - logp_ref
    if kind == "k3":
        return -np.expm1(logp_ref - logp)
    raise ValueError(f"kind must be k1, k2 or k3, got {kind!r}")


def shaped_rewards(
    logp: np.ndarray, logp_ref: np.ndarray, mask: np.ndarray, score: np.ndarray, beta: float,
    kl: str = "k1",
) -> np.ndarray:
    """(B, L) per-token rewards  (RLHF.12): -beta * log-ratio on every token of the sentence,
    the reward model's score added at its last token, 0 on padding. kl = "k2" or "k3" puts that
    estimate (RLX.7) in the reward instead of k1 (biased forms, RLX.8)."""
    rew = np.where(mask, -beta * kl_tokens(logp, logp_ref, kl), 0.0)
    rew[np.arange(len(rew)), mask.sum(axis=1) - 1] += score
    return rew


def kl_per_sentence(logp: np.ndarray, logp_ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sum_t log pi(y_t | s_t) - log pi_ref(y_t | s_t) over each sentence's tokens: an unbiased
    one-sample estimate of KL(pi || pi_ref) between sentence distributions  (RLHF.11)."""
    return np.where(mask, logp - logp_ref, 0.0).sum(axis=1)


def advantages(
    rew: np.ndarray, val: np.ndarray, mask: np.ndarray, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """GAE with gamma = 1 on (B, L) sentences  (RLHF.13), via kernels.gae (GAE.1, GAE.2):

        delta_t = r_t + V(s_{t+1}) [t not last] - V(s_t),  adv_t = delta_t + lam adv_{t+1}

    Every sentence's last token is a termination (no bootstrap); padding steps are marked
    terminal too, with zero reward and value, so they produce 0 and pass nothing backward.
    Returns (adv, value targets adv + V), 0 on padding."""
    val = np.where(mask, val, 0.0)
    next_val = np.zeros_like(val)
    next_val[:, :-1] = val[:, 1:]  # 0 after the last token: val is 0 on padding
    last = mask & ~np.concatenate([mask[:, 1:], np.zeros((len(mask), 1), bool)], axis=1)
    term = last | ~mask
    no_trunc = np.zeros_like(term)
    adv = kernels.gae(np.ascontiguousarray(rew.T), np.ascontiguousarray(val.T),
                      np.ascontiguousarray(next_val.T), np.ascontiguousarray(term.T),
                      np.ascontiguousarray(no_trunc.T), 1.0, lam).T
    adv = np.where(mask, adv, 0.0)
    return adv, adv + val


LENGTH_NORM = {"rloo": False, "grpo": True, "grpo_nostd": True, "dr_grpo": False}


def group_advantages(R: np.ndarray, group: int, estimator: str) -> np.ndarray:
    """(B,) sequence advantages from (B,) sequence rewards, rows [i*group, (i+1)*group) forming
    group i (RLX.5, RLX.6). With m the group mean and s its standard deviation (ddof = 1, TRL's):

        rloo:                 A_i = R_i - (1/(k-1)) sum_{j != i} R_j       (RLX.5, unbiased)
        grpo_nostd, dr_grpo:  A_i = R_i - m  = (k-1)/k * rloo's A_i         (RLX.6)
        grpo:                 A_i = (R_i - m) / (s + 1e-4)                  (RLX.6)"""
    g = R.reshape(-1, group)
    if estimator == "rloo":
        adv = g - (g.sum(axis=1, keepdims=True) - g) / (group - 1)
    elif estimator in ("grpo_nostd", "dr_grpo"):
        adv = g - g.mean(axis=1, keepdims=True)
    elif estimator == "grpo":
        adv = (g - g.mean(axis=1, keepdims=True)) / (g.std(axis=1, ddof=1, keepdims=True) + 1e-4)
    else:
        raise ValueError(f"no group form {estimator!r}")
    return adv.reshape(-1)


def token_scale(mask: np.ndarray, length_norm: bool) -> np.ndarray:
    """(B, L) per-token factors c_t, 0 on padding, such that ppo_clip_loss's mean over the n
    tokens of the batch, at ratio 1, is the sequence-level loss of the group forms  (RLX.6):

        (1/n) sum_t c_t A_i grad log pi(y_t|s_t) = (1/B) sum_i A_i [1/|y_i|] sum_t grad log pi,

    c_t = n / B, divided by the sentence's length |y_i| with GRPO's per-sequence token mean.
    A positive factor on A changes nothing else in PPO-clip (min(r cA, clip(r) cA) = c min(.))."""
    c = np.full(mask.shape, mask.sum() / len(mask))
    if length_norm:
        c = c / mask.sum(axis=1, keepdims=True)
    return np.where(mask, c, 0.0)


def adaptive_beta(beta: float, kl: float, target: float, n: int, horizon: int) -> float:
    """Ziegler et al. (2019)'s proportional controller  (RLHF.14):

        e = clip(KL / target - 1, -0.2, 0.2),   beta <- beta (1 + e n / horizon)

    n sentences were just used; horizon sets how fast log beta follows the error."""
    e = float(np.clip(kl / target - 1.0, -0.2, 0.2))
    return beta * (1.0 + e * n / horizon)


@dataclass
class Batch:
    """One iteration's sentences and everything the update reads, flattened over real tokens
    (row by row, padding dropped): ctx (N, k) states, act (N,) tokens, logp_old, adv (whitened),
    ret (value targets). The (B, L) arrays are kept for logging and tests."""

    y: np.ndarray
    mask: np.ndarray
    logp: np.ndarray
    logp_ref: np.ndarray
    kl_tokenwise: np.ndarray  # (B, L) KL(pi(.|s_t) || pi_ref(.|s_t)), 0 on padding
    entropy: np.ndarray  # (B, L) H(pi(.|s_t)), 0 on padding
    val: np.ndarray
    score: np.ndarray
    rew: np.ndarray
    ctx: np.ndarray
    act: np.ndarray
    logp_old: np.ndarray
    adv: np.ndarray
    ret: np.ndarray | None  # None for the group forms: no value function
    logp_ref_flat: np.ndarray | None = None  # (N,) for kl_penalty = "k3_loss"
    kl_weight: np.ndarray | None = None  # (N,) beta c_t of the k3 loss term (RLX.9)
    kl_kind: str = "k3"  # the KL estimator of the loss term (LOSS.3)
    ref_logp_all: np.ndarray | None = None  # (N, V) pi_ref's log-probabilities, for "full"


def collect(
    policy: TinyLM, ref: TinyLM, vf: WindowNet, rm: RewardModel, beta: float, cfg: RLConfig,
    rng: np.random.Generator,
) -> Batch:
    """Steps 1 and 2 of an iteration: sample sentences, score them, shape the rewards (RLHF.12),
    GAE with gamma = 1 (RLHF.13), whiten the advantages (VPG.1); or, for a group estimator,
    the group advantages (RLX.5, RLX.6) scaled per token (token_scale)."""
    y = policy.sample(cfg.batch, rng, cfg.max_len)
    B, L = y.shape
    mask = token_mask(y)
    ctx_all = windows(y, policy.context).reshape(B * L, -1)
    pi, pi_ref = policy.dist(ctx_all)[0], ref.dist(ctx_all)[0]
    logp = pi.log_prob(y.reshape(-1)).reshape(B, L)
    logp_ref = pi_ref.log_prob(y.reshape(-1)).reshape(B, L)
    val = vf(ctx_all)[:, 0].reshape(B, L).astype(np.float64)
    score = rm.score(y)
    rew = shaped_rewards(logp, logp_ref, mask, score, beta)
    flat = mask.reshape(-1)
    extra = {}
    if uses_loss_options(cfg):  # the TRL / verl options (LOSS.1-3)
        adv_flat, extra = loss_option_advantages(cfg, score, logp, logp_ref, mask, beta,
                                                 pi, pi_ref)
        ret_flat = None
    elif cfg.estimator == "ppo":
        adv, ret = advantages(rew, val, mask, cfg.lam)
        adv_flat, ret_flat = normalize(adv[mask]), ret[mask]
    else:
        R = score if cfg.kl_penalty == "k3_loss" else score - beta * kl_per_sentence(
            logp, logp_ref, mask)
        c = token_scale(mask, LENGTH_NORM[cfg.estimator])
        adv_flat = (group_advantages(R, cfg.group, cfg.estimator)[:, None] * c)[mask]
        ret_flat = None
        if cfg.kl_penalty == "k3_loss":
            extra = {"logp_ref_flat": logp_ref[mask], "kl_weight": beta * c[mask]}
    return Batch(
        y=y, mask=mask, logp=logp, logp_ref=logp_ref,
        kl_tokenwise=np.where(mask, pi.kl(pi_ref).reshape(B, L), 0.0),
        entropy=np.where(mask, pi.entropy().reshape(B, L), 0.0),
        val=val, score=score, rew=rew,
        ctx=ctx_all[flat], act=y[mask], logp_old=logp[mask], adv=adv_flat, ret=ret_flat,
        **extra,
    )


def uses_loss_options(cfg: RLConfig) -> bool:
    """Whether any of the TRL / verl loss options is set (else each estimator's own form)."""
    return bool(cfg.loss_agg or cfg.scale_rewards or cfg.kl_estimator or cfg.micro_batch
                or cfg.kl_penalty == "loss")


def loss_option_advantages(cfg: RLConfig, score: np.ndarray, logp: np.ndarray,
                           logp_ref: np.ndarray, mask: np.ndarray, beta: float, pi, pi_ref
                           ) -> tuple[np.ndarray, dict]:
    """The per-token advantages A_i c_t (flat over real tokens) and the KL loss term's pieces for
    a group estimator with the loss options (LOSS.1, LOSS.2, LOSS.3): R = score - beta sum_t k_t
    (KL in the reward) or score (in the loss); A = losses.scaled_advantages(R) with the
    estimator's baseline (rloo: leave-one-out, else the group mean); c_t = n w_t with w_t =
    losses.agg_weights, so that update's mean over the batch's n tokens is sum_t w_t l_t; a KL
    in the loss gets the weight beta c_t. Unset options take the estimator's own form."""
    kind = cfg.kl_estimator or ("k3" if cfg.kl_penalty == "k3_loss" else "k1")
    in_loss = cfg.kl_penalty in ("k3_loss", "loss")
    B, L = mask.shape
    kl_state = None
    if losses.KL_ALIASES.get(kind, kind) == "full":
        kl_state = pi.kl(pi_ref).reshape(B, L)
    R = score if in_loss else score - beta * np.where(
        mask, losses.kl_value(logp, logp_ref, kind, kl_state), 0.0).sum(axis=1)
    scale = cfg.scale_rewards or ("group" if cfg.estimator == "grpo" else "none")
    base = "loo" if cfg.estimator == "rloo" else "mean"
    A = losses.scaled_advantages(R, cfg.group, scale, base)
    agg = cfg.loss_agg or ("grpo" if LENGTH_NORM[cfg.estimator] else "seq-mean-token-sum")
    c = mask.sum() * losses.agg_weights(mask, agg, cfg.max_len, cfg.micro_batch)
    extra = {}
    if in_loss:
        extra = {"logp_ref_flat": logp_ref[mask], "kl_weight": beta * c[mask], "kl_kind": kind}
        if kl_state is not None:
            extra["ref_logp_all"] = pi_ref.logp_all[mask.reshape(-1)]
    return (A[:, None] * c)[mask], extra


def update(
    policy: TinyLM, vf: WindowNet, opt: Adam, vf_opt: Adam, batch: Batch, cfg: RLConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Step 3: update_epochs passes of minibatch Adam steps on PPO-clip (PPO.1-3) for the
    policy and the value regression (VAL.1) for vf, each gradient norm clipped (CLIP.1).
    Returns the mean of (policy loss, value loss, approx KL, clip fraction) over the steps."""
    n = len(batch.act)
    mb = max(1, n // cfg.minibatches)
    stats = []
    for _ in range(cfg.update_epochs):
        perm = rng.permutation(n)
        for lo in range(0, n - mb + 1, mb):
            idx = perm[lo : lo + mb]
            ctx, act = batch.ctx[idx], batch.act[idx]
            dist, cache = policy.dist(ctx)
            logp = dist.log_prob(act)
            pi_loss, dlogp, info = ppo_clip_loss(logp, batch.logp_old[idx], batch.adv[idx],
                                                 cfg.clip_eps)
            dz = None  # + (1/n) sum_t beta c_t k_t at the current logp (RLX.9, LOSS.3)
            if batch.kl_weight is not None and batch.kl_kind == "k3":
                dlogp = dlogp + batch.kl_weight[idx] * kl_tokens_grad(
                    logp, batch.logp_ref_flat[idx], "k3") / len(idx)
            elif batch.kl_weight is not None and batch.ref_logp_all is not None:  # full
                dz = (batch.kl_weight[idx] / len(idx))[:, None] * losses.kl_full_dlogits(
                    dist.logp_all, batch.ref_logp_all[idx])[1]
            elif batch.kl_weight is not None:  # k1, k2, abs
                dlogp = dlogp + batch.kl_weight[idx] * losses.kl_value_grad(
                    logp, batch.logp_ref_flat[idx], batch.kl_kind) / len(idx)
            dy = dlogp[:, None] * dist.log_prob_grad(act)
            g_pi = policy.backward(cache, dy if dz is None else dy + dz)  # (CAT.2)
            clip_grad_norm(g_pi, cfg.max_grad_norm)
            opt.step(g_pi)
            v_loss = float("nan")
            if batch.ret is not None:  # the group forms have no value function
                v, vcache = vf.forward(ctx)
                v_loss, dv = value_loss(v[:, 0].astype(np.float64), batch.ret[idx])
                g_v = vf.backward(vcache, dv[:, None])
                clip_grad_norm(g_v, cfg.max_grad_norm)
                vf_opt.step(g_v)
            stats.append((pi_loss, v_loss, info["approx_kl"], info["clip_frac"]))
    return np.mean(stats, axis=0)


def rl_finetune(
    cfg: RLConfig, lm: TinyLM, rm: RewardModel, grammar: Grammar, rng: np.random.Generator,
    log: Callable[[dict], None] = lambda row: None,
) -> tuple[TinyLM, list[dict]]:
    """PPO from the pretrained LM against the reward model  (RLHF.10-14); returns the
    fine-tuned policy (a copy: lm stays the reference, pi_ref) and one row per iteration,
    measured on the iteration's samples, before its update."""
    policy, ref = lm.clone(), lm
    vf = rm.clone()  # InstructGPT starts the value function from the reward model
    opt, vf_opt = Adam(policy.params, lr=cfg.lr), Adam(vf.params, lr=cfg.vf_lr)
    beta, history, start = cfg.beta, [], time.perf_counter()
    for it in range(cfg.iterations):
        batch = collect(policy, ref, vf, rm, beta, cfg, rng)  # 1-2
        pi_loss, v_loss, approx_kl, clip_frac = update(policy, vf, opt, vf_opt, batch, cfg, rng)
        kl = kl_per_sentence(batch.logp, batch.logp_ref, batch.mask)  # (RLHF.11)
        gold = gold_reward(batch.y, grammar)  # the truth, for the log only
        B = len(batch.y)
        row = {
            "iter": it,
            "proxy": float(batch.score.mean()),
            "gold": float(gold.mean()),
            "gold_se": float(gold.std() / np.sqrt(B)),
            "kl": float(kl.mean()),
            "kl_se": float(kl.std() / np.sqrt(B)),
            "kl_tokenwise": float(batch.kl_tokenwise.sum(axis=1).mean()),
            "beta": beta,
            "entropy": float(batch.entropy[batch.mask].mean()),
            "length": float(batch.mask.sum(axis=1).mean()),
            "grammatical": float(np.isfinite(grammar.log_prob(batch.y)).mean()),
            "approx_kl": float(approx_kl),
            "clip_frac": float(clip_frac),
            "value_loss": float(v_loss),
            "sample": to_words(batch.y[0]),
            "wall_s": round(time.perf_counter() - start, 3),
        }
        history.append(row)
        log(row)
        if cfg.adaptive:  # 4. (RLHF.14), on this batch's KL
            beta = adaptive_beta(beta, row["kl"], cfg.kl_target, B, cfg.kl_horizon)
    return policy, history
