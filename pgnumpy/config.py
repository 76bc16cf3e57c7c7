"""Hyperparameter checks shared by the algorithms' config dataclasses.

Each check raises UserError naming the field, the value and the allowed range, so the CLI can
print one line that says what to fix. NumPy scalars (np.float32(0.1), np.int64(4)) are accepted
wherever Python numbers are: `plain` turns them into Python numbers first, so a config always
holds plain values (and config.json can be written).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
from collections.abc import Sequence

from pgnumpy.errors import UserError


class ConfigError(UserError, TypeError):
    """A config called with a keyword it has no field for (or a positional too many): a
    UserError for the CLI and the API, and still the TypeError Python raises for it."""


def user_config(cls):
    """Class decorator for a config dataclass (apply above @dataclass): a call that does not fit
    its fields raises ConfigError naming them, not a bare TypeError."""
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            signature.bind(self, *args, **kwargs)
        except TypeError as e:
            names = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"{cls.__name__}: {e}; its fields are {names}") from None
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def plain(cfg) -> None:
    """Replace NumPy scalars in a config's fields by Python numbers, in place."""
    for name, value in vars(cfg).items():
        if isinstance(value, numbers.Number) and hasattr(value, "item"):
            setattr(cfg, name, value.item())


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_range(
    name: str,
    value,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """Raise unless lo (<|<=) value (<|<=) hi; None means unbounded on that side."""
    ok = _real(value) and math.isfinite(value)
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


def check_int(name: str, value, lo: int = 1, why: str = "") -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < lo:
        raise UserError(f"{name} must be an integer >= {lo}{why}, got {value!r}")


def check_choice(name: str, value, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def check_bool(cfg, *names: str) -> None:
    for name in names:
        if not isinstance(getattr(cfg, name), bool):
            raise UserError(f"{name} must be True or False, got {getattr(cfg, name)!r}")


def check_str(name: str, value) -> None:
    if not isinstance(value, str) or not value:
        raise UserError(f"{name} must be a non-empty string, got {value!r}")


def check_hidden(name: str, hidden) -> tuple[int, ...]:
    """Hidden widths as a tuple of ints: at least one layer (an empty list would silently make a
    linear policy), each >= 1."""
    try:
        widths = tuple(hidden)
    except TypeError:
        widths = None
    if (not widths or not all(isinstance(h, numbers.Integral) and not isinstance(h, bool)
                              and h >= 1 for h in widths)):
        raise UserError(f"{name} must be a non-empty list of layer widths >= 1, got {hidden!r}")
    return tuple(int(h) for h in widths)


def check_target_return(value) -> None:
    if value is not None and not (_real(value) and value == float("inf")):
        check_range("target_return", value)
