"""evaluate, plot and the Python API, on small real runs."""

import json

import numpy as np
import pytest

from pgnumpy.algos.ppo import PPOConfig
from pgnumpy.api import Agent, build_policy, load, train
from pgnumpy.errors import UserError
from pgnumpy.evaluate import main as evaluate_main
from pgnumpy.plot import group_runs
from pgnumpy.plot import main as plot_main
from pgnumpy.train import main as train_main

SMALL = dict(total_steps=4096, num_envs=8, steps_per_env=64)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    dirs = []
    for seed in (0, 1):
        train(PPOConfig(seed=seed, **SMALL), out=base / f"a{seed}")
        dirs.append(base / f"a{seed}")
    train(PPOConfig(seed=0, lr=1e-3, **SMALL), out=base / "b0")
    dirs.append(base / "b0")
    return dirs


def test_readme_api_example(tmp_path, monkeypatch, capsys):
    """The README's Python example, executed verbatim from README.md."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert float(capsys.readouterr().out.split()[-1]) > 50  # the printed 100-episode mean
    assert isinstance(scope["agent"].act(scope["obs"]), int)
    np.testing.assert_array_equal(scope["agent"].policy.params, scope["result"].policy.params)


def test_api_refuses_a_foreign_config():
    with pytest.raises(UserError, match="config must be one of"):
        train({"lr": 1})


def test_evaluate_prints_mean_and_std_and_writes_a_gif(runs, tmp_path, capsys):
    gif = tmp_path / "cmp.gif"
    assert evaluate_main([str(runs[0]), "--episodes", "3", "--gif", str(gif),
                          "--compare-untrained", "--sample"]) == 0
    out = capsys.readouterr().out
    assert "+-" in out and "over 3 episodes" in out and "untrained policy: return" in out
    from PIL import Image

    im = Image.open(gif)
    assert im.format == "GIF" and im.n_frames > 1
    assert im.size[0] == 2 * 300  # two half-size 600-pixel panels side by side


def test_untrained_policy_is_the_run_s_starting_network(tmp_path):
    r = train(PPOConfig(seed=5, total_steps=512, num_envs=8, steps_per_env=64))
    start = build_policy({"env_id": "CartPole-v1", "seed": 5, "hidden": list(PPOConfig.hidden),
                          "activation": "tanh"})
    assert not np.array_equal(start.params, r.policy.params)  # it trained...
    from pgnumpy.algos.ppo import train as ppo_train
    from pgnumpy.logger import Logger

    h = ppo_train(PPOConfig(seed=5, total_steps=512, num_envs=8, steps_per_env=64, lr=1e-12,
                            max_grad_norm=None), Logger(quiet=True))
    np.testing.assert_allclose(h.policy.params, start.params, atol=1e-8)  # ...from there


def test_evaluate_errors(tmp_path, capsys):
    assert evaluate_main([str(tmp_path / "nope")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_plot_groups_seeds_and_labels_what_differs(runs, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert plot_main([*map(str, runs), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    from pgnumpy.plot import read_run

    groups = group_runs([read_run(d) for d in runs])
    assert sorted(len(v) for v in groups.values()) == [1, 2]
    assert all(k.startswith("lr=") for k in groups)
    assert plot_main([str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_quiet_silences_the_table_and_the_table_shows_progress(tmp_path, capsys):
    argv = ["--total-steps", "2048", "--num-envs", "8", "--steps-per-env", "64"]
    train_main([*argv, "--out", str(tmp_path / "q"), "--quiet"])
    quiet = capsys.readouterr().out
    assert "ep_return_mean" not in quiet and "run written to" in quiet
    train_main([*argv, "--out", str(tmp_path / "v")])
    loud = capsys.readouterr().out
    assert "ep_return_mean" in loud and "eta_s" in loud
    assert json.loads((tmp_path / "v" / "config.json").read_text())["total_steps"] == 2048


def test_agent_act_single_and_batch():
    pol = build_policy({"env_id": "CartPole-v1", "seed": 0, "hidden": [8], "activation": "tanh"})
    agent = Agent({}, pol, 0)
    assert agent.act(np.zeros(4)) in (0, 1)
    assert agent.act(np.zeros((3, 4))).shape == (3,)


def test_load_and_evaluate_a_continuous_run_with_its_obs_normaliser(tmp_path, capsys):
    assert train_main(["--env", "Pendulum-v1", "--norm-obs", "--total-steps", "4096", "--out",
                       str(tmp_path / "p"), "--quiet"]) == 0
    agent = load(tmp_path / "p")
    assert agent.obs_norm is not None and agent.obs_norm.count > 1  # restored, not fresh
    a = agent.act(np.array([1.0, 0.0, 0.0]), deterministic=False, rng=np.random.default_rng(0))
    assert a.shape == (1,) and -2.0 <= a[0] <= 2.0  # clipped to the Box, as in rollouts
    capsys.readouterr()
    assert evaluate_main([str(tmp_path / "p"), "--episodes", "2"]) == 0
    assert "ppo on Pendulum-v1" in capsys.readouterr().out


def test_api_trains_and_loads_a_trpo_run(tmp_path):
    from pgnumpy.algos.trpo import TRPOConfig

    r = train(TRPOConfig(total_steps=1024, num_envs=4, steps_per_env=128, hidden=(8,)),
              out=tmp_path / "t")
    agent = load(tmp_path / "t")
    np.testing.assert_allclose(agent.policy.params, r.policy.params, rtol=1e-6)  # float32 copy
    assert agent.act(np.zeros(4)) in (0, 1) and agent.config["algo"] == "trpo"
    assert r.history[-1]["accepted"] in (0, 1) and r.timers["rollout"] > 0
