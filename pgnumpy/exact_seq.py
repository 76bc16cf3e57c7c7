"""RLHF verified exactly: every sentence of a tiny language (derivations/13-rlhf-exact.md).

A new module beside exact.py rather than an extension of it: exact.py enumerates trajectories of
tabular MDPs through CategoricalPolicy and rollout.collect; here the policy is the RLHF code's own
TinyLM (pgnumpy/rlhf/lm.py) over a 5-token vocabulary (<bos>, <eos> and three words a, b, c), its
states are windows of tokens, and the estimators are finetune.py's. Nothing is shared but numpy.

With the length cap L = 3 there are 1 + 3 + 9 + 27 = 40 sentences (<eos> after 0, 1 or 2 words,
or 3 words cut at the cap). <bos> pads the windows; so that no sentence can *emit* it (an emitted
<bos> would look like padding to the window, and pi* would then lie outside the model family),
its output logit is pinned at BOS_LOGIT = -50: pi(<bos>) < 2e-22 everywhere, so the 40 sentences
carry all the probability up to ~1e-21 and its gradient (~1e-22) never moves it.

Everything below is a sum over the 40 sentences (or over all groups of k of them, by multiset
with multinomial weights), computed through the same calls as training: TinyLM.token_logp,
TinyLM.dist -> Categorical.log_prob_grad -> WindowNet.backward, finetune.shaped_rewards,
finetune.advantages (kernels.gae), finetune.group_advantages, finetune.token_scale,
objectives.ppo_clip_loss at ratio 1, objectives.normalize.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pgnumpy.objectives import normalize, ppo_clip_loss
from pgnumpy.rlhf import finetune
from pgnumpy.rlhf.grammar import BOS, EOS
from pgnumpy.rlhf.lm import TinyLM, token_mask, windows

VOCAB = 5  # <bos>, <eos>, a, b, c
BOS_LOGIT = -50.0


def tiny_lm(rng: np.random.Generator, *, context: int = 3, d_embed: int = 4,
            hidden: tuple[int, ...] = (16,), out_scale: float = 15.0) -> TinyLM:
    """The project's TinyLM over VOCAB tokens, with context = the cap (each prefix its own
    window), output weights scaled by out_scale (TinyLM starts nearly uniform: out_gain 0.1),
    and <bos> never emitted (its logit pinned at BOS_LOGIT)."""
    lm = TinyLM(context, d_embed, hidden, rng=rng, vocab=VOCAB)
    lm.net.W[-1][:] *= out_scale
    lm.net.b[-1][:] = rng.normal(0.0, 1.0, VOCAB)
    lm.net.W[-1][:, BOS] = 0.0
    lm.net.b[-1][BOS] = BOS_LOGIT
    return lm


def sentences(max_len: int = 3, vocab: int = VOCAB) -> np.ndarray:
    """(N, max_len) every sentence: l < max_len words then <eos> (padded with <eos>), or max_len
    words cut at the cap. Words are the ids 2 .. vocab-1 (<bos> is never emitted)."""
    words = range(2, vocab)
    rows = [list(w) + [EOS] * (max_len - n) for n in range(max_len)
            for w in itertools.product(words, repeat=n)]
    rows += [list(w) for w in itertools.product(words, repeat=max_len)]
    return np.array(rows, np.int64)


@dataclass
class Space:
    """Every sentence with what the training code computes for it under pi and pi_ref."""

    y: np.ndarray  # (N, L)
    mask: np.ndarray  # (N, L) real tokens
    logp_tok: np.ndarray  # (N, L) log pi(y_t | s_t), 0 on padding
    logp_ref_tok: np.ndarray  # (N, L)
    logp: np.ndarray  # (N,) log pi(y) = sum_t   (RLX.1)
    logp_ref: np.ndarray  # (N,)

    @property
    def p(self) -> np.ndarray:
        return np.exp(self.logp)

    @property
    def length(self) -> np.ndarray:
        return self.mask.sum(axis=1)


def space(lm: TinyLM, ref: TinyLM, y: np.ndarray) -> Space:
    """log pi(y) = sum_t log pi(y_t | s_t) over y's tokens (RLX.1), by TinyLM.token_logp."""
    mask = token_mask(y)
    lt = np.where(mask, lm.token_logp(y), 0.0)
    lr = np.where(mask, ref.token_logp(y), 0.0)
    return Space(y, mask, lt, lr, lt.sum(axis=1), lr.sum(axis=1))


