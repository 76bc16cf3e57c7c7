"""RLHF at toy scale (pgnumpy/rlhf): the grammar's exact quantities, every new gradient against
central finite differences in float64 (each with a planted wrong gradient the same check
rejects), the reward shaping and what the PPO step hands to the maths pieces, and a short run.
"""

import numpy as np
import pytest

from pgnumpy.rlhf.finetune import (
    RLConfig,
    adaptive_beta,
    advantages,
    collect,
    kl_per_sentence,
    shaped_rewards,
)
from pgnumpy.rlhf.grammar import BOS, EOS, TOKEN, Grammar, gold_reward, to_words
from pgnumpy.rlhf.lm import TinyLM, WindowNet, token_mask, windows
from pgnumpy.rlhf.reward_model import (
    RewardModel,
    best_accuracy,
    bt_loss,
    last_window,
)
from pgnumpy.testing import norm_rel_error, numeric_gradient, rel_error, with_params

ENTRY_TOL, NORM_TOL = 1e-6, 1e-7


def check(a, n):
    """Every entry within 1e-6 relative, or (entries near 0) the whole vector within 1e-7."""
    return rel_error(a, n) <= ENTRY_TOL or norm_rel_error(a, n) <= NORM_TOL


def ids(text: str) -> list[int]:
    return [TOKEN[w] for w in text.split()]


@pytest.fixture(scope="module")
def grammar():
    return Grammar()


# ---- 1. the language ----------------------------------------------------------------------

def test_exact_entropy_per_token_matches_monte_carlo(grammar):
    """(RLHF.1, RLHF.2) against 20,000 sampled sentences. The estimate is a ratio of means,
    sum(-log P(y)) / sum(len(y)); its standard error by the delta method is
    std(a - H b) / (sqrt(n) mean(b)) with a = -log P(y), b = len(y). Tolerance: 4 standard
    errors (a false alarm about 1 time in 16,000); the SE itself is ~0.004 nats, so a wrong
    entropy by 0.02 nats (about 1%) fails."""
    y = grammar.sample(20_000, np.random.default_rng(0))
    a = -grammar.log_prob(y)
    b = (np.cumsum(y == EOS, axis=1) == 0).sum(axis=1) + 1.0  # tokens, <eos> included
    assert np.all(np.isfinite(a))
    H_mc = a.sum() / b.sum()
    se = np.std(a - H_mc * b) / (np.sqrt(len(a)) * b.mean())
    H = grammar.entropy_per_token()
    assert se < 0.005
    assert abs(H_mc - H) < 4 * se, (H_mc, H, se)
    se_len = b.std() / np.sqrt(len(b))
    assert abs(b.mean() - grammar.mean_length()) < 4 * se_len


def test_context_floor_bounds_and_its_one_token_case(grammar):
    """(RLHF.3): no window model beats the true entropy, longer windows never hurt, and for
    k = 1 the floor equals H(next | last token) computed another way, from the state visits:
    n(w, q) = sum_q' visits(q') P(w | q') [next(q', w) = q], plus the start with w = BOS."""
    H = grammar.entropy_per_token()
    floors = [grammar.context_floor(k) for k in (1, 2, 3, 4)]
    assert all(f >= H - 1e-12 for f in floors)
    assert all(a >= b - 1e-12 for a, b in zip(floors, floors[1:]))
    visits, P, NEXT = grammar.visits(), grammar.P, grammar.NEXT
    S, V = P.shape
    n = np.zeros((V, S))  # (last token, state) -> expected visits
    n[BOS, 0] = 1.0
    for q in range(S):
        for w in range(V):
            if NEXT[q, w] >= 0:
                n[w, NEXT[q, w]] += visits[q] * P[q, w]
    mix = n @ P  # (last token, next token) expected counts
    rows = mix.sum(axis=1)
    cond = np.where(mix > 0, mix / np.maximum(rows[:, None], 1e-300), 1.0)
    floor1 = -(mix * np.log(cond)).sum() / rows.sum()
    assert floors[0] == pytest.approx(floor1, rel=1e-12)
    assert floors[0] > H + 0.1  # one token of context is far from enough here


