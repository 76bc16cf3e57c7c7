"""Gradient checks against central differences in float64, for anyone's hand-written gradients.

Central differences (f(x + h) - f(x - h)) / 2h have truncation error h^2 f''' / 6 and round-off
error ~ eps |f| / h; with h = eps^(1/3) ~ 6e-6 (relative to max(1, |x_i|)) both are ~ 4e-11 of
the function's scale. So a correct float64 gradient agrees to far better than the default
relative tolerance 1e-7, while a wrong one (a missing factor, a transposed Jacobian, a dropped
term) is off by 1e-3 or more: the tolerance leaves a margin of ~1000 on both sides.

The check compares whole vectors, ||a - n|| <= rtol (||a|| + ||n||) + ||noise||, where noise is
the round-off of the differences themselves (NOISE_ULPS ulp of max |f| over the two evaluations,
divided by the step): it keeps a gradient that is zero (or nearly) from failing on round-off.

Directional mode (large x): k random directions d_j, each checked by ONE central difference
(f(x + d_j) - f(x - d_j)) / 2 against g . d_j, so the cost is 2k evaluations instead of 2n.
The k numbers are compared as one vector with the same rule. A wrong gradient g' = g + delta
passes only if the projections of delta are tiny next to those of g: with Gaussian directions both
sums of squared projections are chi^2_k (in the step-weighted norm), so an error the full check
would report as rho passes with probability about P(F_{k,k} <= (rtol / rho)^2)
~ (rtol / rho)^k / ((k/2) B(k/2, k/2)): 6e-29 for k = 16 and rho = 1e-5, never in practice.

Nothing here writes into the caller's arrays: f is called on a float64 copy, a new one each time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pgnumpy.errors import UserError

H = 6e-6  # ~ cube root of float64 machine epsilon
RTOL = 1e-7
NOISE_ULPS = 32  # f's own rounding, assumed within 32 ulp of |f| (a sum of many terms)
FULL_MAX = 1024  # mode="auto": every coordinate up to this size, random directions above
K_DIRECTIONS = 16
EPS = float(np.finfo(np.float64).eps)

TOL_SOURCE = (f"central differences in float64 with step h = {H:g} * max(1, |x_i|) are accurate "
              f"to ~h^2 ~ eps*|f|/h ~ 4e-11 relative; rtol {RTOL:g} keeps a margin of ~1000 above "
              f"that and ~1000 below the error of a wrong factor or term (>= 1e-3); the absolute "
              f"part is the differences' own round-off, {NOISE_ULPS} ulp of max|f| / h")


def _refuse_low_precision(what: str, a) -> None:
    dt = np.asarray(a).dtype
    if dt.kind == "f" and dt.itemsize < 8:
        raise UserError(
            f"pgnumpy.testing checks gradients in float64, and {what} is {dt}: in {dt} the "
            f"rounding of f divided by the finite-difference step makes a correct gradient look "
            f"~1% wrong; build the model in float64 (pgnumpy: dtype=np.float64) and pass float64 "
            f"arrays")


def _as_f64(what: str, x) -> np.ndarray:
    """A float64 copy of x (never a view of the caller's array), refusing float16/float32."""
    _refuse_low_precision(what, x)
    a = np.array(x, dtype=np.float64, copy=True)
    if a.dtype.kind != "f" or not np.all(np.isfinite(a)):
        raise UserError(f"{what} must be finite real numbers")
    return a


def _scalar(y) -> float:
    _refuse_low_precision("f's value", y)
    a = np.asarray(y)
    if a.size != 1:
        raise UserError(f"f must return one number (a scalar loss), got shape {a.shape}; for "
                        f"array outputs use assert_jvp / assert_vjp")
    return float(a.reshape(()))


def _vector(y, what: str) -> np.ndarray:
    _refuse_low_precision(what, y)
    return np.asarray(y, dtype=np.float64)


def with_params(buffer: np.ndarray, fn: Callable[[], float]) -> Callable[[np.ndarray], float]:
    """f(p) = fn() evaluated with `buffer` holding p, restored afterwards (even if fn raises).

    For models that read their parameters from their own flat buffer (pgnumpy's MLP, policies
    and critics: `net.params`), so that f can take the parameters as its argument:
        assert_gradient(with_params(pol.params, lambda: loss(pol)), pol.params, grad)
    """
    _refuse_low_precision("the parameter buffer", buffer)

    def f(p: np.ndarray):
        old = buffer.copy()
        try:
            buffer[...] = np.reshape(p, buffer.shape)
            return fn()
        finally:
            buffer[...] = old

    return f


def _steps(x: np.ndarray, h: float | None) -> np.ndarray:
    return (H if h is None else h) * np.maximum(1.0, np.abs(x))


def numeric_gradient(f: Callable[[np.ndarray], float], x: np.ndarray,
                     h: float | None = None) -> np.ndarray:
    """d f / d x by central differences in float64, shaped like x; f is called on a working copy
    (x itself is never written). Step h * max(1, |x_i|), h = 6e-6 by default."""
    g, _ = _coordinate_differences(f, _as_f64("x", x), h)
    return g


def _jvp_step(x0: np.ndarray, v: np.ndarray, h) -> float:
    """t such that x +- t v moves no coordinate more than h * max(1, |x_i|)."""
    return (H if h is None else h) / max(float(np.max(np.abs(v) / np.maximum(1.0, np.abs(x0)),
                                                      initial=0.0)), 1e-300)


def numeric_jvp(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, v: np.ndarray,
                h: float | None = None) -> np.ndarray:
    """J(x) v of an array-valued f by one central difference (f(x + t v) - f(x - t v)) / 2t in
    float64, t such that no coordinate moves more than h * max(1, |x_i|); x is never written."""
    x0, v0 = _as_f64("x", x), _as_f64("v", v)
    if v0.shape != x0.shape:
        raise UserError(f"the direction v has shape {v0.shape}, x has shape {x0.shape}")
    t = _jvp_step(x0, v0, h)
    return (_vector(f(x0 + t * v0), "f's value") - _vector(f(x0 - t * v0), "f's value")) / (2 * t)


def _coordinate_differences(f, x0: np.ndarray, h) -> tuple[np.ndarray, np.ndarray]:
    """(numeric gradient, round-off bound per coordinate). Each evaluation gets its own copy, so
    an f that writes into its argument spoils nothing."""
    x0f = x0.reshape(-1)
    steps = _steps(x0f, h)
    g, noise = np.zeros(x0f.size), np.zeros(x0f.size)
    for i in range(x0f.size):
        values = []
        for sign in (1.0, -1.0):
            work = x0.copy()
            work.reshape(-1)[i] += sign * steps[i]
            values.append(_scalar(f(work)))
        fp, fm = values
        g[i] = (fp - fm) / (2 * steps[i])
        noise[i] = NOISE_ULPS * EPS * max(abs(fp), abs(fm)) / steps[i]
    return g.reshape(x0.shape), noise


def rel_error(analytic: np.ndarray, numeric: np.ndarray, floor: float = 1e-8) -> float:
    """max_i |a_i - n_i| / max(|a_i| + |n_i|, floor): every entry must agree."""
    a, n = np.asarray(analytic, float), np.asarray(numeric, float)
    return float(np.max(np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), floor), initial=0.0))


