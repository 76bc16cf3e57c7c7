"""The RLHF run directory is pgnumpy's alone (issue 22): claimed before anything is written,
locked, written only through fileio (atomic, never through a link), every interruption
recoverable by the same command or --from-stage, a rerun's replaced results kept, and every
input (flags, config.json, stage checkpoints, the Python API) checked where it enters.

Each test runs a tiny pipeline (~0.5 s in process; ~2 s as a subprocess, mostly imports)."""

import csv
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

from pgnumpy.errors import UserError
from pgnumpy.rlhf.finetune import RLConfig
from pgnumpy.rlhf.lm import LMConfig
from pgnumpy.rlhf.pipeline import RLHFConfig, run
from pgnumpy.rlhf.reward_model import RMConfig

QUIET = lambda s: None  # noqa: E731
OUTPUTS = ("config.json", "lm.npz", "lm.csv", "rm.npz", "rm.csv", "rl.npz", "rl.csv",
           "rl_beta_0.csv", "samples.txt", "summary.json", "rlhf_lm_loss.png",
           "rlhf_rm_accuracy.png", "rlhf_overoptimisation.png")


def tiny(**rl) -> RLHFConfig:
    return RLHFConfig(
        seed=0,
        lm=LMConfig(context=3, d_embed=8, hidden=(16,), corpus=300, heldout=100, steps=40,
                    batch=64, eval_every=20),
        rm=RMConfig(pairs=300, heldout=100, steps=20, batch=32, lr=2e-3, norm_samples=100,
                    eval_every=10),
        rl=RLConfig(**({"iterations": 3, "batch": 8} | rl)),
        sweep_betas=(0.0,),
    )


