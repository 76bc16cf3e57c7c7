"""The LLM-RL loss options exactly (derivations/14-rlhf-losses.md, pgnumpy/exact_losses.py).

The per-token pieces (pgnumpy/rlhf/losses.py) are checked against independent hand computations
and finite differences; the exact claims on the enumerated toy (40 sentences, every group of k)
at rounding tolerance 1e-9 relative (the sums have ~1e4-1e5 terms of size ~1: rounding ~1e-13;
seen <= 3e-15), the biased forms asserted biased by more than 1e-3 (the smallest bias any of
them has here is 2e-2). DPO / IPO: their gradients by finite differences, their population
optima in closed form (1e-12), the optimiser's result to its tolerance.
"""

from dataclasses import replace

import numpy as np
import pytest

from pgnumpy import exact_losses as E
from pgnumpy import exact_seq as X
from pgnumpy.gradcheck import central_fd
from pgnumpy.rlhf import dpo as D
from pgnumpy.rlhf import finetune, losses
from pgnumpy.rlhf.lm import token_mask

TOL = 1e-9
F = E.Form


@pytest.fixture(scope="module")
def w():
    return E.world()


def mean(w, form, k, groups=1):
    return E.form_moments(w, form, k, groups, second=False).mean


def rel(a, b):
    return X.report(a, b)[0]


# ---- 1. the per-token pieces against independent computations --------------------------------

LENGTHS = [[3, 1, 2, 3], [1, 1, 2, 2]]  # two batches of B = 4 sentences, cap L = 3


def masks():
    return np.array([[[t < n for t in range(3)] for n in row] for row in LENGTHS])


