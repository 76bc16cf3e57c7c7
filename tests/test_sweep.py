"""Issue 16: sweeps on Ray, for real. A Ray head and a second worker node are started on this
machine (loopback only) and a sweep run through --address must give the same trials, bit for bit
(wall clock aside), as the default local run; Ctrl-C keeps what finished and a rerun continues
the rest; a failing trial is recorded and the sweep goes on; without Ray, one line says what to
install. The Ray processes started here are stopped by the fixtures, whatever happens."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgnumpy.sweep import INSTALL, main

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray's node IP: 127.0.0.1, not eth0
TINY = ["total_steps=2048", "num_envs=8", "steps_per_env=32", "hidden=16"]  # 8 epochs, ~0.1 s
GRID = ["--grid", "lr=1e-3,4e-3", "--seeds", "2", "--set", *TINY]  # 2 configs x 2 seeds


@pytest.fixture(scope="module")
def cluster():
    """A Ray head (1 CPU) and a second node (1 CPU), both on 127.0.0.1."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in LOOPBACK.items():
            mp.setenv(k, v)
        from ray.cluster_utils import Cluster

        small = dict(num_cpus=1, object_store_memory=80 * 2**20)
        c = Cluster(initialize_head=True, head_node_args=dict(include_dashboard=False, **small))
        try:
            c.add_node(**small)
            c.wait_for_nodes()
            yield c
        finally:
            c.shutdown()


@pytest.fixture(scope="module")
def driver(cluster, tmp_path_factory):
    """This process connected to the cluster as a Ray driver, so that in-process sweeps reuse
    one job's worker processes (a new driver pays ~1-2 s of worker start-up and imports). Its
    working directory at ray.init, which Ray puts on the workers' sys.path, holds badenvs.py."""
    import ray
    from test_reliability import BAD_ENVS

    here = tmp_path_factory.mktemp("driver")
    (here / "badenvs.py").write_text(BAD_ENVS)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(here)
        mp.syspath_prepend(str(here))
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        mp.chdir(ROOT)
        try:
            yield ray
        finally:
            ray.shutdown()


def sweep(out: Path, *args: str) -> subprocess.Popen:
    """`python -m pgnumpy.sweep` started in a subprocess, as a user runs it."""
    return subprocess.Popen([sys.executable, "-m", "pgnumpy.sweep", *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=dict(os.environ, **LOOPBACK))


def progress(run: Path) -> list[dict]:
    with open(run / "progress.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(f)]


def record(run: Path) -> dict:
    return json.loads((run / "trial.json").read_text())


def digest(run: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.iterdir())}


def trials(out: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted((out / "trials").iterdir())}


# ------------------------------------------------------------------ local and cluster: the same


def test_a_sweep_on_a_two_node_cluster_gives_the_local_sweeps_trials(tmp_path, request):
    local = sweep(tmp_path / "local", *GRID)
    cluster = request.getfixturevalue("cluster")  # started meanwhile: Ray start-up mostly waits
    remote = sweep(tmp_path / "remote", *GRID, "--address", cluster.address, "--no-plot")
    for p in (local, remote):
        p.stdout, p.stderr = p.communicate(timeout=120)
        assert p.returncode == 0, p.stderr
    a, b = trials(tmp_path / "local"), trials(tmp_path / "remote")
    assert len(a) == 4 and list(a) == list(b)  # names from (config, seed) alone
    for name in a:
        for f in ("config.json", "progress.csv", "checkpoint.npz"):
            assert (b[name] / f).exists()
        assert progress(a[name]) == progress(b[name]), name  # same seeds, same runs
        assert (a[name] / "config.json").read_text() == (b[name] / "config.json").read_text()
    assert len({record(p)["node"] for p in b.values()}) == 2  # both nodes ran trials
    # the summary: one row per configuration; the figure; the live view's lines
    with open(tmp_path / "local" / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["lr"] for r in rows) == ["0.001", "0.004"]
    assert all(r["seeds"] == "2" and r["finished"] == "2" for r in rows)
    assert (tmp_path / "local" / "learning_curves.png").stat().st_size > 10_000
    assert local.stdout.count("] lr=") == 4 and "ETA" in local.stdout and "best:" in local.stdout
    assert "| lr=0.001 | 0/2 |" in local.stdout  # the console table
    # a trial directory is an ordinary run: evaluate reads it
    from pgnumpy.evaluate import main as evaluate_main

    assert evaluate_main([str(next(iter(a.values()))), "--episodes", "1"]) == 0


# ------------------------------------------------------------------ nothing lost, nothing repeated


def test_ctrl_c_keeps_finished_trials_and_a_rerun_resumes_the_interrupted_one(tmp_path, driver,
                                                                             capsys):
    """One worker: the short trial finishes, the long one is interrupted by a SIGINT to the
    sweep (in this process, on the cluster: a local Ray's own processes block SIGINT, so a
    terminal's Ctrl-C reaches the driver alone there too); the rerun skips the short one and
    continues the long one from its checkpoint."""
    import threading

    out = tmp_path / "s"
    args = ["--grid", "total_steps=1024,80000", "--set", "target_return=inf", "--workers", "1",
            "--no-plot", "--out", str(out)]
    seen: dict = {}

    def ctrl_c_once_the_long_trial_is_going():
        deadline = time.time() + 60
        while time.time() < deadline:
            runs = list((out / "trials").glob("total_steps=80000-*")) if out.exists() else []
            if runs and (runs[0] / "progress.csv").exists() and len(progress(runs[0])) >= 5:
                seen["long_run"] = runs[0]
                break
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_once_the_long_trial_is_going, daemon=True).start()
    assert main(args) == 130
    err = capsys.readouterr().err.strip()
    assert err == ("interrupted: 1 running trials stopped at their last checkpoint; run the "
                   "same command again to continue"), err
    long_run = seen["long_run"]
    short = next((out / "trials").glob("total_steps=1024-*"))
    assert record(short)["status"] == "done"
    assert not (long_run / "trial.json").exists()  # interrupted: not finished, not failed
    from pgnumpy.algos import load_checkpoint

    stopped_at = int(load_checkpoint(long_run)["epoch"])
    before, short_files = progress(long_run), digest(short)

    assert main(args) == 0  # the same command again
    assert "2 trials (1 finished before)" in capsys.readouterr().out
    assert digest(short) == short_files  # skipped: not one byte rewritten
    rows = progress(long_run)
    assert [int(r["epoch"]) for r in rows] == list(range(len(rows)))  # no gap, no repeat
    assert rows[: stopped_at + 1] == before[: stopped_at + 1]
    assert record(long_run)["resumed"] is True and int(rows[-1]["env_steps"]) > 79_000


