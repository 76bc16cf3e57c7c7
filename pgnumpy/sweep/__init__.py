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
OUT/summary.csv (one row per configuration, best first) and OUT/learning_curves.png (seeds
grouped by configuration, by `pgnumpy.plot`). Exit status 0, or 1 if a trial failed (its error
is one line on the console and in its run directory's trial.json).

The parts, each readable alone:
    space.py        --set / --grid / --sample parsed and checked; a configuration built
    trials.py       a trial's name (from config and seed) and its record, trial.json
    tasks.py        one trial as a Ray task: train, record the outcome
    state.py        OUT/sweep.json: the spec, the id, what Bayesian search asked
    ray_session.py  Ray imported, started or joined, and stopped with all its processes
    search.py       grid, random and Bayesian (Optuna TPE) search
    summary.py      scores, the ranking, summary.csv, the live view
    run.py          run_sweep: the order of it all; execute: the loop over Ray tasks
    command.py      the command's flags

This file imports nothing heavy (the names below load on first use), so that
`python -m pgnumpy.sweep` can catch a Ctrl-C and pin BLAS threads before NumPy loads.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread per trial: set before NumPy loads

_EXPORTS = {
    "run_sweep": "run", "SweepResult": "run", "SweepInterrupted": "run", "execute": "run",
    "main": "command", "build_parser": "command",
    "INSTALL": "ray_session", "import_ray": "ray_session", "start_ray": "ray_session",
    "Session": "ray_session", "check_reachable": "ray_session",
    "Dist": "space", "parse_space": "space", "parse_dist": "space", "make_config": "space",
    "Trial": "trials", "make_trials": "trials", "label": "trials", "config_key": "trials",
    "read_record": "trials", "load_trials": "trials",
    "run_trial": "tasks",
    "Search": "search", "BayesSearch": "search", "grid_points": "search",
    "random_configs": "search",
    "summarize": "summary", "write_summary": "summary", "print_summary": "summary",
    "config_score": "summary", "tpe_value": "summary", "rank_key": "summary",
    "SWEEP_FORMAT": "state",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pgnumpy.sweep' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"pgnumpy.sweep.{_EXPORTS[name]}"), name)
