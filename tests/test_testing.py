"""pgnumpy.testing, tested from outside the package as a user would call it: every helper passes
on correct gradients and estimators and fails, with a message a person can act on, on planted
wrong ones (a missing factor, a transposed Jacobian, a dropped term; a baseline that sees the
action, a GAE with a wrong value); float32 is refused; the caller's arrays are never changed.
The docs' example test file is run by pytest in a subprocess outside the repository."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgnumpy.errors import UserError
from pgnumpy.exact import (
    alive_distributions,
    capped_values,
    probs,
    tabular_policy,
    weighted_direction,
)
from pgnumpy.nn import MLP
from pgnumpy.policy import CategoricalPolicy
from pgnumpy.testing import (
    TabularBatch,
    assert_gradient,
    assert_jvp,
    assert_unbiased,
    assert_vjp,
    estimator_expectation,
    exact_gradient,
    exact_J,
    exact_values,
    numeric_gradient,
    numeric_jvp,
    random_tabular_mdp,
    tabular_mdps,
    with_params,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "testing.md"


# ---- a user's own policy: softmax with a learned temperature (the docs' example, written again
# here so these tests do not depend on the docs' text)


class TempSoftmax:
    """pi(a|s) = softmax(W[s] / temp), temp = exp(log_temp); params = [W.ravel(), log_temp].
    plant: None, "no_temp" (the 1/temp factor of dW missing), "no_temp_term" (the log_temp
    derivative dropped)."""

    def __init__(self, S, A, rng, plant=None):
        self.S, self.A, self.plant = S, A, plant
        self.params = rng.normal(size=S * A + 1)

    def logits(self, s):
        return self.params[:-1].reshape(self.S, self.A)[s] / np.exp(self.params[-1])

    def probs(self, s):
        z = self.logits(s)
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def grad_log_prob(self, s, a):
        s, a = np.asarray(s), np.asarray(a)
        dz = -self.probs(s)
        dz[np.arange(len(s)), a] += 1.0
        G = np.zeros((len(s), self.params.size))
        scale = 1.0 if self.plant == "no_temp" else 1.0 / np.exp(self.params[-1])
        np.put_along_axis(G, s[:, None] * self.A + np.arange(self.A), dz * scale, axis=1)
        if self.plant != "no_temp_term":
            G[:, -1] = -(dz * self.logits(s)).sum(axis=1)
        return G


def log_lik(pol, s, a):
    return float(np.log(pol.probs(s)[np.arange(len(s)), a]).sum())


SA = (np.array([0, 1, 1, 0, 2]), np.array([1, 0, 1, 1, 0]))


def user_policy(plant=None, seed=1, S=3, A=2):
    return TempSoftmax(S, A, np.random.default_rng(seed), plant)


# ---- assert_gradient


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_assert_gradient_passes_a_correct_gradient(mode):
    pol = user_policy()
    s, a = SA
    check = assert_gradient(with_params(pol.params, lambda: log_lik(pol, s, a)), pol.params,
                            pol.grad_log_prob(s, a).sum(axis=0), mode=mode)
    assert check.error < 1e-9  # far inside the tolerance: the tolerance is not what passes it


@pytest.mark.parametrize("mode", ["full", "directional"])
@pytest.mark.parametrize("plant", ["no_temp", "no_temp_term"])
def test_assert_gradient_fails_a_missing_factor_and_a_dropped_term(plant, mode):
    """A missing 1/temp factor and a dropped log_temp derivative: the message names the relative
    error, the tolerance and its source, and the worst coordinates with both values."""
    pol = user_policy(plant)
    s, a = SA
    with pytest.raises(AssertionError) as e:
        assert_gradient(with_params(pol.params, lambda: log_lik(pol, s, a)), pol.params,
                        pol.grad_log_prob(s, a).sum(axis=0), mode=mode)
    msg = str(e.value)
    assert "relative error" in msg and "tolerance 1.0e-07" in msg and "tolerance from:" in msg
    assert " vs " in msg
    if mode == "full":
        worst = int(re.search(r"x\[(\d+)\]", msg).group(1))
        if plant == "no_temp_term":  # the dropped term is the last coordinate: named first
            assert worst == pol.params.size - 1 and re.search(r"0\.000000e\+00 vs", msg)
    else:
        assert "mode='full'" in msg


def test_a_constant_factor_is_named_as_such():
    pol = user_policy()
    s, a = SA
    g = pol.grad_log_prob(s, a).sum(axis=0)
    with pytest.raises(AssertionError, match=r"analytic = 2 x numeric in every coordinate"):
        assert_gradient(with_params(pol.params, lambda: log_lik(pol, s, a)), pol.params, 2 * g)


def test_a_function_that_ignores_its_argument_is_named():
    """The pitfall of a model that reads its own buffer: f(_) = loss(model) sees no perturbation."""
    pol = user_policy()
    s, a = SA
    with pytest.raises(AssertionError, match="with_params"):
        assert_gradient(lambda _: log_lik(pol, s, a), pol.params,
                        pol.grad_log_prob(s, a).sum(axis=0))


def mlp_setup(sizes=(8, 64, 16, 3), seed=0, activation="tanh", dtype=np.float64):
    rng = np.random.default_rng(seed)
    net = MLP(list(sizes), activation, rng=rng, dtype=dtype)
    net.params[:] += rng.normal(0, 0.1, net.params.size).astype(dtype)  # biases non-zero too
    x = rng.normal(size=(16, sizes[0])).astype(dtype)
    R = rng.normal(size=(16, sizes[-1]))
    return net, x, R


def mlp_loss_and_grad(net, x, R, plant=None):
    """L = sum(MLP(x) * R) / 2 and its backward; plant "factor": forget the 1/2, "bias": drop the
    first layer's bias gradient."""
    y, cache = net.forward(x)
    g, _ = net.backward(cache, R / 2)
    if plant == "factor":
        g = 2 * g
    if plant == "bias":
        g = g.copy()
        net.layer_views(g)[1][0][:] = 0.0
    return float(np.sum(y * R) / 2), g


