"""Issue 23, PPO: where target_kl's early stop lands, against a replay of the KL sequence the
steps measured (class 5)."""

from __future__ import annotations

import numpy as np
import pytest

from pgnumpy import fused
from pgnumpy.algos import ppo

E, M = 4, 4  # update_epochs, minibatches


def stop_replay(kls: list[float], target: float) -> int:
    """How many minibatch steps an iteration takes, replayed from the approx KL of each step:
    whole passes of M steps; after a pass, stop if its LAST step's KL exceeds the target
    (CleanRL's rule, as the PPO docstring says). A sequence too short for the rule to decide
    returns one more than its length, so the comparison below fails."""
    n = 0
    for _ in range(E):
        n += M
        if n > len(kls):
            return len(kls) + 1
        if kls[n - 1] > target:
            break
    return n


@pytest.mark.parametrize("fused_path", [True, False])
def test_target_kl_stops_after_the_first_pass_whose_last_step_exceeds_it(monkeypatch,
                                                                       fused_path):
    """Each iteration's step count equals the replay of its own KL sequence; the runs are
    chosen so that iterations stop after different passes and at least one runs all of them,
    or the check would not see a stop that lands elsewhere. The logged approx_kl is the mean
    over the steps taken.
    Planted: the stop tested on the pass's first step's KL (caught); a break inside the
    minibatch loop as soon as one step exceeds the target (caught); the stop tested with >= on
    the mean of the pass (caught)."""
    per_it = []
    real_collect = ppo.collect

    def collect(*a, **k):
        per_it.append([])
        return real_collect(*a, **k)

    monkeypatch.setattr(ppo, "collect", collect)
    if fused_path:
        real_step = fused.PPOUpdate.step

        def step(self, *a, **k):
            out = real_step(self, *a, **k)
            per_it[-1].append(float(out[3]))
            return out

        monkeypatch.setattr(fused.PPOUpdate, "step", step)
    else:
        real_loss = ppo.ppo_clip_loss

        def loss(*a, **k):
            out = real_loss(*a, **k)
            per_it[-1].append(float(out[2]["approx_kl"]))
            return out

        monkeypatch.setattr(ppo, "ppo_clip_loss", loss)
    target = 0.004
    cfg = ppo.PPOConfig(fused=fused_path, target_kl=target, update_epochs=E, minibatches=M,
                        num_envs=4, steps_per_env=64, total_steps=8 * 256, hidden=(16,),
                        lr=1e-2, anneal_lr=False, seed=1, target_return=float("inf"))
    res = ppo.train(cfg)
    counts = [len(k) for k in per_it]
    assert len(counts) == len(res.history) == 8
    for kl_seq, row in zip(per_it, res.history):
        assert len(kl_seq) == stop_replay(kl_seq, target), kl_seq
        assert row["approx_kl"] == pytest.approx(np.mean(kl_seq), rel=1e-12)
    assert len(set(counts)) >= 2 and E * M in counts  # stops land after different passes
    assert any(M < c < E * M for c in counts)  # a stop after a later pass than the first
