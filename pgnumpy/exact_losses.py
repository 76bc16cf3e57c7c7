"""The LLM-RL loss options, exactly, on the enumerated toy (derivations/14-rlhf-losses.md).

Each option of TRL's GRPOConfig (loss_type, scale_rewards) and verl's actor config
(loss_agg_mode, kl_loss_type) is one axis of a Form; its per-token coefficients are built by the
trainer's own functions (pgnumpy/rlhf/losses.py: agg_weights, scaled_advantages, kl_value,
kl_value_grad; objectives.ppo_clip_loss at ratio 1), and their exact mean and variance over every
batch come from exact_seq.moments, as exact_seq.group_coef does for the forms of RLX.5-6.

    Form(agg, scale, kl, kl_place, baseline, micro, kl_in_baseline)
    coef = form_coef(sp, r, beta, bt, form, group, max_len)   # (M, B, L) and direct weights
    m = moments(...)                                          # E[g], tr Cov

Also here: the bias split into its parts along a chain of forms (bias_parts), the exact expected
update after mu optimiser steps on one batch (mu_step_update), and the DPO / IPO population
losses over every pair of sentences with their closed-form optima.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np

from pgnumpy import exact_seq as X
from pgnumpy.objectives import ppo_clip_loss
from pgnumpy.rlhf import dpo as D
from pgnumpy.rlhf import losses
from pgnumpy.rlhf.lm import TinyLM, windows


@dataclass(frozen=True)
class Form:
    """One point of the matrix. agg: losses.LOSS_AGGS; scale: group, batch, none; kl: an
    estimator of losses.KL_ESTIMATORS; kl_place: reward (R = r - beta sum_t k_t) or loss
    (+ beta sum_t w_t k_t); baseline: mean (GRPO's) or loo (RLOO's); micro: sentences per
    micro-batch (0: the whole batch); kl_in_baseline: False puts the reward KL outside the group
    baseline (A = adv(r) - beta sum_t k_t: the other order of OpenRLHF PR #515); kl_ratio: the
    KL loss term weighted by the ratio pi/pi_old, beta sum_t w_t rho_t k_t (DeepSeek-V3.2's
    correction, TRL PR #4638's use_bias_correction_kl)."""

    agg: str = "seq-mean-token-sum"
    scale: str = "none"
    kl: str = "k1"
    kl_place: str = "reward"
    baseline: str = "loo"
    micro: int = 0
    kl_in_baseline: bool = True
    kl_ratio: bool = False


UNBIASED = Form()  # RLOO, summed over tokens, k1 in the reward: E = grad J_beta  (RLX.5)


@dataclass
class World:
    """Everything the forms read, computed once: the LMs, sentences, their Space, the reward,
    beta, grad J_beta, per-token gradients, and the per-state KL with its direct term."""

    lm: TinyLM
    ref: TinyLM
    y: np.ndarray
    sp: X.Space
    r: np.ndarray
    beta: float
    grad: np.ndarray
    Gt: np.ndarray
    klt: np.ndarray
    Dt: np.ndarray
    dl: np.ndarray

    @property
    def max_len(self) -> int:
        return self.y.shape[1]


def world(beta: float = 0.3, max_len: int = 3, seeds: tuple[int, int, int] = (0, 1, 2)) -> World:
    """The world of tests/test_rlhf_exact.py: pi_ref and pi two random tiny LMs, r ~ N(0, 1) per
    sentence, beta; the cap max_len sets the sentences (context = the cap)."""
    ref = X.tiny_lm(np.random.default_rng(seeds[0]), context=max_len)
    lm = X.tiny_lm(np.random.default_rng(seeds[1]), context=max_len)
    y = X.sentences(max_len)
    sp = X.space(lm, ref, y)
    r = np.random.default_rng(seeds[2]).normal(size=len(y))
    klt, Dt, dl = X.analytic_kl_direct(lm, ref, sp, beta)
    return World(lm, ref, y, sp, r, beta, X.exact_grad(lm, sp, r, beta), X.token_grads(lm, y),
                 klt, Dt, dl)


def group_batches(p: np.ndarray, k: int, groups: int = 1) -> X.Batches:
    """Every batch of `groups` i.i.d. groups of k sentences: an ordered tuple of group multisets
    (the group structure matters to batch-level scaling), probability the product of the groups'
    multinomial probabilities (RLX.5)."""
    one = X.all_batches(p, k)
    if groups == 1:
        return one
    rows = list(itertools.product(range(len(one.prob)), repeat=groups))
    rows = np.array(rows, np.int64)
    idx = np.concatenate([one.idx[rows[:, g]] for g in range(groups)], axis=1)
    return X.Batches(idx, one.prob[rows].prod(axis=1))


def sentence_kl(w: World, kind: str) -> np.ndarray:
    """(N, L) per-token KL estimate of each sentence (losses.kl_value), 0 on padding."""
    sp = w.sp
    return np.where(sp.mask, losses.kl_value(sp.logp_tok, sp.logp_ref_tok, kind, w.klt), 0.0)


def form_coef(w: World, bt: X.Batches, form: Form, group: int
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """(coef (M, B, L), direct weights (M, B, L) or None) of one batch's estimate of grad J as
    the trainer computes it at ratio 1 (LOSS.1, LOSS.2, LOSS.3, LOSS.4): R by the KL placement, A by
    losses.scaled_advantages, per-token factors c_t = n w_t (losses.agg_weights; the trainer
    hands A c_t to ppo_clip_loss, whose mean over the batch's n tokens gives sum_t w_t A), and
    the KL loss term - beta w_t dk/dlogp, or for 'full' the direct term w_t (-beta grad KL_t)."""
    sp, beta = w.sp, w.beta
    M, B = bt.idx.shape
    mask = sp.mask[bt.idx]
    kseq = sentence_kl(w, form.kl).sum(axis=1)
    in_reward = form.kl_place == "reward"
    if form.kl_in_baseline:
        R = w.r - beta * kseq if in_reward else w.r
        A = losses.scaled_advantages(R[bt.idx], group, form.scale, form.baseline)
    else:  # baseline and scale on the score alone, the sentence's own KL added after
        A = losses.scaled_advantages(w.r[bt.idx], group, form.scale, form.baseline)
        A = A - beta * kseq[bt.idx]
    wt = losses.agg_weights(mask, form.agg, w.max_len, form.micro)
    n = mask.sum(axis=(1, 2))[:, None, None]
    adv = A[:, :, None] * n * wt  # what collect hands to update, per token
    lt = sp.logp_tok[bt.idx]
    _, dlogp, _ = ppo_clip_loss(lt.reshape(-1), lt.reshape(-1), adv.reshape(-1), 0.2)
    coef = -dlogp.reshape(adv.shape) * adv.size / n  # undo the one call's 1/len, apply 1/n
    dcoef = None
    if not in_reward:
        if losses.KL_ALIASES.get(form.kl, form.kl) == "full":
            dcoef = wt
        else:  # d(rho k)/dlogp = rho (k + k'), rho = 1 at collection
            lr_ = sp.logp_ref_tok[bt.idx]
            dk = losses.kl_value_grad(lt, lr_, form.kl)
            if form.kl_ratio:
                dk = dk + losses.kl_value(lt, lr_, form.kl)
            coef = coef - beta * wt * dk
    return np.where(mask, coef, 0.0), dcoef


def form_moments(w: World, form: Form, group: int, groups: int = 1,
                 bt: X.Batches | None = None, second: bool = True) -> X.Moments:
    """Exact E[g] and tr Cov of the form's one-batch estimate, batches of `groups` groups of k
    (LOSS.4, RLX.5)."""
    bt = bt or group_batches(w.sp.p, group, groups)
    coef, dcoef = form_coef(w, bt, form, group)
    direct = (w.Dt, w.dl) if dcoef is not None else None
    return X.moments(w.lm, w.sp, w.Gt, bt, coef, direct, dcoef, second)


@dataclass
class Row:
    """One form's numbers against grad J: rel = ||E g - grad|| / ||grad||, cos, scale =
    ||E g|| / ||grad||, var = tr Cov of one batch's estimate, var_at_scale = var / scale^2 (the
    variance of the estimate rescaled to grad J's length: comparable across forms)."""

    rel: float
    cos: float
    scale: float
    var: float

    @property
    def var_at_scale(self) -> float:
        return self.var / self.scale**2


def row(w: World, m: X.Moments) -> Row:
    rel, cos = X.report(m.mean, w.grad)
    return Row(rel, cos, float(np.linalg.norm(m.mean) / np.linalg.norm(w.grad)), m.var)


BIAS_PARTS = ("mean baseline", "KL", "scaling", "aggregation", "partition")


def bias_parts(w: World, form: Form, group: int, groups: int = 1) -> dict[str, np.ndarray]:
    """E[g_form] - grad J split along a chain of forms that changes one axis at a time, so the
    parts add up to the whole bias exactly (the split depends on the chain's order; this one)
    (LOSS.4):

        grad J = E[UNBIASED]                           (RLOO, summed, k1 in reward)
        mean baseline: + E[baseline] - E[UNBIASED]     ((k-1)/k shrink for the group mean)
        KL:           + E[.., form's KL]       - ..    (estimator and placement)
        scaling:      + E[.., form's scale]    - ..
        aggregation:  + E[.., form's agg, one micro-batch] - ..   (length weighting)
        partition:    + E[form]                - ..    (micro-batches, bnpo only)"""
    bt = group_batches(w.sp.p, group, groups)
    chain = [UNBIASED]
    chain.append(replace(chain[-1], baseline=form.baseline))
    chain.append(replace(chain[-1], kl=form.kl, kl_place=form.kl_place,
                         kl_in_baseline=form.kl_in_baseline))
    chain.append(replace(chain[-1], scale=form.scale))
    chain.append(replace(chain[-1], agg=form.agg))
    chain.append(replace(chain[-1], micro=form.micro))
    means = [form_moments(w, f, group, groups, bt, second=False).mean for f in chain]
    return {name: b - a for name, a, b in zip(BIAS_PARTS, means[:-1], means[1:])}


# ---- mu optimiser steps on one batch ---------------------------------------------------------


def batch_surrogate_loss_and_grad(lm: TinyLM, ref_logp: np.ndarray, y: np.ndarray,
                                  mask: np.ndarray, logp_old: np.ndarray, adv: np.ndarray,
                                  wt: np.ndarray, beta: float, form: Form, clip_eps: float
                                  ) -> tuple[float, np.ndarray]:
    """(loss, d loss / d params) of one batch at the current params, as finetune.update computes
    it (LOSS.5): ppo_clip_loss over the batch's n tokens with the per-token advantages adv
    (A c_t), plus the KL loss term beta sum_t w_t k(logp_t, logp_ref_t) at the current logp
    (for 'full': beta sum_t w_t KL(pi(.|s_t) || pi_ref(.|s_t)), through the logits).
    ref_logp: (B, L, V) pi_ref's log-probabilities of every token at every position."""
    B, L = y.shape
    dist, cache = lm.dist(windows(y, lm.context).reshape(B * L, -1))
    logp = dist.log_prob(y.reshape(-1)).reshape(B, L)
    flat = mask.reshape(-1)
    loss, dlogp_m, _ = ppo_clip_loss(logp[mask], logp_old[mask], adv[mask], clip_eps)
    dlogp = np.zeros(B * L)
    dlogp[flat] = dlogp_m
    extra = None
    if form.kl_place == "loss":
        wk = np.where(mask, wt, 0.0)
        if losses.KL_ALIASES.get(form.kl, form.kl) == "full":
            kl, d = losses.kl_full_dlogits(dist.logp_all, ref_logp.reshape(B * L, -1))
            loss += beta * float(wk.reshape(-1) @ kl)
            extra = beta * wk.reshape(-1)[:, None] * d
        else:
            ref_tok = np.take_along_axis(ref_logp, y[..., None], axis=-1)[..., 0]
            k = losses.kl_value(logp, ref_tok, form.kl)
            dk = losses.kl_value_grad(logp, ref_tok, form.kl)
            if form.kl_ratio:  # rho k, rho = pi / pi_old: d/dlogp = rho (k + k')
                rho = np.exp(logp - logp_old)
                k, dk = rho * k, rho * (k + dk)
            loss += beta * float((wk * k).sum())
            dlogp += beta * (wk * dk).reshape(-1)
    dy = dlogp[:, None] * dist.log_prob_grad(y.reshape(-1))
    if extra is not None:
        dy = dy + extra
    return loss, lm.backward(cache, dy)


def mu_step_update(w: World, form: Form, group: int, mus: tuple[int, ...], lr: float,
                   clip_eps: float = 0.2) -> dict[int, np.ndarray]:
    """E[theta_mu - theta_0] over every group of k, for each mu in mus: each batch takes plain
    gradient steps (theta <- theta - lr grad loss) on its own surrogate, logp_old and the
    advantages fixed at theta_0 as the trainer fixes them at collection, the ratio and the KL
    term re-evaluated at each step (TRL's num_iterations, verl's ppo_epochs)  (LOSS.5). Exact:
    a sum over all batches, each batch's steps computed one after the other."""
    lm, sp = w.lm, w.sp
    bt = group_batches(sp.p, group)
    theta0 = lm.params.copy()
    N, L = w.y.shape
    ref_all = w.ref.dist(windows(w.y, w.ref.context).reshape(N * L, -1))[0].logp_all
    ref_all = ref_all.reshape(N, L, -1)
    kseq = sentence_kl(w, form.kl).sum(axis=1)
    R = w.r - w.beta * kseq if form.kl_place == "reward" else w.r
    A = losses.scaled_advantages(R[bt.idx], group, form.scale, form.baseline)
    total = {mu: np.zeros_like(theta0) for mu in mus}
    for m in range(len(bt.prob)):
        ids = bt.idx[m]
        y, mask = w.y[ids], sp.mask[ids]
        wt = losses.agg_weights(mask, form.agg, w.max_len, form.micro)
        adv = A[m][:, None] * mask.sum() * wt
        lm.params[:] = theta0
        for step in range(1, max(mus) + 1):
            _, g = batch_surrogate_loss_and_grad(lm, ref_all[ids], y, mask, sp.logp_tok[ids],
                                                 adv, wt, w.beta, form, clip_eps)
            lm.params -= lr * g
            if step in total:
                total[step] += bt.prob[m] * (lm.params - theta0)
    lm.params[:] = theta0
    return total


def exact_steps(w: World, mu: int, lr: float) -> np.ndarray:
    """theta_mu - theta_0 after mu steps theta <- theta + lr grad J_beta(theta), exactly
    (LOSS.5)."""
    lm = w.lm
    theta0 = lm.params.copy()
    for _ in range(mu):
        lm.params += lr * X.exact_grad(lm, X.space(lm, w.ref, w.y), w.r, w.beta)
    out = lm.params - theta0
    lm.params[:] = theta0
    return out


# ---- DPO and IPO on every pair ----------------------------------------------------------------


def bt_probs(score: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """P[a, b] = sigmoid((score_a - score_b) / tau): the Bradley-Terry labeller's probability of
    preferring a to b (RLHF.7, DPO.3), reward_model.preference_pairs' formula."""
    d = (score[:, None] - score[None, :]) / tau
    return 0.5 * (1.0 + np.tanh(0.5 * d))


def population_pair_loss(logp: np.ndarray, logp_ref: np.ndarray, P: np.ndarray, beta: float,
                         algo: str) -> tuple[float, np.ndarray]:
    """(L, dL/dlog pi(y) (N,)) of the population loss over every ordered pair (a, b) of
    sentences drawn from pi_ref x pi_ref and labelled a > b with probability P[a, b] (DPO.3):

        L = sum_{a,b} pi_ref(a) pi_ref(b) P[a, b] loss(u_a - u_b),   u = log pi - log pi_ref,

    each labelled pair through dpo.pair_loss with its probability as the weight (the pair
    (b, a) labelled b > a is the term (b, a) of the same sum)."""
    q = np.exp(logp_ref)
    N = len(q)
    a, b = np.divmod(np.arange(N * N), N)
    u = logp - logp_ref
    wt = (q[:, None] * q[None, :] * P).reshape(-1)
    loss, du_w, du_l = D.pair_loss(u[a], u[b], beta, algo, wt)
    g = np.zeros(N)
    np.add.at(g, a, du_w)
    np.add.at(g, b, du_l)
    return loss, g


def ipo_optimum(logp_ref: np.ndarray, P: np.ndarray, tau: float) -> np.ndarray:
    """log pi_IPO = log pi_ref + (1/tau) sum_b pi_ref(b) P[y, b] - log Z: the minimiser of the
    IPO population loss over all distributions (DPO.4; Azar et al.'s pi* with mu = pi_ref)."""
    a = logp_ref + (np.exp(logp_ref) @ P.T) / tau
    return a - np.logaddexp.reduce(a)


def population_ascent(w_ref: TinyLM, y: np.ndarray, P: np.ndarray, beta: float, algo: str,
                      steps: int, lr: float = 0.03) -> TinyLM:
    """Adam on the exact population loss through the LM's parameters from pi_ref (DPO.3):
    dL/dlog pi(y) on every token of y, one backward (exact_seq.backward_tokens)."""
    lm = w_ref.clone()
    logp_ref = X.space(w_ref, w_ref, y).logp
    from pgnumpy.optim import Adam

    opt = Adam(lm.params, lr=lr)
    for _ in range(steps):
        sp = X.space(lm, w_ref, y)
        _, g = population_pair_loss(sp.logp, logp_ref, P, beta, algo)
        opt.step(X.backward_tokens(lm, y, np.where(sp.mask, g[:, None], 0.0)))
    return lm
