"""Writing run files so that nothing a user has is lost: whole or not at all, and Ctrl-C waits.

Every file of a run directory is replaced atomically: written to a temp file beside it, then
renamed over it (os.replace is atomic on POSIX and Windows), with SIGINT held until the rename is
done. A failed write (a full disk, a read-only directory) removes its temp file and leaves the old
file as it was; its OSError reaches the command's error line (pgnumpy/cli.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path


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


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Replace `path` by `data` atomically (text is written as UTF-8)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    raw = data.encode() if isinstance(data, str) else data
    with deferred_sigint():
        try:
            with open(tmp, "wb") as f:
                f.write(raw)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
