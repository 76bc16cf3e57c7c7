"""The MLP's hand-derived backward against central finite differences (float64)."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pgnumpy.nn import MLP
from pgnumpy.testing import norm_rel_error, numeric_gradient, numeric_jvp, rel_error, with_params

# every entry within 1e-6 relative, or (for entries near 0) the whole vector within 1e-7
ENTRY_TOL, NORM_TOL = 1e-6, 1e-7


def loss_fn(net, x, R):
    return float(np.sum(net(x) * R))


def check(analytic, numeric):
    a, n = analytic, numeric
    return rel_error(a, n) <= ENTRY_TOL or norm_rel_error(a, n) <= NORM_TOL


@st.composite
def problems(draw):
    sizes = draw(st.lists(st.integers(1, 8), min_size=2, max_size=4))
    activation = draw(st.sampled_from(["tanh", "relu"]))
    batch = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    net = MLP(sizes, activation, rng=rng, dtype=np.float64, out_gain=1.0)
    net.params[:] += rng.normal(0, 0.3, net.params.shape)  # nonzero biases too
    x = rng.normal(size=(batch, sizes[0]))
    R = rng.normal(size=(batch, sizes[-1]))
    if activation == "relu":  # finite differences across a kink are meaningless: stay away
        _, cache = net.forward(x)
        h = x
        for W, b in zip(net.W[:-1], net.b[:-1]):
            z = h @ W + b
            assume(np.abs(z).min() > 1e-4)
            h = np.maximum(z, 0)
    return net, x, R


@given(problems())
def test_backward_matches_finite_differences(p):
    net, x, R = p
    y, cache = net.forward(x)
    grad, dx = net.backward(cache, R, input_grad=True)  # dL/dy = R for L = sum(y * R)
    assert check(grad, numeric_gradient(with_params(net.params, lambda: loss_fn(net, x, R)),
                                        net.params))
    assert check(dx, numeric_gradient(lambda xx: loss_fn(net, xx, R), x.copy()))


def test_a_wrong_gradient_fails_the_same_check():
    rng = np.random.default_rng(0)
    net = MLP([3, 5, 4, 2], "tanh", rng=rng, dtype=np.float64, out_gain=1.0)
    x, R = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    _, cache = net.forward(x)
    grad, _ = net.backward(cache, R)
    fd = numeric_gradient(with_params(net.params, lambda: loss_fn(net, x, R)), net.params)
    assert check(grad, fd)
    bad = grad.copy()
    bad[0] *= 1.01  # one weight-gradient entry off by 1%
    assert not check(bad, fd)
    # the tanh derivative dropped: relu's backward sees every h > 0, so dz = dh (identity)
    net.activation = "relu"
    wrong, _ = net.backward([cache[0]] + [np.abs(c) + 1e-3 for c in cache[1:]], R)
    assert not check(wrong, fd)


def test_views_share_the_flat_vector():
    rng = np.random.default_rng(1)
    net = MLP([4, 8, 2], rng=rng)
    assert all(np.shares_memory(W, net.params) for W in net.W)
    assert all(np.shares_memory(b, net.params) for b in net.b)
    x = rng.normal(size=(3, 4))
    y0 = net(x)
    net.params += 0.1  # an in-place update is seen by the forward
    assert not np.allclose(net(x), y0)
    assert net.params.size == 4 * 8 + 8 + 8 * 2 + 2


@pytest.mark.parametrize("shape", [(4, 8), (8, 4), (5, 5)])
def test_orthogonal_init_with_gain(shape):
    net = MLP([shape[0], shape[1], 3], rng=np.random.default_rng(2), hidden_gain=2.0)
    W = net.W[0]
    G = W.T @ W if shape[0] >= shape[1] else W @ W.T
    np.testing.assert_allclose(G, 4.0 * np.eye(min(shape)), atol=1e-12)
    assert np.all(net.b[0] == 0)


def test_same_seed_same_params_and_float32_matches_float64():
    a = MLP([4, 16, 2], rng=np.random.default_rng(3))
    b = MLP([4, 16, 2], rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a.params, b.params)
    c = MLP([4, 16, 2], rng=np.random.default_rng(3), dtype=np.float32)
    x = np.random.default_rng(4).normal(size=(5, 4))
    assert c(x).dtype == np.float32
    np.testing.assert_allclose(c(x), a(x), rtol=1e-5, atol=1e-6)
    y, _ = a.forward(x)
    np.testing.assert_array_equal(y, a(x))


def test_bad_sizes_and_activation_are_refused():
    with pytest.raises(ValueError, match="sizes need >= 2 entries"):
        MLP([4], rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="all >= 1"):
        MLP([4, 0, 2], rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="activation must be one of tanh, relu"):
        MLP([4, 2], "sigmoid", rng=np.random.default_rng(0))


# ---- Embedding ------------------------------------------------------------------------------

def emb_loss(emb, ids, R):
    return float(np.sum(emb(ids) * R))


def test_embedding_backward_matches_finite_differences_and_a_lost_repeat_fails():
    """(EMB.1): ids repeat (row 2 three times, row 0 twice), so a backward that keeps one
    contribution per row, dE[ids] += dx (fancy assignment), disagrees with the FD check."""
    from pgnumpy.nn import Embedding

    rng = np.random.default_rng(0)
    emb = Embedding(5, 3, rng=rng)
    ids = np.array([[2, 0, 2], [4, 2, 0]])
    R = rng.normal(size=(2, 3, 3))  # dL/dx for L = sum(E[ids] * R)
    fd = numeric_gradient(with_params(emb.params, lambda: emb_loss(emb, ids, R)), emb.params)
    assert check(emb.backward(ids, R), fd)
    lost = np.zeros((5, 3))
    lost[ids] += R  # buffered: one write per distinct row survives
    assert not check(lost.ravel(), fd)
    assert np.shares_memory(emb.E, emb.params)


# ---- forward mode: the Jacobian-vector product (MLP.4-6), used by TRPO's Fisher products


@given(problems())
def test_jvp_matches_finite_differences(p):
    """J v and J_x dx against central differences of the forward along v and along dx."""
    net, x, R = p
    rng = np.random.default_rng(int(abs(R).sum() * 1e6) % 2**32)
    v, dx = rng.normal(size=net.params.shape), rng.normal(size=x.shape)
    _, cache = net.forward(x)
    jv = net.jvp(cache, v)
    assert jv.shape == (len(x), net.sizes[-1])
    assert check(jv, numeric_jvp(with_params(net.params, lambda: net(x)), net.params, v))
    xx = x.copy()
    jx = net.jvp(cache, np.zeros_like(v), dx=dx)  # the input direction alone
    assert check(jx, numeric_jvp(lambda z: net(z.reshape(x.shape)), xx.reshape(-1),
                                 dx.reshape(-1)))
    assert check(net.jvp(cache, v, dx=dx), jv + jx)  # linear in (v, dx) jointly


@given(problems())
def test_jvp_is_the_transpose_of_backward(p):
    """<u, J v> = <J^T u, v> for random u, v: forward and reverse mode agree to round-off."""
    net, x, R = p
    rng = np.random.default_rng(int(abs(R).sum() * 1e6) % 2**32)
    v = rng.normal(size=net.params.shape)
    _, cache = net.forward(x)
    lhs = float(np.sum(R * net.jvp(cache, v)))
    grad, _ = net.backward(cache, R)
    rhs = float(grad @ v)
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, np.abs(R).sum() * np.abs(v).sum())