@pytest.mark.parametrize("agg", losses.LOSS_AGGS)
@pytest.mark.parametrize("micro", [0, 1, 2])
def test_agg_weights_against_the_definitions(agg, micro):
    """(LOSS.1) each weighting by its library's definition, written out token by token in
    loops (TRL grpo_config.py, verl agg_loss), for two batches at once and one at a time."""
    mk = masks()
    got = losses.agg_weights(mk, agg, 3, micro)
    for b, lens in enumerate(LENGTHS):
        B, n, m = len(lens), sum(lens), micro or len(lens)
        for i, li in enumerate(lens):
            for t in range(3):
                if t >= li:
                    want = 0.0
                elif agg in ("grpo", "seq-mean-token-mean"):
                    want = 1 / B / li
                elif agg == "seq-mean-token-sum":
                    want = 1 / B
                elif agg in ("dr_grpo", "seq-mean-token-sum-norm"):
                    want = 1 / (B * 3)
                elif agg in ("dapo", "token-mean"):
                    want = 1 / n
                else:  # bnpo: token mean of i's micro-batch, averaged over the B/m micro-batches
                    j = i // m
                    want = 1 / sum(lens[j * m:(j + 1) * m]) / (B // m)
                assert got[b, i, t] == pytest.approx(want, rel=1e-15, abs=0), (agg, b, i, t)
        assert np.array_equal(losses.agg_weights(mk[b], agg, 3, micro), got[b])


def test_bnpo_is_grpo_at_micro_batch_1_and_dapo_with_one_micro_batch():
    """TRL's docstring: bnpo with per_device_train_batch_size 1 is grpo; with the whole batch in
    one micro-batch it is dapo (LOSS.1), to the last bit."""
    mk = masks()
    assert np.allclose(losses.agg_weights(mk, "bnpo", 3, 1), losses.agg_weights(mk, "grpo", 3),
                       rtol=1e-15, atol=0)
    assert np.array_equal(losses.agg_weights(mk, "bnpo", 3, 0), losses.agg_weights(mk, "dapo", 3))


@pytest.mark.parametrize("scale", losses.SCALE_REWARDS)
@pytest.mark.parametrize("baseline", ["mean", "loo"])
def test_scaled_advantages_against_a_loop(scale, baseline):
    """(LOSS.2) against a loop over groups with the sample std (ddof 1) written out."""
    rng = np.random.default_rng(0)
    R = rng.normal(size=(3, 8))  # 3 batches of 2 groups of 4
    got = losses.scaled_advantages(R, 4, scale, baseline)
    for b in range(3):
        allr = R[b]
        sb = np.sqrt(((allr - allr.mean()) ** 2).sum() / (len(allr) - 1))
        for g in range(2):
            grp = allr[4 * g:4 * g + 4]
            sg = np.sqrt(((grp - grp.mean()) ** 2).sum() / 3)
            for i in range(4):
                base = grp.mean() if baseline == "mean" else (grp.sum() - grp[i]) / 3
                s = {"group": sg + 1e-4, "batch": sb + 1e-4, "none": 1.0}[scale]
                assert got[b, 4 * g + i] == pytest.approx((grp[i] - base) / s, rel=1e-12)


def test_scaled_advantages_reproduce_the_trainers_group_forms():
    """grpo = (group, mean), grpo_nostd = dr_grpo = (none, mean), rloo = (none, loo): the same
    numbers as finetune.group_advantages (LOSS.2, RLX.5-6)."""
    R = np.random.default_rng(1).normal(size=12)
    for est, scale, base in (("grpo", "group", "mean"), ("grpo_nostd", "none", "mean"),
                             ("rloo", "none", "loo")):
        assert np.allclose(losses.scaled_advantages(R, 4, scale, base),
                           finetune.group_advantages(R, 4, est), rtol=0, atol=1e-14)


def test_kl_values_and_their_derivatives():
    """(LOSS.3) the values by their definitions (k1..k3 also = finetune.kl_tokens), aliases
    mse = k2 and low_var_kl = k3, d/dlogp by central differences, full's logit gradient by
    central differences of the per-state KL."""
    rng = np.random.default_rng(2)
    lp, lq = np.log(rng.uniform(0.05, 1, 20)), np.log(rng.uniform(0.05, 1, 20))
    x = lp - lq
    want = {"k1": x, "abs": np.abs(x), "k2": x**2 / 2, "k3": np.exp(-x) - 1 + x}
    for kind, v in want.items():
        assert np.allclose(losses.kl_value(lp, lq, kind), v, rtol=1e-12, atol=1e-15)
        h = 1e-6
        fd = (losses.kl_value(lp + h, lq, kind) - losses.kl_value(lp - h, lq, kind)) / (2 * h)
        assert np.allclose(losses.kl_value_grad(lp, lq, kind), fd, atol=1e-8), kind
    for kind in ("k1", "k2", "k3"):
        assert np.allclose(losses.kl_value(lp, lq, kind), finetune.kl_tokens(lp, lq, kind),
                           rtol=1e-13, atol=1e-15)
    assert np.array_equal(losses.kl_value(lp, lq, "mse"), losses.kl_value(lp, lq, "k2"))
    assert np.array_equal(losses.kl_value_grad(lp, lq, "low_var_kl"),
                          losses.kl_value_grad(lp, lq, "k3"))
    z, q = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))

    def lsm(a):
        return a - np.logaddexp.reduce(a, axis=-1, keepdims=True)

    kl, d = losses.kl_full_dlogits(lsm(z), lsm(q))
    for row in range(3):
        fd = central_fd(lambda zz, row=row: float(
            losses.kl_full_dlogits(lsm(zz), lsm(q[row]))[0]), z[row].copy())
        assert np.allclose(d[row], fd, atol=1e-8)
    assert np.allclose(kl, (np.exp(lsm(z)) * (lsm(z) - lsm(q))).sum(-1))


# ---- 2. the matrix, exactly --------------------------------------------------------------------

def test_the_new_path_reproduces_exact_seq_group_coef(w):
    """The forms built from losses.py equal exact_seq.group_coef's (the trainer's group forms
    through token_scale) coefficient for coefficient, k = 3: grpo = (grpo agg, group scale,
    mean), dr_grpo = (seq-mean-token-sum, none, mean), rloo + k3 in the loss (1e-12)."""
    bt = X.all_batches(w.sp.p, 3)
    for est, klp, form in (("grpo", "reward", F(agg="grpo", scale="group", baseline="mean")),
                           ("dr_grpo", "reward", F(baseline="mean")),
                           ("rloo", "k3_loss", F(kl="k3", kl_place="loss"))):
        old = X.group_coef(w.sp, w.r, w.beta, bt, est, klp)
        new, _ = E.form_coef(w, bt, form, 3)
        assert np.allclose(new, old, rtol=0, atol=1e-12), est