# ------------------------------------------------------------------ a failing trial


def test_a_failing_trial_is_recorded_in_one_line_and_the_sweep_goes_on(tmp_path, driver,
                                                                        capsys):
    out = tmp_path / "s"
    args = ["--grid", "env=CartPole-v1,badenvs:Bad-raise-v0", "--set", *TINY, "--no-plot",
            "--out", str(out)]
    assert main(args) == 1  # badenvs.py: an env that raises at its third step
    stdout = capsys.readouterr().out
    bad = next((out / "trials").glob("env_id=badenvs_Bad-raise-v0-*"))
    good = next((out / "trials").glob("env_id=CartPole-v1-*"))
    rec = record(bad)
    assert rec["status"] == "failed"
    assert rec["error"].startswith("env 'badenvs:Bad-raise-v0' failed at rollout step 2: "
                                   "RuntimeError: the simulator lost its connection")
    assert "\n" not in rec["error"] and "Traceback" in (bad / "error.txt").read_text()
    assert record(good)["status"] == "done"
    assert f"FAILED: {rec['error']}" in stdout and "1 trials failed" in stdout
    with open(out / "summary.csv", newline="") as f:
        rows = {row["env_id"]: row for row in csv.DictReader(f)}
    assert rows["badenvs:Bad-raise-v0"]["failed"] == "1"
    assert rows["CartPole-v1"]["failed"] == "0" and rows["CartPole-v1"]["finished"] == "1"
    # a rerun leaves both as they are; --retry-failed runs the failed one only
    good_files, bad_files = digest(good), digest(bad)
    assert main(args) == 1 and "2 trials (2 finished before)" in capsys.readouterr().out
    assert digest(bad) == bad_files
    assert main([*args, "--retry-failed"]) == 1
    assert "2 trials (1 finished before)" in capsys.readouterr().out
    assert digest(good) == good_files and record(bad)["status"] == "failed"


# ------------------------------------------------------------------ Bayesian search


def test_bayesian_search_asks_optuna_and_a_rerun_replays_what_it_asked(tmp_path, driver,
                                                                       capsys):
    out = tmp_path / "s"
    args = ["--sample", "lr=loguniform:1e-3:1e-2", "--search", "bayes", "--set", *TINY,
            "--metric", "return", "--no-plot", "--out", str(out)]
    assert main([*args, "--trials", "3"]) == 0
    asked = json.loads((out / "sweep.json").read_text())["asked"]
    assert len(asked) == 3 and len(trials(out)) == 3
    capsys.readouterr()
    assert main([*args, "--trials", "4"]) == 0  # one more configuration; the three not rerun
    stdout = capsys.readouterr().out
    assert "4 trials (3 finished before)" in stdout and stdout.count("] lr=") == 1
    assert json.loads((out / "sweep.json").read_text())["asked"][:3] == asked
    assert len(trials(out)) == 4