def test_gold_reward_on_hand_built_sentences(grammar):
    """(RLHF.4): distinct words count once; outside the language costs 3, and so does a
    sentence cut before its <eos> (the last row fills the array: no <eos>)."""
    y = np.full((4, 10), EOS)
    for i, s in enumerate(["the child helps a small child quietly <eos>",
                           "the dog chases the dog <eos>",
                           "the dog helps helps <eos>",
                           "a small child sings quietly and the small red cat"]):
        y[i, : len(s.split())] = ids(s)
    assert np.isfinite(grammar.log_prob(y[:2])).all()
    want = [0.3 + 1.0 + 0.2 + 0.5, -1.0, 1.0 - 3.0, 0.2 + 0.3 + 0.5 + 0.5 - 3.0]
    assert not (y[3] == EOS).any()
    assert gold_reward(y, grammar) == pytest.approx(want)
    assert to_words(y[0]) == "the child helps a small child quietly <eos>"


# ---- 2. the language model ----------------------------------------------------------------

def small_net(cls=WindowNet, seed=0, **kw):
    rng = np.random.default_rng(seed)
    net = cls(3, 2, (4,), rng=rng, **kw) if cls is TinyLM else cls(3, 2, (4,), 2, rng=rng)
    net.params[:] += rng.normal(0, 0.3, net.params.shape)  # nonzero biases too
    return net


def test_window_net_backward_matches_finite_differences():
    """(RLHF.5): embedding, MLP and their chain. The planted wrong gradient leaves out the
    embedding part (an MLP trained on frozen embeddings), which the same check rejects."""
    net = small_net()
    rng = np.random.default_rng(1)
    ctx = np.array([[BOS, BOS, 5], [5, 7, 5], [2, 2, 2]])  # repeats within and across windows
    R = rng.normal(size=(3, 2))
    y, cache = net.forward(ctx)
    grad = net.backward(cache, R)
    fd = numeric_gradient(with_params(net.params, lambda: float(np.sum(net(ctx) * R))), net.params)
    assert check(grad, fd)
    frozen = grad.copy()
    frozen[: net.n_emb] = 0.0
    assert not check(frozen, fd)


def test_lm_maximum_likelihood_gradient():
    """(RLHF.6): mean NLL's gradient. Planted: the softmax part of (CAT.2) dropped, i.e.
    dL/dlogits = -onehot / n (pushing the target's logit up without pulling the rest down)."""
    lm = small_net(TinyLM)
    rng = np.random.default_rng(2)
    ctx = rng.integers(0, 8, (6, 3))
    target = rng.integers(0, 27, 6)
    loss, grad = lm.loss_and_grad(ctx, target)
    fd = numeric_gradient(with_params(lm.params, lambda: lm.loss_and_grad(ctx, target)[0]),
                          lm.params)
    assert check(grad, fd)
    dist, cache = lm.dist(ctx)
    assert loss == pytest.approx(-dist.log_prob(target).mean())
    onehot = np.zeros_like(dist.probs)
    onehot[np.arange(6), target] = 1.0
    assert not check(lm.backward(cache, -onehot / 6), fd)


def test_windows_and_mask():
    """The state before token t is y_{t-k} .. y_{t-1}, BOS-padded; the mask keeps every token up
    to and including the first <eos>, and all of a row cut before one."""
    y = np.array([ids("a cat runs <eos> <eos>"), ids("the dog sees the dog")])
    w = windows(y, 3)
    assert w.shape == (2, 5, 3)
    assert w[0, 0].tolist() == [BOS, BOS, BOS]
    assert w[0, 2].tolist() == [BOS] + ids("a cat")
    assert w[1, 4].tolist() == ids("dog sees the")
    assert token_mask(y).tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


# ---- 3. the reward model ------------------------------------------------------------------