@pytest.mark.parametrize("plant", [None, "factor", "bias"])
def test_directional_mode_on_a_network_above_1024_parameters(plant):
    """1667 parameters: mode "auto" checks 16 random directions (32 evaluations), and still
    catches a gradient wrong in only the 64 entries of one bias."""
    net, x, R = mlp_setup()
    assert net.params.size > 1024
    f = with_params(net.params, lambda: mlp_loss_and_grad(net, x, R)[0])
    g = mlp_loss_and_grad(net, x, R, plant)[1]
    if plant is None:
        check = assert_gradient(f, net.params, g)
        assert check.evaluations == 32 and "16 random directions" in check.mode
    else:
        with pytest.raises(AssertionError, match="16 random directions"):
            assert_gradient(f, net.params, g)


@given(st.lists(st.integers(1, 12), min_size=2, max_size=4), st.integers(0, 2**16),
       st.sampled_from(["full", "directional"]))
def test_the_default_tolerance_passes_correct_gradients(sizes, seed, mode):
    """Random tanh networks, either mode: a correct backward always passes the default rtol."""
    net, x, R = mlp_setup(tuple(sizes), seed)
    assert_gradient(with_params(net.params, lambda: mlp_loss_and_grad(net, x, R)[0]),
                    net.params, mlp_loss_and_grad(net, x, R)[1], mode=mode)


def test_grad_none_means_f_returns_value_and_gradient():
    net, x, R = mlp_setup((3, 5, 2))
    assert_gradient(with_params(net.params, lambda: mlp_loss_and_grad(net, x, R)), net.params)
    with pytest.raises(AssertionError):
        assert_gradient(with_params(net.params, lambda: mlp_loss_and_grad(net, x, R, "bias")),
                        net.params)


# ---- float32 and the caller's arrays


def test_float32_is_refused_with_one_message():
    net, x, R = mlp_setup((3, 5, 2), dtype=np.float32)
    g = mlp_loss_and_grad(net, x, R)[1]
    expected = "checks gradients in float64, and .* is float32"
    with pytest.raises(UserError, match=expected):  # the parameters
        assert_gradient(lambda p: 0.0, net.params, g.astype(np.float64))
    with pytest.raises(UserError, match=expected):  # a float32 model read through its buffer
        with_params(net.params, lambda: mlp_loss_and_grad(net, x, R)[0])
    with pytest.raises(UserError, match=expected):  # the value of f
        assert_gradient(lambda p: np.float32(p.sum()), np.zeros(3), np.ones(3))
    with pytest.raises(UserError, match=expected):  # the analytic gradient
        assert_gradient(lambda p: p.sum(), np.zeros(3), np.ones(3, np.float32))
    with pytest.raises(UserError, match=expected):
        numeric_gradient(lambda p: float(p.sum()), np.zeros(3, np.float32))