@pytest.mark.parametrize("k", [2, 3])
def test_closed_forms_of_the_aggregations(w, k):
    """(LOSS.4): E = grad J (rloo, summed); (k-1)/k grad J (group mean, seq-mean-token-sum);
    (k-1)/(k L) grad J (dr_grpo = seq-mean-token-sum-norm, L = 3, the cap); token-mean = dapo =
    bnpo with one micro-batch; grpo = seq-mean-token-mean = bnpo at micro-batch 1; grpo and dapo
    point elsewhere (cos < 0.9999). All 1e-9."""
    g = w.grad
    assert rel(mean(w, F(), k), g) < TOL
    assert rel(mean(w, F(baseline="mean"), k), (k - 1) / k * g) < TOL
    for agg in ("dr_grpo", "seq-mean-token-sum-norm"):
        assert rel(mean(w, F(agg=agg, baseline="mean"), k), (k - 1) / (k * 3) * g) < TOL
    dapo = mean(w, F(agg="dapo", baseline="mean"), k)
    grpo = mean(w, F(agg="grpo", baseline="mean"), k)
    assert rel(mean(w, F(agg="token-mean", baseline="mean"), k), dapo) < TOL
    assert rel(mean(w, F(agg="bnpo", baseline="mean"), k), dapo) < TOL
    assert rel(mean(w, F(agg="seq-mean-token-mean", baseline="mean"), k), grpo) < TOL
    assert rel(mean(w, F(agg="bnpo", micro=1, baseline="mean"), k), grpo) < TOL
    for m in (dapo, grpo):
        assert X.report(m, g)[1] < 0.9999


@pytest.mark.parametrize("k", [2, 3, 4])
def test_grpo_is_k_minus_1_over_k_of_a_length_weighted_gradient(w, k):
    """(LOSS.4): with the group mean b_i = R_i/k + (k-1)/k loo_i and loo_i independent of y_i,
    E[grpo] = (k-1)/k sum_y pi(y) (R(y) - E_pi R) grad log pi(y) / |y|: its direction does not
    depend on k. The right side by one weighted backward over the 40 sentences (1e-9)."""
    sp = w.sp
    R = w.r - w.beta * np.where(
        sp.mask, sp.logp_tok - sp.logp_ref_tok, 0.0).sum(axis=1)
    coef = sp.p * (R - sp.p @ R) / sp.length
    g_len = X.backward_tokens(w.lm, w.y, np.where(sp.mask, coef[:, None], 0.0))
    assert rel(mean(w, F(agg="grpo", baseline="mean"), k), (k - 1) / k * g_len) < TOL


def test_the_partition_matters_only_for_bnpo(w):
    """(LOSS.1, LOSS.4), k = 4: bnpo with micro-batches of 2 differs from micro-batches of 1 and
    of 4 (by > 1e-3 relative); grpo and dapo are the same whatever the micro-batch size."""
    b = {m: mean(w, F(agg="bnpo", micro=m, baseline="mean"), 4) for m in (1, 2, 4)}
    assert rel(b[2], b[1]) > 1e-3 and rel(b[2], b[4]) > 1e-3
    for agg in ("grpo", "dapo"):
        assert rel(mean(w, F(agg=agg, micro=2, baseline="mean"), 4),
                   mean(w, F(agg=agg, micro=4, baseline="mean"), 4)) < TOL


def test_reward_scaling_biases_the_direction(w):
    """(LOSS.2): dividing by the group's or the batch's std (2 groups of 2) turns the direction
    (cos < 0.999); none keeps it ((k-1)/k grad J)."""
    for scale, groups in (("group", 1), ("batch", 2)):
        assert X.report(mean(w, F(scale=scale, baseline="mean"), 2, groups), w.grad)[1] < 0.999
    assert rel(mean(w, F(scale="none", baseline="mean"), 2), 0.5 * w.grad) < TOL


def test_rloo_kl_inside_or_outside_the_baseline_both_unbiased(w):
    """OpenRLHF PR #515 (LOSS.4): the leave-one-out baseline of R = r - beta KL (TRL's order) and
    of r alone with each sentence's own KL added after are both unbiased (the baseline never
    depends on the sentence it weighs); their variances differ."""
    a, b = E.form_moments(w, F(), 2), E.form_moments(w, F(kl_in_baseline=False), 2)
    assert rel(a.mean, w.grad) < TOL and rel(b.mean, w.grad) < TOL
    assert abs(a.var - b.var) > 1e-3 * a.var