def test_bradley_terry_gradient():
    """(RLHF.8) against central differences in r_w and r_l, at margins from -30 to 30 (the
    loss stays finite where log(sigmoid(d)) would underflow). Planted: sigmoid(d) in place of
    sigmoid(-d), a gradient that shrinks when the model is wrong instead of when it is right."""
    r_w = np.array([0.3, -1.2, 2.0, 30.0, -30.0])
    r_l = np.array([-0.1, 0.4, 2.0, 0.0, 0.0])
    loss, dw, dl = bt_loss(r_w, r_l)
    assert np.isfinite(loss)
    assert loss == pytest.approx(np.mean(np.log1p(np.exp(-(r_w - r_l)))))
    fd_w = numeric_gradient(lambda x: bt_loss(x, r_l)[0], r_w.copy())
    fd_l = numeric_gradient(lambda x: bt_loss(r_w, x)[0], r_l.copy())
    assert check(dw, fd_w) and check(dl, fd_l)
    d = r_w - r_l
    wrong = -1.0 / (1.0 + np.exp(-d)) / len(d)
    assert not check(wrong, fd_w)


def test_reward_model_gradient_through_the_trunk():
    """(RLHF.8) through the whole reward model: embeddings, MLP, head, read at the last window.
    Planted: the loser's half of the backward dropped (only r(y_w) pushed up)."""
    rng = np.random.default_rng(3)
    rm = RewardModel(3, 2, (4,), rng=rng)
    rm.params[:] += rng.normal(0, 0.3, rm.params.shape)
    y_w = np.array([ids("a cat runs <eos> <eos>"), ids("the dog helps a cat")])
    y_l = np.array([ids("a cat <eos> <eos> <eos>"), ids("a bird sings quietly <eos>")])
    loss, grad = rm.loss_and_grad(y_w, y_l)
    fd = numeric_gradient(with_params(rm.params, lambda: rm.loss_and_grad(y_w, y_l)[0]), rm.params)
    assert check(grad, fd)
    r, cache = rm.forward(np.concatenate([last_window(y_w, 3), last_window(y_l, 3)]))
    _, dw, dl = bt_loss(r[:2, 0], r[2:, 0])
    assert not check(rm.backward(cache, np.concatenate([dw, 0 * dl])[:, None]), fd)


def test_the_reward_model_reads_the_last_window_and_starts_from_the_lm():
    """InstructGPT's reading: the window that ends at the last token, <eos> included (or the
    cap's last token); the trunk (embeddings, hidden layers) copied from the LM."""
    y = np.array([ids("a cat runs <eos> <eos> <eos>"), ids("<eos> <eos> <eos> <eos> <eos> <eos>"),
                  ids("the dog sees the dog quietly")])
    assert last_window(y, 3).tolist() == [ids("cat runs <eos>"), [BOS, BOS, EOS],
                                          ids("the dog quietly")]
    lm = small_net(TinyLM)
    rm = RewardModel.from_lm(lm, np.random.default_rng(0))
    assert np.array_equal(rm.emb.E, lm.emb.E)
    assert np.array_equal(rm.net.W[0], lm.net.W[0]) and np.array_equal(rm.net.b[0], lm.net.b[0])
    assert rm.net.W[-1].shape == (4, 1)


def test_normalisation_gives_mean_0_std_1_and_keeps_every_preference():
    """(RLHF.9): folded into the head, so the scores are exactly standardised on the samples it
    was measured on, and their order (every preference) is unchanged."""
    lm = small_net(TinyLM)
    rm = RewardModel.from_lm(lm, np.random.default_rng(1))
    rm.params[:] += np.random.default_rng(2).normal(0, 0.5, rm.params.shape)
    y = lm.sample(200, np.random.default_rng(3), 12)
    before = rm.score(y)
    rm.normalize(y)
    after = rm.score(y)
    assert after.mean() == pytest.approx(0.0, abs=1e-12)
    assert after.std() == pytest.approx(1.0, rel=1e-12)
    assert np.array_equal(np.argsort(before, kind="stable"), np.argsort(after, kind="stable"))


def test_best_accuracy_on_noisy_labels():
    """E[max(p, 1 - p)], and it is what the best predictor scores on labels drawn with p:
    200,000 labels, within 4 standard errors (SE = sqrt(acc (1 - acc) / n) ~ 0.001)."""
    assert best_accuracy(np.array([0.9, 0.3, 0.5])) == pytest.approx((0.9 + 0.7 + 0.5) / 3)
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    label = rng.random(len(p)) < p  # True: the first item wins
    hits = (p > 0.5) == label
    acc = best_accuracy(p)
    assert abs(hits.mean() - acc) < 4 * np.sqrt(acc * (1 - acc) / len(p))


