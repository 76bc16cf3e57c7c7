"""Checkpoints: one .npz holding everything a run needs to continue where it stopped.

Written atomically (a temp file, then os.replace), so an interrupted write never leaves a
truncated checkpoint behind. Contents: the config, the epoch and step counters, every network's
flat parameter vector, every Adam state, the RNG states (as JSON), the finished-episode history
and algorithm extras (PPO-KL's beta). The environments are not saved: a resumed run starts fresh
episodes (the episodes running at the stop are dropped, as at any rollout boundary).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pgnumpy.errors import UserError

FORMAT = "pgnumpy-checkpoint-1"


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
    arrays = {
        "format": np.array(FORMAT),
        "config": np.array(json.dumps(config)),
        "epoch": np.array(epoch),
        "wall_s": np.array(wall_s),
        "env_steps": np.array(runner.env_steps),
        "episode_returns": np.array(runner.episode_returns, dtype=np.float64),
        "episode_lengths": np.array(runner.episode_lengths, dtype=np.int64),
        "rngs": np.array(json.dumps({k: g.bit_generator.state for k, g in rngs.items()})),
        "extra": np.array(json.dumps(extra or {})),
    }
    for name, net in nets.items():
        arrays[f"net/{name}"] = net.params
    for name, opt in opts.items():
        for k, v in opt.state_dict().items():
            arrays[f"opt/{name}/{k}"] = v
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with deferred_sigint():  # a Ctrl-C mid-write would leave zipfile half-closed: finish first
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)


@contextmanager
def deferred_sigint():
    """Hold a SIGINT until the block ends, then raise KeyboardInterrupt as usual."""
    if threading.current_thread() is not threading.main_thread():
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
    """Read a checkpoint fully into memory, or raise UserError saying why it can't be used."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.npz"
    if not path.exists():
        raise UserError(f"no checkpoint at {path}: give a run directory written by pgnumpy.train")
    try:
        with np.load(path, allow_pickle=False) as z:
            ckpt = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise UserError(
            f"{path} is not a readable checkpoint (truncated or foreign file): {e}"
        ) from None
    if "format" not in ckpt or str(ckpt["format"]) != FORMAT:
        raise UserError(f"{path} is not a pgnumpy checkpoint (expected format {FORMAT})")
    ckpt["config"] = json.loads(str(ckpt["config"]))
    ckpt["rngs"] = json.loads(str(ckpt["rngs"]))
    ckpt["extra"] = json.loads(str(ckpt["extra"]))
    return ckpt


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