def test_kl_estimators_in_the_reward_and_in_the_loss(w):
    """(LOSS.3, RLX.8-9): in the reward only k1 is unbiased; in the loss k1 adds nothing
    (E = grad E[r]), k2 (mse) = full (the analytic per-state KL, states fixed), k3 and abs are
    biased; all 1e-9 or biased by > 1e-2."""
    for kl in ("k1", "mse", "low_var_kl", "abs", "full"):
        r_ = rel(mean(w, F(kl=kl), 2), w.grad)
        assert (r_ < TOL) if kl == "k1" else (r_ > 1e-2), kl
    assert rel(mean(w, F(kl="k1", kl_place="loss"), 2), X.exact_grad(w.lm, w.sp, w.r, 0.0)) < TOL
    assert rel(mean(w, F(kl="k2", kl_place="loss"), 2),
               mean(w, F(kl="full", kl_place="loss"), 2)) < TOL
    for kl in ("k2", "k3", "abs", "full"):
        assert rel(mean(w, F(kl=kl, kl_place="loss"), 2), w.grad) > 1e-2
    # k3 weighted by the ratio (DeepSeek-V3.2): E_pi[(k3 + k3') grad log pi] = grad E_pi[k3]
    # with the states fixed = grad KL_t: the same as k2 / full in the loss, not grad J
    assert rel(mean(w, F(kl="k3", kl_place="loss", kl_ratio=True), 2),
               mean(w, F(kl="full", kl_place="loss"), 2)) < TOL
    # ... and sample by sample k2 in the loss: rho (k3 + k3') = rho x = rho k2' at rho = 1
    bt = X.all_batches(w.sp.p, 2)
    a = E.form_coef(w, bt, F(kl="k3", kl_place="loss", kl_ratio=True), 2)[0]
    assert np.allclose(a, E.form_coef(w, bt, F(kl="k2", kl_place="loss"), 2)[0], rtol=0,
                       atol=1e-13)


def test_abs_in_the_loss_follows_the_l1_distance_per_state():
    """(LOSS.3) at cap 1 (one state): E[sign(log pi/pi_ref) grad log pi] = grad sum_a |pi(a) -
    pi_ref(a)|, so beta |x| in the loss descends beta times the L1 distance (twice the total
    variation), checked against central differences of it (1e-7 of the norm)."""
    wc = E.world(max_len=1)
    g = mean(wc, F(kl="abs", kl_place="loss"), 2)
    r_only = X.exact_grad(wc.lm, wc.sp, wc.r, 0.0)

    def l1(_):
        s = X.space(wc.lm, wc.ref, wc.y)
        return float(np.abs(np.exp(s.logp) - np.exp(s.logp_ref)).sum())

    fd = central_fd(l1, wc.lm.params)
    assert np.linalg.norm((r_only - g) / wc.beta - fd) < 1e-7 * np.linalg.norm(fd)


def test_the_bias_parts_add_up_and_the_baseline_part_is_minus_grad_over_k(w):
    """bias_parts: the parts sum to E[g] - grad J (1e-12 of the norm); the group mean's part is
    exactly -grad J / k; a form without micro-batches has a zero partition part."""
    form = F(agg="bnpo", micro=1, scale="group", kl="k3", kl_place="loss", baseline="mean")
    parts = E.bias_parts(w, form, 2)
    total = mean(w, form, 2) - w.grad
    assert np.linalg.norm(sum(parts.values()) - total) < 1e-12 * np.linalg.norm(w.grad)
    assert rel(parts["mean baseline"], -w.grad / 2) < TOL
    assert np.linalg.norm(E.bias_parts(w, F(agg="dapo", baseline="mean"), 2)["partition"]) == 0


# ---- 3. mu steps on one batch -------------------------------------------------------------------

def test_the_batch_surrogate_gradient_by_finite_differences(w):
    """(LOSS.5) away from ratio 1 (params moved by 0.01 noise), for k1 in the reward and each KL
    in the loss (full through the logits): batch_surrogate_loss_and_grad against central
    differences of its own loss (1e-6 relative)."""
    lm = w.lm
    theta0 = lm.params.copy()
    ids = np.array([3, 17])
    y, mask = w.y[ids], w.sp.mask[ids]
    N, L = y.shape
    ref_all = w.ref.dist(E.windows(y, 3).reshape(N * L, -1))[0].logp_all.reshape(N, L, -1)
    wt = losses.agg_weights(mask, "grpo", 3)
    adv = np.array([[0.7], [-0.4]]) * mask.sum() * wt
    lm.params += np.random.default_rng(0).normal(0, 0.01, lm.params.size)
    try:
        for form in (F(), F(kl="k3", kl_place="loss"), F(kl="abs", kl_place="loss"),
                     F(kl="full", kl_place="loss"), F(kl="k3", kl_place="loss", kl_ratio=True)):
            args = (ref_all, y, mask, w.sp.logp_tok[ids], adv, wt, w.beta, form, 1e9)
            _, g = E.batch_surrogate_loss_and_grad(lm, *args)
            fd = central_fd(lambda _, a=args: E.batch_surrogate_loss_and_grad(lm, *a)[0],
                            lm.params)
            assert np.linalg.norm(g - fd) < 1e-6 * np.linalg.norm(fd), form.kl
    finally:
        lm.params[:] = theta0


