"""pgnumpy's pytest plugin (entry point `pytest11: pgnumpy`): fixtures for checking your own
policy-gradient code with pgnumpy.testing.

Imports nothing heavy at load time: pytest loads plugins before a project's conftest.py, which
may set BLAS thread variables that must be set before NumPy is first imported.
"""

import pytest


@pytest.fixture
def tabular_mdp():
    """A small random tabular MDP (2 states, 2 actions, gamma 0.9, episodes ending by termination
    or a time limit of 3), the same every run: pgnumpy.testing.random_tabular_mdp(seed=0)."""
    from pgnumpy.testing import random_tabular_mdp

    return random_tabular_mdp(seed=0)


@pytest.fixture
def pg_rng():
    """np.random.default_rng(0): a fixed seed, so a check fails the same way every run."""
    import numpy as np

    return np.random.default_rng(0)
