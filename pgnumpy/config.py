"""Hyperparameter checks shared by the algorithms' config dataclasses.

Each check raises UserError naming the field, the value and the allowed range, so the CLI can
print one line that says what to fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pgnumpy.errors import UserError


def check_range(
    name: str,
    value,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """Raise unless lo (<|<=) value (<|<=) hi; None means unbounded on that side."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        left = "-inf" if lo is None else f"{lo}"
        right = "inf" if hi is None else f"{hi}"
        opening = "(" if lo_open or lo is None else "["
        closing = ")" if hi_open or hi is None else "]"
        interval = f"{opening}{left}, {right}{closing}"
        raise UserError(f"{name} must be in {interval}, got {value!r}")


def check_int(name: str, value, lo: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise UserError(f"{name} must be an integer >= {lo}, got {value!r}")


def check_choice(name: str, value, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def check_hidden(name: str, hidden: Sequence[int]) -> None:
    if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
        raise UserError(f"{name} must be a list of layer widths >= 1, got {list(hidden)!r}")