@pytest.mark.parametrize("outcome", ["pass", "fail", "raise"])
def test_the_callers_array_is_unchanged(outcome):
    """After a passing check, a failing one, and an f that raises midway; through with_params
    (which writes into the buffer and must restore it) and through a plain f that writes into its
    own argument (which is a copy)."""
    net, x, R = mlp_setup((3, 5, 2))
    before, x_before = net.params.copy(), x.copy()
    calls = []

    def loss():
        calls.append(1)
        if outcome == "raise" and len(calls) == 7:
            raise RuntimeError("boom")
        return mlp_loss_and_grad(net, x, R)[0]

    g = mlp_loss_and_grad(net, x, R, "factor" if outcome == "fail" else None)[1]
    with pytest.raises((AssertionError, RuntimeError)) if outcome != "pass" else _nothing():
        assert_gradient(with_params(net.params, loss), net.params, g)
    assert np.array_equal(net.params, before)

    def scribbles(z):  # writes into its argument
        value = float(np.sum(np.sin(z)))
        z[...] = 0.0
        return value

    with pytest.raises(AssertionError) if outcome == "fail" else _nothing():
        assert_gradient(scribbles, x, np.cos(x) * (2.0 if outcome == "fail" else 1.0))
    assert np.array_equal(x, x_before)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---- assert_jvp and assert_vjp


def test_assert_jvp_on_the_mlps_forward_mode():
    """net.jvp (MLP.4-6) is the JVP of params -> MLP(x); a tangent with its bias part dropped
    (the "+ db" term of MLP.4) and a doubled one fail."""
    net, x, _ = mlp_setup((4, 6, 3))
    _, cache = net.forward(x)
    f = with_params(net.params, lambda: net(x))
    assert_jvp(f, net.params, lambda p, v: net.jvp(cache, v))
    no_bias = np.ones(net.params.size)
    for b in net.layer_views(no_bias)[1]:
        b[:] = 0.0
    with pytest.raises(AssertionError, match="assert_jvp"):
        assert_jvp(f, net.params, lambda p, v: net.jvp(cache, v * no_bias))
    with pytest.raises(AssertionError, match="constant factor"):
        v = np.random.default_rng(3).normal(size=net.params.size)
        assert_jvp(f, net.params, 2 * net.jvp(cache, v), v)


def test_numeric_jvp():
    """Of a linear map, exact to round-off; of tanh(W x), (1 - y^2) W v to the tolerance; x is
    not written; float32 refused."""
    rng = np.random.default_rng(5)
    W, x, v = rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=4)
    x_before = x.copy()
    assert np.abs(numeric_jvp(lambda z: W @ z, x, v) - W @ v).max() < 1e-9
    y = np.tanh(W @ x)
    assert np.linalg.norm(numeric_jvp(lambda z: np.tanh(W @ z), x, v) - (1 - y**2) * (W @ v)) \
        < 1e-8 * np.linalg.norm(W @ v)
    assert np.array_equal(x, x_before)
    with pytest.raises(UserError, match="float32"):
        numeric_jvp(lambda z: W @ z, x.astype(np.float32), v)


def test_assert_jvp_catches_a_transposed_jacobian():
    """f(x) = tanh(W x), J v = (1 - y^2) (W v); with W^T v instead it fails."""
    rng = np.random.default_rng(4)
    W, x = rng.normal(size=(4, 4)), rng.normal(size=4)
    f = lambda z: np.tanh(W @ z)  # noqa: E731
    assert_jvp(f, x, lambda z, v: (1 - np.tanh(W @ z) ** 2) * (W @ v))
    with pytest.raises(AssertionError, match="assert_jvp"):
        assert_jvp(f, x, lambda z, v: (1 - np.tanh(W @ z) ** 2) * (W.T @ v))