def kl(logp: np.ndarray, logq: np.ndarray) -> float:
    """KL(p || q) = sum_y p(y) (log p(y) - log q(y)) over the enumerated sentences (RLX.1);
    a sentence with p(y) = 0 adds 0."""
    p = np.exp(logp)
    return float(p[p > 0] @ (logp - logq)[p > 0])


def objective(sp: Space, r: np.ndarray, beta: float) -> dict[str, float]:
    """E_pi[r], KL(pi || pi_ref) and J_beta = E_pi[r] - beta KL, exactly  (RLX.1)."""
    reward, k = float(sp.p @ r), kl(sp.logp, sp.logp_ref)
    return {"reward": reward, "kl": k, "J": reward - beta * k}


def optimum(logp_ref: np.ndarray, r: np.ndarray, beta: float) -> tuple[np.ndarray, float]:
    """(log pi*, J_beta(pi*)) with pi* = pi_ref exp(r / beta) / Z and J_beta(pi*) = beta log Z,
    Z = E_ref[exp(r / beta)]  (RLX.2), by a stable log-sum-exp."""
    a = logp_ref + r / beta
    log_z = float(np.logaddexp.reduce(a))
    return a - log_z, beta * log_z


def backward_tokens(lm: TinyLM, y: np.ndarray, dlogp: np.ndarray,
                    extra_dlogits: np.ndarray | None = None) -> np.ndarray:
    """sum over the tokens of y of dlogp_t grad log pi(y_t | s_t) (+ extra_dlogits' rows), by one
    forward and one backward over every window, as finetune.update does (CAT.2, RLHF.5)."""
    B, L = y.shape
    dist, cache = lm.dist(windows(y, lm.context).reshape(B * L, -1))
    dy = dlogp.reshape(-1, 1) * dist.log_prob_grad(y.reshape(-1))
    if extra_dlogits is not None:
        dy = dy + extra_dlogits.reshape(B * L, -1)
    return lm.backward(cache, dy)


def exact_grad(lm: TinyLM, sp: Space, r: np.ndarray, beta: float) -> np.ndarray:
    """grad J_beta by the policy-gradient theorem, exactly  (RLX.3):

        grad J = sum_y pi(y) (r(y) - beta log(pi(y)/pi_ref(y)) - beta) grad log pi(y),

    the -beta from differentiating the log pi inside the KL (its expectation is 0 by EGLP.1;
    kept, so this is the derivative itself). One weighted backward over every token."""
    w = sp.p * (r - beta * (sp.logp - sp.logp_ref) - beta)
    return backward_tokens(lm, sp.y, np.where(sp.mask, w[:, None], 0.0))


def fd_grad(lm: TinyLM, ref: TinyLM, r: np.ndarray, beta: float, y: np.ndarray,
            h: float = 1e-6) -> np.ndarray:
    """Central finite differences of J_beta(params), every sentence re-enumerated (RLX.3)."""
    g = np.zeros_like(lm.params)
    for i in range(lm.params.size):
        old = lm.params[i]
        lm.params[i] = old + h
        jp = objective(space(lm, ref, y), r, beta)["J"]
        lm.params[i] = old - h
        jm = objective(space(lm, ref, y), r, beta)["J"]
        lm.params[i] = old
        g[i] = (jp - jm) / (2 * h)
    return g


def token_grads(lm: TinyLM, y: np.ndarray) -> np.ndarray:
    """Gt[i, t] = grad log pi(y_it | s_it) for every token (0 on padding), (N, L, P): one
    backward per token (for variances; means go through backward_tokens)."""
    N, L = y.shape
    mask = token_mask(y)
    out = np.zeros((N, L, lm.params.size))
    for i, t in zip(*np.nonzero(mask)):
        one = np.zeros((N, L))
        one[i, t] = 1.0
        out[i, t] = backward_tokens(lm, y, one)
    return out


