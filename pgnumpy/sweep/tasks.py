"""One trial, as a Ray task: train it into its run directory and record the outcome.

Runs on a Ray worker (any node of a cluster), so it imports what it needs itself and takes
only plain values: the algorithm, the config, the run directory, the sweep's id.
"""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path

from pgnumpy import cli
from pgnumpy.errors import UserError
from pgnumpy.fileio import atomic_write
from pgnumpy.train import ALGOS


def run_trial(algo: str, config: dict, run_dir: str, sweep_id: str) -> dict:
    """Train one trial into its run directory and record the outcome in trial.json.

    Runs on a Ray worker. A run with a checkpoint continues from it (train.py's --resume); one
    that never finished an epoch starts again. When the sweep is stopped (OUT/stop exists) the
    run stops after its next checkpoint and nothing is recorded, so the next sweep continues it;
    so does a Ctrl-C that reaches the worker. Any other error is a failed record, never a crash."""
    import socket

    from pgnumpy import rundir
    from pgnumpy.algos import load_checkpoint
    from pgnumpy.train import StopRun, check_config_json, holds_legacy_run, run, with_added_defaults

    out = Path(run_dir)
    where = {"host": socket.gethostname(), "node": _node_id(), "pid": os.getpid()}
    claim = None
    try:
        if _sweep_id(out.parent.parent) != sweep_id:
            raise UserError(f"node {where['host']} does not see the sweep directory "
                            f"{out.parent.parent}: on a cluster, --out must be on a filesystem "
                            "every node mounts at the same path")
        # the trial's directory is a run's (pgnumpy/rundir.py), claimed and locked for the whole
        # trial, its trial.json and error.txt included; a failed trial of a sweep from before
        # the marker holds only those two
        claim = rundir.claim(out, "train", what="run", adopt=lambda p: holds_legacy_run(p)
                             or (p / "trial.json").is_file())
        cfg = ALGOS[algo][0](**{k: v for k, v in config.items() if k != "algo"})
        resume = None
        if (out / "checkpoint.npz").exists():
            resume = load_checkpoint(out)
            check_config_json(out, resume["config"])
            if with_added_defaults(json.loads(json.dumps(resume["config"])), config) != config:
                raise UserError(f"{out} holds a run of another config; remove it to rerun")
        # else no epoch finished: train.run starts it again (start_fresh)
        stop = out.parent.parent / "stop"
        result = run(algo, cfg, out, quiet=True, resume=resume, should_stop=stop.exists,
                     run_dir=claim)
        return _record_done(out, result, resume is not None, where)
    except StopRun:
        return {"status": "stopped", **where}
    except Exception as e:  # noqa: BLE001 - every failure is recorded, none stops the sweep
        if cli.is_interrupt(e):
            raise
        error = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        record = {"status": "failed", "error": " ".join(error.split()), **where}
        if claim is not None:  # written only into a directory this trial holds
            atomic_write(out / "error.txt", traceback.format_exc())
            atomic_write(out / "trial.json", json.dumps(record, indent=2) + "\n")
        return record
    finally:  # however the task ends: its Ray worker lives on, and must not keep the lock
        if claim is not None:
            claim.release()


def _record_done(out: Path, result, resumed: bool, where: dict) -> dict:
    from pgnumpy.logger import read_progress

    rows = read_progress(out / "progress.csv")
    solved = result.solved_at
    record = {"status": "done",
              "solved_steps": int(solved["env_steps"]) if solved else None,
              "solved_s": float(solved["wall_s"]) if solved else None,
              "final_return": float(rows[-1]["ep_return_mean"]) if rows else float("nan"),
              "env_steps": int(rows[-1]["env_steps"]) if rows else 0,
              "wall_s": float(rows[-1]["wall_s"]) if rows else 0.0,
              "resumed": resumed, **where}
    atomic_write(out / "trial.json", json.dumps(record, indent=2) + "\n")
    return record


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - called outside Ray (tests): no node
        return None


def _sweep_id(out: Path) -> str | None:
    try:
        return json.loads((out / "sweep.json").read_text())["id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
