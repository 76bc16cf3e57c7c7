"""Trials: one (configuration, seed) each, in a run directory named from the two alone.

A trial's directory is OUT/trials/LABEL-HASH-seedS: a readable label of the swept values, a hash
of the configuration without its seed, the seed. So rerunning the same command finds its trials
again, and the same configuration reached by another command (the same value swept, or --set)
is found by its hash and reused. Its outcome is trial.json (written by the task, tasks.py):
    {"status": "done", "solved_steps", "solved_s", "final_return", "env_steps", "wall_s", ...}
    {"status": "failed", "error": ONE LINE, ...}
A trial.json edited by hand into anything else is refused in one line naming it, before the
sweep writes anything (read_record).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from pgnumpy.errors import UserError
from pgnumpy.sweep.space import make_config


@dataclass
class Trial:
    """One (configuration, seed): its run directory and, once known, its record (trial.json)."""

    key: str  # the configuration's id: a hash of the config without the seed
    params: dict  # the --grid/--sample values (what the summary and the label show)
    seed: int
    config: dict  # the full config, algo included
    run_dir: Path
    record: dict | None = None  # None: still to run
    asked: dict | None = None  # the values the search asked for (what it is told about)
    started: float = 0.0


def config_key(config: dict) -> str:
    unseeded = {k: v for k, v in config.items() if k != "seed"}
    return hashlib.sha256(json.dumps(unseeded, sort_keys=True).encode()).hexdigest()[:10]


def label(params: dict) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, (tuple, list)):
            return "x".join(str(x) for x in v)
        return str(v)

    return ",".join(f"{k}={fmt(params[k])}" for k in sorted(params))


def trial_dir(trials_dir: Path, params: dict, config: dict, seed: int) -> Path:
    """Deterministic from (config, seed): a readable label of the swept values, the config's
    hash, the seed. A trial of the same config and seed under another label (the same value
    swept by another command) is found by its hash and reused."""
    tail = f"-{config_key(config)}-seed{seed}"
    found = sorted(p for p in trials_dir.glob(f"*{tail}") if p.is_dir() and not p.is_symlink()) \
        if trials_dir.is_dir() else []
    if found:
        return found[0]
    older = _older_trial_dir(trials_dir, config, seed)
    if older is not None:
        return older
    readable = re.sub(r"[^A-Za-z0-9=.,_+-]", "_", label(params))[:80] or config["algo"]
    return trials_dir / (readable + tail)


def _older_trial_dir(trials_dir: Path, config: dict, seed: int) -> Path | None:
    """A trial of this config and seed run by an earlier pgnumpy: its hash differs because a
    field was added since (held at its default here), so it is found by its config.json."""
    from pgnumpy.train import with_added_defaults

    if not trials_dir.is_dir():
        return None
    for p in sorted(trials_dir.glob(f"*-seed{seed}")):
        path = p / "config.json"
        if p.is_symlink() or not p.is_dir() or path.is_symlink() or not path.is_file():
            continue
        try:
            on_disk = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # not this trial's: the hash lookup and the task judge damaged files
        if isinstance(on_disk, dict) and with_added_defaults(on_disk, config) == config:
            return p
    return None


def make_trials(algo: str, fixed: dict, params: dict, seeds: int, out: Path) -> list[Trial]:
    """The trials of one configuration, one per seed."""
    trials = []
    for seed in range(seeds):
        cfg = make_config(algo, {**fixed, **params, "seed": seed})
        config = {"algo": algo, **dataclasses.asdict(cfg)}
        config = json.loads(json.dumps(config))  # as config.json holds it: tuples as lists
        shown = {k: config[k] for k in params}  # typed as the config holds them
        trials.append(Trial(config_key(config), shown, seed, config,
                            trial_dir(out / "trials", shown, config, seed)))
    return trials


def _number(v, nullable: bool = False) -> bool:
    if v is None:
        return nullable
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def record_problem(record) -> str | None:
    """What is wrong with a trial.json's contents, or None if it is one the task writes."""
    if not isinstance(record, dict):
        return "not a JSON object"
    status = record.get("status")
    if status == "failed":
        return None if isinstance(record.get("error"), str) else "failed without an error line"
    if status != "done":
        return f"status {status!r} (done or failed)"
    for k, nullable in (("solved_steps", True), ("solved_s", True), ("final_return", False),
                        ("env_steps", False), ("wall_s", False)):
        if not _number(record.get(k), nullable):
            return f"{k} {record.get(k)!r} is not a number"
    if not (math.isfinite(record["final_return"]) or math.isnan(record["final_return"])):
        return f"final_return {record['final_return']!r} is not finite"
    if record["env_steps"] < 0 or (record["solved_steps"] is not None
                                   and not 0 <= record["solved_steps"] <= record["env_steps"]):
        return "its step counts contradict each other"
    if (record["solved_steps"] is None) != (record["solved_s"] is None):
        return "solved_steps and solved_s disagree"
    return None


def check_trial_dir(run_dir: Path) -> None:
    """A trial's directory and OUT/trials must be real directories: a symlink (planted by
    hand) would have the trial write outside OUT."""
    for p in (run_dir.parent, run_dir):
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            raise UserError(f"{p} is not a directory of the sweep's (a symbolic link or a file); "
                            "pgnumpy writes only inside the directories it owns: remove it")


def read_record(trial: Trial) -> dict | None:
    """The trial's record, or None if it has none yet; a damaged one (hand-edited, cut short) is
    a UserError naming it: the sweep writes nothing until it is removed."""
    check_trial_dir(trial.run_dir)
    path = trial.run_dir / "trial.json"
    if path.is_symlink() or (path.exists() and not path.is_file()):
        problem = "not a regular file"
    elif not path.exists():
        return None
    else:
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            problem = f"unreadable ({e})"
        else:
            problem = record_problem(record)
            if problem is None:
                return record
    raise UserError(f"{path} is damaged: {problem}; pgnumpy writes it: remove it to run that "
                    "trial again (its checkpoint is kept)")


def load_trials(trials: list[Trial], retry_failed: bool) -> list[Trial]:
    """Read each trial's record; a failed one is forgotten (run again) with --retry-failed."""
    for t in trials:
        t.record = read_record(t)
        if t.record and t.record["status"] == "failed" and retry_failed:
            (t.run_dir / "trial.json").unlink(missing_ok=True)
            t.record = None
    return trials
