"""Run directories are pgnumpy's alone: claimed, marked, locked; writes never follow a link."""

import os
import subprocess
import sys

import pytest

from pgnumpy import rundir
from pgnumpy.errors import UserError
from pgnumpy.fileio import atomic_write, open_nofollow


def test_claim_creates_marks_and_locks(tmp_path):
    with rundir.claim(tmp_path / "a" / "b", "train") as rd:
        assert rundir.is_claimed(rd.path, "train")
        assert (rd.path / rundir.LOCK).exists()
    # released: the same kind claims it again; another kind is refused
    rundir.claim(tmp_path / "a" / "b", "train").release()
    with pytest.raises(UserError, match="pgnumpy train directory, not a sweep"):
        rundir.claim(tmp_path / "a" / "b", "sweep", what="sweep")


def test_empty_directory_is_claimed_but_users_files_are_refused(tmp_path):
    rundir.claim(tmp_path, "rlhf").release()  # empty: nothing in it can be lost
    user = tmp_path / "mine"
    user.mkdir()
    (user / "samples.txt").write_text("the user's own")
    with pytest.raises(UserError, match=r"not a pgnumpy RLHF run \(samples.txt\)"):
        rundir.claim(user, "rlhf", what="RLHF run")
    assert (user / "samples.txt").read_text() == "the user's own"
    assert sorted(os.listdir(user)) == ["samples.txt"]  # nothing written, not even the marker


def test_adopt_takes_a_legacy_run(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="not a pgnumpy run"):
        rundir.claim(tmp_path, "train")
    rundir.claim(tmp_path, "train", adopt=lambda p: (p / "config.json").exists()).release()
    assert rundir.is_claimed(tmp_path, "train")


def test_symlinked_run_directory_and_file_are_refused(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(UserError, match="symbolic link"):
        rundir.claim(tmp_path / "link", "train")


@pytest.mark.parametrize("name", ["x.json", "x.json.tmp"])
def test_atomic_write_never_follows_a_link(tmp_path, name):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(outside, run / name)
    with pytest.raises(UserError, match="symbolic link"):
        atomic_write(run / "x.json", "new")
    assert outside.read_text() == "keep me"
    assert os.path.islink(run / name)  # reported, not silently replaced
    with pytest.raises(UserError, match="symbolic link"):
        open_nofollow(run / name, "a")
    assert outside.read_text() == "keep me"


def test_second_process_is_refused_naming_the_holder(tmp_path):
    rd = rundir.claim(tmp_path / "run", "train")
    code = ("import sys; from pgnumpy import rundir; from pgnumpy.errors import UserError\n"
            "try: rundir.claim(sys.argv[1], 'train')\n"
            "except UserError as e: print(e); sys.exit(2)\n")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")],
                       capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    assert f"in use by process {os.getpid()}" in p.stdout
    rd.release()  # the OS lock is gone with the descriptor: the next process gets it
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