# ---- 4. RL fine-tuning --------------------------------------------------------------------

def test_kl_shaping_on_a_hand_built_case():
    """(RLHF.12): -beta (log pi - log pi_ref) on every real token, the score added at the last
    one (<eos>, or the cap's last token), nothing on padding; (RLHF.11) sums the log-ratios."""
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    logp = np.log(np.array([[0.5, 0.25, 0.9, 0.9], [0.5, 0.5, 0.5, 0.5]]))
    logp_ref = np.log(np.array([[0.25, 0.25, 0.1, 0.1], [1.0, 0.5, 0.25, 0.5]]))
    score = np.array([1.5, -2.0])
    rew = shaped_rewards(logp, logp_ref, mask, score, beta=0.1)
    ln2 = np.log(2.0)
    want = [[-0.1 * ln2, 0.0 + 1.5, 0.0, 0.0], [0.1 * ln2, 0.0, -0.1 * ln2, 0.0 - 2.0]]
    assert rew == pytest.approx(np.array(want), abs=1e-15)
    assert kl_per_sentence(logp, logp_ref, mask) == pytest.approx([ln2, 0.0])


def gae_by_hand(rew, val, mask, lam):
    """One sentence at a time, as written in (RLHF.13), gamma = 1: a plain loop."""
    adv = np.zeros_like(rew)
    for i in range(len(rew)):
        T = int(mask[i].sum())
        a = 0.0
        for t in reversed(range(T)):
            v_next = val[i, t + 1] if t + 1 < T else 0.0  # the last token terminates
            a = rew[i, t] + v_next - val[i, t] + lam * a
            adv[i, t] = a
    return adv, np.where(mask, adv + val, 0.0)


def test_advantages_and_value_targets_against_a_loop():
    """(RLHF.13) through kernels.gae against gae_by_hand, on sentences of lengths 1 to 6 in a
    (5, 6) batch with random padding values (which must not leak in). The last check: had the
    cap been treated as a truncation, bootstrapping with a value after the last token (here the
    padding's), the advantages would differ, so the comparison can tell the two apart."""
    rng = np.random.default_rng(0)
    lengths = np.array([1, 6, 3, 2, 5])
    mask = np.arange(6) < lengths[:, None]
    rew, val = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    adv, ret = advantages(rew, val, mask, lam=0.9)
    want_adv, want_ret = gae_by_hand(rew, val, mask, 0.9)
    assert adv == pytest.approx(want_adv, abs=1e-12)
    assert ret == pytest.approx(want_ret, abs=1e-12)
    boot = rew.copy()
    for i, T in enumerate(lengths):
        if T < 6:
            boot[i, T - 1] += val[i, T]
    assert not np.allclose(adv, gae_by_hand(boot, val, mask, 0.9)[0])


def test_adaptive_kl_controller():
    """(RLHF.14): beta grows when the KL is above target, shrinks below, the error clipped to
    +-20%, the step scaled by n / horizon."""
    assert adaptive_beta(0.1, 4.0, 4.0, 64, 640) == pytest.approx(0.1)
    assert adaptive_beta(0.1, 4.4, 4.0, 64, 640) == pytest.approx(0.1 * (1 + 0.1 * 0.1))
    assert adaptive_beta(0.1, 40.0, 4.0, 64, 640) == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    assert adaptive_beta(0.1, 0.0, 4.0, 64, 640) == pytest.approx(0.1 * (1 - 0.2 * 0.1))


def tiny_pair(seed=0):
    """Two different tiny LMs (k = 2) whose <eos> is likely: pi and pi_ref."""
    pi, ref = (TinyLM(2, 2, (4,), rng=np.random.default_rng(s)) for s in (seed, seed + 1))
    for lm, shift in ((pi, 2.0), (ref, 1.0)):
        lm.params[:] += np.random.default_rng(seed + 7).normal(0, 0.5, lm.params.shape)
        lm.net.b[-1][EOS] += shift
    return pi, ref


