"""The sweep: checks every input, claims OUT, runs the trials on Ray, writes the summary.

    run_sweep(algo, out, sets=..., grid=..., sample=..., ...)   the command's flags, from Python

In this order, so that every refusal comes before anything is written and a corrected command
can use the same --out: the flags and every configuration they make (space.py); Ray importable
and a cluster reachable (ray_session.py); an existing OUT's sweep.json and the trial.json of
every trial it already holds (state.py, trials.py). Then OUT is claimed (pgnumpy.rundir: a
directory of the user's files is refused, one sweep process at a time), sweep.json written, Ray
started, and `execute` keeps every worker busy until all trials are done.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from pgnumpy import cli, rundir
from pgnumpy.errors import UserError
from pgnumpy.fileio import atomic_write
from pgnumpy.sweep.ray_session import Session, check_reachable, import_ray
from pgnumpy.sweep.search import BayesSearch, Search, grid_points, random_configs
from pgnumpy.sweep.space import make_config, parse_space
from pgnumpy.sweep.state import holds_legacy_sweep, new_state, read_state, write_state
from pgnumpy.sweep.summary import Progress, print_summary, summarize, tpe_value, write_summary
from pgnumpy.sweep.tasks import run_trial
from pgnumpy.sweep.trials import Trial, check_trial_dir, load_trials, make_trials, read_record
from pgnumpy.train import ALGOS

SEARCHES = ("random", "bayes")
METRICS = ("steps", "return")
MAX_TRIALS = 100_000


@dataclass
class SweepResult:
    rows: list[dict]  # the summary: one row per configuration, best first
    trials: list[Trial]  # every trial, with its run directory and record

    @property
    def failed(self) -> int:
        return sum(r["failed"] for r in self.rows)

    def run_dirs(self) -> list[str]:
        """The run directories of the trials that finished (what `pgnumpy.plot` can draw)."""
        return [str(t.run_dir) for t in self.trials if t.record and t.record["status"] == "done"]


class SweepInterrupted(Exception):
    def __init__(self, running: int):
        self.running = running


def _count(name: str, value, lo: int = 1, hi: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (
            hi is not None and value > hi):
        raise UserError(f"--{name} must be an integer >= {lo}"
                        + (f" and <= {hi}" if hi is not None else "") + f", got {value!r}")


def run_sweep(algo: str, out: Path, *, sets: list[str] = (), grid: list[str] = (),
              sample: list[str] = (), trials: int = 1, seeds: int = 1, search: str = "random",
              search_seed: int = 0, metric: str = "steps", address: str | None = None,
              workers: int | None = None, retry_failed: bool = False, plot: bool = True
              ) -> SweepResult:
    """Run (or continue) a sweep into `out`: the arguments are the command's flags."""
    if algo not in ALGOS:
        raise UserError(f"unknown --algo {algo!r}; choose one of {', '.join(ALGOS)}")
    if not isinstance(out, (str, Path)) or not str(out):
        raise UserError(f"--out must be a directory path, got {out!r}")
    out = Path(out)
    if isinstance(seeds, int) and isinstance(trials, int) and (seeds < 1 or trials < 1):
        raise UserError(f"--seeds and --trials must be >= 1, got {seeds} and {trials}")
    _count("seeds", seeds)
    _count("trials", trials)
    _count("search-seed", search_seed, lo=0, hi=2**31 - 1)  # TPE's NumPy seed: < 2**32
    if workers is not None:
        if isinstance(workers, int) and not isinstance(workers, bool) and workers < 1:
            raise UserError(f"--workers must be >= 1, got {workers}")
        _count("workers", workers)
    if search not in SEARCHES:
        raise UserError(f"--search must be one of {', '.join(SEARCHES)}, got {search!r}")
    if metric not in METRICS:
        raise UserError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    for what, items in (("--set", sets), ("--grid", grid), ("--sample", sample)):
        if isinstance(items, str) or not all(isinstance(i, str) for i in items):
            raise UserError(f"{what} takes a list of FIELD=VALUE strings, got {items!r}")
    fixed, points, dists = parse_space(algo, list(sets), list(grid), list(sample))
    if search == "bayes" and not dists:
        raise UserError("--search bayes searches --sample fields: give at least one")
    if not dists and trials != 1:
        raise UserError("--trials counts --sample draws; a grid runs each point once")
    n = math.prod(len(v) for v in points.values()) * (trials if dists else 1) * seeds
    if n > MAX_TRIALS:  # each configuration is built and checked up front: ~1.5 ms each
        raise UserError(f"that is {n:,} trials (grid points x --trials x --seeds); more than "
                        f"{MAX_TRIALS:,} is surely a slip: give fewer")
    spec = {"algo": algo, "set": fixed, "grid": points,
            "sample": {k: dataclasses.asdict(d) for k, d in dists.items()},
            "search": search if dists else "grid", "search_seed": search_seed,
            "metric": metric, "seeds": seeds, "trials": trials}
    spec = json.loads(json.dumps(spec))  # as sweep.json holds it: tuples as lists
    # every refusal comes before anything is written: a corrected command can use the same --out
    if search == "bayes" and dists:
        configs = None
        check_bayes_space(algo, fixed, points, dists, out)
    else:
        configs = random_configs(points, dists, trials, search_seed) if dists else \
            grid_points(points)
        for params in configs:  # every configuration checked before anything starts
            make_trials(algo, fixed, params, 1, out)
    t0 = time.perf_counter()
    ray = import_ray()
    if address is not None:
        check_reachable(address)
    state = read_state(out, spec)  # a damaged sweep.json or another sweep: refused here
    check_trial_dir(out / "trials" / "-")  # OUT/trials a link: refused here
    for params in configs if configs is not None else (state or {}).get("asked", []):
        for t in make_trials(algo, fixed, params, seeds, out):
            read_record(t)  # a damaged trial.json: refused here
    with rundir.claim(out, "sweep", adopt=holds_legacy_sweep, what="sweep"):
        state = read_state(out, spec) or new_state(spec)  # again, now that OUT is ours alone
        state["spec"] = spec
        write_state(out, state)
        session = Session(ray)
        try:
            n_workers = session.start(address, workers)
            t1 = time.perf_counter()
            groups = execute(ray, algo, fixed, out, state, configs, points, dists, spec,
                             n_workers, retry_failed)
        except BaseException:
            session.stop(ending=True)  # a Ctrl-C meanwhile: the sweep is ending already
            raise
        session.stop()
        print(f"Ray: {t1 - t0:.1f} s to start or connect, trials {time.perf_counter() - t1:.1f} "
              "s (shutdown included)")
        rows = summarize(groups, metric)
        write_summary(rows, out / "summary.csv")
        print_summary(rows, metric)
        print(f"summary written to {out / 'summary.csv'}")
        result = SweepResult(rows, [t for ts in groups.values() for t in ts])
        if plot:
            draw(result, out, algo)
    return result


