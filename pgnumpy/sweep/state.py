"""OUT/sweep.json: the sweep's spec (its flags), an id, and what Bayesian search asked so far.

    {"format": "pgnumpy-sweep-1", "id": HEX, "spec": {algo, set, grid, sample, search,
     search_seed, metric, seeds, trials}, "asked": [{FIELD: VALUE, ...}, ...]}

A node that sees OUT sees the id (tasks.py checks it: on a cluster OUT must be shared). A rerun
with the same flags continues the sweep (--seeds and --trials may grow); other flags are another
sweep, refused. The file is pgnumpy's: one hand-edited into anything it does not write is
refused in one line naming the field, before the sweep writes anything.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from pgnumpy.errors import UserError
from pgnumpy.fileio import atomic_write
from pgnumpy.sweep.space import Dist

SWEEP_FORMAT = "pgnumpy-sweep-1"
GROWS = ("seeds", "trials")  # the spec's fields a rerun may change


def spec_dists(spec: dict) -> dict[str, Dist]:
    return {k: Dist(d["kind"], d["low"], d["high"], tuple(d["choices"]))
            for k, d in spec["sample"].items()}


def holds_legacy_sweep(path: Path) -> bool:
    """`rundir.claim`'s adopt: a sweep directory written before the run marker existed."""
    try:
        state = json.loads((path / "sweep.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(state, dict) and state.get("format") == SWEEP_FORMAT


def read_state(out: Path, spec: dict) -> dict | None:
    """The sweep.json in `out`, checked field by field and against this command's `spec`; None
    if there is none. Reads only."""
    path = out / "sweep.json"
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_file():
        raise UserError(f"{path} is not a regular file; give another --out")
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path} is damaged ({e}); give another --out") from None

    def bad(what: str):
        return UserError(f"{path}: {what}; pgnumpy writes this file: restore it, or give "
                         "another --out")

    if not isinstance(state, dict):
        raise bad("not a JSON object")
    if state.get("format") != SWEEP_FORMAT:
        raise bad(f"format {state.get('format')!r}, expected {SWEEP_FORMAT!r}")
    if not isinstance(state.get("id"), str) or not state["id"]:
        raise bad(f"id {state.get('id')!r} is not a sweep id")
    old = state.get("spec")
    if not isinstance(old, dict):
        raise bad(f"spec {old!r} is not an object")
    for k in GROWS:
        if not isinstance(old.get(k), int) or isinstance(old.get(k), bool) or old[k] < 1:
            raise bad(f"spec.{k} {old.get(k)!r} is not an integer >= 1")
    unknown = sorted(set(old) - set(spec))
    if unknown:
        raise bad(f"spec.{unknown[0]} is no field of a sweep's spec")
    for k in spec:
        if k not in GROWS and old.get(k) != spec[k]:
            raise UserError(f"{out} holds another sweep ({k}: {old.get(k)!r} there, "
                            f"{spec[k]!r} here): rerun it with its own flags, or give another "
                            "--out")
    asked = state.get("asked")
    if not isinstance(asked, list):
        raise bad(f"asked {asked!r} is not a list")
    dists, fields = spec_dists(spec), set(spec["grid"]) | set(spec["sample"])
    for i, params in enumerate(asked):
        if not isinstance(params, dict) or set(params) != fields:
            raise bad(f"asked[{i}] {params!r} does not give exactly the fields "
                      f"{', '.join(sorted(fields))}")
        for k, v in params.items():
            ok = v in spec["grid"][k] if k in spec["grid"] else dists[k].contains(v)
            if not ok:
                raise bad(f"asked[{i}].{k} {v!r} is not a value of the sweep's --grid/--sample")
    return state


def new_state(spec: dict) -> dict:
    return {"format": SWEEP_FORMAT, "id": secrets.token_hex(8), "spec": spec, "asked": []}


def write_state(out: Path, state: dict) -> None:
    atomic_write(out / "sweep.json", json.dumps(state, indent=2) + "\n")