def test_per_token_log_ratio_sum_is_the_sequence_kl():
    """(RLHF.11) on every sentence of at most 2 tokens (703 of them): KL(pi || pi_ref) between
    sentence distributions, computed from the two models' next-token distributions directly,
    equals E_pi[kl_per_sentence] (the sum runs over real tokens only) and E_pi[sum_t KL_t];
    the Monte Carlo mean of kl_per_sentence over 20,000 samples lies within 4 standard errors.
    Planted: padding after <eos> summed too (mask ignored): its E no longer matches."""
    from pgnumpy.distributions import log_softmax

    pi, ref = tiny_pair()
    start = np.array([[BOS, BOS]])
    lp0, lq0 = log_softmax(pi(start))[0], log_softmax(ref(start))[0]
    first = np.array([[BOS, w] for w in range(27)])
    lp1, lq1 = log_softmax(pi(first)), log_softmax(ref(first))
    # KL of the two-token process: the first token's KL plus the second's where there is one
    kl1 = (np.exp(lp1) * (lp1 - lq1)).sum(axis=1)
    cont = np.arange(27) != EOS
    exact = float(np.exp(lp0) @ (lp0 - lq0) + (np.exp(lp0) * kl1)[cont].sum())
    # every sentence, its probability under pi, and the two estimators
    y = np.array([[EOS, EOS]] + [[a, b] for a in range(27) if a != EOS for b in range(27)])
    mask = token_mask(y)
    logp, logp_ref = pi.token_logp(y), ref.token_logp(y)
    P = np.exp(np.where(mask, logp, 0.0).sum(axis=1))
    assert P.sum() == pytest.approx(1.0, abs=1e-12)
    est = kl_per_sentence(logp, logp_ref, mask)
    assert P @ est == pytest.approx(exact, rel=1e-10)
    w = windows(y, 2).reshape(-1, 2)
    d_pi, d_ref = pi.dist(w)[0], ref.dist(w)[0]
    tokenwise = np.where(mask, d_pi.kl(d_ref).reshape(y.shape), 0.0).sum(axis=1)
    assert P @ tokenwise == pytest.approx(exact, rel=1e-10)
    assert not P @ (logp - logp_ref).sum(axis=1) == pytest.approx(exact, rel=1e-3)
    ys = pi.sample(20_000, np.random.default_rng(0), 2)
    m = token_mask(ys)
    mc = kl_per_sentence(pi.token_logp(ys), ref.token_logp(ys), m)
    assert abs(mc.mean() - exact) < 4 * mc.std() / np.sqrt(len(mc))


def test_collect_hands_the_maths_pieces_what_the_derivation_says():
    """What one RL iteration gives ppo_clip_loss and value_loss, against an independent
    computation sentence by sentence with plain loops: the states (windows) and actions of the
    real tokens only, in order, logp_old, the shaped rewards (RLHF.12), GAE with gamma = 1 and
    termination at <eos> and at the cap (RLHF.13), whitened advantages, value targets."""
    from pgnumpy.distributions import log_softmax

    pi, ref = tiny_pair(3)
    rng = np.random.default_rng(4)
    vf, rm = WindowNet(2, 2, (4,), 1, rng=rng), RewardModel(2, 2, (4,), rng=rng)
    rm.params[:] += rng.normal(0, 0.5, rm.params.shape)
    cfg = RLConfig(batch=12, max_len=5, beta=0.3, lam=0.9)
    b = collect(pi, ref, vf, rm, cfg.beta, cfg, np.random.default_rng(5))
    assert b.y.shape == (12, 5)
    ended = (b.y == EOS).any(axis=1)
    assert ended.any() and not ended.all()  # both kinds of ending are exercised
    ctx, act, logp_old, adv, ret = [], [], [], [], []
    for row in b.y:
        toks = [int(t) for t in row]
        T = toks.index(EOS) + 1 if EOS in toks else len(toks)
        padded = [BOS, BOS] + toks
        win = [padded[t : t + 2] for t in range(T)]
        lp = [log_softmax(pi(np.array([w])))[0, toks[t]] for t, w in enumerate(win)]
        lq = [log_softmax(ref(np.array([w])))[0, toks[t]] for t, w in enumerate(win)]
        v = [float(vf(np.array([w]))[0, 0]) for w in win]
        r = [-cfg.beta * (a - c) for a, c in zip(lp, lq)]
        r[-1] += float(rm(np.array([padded[T : T + 2]]))[0, 0])  # the window ending at y_T
        a, out = 0.0, []
        for t in reversed(range(T)):
            a = r[t] + (v[t + 1] if t + 1 < T else 0.0) - v[t] + cfg.lam * a
            out.append(a)
        out = out[::-1]
        ctx += win
        act += toks[:T]
        logp_old += lp
        adv += out
        ret += [x + y for x, y in zip(out, v)]
    adv = np.array(adv)
    assert b.ctx.tolist() == ctx and b.act.tolist() == act
    assert b.logp_old == pytest.approx(logp_old, abs=1e-12)
    assert b.ret == pytest.approx(ret, abs=1e-12)
    assert b.adv == pytest.approx((adv - adv.mean()) / adv.std(), abs=1e-6)