# ------------------------------------------------------------------ no Ray; bad input


def test_without_ray_one_line_says_what_to_install_and_pgnumpy_never_imports_ray(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
            "from pgnumpy.sweep import main\n"
            f"sys.exit(main(['--grid', 'lr=1e-3,4e-3', '--out', {str(tmp_path / 's')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: python -m pgnumpy.sweep runs on Ray, which is not "
                                f"installed: {INSTALL}")
    assert not (tmp_path / "s").exists()
    code = ("import sys, pgnumpy.sweep, pgnumpy.train, pgnumpy.plots.phi_forms\n"
            "assert 'ray' not in sys.modules and 'optuna' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


@pytest.mark.parametrize("args, message", [
    (["--grid", "lr"], "--grid 'lr': expected FIELD=VALUE"),
    (["--grid", "lrr=1,2"], "--grid lrr: ppo has no field 'lrr'; its fields: env_id, variant"),
    (["--set", "seed=3"], "--set seed=...: the seeds are --seeds K (seeds 0 .. K-1)"),
    (["--grid", "lr=0.1,-1"], "lr must be in (0, inf), got -1.0"),
    (["--grid", "lr=0.1,abc"], "argument --lr: invalid float value: 'abc'"),
    (["--sample", "lr=lognormal:1:2"], "unknown distribution 'lognormal'; use one of uniform"),
    (["--sample", "lr=loguniform:0:1"], "need LOW < HIGH and LOW > 0"),
    (["--sample", "lr=uniform:1"], "expected uniform:LOW:HIGH with two numbers"),
    (["--grid", "lr=1e-3", "--sample", "lr=uniform:0.1:0.2"], "the field lr is given twice"),
    (["--grid", "lr=1e-3", "--trials", "4"], "--trials counts --sample draws"),
    (["--grid", "lr=1e-3", "--search", "bayes"], "--search bayes searches --sample fields"),
    (["--seeds", "0"], "--seeds and --trials must be >= 1, got 0 and 1"),
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--algo", "dqn"], "unknown --algo 'dqn'; choose one of ppo, vpg, trpo, simple_pg"),
    (["--algo", "vpg", "--grid", "phi=advantage"], "unknown phi 'advantage'"),
    (["--address", "127.0.0.1:1", "--set", "total_steps=512"],
     "cannot connect to the Ray cluster at 127.0.0.1:1"),
])
def test_bad_input_gets_one_line_and_exit_2(tmp_path, capsys, args, message):
    code = main([*args, "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "s").exists()  # refused before anything is written


def test_another_sweep_in_the_same_out_is_refused(tmp_path, capsys):
    (tmp_path / "s").mkdir()
    state = {"format": "pgnumpy-sweep-1", "id": "x", "asked": [],
             "spec": {"algo": "vpg", "set": {}, "grid": {}, "sample": {}, "search": "grid",
                      "search_seed": 0, "metric": "steps", "seeds": 1, "trials": 1}}
    (tmp_path / "s" / "sweep.json").write_text(json.dumps(state))
    assert main(["--grid", "lr=1e-3", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "holds another sweep (algo: 'vpg' there, 'ppo' here)" in err


def test_trial_names_come_from_the_config_and_the_seed(tmp_path):
    from pgnumpy.sweep import make_trials

    a = make_trials("ppo", {}, {"lr": "0.001", "gamma": "0.9"}, 2, tmp_path)
    b = make_trials("ppo", {"gamma": "0.9"}, {"lr": "1e-3"}, 2, tmp_path)
    assert a[0].run_dir.name == "gamma=0.9,lr=0.001-" + a[0].key + "-seed0"
    assert a[0].key == b[0].key and a[0].run_dir != b[0].run_dir  # same config, other label
    a[0].run_dir.mkdir(parents=True)
    b = make_trials("ppo", {"gamma": "0.9"}, {"lr": "1e-3"}, 2, tmp_path)
    assert b[0].run_dir == a[0].run_dir  # found by its config's hash: reused, not repeated
    assert [t.run_dir.name[-6:] for t in a] == ["-seed0", "-seed1"]
    c = make_trials("ppo", {}, {"lr": "0.001", "gamma": "0.91"}, 1, tmp_path)
    assert c[0].key != a[0].key


# ------------------------------------------------------------------ Ctrl-C and kill, own Ray


LONG = ["--set", "total_steps=40000", "num_envs=8", "steps_per_env=32", "hidden=16",
        "target_return=inf", "--workers", "1", "--no-plot"]


def processes() -> dict[int, tuple[int, str, bytes]]:
    """pid -> (session id, command line, environment) of every process we may read."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{p}/environ", "rb") as f:
                env = f.read()
        except (OSError, IndexError):
            continue
        if st[0] != "Z":
            out[int(p)] = (int(st[3]), cmd, env)
    return out


def of_sweep(pid: int, table: dict) -> list[str]:
    """The processes of the sweep whose driver was `pid`: its session, or its mark."""
    mark = f"PGNUMPY_RAY_SESSION=pgnumpy-{pid}-".encode()
    return [f"{p}: {cmd[:60]}" for p, (sid, cmd, env) in table.items()
            if sid == pid or mark in env]


def start_own(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pgnumpy.sweep", "--grid", "lr=1e-3,2e-3",
                             *LONG, "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"))


def trial_running(out: Path) -> bool:
    return any(p.stat().st_size > 200 for p in out.glob("trials/*/progress.csv"))


def ray_starting(pid: int) -> bool:
    return any("raylet" in cmd for cmd in
               (c for p, (sid, c, _) in processes().items() if sid == pid))


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_ctrl_c_and_kill_exit_cleanly_leave_no_ray_process_and_a_rerun_finishes(tmp_path,
                                                                                request, capsys):
    """Issue 22: Ctrl-C and kill on sweeps that started their own Ray (what is under test, so
    not the shared cluster), each in its own session so that a signal to its process group is
    a terminal's Ctrl-C: Ctrl-C twice while Ray starts (raylet up, no trial yet); Ctrl-C twice
    while a trial runs; SIGKILL of the driver while a trial runs; SIGTERM while a trial runs. The
    Ctrl-Cs and the SIGTERM exit 130 with one line; afterwards no process of any of the four
    sessions is left (gcs_server, raylet, the agents, the workers: found by session id and by
    the sweep's mark in their environment); the same command finishes the killed sweep. The
    issue saw SIGSEGV at exit in 3 of 10 Ctrl-Cs, Ray processes left after 6 of 10 Ctrl-Cs and
    3 of 4 kills."""
    runs = {"startup": (start_own(tmp_path / "a"), tmp_path / "a"),
            "trial": (start_own(tmp_path / "b"), tmp_path / "b"),
            "kill": (start_own(tmp_path / "c"), tmp_path / "c"),
            "term": (start_own(tmp_path / "d"), tmp_path / "d")}
    when = {"startup": lambda p, out: ray_starting(p.pid),
            "term": lambda p, out: trial_running(out),
            "trial": lambda p, out: trial_running(out),
            "kill": lambda p, out: trial_running(out)}
    pending, deadline = dict(runs), time.time() + 150
    while pending and time.time() < deadline:
        for name, (p, out) in list(pending.items()):
            if when[name](p, out):
                if name in ("kill", "term"):  # `kill -9 PID`, `kill PID`
                    os.kill(p.pid, signal.SIGKILL if name == "kill" else signal.SIGTERM)
                else:  # a terminal's Ctrl-C goes to the whole group; an impatient user's twice
                    os.killpg(p.pid, signal.SIGINT)
                    time.sleep(0.3)
                    try:
                        os.killpg(p.pid, signal.SIGINT)
                    except ProcessLookupError:
                        pass
                del pending[name]
        time.sleep(0.05)
    results = {}
    for name, (p, _) in runs.items():
        if name in pending:
            p.kill()
        stdout, stderr = p.communicate(timeout=120)
        results[name] = (p.returncode, stderr.strip(), stdout)
    assert not pending, f"never reached: {list(pending)} {results}"

    for name in ("startup", "trial", "term"):
        code, err, _ = results[name]
        assert code == 130, (name, code, err)  # not -11 (SIGSEGV), not 0 (Ctrl-C lost)
        assert len(err.splitlines()) == 1, (name, err)
    assert results["startup"][1] == ("interrupted; finished trials are kept: run the same "
                                     "command again to continue")
    for name in ("trial", "term"):  # SIGTERM is a Ctrl-C (before: Ray's C++ stack, exit -6)
        assert results[name][1].startswith("interrupted: 1 running trials stopped at their "
                                           "last checkpoint"), results[name]
    assert results["kill"][0] == -signal.SIGKILL

    left, deadline = ["?"], time.time() + 20  # the reaper: SIGTERM, up to 3 s, SIGKILL
    while left and time.time() < deadline:
        table = processes()
        left = [x for p, _ in runs.values() for x in of_sweep(p.pid, table)]
        time.sleep(0.2)
    assert not left, left

    # every interruption is recovered by the same command (the killed one's lock died with it)
    # (in this process, on the shared cluster: the same trials, a cheaper Ray start)
    request.getfixturevalue("driver")
    capsys.readouterr()
    assert main(["--grid", "lr=1e-3,2e-3", *LONG, "--out", str(tmp_path / "c")]) == 0
    stdout = capsys.readouterr().out
    assert "| lr=0.001 | 0/1 |" in stdout and "| lr=0.002 | 0/1 |" in stdout
