"""The edges issue 22 found in train, evaluate, plot, bench and the API: each bad input is one
line (exit status 2, UserError from Python), nothing silent, nothing written where it should
not be."""

from __future__ import annotations

import dataclasses
import os

import gymnasium as gym
import numpy as np
import pytest
from cli_helpers import one_line

from pgnumpy import evaluate
from pgnumpy.algos.ppo import PPOConfig
from pgnumpy.algos.simple_pg import SimplePGConfig
from pgnumpy.algos.trpo import TRPOConfig
from pgnumpy.algos.vpg import VPGConfig
from pgnumpy.api import load
from pgnumpy.api import train as api_train
from pgnumpy.bench import main as bench_main
from pgnumpy.errors import UserError
from pgnumpy.evaluate import main as evaluate_main
from pgnumpy.plot import main as plot_main
from pgnumpy.rlhf.finetune import RLConfig
from pgnumpy.rlhf.lm import LMConfig
from pgnumpy.rlhf.pipeline import RLHFConfig
from pgnumpy.rlhf.reward_model import RMConfig
from pgnumpy.train import main as train_main

TINY = ["--total-steps", "1024", "--num-envs", "4", "--steps-per-env", "32", "--hidden", "8",
        "--quiet", "--target-return", "inf"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "r"
    assert train_main([*TINY, "--out", str(run)]) == 0
    return run


def test_evaluate_refuses_a_negative_seed(small_run, capsys):
    err = one_line(evaluate_main([str(small_run), "--seed", "-1"]), capsys)
    assert "--seed must be an integer in [0, 2**63 - episodes], got -1" in err


def test_a_diverging_lr_on_the_fused_gaussian_path_is_the_non_finite_line(tmp_path, capsys):
    """lr 1e6 drives log std to -inf: the fused kernel divided by std = 0 (ZeroDivisionError
    traceback); now it computes inf/NaN as NumPy does and check_finite says so."""
    argv = ["--env", "Pendulum-v1", "--lr", "1e6", "--total-steps", "2048", "--quiet",
            "--target-return", "inf"]  # the preset's 8 x 128 batch: std reaches 0 in step 2
    for flags, out in ((["--fused"], "f"), (["--no-fused"], "r")):
        err = one_line(train_main([*argv, *flags, "--out", str(tmp_path / out)]), capsys)
        assert err.startswith("error: non-finite ") and "Lower the learning rate" in err, err


class _Blind(gym.Env):
    observation_space = gym.spaces.Box(0.0, 1.0, (0,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.zeros(0, np.float32), {}

    def step(self, action):
        return np.zeros(0, np.float32), 0.0, False, False, {}


class _NoActions(_Blind):
    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (0,), np.float32)


@pytest.mark.parametrize("env_cls, what", [(_Blind, "has no dimensions"),
                                          (_NoActions, "(0,), float32) is not supported")])
def test_a_zero_width_space_is_refused(env_cls, what, tmp_path, capsys):
    env_id = f"pgnumpy-test-{env_cls.__name__}-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=env_cls, max_episode_steps=10)
    err = one_line(train_main([*TINY, "--env", env_id, "--out", str(tmp_path / "r")]), capsys)
    assert what in err, err
    assert not (tmp_path / "r" / "checkpoint.npz").exists()


@pytest.mark.parametrize("cls", [PPOConfig, VPGConfig, TRPOConfig, SimplePGConfig, LMConfig,
                                 RMConfig, RLConfig, RLHFConfig])
def test_a_config_with_an_unknown_field_is_a_user_error(cls):
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(UserError, match=rf"{cls.__name__}: .*'foo'; its fields are {first}, "):
        cls(foo=1)
    with pytest.raises(TypeError):  # still the TypeError Python code may expect
        cls(foo=1)
    assert getattr(cls(**{first: getattr(cls(), first)}), first) == getattr(cls(), first)


def test_the_api_refuses_what_is_not_a_path(tmp_path):
    cfg = PPOConfig(total_steps=256, num_envs=2, steps_per_env=32, hidden=(8,))
    for out in (123, "", None.__class__):
        with pytest.raises(UserError, match="out must be a path"):
            api_train(cfg, out=out)
    for run_dir in (None, 1.5, ""):
        with pytest.raises(UserError, match="run_dir must be a path"):
            load(run_dir)
    with pytest.raises(UserError, match="quiet must be True or False"):
        api_train(cfg, quiet="no")
    with pytest.raises(UserError, match="import_module must be a module name"):
        load(tmp_path, import_module=3)
    assert os.listdir(tmp_path) == []


def test_plot_draws_into_the_run_and_never_into_the_working_directory(small_run, tmp_path,
                                                                      monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert plot_main([str(small_run)]) == 0
    assert (small_run / "learning_curve.png").stat().st_size > 0
    assert os.listdir(tmp_path) == []
    err = one_line(plot_main([str(small_run), str(small_run)]), capsys)
    assert "2 runs in one figure: name the image with --out" in err
    assert os.listdir(tmp_path) == []


def test_bench_compare_refuses_an_empty_ref(capsys):
    for ref in ("", "  "):
        err = one_line(bench_main(["--compare", ref, "--seeds", "1"]), capsys)
        assert "--compare needs a git revision or the path of a pgnumpy checkout" in err


def test_a_failed_mujoco_render_says_how_to_render_headless(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    assert "MUJOCO_GL=egl" in evaluate.render_hint("HalfCheetah-v5")
    assert evaluate.render_hint("CartPole-v1") == ""
    monkeypatch.setenv("MUJOCO_GL", "egl")  # set already: the failure is something else
    assert evaluate.render_hint("HalfCheetah-v5") == ""
