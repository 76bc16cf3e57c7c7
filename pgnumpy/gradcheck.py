"""Compatibility: pgnumpy's finite-difference helpers are now public in `pgnumpy.testing`
(documented in docs/testing.md), which pgnumpy's own tests use. Kept so code that imported them
from here keeps working.

`central_fd` keeps its old contract, f may read x through views (x is perturbed in place entry by
entry), but now restores x even when f raises: it is `numeric_gradient(with_params(x, ...), x)`.
New code: `pgnumpy.testing.assert_gradient`, or `numeric_gradient` (which never writes into x).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pgnumpy.testing.gradients import H, norm_rel_error, numeric_gradient, rel_error, with_params

__all__ = ["H", "central_fd", "norm_rel_error", "rel_error"]


def central_fd(f: Callable[[np.ndarray], float], x: np.ndarray, eps=None) -> np.ndarray:
    """d f / d x by central differences in float64; f(x) is evaluated with x itself perturbed
    (restored afterwards), so f may read x through views, as before. eps: an absolute step per
    entry (scalar or shaped like x) instead of 6e-6 * max(1, |x_i|)."""
    if eps is None:
        return numeric_gradient(with_params(x, lambda: f(x)), x)
    steps = np.broadcast_to(np.asarray(eps, float), x.shape).reshape(-1)
    grad, flat = np.zeros(x.size), x.reshape(-1)
    for i in range(x.size):
        old = flat[i]
        try:
            flat[i] = old + steps[i]
            f_plus = f(x)
            flat[i] = old - steps[i]
            f_minus = f(x)
        finally:
            flat[i] = old
        grad[i] = (f_plus - f_minus) / (2 * steps[i])
    return grad.reshape(x.shape)
