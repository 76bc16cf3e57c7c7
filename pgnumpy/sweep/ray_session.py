"""Ray for a sweep: imported only when a sweep runs, started on this machine or joined.

A Ray the sweep starts itself (the default) is the sweep's own: its processes (gcs_server,
raylet, the dashboard and runtime-env agents, the workers) end when the sweep ends, however it
ends: finished, an error, Ctrl-C (at any moment, ray.init included), or the driver killed. Ray's
own shutdown does not ensure it: an interrupted ray.init left the agents running, and a killed
driver takes only gcs_server and raylet with it (Linux's parent-death signal), not their
children. So every process of the session carries a mark in its environment (SESSION_VAR, a
fresh token, inherited from the driver through raylet), and a small reaper process, started
before Ray, waits on a pipe from the driver: when the pipe closes (the driver stopped Ray, or
died, even by SIGKILL) it ends every process that carries the mark (on Linux: it reads /proc;
elsewhere Ray's own shutdown is all there is). A cluster joined by --address is left as it was.
SIGTERM (`kill PID`) stops a sweep as Ctrl-C does.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading

from pgnumpy.errors import UserError
from pgnumpy.fileio import deferred_sigint

INSTALL = 'pip install -e ".[sweep]"'  # what the no-Ray message tells the user to run


def import_ray():
    """Ray, imported only when a sweep runs: the rest of pgnumpy never pays for it."""
    # Ray's C++ failure handler took SIGTERM while ray.init ran: a page of stack on the console
    # (Ray's switch, read as Ray loads; it also leaves a crash's signal to Python's handler)
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        import ray
    except ImportError:
        raise UserError(f"python -m pgnumpy.sweep runs on Ray, which is not installed: "
                        f"{INSTALL}") from None
    return ray


def start_ray(ray, address: str | None, workers: int | None) -> int:
    """Connect to a cluster, or start Ray on this machine; return how many trials to run at once.

    Locally Ray binds to the loopback interface only (it needs no network), gets `workers` CPUs
    (default: the cores), no dashboard and a small object store (trials pass only small dicts)."""
    import logging

    logging.getLogger("ray").setLevel(logging.ERROR)  # Ray's start-up notes are not ours to show
    kwargs = dict(logging_level=logging.ERROR, log_to_driver=False)
    try:
        if address is None:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's switch: node IP 127.0.0.1
            n = workers or os.cpu_count() or 1
            ray.init(address="local", num_cpus=n, include_dashboard=False,
                     object_store_memory=80 * 2**20, **kwargs)
            return n
        check_reachable(address)
        ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise UserError(f"cannot connect to the Ray cluster at {address}: "
                        f"{' '.join(str(e).split())}") from None
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < 1:
        raise UserError(f"the Ray cluster at {address} has no CPUs to run trials on")
    return min(workers, cpus) if workers else cpus


def check_reachable(address: str) -> None:
    """HOST:PORT and ray://HOST:PORT must answer before Ray is asked: Ray retries an address
    where nothing listens for minutes, printing a warning every few seconds."""
    if address == "auto":
        return  # Ray reads RAY_ADDRESS or this machine's latest cluster, and says if there is none
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"cannot connect to the Ray cluster at {address}: "
                        f"{e.strerror or e}") from None


SESSION_VAR = "PGNUMPY_RAY_SESSION"


def _terminate(signum, frame):
    """SIGTERM as Ctrl-C: the trials stop at their checkpoints. Raised as a SIGINT, so that
    while Ray starts it is held like one (deferred_sigint); if SIGINT is ignored (a background
    job), as KeyboardInterrupt directly."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        raise KeyboardInterrupt
    signal.raise_signal(signal.SIGINT)