def test_one_step_is_the_exact_gradient_step_and_mu_steps_differ_at_second_order(w):
    """(LOSS.5): mu = 1, no clip: E[theta_1 - theta_0] = lr grad J exactly (rloo, k1 in the
    reward; 1e-9). mu = 2: E[theta_2] - (two exact-gradient steps) is O(lr^2): its norm over
    lr^2 at lr = 2e-3 and 1e-3 agree within 10% (deterministic: both exact)."""
    d = E.mu_step_update(w, F(), 2, (1, 2), 2e-3, 1e9)
    assert rel(d[1], 2e-3 * w.grad) < TOL
    d_half = E.mu_step_update(w, F(), 2, (2,), 1e-3, 1e9)[2]
    gap = [np.linalg.norm(d[2] - E.exact_steps(w, 2, 2e-3)) / 2e-3**2,
           np.linalg.norm(d_half - E.exact_steps(w, 2, 1e-3)) / 1e-3**2]
    assert gap[0] > 0 and 0.9 < gap[0] / gap[1] < 1.1, gap


# ---- 4. DPO and IPO ------------------------------------------------------------------------------

@pytest.mark.parametrize("algo", ["dpo", "ipo"])
def test_pair_loss_gradients_by_finite_differences(algo):
    """(DPO.1, DPO.2) dL/du_w, dL/du_l against central differences, weighted and not; and
    pair_loss_and_grad through a TinyLM's parameters (1e-7 relative)."""
    rng = np.random.default_rng(3)
    u_w, u_l, wt = rng.normal(size=6), rng.normal(size=6), rng.uniform(size=6)
    for weight in (None, wt):
        _, gw, gl = D.pair_loss(u_w, u_l, 0.7, algo, weight)
        fw = central_fd(lambda x, wt_=weight: D.pair_loss(x, u_l, 0.7, algo, wt_)[0], u_w.copy())
        fl = central_fd(lambda x, wt_=weight: D.pair_loss(u_w, x, 0.7, algo, wt_)[0], u_l.copy())
        assert np.allclose(gw, fw, atol=1e-9) and np.allclose(gl, fl, atol=1e-9)
    ref, lm = X.tiny_lm(np.random.default_rng(0)), X.tiny_lm(np.random.default_rng(1))
    y = X.sentences()
    yw, yl = y[[1, 5, 20, 39]], y[[7, 2, 33, 0]]
    rw, rl_ = D.sentence_logp(ref, yw), D.sentence_logp(ref, yl)
    _, g = D.pair_loss_and_grad(lm, rw, rl_, yw, yl, 0.5, algo)
    fd = central_fd(lambda _: D.pair_loss_and_grad(lm, rw, rl_, yw, yl, 0.5, algo)[0], lm.params)
    assert np.linalg.norm(g - fd) < 1e-7 * np.linalg.norm(fd)


def test_dpo_population_loss_is_stationary_exactly_at_pi_star(w):
    """(DPO.3): with infinite Bradley-Terry data P[a, b] = sigmoid(r_a - r_b) on pairs from
    pi_ref, dL/dlog pi(y) = 0 at pi* = pi_ref e^{r/beta} / Z for every sentence (1e-12), and
    not at pi_ref (> 1e-3): h_ab = beta (u_a - u_b) = r_a - r_b makes each pair's two terms
    cancel."""
    P = E.bt_probs(w.r)
    logp_star, _ = X.optimum(w.sp.logp_ref, w.r, w.beta)
    _, g = E.population_pair_loss(logp_star, w.sp.logp_ref, P, w.beta, "dpo")
    assert np.abs(g).max() < 1e-12
    _, g0 = E.population_pair_loss(w.sp.logp_ref, w.sp.logp_ref, P, w.beta, "dpo")
    assert np.abs(g0).max() > 1e-3


