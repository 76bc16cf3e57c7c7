"""`python -m pgnumpy.sweep`: many runs over seeds and hyperparameters, on Ray.

    python -m pgnumpy.sweep --grid phi=return,rtg,gae --algo vpg --seeds 5
    python -m pgnumpy.sweep --sample lr=loguniform:1e-4:1e-2 gamma=uniform:0.95:0.999 \\
        --trials 32 --seeds 3 --search bayes --out runs/tune-ppo
    python -m pgnumpy.sweep ... --address auto          # an existing Ray cluster

A configuration is the algorithm's config with the --set, --grid and --sample values filled in;
each configuration runs once per seed (0 .. K-1), and each (configuration, seed) is a trial: an
ordinary run directory under OUT/trials/ written by `pgnumpy.train.run` (config.json,
progress.csv, checkpoint.npz), so `evaluate` and `plot` read it unchanged.
Its name is derived from the configuration and the seed alone, so rerunning the same command
finds its trials again: finished ones are skipped, interrupted ones continue from their last
checkpoint (train.py's --resume), failed ones stay failed unless --retry-failed.

Trials run as Ray tasks, one CPU each (training pins BLAS to one thread): on a Ray started on
this machine with as many workers as cores (default), or on an existing cluster (--address auto
or ray://HOST:PORT), where OUT must be a path every node sees (a shared filesystem). At the end:
OUT/summary.csv (one row per configuration) and OUT/learning_curves.png (seeds grouped by
configuration, by `pgnumpy.plot`). Exit status 0, or 1 if a trial failed (its error is one line
on the console and in its run directory's trial.json).
"""

from __future__ import annotations

import os

from pgnumpy import cli

if __name__ == "__main__":
    cli.guard_startup()

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from pgnumpy.errors import UserError  # noqa: E402
from pgnumpy.fileio import atomic_write  # noqa: E402
from pgnumpy.train import ALGOS, DEFAULT_ALGO, FLAG_NAMES, parse_args  # noqa: E402

INSTALL = 'pip install -e ".[sweep]"'  # what the no-Ray message tells the user to run
SWEEP_FORMAT = "pgnumpy-sweep-1"
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")


# ----------------------------------------------------------------------- the search space


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


def parse_space(algo: str, sets: list[str], grid: list[str], sample: list[str]
                ) -> tuple[dict[str, str], dict[str, list[str]], dict[str, Dist]]:
    """--set F=V, --grid F=V1,V2 (for hidden: 32x32,64x64), --sample F=DIST:ARGS, parsed."""
    fixed, points, dists, seen = {}, {}, {}, set()
    for item in sets:
        k, v = split_assignment(item, "--set")
        fixed[field_name(algo, k, "--set")] = v
    for what, items in (("--grid", grid), ("--sample", sample)):
        for item in items:
            k, v = split_assignment(item, what)
            name = field_name(algo, k, what)
            if name in seen or name in fixed:
                raise UserError(f"{what} {k}: the field {name} is given twice")
            seen.add(name)
            if what == "--grid":
                points[name] = [p.replace("x", ",") if name == "hidden" else p
                                for p in v.split(",")]
            else:
                dists[name] = parse_dist(v, f"--sample {item}")
    return fixed, points, dists


def parse_dist(text: str, what: str) -> Dist:
    kind, _, args = text.partition(":")
    if kind not in DISTRIBUTIONS:
        raise UserError(f"{what}: unknown distribution {kind!r}; use one of "
                        f"{', '.join(DISTRIBUTIONS)} (e.g. loguniform:1e-4:1e-2)")
    if kind == "choice":
        choices = tuple(c for c in args.split(",") if c)
        if not choices:
            raise UserError(f"{what}: choice needs values, e.g. choice:tanh,relu")
        return Dist(kind, choices=choices)
    try:
        low, high = (float(x) for x in args.split(":"))
    except ValueError:
        raise UserError(f"{what}: expected {kind}:LOW:HIGH with two numbers") from None
    if not low < high or (kind == "loguniform" and low <= 0):
        raise UserError(f"{what}: need LOW < HIGH" + (" and LOW > 0" * (kind == "loguniform")))
    if kind == "int" and (low != int(low) or high != int(high)):
        raise UserError(f"{what}: int needs integer bounds")
    return Dist(kind, low, high)


