"""Issue 23, resuming: the restored state of every algorithm is non-trivial before it is compared
(episodes finished, Adam's moments non-zero, generators advanced: class 3), and what lives in a
schedule continues across a resume as in the uninterrupted run — PPO's annealed lr and Adam's
step count in both update paths, PPO-KL's beta, the checkpoint cadence (class 4)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from pgnumpy import fused
from pgnumpy.algos import load_checkpoint, ppo, simple_pg, trpo, vpg
from pgnumpy.checkpoint import save_checkpoint


class Stop(Exception):
    """Raised from on_epoch: the run ends there, as a Ctrl-C after a checkpoint would."""


def run_until(module, cfg, path, stop_after: int | None):
    """Train, writing the checkpoint after every epoch; stop after epoch `stop_after`. Returns
    a deep copy of the state handed to the last on_epoch."""
    seen = {}

    def on_epoch(epoch, state):
        save_checkpoint(path, config={"algo": module.__name__.rsplit(".", 1)[-1]}, epoch=epoch,
                        **state)
        seen.update(epoch=epoch, state=copy.deepcopy({k: v for k, v in state.items()
                                                      if k != "runner"}),
                    returns=list(state["runner"].episode_returns),
                    lengths=list(state["runner"].episode_lengths),
                    steps=state["runner"].env_steps)
        if epoch == stop_after:
            raise Stop

    try:
        module.train(cfg, on_epoch=on_epoch)
    except Stop:
        pass
    return seen


def fresh_rng_states(seed: int, n: int) -> list[dict]:
    return [g.bit_generator.state for g in np.random.default_rng(seed).spawn(n)]


# ---- class 3: resumed state compared only once it is shown non-trivial --------------------

ALGO_CASES = {
    "simple_pg-q": (simple_pg, dict(phi="q", steps_per_epoch=300, epochs=4, num_envs=2,
                                    hidden=(8,), vf_iters=2)),
    "vpg-gae": (vpg, dict(phi="gae", steps_per_env=100, epochs=4, num_envs=2, hidden=(8,),
                          vf_iters=2)),
    "trpo": (trpo, dict(env_id="Pendulum-v1", norm_obs=True, norm_rew=True, num_envs=2,
                        steps_per_env=128, total_steps=4 * 256, hidden=(8,), vf_iters=2,
                        vf_minibatches=2)),
}


@pytest.mark.parametrize("case", list(ALGO_CASES))
def test_resume_restores_a_non_trivial_state_field_by_field(case, tmp_path, monkeypatch):
    """Three epochs, checkpointed; the resumed run (one more epoch) starts with every network,
    Adam state, generator, the episode history and the counters of the checkpoint. Before
    comparing: episodes finished, Adam's m and v non-zero and t > 0, each generator advanced
    from its seeded state (an empty history or a fresh generator equal to a fresh one would
    compare equal while restoring nothing).
    Planted: restore leaving the episode history out (caught); restore leaving the generators
    out (caught)."""
    module, kw = ALGO_CASES[case]
    cfg_cls = {simple_pg: simple_pg.SimplePGConfig, vpg: vpg.VPGConfig,
               trpo: trpo.TRPOConfig}[module]
    cfg = cfg_cls(**kw, target_return=float("inf"))
    path = tmp_path / "checkpoint.npz"
    saved = run_until(module, cfg, path, stop_after=2)
    assert saved["epoch"] == 2
    s = saved["state"]
    assert len(saved["returns"]) >= 2 and len(saved["lengths"]) == len(saved["returns"])
    for opt in s["opts"].values():
        assert opt.t > 0 and np.any(opt.m != 0) and np.all(opt.v >= 0) and np.any(opt.v > 0)
    fresh = fresh_rng_states(cfg.seed, 4)
    for g in s["rngs"].values():
        assert g.bit_generator.state not in fresh  # advanced by the run

    captured = {}
    real_restore = module.restore

    def restore(ckpt, **objs):
        out = real_restore(ckpt, **objs)
        captured.update(
            params={n: net.params.copy() for n, net in objs["nets"].items()},
            opts={n: (o.m.copy(), o.v.copy(), o.t, o.lr) for n, o in objs["opts"].items()},
            rngs={n: copy.deepcopy(g.bit_generator.state) for n, g in objs["rngs"].items()},
            returns=list(objs["runner"].episode_returns),
            lengths=list(objs["runner"].episode_lengths), steps=objs["runner"].env_steps)
        return out

    monkeypatch.setattr(module, "restore", restore)
    more = {"epochs": 4} if hasattr(cfg, "epochs") else {"total_steps": 4 * 256}
    res = module.train(dataclasses.replace(cfg, **more), resume=load_checkpoint(path))
    assert [r["epoch"] for r in res.history] == [3]
    assert set(captured["rngs"]) == set(s["rngs"]) and set(captured["opts"]) == set(s["opts"])
    for n, net in s["nets"].items():
        np.testing.assert_array_equal(captured["params"][n], net.params)
    for n, o in s["opts"].items():
        m, v, t, lr = captured["opts"][n]
        np.testing.assert_array_equal(m, o.m)
        np.testing.assert_array_equal(v, o.v)
        assert (t, lr) == (o.t, o.lr)
    for n, g in s["rngs"].items():
        assert captured["rngs"][n] == g.bit_generator.state
    assert captured["returns"] == saved["returns"] and captured["lengths"] == saved["lengths"]
    assert captured["steps"] == saved["steps"] > 0


# ---- class 4: schedules across a resume ------------------------------------------------------

LR_CFG = dict(num_envs=2, steps_per_env=32, total_steps=5 * 64, update_epochs=2, minibatches=2,
              hidden=(8,), lr=3e-3, anneal_lr=True, target_return=float("inf"))


def record_steps(monkeypatch, fused_path: bool) -> list:
    """(lr, t) of every Adam step the update takes, t counted before the step."""
    steps = []
    if fused_path:
        real = fused.PPOUpdate.step

        def step(self, *a, **k):
            steps.append((self.lr, self.t))
            return real(self, *a, **k)

        monkeypatch.setattr(fused.PPOUpdate, "step", step)
    else:
        class RecordedAdam(ppo.Adam):
            def step(self, grad):
                if self.params.size == policy_size[0]:  # the policy's: one record a step
                    steps.append((self.lr, self.t))
                super().step(grad)

        policy_size = [None]
        real_make = ppo.make_policy

        def make_policy(*a, **k):
            pol = real_make(*a, **k)
            policy_size[0] = pol.params.size
            return pol

        monkeypatch.setattr(ppo, "make_policy", make_policy)
        monkeypatch.setattr(ppo, "Adam", RecordedAdam)
    return steps


@pytest.mark.parametrize("fused_path", [True, False])
def test_resumed_ppo_continues_the_annealed_lr_and_adams_step_count(monkeypatch, tmp_path,
                                                                    fused_path):
    """lr = lr0 (1 - it / iterations) is a function of the iteration: a run stopped after
    iteration 1 and resumed takes, at each later step, the lr and Adam step count t of the
    uninterrupted run, and logs the same lr per row. The lr must change from iteration to
    iteration, or the comparison says nothing.
    Planted: the schedule restarted at the resume (lr0 (1 - (it - first) / iterations): caught
    in both paths, while the rest of the suite passed); Adam's t set to 0 after the restore
    (caught)."""
    cfg = ppo.PPOConfig(fused=fused_path, **LR_CFG)
    steps = record_steps(monkeypatch, fused_path)
    whole = ppo.train(cfg)
    full = list(steps)
    per_it = 2 * 2
    assert len(full) == 5 * per_it and len({lr for lr, _ in full}) == 5
    steps.clear()
    run_until(ppo, cfg, tmp_path / "checkpoint.npz", stop_after=1)
    assert steps == full[:2 * per_it]
    steps.clear()
    res = ppo.train(cfg, resume=load_checkpoint(tmp_path / "checkpoint.npz"))
    assert [r["epoch"] for r in res.history] == [2, 3, 4]
    assert steps == full[2 * per_it:]  # (lr, t) at every step after the resume
    assert [r["lr"] for r in res.history] == [r["lr"] for r in whole.history[2:]]


def test_resumed_ppo_kl_continues_beta(monkeypatch, tmp_path):
    """PPO-KL's beta (PPOKL.3) across a resume: the first resumed iteration's loss gets the beta
    the checkpointed iteration logged, and each next iteration's the adapt_beta of the previous
    beta and the previous row's measured KL, as in an uninterrupted run. beta must move.
    Planted: beta restarted from cfg.beta at the resume (caught); beta adapted from cfg.beta
    instead of the running beta (caught)."""
    from pgnumpy.objectives import adapt_beta

    cfg = ppo.PPOConfig(env_id="Pendulum-v1", variant="kl", target_kl=0.002, num_envs=2,
                        steps_per_env=64, total_steps=5 * 128, hidden=(8,), lr=3e-3,
                        target_return=float("inf"))
    before = run_until(ppo, cfg, tmp_path / "checkpoint.npz", stop_after=1)
    betas = []
    real = ppo.ppo_kl_loss
    monkeypatch.setattr(ppo, "ppo_kl_loss", lambda *a, **k: betas.append(a[4]) or real(*a, **k))
    res = ppo.train(cfg, resume=load_checkpoint(tmp_path / "checkpoint.npz"))
    rows = res.history
    assert [r["epoch"] for r in rows] == [2, 3, 4] and len(betas) == 3 * 4 * 4
    beta = before["state"]["extra"]["beta"]
    assert beta != cfg.beta  # moved before the checkpoint
    for it, row in enumerate(rows):
        assert set(betas[it * 16:(it + 1) * 16]) == {beta}
        beta = adapt_beta(beta, row["approx_kl"], 0.002)
        assert row["beta"] == pytest.approx(beta, rel=1e-15)
    assert len({r["beta"] for r in rows}) == 3


def test_resumed_run_keeps_the_checkpoint_cadence(monkeypatch, tmp_path):
    """The cadence (train.Checkpointer): after the first epoch, then every CHECKPOINT_EVERY_S,
    and at the end. A resumed run does the same from its first epoch: with an infinite
    interval, a run stopped by Ctrl-C in epoch 3 wrote epochs 0 and 2; resumed, it writes
    epoch 3 (its first) and 5 (its end).
    Planted: a resumed run's Checkpointer starting its clock at the resume (written_at = now:
    no write after its first epoch; caught)."""
    import pgnumpy.train as train_mod
    from pgnumpy.train import main

    writes = []
    real = train_mod.write_checkpoint

    def write(path, arrays):
        real(path, arrays)
        writes.append(int(load_checkpoint(path)["epoch"]))

    monkeypatch.setattr(train_mod, "write_checkpoint", write)
    monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY_S", float("inf"))
    out = tmp_path / "r"
    argv = ["--total-steps", str(6 * 128), "--num-envs", "2", "--steps-per-env", "64",
            "--hidden", "8", "--quiet", "--out", str(out)]
    real_collect, n = ppo.collect, []

    def collect(*a, **k):
        n.append(1)
        if len(n) == 4:  # Ctrl-C during epoch 3: epochs 0-2 done
            raise KeyboardInterrupt
        return real_collect(*a, **k)

    monkeypatch.setattr(ppo, "collect", collect)
    assert main(argv) == 130
    assert writes == [0, 2]
    monkeypatch.setattr(ppo, "collect", real_collect)
    writes.clear()
    assert main(["--resume", str(out), "--quiet"]) == 0
    assert writes == [3, 5]