def test_ipo_population_optimum_in_closed_form_and_bounded(w):
    """(DPO.4): log pi_IPO = log pi_ref + (1/tau) sum_b pi_ref(b) P[y, b] + c is stationary
    (1e-12) and, with P in [0, 1], its log-ratio spread is at most 1/tau even for deterministic
    preferences, where DPO's optimum for the labeller temperature -> 0 runs to the best level."""
    for tau_bt in (1.0, 0.01):
        P = E.bt_probs(w.r, tau_bt)
        li = E.ipo_optimum(w.sp.logp_ref, P, w.beta)
        _, g = E.population_pair_loss(li, w.sp.logp_ref, P, w.beta, "ipo")
        assert np.abs(g).max() < 1e-12
        u = li - w.sp.logp_ref
        assert u.max() - u.min() <= 1 / w.beta + 1e-12
    ld, _ = X.optimum(w.sp.logp_ref, w.r / 0.01, w.beta)  # DPO, P = sigmoid((r_a - r_b)/0.01)
    top = w.sp.logp_ref[np.argmax(w.r)]
    assert X.kl(ld, w.sp.logp_ref) > 0.99 * -top  # -> -log pi_ref(argmax r)
    assert X.kl(li, w.sp.logp_ref) < 0.5 * -top


def test_the_optimiser_reaches_pi_star_on_the_dpo_population_loss():
    """(DPO.3): Adam (lr 0.03) on the exact population DPO loss through the TinyLM's parameters
    from pi_ref reaches KL(pi || pi*) < 1e-3 in 1000 steps (from 3.12; deterministic)."""
    ref = X.tiny_lm(np.random.default_rng(0), hidden=(32,), out_scale=4.0)
    y = X.sentences()
    r = np.random.default_rng(2).normal(size=len(y))
    logp_ref = X.space(ref, ref, y).logp
    logp_star, _ = X.optimum(logp_ref, r, 0.3)
    lm = E.population_ascent(ref, y, E.bt_probs(r), 0.3, "dpo", 1000)
    assert X.kl(X.space(lm, ref, y).logp, logp_star) < 1e-3


def test_sentence_logp_is_the_sum_over_real_tokens():
    lm = X.tiny_lm(np.random.default_rng(0))
    y = X.sentences()
    assert np.allclose(D.sentence_logp(lm, y),
                       np.where(token_mask(y), lm.token_logp(y), 0.0).sum(axis=1))
    assert abs(np.exp(D.sentence_logp(lm, y)).sum() - 1) < 1e-12


def test_forms_are_hashable_and_replaceable():
    f = F(agg="dapo")
    assert replace(f, agg="grpo") != f and hash(f) == hash(F(agg="dapo"))


# ---- 5. the trainer: python -m pgnumpy.rlhf with the loss options ------------------------------

def tiny_trainer(seed=3):
    from pgnumpy.rlhf.grammar import EOS
    from pgnumpy.rlhf.lm import TinyLM, WindowNet
    from pgnumpy.rlhf.reward_model import RewardModel

    pi, ref = (TinyLM(2, 2, (4,), rng=np.random.default_rng(s)) for s in (seed, seed + 1))
    for lm, shift in ((pi, 2.0), (ref, 1.0)):
        lm.params[:] += np.random.default_rng(seed + 7).normal(0, 0.5, lm.params.shape)
        lm.net.b[-1][EOS] += shift
    rng = np.random.default_rng(4)
    vf, rm = WindowNet(2, 2, (4,), 1, rng=rng), RewardModel(2, 2, (4,), rng=rng)
    rm.params[:] += rng.normal(0, 0.5, rm.params.shape)
    return pi, ref, vf, rm


