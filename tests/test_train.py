"""The CLI and the training loops: clear errors, the run directory, a short run that learns."""

import csv
import json

import numpy as np
import pytest

from pgnumpy.algos import load_checkpoint, ppo, simple_pg, vpg
from pgnumpy.errors import UserError
from pgnumpy.phi import PHI_FORMS
from pgnumpy.train import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr", "0"], "lr must be in (0, inf), got 0.0"),
        (["--lr=-1e-3"], "lr must be in (0, inf)"),
        (["--gamma", "0"], "gamma must be in (0, 1], got 0.0"),
        (["--gamma", "1.5"], "gamma must be in (0, 1]"),
        (["--lam=-0.1"], "lam must be in [0, 1]"),
        (["--lam", "1.01"], "lam must be in [0, 1]"),
        (["--steps-per-env", "1"], "steps_per_env must be an integer >= 2 (a rollout of 1 step"),
        (["--clip-eps", "1.5"], "clip_eps must be in (0, 1)"),
        (["--variant", "trpo"], "variant must be one of clip, kl"),
        (["--algo", "vpg", "--phi", "advantage"], "unknown phi 'advantage'; choose one of return"),
        (["--algo", "simple_pg", "--steps-per-epoch", "0"], "steps_per_epoch must be an integer"),
        (["--env", "NoSuchEnv-v0"], "unknown env id 'NoSuchEnv-v0'"),
        (["--env", "Blackjack-v1"], "observation space Tuple"),
        (["--algo", "vpg", "--env", "Pendulum-v1", "--phi", "q"], "phi 'q' needs a Discrete"),
        (["--algo", "dqn"], "unknown --algo 'dqn'"),
        (["--algo", "trpo", "--delta", "0"], "delta must be in (0, inf), got 0.0"),
        (["--algo", "trpo", "--backtrack-coef", "1"], "backtrack_coef must be in (0, 1)"),
        (["--algo", "trpo", "--cg-iters", "0"], "cg_iters must be an integer >= 1, got 0"),
        (["--hidden", "64,x"], "expected comma-separated integers"),
        (["--lr", "nan"], "lr must be in (0, inf), got nan"),
        (["--num-envs", "2", "--steps-per-env", "4", "--minibatches", "9"],
         "minibatches (9) must be <= num_envs * steps_per_env (8)"),
    ],
)
def test_cli_user_errors_are_one_line_and_exit_nonzero(argv, message, capsys, tmp_path):
    code = main([*argv, "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_help_lists_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ["--algo", "--env", "--seed", "--out", "--total-steps", "--steps-per-env",
                 "--hidden", "--lr", "--gamma", "--lam", "--num-envs", "--clip-eps"]:
        assert flag in out
    assert "(default: 0.98)" in out  # gamma
    with pytest.raises(SystemExit):
        main(["--algo", "vpg", "--help"])
    out = capsys.readouterr().out
    for flag in ["--phi", "--epochs", "--vf-lr", "--vf-iters"]:
        assert flag in out
    with pytest.raises(SystemExit):
        main(["--algo", "trpo", "--help"])
    out = capsys.readouterr().out
    for flag in ["--delta", "--cg-iters", "--damping", "--backtrack-coef", "--backtrack-iters"]:
        assert flag in out
    assert "KL radius of the trust region" in out  # from the docstring's hyperparameter list


def test_vpg_run_writes_its_directory_and_learns(tmp_path, capsys):
    """A short fixed-seed run: 12 epochs of 2048 steps take CartPole from ~20 to > 100."""
    out = tmp_path / "run"
    code = main(["--algo", "vpg", "--epochs", "12", "--seed", "1", "--out", str(out), "--plot"])
    assert code == 0
    assert {p.name for p in out.iterdir()} >= {
        "config.json", "progress.csv", "checkpoint.npz", "learning_curve.png"}
    assert json.loads((out / "config.json").read_text())["algo"] == "vpg"
    rows = list(csv.DictReader(open(out / "progress.csv")))
    assert len(rows) == 12
    for key in ["epoch", "env_steps", "wall_s", "ep_return_mean", "ep_len_mean", "loss",
                "entropy", "value_loss"]:
        assert key in rows[0]
    first, last = float(rows[0]["ep_return_mean"]), float(rows[-1]["ep_return_mean"])
    assert first < 40 and last > 100, (first, last)
    ckpt = load_checkpoint(out)
    assert int(ckpt["epoch"]) == 11 and ckpt["net/policy"].ndim == 1
    assert "ep_return_mean" in capsys.readouterr().out  # the progress table


@pytest.mark.parametrize("phi", list(PHI_FORMS))
def test_every_phi_runs_in_both_algorithms(phi):
    r = simple_pg.train(simple_pg.SimplePGConfig(phi=phi, epochs=2, steps_per_epoch=300,
                                                 num_envs=2, vf_iters=2))
    assert len(r.history) == 2 and np.isfinite(r.history[-1]["loss"])
    r = vpg.train(vpg.VPGConfig(phi=phi, epochs=2, steps_per_env=64, num_envs=2, vf_iters=2))
    assert len(r.history) == 2 and np.isfinite(r.history[-1]["loss"])


def test_config_rejects_bad_hyperparameters_in_python_too():
    with pytest.raises(UserError, match="hidden must be a non-empty list of layer widths"):
        vpg.VPGConfig(hidden=(64, 0))
    with pytest.raises(UserError, match="activation must be one of tanh, relu"):
        simple_pg.SimplePGConfig(activation="sigmoid")


@pytest.mark.parametrize("variant", ["clip", "kl"])
def test_ppo_learns_in_a_short_run(variant):
    """Fixed seed, 40k steps: both variants take CartPole from ~20 to > 150 (seen with the
    (32, 32) defaults, seeds 0-4: clip 176-317, kl 153-252; seed 0: clip 176, kl 182; an
    untrained policy stays near 20)."""
    r = ppo.train(ppo.PPOConfig(variant=variant, total_steps=40_000, seed=0, target_kl=0.02
                                if variant == "kl" else None))
    first, last = r.history[0]["ep_return_mean"], r.history[-1]["ep_return_mean"]
    assert first < 40 and last > 150, (first, last)
    assert all(np.isfinite(h["loss"]) and h["approx_kl"] >= 0 for h in r.history)


def test_env_presets_apply_under_the_flags_given():
    from pgnumpy.train import parse_args

    _, cfg, _ = parse_args(["--env", "Pendulum-v1"])
    assert cfg.gamma == 0.95 and cfg.sde and cfg.total_steps == 100_000
    _, cfg, _ = parse_args(["--env", "Pendulum-v1", "--gamma", "0.9", "--no-sde"])
    assert cfg.gamma == 0.9 and not cfg.sde and cfg.num_envs == 4
    _, cfg, _ = parse_args([])
    assert cfg.gamma == 0.98 and not cfg.norm_obs  # CartPole: the dataclass defaults


def test_pendulum_trains_with_no_other_flags(tmp_path, capsys):
    """Continuous actions end to end through the CLI (a short budget; the preset runs 100k)."""
    code = main(["--env", "Pendulum-v1", "--total-steps", "4096", "--out", str(tmp_path / "p"),
                 "--quiet"])
    assert code == 0
    ck = load_checkpoint(tmp_path / "p")
    assert ck["config"]["sde"] and ck["net/policy"].size > 0  # the preset's gSDE policy
    # no --plot: no matplotlib figure (0.4 s of a default run's 1 s), and the way to draw one
    assert not (tmp_path / "p" / "learning_curve.png").exists()
    assert f"python -m pgnumpy.plot {tmp_path / 'p'}" in capsys.readouterr().out


@pytest.mark.parametrize("algo", ["vpg", "simple_pg", "trpo"])
def test_vpg_and_simple_pg_take_continuous_actions(algo, tmp_path):
    budget = {"simple_pg": ["--epochs", "2", "--steps-per-epoch", "400"],
              "vpg": ["--epochs", "2", "--steps-per-env", "64"],
              "trpo": ["--total-steps", "512", "--num-envs", "2", "--steps-per-env", "128"]}[algo]
    assert main(["--algo", algo, "--env", "Pendulum-v1", *budget, "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "r" / "progress.csv")))
    assert len(rows) == 2 and all(np.isfinite(float(r["loss"])) for r in rows)
