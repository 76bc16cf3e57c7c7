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


def test_trpo_lands_on_the_first_backtrack_inside_the_region_that_improves(monkeypatch):
    """Each TRPO iteration's new parameters, replayed independently: with s the natural step
    natural_step returned and A, logp_old what the surrogate got at theta_old, try
    theta_j = theta_old + c^j s for j = 0, 1, ... with c = backtrack_coef and take the first j
    whose mean KL(pi_old || pi_j) over the batch's states (recomputed here from frozen copies
    of the two distributions) is <= delta and whose mean r A exceeds mean A; none in
    backtrack_iters tries: theta_old. The run must show stops at j = 0 and at j > 0, or the
    check says nothing (with damping 0.005 the full step overshoots in some iterations: seen
    j = 0, 0, 1, 0, 0, 0, 0, 0). Planted: train passing
    delta / 2 to the line search (caught; test_trpo's trust-region test lets it through);
    train passing backtrack_coef ** 2 (caught)."""
    from test_trpo import frozen_dist

    made, steps, surrs, thetas = [], [], [], []
    real_make, real_step, real_surr = trpo.make_policy, trpo.natural_step, trpo.surrogate
    monkeypatch.setattr(trpo, "make_policy",
                        lambda *a, **k: made.append(real_make(*a, **k)) or made[-1])

    def natural_step(*a):
        out = real_step(*a)
        steps.append((out[0].copy(), made[0].params.copy()))
        return out

    def surrogate(logp, logp_old, adv):
        if len(surrs) < len(steps) + 1 and np.array_equal(logp, logp_old):  # at theta_old
            surrs.append((logp_old.copy(), adv.copy()))
        return real_surr(logp, logp_old, adv)

    monkeypatch.setattr(trpo, "natural_step", natural_step)
    monkeypatch.setattr(trpo, "surrogate", surrogate)
    batches, real_collect = [], trpo.collect
    monkeypatch.setattr(trpo, "collect", lambda *a, **k: batches.append(real_collect(*a, **k))
                        or batches[-1])
    cfg = trpo.TRPOConfig(num_envs=2, steps_per_env=256, total_steps=8 * 512, delta=0.02,
                          damping=0.005, backtrack_coef=0.6, backtrack_iters=6,
                          target_return=float("inf"), hidden=(16,))
    res = trpo.train(cfg, on_epoch=lambda e, s: thetas.append(s["nets"]["policy"].params.copy()))
    pol = res.policy
    assert len(steps) == len(surrs) == len(thetas) == len(res.history) == 8
    landed = []
    for b, (s, theta_old), (logp_old, adv), after in zip(batches, steps, surrs, thetas):
        obs, act = b.obs[b.valid], b.act[b.valid]
        pol.params[:] = theta_old
        old = frozen_dist(pol, obs)
        want = theta_old
        for j in range(cfg.backtrack_iters):
            pol.params[:] = theta_old + 0.6**j * s
            new = frozen_dist(pol, obs)
            kl = float(old.kl(new).mean())
            surr = float(np.mean(np.exp(new.log_prob(act) - logp_old) * adv))
            if kl <= 0.02 and surr > float(np.mean(adv)):
                want = theta_old + 0.6**j * s
                landed.append(j)
                break
        np.testing.assert_allclose(after, want, rtol=0, atol=1e-12)
    assert 0 in landed and any(j > 0 for j in landed)
