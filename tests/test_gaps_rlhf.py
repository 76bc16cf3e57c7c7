"""Issue 23, RLHF: the group estimators' values on hand-built groups, what collect and update
hand on for every estimator and KL penalty, the combinations RLConfig refuses, and the adaptive
controller's beta iteration by iteration. Each test names the planted bug it was seen to catch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pgnumpy.errors import UserError
from pgnumpy.optim import Adam
from pgnumpy.rlhf.finetune import (
    RLConfig,
    collect,
    group_advantages,
    update,
)
from pgnumpy.rlhf.grammar import BOS, EOS
from pgnumpy.rlhf.lm import TinyLM, WindowNet
from pgnumpy.rlhf.reward_model import RewardModel

GROUP_FORMS = ("rloo", "grpo", "grpo_nostd", "dr_grpo")


def group_adv_ref(R: list[float], k: int, form: str) -> list[float]:
    """(RLX.5, RLX.6) written out one sequence at a time: rows [g k, (g + 1) k) form group g."""
    out = []
    for g in range(len(R) // k):
        grp = R[g * k:(g + 1) * k]
        m = sum(grp) / k
        s = math.sqrt(sum((x - m) ** 2 for x in grp) / (k - 1))  # ddof = 1 (TRL's)
        for i, x in enumerate(grp):
            others = [y for j, y in enumerate(grp) if j != i]
            out.append({"rloo": x - sum(others) / (k - 1), "grpo": (x - m) / (s + 1e-4),
                        "grpo_nostd": x - m, "dr_grpo": x - m}[form])
    return out


# ---- class 1: a value checked only through an expectation ----------------------------------

HAND = {  # (R, k) -> {form: A}, by hand
    ((1.0, 3.0), 2): {"rloo": [-2.0, 2.0], "grpo_nostd": [-1.0, 1.0], "dr_grpo": [-1.0, 1.0],
                      "grpo": [-1 / (math.sqrt(2) + 1e-4), 1 / (math.sqrt(2) + 1e-4)]},
    ((1.0, 2.0, 6.0), 3): {"rloo": [-3.0, -1.5, 4.5], "grpo_nostd": [-2.0, -1.0, 3.0],
                           "dr_grpo": [-2.0, -1.0, 3.0],
                           "grpo": [d / (math.sqrt(7) + 1e-4) for d in (-2.0, -1.0, 3.0)]},
    ((1.0, 1.0, 4.0), 3): {"rloo": [-1.5, -1.5, 3.0], "grpo_nostd": [-1.0, -1.0, 2.0],
                           "dr_grpo": [-1.0, -1.0, 2.0],
                           "grpo": [d / (math.sqrt(3) + 1e-4) for d in (-1.0, -1.0, 2.0)]},
    ((5.0, 5.0, 5.0, 5.0), 4): {f: [0.0] * 4 for f in GROUP_FORMS},  # zero std: 0, not NaN
}


@pytest.mark.parametrize("form", GROUP_FORMS)
@pytest.mark.parametrize("case", list(HAND))
def test_group_advantages_by_hand(form, case):
    """(RLX.5, RLX.6) on groups worked by hand: k = 2, ties, a zero std (GRPO's 1e-4 keeps it
    0). Planted: rloo's leave-one-out mean divided by k (caught); grpo's std with ddof = 0
    (caught)."""
    (R, k), want = case, HAND[case][form]
    got = group_advantages(np.array(R), k, form)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got, group_adv_ref(list(R), k, form), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("form", GROUP_FORMS)
@pytest.mark.parametrize("k", [2, 3, 4])
def test_group_advantages_group_the_rows_in_blocks(form, k):
    """Several groups of random rewards against the written-out formula: a group is k
    consecutive rows (the batch is sampled group by group). Planted: groups taken strided,
    R.reshape(k, -1).T (caught)."""
    R = np.random.default_rng(k).normal(size=4 * k) * 3
    np.testing.assert_allclose(group_advantages(R, k, form), group_adv_ref(list(R), k, form),
                               rtol=1e-12, atol=1e-13)


def test_kl_token_estimates_by_hand_and_their_gradients():
    """(RLX.7) at values worked by hand: log pi = log 0.5, log pi_ref = log 0.25 (rho = 1/2)
    gives k1 = log 2, k2 = (log 2)^2 / 2, k3 = (1/2 - 1) + log 2; and the gradients d k / d logp
    against central differences of kl_tokens. test_rlhf_exact checks E[k1] = E[k3] = KL only, which
    any k3 + c (rho - 1) passes (E[rho] = 1). Planted: k3 = 2 (rho - 1) - log rho (caught: the
    expectation test passes it); dk3/dlogp = 1 - 1/rho (caught)."""
    from pgnumpy.rlhf.finetune import kl_tokens, kl_tokens_grad

    lp, lq = np.log([0.5, 0.9, 0.1]), np.log([0.25, 0.3, 0.6])
    ln2 = math.log(2)
    assert kl_tokens(lp[:1], lq[:1], "k1")[0] == pytest.approx(ln2, rel=1e-15)
    assert kl_tokens(lp[:1], lq[:1], "k2")[0] == pytest.approx(ln2**2 / 2, rel=1e-15)
    assert kl_tokens(lp[:1], lq[:1], "k3")[0] == pytest.approx(-0.5 + ln2, rel=1e-14)
    rho = np.exp(lq - lp)
    np.testing.assert_allclose(kl_tokens(lp, lq, "k3"), rho - 1 - np.log(rho), rtol=1e-13)
    h = 1e-6
    for kind in ("k1", "k2", "k3"):
        fd = (kl_tokens(lp + h, lq, kind) - kl_tokens(lp - h, lq, kind)) / (2 * h)
        np.testing.assert_allclose(kl_tokens_grad(lp, lq, kind), fd, rtol=1e-8, atol=1e-10)


# ---- class 2: a path no test drives: collect and update with every estimator and penalty ----

def tiny_world(seed=3):
    """pi, pi_ref (different, <eos> likely), a value net and a reward model whose score varies."""
    pi, ref = (TinyLM(2, 2, (4,), rng=np.random.default_rng(s)) for s in (seed, seed + 1))
    for lm, shift in ((pi, 2.0), (ref, 1.0)):
        lm.params[:] += np.random.default_rng(seed + 7).normal(0, 0.5, lm.params.shape)
        lm.net.b[-1][EOS] += shift
    rng = np.random.default_rng(seed + 1)
    vf, rm = WindowNet(2, 2, (4,), 1, rng=rng), RewardModel(2, 2, (4,), rng=rng)
    rm.params[:] += rng.normal(0, 0.5, rm.params.shape)
    return pi, ref, vf, rm


def sentences(b):
    """Per sentence, by plain loops: its length T, windows, log pi and log pi_ref of its tokens
    and the reward model's score of the window ending at its last token."""
    from pgnumpy.distributions import log_softmax

    pi, ref, _, rm = WORLD
    out = []
    for row in b.y:
        toks = [int(t) for t in row]
        T = toks.index(EOS) + 1 if EOS in toks else len(toks)
        padded = [BOS, BOS] + toks
        win = [padded[t:t + 2] for t in range(T)]
        lp = [log_softmax(pi(np.array([w])))[0, toks[t]] for t, w in enumerate(win)]
        lq = [log_softmax(ref(np.array([w])))[0, toks[t]] for t, w in enumerate(win)]
        out.append((T, lp, lq, float(rm(np.array([padded[T:T + 2]]))[0, 0])))
    return out


