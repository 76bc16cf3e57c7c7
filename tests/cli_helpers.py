"""What the command-line tests share: the one-line check of an error, a run to copy, a copy."""

from __future__ import annotations

from pathlib import Path


def one_line(code: int, capsys, expect: int = 2) -> str:
    """The command's stderr, which must be one line (no traceback) with exit status `expect`."""
    err = capsys.readouterr().err.strip()
    assert code == expect, err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of the run directory `src` (its marker and lock file too) at `dst`."""
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst
