"""Checkpoints: one .npz holding everything a run needs to continue where it stopped.

Written atomically (a temp file, then os.replace), so an interrupted write never leaves a
truncated checkpoint behind. Contents: the config, the epoch and step counters, every network's
flat parameter vector, every Adam state, the RNG states (as JSON), the finished-episode history
and algorithm extras (PPO-KL's beta, the normalisers' statistics). The environments are not saved:
a resumed run starts fresh episodes (the episodes running at the stop are dropped, as at any
rollout boundary).

Reading trusts nothing in the file: a damaged or crafted checkpoint gets a one-line UserError
naming the file and the field, never a traceback later in training. Sizes are checked before
anything is allocated (no zip bombs, no .npy header claiming terabytes), nothing is unpickled
(no code execution), and every field's type, shape, dtype and range is checked (load_checkpoint;
restore adds what only the built networks know: their sizes).
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import io
import json
import math
import os
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pgnumpy.errors import UserError
from pgnumpy.fileio import atomic_write, deferred_sigint  # noqa: F401 (re-exported)

FORMAT = "pgnumpy-checkpoint-2"

# No member of a real checkpoint comes near this: two (256, 256) networks on a 376-dim observation
# with their Adam states are ~2.5 MB, and the episode history costs 16 bytes an episode (62,500
# episodes a MB). A member larger than this is refused before anything is read.
MAX_MEMBER_BYTES = 1 << 30
# The dtypes save_checkpoint writes: float32/float64 parameters and Adam states (the networks'
# dtype), float64 returns, int64 lengths, a unicode string for the JSON meta.
_DTYPES = {np.dtype(t) for t in ("<f4", "<f8", "<i8")}
_META_KEYS = {"format", "config", "epoch", "wall_s", "env_steps", "rngs", "extra", "opt_scalars"}
_INT64_MAX = 2**63 - 1


def save_checkpoint(path: str | Path, **state) -> None:
    """Write the run's state now: write_checkpoint(path, checkpoint_arrays(**state))."""
    write_checkpoint(path, checkpoint_arrays(**state))


def checkpoint_arrays(
    *,
    config: dict,
    epoch: int,
    wall_s: float,
    nets: dict,
    opts: dict,
    rngs: dict,
    runner,
    extra: dict | None = None,
) -> dict[str, np.ndarray]:
    """The run's state as the arrays of a checkpoint, copied, so that training can go on
    changing its own: seven entries (every scalar and string in one JSON "meta" entry; Adam's m
    and v stacked)."""
    return snapshot_arrays(snapshot(config=config, epoch=epoch, wall_s=wall_s, nets=nets,
                                    opts=opts, rngs=rngs, runner=runner, extra=extra))


def snapshot(*, config: dict, epoch: int, wall_s: float, nets: dict, opts: dict, rngs: dict,
             runner, extra: dict | None = None) -> dict:
    """What checkpoint_arrays needs, copied now and cheaply (train.py's Checkpointer takes one
    after every epoch and turns the last into arrays only when it writes): the parameters and
    Adam's moments copied, the RNG states and extras as fresh objects, and of the finished-episode
    history only its length, since the runner only ever appends to it."""
    meta = {
        "format": FORMAT,
        "config": config,
        "epoch": int(epoch),
        "wall_s": float(wall_s),
        "env_steps": int(runner.env_steps),
        "rngs": {k: g.bit_generator.state for k, g in rngs.items()},
        "extra": copy.deepcopy(extra or {}),
        "opt_scalars": {n: {"t": int(o.t), "lr": float(o.lr)} for n, o in opts.items()},
    }
    n = len(runner.episode_returns)
    return {"meta": meta, "episodes": (runner.episode_returns, runner.episode_lengths, n),
            "nets": {name: net.params.copy() for name, net in nets.items()},
            "opts": {name: np.stack([o.m, o.v]) for name, o in opts.items()}}


def snapshot_arrays(snap: dict) -> dict[str, np.ndarray]:
    """The checkpoint's arrays from a snapshot."""
    returns, lengths, n = snap["episodes"]
    arrays = {
        "meta": np.array(json.dumps(snap["meta"])),
        "episode_returns": np.array(returns[:n], dtype=np.float64),
        "episode_lengths": np.array(lengths[:n], dtype=np.int64),
    }
    for name, params in snap["nets"].items():
        arrays[f"net/{name}"] = params
    for name, mv in snap["opts"].items():
        arrays[f"opt/{name}"] = mv
    return arrays


def write_checkpoint(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write checkpoint arrays atomically (a temp file, then os.replace), holding Ctrl-C until
    the file is whole. A failed write (a full disk: ENOSPC) raises UserError after removing the
    temp file, so the last good checkpoint stays in place and no stray .tmp is left."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path = Path(path)
    try:
        atomic_write(path, buf.getvalue())  # temp file + rename, Ctrl-C held, temp removed
    except OSError as e:
        what = e.strerror or errno.errorcode.get(e.errno or 0, "") or str(e)
        fix = "free some disk space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that"
        raise UserError(
            f"could not write the checkpoint {path} ({_one_line(what)}); the last good "
            f"checkpoint is kept: {fix}, then continue with --resume {path.parent}"
        ) from None


class Checkpoint(dict):
    """What load_checkpoint returns: a plain dict of the fields, plus the file it came from (for
    restore's messages)."""

    path: Path


class _Bad(Exception):
    """A damaged or crafted field; load_checkpoint adds the file's name. whole: the message is a
    sentence of its own, not a field description."""

    def __init__(self, msg: str, whole: bool = False):
        super().__init__(msg)
        self.whole = whole


class _Unreadable(Exception):
    """The file is not a readable zip of .npy entries."""


def _one_line(x, limit: int = 120) -> str:
    """A message fragment safe to print: one line, bounded length (a crafted value can be huge);
    an exception without a message is named by its type."""
    s = " ".join(str(x).split()) or (type(x).__name__ if isinstance(x, BaseException) else "")
    return s if len(s) <= limit else s[: limit - 3] + "..."


def load_checkpoint(path: str | Path, configs: Mapping[str, type]) -> Checkpoint:
    """Read a checkpoint fully into memory, or raise UserError saying why it can't be used.
    `configs`: the config class of each algorithm by name (pgnumpy.algos.CONFIGS), which builds
    the saved config and so checks every hyperparameter.

    Returns a flat dict: config, epoch, wall_s, env_steps, rngs, extra, episode_returns,
    episode_lengths, net/NAME, and opt/NAME/{m, v, t, lr} for every network and optimizer."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.npz"
    if not path.exists():
        raise UserError(f"no checkpoint at {path}: give a run directory written by pgnumpy.train")
    meta, raw = read_npz(path, "checkpoint")
    if meta is None:
        older = "format" in raw  # format 1 kept its fields as separate entries
        raise UserError(
            f"{path} was written by an older pgnumpy (format 1); this version reads {FORMAT}"
            if older else f"{path} is not a pgnumpy checkpoint (expected format {FORMAT})"
        )
    if meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a pgnumpy checkpoint (expected format {FORMAT})")
    try:
        ckpt = _validate(meta, raw, configs)
    except KeyError as e:
        raise UserError(f"{path} is not a readable checkpoint (missing or bad field {e})") from None
    except _Bad as e:
        if e.whole:
            raise UserError(f"{path} {e}") from None
        raise UserError(f"{path} is not a readable checkpoint (bad field {e})") from None
    ckpt.path = path
    return ckpt


def read_npz(path: Path, what: str) -> tuple[dict | None, dict[str, np.ndarray]]:
    """(meta, arrays) of an .npz written by pgnumpy (`meta`: its JSON entry, None if it has
    none), every entry vetted before it is read (_check_members, _read_npy): no pickle, no
    zip bomb, no header that claims more than the file holds. Anything unreadable is a
    UserError naming `what` the file was meant to be."""
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
            infos = _check_members(zf, os.fstat(f.fileno()).st_size)
            meta = _read_meta(zf) if "meta.npy" in {i.filename for i in infos} else None
            raw = {i.filename[:-4]: _read_npy(zf, i) for i in infos if i.filename != "meta.npy"}
    except _Unreadable as e:
        raise UserError(
            f"{path} is not a readable {what} (truncated or foreign file): {_one_line(e)}"
        ) from None
    except (zipfile.BadZipFile, struct.error, EOFError, OSError, ValueError,
            NotImplementedError, RuntimeError, OverflowError) as e:  # RecursionError too
        if isinstance(e, UserError):
            raise
        raise UserError(
            f"{path} is not a readable {what} (truncated or foreign file): {_one_line(e)}"
        ) from None
    return meta, raw


def _check_members(zf: zipfile.ZipFile, file_bytes: int) -> list[zipfile.ZipInfo]:
    """Vet every entry from the zip directory alone, before reading any: stored (np.savez never
    compresses, so an entry can't expand: no zip bomb), not encrypted, unique .npy names, and an
    uncompressed size equal to the stored size, within the file's own size and MAX_MEMBER_BYTES."""
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise _Unreadable("duplicate entries")
    for i in infos:
        if not i.filename.endswith(".npy"):
            raise _Unreadable(f"entry {i.filename!r} is not a .npy array")
        if i.flag_bits & 0x1:
            raise _Unreadable(f"entry {i.filename!r} is encrypted")
        if i.compress_type != zipfile.ZIP_STORED:
            raise _Unreadable(f"entry {i.filename!r} is compressed (checkpoints are stored)")
        if i.file_size != i.compress_size or i.file_size > min(file_bytes, MAX_MEMBER_BYTES):
            raise _Unreadable(
                f"entry {i.filename!r} claims {i.file_size} bytes ({i.compress_size} stored) "
                f"in a file of {file_bytes}"
            )
    return infos


def _read_npy(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One entry as an array, its .npy header checked before the array is made: a plain numeric
    or unicode dtype (never object: no pickle) and shape x itemsize equal to the bytes there."""
    data = zf.read(info)  # bounded by _check_members; zipfile checks the CRC
    f = io.BytesIO(data)
    name = info.filename
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise _Unreadable(f"entry {name!r} has .npy version {version}")
    read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_0")
    try:
        shape, fortran, dtype = read_header(f)
    except Exception as e:  # numpy's header parser raises assorted types (tokenize's TokenError)
        raise _Unreadable(f"entry {name!r} has a bad .npy header ({_one_line(e)})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or (
        dtype.kind not in "fiU"
    ):
        raise _Unreadable(f"entry {name!r} has dtype {_one_line(dtype)}, not a plain number/str")
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise _Unreadable(f"entry {name!r} has a bad shape {_one_line(shape)}")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed != len(data) - f.tell():
        raise _Unreadable(
            f"entry {name!r} claims shape {_one_line(shape, 60)} of {dtype} ({claimed} bytes) "
            f"but holds {len(data) - f.tell()}"
        )
    f.seek(0)
    return np.lib.format.read_array(f, allow_pickle=False)


def _read_meta(zf: zipfile.ZipFile) -> dict:
    a = _read_npy(zf, zf.getinfo("meta.npy"))
    if a.shape != () or a.dtype.kind != "U":
        raise _Unreadable("entry 'meta.npy' is not a string")
    meta = json.loads(str(a))
    if not isinstance(meta, dict):
        raise _Unreadable("entry 'meta.npy' is not a JSON object")
    return meta


# ------------------------------------------------------------------------------- field checks


def _is_int(x, lo: int = 0, hi: int = _INT64_MAX) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi


def _is_num(x, lo: float = -math.inf, lo_open: bool = False) -> bool:
    if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
        return False
    return x > lo if lo_open else x >= lo


def _expect(ok: bool, field: str, what: str, got) -> None:
    if not ok:
        raise _Bad(f"{field!r}: expected {what}, got {_one_line(repr(got), 60)}")


def _validate(meta: dict, raw: dict[str, np.ndarray], configs: Mapping[str, type]) -> Checkpoint:
    """Every field's type, shape, dtype and range (what is known without the built networks)."""
    for key in ("config", "epoch", "wall_s", "env_steps", "rngs", "extra", "opt_scalars"):
        meta[key]  # noqa: B018 -- a KeyError names the missing field
    unknown = sorted(set(meta) - _META_KEYS)
    _expect(not unknown, "meta", f"only the fields {sorted(_META_KEYS)}", unknown)
    _expect(_is_int(meta["epoch"]), "epoch", "an integer >= 0", meta["epoch"])
    _expect(_is_int(meta["env_steps"]), "env_steps", "an integer >= 0", meta["env_steps"])
    _expect(_is_num(meta["wall_s"], 0), "wall_s", "a finite number >= 0", meta["wall_s"])
    cfg = _check_config(meta["config"], configs)
    rngs = meta["rngs"]
    _expect(isinstance(rngs, dict), "rngs", "a dict of generator states", rngs)
    for name, state in rngs.items():
        _check_rng_state(f"rngs/{name}", state)
    _check_extra(meta["extra"], cfg)

    for key in ("episode_returns", "episode_lengths"):
        raw[key]  # noqa: B018
    rets, lens = raw["episode_returns"], raw["episode_lengths"]
    _expect(rets.ndim == 1 and rets.dtype == np.float64 and np.isfinite(rets).all(),
            "episode_returns", "a 1-D float64 array of finite numbers",
            f"{rets.dtype} array of shape {rets.shape}")
    _expect(lens.ndim == 1 and lens.dtype == np.int64 and lens.shape == rets.shape
            and (lens >= 1).all(), "episode_lengths",
            f"a 1-D int64 array of {len(rets)} lengths >= 1 (as episode_returns)",
            f"{lens.dtype} array of shape {lens.shape}")
    ckpt = Checkpoint(
        {k: meta[k] for k in ("config", "epoch", "wall_s", "env_steps", "rngs", "extra")}
    )
    ckpt |= {"episode_returns": rets, "episode_lengths": lens}

    nets = {k[4:]: a for k, a in raw.items() if k.startswith("net/")}
    opts = {k[4:]: a for k, a in raw.items() if k.startswith("opt/")}
    stray = sorted(set(raw) - {"episode_returns", "episode_lengths"}
                   - {f"net/{n}" for n in nets} - {f"opt/{n}" for n in opts})
    _expect(not stray, "entries", "only meta, episode_*, net/* and opt/*", stray)
    for name, a in nets.items():
        _expect(a.ndim == 1 and a.dtype in _DTYPES and a.dtype.kind == "f" and a.size > 0,
                f"net/{name}", "a non-empty 1-D float array", f"{a.dtype} array of shape {a.shape}")
        if not np.isfinite(a).all():
            raise _Bad(f"holds NaN/inf parameters in network {name!r} (a diverged run?); "
                       "resume from an earlier copy or start a new run", whole=True)
        ckpt[f"net/{name}"] = a
    scalars = meta["opt_scalars"]
    _expect(isinstance(scalars, dict) and set(scalars) == set(opts), "opt_scalars",
            f"t and lr for the optimizers {sorted(opts)}", scalars)
    for name, a in opts.items():
        n = nets[name].size if name in nets else None
        _expect(n is not None and a.shape == (2, n) and a.dtype == nets[name].dtype,
                f"opt/{name}", f"Adam's m and v as a (2, {n}) array of the network's dtype",
                f"{a.dtype} array of shape {a.shape}")
        if not np.isfinite(a).all() or (a[1] < 0).any():
            raise _Bad(f"holds NaN/inf or negative Adam moments for {name!r} (a diverged "
                       "run?); resume from an earlier copy or start a new run", whole=True)
        s = scalars[name]
        _expect(isinstance(s, dict) and set(s) == {"t", "lr"}, f"opt_scalars/{name}",
                "{'t': ..., 'lr': ...}", s)
        _expect(_is_int(s["t"]), f"opt_scalars/{name}/t", "an integer >= 0", s["t"])
        _expect(_is_num(s["lr"], 0, lo_open=True), f"opt_scalars/{name}/lr",
                "a finite number > 0", s["lr"])
        ckpt |= {f"opt/{name}/m": a[0], f"opt/{name}/v": a[1], f"opt/{name}/t": s["t"],
                 f"opt/{name}/lr": s["lr"]}
    return ckpt


def _check_config(config, configs: Mapping[str, type]):
    """The config must build its algorithm's config class (every hyperparameter's range checked
    there) and say what the extras are for; returns the built config."""
    _expect(isinstance(config, dict) and all(isinstance(k, str) for k in config), "config",
            "a dict of hyperparameters", config)
    rest = dict(config)
    algo = rest.pop("algo", None)
    _expect(isinstance(algo, str) and algo in configs, "config/algo", f"one of {list(configs)}",
            algo)
    cls = configs[algo]
    _expect(isinstance(rest.get("env_id", ""), str), "config/env_id", "a string",
            rest.get("env_id"))
    for f in dataclasses.fields(cls):  # the config classes leave their flags' types unchecked
        if f.type in ("bool", bool) and f.name in rest:
            _expect(isinstance(rest[f.name], bool), f"config/{f.name}", "true or false",
                    rest[f.name])
    try:
        return cls(**rest)
    except (TypeError, ValueError, AttributeError, OverflowError) as e:
        raise _Bad(f"'config': {_one_line(e)}") from None


def _check_rng_state(field: str, state) -> None:
    """A PCG64 state (what default_rng makes) that numpy accepts and reads back unchanged: numpy
    raises on some bad values (a negative or too large int), silently truncates others (a float
    increment) and keeps a has_uint32 that is neither 0 nor 1."""
    ok = (isinstance(state, dict) and state.get("bit_generator") == "PCG64"
          and _is_int(state.get("has_uint32"), 0, 1))
    if ok:
        bg = np.random.PCG64()
        try:
            bg.state = copy.deepcopy(state)
            ok = json.dumps(bg.state, sort_keys=True) == json.dumps(state, sort_keys=True)
        except (TypeError, ValueError, KeyError, OverflowError):
            ok = False
    _expect(ok, field, "a numpy PCG64 state", state)


def _check_extra(extra, cfg) -> None:
    """Algorithm extras: PPO's beta, the observation and reward normalisers' statistics. The
    ones the config needs must be there; the lengths of obs_norm are checked in restore."""
    _expect(isinstance(extra, dict), "extra", "a dict", extra)
    unknown = sorted(set(extra) - {"beta", "obs_norm", "rew_scale"})
    _expect(not unknown, "extra", "only beta, obs_norm and rew_scale", unknown)
    needed = (["beta"] if hasattr(cfg, "beta") else []) + [
        k for k, flag in (("obs_norm", "norm_obs"), ("rew_scale", "norm_rew"))
        if getattr(cfg, flag, False)
    ]
    for key in needed:
        _expect(key in extra, f"extra/{key}", f"a value (the config uses {key})", "nothing")
    if "beta" in extra:  # >= 0 as the config allows; halving never reaches 0 in practice
        _expect(_is_num(extra["beta"], 0), "extra/beta", "a finite number >= 0", extra["beta"])
    if "obs_norm" in extra:
        d = extra["obs_norm"]
        ok = isinstance(d, dict) and set(d) == {"mean", "var", "count"}
        ok = ok and all(isinstance(d[k], list) and d[k] and all(_is_num(x) for x in d[k])
                        for k in ("mean", "var"))
        ok = ok and len(d["mean"]) == len(d["var"]) and min(d["var"]) >= 0
        _expect(ok and _is_num(d["count"], 0), "extra/obs_norm",
                "finite mean and var >= 0 lists of one length, count >= 0", d)
    if "rew_scale" in extra:
        d = extra["rew_scale"]
        ok = isinstance(d, dict) and set(d) == {"mean", "var", "count"}
        _expect(ok and _is_num(d["mean"]) and _is_num(d["var"], 0) and _is_num(d["count"], 0),
                "extra/rew_scale", "finite mean, var >= 0, count >= 0", d)


def check_obs_norm_dim(ckpt: dict, obs_dim: int) -> None:
    """Raise UserError unless the checkpoint's observation statistics (if any) are obs_dim long;
    for callers that build a policy without restore (pgnumpy.api.load)."""
    obs_norm = ckpt["extra"].get("obs_norm")
    if obs_norm is not None and len(obs_norm["mean"]) != obs_dim:
        who = f"checkpoint {ckpt.path}" if isinstance(ckpt, Checkpoint) else "checkpoint"
        raise UserError(f"{who}: observation statistics of length {len(obs_norm['mean'])}, "
                        f"expected {obs_dim}: different env?")


def restore(ckpt: dict, *, nets: dict, opts: dict, rngs: dict, runner) -> tuple[int, float]:
    """Load a checkpoint's state into freshly built objects; return (next epoch, wall seconds).

    Checks what load_checkpoint can't: that the saved networks, optimizers, generators and
    observation statistics are the ones the config builds."""
    who = f"checkpoint {ckpt.path}" if isinstance(ckpt, Checkpoint) else "checkpoint"
    saved_nets = {k[4:] for k in ckpt if k.startswith("net/")}
    unbuilt = sorted(saved_nets - set(nets))
    if unbuilt:
        raise UserError(f"{who}: network {unbuilt[0]!r} is not one this config builds: "
                        "different algorithm or phi?")
    for name, net in nets.items():
        saved = ckpt.get(f"net/{name}")
        if saved is None or saved.shape != net.params.shape or saved.dtype != net.params.dtype:
            got = "missing" if saved is None else f"{saved.dtype} {saved.shape}"
            raise UserError(
                f"{who}: network {name!r} does not match the config "
                f"({got}, expected {net.params.dtype} {net.params.shape}): different env or "
                "layer sizes?"
            )
    for name, opt in opts.items():
        if f"opt/{name}/m" not in ckpt or ckpt[f"opt/{name}/m"].shape != opt.m.shape:
            raise UserError(f"{who}: no optimizer state for {name!r} of shape "
                            f"{opt.m.shape}: different algorithm or layer sizes?")
    for name, g in rngs.items():
        state = ckpt["rngs"].get(name)
        if state is None or state.get("bit_generator") != type(g.bit_generator).__name__:
            raise UserError(f"{who}: no {type(g.bit_generator).__name__} state "
                            f"for the generator {name!r}: different algorithm?")
    sizes = getattr(getattr(nets.get("policy"), "net", None), "sizes", None)
    if sizes is not None:
        check_obs_norm_dim(ckpt, sizes[0])
    # every check passed: only now change the objects
    for name, net in nets.items():
        net.params[:] = ckpt[f"net/{name}"]
    for name, opt in opts.items():
        opt.load_state_dict({k: ckpt[f"opt/{name}/{k}"] for k in ("m", "v", "t", "lr")})
    for name, g in rngs.items():
        g.bit_generator.state = ckpt["rngs"][name]
    runner.episode_returns[:] = ckpt["episode_returns"].tolist()
    runner.episode_lengths[:] = ckpt["episode_lengths"].tolist()
    runner.env_steps = int(ckpt["env_steps"])
    return int(ckpt["epoch"]) + 1, float(ckpt["wall_s"])
