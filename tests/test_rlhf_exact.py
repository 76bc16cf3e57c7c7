"""RLHF verified exactly (derivations/13-rlhf-exact.md): every sentence of a 5-token TinyLM with
cap 3 enumerated (40 sentences), every group of k by multiset. No sampling anywhere except the
last test: each expectation is a finite sum, so an unbiased form must match grad J_beta to
rounding. Tolerance 1e-9 relative for those: the sums have ~1e4 terms of size ~1, so rounding is
~1e-13 (seen: <= 1e-15); a bias of 1e-9 would pass, none of the forms has one that small (the
smallest bias any biased form here has is > 1e-2). Biased forms are asserted biased by > 1e-2
and their exact identities (a scale (k-1)/k, two forms equal) to 1e-9.
"""

import numpy as np
import pytest

from pgnumpy import exact_seq as X
from pgnumpy.optim import Adam
from pgnumpy.rlhf import finetune

TOL = 1e-9
BETA = 0.3


@pytest.fixture(scope="module")
def world():
    ref = X.tiny_lm(np.random.default_rng(0))
    lm = X.tiny_lm(np.random.default_rng(1))
    y = X.sentences()
    sp = X.space(lm, ref, y)
    r = np.random.default_rng(2).normal(size=len(y))
    grad = X.exact_grad(lm, sp, r, BETA)
    return {"ref": ref, "lm": lm, "y": y, "sp": sp, "r": r, "grad": grad,
            "Gt": X.token_grads(lm, y), "one": X.Batches(np.arange(len(y))[:, None], sp.p)}


def mean_of(w, coef, direct=None):
    return X.moments(w["lm"], w["sp"], w["Gt"], w["one"], coef, direct)


# ---- 1. the enumeration, the objective, its gradient, the optimum ------------------------------

def test_every_sentence_is_enumerated_and_pi_sums_to_one(world):
    """(RLX.1): 40 distinct sentences whose probabilities under the LM's own token_logp sum to 1
    (to 1e-12: <bos>'s pinned logit leaves ~1e-21 outside); the sequence KL equals the expected
    sum of per-state KLs (RLHF.11) to 1e-12; sampling from the LM never leaves the space."""
    y, sp, lm = world["y"], world["sp"], world["lm"]
    assert len(y) == 40 and len({tuple(row) for row in y}) == 40
    assert abs(sp.p.sum() - 1) < 1e-12 and abs(np.exp(sp.logp_ref).sum() - 1) < 1e-12
    klt, _ = X.kl_state_dlogits(lm, world["ref"], y)
    assert abs(float(sp.p @ klt.sum(axis=1)) - X.kl(sp.logp, sp.logp_ref)) < 1e-12
    sample = lm.sample(500, np.random.default_rng(3), 3)
    assert {tuple(row) for row in sample} <= {tuple(row) for row in y}


def test_exact_gradient_matches_finite_differences(world):
    """(RLX.3) against central differences of J_beta re-enumerated (h = 1e-6: truncation
    ~h^2 |J'''| ~ 1e-11, rounding ~1e-16 / 1e-6 = 1e-10): 1e-7 relative to the norm."""
    w = world
    fd = X.fd_grad(w["lm"], w["ref"], w["r"], BETA, w["y"])
    assert np.linalg.norm(fd - w["grad"]) < 1e-7 * np.linalg.norm(w["grad"])


def test_optimum_in_closed_form(world):
    """(RLX.2): J_beta(pi) = beta log Z - beta KL(pi || pi*) for any pi (here the LM, pi_ref and
    pi* itself), so pi* is the maximiser and beta log Z its value; 1e-12."""
    sp, r = world["sp"], world["r"]
    logp_star, J_star = X.optimum(sp.logp_ref, r, BETA)
    assert abs(np.exp(logp_star).sum() - 1) < 1e-12
    for logp in (sp.logp, sp.logp_ref, logp_star):
        J = float(np.exp(logp) @ r) - BETA * X.kl(logp, sp.logp_ref)
        assert abs(J - (J_star - BETA * X.kl(logp, logp_star))) < 1e-12
    assert X.objective(sp, r, BETA)["J"] < J_star


def test_exact_gradient_ascent_reaches_the_optimum():
    """(RLX.2, RLX.3): Adam on the exact gradient from pi_ref; KL(pi || pi*) falls below 1e-3
    from 2.64 (deterministic; the figure runs it longer)."""
    ref = X.tiny_lm(np.random.default_rng(0), hidden=(32,))
    lm, y = ref.clone(), X.sentences()
    r = np.random.default_rng(2).normal(size=len(y))
    logp_star, _ = X.optimum(X.space(ref, ref, y).logp_ref, r, BETA)
    opt = Adam(lm.params, lr=0.03)
    for _ in range(700):
        opt.step(-X.exact_grad(lm, X.space(lm, ref, y), r, BETA))
    assert X.kl(X.space(lm, ref, y).logp, logp_star) < 1e-3


# ---- 2. the estimators ----------------------------------------------------------------------

@pytest.mark.parametrize("form, lam, exact_v", [
    ("reinforce", 1.0, False), ("rtg_k1", 1.0, False), ("rtg_k1", 0.0, True),
    ("rtg_k1", 0.95, True), ("rtg_k1", 1.0, True)])
def test_one_sentence_forms_with_k1_in_the_reward_are_unbiased(world, form, lam, exact_v):
    """(RLX.4): the sequence reward, reward-to-go of the shaped rewards (finetune.shaped_rewards
    -> advantages via kernels.gae), GAE with the exact prefix value at any lambda: E = grad J."""
    w = world
    val = None
    if exact_v:
        rew = finetune.shaped_rewards(w["sp"].logp_tok, w["sp"].logp_ref_tok, w["sp"].mask,
                                      w["r"], BETA)
        val = X.exact_values(w["sp"], rew)
    m = mean_of(w, X.token_form_coef(w["sp"], w["r"], BETA, form, lam=lam, val=val))
    assert X.report(m.mean, w["grad"])[0] < TOL


@pytest.mark.parametrize("k", [2, 3])
def test_rloo_is_unbiased_and_dr_grpo_is_rloo_shrunk_by_k_minus_1_over_k(world, k):
    """(RLX.5, RLX.6): over every group of k, through group_advantages, token_scale and
    ppo_clip_loss: E[rloo] = grad J; E[dr_grpo] = (k-1)/k grad J (cosine 1); grpo and
    grpo_nostd are biased by more than 5% and point elsewhere (cosine < 0.999)."""
    w = world
    bt = X.all_batches(w["sp"].p, k)
    assert abs(bt.prob.sum() - 1) < 1e-12
    est = {e: X.moments(w["lm"], w["sp"], w["Gt"], bt,
                        X.group_coef(w["sp"], w["r"], BETA, bt, e)).mean
           for e in ("rloo", "dr_grpo", "grpo", "grpo_nostd")}
    assert X.report(est["rloo"], w["grad"])[0] < TOL
    assert X.report(est["dr_grpo"], (k - 1) / k * w["grad"])[0] < TOL
    for e in ("grpo", "grpo_nostd"):
        rel, cos = X.report(est[e], w["grad"])
        assert rel > 0.05 and cos < 0.999, (e, rel, cos)


def test_kl_estimator_values(world):
    """(RLX.7): over y_t ~ pi(.|s_t), E[k1] = E[k3] = KL(pi(.|s_t) || pi_ref(.|s_t)) at every
    state of every sentence, 1e-12; E[k2] differs (by more than 1e-3 somewhere)."""
    w = world
    lm, ref = w["lm"], w["ref"]
    klt, _ = X.kl_state_dlogits(lm, ref, w["y"])
    ctx = np.array([[0, 0, 0], [0, 0, 2], [0, 3, 4]])  # three states
    p, q = lm.dist(ctx)[0], ref.dist(ctx)[0]
    for kind, unbiased in (("k1", True), ("k3", True), ("k2", False)):
        est = sum(p.probs[:, a] * finetune.kl_tokens(p.logp_all[:, a], q.logp_all[:, a], kind)
                  for a in range(1, X.VOCAB))
        assert np.allclose(est, p.kl(q), atol=1e-12, rtol=0) == unbiased, kind
    assert np.all(klt >= 0)


def test_kl_in_the_reward_only_k1_is_unbiased(world):
    """(RLX.8): the KL estimate as a per-token reward under reward-to-go: k1 unbiased, k2 and k3
    biased (their score-function gradient misses E[sum_t grad k_t], which is 0 only for k1)."""
    w = world
    for kind, ok in (("k1", True), ("k2", False), ("k3", False)):
        rel = X.report(mean_of(w, X.token_form_coef(w["sp"], w["r"], BETA, f"rtg_{kind}")).mean,
                       w["grad"])[0]
        assert (rel < TOL) if ok else (rel > 1e-2), (kind, rel)


def test_kl_in_the_loss_what_each_estimates(world):
    """(RLX.9), exactly: with r as the reward and beta k in the loss,
       k1: E[grad k1] = 0, the KL term vanishes: E = grad E[r];
       k2: E = grad E[r] - beta E[sum_t grad KL_t(s_t)] with the states held fixed (equal to
           the analytic per-token KL in the loss, 1e-9); biased for sequences;
       analytic KL-to-go in the reward + the direct term: unbiased."""
    w = world
    sp, r, lm, ref = w["sp"], w["r"], w["lm"], w["ref"]
    grad_r = X.exact_grad(lm, sp, r, 0.0)
    loss = {k: mean_of(w, X.token_form_coef(sp, r, BETA, f"loss_{k}")).mean
            for k in ("k1", "k2", "k3")}
    assert X.report(loss["k1"], grad_r)[0] < TOL
    klt, Dt, dl = X.analytic_kl_direct(lm, ref, sp, BETA)
    fixed = mean_of(w, X.token_form_coef(sp, r, BETA, "loss_analytic"), (Dt, dl)).mean
    assert X.report(loss["k2"], fixed)[0] < TOL
    assert X.report(loss["k2"], w["grad"])[0] > 1e-2
    coef = X.token_form_coef(sp, r, BETA, "analytic", klt=klt)
    full = mean_of(w, coef, (Dt, dl)).mean
    assert X.report(full, w["grad"])[0] < TOL
    # the per-token vectors behind the variance give the same mean as the training path
    explicit = sp.p @ (np.einsum("nl,nlp->np", coef[:, 0], w["Gt"]) + Dt.sum(axis=1))
    assert X.report(explicit, full)[0] < TOL


def test_one_token_k2_in_the_loss_is_unbiased_and_k3_follows_the_reverse_kl():
    """(RLX.9) at cap 1 (one state, a bandit): k2 in the loss gives grad KL(pi || pi_ref)
    exactly, k3 gives grad KL(pi_ref || pi), checked against central differences of the
    reverse KL (1e-7 of the norm)."""
    ref, lm = X.tiny_lm(np.random.default_rng(0)), X.tiny_lm(np.random.default_rng(1))
    y = X.sentences(max_len=1)
    sp = X.space(lm, ref, y)
    r = np.zeros(len(y))
    w = {"lm": lm, "sp": sp, "Gt": X.token_grads(lm, y),
         "one": X.Batches(np.arange(len(y))[:, None], sp.p)}
    k2 = mean_of(w, X.token_form_coef(sp, r, 1.0, "loss_k2")).mean
    assert X.report(k2, X.exact_grad(lm, sp, r, 1.0))[0] < TOL
    k3 = mean_of(w, X.token_form_coef(sp, r, 1.0, "loss_k3")).mean

    def reverse_kl(_):
        s = X.space(lm, ref, y)
        return X.kl(s.logp_ref, s.logp)

    from pgnumpy.testing import numeric_gradient, with_params
    fd = numeric_gradient(with_params(lm.params, lambda: reverse_kl(None)), lm.params)
    assert np.linalg.norm(-k3 - fd) < 1e-7 * np.linalg.norm(fd)