def test_assert_jvp_on_a_fisher_vector_product():
    """F v (TRPO.5) is the JVP of theta -> grad mean KL(pi_old || pi_theta) at theta_old (TRPO.4);
    F v with the batch's 1/n weights doubled fails."""
    rng = np.random.default_rng(0)
    pol = CategoricalPolicy(3, 4, [5], rng=rng, dtype=np.float64)
    pol.net.params[:] = rng.normal(0, 0.5, pol.params.size)
    obs = rng.normal(size=(6, 3))
    old, cache = pol.dist(obs)

    def kl_grad():
        dist, c = pol.dist(obs)
        n = len(obs)
        return pol.backward(c, dist, np.zeros(n, np.int64), np.zeros(n), dkl=np.full(n, 1 / n),
                            old=old)

    f = with_params(pol.params, kl_grad)
    assert_jvp(f, pol.params, lambda p, v: pol.fisher_vp(cache, old, v), k=3)
    with pytest.raises(AssertionError):
        assert_jvp(f, pol.params, lambda p, v: pol.fisher_vp(cache, old, v, np.full(6, 2 / 6)))


def test_assert_vjp_catches_a_transposed_jacobian():
    """f(x) = tanh(W x): the right VJP is W^T (u (1 - y^2)). On a square W, W (...) instead fails
    by value; on a non-square one, the VJP without W^T has f's shape, not x's, and the message
    names a transposed Jacobian."""
    rng = np.random.default_rng(2)
    for m, n in ((4, 4), (3, 5)):
        W = rng.normal(size=(m, n))
        x = rng.normal(size=n)
        f = lambda z, W=W: np.tanh(W @ z)  # noqa: E731
        right = lambda z, u, W=W: W.T @ (u * (1 - np.tanh(W @ z) ** 2))  # noqa: E731
        assert_vjp(f, x, right)
        if m == n:
            wrong = lambda z, u, W=W: W @ (u * (1 - np.tanh(W @ z) ** 2))  # noqa: E731
            with pytest.raises(AssertionError, match="assert_vjp"):
                assert_vjp(f, x, wrong)
        else:
            wrong = lambda z, u, W=W: u * (1 - np.tanh(W @ z) ** 2)  # noqa: E731
            with pytest.raises(UserError, match="transposed Jacobian"):
                assert_vjp(f, x, wrong)


def test_assert_vjp_on_the_mlps_input_gradient():
    net, x, _ = mlp_setup((4, 6, 3))
    f = lambda z: net(z.reshape(x.shape))  # noqa: E731

    def vjp(z, u):
        _, cache = net.forward(z.reshape(x.shape))
        return net.backward(cache, u.reshape(-1, 3), input_grad=True)[1].reshape(z.shape)

    assert_vjp(f, x.ravel(), vjp)
    with pytest.raises(AssertionError):  # the last activation's derivative forgotten: relu net
        net_r, xr, _ = mlp_setup((4, 6, 3), activation="relu")
        assert_vjp(lambda z: net_r(z) ** 2, xr, lambda z, u: net_r.backward(
            net_r.forward(z)[1], u, input_grad=True)[1])


# ---- exact checks


def reward_to_go(rew, gamma):
    out, acc = np.zeros(len(rew)), 0.0
    for t in reversed(range(len(rew))):
        acc = rew[t] + gamma * acc
        out[t] = acc
    return out


def reinforce(gamma):
    """The return R(tau) = sum_t gamma^t r_t weighting every step: reward-to-go plus the past
    rewards; unbiased for grad J^H."""
    def est(batch, pol):
        G = pol.grad_log_prob(batch.s, batch.a)
        return (gamma ** np.arange(batch.T) * batch.rew).sum() * G.sum(axis=0)
    return est


def rtg_minus(gamma, b):
    """Reward-to-go minus a baseline b(batch) (an array over the batch's rows)."""
    def est(batch, pol):
        G = pol.grad_log_prob(batch.s, batch.a)
        return ((reward_to_go(batch.rew, gamma) - b(batch))[:, None] * G).sum(axis=0)
    return est


