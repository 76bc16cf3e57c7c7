"""Issue 11: every bad input and fault gives one line (exit 2, Ctrl-C 130), nothing a user has is
overwritten or lost, and loading a run directory imports nothing it names by itself."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import copy_run, one_line

from pgnumpy import cli
from pgnumpy.algos import load_checkpoint, ppo, simple_pg, vpg
from pgnumpy.api import Agent, load
from pgnumpy.api import train as api_train
from pgnumpy.bench import main as bench_main
from pgnumpy.errors import UserError
from pgnumpy.evaluate import main as evaluate_main
from pgnumpy.logger import Logger
from pgnumpy.plot import main as plot_main
from pgnumpy.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--total-steps", "1024", "--num-envs", "4", "--steps-per-env", "32", "--hidden", "8",
        "--quiet"]


def digest(run: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.iterdir())}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "r"
    assert train_main([*TINY, "--out", str(run)]) == 0
    return run


def edit_checkpoint(run: Path, edit) -> dict:
    """Rewrite a run's checkpoint as a crafted or damaged file would be: edit(arrays, meta)
    changes the arrays or the meta dict in place. Returns the meta written."""
    with np.load(run / "checkpoint.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    edit(arrays, meta)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(run / "checkpoint.npz", **arrays)
    return meta


def rewrite_config(run: Path, **changes) -> None:
    """Change the config in both the checkpoint and config.json, as a crafted run would."""
    meta = edit_checkpoint(run, lambda arrays, meta: meta["config"].update(changes))
    (run / "config.json").write_text(json.dumps(meta["config"]))


# --------------------------------------------------------------------------------- nothing lost


def test_out_naming_an_existing_run_is_refused_and_the_run_is_untouched(small_run, capsys,
                                                                       tmp_path):
    run = copy_run(small_run, tmp_path / "r")
    before = digest(run)
    err = one_line(train_main([*TINY, "--out", str(run)]), capsys)
    assert "already holds a run" in err and f"--resume {run}" in err
    assert digest(run) == before
    with pytest.raises(UserError, match="already holds a run"):  # the API too
        api_train(ppo.PPOConfig(total_steps=256, num_envs=2, steps_per_env=32), out=run)
    assert digest(run) == before


def test_progress_rewrite_on_resume_is_atomic_and_holds_ctrl_c(small_run, tmp_path, monkeypatch):
    """A SIGINT during the rewrite that drops rows past the checkpoint waits for the rename:
    the file is whole (the kept rows), and the interrupt arrives after."""
    run = copy_run(small_run, tmp_path / "r")
    rows = (run / "progress.csv").read_text().splitlines()
    import pgnumpy.fileio as fileio

    real_replace = fileio.os.replace

    def replace_after_sigint(src, dst):
        os.kill(os.getpid(), signal.SIGINT)  # lands mid-write
        time.sleep(0.05)
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace_after_sigint)
    with pytest.raises(KeyboardInterrupt):
        Logger(run, append=1)
    assert (run / "progress.csv").read_text().splitlines() == rows[:3]  # header + epochs 0, 1
    assert not (run / "progress.csv.tmp").exists()


@pytest.mark.parametrize("target", ["config.json", "progress.csv"])
def test_a_full_disk_gives_one_line_and_keeps_the_old_file(small_run, tmp_path, monkeypatch,
                                                           capsys, target):
    """ENOSPC while a run file is replaced: one line, the old file intact, no temp file left."""
    import pgnumpy.fileio as fileio

    run = copy_run(small_run, tmp_path / "r")
    before = (run / target).read_bytes()
    real_open = open

    def full_disk_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        if str(path).endswith(f"{target}.tmp"):
            f.write(b"partial")
            f.close()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return f

    monkeypatch.setattr(fileio, "open", full_disk_open, raising=False)
    if target == "config.json":
        code = cli.entry(lambda argv: fileio.atomic_write(run / target, "{}") or 0)
    else:
        code = cli.entry(lambda argv: Logger(run, append=0) and 0)
    err = one_line(code, capsys)
    assert "No space left on device" in err
    assert (run / target).read_bytes() == before
    assert not list(run.glob("*.tmp"))


def test_a_damaged_progress_csv_is_refused_on_resume(small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path / "r")
    text = (run / "progress.csv").read_text()
    (run / "progress.csv").write_text(text[: len(text) // 2])  # cut mid-row
    err = one_line(train_main(["--resume", str(run)]), capsys)
    assert "progress.csv is damaged" in err


def test_a_hand_edited_config_json_is_refused_not_ignored(small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path / "r")
    cfg = json.loads((run / "config.json").read_text())
    cfg["lr"] = 0.1
    (run / "config.json").write_text(json.dumps(cfg))
    for command in (lambda: train_main(["--resume", str(run)]),
                    lambda: evaluate_main([str(run)])):
        err = one_line(command(), capsys)
        assert "config.json differs from the run's checkpoint (lr: 0.1 in config.json" in err
    (run / "config.json").write_text("{not json")
    assert "config.json is damaged" in one_line(train_main(["--resume", str(run)]), capsys)


def test_a_config_json_from_before_a_new_field_is_not_an_edit(small_run, tmp_path, capsys):
    """A run begun by an older pgnumpy has no `fused` in config.json; once resumed, its
    checkpoint holds the field at its default. That is not a hand edit; any other value is."""
    run = copy_run(small_run, tmp_path / "r")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg.pop("fused") is True
    (run / "config.json").write_text(json.dumps(cfg))
    assert train_main(["--resume", str(run), "--quiet"]) == 0
    assert evaluate_main([str(run), "--episodes", "1"]) == 0
    capsys.readouterr()
    edit_checkpoint(run, lambda arrays, meta: meta["config"].update(fused=False))
    err = one_line(train_main(["--resume", str(run)]), capsys)
    assert "config.json differs from the run's checkpoint (fused: None in config.json" in err


# ---------------------------------------------------------------------------------------- signals


def run_cli(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    """SIGINT while numpy, numba and gymnasium are still importing (the guard is installed first,
    from pgnumpy/cli.py, which imports nothing heavy)."""
    code = ("import os, signal, pgnumpy.cli as c; c.guard_startup(); "
            "os.kill(os.getpid(), signal.SIGINT); import numpy; print('not reached')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 130 and p.stdout == ""
    assert p.stderr.strip() == "interrupted while starting up; nothing was written"
    proc = run_cli(["pgnumpy.train", *TINY, "--out", str(tmp_path / "r")])
    time.sleep(0.3)  # inside the imports
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and err.strip().count("\n") == 0


def test_the_fast_exit_keeps_the_status_the_output_and_the_exit_handlers(tmp_path):
    """`python -m pgnumpy.train` ends through cli.exit_now (os._exit, no interpreter teardown):
    the status is the command's, stdout through a pipe (block-buffered) arrives whole, and
    atexit handlers registered during the run still run (a marker file written by one)."""
    marker = tmp_path / "atexit-ran"
    code = (f"import atexit, pathlib, sys; atexit.register(pathlib.Path({str(marker)!r}).touch); "
            "sys.argv[0] = 'pgnumpy.train'; import runpy; "
            "runpy.run_module('pgnumpy.train', run_name='__main__')")
    args = [*TINY, "--out", str(tmp_path / "r")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a buffered pipe
    p = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                       text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.rstrip().endswith(f"(draw its learning curve: python -m pgnumpy.plot "
                                      f"{tmp_path / 'r'})")
    assert marker.exists() and (tmp_path / "r" / "checkpoint.npz").exists()
    p = subprocess.run([sys.executable, "-m", "pgnumpy.train", *args], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("error: ")
    assert "already holds a run" in p.stderr


@pytest.mark.parametrize("error", [SystemError, RuntimeError])
def test_ctrl_c_inside_a_numba_call_and_before_any_checkpoint(error, monkeypatch, tmp_path,
                                                             capsys):
    """numba reports a KeyboardInterrupt raised in its call as a SystemError with the interrupt as
    its context (a RuntimeError when its cache step fails the same way); and before the first
    epoch's checkpoint the message says there is none, and how to start again: the same command
    and --resume both do (issue 22: a start that ended early was refused by both)."""

    def interrupted_numba_call(*a, **k):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            # implicit chaining, as numba's: the interrupt is the error's __context__
            raise error("CPUDispatcher(...) returned a result with an exception set")  # noqa: B904

    monkeypatch.setattr(ppo, "collect", interrupted_numba_call)
    run = tmp_path / "r"
    err = one_line(train_main([*TINY, "--out", str(run)]), capsys, expect=130)
    assert err == ("interrupted; no epoch had completed, so there is no checkpoint: the same "
                   f"command, or --resume {run}, starts the run again")
    assert (run / "config.json").exists() and not (run / "checkpoint.npz").exists()
    monkeypatch.undo()
    assert train_main(["--resume", str(run), "--quiet"]) == 0  # from its config.json
    first = (run / "progress.csv").read_text()
    shutil.rmtree(run)
    monkeypatch.setattr(ppo, "collect", interrupted_numba_call)
    one_line(train_main([*TINY, "--out", str(run)]), capsys, expect=130)
    monkeypatch.undo()
    assert train_main([*TINY, "--out", str(run)]) == 0  # the same command starts it over
    assert _no_wall(first) == _no_wall((run / "progress.csv").read_text())  # the same run


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_a_process_started_with_sigint_ignored_keeps_ignoring_it(tmp_path):
    proc = run_cli(["pgnumpy.train", "--total-steps", "30000", "--target-return", "inf",
                    "--out", str(tmp_path / "r"), "--quiet"],
                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    while proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "finished" in out and int(load_checkpoint(tmp_path / "r")["env_steps"]) > 29000


# ------------------------------------------------------------- no code from a run directory


def test_loading_a_run_imports_nothing_it_names(small_run, tmp_path, capsys, monkeypatch):
    """A run directory whose env id is `evil:CartPole-v1`, with evil.py beside it, importable:
    evaluate, load and --resume refuse, naming --import, and the module never runs; with
    --import evil (the user's word) it is imported."""
    run = copy_run(small_run, tmp_path / "r")
    marker = tmp_path / "executed"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rewrite_config(run, env_id="evil:CartPole-v1")
    for command in (lambda: evaluate_main([str(run)]),
                    lambda: train_main(["--resume", str(run)])):
        assert "pass --import evil" in one_line(command(), capsys)
    with pytest.raises(UserError, match="imports no code named by a run directory"):
        load(run)
    assert not marker.exists()
    assert load(run, import_module="evil").config["env_id"] == "evil:CartPole-v1"
    assert marker.exists()


def test_a_crafted_pickle_in_a_checkpoint_is_never_unpickled(small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path / "r")
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    edit_checkpoint(run, lambda arrays, meta: arrays.update(
        {"net/policy": np.array([Payload()], dtype=object)}))
    for command in (lambda: evaluate_main([str(run)]),
                    lambda: train_main(["--resume", str(run)])):
        assert "checkpoint" in one_line(command(), capsys)
    assert not marker.exists()


# ------------------------------------------------------------------------- custom environments

BAD_ENVS = '''
import gymnasium as gym
import numpy as np


class Bad(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, how="raise"):
        self.how, self.t = how, 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        obs, rew = np.zeros(2, np.float32), 1.0
        if self.t == 3:
            if self.how == "raise":
                raise RuntimeError("the simulator lost its connection")
            if self.how == "shape":
                obs = np.zeros(3, np.float32)
            if self.how == "dtype":
                obs = np.array(["a", "b"])
            if self.how == "nan":
                rew = float("nan")
        return obs, rew, self.t >= 10, False, {}


for how in ("raise", "shape", "dtype", "nan"):
    gym.register(f"Bad-{how}-v0", entry_point=Bad, kwargs={"how": how})
'''


@pytest.mark.parametrize("how, message", [
    ("raise", "env 'badenvs:Bad-raise-v0' failed at rollout step 2: RuntimeError: the simulator"),
    ("shape", "env 'badenvs:Bad-shape-v0' failed at rollout step 2: ValueError"),
    ("dtype", "env 'badenvs:Bad-dtype-v0' failed at rollout step 2: TypeError: Cannot cast"),
    ("nan", "env 'badenvs:Bad-nan-v0' returned a non-finite reward nan at rollout step 2"),
])
def test_a_misbehaving_custom_env_gets_one_line_naming_it_and_the_step(tmp_path, monkeypatch,
                                                                       capsys, how, message):
    (tmp_path / "badenvs.py").write_text(BAD_ENVS)
    monkeypatch.syspath_prepend(str(tmp_path))
    code = train_main([*TINY, "--num-envs", "1", "--env", f"badenvs:Bad-{how}-v0",
                       "--out", str(tmp_path / "r")])
    assert message in one_line(code, capsys)


def test_the_readme_custom_env_trains_and_evaluates_with_import(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    run = tmp_path / "r"
    assert train_main(["--env", "examples.corridor:Corridor-v0", "--total-steps", "30000",
                       "--quiet", "--out", str(run)]) == 0
    assert "solved" in capsys.readouterr().out
    assert "--import examples.corridor" in one_line(evaluate_main([str(run)]), capsys)
    assert evaluate_main([str(run), "--import", "examples.corridor", "--episodes", "3"]) == 0
    assert "return 0.9" in capsys.readouterr().out  # 7 steps right: 1 - 6 * 0.01 = 0.94


# --------------------------------------------------------------- bad input, before any work


@pytest.mark.parametrize("argv, message", [
    (["--hidden", ""], "hidden must be a non-empty list of layer widths"),
    (["--hidden", "100000,100000"], "GiB (mostly the networks), more than the"),
    (["--num-envs", "100000000", "--steps-per-env", "2", "--minibatches", "1"],
     "more than the"),
    (["--steps-per-env", "1"], "a rollout of 1 step can hold only a NEXT_STEP reset step"),
    (["--algo", "simple_pg", "--phi", "gae", "--vf-iters", "0"],
     "vf_iters must be an integer >= 1 for phi 'gae'"),
])
def test_values_that_used_to_fail_late_are_refused_first(argv, message, tmp_path, capsys):
    t0 = time.perf_counter()
    err = one_line(train_main([*argv, "--out", str(tmp_path / "r"), "--quiet"]), capsys)
    assert message in err and time.perf_counter() - t0 < 5


def test_out_that_is_a_file_or_below_one(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert "is a file" in one_line(train_main([*TINY, "--out", str(f)]), capsys)
    err = one_line(train_main([*TINY, "--out", str(f / "run")]), capsys)
    assert "cannot create the run directory" in err
    assert f.read_text() == "x"


def test_evaluate_and_plot_check_their_outputs_and_inputs_first(small_run, tmp_path, capsys):
    r = str(small_run)
    cases = [
        (lambda: evaluate_main([r, "--gif", str(tmp_path / "no" / "x.gif")]), "does not exist"),
        (lambda: evaluate_main([r, "--gif", str(tmp_path / "x.mp4")]), "must end in .gif"),
        (lambda: evaluate_main([r, "--compare-untrained"]), "give --gif FILE.gif too"),
        (lambda: evaluate_main([r, "--episodes", "0"]), "--episodes must be >= 1"),
        (lambda: plot_main([r, "--out", str(tmp_path / "no" / "c.png")]), "does not exist"),
        (lambda: plot_main([r, "--out", str(tmp_path / "c.xyz")]), "unknown image type '.xyz'"),
        (lambda: plot_main([str(tmp_path)]), "is not a run directory"),
    ]
    for command, message in cases:
        assert message in one_line(command(), capsys)


def test_plot_of_a_run_with_no_finished_episode_yet(tmp_path, capsys):
    run = tmp_path / "r"
    assert train_main(["--algo", "vpg", "--env", "Pendulum-v1", "--epochs", "1",
                       "--steps-per-env", "50", "--num-envs", "1", "--quiet",
                       "--out", str(run)]) == 0
    capsys.readouterr()
    err = one_line(plot_main([str(run), "--out", str(tmp_path / "c.png")]), capsys)
    assert "has no finished episode yet" in err


def test_evaluate_on_non_finite_parameters(small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path / "r")
    edit_checkpoint(run, lambda arrays, meta: arrays["net/policy"].__setitem__(3, np.nan))
    assert "holds NaN/inf parameters in network 'policy'" in one_line(evaluate_main([str(run)]),
                                                                      capsys)


def test_bench_refuses_what_it_cannot_run_or_would_ignore(capsys):
    for argv, message in ([["--seeds", "0"], "--seeds must be >= 1"],
                          [["--env", "NoSuchEnv-v0"], "unknown env id 'NoSuchEnv-v0'"],
                          [["--compare-threads", "--seeds", "3"], "drop --seeds"],
                          [["--hidden", "64,64"], "--hidden goes with --compare-threads"]):
        assert message in one_line(bench_main(argv), capsys)


def test_numeric_warnings_are_not_printed_in_front_of_the_error_line(capsys):
    def main(argv):
        np.exp(np.array([1000.0]))  # RuntimeWarning: overflow
        raise UserError("non-finite loss (inf) at epoch 0")

    assert one_line(cli.entry(main), capsys) == "error: non-finite loss (inf) at epoch 0"

    def ok(argv):
        np.exp(np.array([1000.0]))
        return 0

    assert cli.entry(ok) == 0
    assert "warning: overflow" in capsys.readouterr().err  # after a success: shown once


def test_every_command_goes_through_the_one_entry_point():
    """Each command module's main is cli.entry around its body (a new command cannot forget)."""
    import ast

    for path in ["pgnumpy/train.py", "pgnumpy/evaluate.py", "pgnumpy/plot.py",
                 "pgnumpy/bench.py", "pgnumpy/rlhf/__main__.py"]:
        tree = ast.parse((ROOT / path).read_text())
        main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
        assert "cli.entry(" in ast.unparse(main), path


# ------------------------------------------------------------------------------- the Python API


def test_configs_take_numpy_scalars_and_name_wrong_types():
    cfg = ppo.PPOConfig(lr=np.float32(1e-3), num_envs=np.int64(4), hidden=np.array([8, 8]),
                        gamma=np.float64(0.9), seed=np.int32(2))
    assert type(cfg.lr) is float and type(cfg.num_envs) is int and cfg.hidden == (8, 8)
    json.dumps(vars(cfg))  # a config.json can be written
    for kw, message in [({"lr": "0.1"}, "lr must be in"), ({"hidden": "abc"}, "hidden must be"),
                        ({"env_id": 5}, "env_id must be a non-empty string"),
                        ({"variant": ["clip"]}, "variant must be one of"),
                        ({"num_envs": 2.5}, "num_envs must be an integer"),
                        ({"norm_obs": "yes"}, "norm_obs must be True or False")]:
        with pytest.raises(UserError, match=message):
            ppo.PPOConfig(**kw)
    with pytest.raises(UserError, match="unknown phi"):
        vpg.VPGConfig(phi=["gae"])


def test_a_field_set_after_construction_is_validated_when_training_starts():
    for cfg in (ppo.PPOConfig(), vpg.VPGConfig(), simple_pg.SimplePGConfig()):
        cfg.gamma = 1.5
        with pytest.raises(UserError, match="gamma must be in"):
            api_train(cfg)


def test_agent_act_checks_its_input(small_run):
    agent = load(small_run)
    assert isinstance(agent.act(np.zeros(4)), int)
    for obs, message in [(np.zeros(3), r"shape \(3,\) does not fit"),
                         (np.zeros((2, 5)), r"shape \(2, 5\)"),
                         (np.array([0, np.nan, 0, 0]), "NaN or inf"),
                         ("left", "observation must be numbers")]:
        with pytest.raises(UserError, match=message):
            agent.act(obs)
    assert isinstance(agent, Agent)


def test_api_and_cli_give_the_same_parameters_bit_for_bit_whatever_the_thread_env(tmp_path):
    """The CLI in a process with OPENBLAS_NUM_THREADS=2, the API here: both train with one BLAS
    thread (threadpoolctl), so the parameters and progress.csv agree exactly. (64, 64) layers:
    big enough that OpenBLAS would use 2 threads if let."""
    args = ["--total-steps", "4096", "--num-envs", "8", "--steps-per-env", "64", "--hidden",
            "64,64", "--seed", "5", "--quiet"]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2")
    subprocess.run([sys.executable, "-m", "pgnumpy.train", *args, "--out", str(tmp_path / "c")],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    res = api_train(ppo.PPOConfig(total_steps=4096, num_envs=8, steps_per_env=64,
                                  hidden=(64, 64), seed=5), out=tmp_path / "a")
    cli_params = load_checkpoint(tmp_path / "c")["net/policy"]
    np.testing.assert_array_equal(cli_params, res.policy.params)
    strip = [line.split(",")[:2] + line.split(",")[3:]
             for line in (tmp_path / "a" / "progress.csv").read_text().splitlines()]
    assert strip == [line.split(",")[:2] + line.split(",")[3:]
                     for line in (tmp_path / "c" / "progress.csv").read_text().splitlines()]


def test_resume_and_load_check_the_normalisers_against_the_checkpoint(tmp_path):
    """A config asking for statistics the checkpoint does not hold, or statistics of the wrong
    length for the policy's input: one UserError, not a KeyError or a shape error later."""
    run = tmp_path / "r"
    api_train(ppo.PPOConfig(env_id="Pendulum-v1", norm_obs=True, num_envs=2, steps_per_env=64,
                            total_steps=256, hidden=(8,), target_return=float("inf")), out=run)
    plain = tmp_path / "p"
    api_train(ppo.PPOConfig(total_steps=256, num_envs=2, steps_per_env=64, hidden=(8,)),
              out=plain)
    with pytest.raises(UserError, match="norm_obs=True, but the checkpoint holds no obs_norm"):
        ppo.train(ppo.PPOConfig(total_steps=512, num_envs=2, steps_per_env=64, hidden=(8,),
                                norm_obs=True), resume=load_checkpoint(plain))
    def shorten(arrays, meta):
        for key in ("mean", "var"):
            meta["extra"]["obs_norm"][key] = meta["extra"]["obs_norm"][key][:2]

    edit_checkpoint(run, shorten)
    with pytest.raises(UserError, match="observation statistics of length 2, expected 3"):
        load(run)


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_kernel_warm_up_holds_ctrl_c_until_every_kernel_is_ready(monkeypatch):
    """A Ctrl-C inside numba's compiler lands in an llvmlite ctypes callback, where Python ignores
    it: seen on a cold numba cache as a run that went on to the end (exit 0), or a traceback from
    a half-cached kernel. warm_up holds it: every kernel is ready, then the interrupt is raised."""
    from pgnumpy import kernels

    ran, real_gae, real_stats = [], kernels.gae, kernels.episode_stats

    def gae(*a):  # stands for a kernel being compiled when the signal arrives
        os.kill(os.getpid(), signal.SIGINT)
        ran.append("gae")
        return real_gae(*a)

    monkeypatch.setattr(kernels, "gae", gae)
    monkeypatch.setattr(kernels, "episode_stats", lambda *a: ran.append("stats") or real_stats(*a))
    with pytest.raises(KeyboardInterrupt):
        kernels.warm_up()
    assert ran == ["gae", "stats"]


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_fused_warm_up_holds_ctrl_c_until_every_kernel_is_ready(monkeypatch):
    """The same for the fused update's kernels, compiled on a run's first start."""
    from pgnumpy import fused

    ran, real_head, real_adam = [], fused.categorical_clip_head, fused.adam_step

    def head(*a):  # stands for a kernel being compiled when the signal arrives
        os.kill(os.getpid(), signal.SIGINT)
        ran.append("head")
        return real_head(*a)

    monkeypatch.setattr(fused, "categorical_clip_head", head)
    monkeypatch.setattr(fused, "adam_step", lambda *a: ran.append("adam") or real_adam(*a))
    with pytest.raises(KeyboardInterrupt):
        fused.warm_up()
    assert ran == ["head", "adam"]


def _no_wall(csv_text: str) -> list[list[str]]:
    rows = [r.split(",") for r in csv_text.splitlines()]
    w = rows[0].index("wall_s")
    return [r[:w] + r[w + 1:] for r in rows]