WORLD = tiny_world()


@pytest.mark.parametrize("kl_penalty", ["reward", "k3_loss"])
@pytest.mark.parametrize("form", GROUP_FORMS)
def test_collect_hands_on_the_group_forms_R_and_token_weights(form, kl_penalty):
    """A group estimator's batch, against plain loops: R_i = score - beta sum_t (log pi - log
    pi_ref) (kl_penalty "reward", RLHF.11) or the score alone ("k3_loss"); every token of
    sentence i gets A_i c_t with c_t = n / B (divided by |y_i| for grpo / grpo_nostd, RLX.6);
    with k3_loss the loss term's weights beta c_t and log pi_ref of each token (RLX.9).
    Planted: the KL term's sign flipped in R (caught by "reward"); the k3 weight without beta
    (caught); the length normalisation dropped from grpo (caught)."""
    pi, ref, vf, rm = WORLD
    cfg = RLConfig(batch=12, max_len=5, beta=0.3, estimator=form, group=3, kl_penalty=kl_penalty)
    b = collect(pi, ref, vf, rm, cfg.beta, cfg, np.random.default_rng(5))
    per = sentences(b)
    lengths = [T for T, *_ in per]
    assert len(set(lengths)) > 1  # sentences of several lengths: the length norm is seen
    ended = (b.y == EOS).any(axis=1)
    assert ended.any() and not ended.all()  # ended at <eos> and cut at the cap, both weighted
    R = [s - (0.3 * sum(a - c for a, c in zip(lp, lq)) if kl_penalty == "reward" else 0.0)
         for _, lp, lq, s in per]
    A = group_adv_ref(R, 3, form)
    assert len({round(x, 9) for x in A}) > 3 and max(map(abs, A)) > 1e-3  # non-trivial
    n = sum(lengths)
    c = [n / 12 / (T if form in ("grpo", "grpo_nostd") else 1) for T in lengths]
    want = [a * ci for a, ci, T in zip(A, c, lengths) for _ in range(T)]
    np.testing.assert_allclose(b.adv, want, rtol=1e-10, atol=1e-12)
    assert b.ret is None
    if kl_penalty == "k3_loss":
        np.testing.assert_allclose(b.kl_weight, [0.3 * ci for ci, T in zip(c, lengths)
                                                 for _ in range(T)], rtol=1e-12)
        np.testing.assert_allclose(b.logp_ref_flat, [x for *_, lq, _ in per for x in lq],
                                   rtol=1e-12, atol=1e-12)
    else:
        assert b.kl_weight is None and b.logp_ref_flat is None