# The reaper: ignores the terminal's signals (Ctrl-C is the driver's to handle; it runs in its
# own session anyway). Until the driver's pipe closes it records, twice a second, the driver's
# children that carry the mark and all their descendants (with their start times, so a reused
# pid is never taken for one of them): Ray's
# agents outlive a killed raylet as orphans, and rewrite their environment with their process
# title, so neither the tree nor the mark alone finds them later. Then it ends every recorded
# process still alive and every process carrying the mark: SIGTERM, up to 3 s, then SIGKILL.
REAPER = r"""
import os, select, signal, sys, time
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
    signal.signal(s, signal.SIG_IGN)
driver, mark = int(sys.argv[1]), sys.argv[2].encode()

def procs():  # pid -> (parent pid, start time), from /proc
    out = {}
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != os.getpid():
            try:
                with open(f"/proc/{p}/stat") as f:
                    st = f.read().rsplit(")", 1)[1].split()
                out[int(p)] = (int(st[1]), st[19])
            except (OSError, IndexError, ValueError):
                pass
    return out

def has_mark(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return mark in f.read().split(b"\0")
    except OSError:
        return False

seen = {}  # pid -> start time: the driver's descendants so far
while True:
    table = procs()
    # Ray's: the driver's children that carry the mark (gcs_server, raylet, ...; not another
    # child of the caller's), and everything below them
    kids = {p for p, (pp, t) in table.items()
            if pp == driver and (seen.get(p) == t or has_mark(p))}
    for _ in range(64):  # the tree, level by level
        more = {p for p, (pp, _) in table.items() if pp in kids} - kids
        if not more:
            break
        kids |= more
    seen.update({p: table[p][1] for p in kids})
    if select.select([sys.stdin], [], [], 0.5)[0] and not os.read(sys.stdin.fileno(), 4096):
        break  # EOF: the driver closed the pipe, or died

for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 1.0)):
    end = time.monotonic() + wait
    while True:
        table = procs()
        left = [p for p in table if seen.get(p) == table[p][1] or has_mark(p)]
        if not left or time.monotonic() > end:
            break
        for p in left:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        sig = 0 if sig == signal.SIGTERM else sig  # SIGTERM once; SIGKILL until gone
        time.sleep(0.05)
"""


class Session:
    """Ray for one sweep: started here (own), joined (--address), or a caller's, used as is.

        session = Session(ray)          # own: Ray not yet initialised in this process
        n_workers = session.start(address, workers)
        ...
        session.stop()                  # in a finally: whatever ended the sweep
    """

    def __init__(self, ray):
        self.ray = ray
        self.own = not ray.is_initialized()  # a caller already connected (a notebook, tests)
        self.reaper: subprocess.Popen | None = None
        self._term = None  # the SIGTERM handler before start(), restored by stop()

    def start(self, address: str | None, workers: int | None) -> int:
        """Start or join Ray, a Ctrl-C held until it is up (then raised): one that lands while
        ray.init forks a process is raised in a fork handler, where Python drops it (seen:
        "Exception ignored in _releaseLock", and the sweep ran on)."""
        if self.own:
            self._on_term(_terminate)
        try:
            with deferred_sigint():
                return self._start(address, workers)
        except SystemExit as e:  # ray.init's own SIGTERM handler, for a moment: sys.exit(15)
            if e.code != signal.SIGTERM:
                raise
            raise KeyboardInterrupt from None

    def _start(self, address: str | None, workers: int | None) -> int:
        if not self.own:
            cpus = int(self.ray.cluster_resources().get("CPU", 1))
            return min(workers or 10**9, max(1, cpus))
        if address is None and os.path.isdir("/proc/self"):  # Ray's processes here: ours to end
            mark = f"{SESSION_VAR}=pgnumpy-{os.getpid()}-{secrets.token_hex(6)}"
            env = {k: v for k, v in os.environ.items() if k != SESSION_VAR}
            # its own session: the terminal's Ctrl-C or hang-up never reaches it, even before
            # its first line runs
            self.reaper = subprocess.Popen([sys.executable, "-c", REAPER, str(os.getpid()), mark],
                                           stdin=subprocess.PIPE, env=env,
                                           start_new_session=True)
            os.environ[SESSION_VAR] = mark.split("=", 1)[1]
        n = start_ray(self.ray, address, workers)
        # ray.init set its own SIGTERM handler, sys.exit(15) (a `kill PID` mid-sweep exited 1
        # with no line, the trials killed mid-epoch): ours again
        self._on_term(_terminate)
        return n

    def _on_term(self, handler) -> None:
        """SIGTERM (`kill PID`) stops the sweep as Ctrl-C does; restored by stop()."""
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, handler)
            if self._term is None:  # the handler before the sweep's, not the sweep's own
                self._term = signal.SIG_DFL if previous is None else previous

    def stop(self, ending: bool = False) -> None:
        """Shut Ray down (if this sweep started or joined it), a Ctrl-C held meanwhile (a
        shutdown cut short leaves processes running); then the reaper ends whatever is left.
        The held Ctrl-C is raised after, unless the sweep is `ending` already (an impatient
        second Ctrl-C must not turn 'N trials stopped at their checkpoint' into a bare line)."""
        if not self.own:
            return
        try:
            self._stop()
        except KeyboardInterrupt:
            if not ending:
                raise

    def _stop(self) -> None:
        with deferred_sigint():
            if self._term is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self._term)
                self._term = None
            try:
                self.ray.shutdown()
            finally:
                os.environ.pop(SESSION_VAR, None)
                if self.reaper is not None:
                    self.reaper.stdin.close()
                    try:
                        self.reaper.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass  # it goes on alone; nothing here waits for it
                    self.reaper = None