def norm_rel_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """||a - n|| / (||a|| + ||n||): 0 when equal, 1 when opposite or one is 0."""
    a, n = np.asarray(analytic, float).ravel(), np.asarray(numeric, float).ravel()
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), 1e-300))


@dataclass
class GradCheck:
    """What a passed check measured (returned so a test can log or assert more)."""

    error: float  # ||a - n|| / (||a|| + ||n||)
    rtol: float
    atol: float  # ||noise|| / (||a|| + ||n||): the round-off part of the tolerance
    mode: str
    evaluations: int


def _index(i: int, shape: tuple) -> str:
    return "x[" + ", ".join(str(int(j)) for j in np.unravel_index(i, shape)) + "]"


def _fmt(v: float) -> str:
    return f"{v: .6e}"


def _hints(a: np.ndarray, n: np.ndarray, noise: float) -> list[str]:
    """Common causes, recognised from the two vectors."""
    out = []
    na, nn = np.linalg.norm(a), np.linalg.norm(n)
    if nn <= noise and na > noise:
        out.append("the numeric gradient is zero: f did not change when x was perturbed. f must "
                   "compute from its argument; a model that reads its own parameter buffer "
                   "needs with_params(buffer, fn)")
    elif na <= noise and nn > noise:
        out.append("the analytic gradient is zero where f does change: a term dropped entirely?")
    elif nn > 0 and na > 0:
        c = float(a.ravel() @ n.ravel() / (nn * nn))
        if np.linalg.norm(a - c * n) <= 1e-6 * na:
            out.append(f"analytic = {c:.6g} x numeric in every coordinate: a constant factor "
                       f"missing or extra (a 1/n, a 2, a temperature, a gamma^t?)")
        cos = float(a.ravel() @ n.ravel() / (na * nn))
        out.append(f"cosine(analytic, numeric) = {cos:.6f}")
    return out


