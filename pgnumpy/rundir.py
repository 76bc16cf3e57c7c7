"""A run directory is pgnumpy's, and only pgnumpy's, to write: claimed, marked and locked.

Every command that writes a directory of results (train, rlhf, sweep) claims it first:

    with claim(out, "train", adopt=holds_legacy_run) as run_dir:
        ...  # write only inside run_dir.path

`claim` takes a directory that
  - does not exist yet: created (parents too), then marked;
  - exists and is empty: nothing in it can be lost, so it is marked;
  - holds this kind's marker `.pgnumpy-run` (JSON: format, kind): it is ours already;
  - holds no marker but a run of this kind that a pgnumpy older than the marker wrote (`adopt`
    says so, by the files it knows, never by running anything): marked now;
and refuses anything else in one line, before writing a byte: a file, a symlink, a directory
holding files of the user's (named in the message), or another kind's marker.

One process at a time per run: `.pgnumpy-lock` is locked (flock, exclusive, non-blocking) for
the claim's life and holds the holder's pid and command. The OS drops the lock when the process
ends, however it ends (a crash, kill -9), so a lock never outlives its holder and there is no
stale-lock clean-up. A second process gets one line naming the holder. The lock is taken on a
separate file from the marker because the marker is replaced atomically (a rename makes a new
inode, and a lock on the old one would protect nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pgnumpy.errors import UserError
from pgnumpy.fileio import atomic_write, check_no_symlink

MARKER = ".pgnumpy-run"
LOCK = ".pgnumpy-lock"
FORMAT = "pgnumpy-run-1"
OWN_FILES = (MARKER, LOCK)

try:
    import fcntl
except ImportError:  # Windows: no flock; the marker still guards users' files
    fcntl = None


class RunDir:
    """A claimed run directory: `path`, its `kind`, and the lock held until `release()`."""

    def __init__(self, path: Path, kind: str, fd: int | None):
        self.path, self.kind, self._fd = path, kind, fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def read_marker(path: Path) -> dict | None:
    """The marker's contents, or None if `path` holds no marker; a damaged one is a UserError."""
    m = Path(path) / MARKER
    if not m.exists() and not m.is_symlink():
        return None
    if m.is_symlink() or not m.is_file():
        raise UserError(f"{m} is not a regular file: remove it (pgnumpy writes it)")
    try:
        meta = json.loads(m.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{m} is damaged ({e}); remove it to let pgnumpy take the directory "
                        "again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(
            meta.get("kind"), str):
        raise UserError(f"{m} is not a pgnumpy run marker ({FORMAT}); remove it to let pgnumpy "
                        "take the directory again")
    return meta


def is_claimed(path: Path, kind: str) -> bool:
    """True if `path` holds the marker of a run of `kind` (read-only; no lock taken)."""
    meta = read_marker(path)
    return meta is not None and meta["kind"] == kind


def claim(path: str | Path, kind: str, *,
          adopt: Callable[[Path], bool] | None = None,
          what: str = "run") -> RunDir:
    """Claim `path` for a run of `kind` (module docstring): refuse in one line, before anything is
    written, a path that is not ours; lock it for this process. `what` names the directory in
    messages ("run", "sweep", "RLHF run")."""
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"{path} is a symbolic link; give the real directory for the {what} "
                        "(pgnumpy writes only inside directories it owns, never through a link)")
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file; give a directory for the {what}")
    created = False
    if not path.exists():
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            pass  # another process made it a moment ago: treated below like any directory
        except OSError as e:
            raise UserError(f"cannot create the {what} directory {path}: "
                            f"{e.strerror or e}") from None
        else:
            created = True
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to the {what} directory {path}: permission denied")
    meta = read_marker(path)
    if meta is not None and meta["kind"] != kind:
        raise UserError(f"{path} holds a pgnumpy {meta['kind']} directory, not a {what}: give "
                        "another directory")
    if meta is None:  # decided before the lock file is made: a refusal writes nothing
        entries = sorted(p.name for p in path.iterdir() if p.name not in OWN_FILES)
        if entries and not created and not (adopt is not None and adopt(path)):
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise UserError(f"{path} holds files that are not a pgnumpy {what} ({shown}); "
                            "pgnumpy writes only into a new or empty directory, or one it "
                            "made: give another directory")
    fd = _lock(path, what)
    try:
        if meta is None:
            atomic_write(path / MARKER, json.dumps({"format": FORMAT, "kind": kind}) + "\n")
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    return RunDir(path, kind, fd)


def _holder() -> str:
    cmd = " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv))
    return (f"process {os.getpid()} ({cmd or 'python'}), since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}")


def _lock(path: Path, what: str) -> int | None:
    """Open and flock LOCK in `path`; refuse in one line naming the holder if it is taken."""
    if fcntl is None:
        return None
    lock = path / LOCK
    check_no_symlink(lock)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        raise UserError(f"cannot open {lock}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
        finally:
            os.close(fd)
        raise UserError(f"{path} is in use by {holder}: one process at a time per {what}; wait "
                        "for it to end, or stop it") from None
    with contextlib.suppress(OSError):  # who holds it, for the message above; the lock is flock
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_holder() + "\n").encode(), 0)
    return fd