def test_grpo_k3_loss_bias_is_the_k3_term_alone(world):
    """(RLX.9): rloo with R = r and beta k3 in the loss has exactly the bias of the k3 term
    (the group baseline adds none), for k = 2: E equals the one-sentence loss_k3 form's, 1e-9."""
    w = world
    bt = X.all_batches(w["sp"].p, 2)
    g = X.moments(w["lm"], w["sp"], w["Gt"], bt,
                  X.group_coef(w["sp"], w["r"], BETA, bt, "rloo", "k3_loss")).mean
    single = mean_of(w, X.token_form_coef(w["sp"], w["r"], BETA, "loss_k3")).mean
    assert X.report(g, single)[0] < TOL


def test_ppo_as_run_is_biased_by_its_batch_normalisations(world):
    """(RLX.10): GAE with the exact value through ppo_clip_loss's token mean over a batch of
    B = 2 sentences, whitened or not: biased (> 1e-2); the sum over tokens / B: unbiased."""
    w = world
    sp, r = w["sp"], w["r"]
    rew = finetune.shaped_rewards(sp.logp_tok, sp.logp_ref_tok, sp.mask, r, BETA)
    adv, _ = finetune.advantages(rew, X.exact_values(sp, rew), sp.mask, 0.95)
    bt = X.all_batches(sp.p, 2)
    for whiten in (False, True):
        m = X.moments(w["lm"], sp, w["Gt"], bt, X.whitened_coef(sp, adv, bt, whiten))
        assert X.report(m.mean, w["grad"])[0] > 1e-2


def test_exact_variance_by_the_gram_matrix_matches_explicit_vectors(world):
    """(RLX.5): tr Cov from the token Gram matrix equals the explicit sum over every group of
    ||g_m||^2 (k = 2, grpo), 1e-10 relative; and sampled groups agree with the exact mean and
    E||g||^2 within 4 standard errors (seed 0, 4000 groups)."""
    w = world
    bt = X.all_batches(w["sp"].p, 2)
    coef = X.group_coef(w["sp"], w["r"], BETA, bt, "grpo")
    m = X.moments(w["lm"], w["sp"], w["Gt"], bt, coef)
    g = np.einsum("mil,milp->mp", coef, w["Gt"][bt.idx])
    assert abs(bt.prob @ (g**2).sum(axis=1) - m.second) < 1e-10 * m.second
    assert np.linalg.norm(bt.prob @ g - m.mean) < 1e-10 * np.linalg.norm(m.mean)
    rng = np.random.default_rng(0)
    draws = np.sort(rng.choice(len(w["y"]), size=(4000, 2), p=w["sp"].p), axis=1)
    row = {tuple(i): j for j, i in enumerate(bt.idx)}
    sq = (g[[row[tuple(d)] for d in draws]] ** 2).sum(axis=1)
    assert abs(sq.mean() - m.second) < 4 * sq.std() / np.sqrt(len(sq))


# ---- 4. best-of-n ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3])
def test_best_of_n_law_against_brute_force_with_ties(n):
    """(RLX.11) against every ordered n-tuple of sentences, the winner drawn uniformly among the
    tied best (rewards rounded to create ties), 1e-12; its KL from pi_ref is at most
    log n - (n-1)/n."""
    ref = X.tiny_lm(np.random.default_rng(0))
    y = X.sentences()
    logp_ref = X.space(ref, ref, y).logp
    r = np.round(np.random.default_rng(4).normal(size=len(y)), 0)  # ties on purpose
    p = np.exp(logp_ref)
    tup = np.array(list(np.ndindex(*(len(y),) * n)))  # every ordered n-tuple
    best = r[tup] == r[tup].max(axis=1, keepdims=True)
    share = p[tup].prod(axis=1) / best.sum(axis=1)  # split among the tied best
    brute = np.zeros(len(y))
    np.add.at(brute, tup[best], np.broadcast_to(share[:, None], best.shape)[best])
    bon = X.best_of_n(logp_ref, r, n)
    assert np.allclose(np.exp(bon), brute, atol=1e-12, rtol=0)
    assert X.kl(bon, logp_ref) <= np.log(n) - (n - 1) / n + 1e-12
