"""The one entry point every command goes through: user errors and interrupts as one line.

    if __name__ == "__main__":
        sys.exit(cli.entry(main))    # (train, evaluate: cli.exit_now(main()), a fast exit)

- UserError (bad input), OSError (the filesystem: a full disk, a read-only directory) and
  MemoryError become `error: MESSAGE` on stderr, exit status 2, no traceback.
- Ctrl-C becomes one line, exit status 130 (also when it lands inside a numba call, which numba
  reports as a SystemError with the KeyboardInterrupt as its context; its compiler, interrupted
  while caching a kernel, as a RuntimeError: any exception raised while a Ctrl-C was being
  handled is that Ctrl-C). What the line says about
  the run's checkpoint is the command's business: `main` may catch KeyboardInterrupt itself.
- NumPy's RuntimeWarnings (overflow, invalid value) are held back while the command runs: printed
  after a successful run, dropped in front of an error line, which already says what went wrong.

This module imports nothing heavy, so a command can call `guard_startup()` before its imports:
a Ctrl-C while numpy, numba and gymnasium load then exits with one line too.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from collections.abc import Callable

from pgnumpy.errors import UserError

INTERRUPTED = 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are UserErrors: one line, exit status 2, no usage dump."""

    def error(self, message):
        raise UserError(message)


def _startup_interrupt(signum, frame):
    print("\ninterrupted while starting up; nothing was written", file=sys.stderr, flush=True)
    # os._exit, not sys.exit: the SystemExit would be raised inside whatever import is running,
    # and import machinery can swallow it (seen: the run then went on to the end). Nothing is
    # written before `entry` takes over, so there is nothing to clean up.
    os._exit(INTERRUPTED)


def guard_startup() -> None:
    """Until `entry` takes over, Ctrl-C exits with one line. A process that was started with
    SIGINT ignored (a background job of a shell script) keeps ignoring it."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _startup_interrupt)


def is_interrupt(e: BaseException) -> bool:
    """A KeyboardInterrupt, or any error raised while one was being handled (numba's SystemError,
    or its RuntimeError when a kernel being compiled and cached is interrupted)."""
    while e is not None:
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__cause__ or e.__context__
    return False


def entry(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a command's main(argv) and turn every way it can fail into one line and a status."""
    if signal.getsignal(signal.SIGINT) is _startup_interrupt:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    held: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as held:
            warnings.simplefilter("always", RuntimeWarning)
            status = main(argv)
    except (UserError, OSError, MemoryError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as e:  # an error raised while handling a Ctrl-C is that Ctrl-C
        if not is_interrupt(e):
            raise
        print("\ninterrupted", file=sys.stderr)
        return INTERRUPTED
    seen = set()
    for w in held:  # after a successful run, each distinct numeric warning once
        key = (str(w.message), w.filename, w.lineno)
        if key not in seen:
            seen.add(key)
            print(f"warning: {w.message} ({w.filename}:{w.lineno})", file=sys.stderr)
    return status


def exit_now(status: int) -> None:
    """End the process with `status` once the command is done, skipping the interpreter's
    teardown: with numba and llvmlite loaded it took ~0.2 s here (freeing LLVM's objects and
    numba's module graph), a fifth of the default training command. Nothing is lost: every run
    file was written and closed atomically before, the exit handlers (atexit, weakref
    finalizers: temporary directories) run here, and the standard streams are flushed."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said
            pass
    os._exit(status)


def _one_line(e: BaseException) -> str:
    if isinstance(e, MemoryError):
        return f"out of memory: {e}" if str(e) else "out of memory"
    if isinstance(e, OSError):
        where = f" {e.filename}" if e.filename else ""
        return f"{e.strerror or e}{':' if where else ''}{where}"
    return " ".join(str(e).split())