def check_bayes_space(algo: str, fixed: dict, points: dict, dists: dict, out: Path) -> None:
    """What TPE can ask, checked before anything starts: a bad --set, every grid value, every
    choice and both ends of every range, each built into a config (one line now, not a failed
    trial later)."""
    make_trials(algo, fixed, {}, 1, out)
    for name, values in points.items():
        for v in values:
            make_config(algo, {**fixed, name: v})
    for name, d in dists.items():
        for v in d.ends():
            try:
                make_config(algo, {**fixed, name: v})
            except UserError as e:
                what = "a choice" if d.kind == "choice" else "an end of its range"
                raise UserError(f"--sample {name}: {v!r} ({what}) is refused: {e}") from None


def execute(ray, algo, fixed, out, state, configs, points, dists, spec, n_workers,
            retry_failed) -> dict[str, list[Trial]]:
    """Keep `n_workers` trials running until every configuration's seeds are done."""
    metric, seeds = spec["metric"], spec["seeds"]
    groups: dict[str, list[Trial]] = {}  # configuration key -> its trials, one per seed

    def load(params: dict) -> list[Trial]:
        ts = load_trials(make_trials(algo, fixed, params, seeds, out), retry_failed)
        for t in ts:
            t.asked = params
        groups.setdefault(ts[0].key, ts)
        return ts

    if configs is None:  # Bayesian: what earlier runs asked, then what TPE asks next
        replay = []
        for params in state["asked"]:
            ts = load(params)
            replay.append((params, tpe_value(ts, metric) if all(t.record for t in ts)
                           else None))
        search = BayesSearch(points, dists, spec["trials"], spec["search_seed"], replay)
        n_configs = spec["trials"]
    else:
        for params in configs:
            load(params)
        unique = {json.dumps(ts[0].config, sort_keys=True) for ts in groups.values()}
        search, n_configs = Search(configs), len(unique)  # two equal draws run once
    finished = sum(1 for ts in groups.values() for t in ts if t.record)
    progress = Progress(total=n_configs * seeds - finished, workers=n_workers)
    print(f"sweep: {n_configs * seeds} trials ({finished} finished before), {n_workers} at a "
          f"time, run directories in {out / 'trials'}", flush=True)
    (out / "stop").unlink(missing_ok=True)  # left by a sweep that was killed while stopping
    remote = ray.remote(num_cpus=1)(run_trial)
    queue: list[Trial] = []
    queued: set[str] = set()  # configurations whose trials were queued (asked twice: once)
    running: dict = {}  # ObjectRef -> Trial

    def best() -> str:  # among configurations with every seed finished, if there are any
        complete = {k: ts for k, ts in groups.items() if all(t.record for t in ts)}
        rows = summarize(complete or {k: ts for k, ts in groups.items()
                                      if any(t.record for t in ts)}, metric)
        if not rows or rows[0]["score"] is None:
            return "-"
        r = rows[0]
        how = (f"median {r['score']:,.0f} steps to solve"
               if metric == "steps" and math.isfinite(r["score"]) else
               f"final return {r['final_return_mean']:.1f}")
        return f"{r['config']} ({r['solved']}/{r['seeds']} solved, {how})"

    def refill() -> None:  # ask for configurations until every worker has a trial waiting
        while len(queue) < n_workers:
            params = search.ask()
            if params is None:
                return
            ts = groups.get(make_trials(algo, fixed, params, 1, out)[0].key) or load(params)
            if configs is None and params not in state["asked"]:
                state["asked"].append(params)
                write_state(out, state)
            if ts[0].key not in queued:
                queued.add(ts[0].key)
                queue.extend(t for t in ts if t.record is None)
            tell_if_done(ts)

    def tell_if_done(ts: list[Trial]) -> None:
        if all(t.record for t in ts):
            search.tell(ts[0].asked, tpe_value(ts, metric))

    def submit() -> None:
        refill()
        while queue and len(running) < n_workers:
            t = queue.pop(0)
            check_trial_dir(t.run_dir)
            t.run_dir.mkdir(parents=True, exist_ok=True)
            t.started = time.perf_counter()
            running[remote.remote(algo, t.config, str(t.run_dir.resolve()), state["id"])] = t

    try:
        submit()
        quiet_since = time.perf_counter()
        while running:
            # short waits: Ray checks for Ctrl-C only when a wait returns
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
            if not ready:
                if time.perf_counter() - quiet_since > 30:
                    print(f"... {len(running)} running, {progress.done}/{progress.total} done",
                          flush=True)
                    quiet_since = time.perf_counter()
                continue
            quiet_since = time.perf_counter()
            finished = []
            for ref in ready:
                t = running.pop(ref)
                try:
                    t.record = ray.get(ref)
                except ray.exceptions.RayError as e:  # the worker died (killed, out of memory)
                    t.record = {"status": "failed", "error": " ".join(str(e).split())[:300]}
                    atomic_write(t.run_dir / "trial.json", json.dumps(t.record, indent=2) + "\n")
                if t.record.get("status") == "stopped":  # an OUT/stop from elsewhere: later
                    t.record = None
                    continue
                tell_if_done(groups[t.key])
                finished.append(t)
            submit()  # the next trials start before the console line is printed
            for t in finished:
                progress.finished(t, len(running), best())
    except (KeyboardInterrupt, Exception) as e:  # also an error raised while handling one (numba)
        if not cli.is_interrupt(e):
            raise
        # Each running trial stops after its next checkpoint (a Ctrl-C that reached the workers
        # too stops them at once, their checkpoints written whole). Not ray.cancel: in Ray 2.60
        # cancelling a task as it completes can abort the driver (task_manager.cc check).
        atomic_write(out / "stop", "")  # never through a link
        try:
            if running:
                ray.wait(list(running), num_returns=len(running), timeout=60.0)
        except KeyboardInterrupt:  # a second Ctrl-C: do not wait; Ray's shutdown ends them
            pass
        raise SweepInterrupted(len(running)) from None
    finally:
        (out / "stop").unlink(missing_ok=True)
    return groups


def draw(result: SweepResult, out: Path, algo: str) -> None:
    from pgnumpy.plot import plot_runs

    dirs = result.run_dirs()
    if not dirs:
        return
    try:
        plot_runs(dirs, str(out / "learning_curves.png"),
                  title=f"{algo} sweep: seeds grouped by configuration (mean ± std)")
    except UserError as e:  # e.g. a run with no finished episode: the summary stands without it
        print(f"no figure: {e}")
        return
    print(f"figure written to {out / 'learning_curves.png'}")
