"""`python -m pgnumpy.bench --compare REF`: this tree against another version of the code, each run
a fresh process importing its own tree, interleaved; bad input and Ctrl-C as one line.

Tiny runs (PPO CartPole, 1024 steps, target inf: two epochs), so each comparison costs about four
process start-ups. Copies of the tree keep their __pycache__, so numba loads its cached kernels."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cli_helpers import one_line

from pgnumpy import bench
from pgnumpy.bench import Timed, Tree, report
from pgnumpy.bench import main as bench_main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--seeds", "1", "--repeats", "1", "--total-steps", "1024", "--target", "inf"]


@pytest.fixture
def temp(tmp_path, monkeypatch) -> Path:
    """Where the bench makes its temporary directories: the tests check it is left empty."""
    d = tmp_path / "temp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def copy_tree(dst: Path, old: str = "", new: str = "") -> Path:
    """A copy of this checkout's package (numba cache included), its train.py edited."""
    shutil.copytree(ROOT / "pgnumpy", dst / "pgnumpy")
    train = dst / "pgnumpy" / "train.py"
    text = train.read_text()
    assert old in text, old
    train.write_text(text.replace(old, new, 1))
    return dst


def compare_ok(argv: list[str], capsys) -> str:
    """bench_main(argv)'s stdout, which must end with exit status 0."""
    code = bench_main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def runs_of(out: str, tree: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith(f"{tree:>4} seed ")]


def test_compare_with_a_copy_prints_the_table_and_the_ratios(tmp_path, temp, capsys):
    ref = copy_tree(tmp_path / "copy")
    out = compare_ok(["--compare", str(ref), *TINY], capsys)
    assert len(runs_of(out, "this")) == 1 and len(runs_of(out, "ref")) == 1, out
    assert "| tree | solved | median steps to solve | median training s | median process s |" in out
    assert f"| this ({ROOT}) | 0/1 | - |" in out and f"| ref ({ref.resolve()}) | 0/1 | - |" in out
    assert "in the whole process (" in out and "ref/this: training " in out, out
    assert "identical runs: the same env steps at every seed" in out, out
    assert not any(temp.iterdir())  # the run directories went with the temporary directory


def test_the_ref_runs_are_the_ref_trees(tmp_path, temp, capsys):
    """A copy whose train.py trains half the budget: its runs, and only its, end at half the
    steps, so the ref's child imported the copy and its measurement is the copy's."""
    line = '    out = Path(args.out or f"runs/{algo}-{cfg.env_id}-seed{cfg.seed}-{stamp}")\n'
    ref = copy_tree(tmp_path / "copy", line,
                    line + "    cfg.total_steps //= 2  # planted: the ref trains half\n")
    out = compare_ok(["--compare", str(ref), *TINY], capsys)
    (this,), (theirs,) = runs_of(out, "this"), runs_of(out, "ref")
    assert "not solved in 1000 steps" in this and "not solved in 505 steps" in theirs, out
    assert "the runs differ" in out and "seed 0: this 1000, ref 505" in out, out


def test_compare_with_a_git_revision(tmp_path, temp, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the repository is found from the package, not the cwd
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True)
    except FileNotFoundError:
        pytest.skip("git is not installed")
    if head.returncode != 0:
        pytest.skip("this tree is not a git checkout")
    out = compare_ok(["--compare", "HEAD", *TINY], capsys)
    assert f"| ref (HEAD = {head.stdout[:10]}) | 0/1 |" in out, out
    assert "not solved in 1000 steps" in runs_of(out, "ref")[0], out
    assert "ref/this: training " in out
    assert not any(temp.iterdir())  # the exported tree is removed


def test_a_bad_ref_is_one_line_before_any_run(tmp_path, temp, monkeypatch, capsys):
    def no_run(*args, **kwargs):
        raise AssertionError("a child process was started")

    monkeypatch.setattr(bench, "train_child", no_run)
    monkeypatch.setattr(bench, "check_import", no_run)
    (tmp_path / "notes.txt").write_text("not a checkout\n")
    for ref, message in (["no-such-revision-xyz", "no-such-revision-xyz: neither a directory "
                                                  "nor a revision git knows"],
                         [str(tmp_path), "not a pgnumpy checkout"],
                         [str(tmp_path / "notes.txt"), "not a pgnumpy checkout"]):
        err = one_line(bench_main(["--compare", ref, *TINY]), capsys)
        assert err.startswith(f"error: --compare {ref}") and message in err, err
    assert not any(temp.iterdir())


def test_compare_refuses_what_it_would_ignore(capsys):
    for argv, message in ([["--compare", "HEAD", "--compare-threads"], "give one of them"],
                          [["--compare", "HEAD", "--repeats", "0"], "--repeats must be >= 1"],
                          [["--repeats", "3"], "--repeats goes with --compare"]):
        assert message in one_line(bench_main(argv), capsys)


def test_a_failing_ref_run_is_one_line_naming_the_tree(tmp_path, temp, capsys):
    ref = copy_tree(tmp_path / "copy", "from __future__ import annotations\n",
                    "from __future__ import annotations\n"
                    "raise SystemExit('planted: this tree cannot train')\n")
    err = one_line(bench_main(["--compare", str(ref), *TINY]), capsys)
    assert err == ("error: the ref tree's warm-up run (seed 0) failed (exit status 1): planted: "
                   "this tree cannot train"), err
    assert not any(temp.iterdir())


def test_report_ratios_are_ref_over_this(capsys):
    trees = [Tree("this", ROOT, "this"), Tree("ref", ROOT, "ref")]
    report([Timed("this", 0, 0, True, 100, 0.41, 1.10), Timed("ref", 0, 0, True, 100, 0.76, 1.76)],
           trees)
    out = capsys.readouterr().out
    assert ("this is 1.85x faster in training (median 0.41 s vs 0.76 s), 1.60x faster in the "
            "whole process (1.10 s vs 1.76 s); ref/this: training 1.85, process 1.60") in out, out
    report([Timed("this", 0, 0, True, 100, 0.5, 2.0), Timed("ref", 0, 0, True, 90, 0.25, 1.0)],
           trees)
    out = capsys.readouterr().out
    assert "this is 2.00x slower in training" in out and "seed 0: this 100, ref 90" in out, out


def _children(marker: str) -> list[int]:
    """Live processes whose command line names `marker` (the bench's temporary directory)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode():
                pids.append(int(proc.name))
        except OSError:  # it ended meanwhile
            pass
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_ctrl_c_leaves_no_child_and_no_temporary_directory(tmp_path):
    temp = tmp_path / "temp"
    temp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(temp))
    cmd = [sys.executable, "-m", "pgnumpy.bench", "--compare", str(ROOT), "--seeds", "1",
           "--repeats", "1", "--total-steps", "1000000", "--target", "inf"]
    bench_proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not _children(str(temp)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _children(str(temp)), "no training child appeared"
        time.sleep(0.3)
        bench_proc.send_signal(signal.SIGINT)  # to the bench only: it must stop its child itself
        _, err = bench_proc.communicate(timeout=30)
    finally:  # a failing run of this test leaves nothing running either
        if bench_proc.poll() is None:
            bench_proc.kill()
            bench_proc.wait()
        left = _children(str(temp))
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert bench_proc.returncode == 130 and err.strip() == "interrupted", err
    assert not left, "a training child outlived the bench"
    assert not any(temp.iterdir())
