"""Writing run files so that nothing a user has is lost: whole or not at all, and Ctrl-C waits.

Every file of a run directory is replaced atomically: written to a temp file beside it, then
renamed over it (os.replace is atomic on POSIX and Windows), with SIGINT held until the rename is
done. A failed write (a full disk, a read-only directory) removes its temp file and leaves the old
file as it was; its OSError reaches the command's error line (pgnumpy/cli.py).

No write follows a symbolic link: a link where a run file (or its temp file) goes, or as the
directory it goes into, is refused in one line, and the temp file is opened with O_NOFOLLOW. A
link in a run directory was put there by hand; replacing it would silently undo what its maker
meant, and writing through it would write outside the run directory, so pgnumpy does neither
and says which link to remove. (The rename itself never writes through a link: it replaces the
directory entry.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from pgnumpy.errors import UserError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


@contextmanager
def deferred_sigint():
    """Hold a SIGINT until the block ends, then raise KeyboardInterrupt as usual.

    If SIGINT is ignored (a background job of a shell script starts so), it stays ignored: no
    handler is installed. Likewise off the main thread, or under a handler Python did not set."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(
        signal.SIGINT
    ) in (signal.SIG_IGN, None):
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def check_no_symlink(path: str | Path) -> None:
    """Refuse (UserError) to write `path` if it, or the directory it goes into, is a symlink."""
    path = Path(path)
    for p in (path, path.parent):
        if p.is_symlink():
            raise UserError(f"{p} is a symbolic link; pgnumpy writes only real files inside the "
                            "directories it owns, never through a link: remove the link")


def _nofollow(path, flags):  # open()'s opener: a link made after the check is refused too
    return os.open(path, flags | _NOFOLLOW, 0o666)


def open_nofollow(path: str | Path, mode: str):
    """open(path, mode) for writing ("wb", "a", ...), refusing a symlink (check_no_symlink, then
    O_NOFOLLOW against a link made in between)."""
    path = Path(path)
    check_no_symlink(path)
    try:
        return open(path, mode, opener=_nofollow, **({} if "b" in mode else {"newline": ""}))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{path} is a symbolic link; pgnumpy writes only real files inside "
                            "the directories it owns: remove the link") from None
        raise


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Replace `path` by `data` atomically (text is written as UTF-8); never through a symlink."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    check_no_symlink(path)
    check_no_symlink(tmp)  # before the try: a planted link is reported, not removed
    raw = data.encode() if isinstance(data, str) else data
    with deferred_sigint():
        try:
            with open_nofollow(tmp, "wb") as f:
                f.write(raw)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