def digest(d: Path) -> dict:
    """name -> sha256 of every file under d (the marker and the lock aside)."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and not p.name.startswith(".pgnumpy")}


def results(d: Path) -> dict:
    """What a run measured, wall-clock columns and figures aside (a figure's bytes hold no
    measurement the CSVs don't): checkpoints' arrays and meta, CSV rows, samples.txt, and
    summary.json without its wall-clock fields."""
    from pgnumpy.rlhf.pipeline import load_npz

    out = {}
    for p in sorted(d.iterdir()):
        if p.suffix == ".csv":
            with open(p, newline="") as f:
                out[p.name] = [{k: v for k, v in r.items() if k != "wall_s"}
                               for r in csv.DictReader(f)]
        elif p.suffix == ".npz":
            meta, arrays = load_npz(p)
            out[p.name] = (json.dumps(meta, sort_keys=True),
                           {k: v.tobytes() for k, v in arrays.items()})
        elif p.name in ("samples.txt", "config.json"):
            out[p.name] = p.read_text()
        elif p.name == "summary.json":
            out[p.name] = {k: ({f: x for f, x in v.items() if f != "rl_wall_s"}
                               if isinstance(v, dict) else v)
                           for k, v in json.loads(p.read_text()).items() if "wall_s" not in k}
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run (figures drawn); tests copy it, never change it."""
    d = tmp_path_factory.mktemp("rlhf") / "run"
    run(tiny(), d, print_fn=QUIET)
    return d


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    d = tmp_path / "run"
    shutil.copytree(finished, d)
    return d


@pytest.fixture(scope="module")
def tiny_json(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "tiny.json"
    p.write_text(json.dumps(tiny().to_dict()))
    return p


def cli(argv, capsys) -> tuple[int, str]:
    from pgnumpy.rlhf.__main__ import main

    status = main(argv)
    return status, capsys.readouterr().err


def one_line(err: str, *fragments: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for f in fragments:
        assert f in err, (f, err)


# ---- 1. the run directory is claimed before anything is written; one process per run ----------

def test_a_directory_of_the_users_files_is_refused_and_left_as_it_was(tmp_path, tiny_json,
                                                                      capsys):
    d = tmp_path / "mine"
    d.mkdir()
    for name, text in (("samples.txt", "my samples"), ("summary.json", '{"mine": 1}'),
                       ("rl.csv", "a,b\n1,2\n")):
        (d / name).write_text(text)
    before = digest(d)
    status, err = cli(["--config", str(tiny_json), "--out", str(d), "--quiet"], capsys)
    assert status == 2
    one_line(err, "holds files that are not a pgnumpy RLHF run")
    assert digest(d) == before and sorted(os.listdir(d)) == sorted(before)  # not even a marker
    with pytest.raises(UserError, match="not a pgnumpy RLHF run"):  # the Python API likewise
        run(tiny(), d, print_fn=QUIET)
    assert digest(d) == before and sorted(os.listdir(d)) == sorted(before)


def test_a_run_of_another_kind_or_a_foreign_config_json_is_refused(tmp_path, tiny_json, capsys):
    from pgnumpy import rundir

    train_run = tmp_path / "train"
    rundir.claim(train_run, "train").release()
    status, err = cli(["--config", str(tiny_json), "--out", str(train_run)], capsys)
    one_line(err, "holds a pgnumpy train directory, not a RLHF run")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"env": "CartPole-v1", "lr": 0.01}')  # not an RLHF one
    status, err = cli(["--config", str(tiny_json), "--out", str(other)], capsys)
    assert status == 2
    one_line(err, "not a pgnumpy RLHF run (config.json)")


def test_a_run_directory_from_before_the_marker_is_adopted(copy, capsys):
    from pgnumpy import rundir

    for own in (rundir.MARKER, rundir.LOCK):
        (copy / own).unlink()
    status, err = cli(["--out", str(copy), "--from-stage", "rl", "--quiet", "--no-figures"],
                      capsys)
    assert status == 0, err
    assert rundir.is_claimed(copy, "rlhf")


def test_a_second_process_on_the_run_is_refused_naming_the_holder(copy, capsys):
    from pgnumpy import rundir

    before = digest(copy)
    with rundir.claim(copy, "rlhf", what="RLHF run"):  # as another process holds it
        status, err = cli(["--out", str(copy), "--from-stage", "rl", "--quiet"], capsys)
    assert status == 2
    one_line(err, "is in use by process", "one process at a time per RLHF run")
    assert digest(copy) == before


def test_the_lock_is_held_for_the_whole_run(tmp_path, tiny_json, capsys):
    """While a run works (here: its config.json written, its stages running), the same
    command from a second process is refused naming the first, and changes nothing."""
    d = tmp_path / "run"
    argv = ["--config", str(tiny_json), "--out", str(d), "--quiet"]
    p = _start(argv, tmp_path)
    deadline = time.monotonic() + 120
    while not (d / "config.json").exists():
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    status, err = cli(argv, capsys)
    if p.poll() is not None:
        pytest.skip("the first run ended before the second started")
    assert status == 2
    one_line(err, f"is in use by process {p.pid}")
    _, first_err = p.communicate(timeout=120)
    assert p.returncode == 0, first_err


# ---- 2. every write through fileio: atomic, never through a link ------------------------------

@pytest.mark.parametrize("name", ["samples.txt", "summary.json", "rl.npz", "rl.npz.tmp", "rl.csv",
                                  "rl_beta_0.csv.tmp", "rlhf_overoptimisation.png",
                                  "rlhf_lm_loss.png.tmp", "config.json.tmp", "rm.npz.tmp",
                                  "replaced"])
def test_a_link_where_a_run_file_goes_is_refused_before_anything_is_written(copy, tmp_path,
                                                                            name, capsys):
    outside = tmp_path / "outside"
    outside.write_bytes(b"the user's file")
    target = copy / name
    if target.exists():
        target.unlink()
    os.symlink(outside, target)
    before = digest(copy)
    status, err = cli(["--out", str(copy), "--from-stage", "rm", "--quiet"], capsys)
    assert status == 2
    one_line(err, "symbolic link", name)
    assert outside.read_bytes() == b"the user's file"
    assert os.path.islink(target) and digest(copy) == before  # nothing moved, nothing written


def test_every_run_file_is_written_through_atomic_write(tmp_path, monkeypatch):
    """Every file a run leaves (stage files, samples, figures, summary, the marker) was
    written by fileio.atomic_write, the one writer that is atomic and never follows a link:
    a plain write_text or savefig anywhere shows up here as a file it did not write."""
    from pgnumpy import fileio, rundir
    from pgnumpy.rlhf import figures, pipeline

    written = []

    def recording(path, data):
        written.append(Path(path).name)
        fileio.atomic_write(path, data)

    for module in (pipeline, figures, rundir):
        monkeypatch.setattr(module, "atomic_write", recording)
    d = tmp_path / "run"
    run(tiny(), d, print_fn=QUIET)
    on_disk = sorted(p.name for p in d.iterdir() if p.name != rundir.LOCK)
    assert sorted(written) == on_disk
    assert set(on_disk) >= set(OUTPUTS)


def test_figures_are_written_atomically_and_never_through_a_link(tmp_path):
    from pgnumpy.rlhf import figures

    outside = tmp_path / "outside.png"
    outside.write_bytes(b"keep")
    os.symlink(outside, tmp_path / "fig.png")
    rows = [{"step": 1.0, "train_acc": 0.6, "heldout_acc": 0.55, "best_acc": 0.8}]
    with pytest.raises(UserError, match="symbolic link"):
        figures.rm_figure(rows, tmp_path / "fig.png")
    assert outside.read_bytes() == b"keep"
    figures.rm_figure(rows, tmp_path / "ok.png")
    assert (tmp_path / "ok.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "ok.png.tmp").exists()


# ---- 3. every interruption recoverable by the same command ---------------------------------

def _start(argv, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "pgnumpy.rlhf", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_json) -> dict:
    """What an uninterrupted run of the tiny config writes (the CLI, in process)."""
    from pgnumpy.rlhf.__main__ import main

    d = tmp_path_factory.mktemp("ref") / "run"
    assert main(["--config", str(tiny_json), "--out", str(d), "--quiet"]) == 0
    return results(d)


@pytest.mark.parametrize("sig, after", [
    (signal.SIGKILL, "config.json"),  # the case: config.json, no lm.npz yet
    (signal.SIGINT, "lm.npz"),
    (signal.SIGKILL, "rm.npz"),
    (signal.SIGINT, "rl.csv"),        # the RL stage's CSVs written, its checkpoint not yet
    (signal.SIGKILL, "samples.txt"),  # after the last stage, while the figures are drawn
])
def test_killed_at_any_moment_the_same_command_finishes_the_run(tmp_path, tiny_json, reference,
                                                                capsys, sig, after):
    """The process is killed as soon as `after` appears (polled every 2 ms, so the kill lands
    while the next step runs); the same command (in process: the same main(argv)) then
    finishes the run, and every result equals an uninterrupted run's (the stages are
    deterministic given the seed)."""
    d = tmp_path / "run"
    argv = ["--config", str(tiny_json), "--out", str(d), "--quiet"]
    p = _start(argv, tmp_path)
    deadline = time.monotonic() + 120
    while not (d / after).exists():
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    if p.returncode == 0:
        pytest.skip(f"the run ended before the signal landed after {after}")
    assert p.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), err
    assert not (d / "summary.json").exists()
    if sig == signal.SIGINT:
        last = err.strip().splitlines()[-1]
        assert last.startswith("interrupted") and "to continue: the same command, or " \
            f"python -m pgnumpy.rlhf --config {d}/config.json --out {d}" in last, err
    status, err = cli(argv, capsys)
    assert status == 0, err
    assert results(d) == reference
    assert not list(d.glob("*.tmp")) and not (d / "replaced").exists()


def test_a_run_an_older_pipeline_left_in_its_sweep_is_adopted_and_finished(
        tmp_path, tiny_json, reference, capsys):
    """The pipeline before the marker wrote rl.npz (the main policy only) after the main RL
    run, then the sweep: killed in the sweep, it left rl.npz but no rl_beta_*.csv and no
    summary. The same command adopts the directory, reruns the RL stage and finishes."""
    from pgnumpy import rundir
    from pgnumpy.rlhf.pipeline import load_npz, save_npz

    d = tmp_path / "run"
    assert cli(["--config", str(tiny_json), "--out", str(d), "--quiet"], capsys)[0] == 0
    for name in (rundir.MARKER, rundir.LOCK, "summary.json", "rl_beta_0.csv", "samples.txt",
                 "rlhf_lm_loss.png", "rlhf_rm_accuracy.png", "rlhf_overoptimisation.png"):
        (d / name).unlink()
    meta, arrays = load_npz(d / "rl.npz")
    save_npz(d / "rl.npz", {"final_beta": meta["final_beta"]}, policy=arrays["policy_main"])
    status, err = cli(["--config", str(tiny_json), "--out", str(d), "--quiet"], capsys)
    assert status == 0, err
    assert results(d) == reference


def test_a_run_with_no_finished_stage_starts_over_and_from_stage_names_the_stage_to_run(
        tmp_path, capsys):
    d = tmp_path / "run"
    from pgnumpy import rundir

    rundir.claim(d, "rlhf").release()  # as a kill right after the claim leaves it
    status, err = cli(["--out", str(d), "--from-stage", "rm"], capsys)
    assert status == 2
    one_line(err, "no stage of the RLHF run", "run without --from-stage")
    (d / "config.json").mkdir()
    status, err = cli(["--out", str(d), "--from-stage", "rm"], capsys)
    one_line(err, "config.json is not a regular file")
    (d / "config.json").rmdir()
    (d / "config.json").write_text(json.dumps(tiny().to_dict()))  # killed before lm.npz
    status, err = cli(["--out", str(d), "--from-stage", "rl"], capsys)
    one_line(err, "has no lm.npz", "--from-stage lm")
    # another config, and no stage finished: nothing measured is lost by starting over
    cfg = tiny()
    cfg.rl.beta = 0.1
    run(cfg, d, print_fn=QUIET)
    assert json.loads((d / "config.json").read_text())["rl"]["beta"] == 0.1
    (d / "rm.npz").unlink()
    (d / "summary.json").unlink()
    status, err = cli(["--out", str(d), "--from-stage", "rl"], capsys)
    one_line(err, "has no rm.npz", "--from-stage rm")
    status, err = cli(["--out", str(d), "--config", str(d / "config.json"), "--beta", "0.2"],
                      capsys)
    one_line(err, "holds an RLHF run with another config", "rl.beta")


def test_a_finished_run_is_not_rerun_by_the_same_command(copy, tiny_json, capsys):
    before = digest(copy)
    status, err = cli(["--config", str(tiny_json), "--out", str(copy)], capsys)
    assert status == 2
    one_line(err, "already holds a finished RLHF run", "--from-stage")
    assert digest(copy) == before


# ---- 4. --from-stage keeps what it replaces ---------------------------------------------------

def test_from_stage_keeps_the_results_it_replaces(copy, capsys):
    before = digest(copy)
    status, err = cli(["--out", str(copy), "--from-stage", "rl", "--beta", "0.2", "--quiet",
                       "--no-figures"], capsys)
    assert status == 0, err
    kept = list((copy / "replaced").iterdir())
    assert len(kept) == 1
    moved = {n: h for n, h in digest(kept[0]).items()}
    # every RL result and the summary, samples and figures of the run it replaced, as they were
    for name in ("rl.npz", "rl.csv", "rl_beta_0.csv", "samples.txt", "summary.json",
                 "rlhf_overoptimisation.png", "config.json"):
        assert moved[name] == before[name], name
    assert "lm.npz" not in moved and "rm.npz" not in moved
    now = digest(copy)
    assert now["lm.npz"] == before["lm.npz"] and now["rm.npz"] == before["rm.npz"]
    assert json.loads((copy / "config.json").read_text())["rl"]["beta"] == 0.2
    assert json.loads((copy / "summary.json").read_text())["rl_main"]["beta_final"] == 0.2


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_rerun_killed_after_it_moved_the_old_results_loses_none_and_can_be_continued(
        copy, capsys, sig):
    """--from-stage rm killed as soon as replaced/ appears (the moves, or the rerun, under
    way): every file of the finished run is still there, in the run or under replaced/, and
    the same command finishes the rerun."""
    before = digest(copy)
    argv = ["--out", str(copy), "--from-stage", "rm", "--beta", "0.2", "--quiet", "--no-figures"]
    p = _start(argv, copy.parent)
    deadline = time.monotonic() + 120
    while not (copy / "replaced").exists():
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.001)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    if p.returncode == 0:
        pytest.skip("the rerun ended before the signal landed")
    if sig == signal.SIGINT:
        assert err.strip().splitlines()[-1].endswith("to continue: the same command"), err
    everywhere = set(digest(copy).items()) | {
        (Path(n).name, h) for n, h in digest(copy / "replaced").items()}
    assert set(before.items()) <= everywhere  # nothing measured was lost
    status, err = cli(argv, capsys)
    assert status == 0, err
    assert json.loads((copy / "summary.json").read_text())["rl_main"]["beta_final"] == 0.2
    everywhere = set(digest(copy).items()) | {
        (Path(n).name, h) for n, h in digest(copy / "replaced").items()}
    assert set(before.items()) <= everywhere


# ---- 5. inputs checked where they enter -------------------------------------------------------

def _poison(path: Path, key: str, value=np.nan, meta_edit=None):
    from pgnumpy.rlhf.pipeline import load_npz, save_npz

    meta, arrays = load_npz(path)
    meta.pop("format")
    if key:
        arrays[key] = arrays[key].copy()
        arrays[key][3] = value
    if meta_edit:
        meta_edit(meta)
    save_npz(path, meta, **arrays)


@pytest.mark.parametrize("stage, file, key, value, edit, message", [
    ("rm", "lm.npz", "params", np.nan, None, "lm.npz holds NaN/inf parameters"),
    ("rl", "rm.npz", "params", np.inf, None, "rm.npz holds NaN/inf parameters"),
    ("rl", "lm.npz", "params", -np.inf, None, "lm.npz holds NaN/inf parameters"),
    ("rm", "lm.npz", None, None, lambda m: m["summary"].update(true_entropy="x"),
     "bad field 'summary/true_entropy'"),
    ("rm", "lm.npz", None, None, lambda m: m.update(extra=1), "unknown field 'extra'"),
    ("rl", "rm.npz", None, None, lambda m: m["summary"].update(raw_std=-1.0),
     "bad field 'summary/raw_std'"),
    ("rl", "rm.npz", None, None, lambda m: m.pop("summary"), "missing field 'summary'"),
    ("rl", "lm.npz", None, None, lambda m: m["config"].update({"lm.steps": 41}),
     "was made with lm.steps = 41"),
])
def test_damaged_or_hand_edited_stage_checkpoints_are_refused(copy, capsys, stage, file, key,
                                                              value, edit, message):
    _poison(copy / file, key, value, edit)
    before = digest(copy)
    status, err = cli(["--out", str(copy), "--from-stage", stage, "--quiet"], capsys)
    assert status == 2
    one_line(err, message)
    assert digest(copy) == before  # refused before anything was moved or written


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["rl"].update(adaptive="no"), "rl.adaptive must be True or False, got 'no'"),
    (lambda c: c["rl"].update(beta="0.1"), "rl.beta must be in [0, 1000.0], got '0.1'"),
    (lambda c: c["lm"].update(hidden="abc"), "lm.hidden must be a non-empty list"),
    (lambda c: c["lm"].update(hidden=5), "lm.hidden must be a non-empty list"),
    (lambda c: c["lm"].update(steps=2.0), "lm.steps must be an integer >= 1, got 2.0"),
    (lambda c: c.update(seed=True), "seed must be an integer >= 0, got True"),
    (lambda c: c.update(sweep_betas="0.1"), "sweep_betas must be a list of numbers"),
    (lambda c: c.update(sweep_betas=[0.1, 0.1]), "sweep_betas holds beta 0.1 twice"),
    (lambda c: c["rm"].update(tempreature=1.0), "unknown field 'tempreature' in rm"),
    (lambda c: c.update(extra={}), "unknown field 'extra'"),
    (lambda c: c.update(lm=[1]), "lm must be an object of fields"),
    (lambda c: c["rm"].update(norm_samples=1), "rm.norm_samples must be an integer >= 2"),
])
def test_a_hand_edited_config_json_is_refused_with_its_field(tmp_path, capsys, edit, message):
    d = tiny().to_dict()
    edit(d)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(d))
    status, err = cli(["--config", str(path), "--out", str(tmp_path / "run")], capsys)
    assert status == 2
    one_line(err, message)
    assert not (tmp_path / "run").exists()