def test_exact_checks_on_a_users_policy_pass_and_fail_as_the_theory_says():
    mdp = random_tabular_mdp(4, S=2, A=2, gamma=0.9, time_limit=3)
    pol = user_policy(seed=5, S=2)
    rng = np.random.default_rng(6)
    b_s, b_sa = rng.normal(size=mdp.S), rng.normal(size=(mdp.S, mdp.A))
    # exact_gradient against finite differences of the exact J (PG.1)
    assert_gradient(with_params(pol.params, lambda: exact_J(mdp, pol)), pol.params,
                    exact_gradient(mdp, pol))
    assert_unbiased(reinforce(mdp.gamma), mdp, pol)  # past rewards included: still unbiased
    assert_unbiased(rtg_minus(mdp.gamma, lambda bt: 0.0), mdp, pol, drop_gamma_t=True)
    assert_unbiased(rtg_minus(mdp.gamma, lambda bt: b_s[bt.s]), mdp, pol, drop_gamma_t=True)
    Vc, _ = exact_values(mdp, pol)
    assert_unbiased(rtg_minus(mdp.gamma, lambda bt: Vc[bt.tau, bt.s]), mdp, pol,
                    drop_gamma_t=True)  # the exact time-indexed value: V_tau(s_tau)
    with pytest.raises(AssertionError) as e:  # b(s, a): depends on the action it weights
        assert_unbiased(rtg_minus(mdp.gamma, lambda bt: b_sa[bt.s, bt.a]), mdp, pol,
                        drop_gamma_t=True)
    assert "exact bias" in str(e.value) and "cosine(bias, target)" in str(e.value)
    with pytest.raises(AssertionError, match="drops gamma"):  # the default target keeps gamma^t
        assert_unbiased(rtg_minus(mdp.gamma, lambda bt: 0.0), mdp, pol)
    with pytest.raises(AssertionError, match="0.5 x target"):  # a stray factor 1/2
        assert_unbiased(lambda bt, p: reinforce(mdp.gamma)(bt, p) / 2, mdp, pol)
    other = user_policy(seed=9, S=2)  # the same MDP under another policy: other batch probabilities
    assert_unbiased(reinforce(mdp.gamma), mdp, other)
    assert np.linalg.norm(exact_gradient(mdp, other) - exact_gradient(mdp, pol)) > 1e-3


def gae(gamma, lam, V):
    """GAE-lambda on a NEXT_STEP column, written out as a user would (GAE.1): delta_t = r_t +
    gamma V(s_{t+1}) [not after a termination] - V(s_t), accumulated backwards, restarted at an
    episode's end; the next state of a row is the next row's stored state (at a truncation: the
    final state, which the reset row holds) or last_s at the cut."""
    def est(batch, pol):
        T = batch.T
        nxt = np.append(batch.s[1:], batch.last_s)
        adv, acc = np.zeros(T), 0.0
        for t in reversed(range(T)):
            if not batch.valid[t]:
                acc = 0.0
                continue
            ended = batch.term[t] or batch.trunc[t]
            delta = batch.rew[t] + gamma * V[nxt[t]] * (not batch.term[t]) - V[batch.s[t]]
            acc = delta + (0.0 if ended else gamma * lam * acc)
            adv[t] = acc
        G = pol.grad_log_prob(batch.s, batch.a)
        return ((adv * batch.valid)[:, None] * G).sum(axis=0)
    return est


@pytest.mark.parametrize("start", ["fresh", "reset", "mid"])
def test_gae_with_the_right_value_is_unbiased_and_with_a_wrong_one_is_not(start):
    """On the VPG layout (T = 4 rows: resets, terminations, truncations, the cut): GAE(0.5) with
    the exact V of J_gamma passes, with V + noise fails; so does lambda = 1 (rtg - V) with the
    wrong V: unlike a baseline, the V that bootstraps truncations and the cut must be right."""
    mdp = random_tabular_mdp(3, S=2, A=2, gamma=0.8, time_limit=2)
    pol = user_policy(seed=2, S=2)
    V, _ = exact_values(mdp, pol, capped=False)
    wrong = V + np.random.default_rng(0).normal(size=mdp.S)
    kw = dict(T=4, start=start, drop_gamma_t=True)
    assert_unbiased(gae(mdp.gamma, 0.5, V), mdp, pol, **kw)
    assert_unbiased(gae(mdp.gamma, 1.0, V), mdp, pol, **kw)
    for lam in (0.5, 1.0):
        with pytest.raises(AssertionError, match="exact bias"):
            assert_unbiased(gae(mdp.gamma, lam, wrong), mdp, pol, **kw)


