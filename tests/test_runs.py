"""Runs people can trust: reproducible, resumable, interruptible, and loud about bad state."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pgnumpy.algos import load_checkpoint, ppo
from pgnumpy.train import main

SMALL = ["--total-steps", "6144", "--num-envs", "8", "--steps-per-env", "64", "--quiet"]


def progress(run, drop=("wall_s",)):
    with open(run / "progress.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def test_same_seed_same_run_in_process_and_across_processes(tmp_path):
    a = ppo.train(ppo.PPOConfig(total_steps=6144, num_envs=8, steps_per_env=64, seed=3))
    b = ppo.train(ppo.PPOConfig(total_steps=6144, num_envs=8, steps_per_env=64, seed=3))
    np.testing.assert_array_equal(a.policy.params, b.policy.params)
    strip = [{k: v for k, v in r.items() if k != "wall_s"} for r in a.history]
    assert strip == [{k: v for k, v in r.items() if k != "wall_s"} for r in b.history]
    runs = []
    for name in ("p1", "p2"):
        subprocess.run([sys.executable, "-m", "pgnumpy.train", *SMALL, "--seed", "3",
                        "--out", str(tmp_path / name)], check=True, capture_output=True)
        runs.append(tmp_path / name)
    assert progress(runs[0]) == progress(runs[1])
    ck = [load_checkpoint(r) for r in runs]
    np.testing.assert_array_equal(ck[0]["net/policy"], ck[1]["net/policy"])
    np.testing.assert_array_equal(ck[0]["net/policy"], a.policy.params)
    c = ppo.train(ppo.PPOConfig(total_steps=6144, num_envs=8, steps_per_env=64, seed=4))
    assert not np.array_equal(c.policy.params, a.policy.params)  # the seed matters


def test_checkpoint_holds_the_whole_state(tmp_path):
    assert main([*SMALL, "--out", str(tmp_path / "r")]) == 0
    ck = load_checkpoint(tmp_path / "r")
    for key in ["net/policy", "net/critic", "opt/policy/m", "opt/policy/v", "opt/critic/t",
                "episode_returns", "env_steps", "epoch", "wall_s"]:
        assert key in ck
    assert set(ck["rngs"]) == {"act", "minibatch"} and ck["config"]["algo"] == "ppo"
    assert not (tmp_path / "r" / "checkpoint.npz.tmp").exists()  # written via temp + rename


def test_interrupt_keeps_the_last_checkpoint_and_resume_continues_learning(tmp_path):
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "pgnumpy.train", "--total-steps", "80000", "--target-return",
           "inf", "--seed", "1", "--out", str(run), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:  # wait for a few epochs, then Ctrl-C
        if (run / "progress.csv").exists() and len(progress(run)) >= 15:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    ck = load_checkpoint(run)
    stopped_at = int(ck["epoch"])
    rows_before = progress(run)
    assert stopped_at >= 13  # 15 rows were logged; the 15th epoch's checkpoint may be unwritten
    assert main(["--resume", str(run), "--quiet"]) == 0
    rows = progress(run)
    epochs = [int(r["epoch"]) for r in rows]
    assert epochs == list(range(len(rows)))  # contiguous: no gap, no repeat
    assert rows[: stopped_at + 1] == rows_before[: stopped_at + 1]
    first = float(rows[stopped_at]["ep_return_mean"])
    last = float(rows[-1]["ep_return_mean"])
    assert int(rows[-1]["env_steps"]) > 75000 and last > first + 50, (first, last)


def test_bad_resume_targets_get_one_line_errors(tmp_path, capsys):
    (tmp_path / "trunc").mkdir()
    good = tmp_path / "good"
    assert main([*SMALL, "--out", str(good)]) == 0
    data = (good / "checkpoint.npz").read_bytes()
    (tmp_path / "trunc" / "checkpoint.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "foreign").mkdir()
    np.savez(tmp_path / "foreign" / "checkpoint.npz", x=np.arange(3))
    (tmp_path / "older").mkdir()
    np.savez(tmp_path / "older" / "checkpoint.npz", format=np.array("pgnumpy-checkpoint-1"))
    (tmp_path / "fieldless").mkdir()
    meta = json.dumps({"format": "pgnumpy-checkpoint-2", "config": {}})  # the rest missing
    np.savez(tmp_path / "fieldless" / "checkpoint.npz", meta=np.array(meta))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "checkpoint.npz").write_text("hello")
    capsys.readouterr()
    for name, msg in [("trunc", "not a readable checkpoint"),
                      ("foreign", "not a pgnumpy checkpoint"),
                      ("older", "written by an older pgnumpy (format 1)"),
                      ("fieldless", "not a readable checkpoint (missing or bad field 'epoch')"),
                      ("text", "not a readable checkpoint"),
                      ("missing", "no checkpoint at")]:
        assert main(["--resume", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    assert main(["--resume", str(good), "--lr", "0.1"]) == 2
    assert "drop --lr 0.1" in capsys.readouterr().err


def test_checkpoint_that_does_not_fit_the_network_is_refused(tmp_path):
    from pgnumpy.errors import UserError

    assert main([*SMALL, "--out", str(tmp_path / "r")]) == 0
    ck = load_checkpoint(tmp_path / "r")
    with pytest.raises(UserError, match="network 'policy' does not match the config"):
        ppo.train(ppo.PPOConfig(hidden=(8,), total_steps=512, num_envs=8, steps_per_env=64),
                  resume=ck)


def poison_loss(monkeypatch, fused: bool, which: int, after: int) -> list:
    """From minibatch step `after` + 1 on, the policy loss (which=0) or the value loss (1) is
    NaN: in the reference path through objectives' functions as ppo.py calls them, in the
    fused path through the statistics fused.PPOUpdate.step returns."""
    import pgnumpy.algos.ppo as ppo_mod

    calls = []
    if fused:
        real_step = ppo_mod.fused.PPOUpdate.step

        def step(self, *a, **k):
            calls.append(1)
            stats = list(real_step(self, *a, **k))
            stats[which] = float("nan") if len(calls) > after else stats[which]
            return tuple(stats)

        monkeypatch.setattr(ppo_mod.fused.PPOUpdate, "step", step)
        return calls  # the steps so far: clear it to start counting again
    name = ("ppo_clip_loss", "value_loss")[which]
    real = getattr(ppo_mod, name)

    def poisoned(*a, **k):
        calls.append(1)
        loss, *rest = real(*a, **k)
        return (float("nan") if len(calls) > after else loss), *rest

    monkeypatch.setattr(ppo_mod, name, poisoned)
    return calls


@pytest.mark.parametrize("fused", [True, False])
def test_a_nan_loss_stops_the_run_naming_the_epoch_and_keeps_the_last_good_checkpoint(
        fused, tmp_path, capsys, monkeypatch):
    per_iteration = ppo.PPOConfig().update_epochs * ppo.PPOConfig().minibatches
    poison_loss(monkeypatch, fused, 0, 2 * per_iteration)  # from iteration 3 (epoch 2) on
    code = main([*SMALL, "--out", str(tmp_path / "r"), *([] if fused else ["--no-fused"])])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite loss (nan) at epoch 2" in err
    assert int(load_checkpoint(tmp_path / "r")["epoch"]) == 1


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_keyboard_interrupt_message_is_one_line(tmp_path, capsys, monkeypatch):
    import pgnumpy.algos.ppo as ppo_mod

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ppo_mod, "collect", boom)
    assert main([*SMALL, "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted") and err.count("\n") == 0


# ---- the same guarantees for TRPO (its own state: no policy optimizer, a float64 policy)

TRPO_SMALL = ["--algo", "trpo", "--total-steps", "2048", "--num-envs", "4", "--steps-per-env",
              "128", "--hidden", "16", "--quiet"]


def test_trpo_same_seed_same_run_in_process_and_across_processes(tmp_path):
    from pgnumpy.algos import trpo

    cfg = dict(total_steps=2048, num_envs=4, steps_per_env=128, hidden=(16,), seed=3)
    a, b = trpo.train(trpo.TRPOConfig(**cfg)), trpo.train(trpo.TRPOConfig(**cfg))
    np.testing.assert_array_equal(a.policy.params, b.policy.params)
    np.testing.assert_array_equal(a.critic.params, b.critic.params)
    strip = [{k: v for k, v in r.items() if k != "wall_s"} for r in a.history]
    assert strip == [{k: v for k, v in r.items() if k != "wall_s"} for r in b.history]
    assert all(r["accepted"] == 1 for r in a.history)  # steps were taken: a real comparison
    runs = []
    for name in ("p1", "p2"):
        subprocess.run([sys.executable, "-m", "pgnumpy.train", *TRPO_SMALL, "--seed", "3",
                        "--out", str(tmp_path / name)], check=True, capture_output=True)
        runs.append(tmp_path / name)
    assert progress(runs[0]) == progress(runs[1])
    ck = [load_checkpoint(r) for r in runs]
    np.testing.assert_array_equal(ck[0]["net/policy"], ck[1]["net/policy"])
    np.testing.assert_array_equal(ck[0]["net/policy"], a.policy.params)
    assert ck[0]["config"]["algo"] == "trpo" and set(ck[0]["rngs"]) == {"act", "critic"}
    c = trpo.train(trpo.TRPOConfig(**(cfg | {"seed": 4})))
    assert not np.array_equal(c.policy.params, a.policy.params)  # the seed matters


def test_trpo_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    """Ctrl-C during iteration 3 keeps iteration 2's checkpoint; --resume continues from
    iteration 3 with the saved critic optimizer, observation and return statistics, to the
    budget."""
    import pgnumpy.algos.trpo as trpo_mod

    real, calls = trpo_mod.collect, {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    run = tmp_path / "r"
    monkeypatch.setattr(trpo_mod, "collect", interrupted)
    argv = [*TRPO_SMALL, "--norm-obs", "--norm-rew", "--out", str(run)]
    assert main(argv) == 130
    ck = load_checkpoint(run)
    assert int(ck["epoch"]) == 2 and ck["opt/critic/t"] == 3 * 20
    seen, seen_g = ck["extra"]["obs_norm"]["count"], ck["extra"]["rew_scale"]["count"]
    monkeypatch.setattr(trpo_mod, "collect", real)
    assert main(["--resume", str(run), "--quiet"]) == 0
    rows = progress(run)
    assert [int(r["epoch"]) for r in rows] == list(range(4))  # 2048 / 512: 4 iterations
    end = load_checkpoint(run)
    assert end["opt/critic/t"] == 4 * 20  # Adam's state continued
    # the observation statistics continued too: the old count plus one batch's valid steps
    assert seen < end["extra"]["obs_norm"]["count"] <= seen + 512
    assert seen_g < end["extra"]["rew_scale"]["count"] <= seen_g + 512


@pytest.mark.parametrize("every, writes", [(0.0, 8), (float("inf"), 2)])
def test_checkpoints_are_written_after_the_first_epoch_then_on_an_interval(
        every, writes, tmp_path, monkeypatch):
    """8 epochs: every epoch with a 0 s interval; with an infinite one, after the first epoch and
    once at the end; the file always holds the last epoch's state."""
    import pgnumpy.train as train_mod

    calls = []
    real = train_mod.write_checkpoint
    monkeypatch.setattr(train_mod, "write_checkpoint", lambda p, a: calls.append(1) or real(p, a))
    monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY_S", every)
    assert main([*SMALL, "--total-steps", str(8 * 512), "--out", str(tmp_path / "r")]) == 0
    assert len(calls) == writes and int(load_checkpoint(tmp_path / "r")["epoch"]) == 7