def kl_state_dlogits(lm: TinyLM, ref: TinyLM, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per token: KL_t = KL(pi(.|s_t) || pi_ref(.|s_t)) (N, L) and its gradient with respect to
    pi's logits, p (log p - log q) - p KL_t  (CAT.5 differentiated in p's logits), (N, L, V);
    0 on padding."""
    N, L = y.shape
    ctx = windows(y, lm.context).reshape(N * L, -1)
    p, q = lm.dist(ctx)[0], ref.dist(ctx)[0]
    klt = p.kl(q)
    d = p.probs * (p.logp_all - q.logp_all) - p.probs * klt[:, None]
    mask = token_mask(y)
    return (np.where(mask, klt.reshape(N, L), 0.0),
            np.where(mask[..., None], d.reshape(N, L, -1), 0.0))


def exact_values(sp: Space, rew: np.ndarray) -> np.ndarray:
    """V(s_t) (N, L) of every prefix under pi: E[sum_{t' >= t} r_t' | y_<t], by summing over the
    sentences that share the prefix (RLX.4); 0 on padding."""
    rtg = np.cumsum(rew[:, ::-1], axis=1)[:, ::-1]
    p = sp.p
    N, L = sp.y.shape
    V = np.zeros((N, L))
    for t in range(L):
        keys = [tuple(row[:t]) for row in sp.y]
        num, den = {}, {}
        for i, key in enumerate(keys):
            if sp.mask[i, t]:
                num[key] = num.get(key, 0.0) + p[i] * rtg[i, t]
                den[key] = den.get(key, 0.0) + p[i]
        for i, key in enumerate(keys):
            if sp.mask[i, t]:
                V[i, t] = num[key] / den[key]
    return V


# ---- estimators: token coefficients of grad log pi, per batch ------------------------------


@dataclass
class Batches:
    """Every batch of B sentences (a multiset of sentence indices) with its probability,
    P(m) = B! / prod_j c_j! prod_i pi(y_i)  (RLX.5)."""

    idx: np.ndarray  # (M, B)
    prob: np.ndarray  # (M,)


def all_batches(p: np.ndarray, B: int) -> Batches:
    """Every multiset of B sentence indices (sorted rows) with its multinomial probability
    (RLX.5); the probabilities sum to 1."""
    idx = np.array(list(itertools.combinations_with_replacement(range(len(p)), B)), np.int64)
    # prod_j c_j! = prod over positions of (1 + earlier equal positions): sorted, so runs
    rank = np.ones(idx.shape)
    for i in range(1, B):
        rank[:, i] = 1 + (idx[:, :i] == idx[:, [i]]).sum(axis=1)
    fact_B = float(np.prod(np.arange(1, B + 1)))
    return Batches(idx, fact_B / rank.prod(axis=1) * p[idx].prod(axis=1))


@dataclass
class Moments:
    """The exact mean of an estimator (through the training path) and tr Cov."""

    mean: np.ndarray
    second: float  # E ||g||^2

    @property
    def var(self) -> float:
        return self.second - float(self.mean @ self.mean)


def moments(lm: TinyLM, sp: Space, Gt: np.ndarray, bt: Batches, coef: np.ndarray,
            direct: tuple[np.ndarray, np.ndarray] | None = None,
            direct_coef: np.ndarray | None = None, second: bool = True) -> Moments:
    """E[g] and E||g||^2 for the estimate g_m = sum_{i, t} coef[m, i, t] grad log pi(y_{m,i,t})
    (+ sum_i of a per-sentence direct term), exactly (RLX.5).

    The mean: the coefficients weighted by P(m) and added onto their sentences' tokens, then one
    backward over the 40 sentences (the estimate is linear in the coefficients, so this is the
    sum over batches of what each batch's backward gives). direct = (Dt (N, L, P) per-token
    direct gradients, dlogits (N, L, V) the same as logit gradients for the training path);
    direct_coef (M, B, L): each direct term's weight in each batch (default 1: once per
    appearance, as the one-sentence forms have it; the aggregated losses weight it by w_t);
    second = False skips E||g||^2 (nan): the mean alone is one backward."""
    N, L = sp.y.shape
    W = np.zeros((N, L))
    np.add.at(W, bt.idx, bt.prob[:, None, None] * coef)
    extra = None
    Ft = Gt
    if direct is not None:
        dcoef = np.ones_like(coef) if direct_coef is None else direct_coef
        Wd = np.zeros((N, L))
        np.add.at(Wd, bt.idx, bt.prob[:, None, None] * dcoef)
        extra = Wd[:, :, None] * direct[1]
    mean = backward_tokens(lm, sp.y, W, extra)
    if not second:
        return Moments(mean, float("nan"))
    # E||g||^2 with the token Gram matrix (tokens: (sentence, t), plus a direct row per token)
    if direct is not None:
        Ft = np.concatenate([Gt, direct[0]], axis=1)  # (N, 2L, P)
        coef = np.concatenate([coef, dcoef], axis=2)
    F = Ft.reshape(N * Ft.shape[1], -1)
    K = F @ F.T
    tok = (bt.idx[:, :, None] * Ft.shape[1] + np.arange(Ft.shape[1])).reshape(len(bt.prob), -1)
    c = coef.reshape(len(bt.prob), -1)
    second = 0.0
    for a in range(tok.shape[1]):
        second += float(bt.prob @ (c[:, a] * (c * K[tok[:, [a]], tok]).sum(axis=1)))
    return Moments(mean, second)


def by_token_count(mask: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """fn applied to the batches (M, B, L) stacked by equal token count n, so that each call of
    a trainer function that uses the batch's n and B (token_scale: n / B) sees exactly the n and
    B of each of its batches. fn(mask (M', B, L)) -> (M', B, L)."""
    n = mask.sum(axis=(1, 2))
    out = np.zeros(mask.shape)
    for v in np.unique(n):
        sel = n == v
        out[sel] = fn(mask[sel])
    return out


def sequence_reward(sp: Space, r: np.ndarray, beta: float, kl_penalty: str) -> np.ndarray:
    """R(y) as collect() builds it for the group forms: score - beta sum_t k1_t (RLHF.11), or
    the score alone when the KL is a loss term."""
    if kl_penalty == "k3_loss":
        return r.copy()
    return r - beta * finetune.kl_per_sentence(sp.logp_tok, sp.logp_ref_tok, sp.mask)


def group_coef(sp: Space, r: np.ndarray, beta: float, bt: Batches, estimator: str,
               kl_penalty: str = "reward") -> np.ndarray:
    """(M, k, L) token coefficients of one group's estimate as finetune.collect + update compute
    it at ratio 1 (RLX.5, RLX.6, RLX.9): R, group_advantages, token_scale, ppo_clip_loss
    (dlogp = -adv / n; the estimate of grad J is -dlogp), plus the k3 term's -beta c_t dk3/dlogp
    / n when kl_penalty = "k3_loss"."""
    M, k = bt.idx.shape
    R = sequence_reward(sp, r, beta, kl_penalty)
    A = finetune.group_advantages(R[bt.idx].reshape(-1), k, estimator).reshape(M, k)
    mask = sp.mask[bt.idx]
    c = by_token_count(mask, lambda m: finetune.token_scale(
        m.reshape(-1, m.shape[2]), finetune.LENGTH_NORM[estimator]).reshape(m.shape))
    adv = A[:, :, None] * c
    n = mask.sum(axis=(1, 2))[:, None, None]
    lt = sp.logp_tok[bt.idx]
    # ppo_clip_loss at ratio 1 is -adv/n per token; one call over every token of every batch,
    # its 1/len undone and each batch's own 1/n applied
    _, dlogp, _ = ppo_clip_loss(lt.reshape(-1), lt.reshape(-1), adv.reshape(-1), 0.2)
    coef = -dlogp.reshape(adv.shape) * adv.size / n
    if kl_penalty == "k3_loss":
        coef = coef - beta * c * finetune.kl_tokens_grad(lt, sp.logp_ref_tok[bt.idx], "k3") / n
    return np.where(mask, coef, 0.0)


def token_form_coef(sp: Space, r: np.ndarray, beta: float, form: str,
                    lam: float = 1.0, val: np.ndarray | None = None,
                    klt: np.ndarray | None = None, token_mean: bool = False) -> np.ndarray:
    """(N, 1, L) per-sentence token coefficients of the one-sentence forms (RLX.4, RLX.8):

        reinforce     (r - beta sum_t k1_t) on every token (the sequence reward)
        rtg_k1/k2/k3  advantages(shaped_rewards(kl=k), val, lam): reward-to-go (val = 0,
                      lam = 1) or GAE (val = the exact V)
        loss_k1/k2/k3 r on every token, - beta dk/dlogp on each token (the KL in the loss)
        loss_analytic r on every token; with the direct term -beta grad KL_t (biased)
        analytic      r - beta sum_{t' > t} KL_t'; with the direct term (unbiased, RLX.8)
    (klt: the per-state KL_t for the analytic forms.)
    Each through ppo_clip_loss at ratio 1 on one sentence (token mean times its token count:
    token_scale's n / B with B = 1)."""
    N, L = sp.y.shape
    if form == "reinforce":
        R = sequence_reward(sp, r, beta, "reward")
        adv = np.where(sp.mask, R[:, None], 0.0)
    elif form.startswith("rtg_"):
        rew = finetune.shaped_rewards(sp.logp_tok, sp.logp_ref_tok, sp.mask, r, beta,
                                      kl=form[4:])
        adv, _ = finetune.advantages(rew, np.zeros((N, L)) if val is None else val, sp.mask,
                                     lam)
    elif form.startswith("loss_k"):
        adv = np.where(sp.mask, r[:, None], 0.0) - beta * finetune.kl_tokens_grad(
            sp.logp_tok, sp.logp_ref_tok, form[5:])
    elif form == "loss_analytic":  # r only; the KL enters through the direct term
        adv = np.where(sp.mask, r[:, None], 0.0)
    elif form == "analytic":  # r - beta * (KL of the states after t)
        future = np.cumsum(klt[:, ::-1], axis=1)[:, ::-1] - klt
        adv = np.where(sp.mask, r[:, None] - beta * future, 0.0)
    else:
        raise ValueError(form)
    _, dlogp, _ = ppo_clip_loss(sp.logp_tok.reshape(-1), sp.logp_tok.reshape(-1),
                                adv.reshape(-1), 0.2)
    # -dlogp = adv / (N L) for this one call: undo its 1/len. Per sentence (a batch of B = 1)
    # the trainer's 1/n and token_scale's n / B = n cancel; token_mean keeps the 1/n.
    coef = -dlogp.reshape(N, L) * adv.size
    if token_mean:
        coef = coef / sp.mask.sum(axis=1, keepdims=True)
    return np.where(sp.mask, coef, 0.0)[:, None, :]


def whitened_coef(sp: Space, adv: np.ndarray, bt: Batches, whiten: bool = True) -> np.ndarray:
    """(M, B, L) PPO as finetune runs it, at ratio 1: the batch's per-token advantages (adv,
    (N, L), e.g. GAE with the exact V) whitened over the batch's tokens by objectives.normalize
    (VPG.1), then ppo_clip_loss's mean over the batch's n tokens (RLX.10). One batch at a time
    (normalize's mean and std are the batch's)."""
    M, B = bt.idx.shape
    out = np.zeros((M, B, sp.y.shape[1]))
    for m in range(M):
        msk = sp.mask[bt.idx[m]]
        a = adv[bt.idx[m]][msk]
        a = normalize(a) if whiten else a
        lt = sp.logp_tok[bt.idx[m]][msk]
        _, dlogp, _ = ppo_clip_loss(lt, lt, a, 0.2)
        out[m][msk] = -dlogp
    return out


def analytic_kl_direct(lm: TinyLM, ref: TinyLM, sp: Space, beta: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The analytic per-token KL as a loss term, -beta sum_t grad KL_t(s_t) with the states held
    fixed (RLX.8): returns (KL_t (N, L), Dt (N, L, P) = -beta grad KL_t, dlogits (N, L, V))."""
    klt, d = kl_state_dlogits(lm, ref, sp.y)
    N, L = sp.y.shape
    Dt = np.zeros((N, L, lm.params.size))
    for i, t in zip(*np.nonzero(sp.mask)):
        e = np.zeros((N, L, d.shape[2]))
        e[i, t] = -beta * d[i, t]
        Dt[i, t] = backward_tokens(lm, sp.y, np.zeros((N, L)), e)
    return klt, Dt, -beta * d


def report(g: np.ndarray, grad: np.ndarray) -> tuple[float, float]:
    """(||E g - grad|| / ||grad||, cos(E g, grad))."""
    rel = float(np.linalg.norm(g - grad) / np.linalg.norm(grad))
    return rel, float(g @ grad / (np.linalg.norm(g) * np.linalg.norm(grad)))


def best_of_n(logp_ref: np.ndarray, r: np.ndarray, n: int) -> np.ndarray:
    """log pi_bon(y): the law of the highest-r sentence of n i.i.d. draws from pi_ref, ties
    broken uniformly among the tied draws  (RLX.11). With F(<) = P_ref(r < r_y), F(<=) and
    q = P_ref(r = r_y) the mass of y's reward level, the level wins with probability
    F(<=)^n - F(<)^n and y gets its share pi_ref(y) / q of it."""
    p = np.exp(logp_ref)
    below = np.array([p[r < v].sum() for v in r])
    level = np.array([p[r == v].sum() for v in r])
    # log(a^n - b^n) = n log a + log(1 - (b/a)^n): no cancellation when a, b are near 1
    log_a = np.log(below + level)
    with np.errstate(divide="ignore"):
        log_win = n * log_a + np.log(-np.expm1(n * (np.log(below) - log_a)))
    return logp_ref - np.log(level) + log_win
