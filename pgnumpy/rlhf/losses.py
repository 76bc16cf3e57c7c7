"""The LLM-RL loss options of TRL and verl, as per-token weights (derivations/14-rlhf-losses.md).

Every option these libraries offer for the group forms is one of three choices, each a small
function here, used by the trainer (finetune.collect / update) and by the exact enumeration
(pgnumpy/exact_losses.py) alike:

  aggregation   agg_weights: the weight w_t each token's loss gets, L = sum_t w_t l_t   (LOSS.1)
                TRL GRPOConfig.loss_type: grpo, bnpo, dr_grpo, dapo
                verl actor.loss_agg_mode: token-mean, seq-mean-token-sum, seq-mean-token-mean,
                                          seq-mean-token-sum-norm
  reward scale  scaled_advantages: A_i = (R_i - group mean) / (std + 1e-4)           (LOSS.2)
                TRL GRPOConfig.scale_rewards: group, batch, none
  KL estimator  kl_value / kl_value_grad: the per-token estimate and d/dlogp          (LOSS.3)
                verl kl_loss_type / kl_penalty: k1, abs, mse (k2), low_var_kl (k3), full
                placed in the reward (R = r - beta sum_t k_t) or in the loss (+ beta sum_t w_t k_t)

Sources (definitions read, not copied): TRL trl/trainer/grpo_config.py docstrings of loss_type and
scale_rewards; verl verl/trainer/ppo/core_algos.py agg_loss and kl_penalty.
"""

from __future__ import annotations

import numpy as np

LOSS_AGGS = ("grpo", "bnpo", "dr_grpo", "dapo", "token-mean", "seq-mean-token-sum",
             "seq-mean-token-mean", "seq-mean-token-sum-norm")
SCALE_REWARDS = ("group", "batch", "none")
KL_ESTIMATORS = ("k1", "k2", "mse", "k3", "low_var_kl", "abs", "full")
KL_ALIASES = {"mse": "k2", "low_var_kl": "k3"}


