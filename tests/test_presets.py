"""The env presets (PRESETS in each algorithm's module): valid configs, applied by `--env ID` under
the flags the user gives, a note when an env has none, the install extras an env family needs,
and a short run per env family (the learning itself is pgnumpy.bench --suite's job)."""

import dataclasses
import subprocess
import sys
import typing

import gymnasium as gym
import numpy as np
import pytest

from pgnumpy.algos import ALGOS
from pgnumpy.bench_suite import ZOO_PPO
from pgnumpy.train import FLAG_NAMES, main, parse_args

PRESET_CASES = [
    (algo, env_id)
    for algo, (cfg_cls, _) in ALGOS.items()
    for env_id in getattr(sys.modules[cfg_cls.__module__], "PRESETS", {})
]


def _presets(algo: str) -> dict:
    return sys.modules[ALGOS[algo][0].__module__].PRESETS


@pytest.mark.parametrize("algo, env_id", PRESET_CASES)
def test_each_preset_is_a_valid_config_of_its_algorithm(algo, env_id):
    cfg_cls, _ = ALGOS[algo]
    preset = _presets(algo)[env_id]
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    assert set(preset) <= fields, f"not {algo} config fields: {set(preset) - fields}"
    assert preset["env_id"] == env_id
    gym.spec(env_id)  # a registered gymnasium id (raises otherwise)
    cfg = cfg_cls(**preset)  # validate(): every value in its range
    assert all(getattr(cfg, k) == (tuple(v) if k == "hidden" else v) for k, v in preset.items())
    if algo == "ppo":
        batch = cfg.num_envs * cfg.steps_per_env
        assert batch % cfg.minibatches == 0, "minibatches that do not divide the batch drop data"
        assert cfg.total_steps >= batch


@pytest.mark.parametrize("env_id", [e for a, e in PRESET_CASES if a == "ppo"])
def test_each_ppo_preset_is_within_zoos_step_budget(env_id):
    """The issue's bar: Zoo's return within Zoo's budget or less (bench.ZOO_PPO has both)."""
    if env_id not in ZOO_PPO:
        pytest.skip(f"issue 26 quotes no Zoo PPO figure for {env_id}")
    assert _presets("ppo")[env_id]["total_steps"] <= ZOO_PPO[env_id][1]


def _other_value(name: str, value, kind):
    """A valid value for field `name` that differs from the preset's, and its CLI spelling."""
    if kind is bool:
        return (not value), (f"--{name}" if not value else f"--no-{name}")
    if name == "hidden":
        return (16,), "16"
    if kind is int:
        return value * 2, str(value * 2)
    if value is None:
        return 0.02, "0.02"
    new = value / 2 if value not in (0, 0.0) else 0.125
    return new, repr(new)


@pytest.mark.parametrize("algo, env_id", PRESET_CASES)
def test_a_preset_applies_by_env_id_and_every_flag_given_wins(algo, env_id):
    cfg_cls, _ = ALGOS[algo]
    preset = _presets(algo)[env_id]
    _, cfg, _ = parse_args(["--algo", algo, "--env", env_id])
    for k, v in preset.items():
        assert getattr(cfg, k) == (tuple(v) if k == "hidden" else v), k
    hints = typing.get_type_hints(cfg_cls)
    for k, v in preset.items():
        if k == "env_id":
            continue
        new, text = _other_value(k.replace("_", "-"), v, hints[k])
        flag = "--" + FLAG_NAMES.get(k, k).replace("_", "-")
        argv = ["--algo", algo, "--env", env_id]
        argv += [text] if text.startswith("--") else [flag, text]
        _, cfg, _ = parse_args(argv)
        assert getattr(cfg, k) == new, f"--{k} given, but the preset's {v!r} was used"
        # the rest of the preset still applies
        assert all(getattr(cfg, j) == (tuple(w) if j == "hidden" else w)
                   for j, w in preset.items() if j != k)


NOTE = "no tuned preset for {}: using CartPole's defaults (see PRESETS in {}"