@pytest.mark.parametrize("opts", [
    dict(estimator="grpo", loss_agg="dapo", scale_rewards="batch", kl_estimator="abs"),
    dict(estimator="rloo", loss_agg="bnpo", micro_batch=2, kl_penalty="loss", kl_estimator="k2"),
    dict(estimator="dr_grpo", loss_agg="dr_grpo", kl_penalty="loss", kl_estimator="full"),
    dict(estimator="grpo", loss_agg="seq-mean-token-mean", kl_penalty="k3_loss"),
])
def test_collect_hands_update_the_option_weights(opts):
    """(LOSS.1-3 in the trainer): collect's per-token advantages and KL-loss weights against a
    computation with plain loops over the sentences: R by the placement, the group baseline and
    std by hand (ddof 1), the weight w_t of the option by its definition, c_t = n w_t."""
    from pgnumpy.distributions import log_softmax
    from pgnumpy.rlhf.grammar import BOS, EOS

    pi, ref, vf, rm = tiny_trainer()
    cfg = finetune.RLConfig(batch=8, group=4, max_len=5, beta=0.3, **opts)
    b = finetune.collect(pi, ref, vf, rm, cfg.beta, cfg, np.random.default_rng(5))
    kind = cfg.kl_estimator or "k3"
    in_loss = cfg.kl_penalty != "reward"
    R, lens, ks = [], [], []
    for row in b.y:
        toks = [int(t) for t in row]
        T = toks.index(EOS) + 1 if EOS in toks else len(toks)
        padded = [BOS, BOS] + toks
        win = [padded[t:t + 2] for t in range(T)]
        lp = [log_softmax(pi(np.array([w])))[0] for w in win]
        lq = [log_softmax(ref(np.array([w])))[0] for w in win]
        x = [a[toks[t]] - c[toks[t]] for t, (a, c) in enumerate(zip(lp, lq))]
        k = {"abs": [abs(v) for v in x], "k2": [v * v / 2 for v in x],
             "k3": [np.exp(-v) - 1 + v for v in x], "k1": x,
             "full": [float(np.exp(a) @ (a - c)) for a, c in zip(lp, lq)]}[kind]
        score = float(rm(np.array([padded[T:T + 2]]))[0, 0])
        R.append(score if in_loss else score - cfg.beta * sum(k))
        lens.append(T)
        ks.append(k)
    R, n = np.array(R), sum(lens)
    A = np.zeros(8)
    for g in range(2):
        grp = R[4 * g:4 * g + 4]
        for i in range(4):
            base = (grp.sum() - grp[i]) / 3 if cfg.estimator == "rloo" else grp.mean()
            A[4 * g + i] = grp[i] - base
        if (cfg.scale_rewards or ("group" if cfg.estimator == "grpo" else "none")) == "group":
            A[4 * g:4 * g + 4] /= np.sqrt(((grp - grp.mean()) ** 2).sum() / 3) + 1e-4
    if cfg.scale_rewards == "batch":
        A /= np.sqrt(((R - R.mean()) ** 2).sum() / 7) + 1e-4
    want_adv, want_kw = [], []
    for i, T in enumerate(lens):
        if cfg.loss_agg == "dapo":
            wt = 1 / n
        elif cfg.loss_agg == "bnpo":
            j = i // 2
            wt = 1 / sum(lens[2 * j:2 * j + 2]) / 4
        elif cfg.loss_agg == "dr_grpo":
            wt = 1 / (8 * 5)
        else:
            wt = 1 / (8 * T)
        want_adv += [A[i] * n * wt] * T
        want_kw += [cfg.beta * n * wt] * T
    assert b.adv == pytest.approx(want_adv, rel=1e-10, abs=1e-12)
    if in_loss:
        assert b.kl_weight == pytest.approx(want_kw, rel=1e-12) and b.kl_kind == kind
    else:
        assert b.kl_weight is None


@pytest.mark.parametrize("kind", ["k1", "k2", "k3", "abs", "full"])
def test_update_descends_the_option_loss(kind):
    """(LOSS.3, LOSS.5 in the trainer): the gradient update() hands Adam (one pass, one
    minibatch, no clip reached) is the gradient of mean_t(-ratio_t A_t c_t) + (1/n) sum_t
    beta c_t k_t(theta), by central differences of that value written out here (1e-6)."""
    from pgnumpy.rlhf.lm import windows

    pi, ref, vf, rm = tiny_trainer()
    cfg = finetune.RLConfig(batch=8, group=4, max_len=5, beta=0.3, estimator="rloo",
                            kl_penalty="loss", kl_estimator=kind, update_epochs=1,
                            minibatches=1, max_grad_norm=1e9)
    b = finetune.collect(pi, ref, vf, rm, cfg.beta, cfg, np.random.default_rng(5))
    pi.params += np.random.default_rng(0).normal(0, 1e-3, pi.params.shape)  # ratio != 1

    class Record:
        def step(self, g):
            self.g = g.copy()

    rec = Record()
    finetune.update(pi, vf, rec, None, b, cfg, np.random.default_rng(0))
    ctx_all = windows(b.y, 2)[b.mask]
    q = ref.dist(ctx_all)[0]

    def loss(_):
        p = pi.dist(ctx_all)[0]
        logp = p.log_prob(b.act)
        x = logp - q.log_prob(b.act)
        k = {"k1": x, "k2": x**2 / 2, "k3": np.exp(-x) - 1 + x, "abs": np.abs(x),
             "full": p.kl(q)}[kind]
        return float(np.mean(-np.exp(logp - b.logp_old) * b.adv) + b.kl_weight @ k / len(k))

    fd = central_fd(loss, pi.params)
    assert np.linalg.norm(rec.g - fd) < 1e-6 * np.linalg.norm(fd)