def agg_weights(mask: np.ndarray, agg: str, max_len: int, micro_batch: int = 0) -> np.ndarray:
    """(..., B, L) per-token weights w_t of the aggregated loss L = sum_{i,t} w_{i,t} l_{i,t}, 0 on
    padding, for one optimiser step's batch of B sentences (mask (..., B, L): leading axes are
    separate batches) split into micro-batches of micro_batch consecutive sentences (0: one
    micro-batch) whose gradients are accumulated and divided by their number M, as TRL and verl
    do  (LOSS.1):

        grpo, seq-mean-token-mean        w = 1 / (B |y_i|)       per-sequence token mean
        seq-mean-token-sum               w = 1 / B               per-sequence token sum
        dr_grpo, seq-mean-token-sum-norm w = 1 / (B L_max)       a constant (max_len)
        dapo, token-mean                 w = 1 / n               n = tokens of the whole batch
        bnpo                             w = 1 / (M n_j)         n_j = tokens of i's micro-batch

    bnpo is the only form whose weights depend on the partition (TRL: "may slightly vary
    depending on the local batch size"); with micro_batch = 1 it is grpo, with one micro-batch
    dapo. verl's token-mean without a global token count (verl #7200) is bnpo's weighting."""
    B, L = mask.shape[-2:]
    m = micro_batch or B
    if B % m:
        raise ValueError(f"micro_batch {m} must divide the batch {B}")
    length = mask.sum(axis=-1, keepdims=True).astype(float)
    ones = np.ones(mask.shape)
    if agg in ("grpo", "seq-mean-token-mean"):
        w = 1.0 / (B * length) * ones
    elif agg == "seq-mean-token-sum":
        w = ones / B
    elif agg in ("dr_grpo", "seq-mean-token-sum-norm"):
        w = ones / (B * max_len)
    elif agg in ("dapo", "token-mean"):
        w = ones / mask.sum(axis=(-2, -1), keepdims=True)
    elif agg == "bnpo":
        n_j = mask.reshape(mask.shape[:-2] + (B // m, m * L)).sum(axis=-1)  # tokens per micro
        w = np.repeat(1.0 / ((B // m) * n_j), m, axis=-1)[..., None] * ones
    else:
        raise ValueError(f"loss_agg must be one of {', '.join(LOSS_AGGS)}, got {agg!r}")
    return np.where(mask, w, 0.0)


def scaled_advantages(R: np.ndarray, group: int, scale: str, baseline: str = "mean"
                      ) -> np.ndarray:
    """(..., B) sequence advantages from (..., B) rewards (leading axes: separate batches), each
    batch's entries [i*group, (i+1)*group) a group  (LOSS.2):

        A_i = (R_i - b_i) / (s + 1e-4),  b_i = the group mean (baseline "mean", GRPO's) or the
        mean of the other group - 1 (baseline "loo", RLOO's);
        s = the group's std (scale "group"), the whole batch's std ("batch"), or s + 1e-4 := 1
        ("none"); stds with ddof = 1, as torch.std computes them in TRL."""
    g = R.reshape(R.shape[:-1] + (-1, group))
    if baseline == "mean":
        A = g - g.mean(axis=-1, keepdims=True)
    elif baseline == "loo":
        A = g - (g.sum(axis=-1, keepdims=True) - g) / (group - 1)
    else:
        raise ValueError(f"baseline must be mean or loo, got {baseline!r}")
    if scale == "group":
        A = A / (g.std(axis=-1, ddof=1, keepdims=True) + 1e-4)
    elif scale == "batch":
        A = A / (R.std(axis=-1, ddof=1)[..., None, None] + 1e-4)
    elif scale != "none":
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, got {scale!r}")
    return A.reshape(R.shape)


def kl_value(logp: np.ndarray, logp_ref: np.ndarray, kind: str,
             kl_state: np.ndarray | None = None) -> np.ndarray:
    """Per-token KL estimates from the sampled token's log-probabilities (verl's kl_penalty),
    x = logp - logp_ref  (LOSS.3):

        k1 = x,  abs = |x|,  k2 = mse = x^2 / 2,  k3 = low_var_kl = e^{-x} - 1 + x,
        full = KL(pi(.|s_t) || pi_ref(.|s_t)) over the whole vocabulary (kl_state; verl names
        it and raises NotImplementedError; here it is the analytic per-state KL)."""
    kind = KL_ALIASES.get(kind, kind)
    x = logp - logp_ref
    if kind == "k1":
        return x
    if kind == "abs":
        return np.abs(x)
    if kind == "k2":
        return 0.5 * x**2
    if kind == "k3":
        return np.expm1(-x) + x
    if kind == "full":
        if kl_state is None:
            raise ValueError("kind 'full' needs kl_state, the per-state KL")
        return kl_state
    raise ValueError(f"kl estimator must be one of {', '.join(KL_ESTIMATORS)}, got {kind!r}")


def kl_value_grad(logp: np.ndarray, logp_ref: np.ndarray, kind: str) -> np.ndarray:
    """d k / d logp of the sampled-token estimates (logp_ref a constant)  (LOSS.3):

        k1: 1,  abs: sign(x),  k2: x,  k3: 1 - e^{-x}     (x = logp - logp_ref).

    full has no such derivative: it depends on the logits of every token, and its gradient with
    respect to them is p (log p - log q) - p KL (CAT.5); see kl_full_dlogits."""
    kind = KL_ALIASES.get(kind, kind)
    x = logp - logp_ref
    if kind == "k1":
        return np.ones_like(x)
    if kind == "abs":
        return np.sign(x)
    if kind == "k2":
        return x
    if kind == "k3":
        return -np.expm1(-x)
    raise ValueError(f"no d/dlogp for kl estimator {kind!r}")


def kl_full_dlogits(p_logp: np.ndarray, q_logp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(KL(p || q) per row, d KL / d logits of p) for rows of log-probabilities over the whole
    vocabulary  (LOSS.3, CAT.5): dKL/dz = p (log p - log q) - p KL."""
    p = np.exp(p_logp)
    kl = (p * (p_logp - q_logp)).sum(axis=-1)
    return kl, p * (p_logp - q_logp) - p * kl[..., None]


def check_loss_fields(rl) -> None:
    """UserError (one line, exit 2 through cli.entry) for a bad loss option of an RLConfig:
    loss_agg, scale_rewards, kl_estimator, micro_batch, algo (derivations/14-rlhf-losses.md)."""
    from pgnumpy.errors import UserError
    from pgnumpy.rlhf.dpo import ALGOS

    for name, value, choices in (("loss_agg", rl.loss_agg, LOSS_AGGS),
                                 ("scale_rewards", rl.scale_rewards, SCALE_REWARDS),
                                 ("kl_estimator", rl.kl_estimator, KL_ESTIMATORS),
                                 ("algo", rl.algo, ALGOS)):
        if value != "" and value not in choices:
            raise UserError(f"rl.{name} must be one of {', '.join(choices)}; got {value!r}")
    if rl.algo == "rl" and (rl.loss_agg or rl.scale_rewards or rl.kl_estimator or rl.micro_batch
                            or rl.kl_penalty == "loss") and rl.estimator == "ppo":
        raise UserError("the loss options (loss_agg, scale_rewards, kl_estimator, micro_batch, "
                        "kl_penalty 'loss') go with a group estimator (rloo, grpo, grpo_nostd, "
                        "dr_grpo)")
    if rl.algo != "rl" and not rl.beta > 0:
        raise UserError(f"rl.algo {rl.algo!r} needs rl.beta > 0 (it divides by it); got "
                        f"{rl.beta!r}")
    m = rl.micro_batch
    if not isinstance(m, int) or isinstance(m, bool) or m < 0 or (m and rl.batch % m):
        raise UserError(f"rl.micro_batch must be 0 (one micro-batch) or a whole number that "
                        f"divides rl.batch ({rl.batch}); got {m!r}")
    if rl.kl_estimator and rl.kl_penalty == "k3_loss" and rl.kl_estimator not in ("k3",
                                                                                  "low_var_kl"):
        raise UserError("rl.kl_penalty 'k3_loss' fixes the estimator to k3; use kl_penalty "
                        "'loss' with kl_estimator for another one in the loss")
