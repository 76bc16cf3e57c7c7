"""Categorical: gradients w.r.t. the logits by finite differences, the lemma, extreme logits."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgnumpy.distributions import Categorical, DiagGaussian, log_softmax
from pgnumpy.testing import norm_rel_error, numeric_gradient

TOL = 1e-7  # norm-relative; central differences in float64 reach ~1e-10 here


@st.composite
def logits(draw):
    B, A, seed = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    return rng.uniform(-5, 5, (B, A)), rng.integers(0, A, B), rng


@given(logits())
def test_log_prob_gradient(d):
    z, act, _ = d
    g = Categorical(z).log_prob_grad(act)
    fd = numeric_gradient(lambda zz: float(Categorical(zz).log_prob(act).sum()), z.copy())
    assert norm_rel_error(g, fd) < TOL


@given(logits())
def test_entropy_gradient(d):
    z, _, _ = d
    g = Categorical(z).entropy_grad()
    fd = numeric_gradient(lambda zz: float(Categorical(zz).entropy().sum()), z.copy())
    assert norm_rel_error(g, fd) < TOL or np.abs(g - fd).max() < 1e-9  # A = 1: both are 0


@given(logits())
def test_kl_gradient_wrt_the_second_argument(d):
    z, _, rng = d
    p = Categorical(rng.uniform(-5, 5, z.shape))
    g = p.kl_grad_other(Categorical(z))
    fd = numeric_gradient(lambda zz: float(p.kl(Categorical(zz)).sum()), z.copy())
    assert norm_rel_error(g, fd) < TOL or np.abs(g - fd).max() < 1e-9


def test_a_wrong_entropy_gradient_fails_the_same_check():
    z = np.random.default_rng(0).uniform(-3, 3, (3, 4))
    d = Categorical(z)
    wrong = -d.probs * d.logp_all  # the "+ H" term forgotten
    fd = numeric_gradient(lambda zz: float(Categorical(zz).entropy().sum()), z.copy())
    assert norm_rel_error(d.entropy_grad(), fd) < TOL
    assert norm_rel_error(wrong, fd) > 1e-3


@given(logits())
def test_grad_log_prob_lemma_at_the_logits(d):
    """sum_a p(a) (onehot(a) - p) = 0 exactly (EGLP.1 at the distribution's parameters)."""
    z, _, _ = d
    dist = Categorical(z)
    B, A = z.shape
    total = sum(dist.probs[:, [a]] * dist.log_prob_grad(np.full(B, a)) for a in range(A))
    assert np.abs(total).max() < 1e-12


def test_extreme_logits_are_finite_and_exact():
    z = np.array([[1e4, 0.0], [-1e4, 1e4], [1e4, 1e4], [-1e4, -1e4]])
    d = Categorical(z)
    assert np.all(np.isfinite(d.logp_all)) and np.all(np.isfinite(d.entropy()))
    np.testing.assert_allclose(d.probs, [[1, 0], [0, 1], [0.5, 0.5], [0.5, 0.5]], atol=1e-15)
    np.testing.assert_allclose(
        d.log_prob(np.array([1, 0, 0, 1])), [-1e4, -2e4, -np.log(2), -np.log(2)], rtol=1e-12
    )
    np.testing.assert_array_equal(d.mode(), [0, 1, 0, 0])
    assert np.all(d.sample(np.random.default_rng(0))[:2] == [0, 1])
    # naive softmax would overflow here; log_softmax stays exact
    np.testing.assert_allclose(
        log_softmax(np.array([[1e4, 1e4 - 1.0]])),
        [[-np.log1p(np.exp(-1)), -1 - np.log1p(np.exp(-1))]],
        rtol=1e-12,
    )


def test_sample_frequencies_match_probs():
    p = np.array([0.1, 0.2, 0.3, 0.4])
    n = 20000
    d = Categorical(np.log(np.tile(p, (n, 1))))
    counts = np.bincount(d.sample(np.random.default_rng(7)), minlength=4)
    se = np.sqrt(n * p * (1 - p))  # binomial standard error of each count
    assert np.all(np.abs(counts - n * p) < 5 * se), (counts, n * p)


def test_entropy_and_kl_values():
    for A in (1, 2, 5):
        assert Categorical(np.zeros((1, A))).entropy()[0] == pytest.approx(np.log(A), abs=1e-12)
    rng = np.random.default_rng(1)
    p, q = Categorical(rng.normal(size=(50, 4))), Categorical(rng.normal(size=(50, 4)))
    assert np.all(p.kl(q) >= 0) and np.allclose(p.kl(p), 0, atol=1e-15)


# ---- diagonal Gaussian, parametrised by (mean, log_std)


@st.composite
def gaussians(draw):
    B, D, seed = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, D)), rng.uniform(-1.5, 1.0, (B, D)), rng.normal(size=(B, D)), rng