# ---- 5-6. the stages end to end, the pipeline and its CLI ---------------------------------

def tiny_config(**rl):
    from pgnumpy.rlhf.lm import LMConfig
    from pgnumpy.rlhf.pipeline import RLHFConfig
    from pgnumpy.rlhf.reward_model import RMConfig

    return RLHFConfig(
        seed=0,
        lm=LMConfig(context=3, d_embed=8, hidden=(32,), corpus=2000, heldout=500, steps=600,
                    batch=128, eval_every=200),
        rm=RMConfig(pairs=3000, heldout=1000, steps=300, batch=64, lr=2e-3, norm_samples=500,
                    eval_every=100),
        rl=RLConfig(**({"iterations": 15, "batch": 32} | rl)),
        sweep_betas=(),
    )


def test_end_to_end_the_rm_beats_chance_and_rl_raises_the_gold_reward_at_bounded_kl():
    """The stages as Python functions, tiny and fast (~2 s). The RM's held-out accuracy on 1,000
    noisy labels beats chance by more than 4 standard errors (SE <= sqrt(0.25 / 1000) = 0.016);
    after 15 PPO iterations at beta 0.05 the gold reward of 1,000 fresh sentences beats the
    reference's by more than 4 standard errors of the difference, at a KL under 15 nats."""
    from pgnumpy.rlhf.finetune import rl_finetune
    from pgnumpy.rlhf.lm import pretrain
    from pgnumpy.rlhf.reward_model import train_reward_model

    cfg, g = tiny_config(), Grammar()
    rng = np.random.default_rng(0)
    lm, lm_rows = pretrain(cfg.lm, g, rng)
    assert lm_rows[-1]["heldout_ce"] < g.context_floor(3) + 0.1
    rm, _, rm_summary = train_reward_model(cfg.rm, lm, g, rng, cfg.rl.max_len)
    assert rm_summary["heldout_acc"] > 0.5 + 4 * np.sqrt(0.25 / cfg.rm.heldout)
    assert rm_summary["heldout_acc"] <= rm_summary["best_acc"] + 4 * np.sqrt(0.25 / 1000)
    policy, rows = rl_finetune(cfg.rl, lm, rm, g, rng)
    before = gold_reward(lm.sample(1000, rng, cfg.rl.max_len), g)
    after = gold_reward(policy.sample(1000, rng, cfg.rl.max_len), g)
    se = np.sqrt(before.var() / len(before) + after.var() / len(after))
    assert after.mean() - before.mean() > 4 * se, (before.mean(), after.mean(), se)
    assert 0 < np.mean([r["kl"] for r in rows[-5:]]) < 15.0
    assert rows[-1]["proxy"] > rows[0]["proxy"]


def _files(d):
    """Every output of a run directory, wall-clock columns and fields dropped."""
    import csv
    import json

    from pgnumpy.rlhf.pipeline import load_npz

    out = {}
    for p in sorted(d.iterdir()):
        if p.suffix == ".csv":
            with open(p, newline="") as f:
                out[p.name] = [{k: v for k, v in r.items() if k != "wall_s"}
                               for r in csv.DictReader(f)]
        elif p.suffix == ".npz":
            meta, arrays = load_npz(p)
            out[p.name] = (json.dumps(meta, sort_keys=True), {k: v.tobytes() for k, v in
                                                              arrays.items()})
        elif p.name == "samples.txt":
            out[p.name] = p.read_text()
    return out