@pytest.mark.parametrize("kl_penalty", ["reward", "k3_loss"])
@pytest.mark.parametrize("form", GROUP_FORMS)
def test_update_steps_along_the_gradient_of_the_written_out_loss(form, kl_penalty):
    """The first Adam step of update() gets the gradient of the loss written out here, in float64
    by central differences along random directions: PPO-clip's -(1/n) sum min(r A, clip(r) A)
    plus, with k3_loss, (1/n) sum beta c_t k3_t with k3 = rho - 1 - log rho, rho = pi_ref / pi
    (RLX.9). One minibatch holding every token; no gradient clip.
    Planted: the k3 term's gradient with the wrong sign (caught); k1's gradient instead of k3's
    (caught); the k3 term not divided by the minibatch size (caught)."""
    pi0, ref, vf, rm = WORLD
    cfg = RLConfig(batch=12, max_len=5, beta=0.3, estimator=form, group=3, kl_penalty=kl_penalty,
                   update_epochs=1, minibatches=1, max_grad_norm=1e6)
    b = collect(pi0, ref, vf, rm, cfg.beta, cfg, np.random.default_rng(5))
    pi = pi0.clone()
    pi.params[:] += np.random.default_rng(9).normal(0, 0.05, pi.params.shape)  # ratio != 1
    theta = pi.params.copy()
    grads = []

    class Recorded(Adam):
        def step(self, grad):
            grads.append(grad.copy())
            super().step(grad)

    opt = Recorded(pi.params, lr=1e-3)
    update(pi, vf, opt, Adam(vf.params, lr=1e-3), b, cfg, np.random.default_rng(0))
    assert len(grads) == 1

    def loss(p):
        pi.params[:] = p
        logp = pi.dist(b.ctx)[0].log_prob(b.act)
        r = np.exp(logp - b.logp_old)
        L = -np.mean(np.minimum(r * b.adv, np.clip(r, 0.8, 1.2) * b.adv))
        if kl_penalty == "k3_loss":
            rho = np.exp(b.logp_ref_flat - logp)
            L += np.mean(b.kl_weight * (rho - 1 - np.log(rho)))
        return L

    h = 1e-6
    for u in np.random.default_rng(1).normal(size=(3, len(theta))):
        fd = (loss(theta + h * u) - loss(theta - h * u)) / (2 * h)
        assert grads[0] @ u == pytest.approx(fd, rel=1e-6, abs=1e-9)
    pi.params[:] = theta


