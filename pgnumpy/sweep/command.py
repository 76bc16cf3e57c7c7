"""The command: `python -m pgnumpy.sweep`'s flags, turned into run_sweep's arguments."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from pgnumpy import cli
from pgnumpy.errors import UserError
from pgnumpy.sweep.run import SweepInterrupted, run_sweep
from pgnumpy.train import ALGOS, DEFAULT_ALGO

DESCRIPTION = "Many runs over seeds and hyperparameters, on Ray."


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m pgnumpy.sweep", description=DESCRIPTION)
    p.add_argument("--algo", default=DEFAULT_ALGO, help=f"one of {', '.join(ALGOS)}")
    # extend: a flag given twice adds to the first (a field given twice is refused)
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="FIELD=VALUE",
                   help="fixed config values for every trial, e.g. total_steps=50000 "
                        "hidden=64,64")
    p.add_argument("--grid", nargs="+", action="extend", default=[], metavar="FIELD=V1,V2",
                   help="every combination of these values; layer widths joined by x: "
                        "hidden=32x32,64x64 (one-layer networks: hidden=32x,64x)")
    p.add_argument("--sample", nargs="+", action="extend", default=[],
                   metavar="FIELD=DIST:ARGS",
                   help="uniform:LOW:HIGH, loguniform:LOW:HIGH, int:LOW:HIGH (finite, LOW < "
                        "HIGH), choice:A,B")
    p.add_argument("--trials", type=int, default=1, help="configurations drawn by --sample")
    p.add_argument("--search", choices=("random", "bayes"), default="random",
                   help="how --sample draws: independently, or by Optuna's TPE (Bayesian)")
    p.add_argument("--search-seed", type=int, default=0, help="seed of the random/TPE draws")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0 .. K-1 for every configuration")
    p.add_argument("--metric", choices=("steps", "return"), default="steps",
                   help="what ranks configurations. steps: solved ones first (solved: on "
                        "more than half the seeds), by median env steps to solve; then the "
                        "unsolved ones by final mean return, highest first. return: by median "
                        "final return, highest first")
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
    if out is not None and not out.strip():
        raise UserError("--out is empty; give the sweep's directory")
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
    except KeyboardInterrupt:  # before the trials started, or after they all finished
        print("\ninterrupted; finished trials are kept: run the same command again to continue",
              file=sys.stderr)
        return cli.INTERRUPTED
    if result.failed:
        print(f"{result.failed} trials failed (their errors: trial.json in each run directory)")
    return 1 if result.failed else 0


def main(argv: list[str] | None = None) -> int:
    return cli.entry(_main, argv)