def _report(title: str, a: np.ndarray, n: np.ndarray, noise: np.ndarray, rtol: float,
            rtol_source: str, mode: str, labels: Callable[[int], str], what: str,
            extra: list[str], evaluations: int) -> GradCheck:
    scale = float(np.linalg.norm(a) + np.linalg.norm(n))
    err = float(np.linalg.norm(a - n))
    atol = float(np.linalg.norm(noise))
    if err <= rtol * scale + atol:
        return GradCheck(err / max(scale, 1e-300), rtol, atol / max(scale, 1e-300), mode,
                         evaluations)
    diff = np.abs(a - n).ravel()
    worst = np.argsort(-diff, kind="stable")[:5]
    lines = [
        f"{title}: the analytic values disagree with central differences",
        f"  relative error ||a - n|| / (||a|| + ||n||) = {err / max(scale, 1e-300):.3e}, "
        f"tolerance {rtol:.1e} (+ round-off {atol / max(scale, 1e-300):.1e})",
        f"  tolerance from: {rtol_source}",
        f"  checked: {mode}",
        f"  worst {what} (analytic vs numeric, difference):",
    ]
    af, nf = a.ravel(), n.ravel()
    for i in worst:
        lines.append(f"    {labels(int(i))}: {_fmt(af[i])} vs {_fmt(nf[i])}  ({diff[i]:.2e})")
    lines += ["  " + h for h in _hints(a, n, atol) + extra]
    raise AssertionError("\n".join(lines))


def _analytic_from(f, grad, x0: np.ndarray) -> np.ndarray:
    if grad is None:  # f returns (value, gradient), as pgnumpy's loss_and_grad methods do
        out = f(x0.copy())
        if not (isinstance(out, tuple) and len(out) == 2):
            raise UserError("grad=None means f returns (value, gradient); pass grad= (an array "
                            "or a function of x) otherwise")
        g = out[1]
    else:
        g = grad(x0.copy()) if callable(grad) else grad
    _refuse_low_precision("the analytic gradient", g)
    g = np.asarray(g, dtype=np.float64)
    if g.size != x0.size:
        raise UserError(f"the analytic gradient has shape {g.shape} but x has shape {x0.shape}: "
                        f"a gradient has one entry per entry of x (a transposed Jacobian?)")
    return g.reshape(x0.shape)


def _unchanged(x, snapshot: np.ndarray, what: str = "x") -> None:
    if not np.array_equal(np.asarray(x), snapshot):
        raise UserError(f"{what} changed during the check: f (or the gradient function) wrote "
                        f"into its argument or into {what}")