def test_pgnumpys_own_policy_and_phi_through_the_public_checks():
    """pgnumpy's CategoricalPolicy is accepted as it is; its phi.phi("gae") on the batch the
    estimator receives matches the user-written GAE above, and exact_gradient equals
    pgnumpy.exact's weighted_direction (what tests/test_exact_layout.py checks)."""
    from pgnumpy.phi import next_values, phi

    rng = np.random.default_rng(3)
    mdp = random_tabular_mdp(3, S=2, A=2, gamma=0.8, time_limit=2)
    pol = tabular_policy(mdp, rng)
    pi = probs(pol, mdp.S)
    d = alive_distributions(mdp, pi)
    Vc, Qc = capped_values(mdp, pi)
    direction = weighted_direction(pol, 0.8 ** np.arange(2)[:, None] * d, pi, Qc)
    assert np.linalg.norm(exact_gradient(mdp, pol) - direction) < 1e-12
    V, _ = exact_values(mdp, pol, capped=False)

    scores = _Adapter(pol, mdp.S)

    def pgnumpy_gae(batch, policy):
        val = V[batch.s][:, None]
        w = phi("gae", batch.rew[:, None], batch.term[:, None], batch.trunc[:, None], 0.8, 0.5,
                valid=batch.valid[:, None], val=val,
                next_val=next_values(val, V[[batch.last_s]]))[:, 0]
        G = scores.grad_log_prob(batch.s, batch.a)
        return ((w * batch.valid)[:, None] * G).sum(axis=0)

    mine = gae(0.8, 0.5, V)
    for start in ("fresh", "reset", "mid"):
        kw = dict(T=4, start=start)
        a = estimator_expectation(pgnumpy_gae, mdp, pol, **kw)
        b = estimator_expectation(lambda bt, p: mine(bt, scores), mdp, pol, **kw)
        assert np.linalg.norm(a - b) < 1e-12
        assert_unbiased(pgnumpy_gae, mdp, pol, drop_gamma_t=True, **kw)


class _Adapter:
    """grad log pi(a|s) of pgnumpy's policy by its own backward, tabulated once."""

    def __init__(self, pol, S):
        self.G = {}
        for s in range(S):
            for a in range(pol.net.sizes[-1]):
                dist, cache = pol.dist(np.eye(S)[[s]])
                self.G[s, a] = pol.backward(cache, dist, np.array([a]), np.ones(1))

    def grad_log_prob(self, s, a):
        return np.stack([self.G[si, ai] for si, ai in zip(s, a)])


def test_the_batches_the_estimator_receives():
    """Probabilities sum to 1; whole episodes have no reset row and end by a termination or the
    time limit; a T-row column has reset rows (valid False, reward 0) right after every ended
    episode, and start="reset" puts one in row 0; tau counts the episode's steps."""
    mdp = random_tabular_mdp(1, S=2, A=2, gamma=0.9, time_limit=2)
    pol = user_policy(seed=0, S=2)
    seen = []

    def record(batch, _):
        assert isinstance(batch, TabularBatch)
        seen.append(batch)
        return np.ones(1)

    assert abs(estimator_expectation(record, mdp, pol)[0] - 1) < 1e-12
    for b in seen:
        assert b.valid.all() and (b.term[-1] or b.trunc[-1]) and not (b.term | b.trunc)[:-1].any()
        assert np.array_equal(b.tau, np.arange(b.T)) and (b.trunc[-1] == (b.T == 2) and
                                                         not b.term[-1] or b.term[-1])
    for start in ("fresh", "reset", "mid"):
        seen.clear()
        assert abs(estimator_expectation(record, mdp, pol, T=4, start=start)[0] - 1) < 1e-12
        for b in seen:
            ended = (b.term | b.trunc) & b.valid
            assert np.array_equal(b.valid[1:], ~ended[:-1]) and b.T == 4
            assert b.valid[0] == (start != "reset") and np.all(b.rew[~b.valid] == 0)
            assert b.obs.shape == (4, 2) and 0 <= b.last_s < 2
            if start == "mid":
                assert b.tau[0] == 1
        assert any((~b.valid[1:]).any() for b in seen)  # reset rows do occur


def test_a_float32_estimate_is_refused():
    mdp = random_tabular_mdp(0)
    with pytest.raises(UserError, match="float64"):
        estimator_expectation(lambda b, p: np.ones(3, np.float32), mdp, user_policy(S=2))


