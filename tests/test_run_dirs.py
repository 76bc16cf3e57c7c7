"""train's run directory is pgnumpy's alone (issue 22): the user's files are never written, no
write leaves the directory through a symlink, one process at a time, every start recoverable,
and --resume extends a run or says plainly that there is nothing to do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import copy_run, one_line

from pgnumpy import rundir
from pgnumpy.algos import load_checkpoint
from pgnumpy.logger import read_progress
from pgnumpy.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--total-steps", "1024", "--num-envs", "4", "--steps-per-env", "32", "--hidden", "8",
        "--quiet", "--target-return", "inf"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "r"
    assert train_main([*TINY, "--out", str(run)]) == 0
    return run


def test_a_directory_of_the_users_files_is_refused_and_untouched(tmp_path, capsys):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "progress.csv").write_text("the user's own\n")
    (d / "notes.txt").write_text("mine too\n")
    err = one_line(train_main([*TINY, "--out", str(d)]), capsys)
    assert "holds files that are not a pgnumpy run (notes.txt, progress.csv)" in err
    assert sorted(os.listdir(d)) == ["notes.txt", "progress.csv"]
    assert (d / "progress.csv").read_text() == "the user's own\n"
    err = one_line(train_main(["--resume", str(d)]), capsys)  # nor taken by --resume
    assert "not a run directory" in err and sorted(os.listdir(d)) == ["notes.txt", "progress.csv"]


def test_an_empty_directory_is_taken(tmp_path):
    assert train_main([*TINY, "--out", str(tmp_path)]) == 0
    assert rundir.is_claimed(tmp_path, "train") and (tmp_path / "checkpoint.npz").exists()


def test_a_run_from_before_the_marker_is_adopted_on_resume(small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path / "old")
    (run / rundir.MARKER).unlink()
    (run / rundir.LOCK).unlink()
    assert train_main(["--resume", str(run), "--total-steps", "1536"]) == 0
    assert rundir.is_claimed(run, "train")
    assert load_checkpoint(run)["epoch"] == 11  # 1536 // 128 = 12 epochs: 4 more than 8


@pytest.mark.parametrize("link", ["checkpoint.npz.tmp", "progress.csv.tmp", "progress.csv",
                                  "config.json", "config.json.tmp", "learning_curve.png"])
def test_a_symlink_in_the_run_directory_is_never_written_through(small_run, tmp_path, capsys,
                                                                 link):
    run = copy_run(small_run, tmp_path / "r")
    outside = tmp_path / "outside"
    outside.write_text("the user's file\n")
    (run / link).unlink(missing_ok=True)
    os.symlink(outside, run / link)
    err = one_line(train_main(["--resume", str(run), "--total-steps", "1536", "--plot"]),
                   capsys)
    assert f"{run / link} is a symbolic link" in err, err
    assert outside.read_text() == "the user's file\n"
    assert os.path.islink(run / link)


def test_resume_extends_the_budget_and_then_has_nothing_to_do(small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path / "r")
    assert load_checkpoint(run)["epoch"] == 7  # 1024 // 128 = 8 epochs
    assert train_main(["--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"nothing to do: the run in {run}/ has finished its budget (8 epochs")
    assert f"--resume {run} --total-steps N" in out
    assert load_checkpoint(run)["epoch"] == 7  # no extra epoch (it trained one each time)
    assert train_main(["--resume", str(run), "--total-steps", "2048"]) == 0
    assert load_checkpoint(run)["epoch"] == 15
    assert json.loads((run / "config.json").read_text())["total_steps"] == 2048
    assert [r["epoch"] for r in read_progress(run / "progress.csv")] == list(range(16))
    err = one_line(train_main(["--resume", str(run), "--total-steps", "512"]), capsys)
    assert "a budget can only grow" in err
    err = one_line(train_main(["--resume", str(run), "--lr", "0.1"]), capsys)
    assert "drop --lr 0.1" in err


def test_resume_of_a_solved_run_says_so(small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path / "r")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != rundir.LOCK}
    assert train_main(["--resume", str(run), "--total-steps", "4096", "--target-return",
                       "10"]) == 0  # the last 100 episodes' mean is above 10 already
    out = capsys.readouterr().out
    assert out.startswith(f"nothing to do: the run in {run}/ reached its target return (")
    assert ">= 10, the mean of the last 100 episodes" in out and "--target-return inf" in out
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != rundir.LOCK} == before
    assert train_main(["--resume", str(run), "--total-steps", "1536", "--target-return",
                       "inf"]) == 0
    assert load_checkpoint(run)["epoch"] == 11


@pytest.mark.skipif(os.name != "posix", reason="flock and signals")
def test_a_second_process_on_a_run_is_refused_naming_the_first(tmp_path, capsys):
    run = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "pgnumpy.train", "--total-steps", "10000000",
                             "--target-return", "inf", "--quiet", "--out", str(run)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (run / "checkpoint.npz").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (run / "checkpoint.npz").exists(), proc.stderr.read() if proc.poll() else ""
        err = one_line(train_main(["--resume", str(run)]), capsys)
        assert f"{run} is in use by process {proc.pid} (" in err, err
        assert "one process at a time per run" in err
        err = one_line(train_main([*TINY, "--out", str(run)]), capsys)
        assert "already holds a run" in err, err
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert proc.returncode == 130
    epochs = [r["epoch"] for r in read_progress(run / "progress.csv")]
    assert epochs == list(range(len(epochs)))  # one writer: no duplicated epochs
    capsys.readouterr()
    train_main(["--resume", str(run), "--total-steps", "1"])  # the lock went with the process:
    assert "in use" not in capsys.readouterr().err  # a shrinking budget, or nothing to do


@pytest.mark.parametrize("edit", ["rename", "drop"])
def test_a_progress_csv_with_edited_columns_is_refused_on_resume(small_run, tmp_path, capsys,
                                                                edit):
    run = copy_run(small_run, tmp_path / "r")
    lines = (run / "progress.csv").read_text().splitlines(keepends=True)
    if edit == "rename":  # a KeyError traceback before
        lines[0] = lines[0].replace("ep_return_mean", "ep_ret_mean")
    else:  # rows silently written without the dropped column before
        lines = [",".join(line.rstrip("\n").split(",")[:-1]) + "\n" for line in lines]
    (run / "progress.csv").write_text("".join(lines))
    err = one_line(train_main(["--resume", str(run), "--total-steps", "1536"]), capsys)
    assert "progress.csv has the columns" in err and "restore its header" in err
    assert (run / "progress.csv").read_text() == "".join(lines)
    assert load_checkpoint(run)["epoch"] == 7