def test_same_seed_same_run_and_from_stage_reruns_the_rest(tmp_path):
    """Two full runs with one seed write identical files (wall-clock aside); a rerun from the
    rm stage, loading lm.npz, rewrites rm.npz, rl.npz and every CSV exactly as before."""
    from pgnumpy.rlhf.pipeline import run

    cfg = tiny_config(iterations=3, batch=16)
    cfg.lm.steps, cfg.lm.corpus, cfg.lm.heldout = 100, 300, 100
    cfg.rm.steps, cfg.rm.pairs, cfg.rm.heldout, cfg.rm.norm_samples = 50, 300, 100, 100
    cfg.sweep_betas = (0.0,)
    a, b = tmp_path / "a", tmp_path / "b"
    quiet = lambda s: None  # noqa: E731
    run(cfg, a, figures=False, print_fn=quiet)
    run(cfg, b, figures=False, print_fn=quiet)
    first = _files(a)
    assert set(first) >= {"lm.npz", "rm.npz", "rl.npz", "lm.csv", "rm.csv", "rl.csv",
                          "rl_beta_0.csv", "samples.txt"}
    assert first == _files(b)
    lines = []
    run(cfg, a, from_stage="rm", figures=False, print_fn=lines.append)
    assert any("loaded" in s and "lm.npz" in s for s in lines)
    assert _files(a) == first


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--beta=-1"], "rl.beta must be in [0, 1000.0], got -1.0"),
        (["--rl-iterations", "0"], "rl.iterations must be an integer >= 1, got 0"),
        (["--sweep-betas", "0.1,x"], "expected comma-separated numbers"),
        (["--from-stage", "rm"], "--from-stage needs --out"),
        (["--from-stage", "pretrain"], "invalid choice: 'pretrain'"),
        (["--config", "no/such.json"], "no config file at no/such.json"),
        (["--estimator", "reinforce"], "invalid choice: 'reinforce' (choose from 'ppo', 'rloo'"),
        (["--estimator", "rloo", "--group", "5"],
         "rl.batch (64) must be a multiple of rl.group (5)"),
        (["--estimator", "rloo", "--group", "1"], "rl.group must be an integer >= 2"),
        (["--kl-penalty", "k3_loss"], "rl.kl_penalty 'k3_loss' goes with a group estimator"),
    ],
)
def test_cli_user_errors_are_one_line_exit_2(argv, message, capsys):
    from pgnumpy.rlhf.__main__ import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cli_runs_a_config_file_and_reports_a_broken_checkpoint(tmp_path, capsys):
    """The CLI on a tiny --config (figures drawn), then --from-stage rl on a run directory whose
    rm.npz was truncated, and with a flag that would change a reused stage: one line, exit 2."""
    import json

    from pgnumpy.rlhf.__main__ import main

    cfg = tiny_config(iterations=2, batch=8)
    cfg.lm.steps, cfg.lm.corpus, cfg.lm.heldout = 50, 300, 100
    cfg.rm.steps, cfg.rm.pairs, cfg.rm.heldout, cfg.rm.norm_samples = 20, 300, 100, 100
    cfg.sweep_betas = (0.0,)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(cfg.to_dict()))
    out = tmp_path / "run"
    assert main(["--config", str(path), "--out", str(out), "--quiet"]) == 0
    assert "run written to" in capsys.readouterr().out
    for name in ("rlhf_lm_loss.png", "rlhf_rm_accuracy.png", "rlhf_overoptimisation.png",
                 "summary.json", "config.json"):
        assert (out / name).exists(), name
    data = (out / "rm.npz").read_bytes()
    (out / "rm.npz").write_bytes(data[: len(data) // 2])
    assert main(["--out", str(out), "--from-stage", "rl", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "rm.npz is not a readable stage checkpoint" in err and err.count("\n") == 1
    assert main(["--out", str(out), "--from-stage", "rl", "--lm-steps", "10"]) == 2
    err = capsys.readouterr().err
    assert "reuses the lm stage's checkpoint" in err and err.count("\n") == 1
