"""The search space: --set, --grid and --sample parsed and checked, and a configuration built.

    --set F=V             every trial gets F = V (V as `train --F V` reads it)
    --grid F=V1,V2,...    every combination of the --grid values
    --sample F=DIST       uniform:LOW:HIGH, loguniform:LOW:HIGH, int:LOW:HIGH (both ends
                          included), choice:A,B,...

A field is its config name (env_id, clip_eps) or its flag (env, clip-eps), and may be given once
(a second --set, --grid or --sample of it is refused: one would silently drop the other).
`hidden` (layer widths) is a tuple: `--set hidden=64,64` is one network of two layers, as in
`train --hidden 64,64`; in a grid or a choice, where commas separate the points, a point's
layers are joined by x: `--grid hidden=32x32,64x64` (two networks of two layers), and a
one-layer network is written with a trailing x (`hidden=32x,64x`). `--grid hidden=32,32` could
mean either, so it is refused with a line that shows both spellings.

Every value is checked here, before anything is written: each configuration of a grid or random
search is built as the trial will build it, and for Bayesian search each grid value, each choice
and both ends of each range.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np

from pgnumpy.errors import UserError
from pgnumpy.train import ALGOS, FLAG_NAMES, parse_args

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
TUPLE_FIELDS = ("hidden",)  # config fields that hold a tuple: layers joined by x in a grid
INT_LIMIT = 2**62  # int:LOW:HIGH bounds beyond this are no config's values (and overflow NumPy)


@dataclass(frozen=True)
class Dist:
    """One --sample field: uniform:A:B, loguniform:A:B, int:A:B (both ends included), choice:X,Y."""

    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[str, ...] = ()

    def sample(self, rng: np.random.Generator):
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        if self.kind == "int":
            return int(rng.integers(int(self.low), int(self.high) + 1))
        return self.choices[int(rng.integers(len(self.choices)))]

    def contains(self, value) -> bool:
        """Whether `value` is one this distribution can give (a replayed sweep.json's)."""
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        return self.low <= value <= self.high

    def ends(self) -> list:
        """The values that bound what a draw can be: each choice, or each end of the range
        (a float range's ends nudged inside: a draw never lands exactly on them, and a field
        may exclude its end, as lr > 0 does)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [float(np.nextafter(self.low, self.high)), float(np.nextafter(self.high, self.low))]


def config_fields(algo: str) -> list[str]:
    return [f.name for f in dataclasses.fields(ALGOS[algo][0])]


def field_name(algo: str, key: str, what: str) -> str:
    """A config field from what the user typed: the field (env_id) or its flag (env, clip-eps)."""
    name = key.strip().lstrip("-").replace("-", "_")
    name = {flag: f for f, flag in FLAG_NAMES.items()}.get(name, name)
    if name == "seed":
        raise UserError(f"{what} seed=...: the seeds are --seeds K (seeds 0 .. K-1)")
    if name not in config_fields(algo):
        raise UserError(f"{what} {key}: {algo} has no field {name!r}; its fields: "
                        f"{', '.join(f for f in config_fields(algo) if f != 'seed')}")
    return name


def split_assignment(item: str, what: str) -> tuple[str, str]:
    if "=" not in item:
        raise UserError(f"{what} {item!r}: expected FIELD=VALUE")
    key, value = item.split("=", 1)
    if not value:
        raise UserError(f"{what} {item!r}: no value after '='")
    return key, value


def points_of(name: str, text: str, what: str) -> list[str]:
    """The comma-separated points of a --grid value or a choice; for a tuple field, each point's
    layers joined by x, turned into the comma-separated form `train --hidden` reads."""
    points = text.split(",")
    if any(not p.strip() for p in points):
        raise UserError(f"{what}: an empty value between commas")
    if name not in TUPLE_FIELDS:
        return points
    if len(points) > 1 and not any("x" in p for p in points):
        both = "x".join(points)
        raise UserError(
            f"{what} is ambiguous: commas separate a grid's points, but `train --{name} "
            f"{text}` is one network of {len(points)} layers; join a point's layers by x: "
            f"{name}={both} (one network of {len(points)} layers) or "
            f"{name}={','.join(p + 'x' for p in points)} ({len(points)} one-layer networks)")
    out = []
    for p in points:
        layers = p[:-1] if p.endswith("x") else p  # 32x: one layer, said unambiguously
        if not re.fullmatch(r"\d+(x\d+)*", layers):
            raise UserError(f"{what}: {p!r} is not layer widths joined by x (e.g. 64x64, or "
                            "32x for one layer)")
        out.append(layers.replace("x", ","))
    return out


def parse_space(algo: str, sets: list[str], grid: list[str], sample: list[str]
                ) -> tuple[dict[str, str], dict[str, list[str]], dict[str, Dist]]:
    """--set F=V, --grid F=V1,V2 (for hidden: 32x32,64x64), --sample F=DIST:ARGS, parsed; each
    field given once."""
    fixed, points, dists, given = {}, {}, {}, {}
    for what, items in (("--set", sets), ("--grid", grid), ("--sample", sample)):
        for item in items:
            k, v = split_assignment(item, what)
            name = field_name(algo, k, what)
            if name in given:
                raise UserError(f"{what} {item}: the field {name} is given twice ({given[name]} "
                                "too); give each field once")
            given[name] = f"{what} {item}"
            if what == "--set":  # one value: hidden=64,64 as train reads it, or 64x64
                fixed[name] = points_of(name, v.replace(",", "x"), f"--set {item}")[0] \
                    if name in TUPLE_FIELDS else v
            elif what == "--grid":
                points[name] = points_of(name, v, f"--grid {item}")
            else:
                dists[name] = parse_dist(name, v, f"--sample {item}")
    return fixed, points, dists


def parse_dist(name: str, text: str, what: str) -> Dist:
    kind, _, args = text.partition(":")
    if kind not in DISTRIBUTIONS:
        raise UserError(f"{what}: unknown distribution {kind!r}; use one of "
                        f"{', '.join(DISTRIBUTIONS)} (e.g. loguniform:1e-4:1e-2)")
    if kind == "choice":
        if not args:
            raise UserError(f"{what}: choice needs values, e.g. choice:tanh,relu")
        return Dist(kind, choices=tuple(points_of(name, args, what)))
    try:
        low, high = (float(x) for x in args.split(":"))
    except ValueError:
        raise UserError(f"{what}: expected {kind}:LOW:HIGH with two numbers") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UserError(f"{what}: LOW and HIGH must be finite numbers")
    if not low < high or (kind == "loguniform" and low <= 0):
        raise UserError(f"{what}: need LOW < HIGH" + (" and LOW > 0" * (kind == "loguniform")))
    if kind == "int" and (low != int(low) or high != int(high)):
        raise UserError(f"{what}: int needs integer bounds")
    if kind == "int" and max(abs(low), abs(high)) > INT_LIMIT:
        raise UserError(f"{what}: int bounds beyond ±2**62 are no field's values")
    if kind == "uniform" and not math.isfinite(high - low):
        raise UserError(f"{what}: HIGH - LOW overflows a float; give a narrower range")
    return Dist(kind, low, high)


def make_config(algo: str, values: dict):
    """The config for these field values, built as `python -m pgnumpy.train` builds it: the same
    flag types, the env's preset under the values given, and the same validation."""
    argv = ["--algo", algo]
    bools = {f.name for f in dataclasses.fields(ALGOS[algo][0]) if f.type in (bool, "bool")}
    for name, v in values.items():
        flag = "--" + FLAG_NAMES.get(name, name).replace("_", "-")
        if isinstance(v, str) and v.lower() in ("true", "false"):
            v = v.lower() == "true"
        elif name in bools and not isinstance(v, bool):
            raise UserError(f"{name} takes true or false, got {v!r}")
        if isinstance(v, bool):
            argv.append(flag if v else flag.replace("--", "--no-", 1))
        elif isinstance(v, (list, tuple)):  # hidden, as a replayed sweep.json holds it
            argv += [flag, ",".join(str(x) for x in v)]
        else:
            argv += [flag, repr(v) if isinstance(v, float) else str(v)]
    _, cfg, _ = parse_args(argv)
    cfg.validate()
    return cfg
