"""Issue 23, class 6: every Phi form's weights at a time-limit truncation, for simple_pg's critic
forms too (tests/test_wiring.py checks the target of rtg-baseline's critic but skipped its
weights, and never ran gae or q; VPG's, PPO's and TRPO's weights at truncations are checked in
test_wiring.py and test_trpo.py)."""

from __future__ import annotations

import numpy as np
import pytest
from reference import gae_ref, reward_to_go_ref
from test_wiring import next_val_of, registry, scripted, spy

from pgnumpy.algos import simple_pg


@pytest.mark.parametrize("form", ["rtg-baseline", "gae", "q"])
def test_simple_pg_critic_forms_do_not_bootstrap_a_time_limit_end(monkeypatch, form):
    """simple_pg's objective is the capped episode's return: with a critic, Phi at a truncation
    uses no V(final obs). The weights pg_loss gets, from the critic as it was at the rollout:
    rtg-baseline = reward-to-go (no bootstrap) - V(s_t); gae = GAE (GAE.2) with V(s_{t+1}) = 0
    after a truncation (and V of the true next state elsewhere); q = Q_w(s_t, a_t).
    Planted: V(final obs) bootstrapped at truncations (simple_pg's where(trunc, 0) dropped:
    caught by rtg-baseline, whose reward-to-go then bootstraps, and by gae; the old wiring
    test let it through); rtg-baseline's baseline dropped (caught); Q_w's weights scattered
    one row late (caught)."""
    scripted(monkeypatch, simple_pg, [[(3, "trunc")], [(2, "term"), (4, "trunc")]])
    vs, qs = registry(monkeypatch, simple_pg, "ValueCritic"), registry(monkeypatch, simple_pg,
                                                                         "QCritic")
    batches = spy(monkeypatch, simple_pg, "collect",
                  before=lambda *a, **k: (vs + qs)[0].params.copy())
    losses = spy(monkeypatch, simple_pg, "pg_loss")
    cfg = simple_pg.SimplePGConfig(phi=form, steps_per_epoch=9, epochs=2, num_envs=2,
                                   hidden=(8,), gamma=0.8, lam=0.7, vf_iters=3, vf_lr=0.05)
    simple_pg.train(cfg)
    crit = (vs + qs)[0]
    assert len(batches) == len(losses) == 2
    for (_, _, b, params), (args, *_) in zip(batches, losses):
        m = b.valid
        assert (b.trunc & m).any() and (b.term & m).any()
        live = crit.params.copy()
        crit.params[:] = params  # the critic that the epoch's weights were computed with
        zero = np.zeros(m.shape)
        if form == "q":
            w = np.zeros(m.shape)
            w[m] = crit(b.obs[m], b.act[m])
        else:
            V = lambda o: crit(o.reshape(-1, 4)).reshape(o.shape[:-1])  # noqa: E731
            val = V(b.obs)
            if form == "rtg-baseline":
                w = reward_to_go_ref(b.rew, b.term, b.trunc, zero, 0.8) - val
            else:
                nv = np.where(b.trunc, 0.0, next_val_of(V, b.obs, b.last_obs))
                w = gae_ref(b.rew, val, nv, b.term, b.trunc, 0.8, 0.7)
                assert np.abs(next_val_of(V, b.obs, b.last_obs)[b.trunc & m]).min() > 1e-3
        crit.params[:] = live
        assert np.abs(w[m]).max() > 1e-3
        np.testing.assert_allclose(args[1], w[m], rtol=1e-6, atol=1e-6)  # float32 critic
    assert not np.array_equal(batches[0][3], batches[1][3])  # the critic moved between epochs