@given(tabular_mdps())
def test_reinforce_is_unbiased_on_every_drawn_mdp(mdp):
    """The strategy's MDPs, with gamma drawn from [0.5, 1]: R(tau) against grad J^H, and the
    exact gradient against finite differences of the exact J."""
    assert mdp.S * (mdp.A * (mdp.S + 1)) ** mdp.time_limit <= 2000
    pol = user_policy(seed=int(mdp.S * 7 + mdp.A), S=mdp.S, A=mdp.A)
    assert_unbiased(reinforce(mdp.gamma), mdp, pol)
    assert_gradient(with_params(pol.params, lambda: exact_J(mdp, pol)), pol.params,
                    exact_gradient(mdp, pol))


# ---- the plugin and the docs' example, from outside the repository


def docs_example() -> str:
    text = DOCS.read_text()
    return re.search(r"<!-- the test file:[^>]*-->\n```python\n(.*?)```", text, re.S).group(1)


def test_the_docs_example_runs_outside_the_repository(tmp_path):
    """The copyable file of docs/testing.md, written to a directory outside the repository and run
    by pytest against the installed package: its fixtures come from the plugin (the pytest11
    entry point `pgnumpy`); every test passes. A copy with a planted missing 1/temp factor in the
    user's gradient, run in the same pytest process: its gradient checks fail."""
    assert Path(__file__).resolve().parents[1] not in tmp_path.resolve().parents
    source = docs_example()
    planted = source.replace("dz / np.exp(self.params[-1])", "dz")
    assert planted != source
    (tmp_path / "test_my_pg.py").write_text(source)
    (tmp_path / "test_planted.py").write_text(planted)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "test_my_pg.py", "test_planted.py"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1 and "2 failed, 8 passed" in out.stdout, out.stdout + out.stderr
    failed = sorted(re.findall(r"FAILED (\S+)", out.stdout))
    assert failed == ["test_planted.py::test_exact_gradient_matches_finite_differences_of_J",
                      "test_planted.py::test_policy_gradient_matches_finite_differences"], failed


def test_the_plugin_is_registered_as_pgnumpy(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("pgnumpy")


def test_the_plugins_fixtures(tabular_mdp, pg_rng):
    assert (tabular_mdp.S, tabular_mdp.A, tabular_mdp.gamma, tabular_mdp.time_limit) == \
        (2, 2, 0.9, 3)
    assert np.array_equal(tabular_mdp.r, random_tabular_mdp(0).r)
    assert pg_rng.integers(1 << 30) == np.random.default_rng(0).integers(1 << 30)


def test_bad_input_gets_one_line_that_says_what_to_fix():
    x = np.zeros(3)
    cases = [
        (lambda: assert_gradient(lambda p: float(p.sum()), x, np.ones(4)),
         "one entry per entry of x"),
        (lambda: assert_gradient(lambda p: p, x, np.ones(3)), "one number"),
        (lambda: assert_gradient(lambda p: float(p.sum()), x, np.ones(3), mode="fast"),
         "mode must be"),
        (lambda: assert_gradient(lambda p: float(p.sum()), x), "returns \\(value, gradient\\)"),
        (lambda: assert_gradient(lambda p: 0.0, np.array([np.nan]), np.ones(1)), "finite"),
        (lambda: assert_jvp(lambda p: p, x, np.ones(3)), "give the tangent v"),
        (lambda: random_tabular_mdp(0, S=0), "S must be an integer >= 1"),
        (lambda: random_tabular_mdp(0, gamma=1.5), "gamma must be in"),
        (lambda: estimator_expectation(lambda b, p: np.ones(1), random_tabular_mdp(0),
                                       object()), "probs\\(s\\)"),
        (lambda: estimator_expectation(lambda b, p: np.ones(1), random_tabular_mdp(0),
                                       user_policy(S=2), start="reset"), "give T"),
    ]
    for call, message in cases:
        with pytest.raises(UserError, match=message) as e:
            call()
        assert "\n" not in str(e.value)


def test_gradient_checks_do_not_load_the_exact_machinery():
    """`from pgnumpy.testing import assert_gradient` stays cheap: the exact checks (gymnasium,
    numba) load on first use of their names."""
    code = ("import sys; from pgnumpy.testing import assert_gradient; "
            "assert 'gymnasium' not in sys.modules and 'numba' not in sys.modules; "
            "from pgnumpy.testing import assert_unbiased; assert 'gymnasium' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
