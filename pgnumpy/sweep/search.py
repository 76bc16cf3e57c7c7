"""The searches: which configurations to run, asked one at a time as workers free up.

    Search        grid and random search: every configuration known up front, in a fixed order
                  (random: `trials` draws from a generator seeded by --search-seed)
    BayesSearch   Optuna's TPE, told each configuration's score once all its seeds are done
                  (the score: summary.tpe_value, which orders as the summary ranks)
"""

from __future__ import annotations

import json
import math

import numpy as np

from pgnumpy.errors import UserError
from pgnumpy.sweep.ray_session import INSTALL
from pgnumpy.sweep.space import Dist


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
                 replay: list[tuple[dict, float | None]]):
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
            direction="minimize",  # summary.tpe_value: lower is better, for either metric
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
