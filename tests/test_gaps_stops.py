"""Issue 23, class 5 beyond target_kl: where the "solved" stop lands. Every algorithm stops
after the first epoch whose 100-episode mean return reaches target_return; no test checked which
epoch that is. The target does not change what a run does before it stops, so the stop point is
replayed from the rows of the same run with target_return = inf."""

from __future__ import annotations

import numpy as np
import pytest

from pgnumpy.algos import ppo, simple_pg, trpo, vpg

CASES = {
    "simple_pg": (simple_pg.SimplePGConfig, simple_pg,
                  dict(steps_per_epoch=400, epochs=8, num_envs=4, hidden=(16,), lr=2e-2)),
    "vpg": (vpg.VPGConfig, vpg, dict(steps_per_env=100, epochs=8, num_envs=4, hidden=(16,),
                                     lr=1e-2, vf_iters=5)),
    "ppo": (ppo.PPOConfig, ppo, dict(num_envs=4, steps_per_env=64, total_steps=8 * 256,
                                     hidden=(16,))),
    "trpo": (trpo.TRPOConfig, trpo, dict(num_envs=4, steps_per_env=64, total_steps=8 * 256,
                                         hidden=(16,), vf_iters=5)),
}


@pytest.mark.parametrize("algo", list(CASES))
def test_a_run_stops_after_the_first_epoch_that_reaches_target_return(algo):
    """The target is the mean return of a row where the running mean first reaches a new high
    after epoch 0 (so that row is the first to reach it, with equality): the run with that target
    logs exactly the rows up to it, identical to the unlimited run's, and solved_at is that
    row. Planted: the solved test with > instead of >= (caught: the run goes past the
    equality); the loop not breaking on solved (caught); solved_at the previous row (caught)."""
    cfg_cls, module, kw = CASES[algo]
    free = module.train(cfg_cls(**kw, target_return=float("inf")))
    means = [r["ep_return_mean"] for r in free.history]
    assert free.solved_at is None and len(means) == 8
    highs = [k for k in range(1, 7) if means[k] > max(means[:k])]
    assert highs, means  # a run that improves: some epoch after 0 reaches a new high
    k = highs[0]
    res = module.train(cfg_cls(**kw, target_return=means[k]))
    assert len(res.history) == k + 1
    assert res.solved_at is res.history[-1]
    assert res.solved_at["ep_return_mean"] == means[k]
    for a, b in zip(res.history, free.history):
        assert {n: v for n, v in a.items() if n != "wall_s"} == pytest.approx(
            {n: v for n, v in b.items() if n != "wall_s"}, nan_ok=True)
    assert np.isfinite(means[k])
