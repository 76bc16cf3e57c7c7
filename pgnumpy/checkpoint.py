"""Checkpoints: one .npz holding everything a run needs to continue where it stopped.

Written atomically (a temp file, then os.replace), so an interrupted write never leaves a
truncated checkpoint behind. Contents: the config, the epoch and step counters, every network's
flat parameter vector, every Adam state, the RNG states (as JSON), the finished-episode history
and algorithm extras (PPO-KL's beta). The environments are not saved: a resumed run starts fresh
episodes (the episodes running at the stop are dropped, as at any rollout boundary).
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pgnumpy.errors import UserError

FORMAT = "pgnumpy-checkpoint-2"


def save_checkpoint(
    path: str | Path,
    *,
    config: dict,
    epoch: int,
    wall_s: float,
    nets: dict,
    opts: dict,
    rngs: dict,
    runner,
    extra: dict | None = None,
) -> None:
    """Write the run's state atomically. It runs after every epoch, so it is kept cheap: seven
    zip entries (every scalar and string in one JSON "meta" entry; Adam's m and v stacked),
    assembled in memory and written with one call. Measured alone on the state of a (64, 64)
    CartPole run: 0.6 ms, against 1.0 ms for format 1's 19 entries; in the default CartPole run
    it is ~0.65 ms an epoch, 12% of the training time."""
    meta = {
        "format": FORMAT,
        "config": config,
        "epoch": int(epoch),
        "wall_s": float(wall_s),
        "env_steps": int(runner.env_steps),
        "rngs": {k: g.bit_generator.state for k, g in rngs.items()},
        "extra": extra or {},
    }
    states = {name: opt.state_dict() for name, opt in opts.items()}
    meta["opt_scalars"] = {n: {"t": int(d["t"]), "lr": float(d["lr"])} for n, d in states.items()}
    arrays = {
        "meta": np.array(json.dumps(meta)),
        "episode_returns": np.array(runner.episode_returns, dtype=np.float64),
        "episode_lengths": np.array(runner.episode_lengths, dtype=np.int64),
    }
    for name, net in nets.items():
        arrays[f"net/{name}"] = net.params
    for name, d in states.items():
        arrays[f"opt/{name}"] = np.stack([d["m"], d["v"]])
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with deferred_sigint():  # a Ctrl-C mid-write would leave a half-written file: finish first
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
        os.replace(tmp, path)


@contextmanager
def deferred_sigint():
    """Hold a SIGINT until the block ends, then raise KeyboardInterrupt as usual. A process
    that ignores SIGINT (started as a background job of a shell script) keeps ignoring it."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
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


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint fully into memory, or raise UserError saying why it can't be used.

    Returns a flat dict: config, epoch, wall_s, env_steps, rngs, extra, episode_returns,
    episode_lengths, net/NAME, and opt/NAME/{m, v, t, lr} for every network and optimizer."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.npz"
    if not path.exists():
        raise UserError(f"no checkpoint at {path}: give a run directory written by pgnumpy.train")
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
        meta = json.loads(str(raw.pop("meta"))) if "meta" in raw else {}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise UserError(
            f"{path} is not a readable checkpoint (truncated or foreign file): {e}"
        ) from None
    if meta.get("format") != FORMAT:
        older = "format" in raw  # format 1 kept its fields as separate entries
        raise UserError(
            f"{path} was written by an older pgnumpy (format 1); this version reads {FORMAT}"
            if older else f"{path} is not a pgnumpy checkpoint (expected format {FORMAT})"
        )
    try:
        ckpt = {k: meta[k] for k in ("config", "epoch", "wall_s", "env_steps", "rngs", "extra")}
        for name, scalars in meta["opt_scalars"].items():
            m, v = raw.pop(f"opt/{name}")
            ckpt |= {f"opt/{name}/m": m, f"opt/{name}/v": v, f"opt/{name}/t": scalars["t"],
                     f"opt/{name}/lr": scalars["lr"]}
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path} is not a readable checkpoint (missing or bad field {e})") from None
    return ckpt | raw


def restore(ckpt: dict, *, nets: dict, opts: dict, rngs: dict, runner) -> tuple[int, float]:
    """Load a checkpoint's state into freshly built objects; return (next epoch, wall seconds)."""
    for name, net in nets.items():
        saved = ckpt.get(f"net/{name}")
        if saved is None or saved.shape != net.params.shape:
            got = "missing" if saved is None else f"shape {saved.shape}"
            raise UserError(
                f"checkpoint network {name!r} does not match the config "
                f"({got}, expected {net.params.shape}): different env or layer sizes?"
            )
        net.params[:] = saved
    for name, opt in opts.items():
        opt.load_state_dict({k: ckpt[f"opt/{name}/{k}"] for k in ("m", "v", "t", "lr")})
    for name, g in rngs.items():
        g.bit_generator.state = ckpt["rngs"][name]
    runner.episode_returns[:] = ckpt["episode_returns"].tolist()
    runner.episode_lengths[:] = ckpt["episode_lengths"].tolist()
    runner.env_steps = int(ckpt["env_steps"])
    return int(ckpt["epoch"]) + 1, float(ckpt["wall_s"])
