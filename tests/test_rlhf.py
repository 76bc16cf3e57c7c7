"""RLHF at toy scale (pgnumpy/rlhf): the grammar's exact quantities, every new gradient against
central finite differences in float64 (each with a planted wrong gradient the same check
rejects), the reward shaping and what the PPO step hands to the maths pieces, and a short run.
"""

import numpy as np
import pytest

from pgnumpy.gradcheck import central_fd, norm_rel_error, rel_error
from pgnumpy.rlhf.grammar import BOS, EOS, TOKEN, Grammar, gold_reward, to_words
from pgnumpy.rlhf.lm import TinyLM, WindowNet, token_mask, windows

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
    fd = central_fd(lambda _: float(np.sum(net(ctx) * R)), net.params)
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
    fd = central_fd(lambda _: lm.loss_and_grad(ctx, target)[0], lm.params)
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