def assert_gradient(f: Callable[[np.ndarray], float], x: np.ndarray,
                    grad: np.ndarray | Callable[[np.ndarray], np.ndarray] | None = None, *,
                    mode: str = "auto", k: int = K_DIRECTIONS, rtol: float = RTOL,
                    h: float | None = None, seed: int = 0) -> GradCheck:
    """Assert that `grad` is the gradient of the scalar f at x, by central differences in float64.

    grad: the analytic gradient at x (an array shaped like x), a function of x returning it, or
        None when f returns (value, gradient).
    mode: "full" (every coordinate, 2n evaluations of f), "directional" (k random directions,
        2k evaluations; see the module docstring for why a wrong gradient cannot pass), or "auto":
        full up to n = 1024 entries, directional above.
    rtol: relative tolerance on ||a - n|| / (||a|| + ||n||); the default 1e-7 and where it comes
        from are in the message of a failed check.
    Raises AssertionError naming the relative error, the tolerance, and the worst coordinates
    (or directions) with analytic and numeric values; UserError on float32/float16 input.
    Never writes into x (f gets a float64 copy); raises if x changed anyway during the check.
    """
    x0 = _as_f64("x", x)
    snapshot = np.array(x, copy=True)
    a = _analytic_from(f, grad, x0)
    if grad is None:
        f_val = f
        f = lambda z: f_val(z)[0]  # noqa: E731
    if mode == "auto":
        mode = "full" if x0.size <= FULL_MAX else "directional"
    rtol_source = TOL_SOURCE if rtol == RTOL else f"rtol={rtol:g} given by the caller"
    if mode == "full":
        n, noise = _coordinate_differences(f, x0, h)
        _unchanged(x, snapshot)
        return _report("assert_gradient", a, n, noise, rtol, rtol_source,
                       f"every coordinate (n = {x0.size}, {2 * x0.size} evaluations of f)",
                       lambda i: _index(i, x0.shape), "coordinates", [], 2 * x0.size)
    if mode != "directional":
        raise UserError(f"mode must be 'auto', 'full' or 'directional', got {mode!r}")
    if not isinstance(k, int) or k < 1:
        raise UserError(f"k (the number of directions) must be an integer >= 1, got {k!r}")
    an, num, noise = _directional(f, x0, a, k, h, seed)
    _unchanged(x, snapshot)
    return _report("assert_gradient", an, num, noise, rtol, rtol_source,
                   f"{k} random directions d_j (Gaussian, scaled by the step "
                   f"{H if h is None else h:g} * max(1, |x_i|)), one central difference each: "
                   f"{2 * k} evaluations of f "
                   f"for n = {x0.size}",
                   lambda j: f"direction {j}", "directions (g.d_j / h)",
                   ["run mode='full' (2n evaluations) to see which coordinates are wrong"],
                   2 * k)


def _directional(f, x0: np.ndarray, a: np.ndarray, k: int, h, seed: int):
    """(analytic g.d_j / h, numeric (f(x+d_j) - f(x-d_j)) / 2h, round-off bound), j < k."""
    rng = np.random.default_rng(seed)
    step = H if h is None else h
    s = _steps(x0, h)  # the per-coordinate step of the full mode
    an, num, noise = np.zeros(k), np.zeros(k), np.zeros(k)
    for j in range(k):
        u = rng.normal(size=x0.shape)
        d = s * u / np.linalg.norm(u)  # every coordinate moves at most its full-mode step
        fp = _scalar(f(x0 + d))
        fm = _scalar(f(x0 - d))
        num[j] = (fp - fm) / (2 * step)
        an[j] = float(a.ravel() @ d.ravel()) / step
        noise[j] = NOISE_ULPS * EPS * max(abs(fp), abs(fm)) / step
    return an, num, noise


def _directions(x0: np.ndarray, v, k: int, seed: int) -> list[np.ndarray]:
    if v is not None:
        v = _as_f64("v", v)
        if v.shape != x0.shape:
            raise UserError(f"the direction v has shape {v.shape}, x has shape {x0.shape}")
        return [v]
    rng = np.random.default_rng(seed)
    return [rng.normal(size=x0.shape) for _ in range(k)]