def test_config_files_that_are_not_json_objects(tmp_path, capsys):
    for data, message in ((b"\xff\xfe garbage", "is not UTF-8 text"),
                          (b"[1, 2]", "is not a JSON object"),
                          (b"{", "is not valid JSON"),
                          (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deep")):
        path = tmp_path / "c.json"
        path.write_bytes(data)
        status, err = cli(["--config", str(path), "--out", str(tmp_path / "run")], capsys)
        assert status == 2
        one_line(err, message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, message", [
    (["--beta", "1e308"], "rl.beta must be in [0, 1000.0], got 1e+308"),
    (["--beta", "nan"], "rl.beta must be in [0, 1000.0], got nan"),
    (["--sweep-betas", "inf"], "sweep_betas must be in [0, 1000.0], got inf"),
    (["--sweep-betas", "0.1,0.10000001"], "sweep_betas holds beta 0.1 twice"),
    (["--kl-target", "2"], "--kl-target sets the adaptive controller's target: add --adaptive"),
    (["--adaptive", "--beta", "0"], "rl.adaptive starts from rl.beta and multiplies it"),
    (["--rm-temperature", "0"], "rm.temperature must be in (0, inf)"),
    (["--from-stage", "rm", "--out", "x", "--config", "c.json"],
     "--config starts a run from a config file; --from-stage reruns a stage"),
])
def test_flags_that_would_train_to_nan_or_do_nothing_are_refused(tmp_path, monkeypatch, capsys,
                                                                 argv, message):
    monkeypatch.chdir(tmp_path)
    status, err = cli(argv + ([] if "--out" in argv else ["--out", "run"]), capsys)
    assert status == 2
    one_line(err, message)
    assert os.listdir(tmp_path) == []


def test_the_adaptive_controller_horizon_keeps_beta_positive(tmp_path):
    with pytest.raises(UserError, match=r"rl.kl_horizon must be > 0.2 \* rl.batch"):
        tiny(adaptive=True, kl_horizon=1)


@pytest.mark.parametrize("stage, field, value, message", [
    ("rl", "vf_lr", 1e300, "the rl stage diverged: value_loss is nan at iteration 0"),
    ("rm", "lr", 1e300, "the rm stage diverged: raw_std is inf"),
])
def test_a_stage_that_trains_to_nan_stops_with_one_line_keeping_the_finished_stages(
        copy, stage, field, value, message):
    """A learning rate that blows a stage up: it stops at the first non-finite number (or a
    reward model whose scores cannot be normalised) with a UserError, one line from the CLI;
    the earlier stages' checkpoints stay, nothing of the stage is written (no NaN
    checkpoint), and what the rerun would have replaced is kept under replaced/."""
    before = digest(copy)
    cfg = RLHFConfig.from_dict(json.loads((copy / "config.json").read_text()))
    setattr(getattr(cfg, stage), field, value)
    with pytest.raises(UserError) as e:
        run(cfg, copy, from_stage=stage, figures=False, print_fn=QUIET)
    kept = ["lm.npz", "rm.npz"][: ["lm", "rm", "rl"].index(stage)]
    assert message in str(e.value) and f"{', '.join(kept)} " in str(e.value), str(e.value)
    now = digest(copy)
    assert all(now[f] == before[f] for f in kept)
    assert f"{stage}.npz" not in now and "rl.npz" not in now
    moved = digest(next((copy / "replaced").iterdir()))
    assert moved[f"{stage}.npz"] == before[f"{stage}.npz"]


def _set(cfg, **fields):
    """A config with fields set after construction (as a user may), unchecked until used."""
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg


def _pretrain(cfg, rng):
    from pgnumpy.rlhf.grammar import Grammar
    from pgnumpy.rlhf.lm import pretrain

    return pretrain(cfg, Grammar(), rng)


def _train_rm(cfg, max_len=24):
    from pgnumpy.rlhf.grammar import Grammar
    from pgnumpy.rlhf.lm import TinyLM
    from pgnumpy.rlhf.reward_model import train_reward_model

    lm = TinyLM(3, 8, (16,), rng=np.random.default_rng(0))
    return train_reward_model(cfg, lm, Grammar(), np.random.default_rng(0), max_len)


@pytest.mark.parametrize("make, message", [
    (lambda: RLHFConfig(lm="abc"), "RLHFConfig.lm must be an LMConfig, got 'abc'"),
    (lambda: RLHFConfig(rl={"beta": 1}), "RLHFConfig.rl must be an RLConfig"),
    (lambda: RLHFConfig(sweep_betas=5), "sweep_betas must be a list of numbers, got 5"),
    (lambda: RLHFConfig(sweep_betas=["x"]), "sweep_betas must be in [0, 1000.0], got 'x'"),
    (lambda: RLHFConfig(seed=np.int64(3)).seed + 0, None),  # NumPy scalars are numbers
    (lambda: RLHFConfig.from_dict("abc"), "an RLHF config must be a JSON object"),
    (lambda: run("abc", "x"), "run's cfg must be an RLHFConfig, got 'abc'"),
    (lambda: run(tiny(), 123), "run's out must be a path (str or os.PathLike), got 123"),
    (lambda: run(tiny(), "x", from_stage=1), "from_stage must be one of lm, rm, rl"),
    (lambda: run(tiny(), "x", print_fn="no"), "print_fn must be callable"),
    (lambda: run(tiny(), "x", figures="yes"), "figures must be True or False"),
    (lambda: LMConfig(hidden=5), "lm.hidden must be a non-empty list of layer widths"),
    (lambda: RMConfig(norm_samples=1), "rm.norm_samples must be an integer >= 2"),
    (lambda: _pretrain("abc", np.random.default_rng(0)), "cfg must be an LMConfig, got 'abc'"),
    (lambda: _pretrain(LMConfig(), 0), "rng must be a numpy.random.Generator"),
    (lambda: _pretrain(_set(LMConfig(), steps=0), np.random.default_rng(0)),
     "lm.steps must be an integer >= 1, got 0"),
    (lambda: _train_rm(_set(RMConfig(), steps=0)), "rm.steps must be an integer >= 1, got 0"),
    (lambda: _train_rm(RMConfig(), max_len=3), "max_len must be an integer >= 22"),
])
def test_api_misuse_is_a_user_error(tmp_path, monkeypatch, make, message):
    monkeypatch.chdir(tmp_path)
    if message is None:
        make()
        return
    with pytest.raises(UserError) as e:
        make()
    assert message in str(e.value)
    assert os.listdir(tmp_path) == []


def test_a_field_set_after_construction_is_checked_when_the_run_starts(tmp_path):
    cfg = tiny()
    cfg.rl.beta = float("nan")
    with pytest.raises(UserError, match="rl.beta must be in"):
        run(cfg, tmp_path / "run", print_fn=QUIET)
    assert not (tmp_path / "run").exists()