@pytest.mark.parametrize("stop", ["ctrl-c", "nan"])
def test_an_early_stop_writes_the_last_completed_epoch_whatever_the_interval(
        stop, tmp_path, monkeypatch, capsys):
    """Ctrl-C during epoch 5, or a NaN loss found at epoch 5, with the interval infinite (only
    epoch 0 was written by then): the checkpoint holds epoch 4, the last completed one, so an
    interrupted run still loses at most the epoch in progress."""
    import pgnumpy.train as train_mod

    if stop == "ctrl-c":
        real, n = ppo.collect, []

        def collect(*a, **k):
            n.append(1)
            if len(n) == 6:
                raise KeyboardInterrupt
            return real(*a, **k)

        monkeypatch.setattr(ppo, "collect", collect)
    else:  # the value loss, in the default (fused) path; 16 minibatch steps an epoch
        n = poison_loss(monkeypatch, True, 1, 5 * 16)
    ckpts = []
    for every in (float("inf"), 0.0):  # the same run written every epoch: the same file content
        monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY_S", every)
        n.clear()
        out = tmp_path / f"r{every}"
        code = main([*SMALL, "--total-steps", str(10 * 512), "--out", str(out)])
        assert code == (130 if stop == "ctrl-c" else 2)
        assert "checkpoint" in capsys.readouterr().err
        ckpts.append(load_checkpoint(out))
    assert int(ckpts[0]["epoch"]) == int(ckpts[1]["epoch"]) == 4
    # non-trivial before compared (issue 23): episodes finished, Adam's moments moved
    assert len(ckpts[0]["episode_returns"]) > 0 and np.any(ckpts[0]["opt/policy/m"] != 0)
    for key in ("net/policy", "net/critic", "opt/policy/m", "opt/critic/v", "episode_returns",
                "episode_lengths"):
        np.testing.assert_array_equal(ckpts[0][key], ckpts[1][key])
    assert ckpts[0]["env_steps"] == ckpts[1]["env_steps"]
    assert ckpts[0]["rngs"] == ckpts[1]["rngs"]


def test_each_progress_row_is_on_disk_when_its_epoch_ends(tmp_path):
    """progress.csv stays open for appending (one open per run, not per row), and each row is
    flushed as it is logged: after every epoch the file holds that epoch's row, whole."""
    from pgnumpy.train import run

    seen = []

    def should_stop():  # called after each epoch's row and checkpoint
        seen.append((tmp_path / "r" / "progress.csv").read_text().splitlines())
        return False

    cfg = ppo.PPOConfig(total_steps=3 * 128, num_envs=4, steps_per_env=32, hidden=(8,),
                        target_return=float("inf"))
    run("ppo", cfg, tmp_path / "r", quiet=True, should_stop=should_stop)
    assert [len(lines) for lines in seen] == [2, 3, 4]  # the header and one row an epoch
    assert [line.split(",")[0] for line in seen[-1][1:]] == ["0", "1", "2"]