def fd_pair(f, mean, log_std):
    """Finite differences of a scalar f(mean, log_std) w.r.t. each argument."""
    return (
        numeric_gradient(lambda m: f(m, log_std), mean.copy()),
        numeric_gradient(lambda s: f(mean, s), log_std.copy()),
    )


@given(gaussians())
def test_gaussian_log_prob_gradient(g):
    mean, log_std, act, _ = g
    gm, gs = DiagGaussian(mean, log_std).log_prob_grad(act)
    fm, fs = fd_pair(lambda m, s: float(DiagGaussian(m, s).log_prob(act).sum()), mean, log_std)
    assert norm_rel_error(gm, fm) < TOL and norm_rel_error(gs, fs) < TOL


@given(gaussians())
def test_gaussian_entropy_gradient(g):
    mean, log_std, _, _ = g
    gm, gs = DiagGaussian(mean, log_std).entropy_grad()
    fm, fs = fd_pair(lambda m, s: float(DiagGaussian(m, s).entropy().sum()), mean, log_std)
    assert np.abs(gm - fm).max() < 1e-9 and norm_rel_error(gs, fs) < TOL


@given(gaussians())
def test_gaussian_kl_gradient_wrt_the_second_argument(g):
    mean, log_std, _, rng = g
    p = DiagGaussian(rng.normal(size=mean.shape), rng.uniform(-1, 1, mean.shape))
    gm, gs = p.kl_grad_other(DiagGaussian(mean, log_std))
    fm, fs = fd_pair(lambda m, s: float(p.kl(DiagGaussian(m, s)).sum()), mean, log_std)
    assert norm_rel_error(gm, fm) < TOL and norm_rel_error(gs, fs) < TOL


def test_a_wrong_gaussian_gradient_fails_the_same_check():
    rng = np.random.default_rng(0)
    mean, log_std, act = (
        rng.normal(size=(3, 2)),
        rng.uniform(-1, 1, (3, 2)),
        rng.normal(size=(3, 2)),
    )
    _, gs = DiagGaussian(mean, log_std).log_prob_grad(act)
    _, fs = fd_pair(lambda m, s: float(DiagGaussian(m, s).log_prob(act).sum()), mean, log_std)
    assert norm_rel_error(gs + 1.0, fs) > 1e-3  # "z^2" instead of "z^2 - 1"


def test_gaussian_values_and_extremes():
    d = DiagGaussian(np.zeros((1, 1)), np.zeros(1))
    assert d.log_prob(np.zeros((1, 1)))[0] == pytest.approx(-0.5 * np.log(2 * np.pi))
    assert d.entropy()[0] == pytest.approx(0.5 * np.log(2 * np.pi * np.e))
    p, q = (
        DiagGaussian(np.zeros((1, 2)), np.zeros(2)),
        DiagGaussian(np.ones((1, 2)), np.log(2.0) * np.ones(2)),
    )
    assert p.kl(p)[0] == pytest.approx(0.0, abs=1e-15)
    # closed form per dim: log 2 + (1 + 1) / (2 * 4) - 1/2
    assert p.kl(q)[0] == pytest.approx(2 * (np.log(2) + 0.25 - 0.5))
    tiny = DiagGaussian(np.zeros((1, 1)), np.array([-20.0]))  # sigma = 2e-9
    assert np.isfinite(tiny.log_prob(np.array([[1e-9]])))[0]
    big = DiagGaussian(np.zeros((1, 1)), np.array([20.0]))
    assert np.isfinite(big.log_prob(np.array([[1e6]])))[0]


@given(st.integers(1, 3), st.integers(0, 2**16))
def test_gaussian_grad_log_prob_lemma_by_gauss_hermite_quadrature(D, seed):
    """E_{a~N}[d log p / d(mean, log_std)] = 0 exactly (EGLP.1): Gauss-Hermite with 20 nodes is
    exact for polynomials of degree <= 39, and both gradients are polynomials (degree <= 2) in a."""
    rng = np.random.default_rng(seed)
    mean, log_std = rng.normal(size=D), rng.uniform(-1, 1, D)
    x, w = np.polynomial.hermite_e.hermegauss(20)  # weight exp(-x^2/2)
    w = w / w.sum()
    for d in range(D):
        a = np.tile(mean, (len(x), 1))
        a[:, d] = mean[d] + np.exp(log_std[d]) * x
        gm, gs = DiagGaussian(np.tile(mean, (len(x), 1)), log_std).log_prob_grad(a)
        assert abs(w @ gm[:, d]) < 1e-10 and abs(w @ gs[:, d]) < 1e-10


