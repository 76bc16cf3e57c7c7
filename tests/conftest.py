"""Hypothesis profiles: a quick default, a thorough one with PGNUMPY_PROFILE=thorough."""

import os

# The trainer runs BLAS single-threaded (pgnumpy/train.py); do the same here, before numpy loads,
# so in-process runs match CLI runs bit for bit (thread count changes summation order).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "quick", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("PGNUMPY_PROFILE", "quick"))
