"""Central finite differences for gradient tests (float64).

Central differences (f(x+h) - f(x-h)) / 2h have O(h^2) truncation error against O(h) for
one-sided ones; with round-off O(eps/h) the best step is h ~ eps^(1/3) ~ 6e-6 relative to the
scale of x, which is why the step scales with max(1, |x_i|).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

H = 6e-6  # ~ cube root of float64 machine epsilon


def central_fd(f: Callable[[np.ndarray], float], x: np.ndarray, eps=None) -> np.ndarray:
    """d f / d x by central differences, perturbing x IN PLACE entry by entry (and restoring it).

    In place, so x may be a network's flat parameter vector that f reads through views.
    """
    grad = np.zeros(x.shape)
    flat, g = x.reshape(-1), grad.reshape(-1)
    steps = H * np.maximum(1.0, np.abs(flat)) if eps is None else np.broadcast_to(eps, flat.shape)
    for i in range(flat.size):
        old, h = flat[i], steps[i]
        flat[i] = old + h
        f_plus = f(x)
        flat[i] = old - h
        f_minus = f(x)
        flat[i] = old
        g[i] = (f_plus - f_minus) / (2 * h)
    return grad


def rel_error(analytic: np.ndarray, numeric: np.ndarray, floor: float = 1e-8) -> float:
    """max_i |a_i - n_i| / max(|a_i| + |n_i|, floor): every entry must agree."""
    a, n = np.asarray(analytic, float), np.asarray(numeric, float)
    return float(np.max(np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), floor), initial=0.0))


def norm_rel_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """||a - n|| / (||a|| + ||n||): 0 when equal, 1 when opposite or one is 0."""
    a, n = np.asarray(analytic, float).ravel(), np.asarray(numeric, float).ravel()
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), 1e-300))