# ---- the Fisher of each distribution in its own parameters (CAT.7, GAU.6), as TRPO uses it


def columns(apply, n):
    """The matrix of a linear map on R^n, column by column."""
    return np.stack([apply(e) for e in np.eye(n)], axis=1)


def check_categorical_fisher(row):
    p = Categorical(row[None])
    A = len(row)
    M = columns(lambda u: p.fisher_vp(u[None])[0], A)
    hess = np.stack([numeric_gradient(lambda zz, j=j: float(
        p.kl_grad_other(Categorical(zz[None]))[0, j]),
                                row.copy()) for j in range(A)])
    assert np.abs(M - hess).max() < 1e-9

    def kl(zz):
        return float(p.kl(Categorical(zz[None]))[0])

    # second differences: truncation ~h^2 (4th derivative) ~ 1e-8, round-off ~eps / h^2 ~ 2e-8
    h, e = 1e-4, np.eye(A)
    second = np.array([[(kl(row + h * (e[i] + e[j])) - kl(row + h * (e[i] - e[j]))
                         - kl(row - h * (e[i] - e[j])) + kl(row - h * (e[i] + e[j])))
                        / (4 * h * h) for j in range(A)] for i in range(A)])
    assert np.abs(M - second).max() < 1e-6
    scores = [p.log_prob_grad(np.array([a]))[0] for a in range(A)]
    outer = sum(p.probs[0, a] * np.outer(s, s) for a, s in enumerate(scores))
    assert np.abs(M - outer).max() < 1e-14


@given(logits())
def test_categorical_fisher_is_the_kl_hessian_at_equal_parameters(d):
    """M = diag(p) - p p^T (CAT.7) three ways, on each row: (a) central differences of the KL's
    exact gradient (CAT.6) in the second argument, at q = p; (b) second differences of the KL
    value itself; (c) E_a[s s^T] with s = onehot(a) - p (CAT.2), the definition."""
    z, _, _ = d
    for row in z:
        check_categorical_fisher(row)


def check_gaussian_fisher(m0, s0):
    D = len(m0)
    p = DiagGaussian(m0[None], s0[None])

    def kl_grad(theta):
        gm, gs = p.kl_grad_other(DiagGaussian(theta[None, :D], theta[None, D:]))
        return np.concatenate([gm[0], gs[0]])

    theta = np.concatenate([m0, s0])
    hess = np.stack([numeric_gradient(lambda t, j=j: float(kl_grad(t)[j]), theta.copy())
                     for j in range(2 * D)])
    M = columns(lambda u: np.concatenate([x[0] for x in p.fisher_vp(u[None, :D], u[None, D:])]),
                2 * D)
    assert norm_rel_error(M, hess) < 1e-9
    x, w = np.polynomial.hermite_e.hermegauss(20)
    w = w / w.sum()
    for dim in range(D):  # the dimensions are independent: one 2x2 block each
        a = np.tile(m0, (len(x), 1))
        a[:, dim] = m0[dim] + np.exp(s0[dim]) * x
        gm, gs = DiagGaussian(np.tile(m0, (len(x), 1)), s0).log_prob_grad(a)
        score = np.stack([gm[:, dim], gs[:, dim]], axis=1)
        block = (w[:, None] * score).T @ score
        idx = [dim, D + dim]
        assert np.abs(block - M[np.ix_(idx, idx)]).max() < 1e-10 * max(1.0, M.max())


@given(gaussians())
def test_gaussian_fisher_is_the_kl_hessian_at_equal_parameters(g):
    """diag(1/sigma^2 on the means, 2 on the log-stds) (GAU.6): central differences of (GAU.5)
    at q = p, in (mean, log_std) jointly, and E[s s^T] by Gauss-Hermite quadrature (exact: the
    scores (GAU.2) are polynomials of degree <= 2)."""
    mean, log_std, _, _ = g
    for m0, s0 in zip(mean, log_std):
        check_gaussian_fisher(m0, s0)