def test_defaults_keep_the_trainers_own_forms():
    """The new fields' defaults select no option (collect takes today's path); setting the
    estimator's own options explicitly gives the same advantages (1e-12)."""
    assert not finetune.uses_loss_options(finetune.RLConfig())
    pi, ref, vf, rm = tiny_trainer()
    for est, opts in (("grpo", dict(loss_agg="grpo", scale_rewards="group")),
                      ("rloo", dict(loss_agg="seq-mean-token-sum", scale_rewards="none")),
                      ("dr_grpo", dict(kl_estimator="k1"))):
        a = finetune.collect(pi, ref, vf, rm, 0.3, finetune.RLConfig(
            batch=8, group=4, max_len=5, estimator=est), np.random.default_rng(5))
        b = finetune.collect(pi, ref, vf, rm, 0.3, finetune.RLConfig(
            batch=8, group=4, max_len=5, estimator=est, **opts), np.random.default_rng(5))
        assert np.allclose(a.adv, b.adv, rtol=0, atol=1e-12), est


@pytest.mark.parametrize("argv, message", [
    (["--estimator", "grpo", "--micro-batch", "3"], "rl.micro_batch must be 0"),
    (["--loss-agg", "dapo"], "go with a group estimator"),
    (["--estimator", "grpo", "--kl-penalty", "k3_loss", "--kl-estimator", "abs"],
     "fixes the estimator to k3"),
    (["--loss-agg", "sum"], "invalid choice: 'sum'"),
    (["--algo", "ppo"], "invalid choice: 'ppo'"),
    (["--algo", "ipo", "--beta", "0"], "needs rl.beta > 0"),
])
def test_cli_loss_option_errors_are_one_line_exit_2(argv, message, capsys):
    from pgnumpy.rlhf.__main__ import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("algo", ["dpo", "ipo"])
def test_cli_runs_dpo_and_ipo_as_stage_3(tmp_path, capsys, algo):
    """python -m pgnumpy.rlhf --algo dpo|ipo on a tiny config: stage 3 trains on the labeller's
    pairs, writes rl.csv with the pair loss and rl.npz, and reports the gold reward."""
    import csv
    import json

    from pgnumpy.rlhf.__main__ import main
    from pgnumpy.rlhf.lm import LMConfig
    from pgnumpy.rlhf.pipeline import RLHFConfig
    from pgnumpy.rlhf.reward_model import RMConfig

    cfg = RLHFConfig(seed=0, lm=LMConfig(context=3, d_embed=8, hidden=(16,), corpus=300,
                                         heldout=100, steps=30, batch=64, eval_every=10),
                     rm=RMConfig(pairs=200, heldout=50, steps=10, batch=32, norm_samples=100,
                                 eval_every=5),
                     rl=finetune.RLConfig(iterations=3, batch=8, lr=1e-2), sweep_betas=(0.0,))
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(cfg.to_dict()))
    out = tmp_path / "run"
    assert main(["--config", str(path), "--out", str(out), "--quiet", "--no-figures",
                 "--algo", algo, "--beta", "0.2"]) == 0
    assert "RL gold" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "rl.csv")))
    assert len(rows) == 3 and all(np.isfinite(float(r["pair_loss"])) for r in rows)
    assert json.loads((out / "config.json").read_text())["rl"]["algo"] == algo
    assert (out / "rl.npz").exists() and not (out / "rl_beta_0.csv").exists()  # beta 0 skipped


def test_the_table_names_every_option_of_the_libraries():
    """python -m pgnumpy.plots.rlhf_losses has a row under each option name a reader sets in TRL
    or verl (so they find their own config), and each row's form uses that option."""
    from pgnumpy.plots.rlhf_losses import ROWS

    names = " | ".join(name for name, _, _, _ in ROWS)
    for opt in losses.LOSS_AGGS + losses.KL_ESTIMATORS:
        assert opt in names, opt
    for opt in losses.SCALE_REWARDS:
        assert f"scale_rewards={opt}" in names
    for name, _, form, _ in ROWS:
        if name.split(" ")[0] in losses.LOSS_AGGS:
            assert form.agg == name.split(" ")[0], name