def test_an_env_without_a_preset_says_so_in_one_line_at_the_start(tmp_path, capsys):
    gym.register("PgnumpyNoPreset-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                 max_episode_steps=20)
    try:
        code = main(["--env", "PgnumpyNoPreset-v0", "--total-steps", "512", "--quiet",
                     "--out", str(tmp_path / "run")])
    finally:
        gym.registry.pop("PgnumpyNoPreset-v0")
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(NOTE.format("PgnumpyNoPreset-v0", "pgnumpy.algos.ppo"))
    assert out.count("no tuned preset") == 1


@pytest.mark.parametrize("argv", [[], ["--env", "Pendulum-v1"], ["--env", "Acrobot-v1"],
                                  ["--algo", "trpo", "--env", "Pendulum-v1"]])
def test_no_note_where_the_settings_are_tuned(argv, tmp_path, capsys):
    code = main([*argv, "--total-steps", "64", "--steps-per-env", "16", "--num-envs", "4",
                 "--quiet", "--out", str(tmp_path / "run")])
    assert code == 0
    assert "no tuned preset" not in capsys.readouterr().out


def test_the_note_names_the_algorithm_whose_defaults_are_used(tmp_path, capsys):
    code = main(["--algo", "vpg", "--env", "Acrobot-v1", "--epochs", "1", "--num-envs", "2",
                 "--steps-per-env", "32", "--quiet", "--out", str(tmp_path / "run")])
    assert code == 0
    assert capsys.readouterr().out.startswith(NOTE.format("Acrobot-v1", "pgnumpy.algos.vpg"))


@pytest.mark.parametrize("env_id, module, extra", [("LunarLander-v3", "Box2D", "box2d"),
                                                    ("Hopper-v5", "mujoco", "mujoco")])
def test_a_missing_extra_is_one_line_naming_pgnumpys_extra(env_id, module, extra, tmp_path):
    """As if the extra were not installed (its module unimportable), from outside the package."""
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from pgnumpy.train import main\n"
            f"sys.exit(main(['--env', {env_id!r}, '--quiet', '--out', {str(tmp_path / 'r')!r}]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert f'needs an extra package: pip install -e ".[{extra}]"' in p.stderr


# One preset per env family, run for one batch through the CLI: the preset's whole path (its
# normalisers, log_std_init, network sizes) on the real env. Skipped, saying why, without the extra.
FAMILIES = [
    ("classic control, discrete", "Acrobot-v1", None),
    ("classic control, discrete", "MountainCar-v0", None),
    ("classic control, continuous", "MountainCarContinuous-v0", None),
    ("Box2D", "LunarLander-v3", "Box2D"),
    ("Box2D", "LunarLanderContinuous-v3", "Box2D"),
    ("MuJoCo", "HalfCheetah-v5", "mujoco"),
    ("MuJoCo", "Swimmer-v5", "mujoco"),
    ("MuJoCo", "Hopper-v5", "mujoco"),
    ("MuJoCo", "Walker2d-v5", "mujoco"),
]


@pytest.mark.parametrize("family, env_id, module", FAMILIES)
def test_each_env_family_trains_briefly_with_its_preset(family, env_id, module, tmp_path):
    if module is not None:
        pytest.importorskip(module, reason=f"{family} envs need pip install -e "
                            f'".[{module.lower()}]"')
    preset = _presets("ppo")[env_id]
    _, cfg, _ = parse_args(["--env", env_id])
    # one batch of at most 2 envs x 64 steps: the preset's path, not its budget
    steps = min(preset.get("steps_per_env", cfg.steps_per_env), 64)
    argv = ["--env", env_id, "--num-envs", "2", "--steps-per-env", str(steps),
            "--minibatches", str(min(cfg.minibatches, 2 * steps)),
            "--total-steps", str(2 * steps), "--quiet", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    from pgnumpy.algos import load_checkpoint

    ck = load_checkpoint(tmp_path / "run")
    assert ck["epoch"] == 0  # one iteration
    # the valid steps of that batch: 2 x steps, less one NEXT_STEP reset step for each episode
    # that ended before the batch's last step (Hopper falls within 64 steps; HalfCheetah never)
    ended = len(ck["episode_returns"])
    assert 2 * steps - ended <= ck["env_steps"] <= 2 * steps
    for k, v in preset.items():
        if k not in ("num_envs", "steps_per_env", "minibatches", "total_steps"):
            assert ck["config"][k] == (list(v) if k == "hidden" else v), k


@pytest.mark.parametrize("log_std_init", [-3.0, 1.0])
def test_ppo_starts_its_gaussian_policy_at_log_std_init(log_std_init, monkeypatch):
    """What the policy receives: PPO builds its Gaussian policy with the config's log_std_init
    (GAU.7), and api.build_policy (the untrained policy of evaluate --compare-untrained) too."""
    from pgnumpy import api
    from pgnumpy.algos import ppo

    built = []
    real = ppo.make_policy

    def spy(*args, **kw):
        built.append(real(*args, **kw))
        built.append(built[-1].params.copy())  # as built, before any update
        return built[-2]

    monkeypatch.setattr(ppo, "make_policy", spy)
    cfg = ppo.PPOConfig(env_id="Pendulum-v1", num_envs=2, steps_per_env=16, total_steps=32,
                        log_std_init=log_std_init)
    ppo.train(cfg)
    policy, start = built
    assert np.all(start[policy.n_net:] == np.float32(log_std_init))
    fresh = api.build_policy(dataclasses.asdict(cfg))
    assert np.all(fresh.log_std == np.float32(log_std_init))


# ----------------------------------------------------------------------- bench --suite


@pytest.mark.parametrize("argv, message", [
    (["--envs", "NoSuchEnv-v0"], "--envs takes preset env ids (CartPole-v1, "),
    (["--envs", ","], "--envs takes preset env ids"),
    (["--seeds", "0"], "--seeds and --workers must be >= 1, got 0, 1"),
    (["--workers", "0"], "--seeds and --workers must be >= 1, got 5, 0"),
])
def test_suite_bad_input_is_one_line_before_any_run(argv, message, tmp_path, capsys):
    from pgnumpy.bench import main as bench_main

    code = bench_main(["--suite", *argv, "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "s").exists()


def test_suite_bars_are_the_issues():
    from pgnumpy.bench_suite import bar

    assert bar("Acrobot-v1") == (-100.0, True)
    assert bar("MountainCar-v0") == (-110.0, True)
    assert bar("MountainCarContinuous-v0") == (90.0, True)
    assert bar("LunarLander-v3") == (200.0, True)
    assert bar("LunarLanderContinuous-v3") == (200.0, True)
    assert bar("Hopper-v5") == (2410.0, False)  # Zoo's return, not gymnasium's 3800
    assert bar("Swimmer-v5") == (282.0, False)  # Zoo's return, not gymnasium's 360
    assert bar("Walker2d-v5") == (3479.0, False)
    assert bar("Pendulum-v1") == (-172.2, False)


def test_suite_prints_one_row_per_env_from_its_sweep(tmp_path, capsys, monkeypatch):
    """End to end on the cheapest preset, 1 seed, 3 evaluation episodes, a 4k-step throughput
    run: the row's figures are those of the trial the sweep wrote."""
    import json

    from pgnumpy import bench_suite
    from pgnumpy.bench import main as bench_main

    monkeypatch.setattr(bench_suite, "EVAL_EPISODES", 3)
    monkeypatch.setattr(bench_suite, "THROUGHPUT_STEPS", 4096)
    code = bench_main(["--suite", "--envs", "Acrobot-v1", "--seeds", "1",
                       "--out", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert code == 0
    (trial,) = (tmp_path / "s" / "Acrobot-v1" / "trials").iterdir()
    rec = json.loads((trial / "trial.json").read_text())
    row = next(line for line in out.splitlines() if line.startswith("| Acrobot-v1 |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1] == "-100 (threshold)"
    assert cells[2] == ("1/1" if rec["solved_steps"] is not None else "0/1")
    if rec["solved_steps"] is not None:
        assert cells[3] == f"{rec['solved_steps']:,}" and cells[4] == f"{rec['solved_s']:.1f}"
    assert cells[6] == "-73.5 @ 1,000,000"
    assert (tmp_path / "s" / "Acrobot-v1" / "seeds.png").exists()
    assert "| seconds per 1M env steps |" in out and "num_envs = 32" in out