def test_preference_pairs_label_by_the_raters_law():
    """(RLHF.7) on 4,000 pairs from a random LM, no test drove preference_pairs directly (the
    temperature was no test's argument): p is the rater's probability of the label it gave,
    sigmoid((gold(y_w) - gold(y_l)) / tau), computed here from the returned sentences; and the
    number of pairs whose winner has the higher gold is within 4 standard errors of its
    expectation sum_i sigmoid(|gap_i| / tau) (a sum of independent Bernoullis: variance
    sum p (1 - p)). Planted: tau ignored (caught); the labels drawn the wrong way round,
    rng.random(n) > p_a (caught)."""
    from pgnumpy.rlhf.grammar import Grammar, gold_reward
    from pgnumpy.rlhf.reward_model import preference_pairs

    g, lm = Grammar(), WORLD[0]
    tau = 0.7
    d = preference_pairs(lm, g, 4000, tau, np.random.default_rng(3), 6)
    gw, gl = gold_reward(d["y_w"], g), gold_reward(d["y_l"], g)
    np.testing.assert_allclose(d["p"], 1 / (1 + np.exp(-(gw - gl) / tau)), rtol=1e-12)
    gap = np.abs(gw - gl)
    live = gap > 0
    assert live.sum() > 1000 and len(np.unique(gap[live])) > 3
    q = 1 / (1 + np.exp(-gap[live] / tau))
    higher_won = (gw > gl)[live].sum()
    se = np.sqrt((q * (1 - q)).sum())
    assert abs(higher_won - q.sum()) < 4 * se, (higher_won, q.sum(), se)


def first_update_grads(b, cfg):
    """The gradients update() hands the two Adams at its first step, from fresh copies of
    WORLD's networks (the policy moved off pi_ref so that the ratio is not 1)."""
    pi, vf = WORLD[0].clone(), WORLD[2].clone()
    pi.params[:] += np.random.default_rng(9).normal(0, 0.05, pi.params.shape)
    grads = {}

    class Recorded(Adam):
        def step(self, grad):
            grads[self.params is pi.params] = grad.copy()
            super().step(grad)

    update(pi, vf, Recorded(pi.params, lr=1e-3), Recorded(vf.params, lr=1e-3), b, cfg,
           np.random.default_rng(0))
    return pi, vf, grads[True], grads[False]