def make_config(algo: str, values: dict):
    """The config for these field values, built as `python -m pgnumpy.train` builds it: the same
    flag types, the env's preset under the values given, and the same validation."""
    argv = ["--algo", algo]
    for name, v in values.items():
        flag = "--" + FLAG_NAMES.get(name, name).replace("_", "-")
        if isinstance(v, str) and v.lower() in ("true", "false"):
            v = v.lower() == "true"
        if isinstance(v, bool):
            argv.append(flag if v else flag.replace("--", "--no-", 1))
        else:
            argv += [flag, repr(v) if isinstance(v, float) else str(v)]
    _, cfg, _ = parse_args(argv)
    cfg.validate()
    return cfg


# ----------------------------------------------------------------------- trials and their names


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
    found = sorted(trials_dir.glob(f"*{tail}")) if trials_dir.is_dir() else []
    if found:
        return found[0]
    readable = re.sub(r"[^A-Za-z0-9=.,_+-]", "_", label(params))[:80] or config["algo"]
    return trials_dir / (readable + tail)


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


def read_record(trial: Trial) -> dict | None:
    try:
        return json.loads((trial.run_dir / "trial.json").read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------- one trial (a Ray task)


def run_trial(algo: str, config: dict, run_dir: str, sweep_id: str) -> dict:
    """Train one trial into its run directory and record the outcome in trial.json.

    Runs on a Ray worker. A run with a checkpoint continues from it (train.py's --resume); one
    that never finished an epoch starts again. When the sweep is stopped (OUT/stop exists) the
    run stops after its next checkpoint and nothing is recorded, so the next sweep continues it;
    so does a Ctrl-C that reaches the worker. Any other error is a failed record, never a crash."""
    import socket

    from pgnumpy.algos import load_checkpoint
    from pgnumpy.logger import read_progress
    from pgnumpy.train import StopRun, check_config_json, run

    out = Path(run_dir)
    where = {"host": socket.gethostname(), "node": _node_id(), "pid": os.getpid()}
    try:
        if _sweep_id(out.parent.parent) != sweep_id:
            raise UserError(f"node {where['host']} does not see the sweep directory "
                            f"{out.parent.parent}: on a cluster, --out must be on a filesystem "
                            "every node mounts at the same path")
        cfg = ALGOS[algo][0](**{k: v for k, v in config.items() if k != "algo"})
        resume = None
        if (out / "checkpoint.npz").exists():
            resume = load_checkpoint(out)
            check_config_json(out, resume["config"])
            if json.loads(json.dumps(resume["config"])) != config:
                raise UserError(f"{out} holds a run of another config; remove it to rerun")
        else:  # no epoch finished: start afresh (these files are this sweep's own)
            for name in ("config.json", "progress.csv", "learning_curve.png"):
                (out / name).unlink(missing_ok=True)
        stop = out.parent.parent / "stop"
        result = run(algo, cfg, out, quiet=True, resume=resume, should_stop=stop.exists)
    except StopRun:
        return {"status": "stopped", **where}
    except Exception as e:  # noqa: BLE001 - every failure is recorded, none stops the sweep
        if cli.is_interrupt(e):
            raise
        error = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        record = {"status": "failed", "error": " ".join(error.split()), **where}
        if out.is_dir():
            atomic_write(out / "error.txt", traceback.format_exc())
            atomic_write(out / "trial.json", json.dumps(record, indent=2) + "\n")
        return record
    rows = read_progress(out / "progress.csv")
    solved = result.solved_at
    record = {"status": "done",
              "solved_steps": int(solved["env_steps"]) if solved else None,
              "solved_s": float(solved["wall_s"]) if solved else None,
              "final_return": float(rows[-1]["ep_return_mean"]) if rows else float("nan"),
              "env_steps": int(rows[-1]["env_steps"]) if rows else 0,
              "wall_s": float(rows[-1]["wall_s"]) if rows else 0.0,
              "resumed": resume is not None, **where}
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


# ----------------------------------------------------------------------- Ray


def import_ray():
    """Ray, imported only when a sweep runs: the rest of pgnumpy never pays for it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"python -m pgnumpy.sweep runs on Ray, which is not installed: "
                        f"{INSTALL}") from None
    return ray


def start_ray(ray, address: str | None, workers: int | None) -> int:
    """Connect to a cluster, or start Ray on this machine; return how many trials to run at once.

    Locally Ray binds to the loopback interface only (it needs no network), gets `workers` CPUs
    (default: the cores), no dashboard and a small object store (trials pass only small dicts)."""
    import logging

    logging.getLogger("ray").setLevel(logging.ERROR)  # Ray's start-up notes are not ours to show
    kwargs = dict(logging_level=logging.ERROR, log_to_driver=False)
    try:
        if address is None:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's switch: node IP 127.0.0.1
            n = workers or os.cpu_count() or 1
            ray.init(address="local", num_cpus=n, include_dashboard=False,
                     object_store_memory=80 * 2**20, **kwargs)
            return n
        check_reachable(address)
        ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise UserError(f"cannot connect to the Ray cluster at {address}: "
                        f"{' '.join(str(e).split())}") from None
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < 1:
        raise UserError(f"the Ray cluster at {address} has no CPUs to run trials on")
    return min(workers, cpus) if workers else cpus


def check_reachable(address: str) -> None:
    """HOST:PORT and ray://HOST:PORT must answer before Ray is asked: Ray retries an address
    where nothing listens for minutes, printing a warning every few seconds."""
    if address == "auto":
        return  # Ray reads RAY_ADDRESS or this machine's latest cluster, and says if there is none
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"cannot connect to the Ray cluster at {address}: "
                        f"{e.strerror or e}") from None


# ----------------------------------------------------------------------- the searches


class Search:
    """Grid and random search: every configuration known up front, in a fixed order."""

    def __init__(self, configs: list[dict]):
        self.configs = list(configs)
        self.asked = 0

    def ask(self) -> dict | None:
        if self.asked == len(self.configs):
            return None
        self.asked += 1
        return self.configs[self.asked - 1]

    def tell(self, params: dict, score: float | None) -> None:
        pass


def grid_points(points: dict[str, list[str]]) -> list[dict]:
    combos = [{}]
    for name, values in points.items():
        combos = [{**c, name: v} for c in combos for v in values]
    return combos


def random_configs(points: dict, dists: dict[str, Dist], trials: int, seed: int) -> list[dict]:
    """`trials` draws from the --sample distributions (a fixed generator: the same command draws
    the same configurations), each crossed with every --grid point."""
    rng = np.random.default_rng(seed)
    draws = [{k: d.sample(rng) for k, d in dists.items()} for _ in range(trials)]
    return [{**g, **d} for d in draws for g in grid_points(points)]


class BayesSearch(Search):
    """Optuna's TPE sampler, asked for the next configuration as a worker frees up and told each
    configuration's score once all its seeds are done. The configurations asked so far are
    replayed from sweep.json on a rerun: finished ones told again, unfinished ones asked first."""

    def __init__(self, points: dict, dists: dict[str, Dist], trials: int, seed: int,
                 maximize: bool, replay: list[tuple[dict, float | None]]):
        try:
            import optuna
        except ImportError:
            raise UserError(f"--search bayes needs Optuna, which is not installed: "
                            f"{INSTALL}") from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        self.optuna = optuna
        self.space = {k: CategoricalDistribution(v) for k, v in points.items()}
        for k, d in dists.items():
            self.space[k] = (CategoricalDistribution(d.choices) if d.kind == "choice" else
                             IntDistribution(int(d.low), int(d.high)) if d.kind == "int" else
                             FloatDistribution(d.low, d.high, log=d.kind == "loguniform"))
        self.study = optuna.create_study(
            direction="maximize" if maximize else "minimize",
            # a rerun draws from a fresh stream: the seed alone would draw the first run's
            # first configurations again
            sampler=optuna.samplers.TPESampler(seed=seed + len(replay)))
        self.trials, self.asked, self.open = trials, 0, {}
        for params, score in replay:
            if score is None:
                self.study.enqueue_trial(params)  # asked first: the same directories continue
            else:
                self.study.add_trial(optuna.trial.create_trial(
                    params=params, distributions=self.space, value=score))
                self.asked += 1

    def ask(self) -> dict | None:
        if self.asked >= self.trials:
            return None
        self.asked += 1
        t = self.study.ask(self.space)
        self.open[json.dumps(t.params, sort_keys=True)] = t
        return dict(t.params)

    def tell(self, params: dict, score: float | None) -> None:
        t = self.open.pop(json.dumps(params, sort_keys=True), None)
        if t is None:
            return
        if score is None or not math.isfinite(score):
            self.study.tell(t, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(t, score)


# ----------------------------------------------------------------------- scores and summary


def trial_score(record: dict, metric: str) -> float | None:
    """steps: env steps to solve, lower is better; a run that did not solve counts as twice the
    steps it ran, so that with equal budgets any solve ranks above none. return: the final
    100-episode mean return, higher is better."""
    if record is None or record.get("status") != "done":
        return None
    if metric == "return":
        return record["final_return"]
    solved = record["solved_steps"]
    return float(solved) if solved is not None else 2.0 * record["env_steps"]


def config_score(trials: list[Trial], metric: str) -> float | None:
    scores = [s for t in trials if (s := trial_score(t.record, metric)) is not None]
    return float(statistics.median(scores)) if scores else None


def summarize(groups: dict[str, list[Trial]], metric: str) -> list[dict]:
    """One row per configuration: seeds solved, median steps and seconds to solve (over the
    seeds that solved), final return mean +- std (over the seeds that finished), the score."""
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
    sign = -1.0 if metric == "return" else 1.0  # ties (no seed solved): the higher return first
    return sorted(rows, key=lambda r: (r["score"] is None, sign * (r["score"] or 0.0),
                                       -(r["final_return_mean"] or 0.0)))


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


# ----------------------------------------------------------------------- the live view


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


# ----------------------------------------------------------------------- the sweep


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


def run_sweep(algo: str, out: Path, *, sets: list[str] = (), grid: list[str] = (),
              sample: list[str] = (), trials: int = 1, seeds: int = 1, search: str = "random",
              search_seed: int = 0, metric: str = "steps", address: str | None = None,
              workers: int | None = None, retry_failed: bool = False, plot: bool = True
              ) -> SweepResult:
    """Run (or continue) a sweep into `out`: the arguments are the command's flags."""
    if algo not in ALGOS:
        raise UserError(f"unknown --algo {algo!r}; choose one of {', '.join(ALGOS)}")
    if seeds < 1 or trials < 1:
        raise UserError(f"--seeds and --trials must be >= 1, got {seeds} and {trials}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    fixed, points, dists = parse_space(algo, list(sets), list(grid), list(sample))
    if search == "bayes" and not dists:
        raise UserError("--search bayes searches --sample fields: give at least one")
    if not dists and trials != 1:
        raise UserError("--trials counts --sample draws; a grid runs each point once")
    spec = {"algo": algo, "set": fixed, "grid": points,
            "sample": {k: dataclasses.asdict(d) for k, d in dists.items()},
            "search": search if dists else "grid", "search_seed": search_seed,
            "metric": metric, "seeds": seeds, "trials": trials}
    # every refusal comes before anything is written: a corrected command can use the same --out
    if search == "bayes" and dists:
        configs = None
        make_trials(algo, fixed, {}, 1, out)  # a bad --set: one line now, not in every trial
    else:
        configs = random_configs(points, dists, trials, search_seed) if dists else \
            grid_points(points)
        for params in configs:  # every configuration checked before anything starts
            make_trials(algo, fixed, params, 1, out)
    t0 = time.perf_counter()
    ray = import_ray()
    if address is not None:
        check_reachable(address)
    state = open_sweep(out, spec)

    own = not ray.is_initialized()  # a caller already connected (a notebook, the tests): reuse
    n_workers = start_ray(ray, address, workers) if own else \
        min(workers or 10**9, max(1, int(ray.cluster_resources().get("CPU", 1))))
    t1 = time.perf_counter()
    try:
        groups = execute(ray, algo, fixed, out, state, configs, points, dists, spec,
                         n_workers, retry_failed)
    finally:
        if own:
            ray.shutdown()
    print(f"Ray: {t1 - t0:.1f} s to start or connect, trials {time.perf_counter() - t1:.1f} s "
          "(shutdown included)")
    rows = summarize(groups, metric)
    write_summary(rows, out / "summary.csv")
    print_summary(rows, metric)
    print(f"summary written to {out / 'summary.csv'}")
    result = SweepResult(rows, [t for ts in groups.values() for t in ts])
    if plot:
        draw(result, out, algo)
    return result


def open_sweep(out: Path, spec: dict) -> dict:
    """OUT/sweep.json: the sweep's spec, an id (a node that sees OUT sees it) and, for Bayesian
    search, the configurations asked so far. A different sweep in the same OUT is refused."""
    path = out / "sweep.json"
    spec = json.loads(json.dumps(spec))  # as it is stored: tuples as lists
    if path.exists():
        try:
            state = json.loads(path.read_text())
            old = state["spec"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} is damaged ({e}); give another --out") from None
        same = {k: v for k, v in old.items() if k not in ("seeds", "trials")}
        if same != {k: v for k, v in spec.items() if k not in ("seeds", "trials")}:
            k = next(k for k in spec if old.get(k) != spec[k])
            raise UserError(f"{out} holds another sweep ({k}: {old.get(k)!r} there, {spec[k]!r} "
                            "here): rerun it with its own flags, or give another --out")
        state["spec"] = spec
    else:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file; give a directory for the sweep")
        out.mkdir(parents=True, exist_ok=True)
        state = {"format": SWEEP_FORMAT, "id": secrets.token_hex(8), "spec": spec, "asked": []}
    atomic_write(path, json.dumps(state, indent=2) + "\n")
    return state


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
            replay.append((params, config_score(ts, metric) if all(t.record for t in ts)
                           else None))
        search = BayesSearch(points, dists, spec["trials"], spec["search_seed"],
                             metric == "return", replay)
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
        how = (f"median {r['median_steps_to_solve']:,.0f} steps to solve"
               if metric == "steps" and r["solved"] else
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
                atomic_write(out / "sweep.json", json.dumps(state, indent=2) + "\n")
            if ts[0].key not in queued:
                queued.add(ts[0].key)
                queue.extend(t for t in ts if t.record is None)
            tell_if_done(ts)

    def tell_if_done(ts: list[Trial]) -> None:
        if all(t.record for t in ts):
            search.tell(ts[0].asked, config_score(ts, metric))

    def submit() -> None:
        refill()
        while queue and len(running) < n_workers:
            t = queue.pop(0)
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
        (out / "stop").touch()
        try:
            if running:
                ray.wait(list(running), num_returns=len(running), timeout=60.0)
        except KeyboardInterrupt:  # a second Ctrl-C: do not wait; Ray's shutdown ends them
            pass
        raise SweepInterrupted(len(running)) from None
    finally:
        (out / "stop").unlink(missing_ok=True)
    return groups


class SweepInterrupted(Exception):
    def __init__(self, running: int):
        self.running = running


def load_trials(trials: list[Trial], retry_failed: bool) -> list[Trial]:
    """Read each trial's record; a failed one is forgotten (run again) with --retry-failed."""
    for t in trials:
        t.record = read_record(t)
        if t.record and t.record.get("status") == "failed" and retry_failed:
            (t.run_dir / "trial.json").unlink(missing_ok=True)
            t.record = None
        elif t.record and t.record.get("status") not in ("done", "failed"):
            t.record = None
    return trials


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


# ----------------------------------------------------------------------- the command


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m pgnumpy.sweep", description=__doc__.splitlines()[0])
    p.add_argument("--algo", default=DEFAULT_ALGO, help=f"one of {', '.join(ALGOS)}")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="fixed config values for every trial, e.g. total_steps=50000")
    p.add_argument("--grid", nargs="+", default=[], metavar="FIELD=V1,V2",
                   help="every combination of these values (hidden: 32x32,64x64)")
    p.add_argument("--sample", nargs="+", default=[], metavar="FIELD=DIST:ARGS",
                   help="uniform:LOW:HIGH, loguniform:LOW:HIGH, int:LOW:HIGH, choice:A,B")
    p.add_argument("--trials", type=int, default=1, help="configurations drawn by --sample")
    p.add_argument("--search", choices=("random", "bayes"), default="random",
                   help="how --sample draws: independently, or by Optuna's TPE (Bayesian)")
    p.add_argument("--search-seed", type=int, default=0, help="seed of the random/TPE draws")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0 .. K-1 for every configuration")
    p.add_argument("--metric", choices=("steps", "return"), default="steps",
                   help="what ranks configurations: median env steps to solve (unsolved: all "
                        "its steps) or median final return")
    p.add_argument("--out", default=None,
                   help="sweep directory (default: runs/sweep-ALGO-HASH, the same for the same "
                        "command, so rerunning it continues the sweep)")
    p.add_argument("--address", default=None,
                   help="an existing Ray cluster: auto, HOST:PORT or ray://HOST:PORT "
                        "(default: Ray on this machine)")
    p.add_argument("--workers", type=int, default=None,
                   help="trials at once (default: the cores here; on a cluster, its CPUs)")
    p.add_argument("--retry-failed", action="store_true", help="run failed trials again")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip the figure")
    return p


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out
    if out is None:  # the same command, the same directory: a rerun continues
        what = json.dumps([args.algo, args.set, args.grid, args.sample, args.search,
                           args.search_seed, args.metric])
        out = f"runs/sweep-{args.algo}-{hashlib.sha256(what.encode()).hexdigest()[:8]}"
    try:
        result = run_sweep(args.algo, Path(out), sets=args.set, grid=args.grid,
                         sample=args.sample, trials=args.trials, seeds=args.seeds,
                         search=args.search, search_seed=args.search_seed, metric=args.metric,
                         address=args.address, workers=args.workers,
                         retry_failed=args.retry_failed, plot=args.plot)
    except SweepInterrupted as e:
        print(f"\ninterrupted: {e.running} running trials stopped at their last checkpoint; "
              f"run the same command again to continue", file=sys.stderr)
        return cli.INTERRUPTED
    if result.failed:
        print(f"{result.failed} trials failed (their errors: trial.json in each run directory)")
    return 1 if result.failed else 0


def main(argv: list[str] | None = None) -> int:
    return cli.entry(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