def assert_jvp(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
               jvp: np.ndarray | Callable[[np.ndarray, np.ndarray], np.ndarray],
               v: np.ndarray | None = None, *, k: int = 4, rtol: float = RTOL,
               h: float | None = None, seed: int = 0) -> GradCheck:
    """Assert that jvp is the Jacobian-vector product J(x) v of an array-valued f, against
    (f(x + t v) - f(x - t v)) / 2t in float64, t scaled so that no coordinate moves more than
    h * max(1, |x_i|).

    jvp: a function (x, v) -> J v, or the array J v for the given v.
    v: the tangent; None draws k random Gaussian tangents (jvp must then be a function).
    A Fisher-vector product F v is the JVP of the gradient of the KL: f = that gradient.
    """
    x0 = _as_f64("x", x)
    snapshot = np.array(x, copy=True)
    if v is None and not callable(jvp):
        raise UserError("assert_jvp: give the tangent v with an array jvp, or jvp as a function "
                        "(x, v) -> J v to check random tangents")
    an, num, noise = [], [], []
    for vj in _directions(x0, v, k, seed):
        aj = jvp(x0.copy(), vj.copy()) if callable(jvp) else jvp
        aj = _vector(aj, "the analytic JVP")
        t = _jvp_step(x0, vj, h)
        fp = _vector(f(x0 + t * vj), "f's value")
        fm = _vector(f(x0 - t * vj), "f's value")
        if aj.shape != fp.shape:
            raise UserError(f"the analytic JVP has shape {aj.shape} but f(x) has shape "
                            f"{fp.shape}: J v has one entry per output (a transposed Jacobian?)")
        an.append(aj.ravel())
        num.append(((fp - fm) / (2 * t)).ravel())
        noise.append(NOISE_ULPS * EPS * np.maximum(np.abs(fp), np.abs(fm)).ravel() / t)
    _unchanged(x, snapshot)
    m = an[0].size
    rtol_source = TOL_SOURCE if rtol == RTOL else f"rtol={rtol:g} given by the caller"
    return _report("assert_jvp", np.concatenate(an), np.concatenate(num), np.concatenate(noise),
                   rtol, rtol_source,
                   f"{len(an)} tangent(s), one central difference each, {2 * len(an)} "
                   f"evaluations of f",
                   lambda i: f"tangent {i // m}, output {i % m}", "outputs", [], 2 * len(an))


def assert_vjp(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
               vjp: np.ndarray | Callable[[np.ndarray, np.ndarray], np.ndarray],
               u: np.ndarray | None = None, *, k: int = 2, mode: str = "auto",
               rtol: float = RTOL, h: float | None = None, seed: int = 0) -> GradCheck:
    """Assert that vjp is the vector-Jacobian product u^T J(x) of an array-valued f (what a
    backward pass computes from an upstream gradient u): it is the gradient of the scalar
    u . f(x), checked with assert_gradient.

    vjp: a function (x, u) -> J^T u shaped like x, or that array for the given u.
    u: the cotangent, shaped like f(x); None draws k random Gaussian ones (vjp must be a function).
    """
    x0 = _as_f64("x", x)
    if u is None and not callable(vjp):
        raise UserError("assert_vjp: give the cotangent u with an array vjp, or vjp as a "
                        "function (x, u) -> J^T u to check random cotangents")
    y = _vector(f(x0.copy()), "f's value")
    if u is None:
        rng = np.random.default_rng(seed)
        us = [rng.normal(size=y.shape) for _ in range(k)]
    else:
        us = [_as_f64("u", u)]
        if us[0].shape != y.shape:
            raise UserError(f"the cotangent u has shape {us[0].shape}, f(x) has shape {y.shape}")
    check = None
    for uj in us:
        g = vjp(x0.copy(), uj.copy()) if callable(vjp) else vjp
        _refuse_low_precision("the analytic VJP", g)
        if np.shape(g) != x0.shape:
            raise UserError(f"the analytic VJP has shape {np.shape(g)} but x has shape "
                            f"{x0.shape}: J^T u has one entry per input (a transposed Jacobian?)")
        try:
            check = assert_gradient(lambda z, uj=uj: float(uj.ravel() @ _vector(
                f(z), "f's value").ravel()), x, g, mode=mode, rtol=rtol, h=h, seed=seed)
        except AssertionError as e:
            raise AssertionError(str(e).replace("assert_gradient:", "assert_vjp (the gradient "
                                                "of u . f(x)):", 1)) from None
    return check
