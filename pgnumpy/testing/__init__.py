"""pgnumpy.testing: the checks that keep pgnumpy honest, for your own policy-gradient code.

Gradient checks (central differences in float64; docs/testing.md):
    assert_gradient(f, x, grad)      a scalar function's gradient, every coordinate or k random
                                     directions (mode="auto" picks by size)
    assert_jvp(f, x, jvp, v)         a Jacobian-vector product (forward mode, Fisher-vector product)
    assert_vjp(f, x, vjp, u)         a vector-Jacobian product (a backward pass)
    numeric_gradient(f, x)           the central differences themselves; numeric_jvp(f, x, v)
    with_params(buffer, fn)          f(p) for a model that reads its own parameter buffer
Exact checks (every batch of a small tabular MDP enumerated with its probability):
    random_tabular_mdp(seed, ...)    and tabular_mdps(...), the same as a hypothesis strategy
    exact_gradient(mdp, policy)      the gradient an unbiased estimator's expectation equals
    estimator_expectation(estimator, mdp, policy)
    assert_unbiased(estimator, mdp, policy, target=None)
    exact_values, exact_J, TabularBatch (what the estimator receives)
The pytest plugin (`pgnumpy.testing.plugin`, registered as `pgnumpy` when pgnumpy is installed)
adds the fixtures `tabular_mdp` and `pg_rng`.
"""

from pgnumpy.testing.gradients import (
    GradCheck,
    assert_gradient,
    assert_jvp,
    assert_vjp,
    norm_rel_error,
    numeric_gradient,
    numeric_jvp,
    rel_error,
    with_params,
)

# the exact checks import pgnumpy.exact, hence gymnasium and numba (~1 s); loaded on first use, so
# a test that only checks gradients does not pay for them
_EXACT = ("TabularBatch", "assert_unbiased", "estimator_expectation", "exact_J", "exact_gradient",
          "exact_values", "random_tabular_mdp", "tabular_mdps")


def __getattr__(name: str):
    if name in _EXACT:
        from pgnumpy.testing import exact

        return getattr(exact, name)
    raise AttributeError(f"module 'pgnumpy.testing' has no attribute {name!r}")


__all__ = [
    "GradCheck", "TabularBatch", "assert_gradient", "assert_jvp", "assert_unbiased",
    "assert_vjp", "estimator_expectation", "exact_J", "exact_gradient", "exact_values",
    "norm_rel_error", "numeric_gradient", "numeric_jvp", "random_tabular_mdp", "rel_error",
    "tabular_mdps", "with_params",
]