def test_update_with_ppo_steps_both_networks_along_their_written_out_losses():
    """estimator "ppo": no test drove finetune.update itself. Its first step (one minibatch
    holding every token) gives the policy's Adam the gradient of PPO-clip's
    -(1/n) sum min(r A, clip(r) A) with the batch's whitened GAE advantages, and the value net's
    the gradient of (1/2n) sum (V(s_t) - ret_t)^2 (VAL.1), both by central differences in
    float64 along random directions; with max_grad_norm 1e-3, each of the two gradients is
    scaled to norm 1e-3 on its own (CLIP.1). Planted: the value regression on adv instead of
    the value targets (caught; the rest of the suite passed it); the policy gradient clipped
    to a length other than max_grad_norm (caught)."""
    pi0, ref, vf0, rm = WORLD
    kw = dict(batch=12, max_len=5, beta=0.3, update_epochs=1, minibatches=1)
    b = collect(pi0, ref, vf0, rm, 0.3, RLConfig(**kw), np.random.default_rng(5))
    pi, vf, g_pi, g_v = first_update_grads(b, RLConfig(**kw, max_grad_norm=1e6))
    pi_start = pi0.params + np.random.default_rng(9).normal(0, 0.05, pi.params.shape)

    def pi_loss(p):
        pi.params[:] = p
        r = np.exp(pi.dist(b.ctx)[0].log_prob(b.act) - b.logp_old)
        return -np.mean(np.minimum(r * b.adv, np.clip(r, 0.8, 1.2) * b.adv))

    def v_loss(p):
        vf.params[:] = p
        return 0.5 * np.mean((vf(b.ctx)[:, 0] - b.ret) ** 2)

    h = 1e-6
    for g, loss, x in ((g_pi, pi_loss, pi_start), (g_v, v_loss, vf0.params.copy())):
        for u in np.random.default_rng(1).normal(size=(3, len(x))):
            fd = (loss(x + h * u) - loss(x - h * u)) / (2 * h)
            assert g @ u == pytest.approx(fd, rel=1e-6, abs=1e-9)
    _, _, c_pi, c_v = first_update_grads(b, RLConfig(**kw, max_grad_norm=1e-3))
    assert np.linalg.norm(g_pi) > 1e-2 and np.linalg.norm(g_v) > 1e-2  # the clip acts
    np.testing.assert_allclose(c_pi, g_pi * 1e-3 / np.linalg.norm(g_pi), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(c_v, g_v * 1e-3 / np.linalg.norm(g_v), rtol=1e-9, atol=1e-15)


# ---- the combinations RLConfig refuses ----------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    (dict(estimator="ppo", kl_penalty="k3_loss"),
     "rl.kl_penalty 'k3_loss' goes with a group estimator"),
    (dict(estimator="ppo", group=0), "rl.group must be an integer >= 2, got 0"),
    (dict(estimator="rloo", group=1), "rl.group must be an integer >= 2, got 1"),
    (dict(estimator="grpo", batch=10, group=4), "rl.batch (10) must be a multiple of rl.group"),
    (dict(estimator="reinforce"), "rl.estimator must be one of ppo, rloo"),
    (dict(estimator="rloo", kl_penalty="k2"), "rl.kl_penalty must be one of reward, k3_loss"),
    (dict(adaptive=True, beta=0.0), "rl.adaptive starts from rl.beta and multiplies it"),
])
def test_rlconfig_refuses_combinations_collect_would_ignore(kw, message):
    """Before, RLConfig took these and training ignored them (ppo with k3_loss: no k3 term;
    group with ppo; the controller from beta 0, which stays 0) or broke later (a KeyError, a
    reshape error). Planted: the check removed from RLConfig.__post_init__ (caught)."""
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RLConfig(**kw)


@pytest.mark.parametrize("argv, message", [
    (["--estimator", "ppo", "--group", "0"], "--group is the group estimators' group size"),
    (["--group", "8"], "--group is the group estimators' group size; ppo has none"),
    (["--kl-target", "3"], "--kl-target sets the adaptive controller's target"),
    (["--estimator", "ppo", "--kl-penalty", "k3_loss"], "goes with a group estimator"),
    (["--adaptive", "--beta", "0"], "beta 0 would stay 0"),
])
def test_cli_refuses_flags_the_run_would_ignore(argv, message, capsys):
    """One line, exit 2: a flag that the final config would ignore. Planted: the CLI's --group
    check removed (--group 8 then ran ppo; caught)."""
    from pgnumpy.rlhf.__main__ import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


# ---- class 4: state that lives in a schedule: the adaptive controller's beta ------------------

def test_adaptive_beta_follows_each_iterations_kl(monkeypatch):
    """rl_finetune with the adaptive controller (RLHF.14): iteration 0 runs at cfg.beta, every
    next one at beta (1 + clip(KL / target - 1, +-0.2) B / horizon) of the previous beta and
    the previous batch's sampled KL (sum over real tokens of log pi - log pi_ref, averaged over
    sentences: computed here from the batch), and collect gets that beta and the row logs it.
    beta must move every iteration, or the check says nothing.
    Planted: beta updated from cfg.beta each iteration instead of the running beta (caught);
    the controller fed kl_tokenwise instead of the sampled KL (caught)."""
    from pgnumpy.rlhf import finetune
    from pgnumpy.rlhf.grammar import Grammar

    pi, _, _, rm = WORLD
    cfg = RLConfig(iterations=5, batch=8, max_len=8, beta=0.2, adaptive=True, kl_target=0.05,
                   kl_horizon=20, update_epochs=1, minibatches=2, lr=5e-2)
    seen, real = [], finetune.collect

    def spy(policy, ref, vf, rm_, beta, cfg_, rng):
        b = real(policy, ref, vf, rm_, beta, cfg_, rng)
        seen.append((beta, b))
        return b

    monkeypatch.setattr(finetune, "collect", spy)
    _, rows = finetune.rl_finetune(cfg, pi, rm, Grammar(), np.random.default_rng(0))
    beta, inside = 0.2, 0
    assert len(rows) == len(seen) == 5
    for row, (got, b) in zip(rows, seen):
        assert row["beta"] == got == pytest.approx(beta, rel=1e-14)
        kl = np.where(b.mask, b.logp - b.logp_ref, 0.0).sum(axis=1).mean()
        inside += abs(kl / 0.05 - 1) < 0.2  # the KL itself, not only the clip, sets beta
        beta = beta * (1 + float(np.clip(kl / 0.05 - 1, -0.2, 0.2)) * 8 / 20)
    assert inside >= 1
    assert len({r["beta"] for r in rows}) == len(rows)  # moved every iteration


def test_pretraining_lr_decays_linearly_step_by_step(monkeypatch):
    """The language model's pretraining schedule (pgnumpy/rlhf/lm.py::pretrain): step s of S
    (1-based) takes lr0 (1 - (s - 1) / S), from lr0 at the first step to lr0 / S at the last; no
    test looked at it. Planted: lr0 (1 - s / S) (the last step at lr 0; caught); the decay
    dropped (caught)."""
    from pgnumpy.rlhf import lm as lm_mod
    from pgnumpy.rlhf.grammar import Grammar

    lrs = []

    class Recorded(Adam):
        def step(self, grad):
            lrs.append(self.lr)
            super().step(grad)

    monkeypatch.setattr(lm_mod, "Adam", Recorded)
    cfg = lm_mod.LMConfig(context=2, d_embed=4, hidden=(8,), corpus=50, heldout=20, steps=7,
                          batch=16, lr=0.01, eval_every=7)
    lm_mod.pretrain(cfg, Grammar(), np.random.default_rng(0))
    assert lrs == pytest.approx([0.01 * (1 - (s - 1) / 7) for s in range(1, 8)], rel=1e-15)


def test_a_config_file_with_an_ignored_combination_is_one_line(tmp_path, capsys):
    """--config with an rl section RLConfig refuses (ppo with group 0, written by hand):
    RLHFConfig.from_dict builds RLConfig, whose check gives the one line, exit 2, before any
    stage runs. Planted: the check removed from RLConfig.__post_init__ (the file was then
    accepted; caught)."""
    import json

    from pgnumpy.rlhf.__main__ import main
    from pgnumpy.rlhf.pipeline import RLHFConfig

    d = RLHFConfig().to_dict()
    d["rl"].update(estimator="ppo", group=0)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(d))
    assert main(["--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {path}: rl.group must be an integer >= 2, got 0\n"  # names the file
    assert not (tmp_path / "run").exists()
