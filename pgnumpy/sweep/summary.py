"""Scores, ranking and the summary: what "best" means in a sweep.

Each configuration's score is over its seeds that finished:
    --metric steps    the median env steps to solve, a seed that did not solve counting as never
                      (inf): so a configuration is solved when more than half its seeds solved
    --metric return   the median final return (the mean over the last 100 episodes)
and the ranking (summary.csv, the console table, "best:" in the live view) is
    steps:   solved configurations first, by fewer steps to solve (ties: the higher final mean
             return); then the unsolved ones by their final mean return, highest first (their
             step counts say only what budget they were given, nothing of how well they learnt)
    return:  the higher median final return first
with configurations that have no finished seed last. Optuna's TPE is told one number per
configuration, `tpe_value`, lower is better, which orders configurations exactly as the ranking
does (TPE uses only the order of the values it is told).
"""

from __future__ import annotations

import io
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgnumpy.fileio import atomic_write
from pgnumpy.sweep.trials import Trial, label

UNSOLVED = 1e15  # TPE's value of an unsolved configuration: above any step count, plus a
#                   term that falls as the return rises (float64 resolves ~0.1 at 1e15)


def trial_score(record: dict | None, metric: str) -> float | None:
    """One finished trial's score: steps to solve (inf if it did not solve), or final return."""
    if record is None or record.get("status") != "done":
        return None
    if metric == "return":
        return _finite_or(record["final_return"], -math.inf)
    solved = record["solved_steps"]
    return float(solved) if solved is not None else math.inf


def _finite_or(x, default: float) -> float:
    return float(x) if x is not None and not math.isnan(x) else default


def config_score(trials: list[Trial], metric: str) -> float | None:
    """The median of the finished seeds' scores (module docstring); None if none finished."""
    scores = [s for t in trials if (s := trial_score(t.record, metric)) is not None]
    return float(statistics.median(scores)) if scores else None


def final_return_mean(trials: list[Trial]) -> float | None:
    finals = [t.record["final_return"] for t in trials
              if t.record and t.record["status"] == "done"]
    return float(np.mean(finals)) if finals else None


def rank_key(score: float | None, final_return: float | None, metric: str) -> tuple:
    """The ranking's order (module docstring), ascending: the best configuration first."""
    if score is None:
        return (1, 0.0, 0.0)
    ret = _finite_or(final_return, -math.inf)  # a run with no finished episode: last
    if metric == "return":
        return (0, -score, -ret)
    return (0, score, -ret)  # inf steps (unsolved): after every solved one, by return


def tpe_value(trials: list[Trial], metric: str) -> float | None:
    """One finite number, lower is better, ordered as rank_key orders configurations: what
    Optuna's TPE is told. None if no seed finished (TPE marks the configuration failed)."""
    score = config_score(trials, metric)
    if score is None:
        return None
    ret = _finite_or(final_return_mean(trials), -math.inf)
    if metric == "return":
        return -score if math.isfinite(score) else UNSOLVED
    if math.isfinite(score):
        return score
    # unsolved: above every step count, lower for a higher return (arctan keeps it finite)
    return UNSOLVED + 1e6 * (0.5 - math.atan(ret / 100.0) / math.pi)


def summarize(groups: dict[str, list[Trial]], metric: str) -> list[dict]:
    """One row per configuration, best first (rank_key): seeds solved, median steps and seconds
    to solve (over the seeds that solved), final return mean +- std (over the seeds that
    finished), the score."""
    rows = []
    for trials in groups.values():
        done = [t.record for t in trials if t.record and t.record["status"] == "done"]
        solved = [r for r in done if r["solved_steps"] is not None]
        finals = [r["final_return"] for r in done]
        rows.append({
            "config": label(trials[0].params) or trials[0].config["algo"],
            **trials[0].params,
            "seeds": len(trials),
            "finished": len(done),
            "failed": sum(1 for t in trials if t.record and t.record["status"] == "failed"),
            "solved": len(solved),
            "median_steps_to_solve": (statistics.median(r["solved_steps"] for r in solved)
                                      if solved else None),
            "median_s_to_solve": (round(statistics.median(r["solved_s"] for r in solved), 3)
                                  if solved else None),
            "final_return_mean": float(np.mean(finals)) if finals else None,
            "final_return_std": float(np.std(finals)) if finals else None,
            "score": config_score(trials, metric),
        })
    return sorted(rows, key=lambda r: rank_key(r["score"], r["final_return_mean"], metric))


def write_summary(rows: list[dict], path: Path) -> None:
    import csv

    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in keys})
    atomic_write(path, buf.getvalue())


def print_summary(rows: list[dict], metric: str) -> None:
    print(f"\n| configuration | solved | median steps to solve | median s to solve | "
          f"final return (mean ± std) | failed |   (best first by {metric})")
    print("|---|---|---|---|---|---|")
    for r in rows:
        steps = f"{r['median_steps_to_solve']:,.0f}" if r["median_steps_to_solve"] else "-"
        secs = f"{r['median_s_to_solve']:.2f}" if r["median_s_to_solve"] is not None else "-"
        ret = (f"{r['final_return_mean']:.1f} ± {r['final_return_std']:.1f}"
               if r["final_return_mean"] is not None else "-")
        print(f"| {r['config']} | {r['solved']}/{r['seeds']} | {steps} | {secs} | {ret} | "
              f"{r['failed']} |")


@dataclass
class Progress:
    """One console line per finished trial: counts, the best configuration so far, and the time
    left at the mean wall time per trial so far, spread over the workers."""

    total: int  # trials this run will run (finished ones from earlier runs not counted)
    workers: int
    done: int = 0
    failed: int = 0
    walls: list = field(default_factory=list)

    def finished(self, trial: Trial, running: int, best: str) -> None:
        self.done += 1
        r = trial.record
        if r["status"] == "failed":
            self.failed += 1
            what = f"FAILED: {r['error']}"
        else:
            self.walls.append(time.perf_counter() - trial.started)
            s = r["solved_steps"]
            what = (f"solved at {s:,} steps" if s is not None else
                    f"not solved in {r['env_steps']:,} steps") + \
                f", final return {r['final_return']:.1f}"
        eta = "-"
        if self.walls:
            left = self.total - self.done - running / 2  # a running trial is half done, say
            eta = f"{math.ceil(statistics.mean(self.walls) * max(left, 0) / self.workers)} s"
        print(f"[{self.done}/{self.total}] {label(trial.params) or trial.config['algo']} seed "
              f"{trial.seed}: {what} | running {running}, failed {self.failed} | best: {best} | "
              f"ETA {eta}", flush=True)
