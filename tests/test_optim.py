"""Adam by hand on a tiny problem, and global-norm clipping."""

import numpy as np
import pytest

from pgnumpy.optim import Adam, clip_grad_norm
from pgnumpy.testing import numeric_gradient


def test_two_adam_steps_by_hand():
    p = np.array([1.0, -2.0])
    opt = Adam(p, lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    g1, g2 = np.array([0.5, -1.0]), np.array([0.1, 0.2])
    opt.step(g1)
    # step 1: m = 0.1 g, v = 0.01 g^2; m_hat = g, v_hat = g^2 -> p -= lr * sign(g)
    np.testing.assert_allclose(p, [0.9, -1.9], atol=1e-7)
    opt.step(g2)
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.99 * 0.01 * g1**2 + 0.01 * g2**2
    step = 0.1 * (m / (1 - 0.9**2)) / (np.sqrt(v / (1 - 0.99**2)) + 1e-8)
    p1 = np.array([1.0, -2.0]) - 0.1 * g1 / (np.abs(g1) + 1e-8)  # step 1 exactly
    np.testing.assert_allclose(p, p1 - step, rtol=1e-12)


def test_adam_minimises_a_quadratic_and_moves_params_in_place():
    target = np.array([3.0, -1.0, 0.5])
    p = np.zeros(3)
    view = p[1:]  # a view, as MLP layers are
    opt = Adam(p, lr=0.05)
    for _ in range(2000):
        opt.step(2 * (p - target))
    np.testing.assert_allclose(p, target, atol=1e-3)
    assert view[0] == p[1]


def test_state_dict_round_trip_reproduces_the_next_step():
    rng = np.random.default_rng(0)
    p1 = rng.normal(size=5)
    a = Adam(p1, lr=0.01)
    for _ in range(3):
        a.step(rng.normal(size=5))
    p2 = p1.copy()
    b = Adam(p2, lr=0.5)
    b.load_state_dict(a.state_dict())
    g = rng.normal(size=5)
    a.step(g)
    b.step(g)
    np.testing.assert_array_equal(p1, p2)


@pytest.mark.parametrize("kw, msg", [({"lr": 0.0}, "lr must be > 0"),
                                     ({"lr": -1.0}, "lr must be > 0"),
                                     ({"betas": (0.9, 1.0)}, "betas must be in"),
                                     ({"eps": 0.0}, "eps must be > 0")])
def test_bad_hyperparameters_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        Adam(np.zeros(2), **kw)


def test_clip_grad_norm():
    g = np.array([3.0, 4.0])
    assert clip_grad_norm(g, 1.0) == 5.0
    np.testing.assert_allclose(np.linalg.norm(g), 1.0)
    np.testing.assert_allclose(g, [0.6, 0.8])
    h = np.array([0.3, 0.4])
    assert clip_grad_norm(h, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(h, [0.3, 0.4])


def test_central_fd_of_a_known_function():
    x = np.linspace(-3, 3, 7)
    np.testing.assert_allclose(numeric_gradient(lambda z: float(np.sum(np.sin(z))), x), np.cos(x),
                               rtol=1e-9, atol=1e-10)
