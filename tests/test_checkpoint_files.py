"""Checkpoint files people can't break: a damaged or crafted checkpoint gets a one-line UserError
naming the file (never a traceback later in training, never a huge allocation, never code run by
unpickling); a failed write keeps the last good checkpoint; the write defers Ctrl-C but leaves an
ignored SIGINT ignored."""

import dataclasses
import errno
import io
import json
import os
import signal
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgnumpy import checkpoint, fileio
from pgnumpy.algos import load_checkpoint, ppo
from pgnumpy.checkpoint import deferred_sigint, save_checkpoint
from pgnumpy.errors import UserError
from pgnumpy.train import main

# PPO-KL with both normalisers, so every kind of field (beta, obs_norm, rew_scale) is in the file;
# Pendulum (3-dim observations) and (8,) layers keep the file small (~8 KB) for the fuzz test.
CFG = ppo.PPOConfig(env_id="Pendulum-v1", variant="kl", norm_obs=True, norm_rew=True,
                    num_envs=2, steps_per_env=64, total_steps=4 * 128, hidden=(8,),
                    target_return=float("inf"))


def _train_and_save(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = {"algo": "ppo", **dataclasses.asdict(CFG)}

    def on_epoch(epoch, state):
        save_checkpoint(directory / "checkpoint.npz", config=config, epoch=epoch, **state)

    ppo.train(CFG, on_epoch=on_epoch)
    return directory / "checkpoint.npz"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return _train_and_save(tmp_path_factory.mktemp("good"))


def old_reader(path):
    """The reader before issue 11 (np.load + json), kept here to show the format is unchanged."""
    with np.load(path, allow_pickle=False) as z:
        raw = {k: z[k] for k in z.files}
    meta = json.loads(str(raw.pop("meta")))
    ck = {k: meta[k] for k in ("config", "epoch", "wall_s", "env_steps", "rngs", "extra")}
    for name, s in meta["opt_scalars"].items():
        m, v = raw.pop(f"opt/{name}")
        ck |= {f"opt/{name}/m": m, f"opt/{name}/v": v, f"opt/{name}/t": s["t"],
               f"opt/{name}/lr": s["lr"]}
    return ck | raw


def same(a: dict, b: dict) -> bool:
    """Every field equal: arrays bit for bit (dtype and shape too), the rest as JSON (types too)."""
    if set(a) != set(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.dtype == y.dtype
                    and x.shape == y.shape and x.tobytes() == y.tobytes()):
                return False
        elif json.dumps(x, sort_keys=True) != json.dumps(y, sort_keys=True):
            return False
    return True


def read_members(path):
    """The fields of a good checkpoint, to be edited into a crafted one (trusted input)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(str(arrays.pop("meta"))), arrays


def craft(good: Path, tmp_path: Path, edit) -> Path:
    meta, arrays = read_members(good)
    edit(meta, arrays)
    out = tmp_path / "crafted" / "checkpoint.npz"
    out.parent.mkdir(exist_ok=True)
    np.savez(out, meta=np.array(json.dumps(meta)), **arrays)
    return out


def one_line_error(path) -> str:
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


# ------------------------------------------------------------------------------ the good file


def test_a_checkpoint_loads_exactly_as_written_and_as_the_old_reader_reads_it(good):
    ck = load_checkpoint(good)
    assert same(ck, old_reader(good))
    assert ck.path == good and load_checkpoint(good.parent).path == good
    assert set(ck["extra"]) == {"beta", "obs_norm", "rew_scale"}
    assert ck["epoch"] == 3 and len(ck["episode_lengths"]) == 2
    assert ck["net/policy"].dtype == np.float32


# ----------------------------------------------------------------- crafted or damaged fields

def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(meta, arrays):
        d = meta
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return edit


def _drop(*keys):
    def edit(meta, arrays):
        d = meta
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
    return edit


def _array(name, fn):
    def edit(meta, arrays):
        if fn is None:
            del arrays[name]
        else:
            arrays[name] = fn(arrays[name])
    return edit


def _nan_at_0(a):
    a = a.copy()
    a.reshape(-1)[0] = np.nan
    return a


FIELD_CASES = [
    # meta scalars
    ("epoch-negative", _set("epoch", -1), "bad field 'epoch': expected an integer >= 0, got -1"),
    ("epoch-str", _set("epoch", "3"), "bad field 'epoch': expected an integer >= 0, got '3'"),
    ("epoch-float", _set("epoch", 2.0), "bad field 'epoch'"),
    ("epoch-bool", _set("epoch", True), "bad field 'epoch'"),
    ("epoch-missing", _drop("epoch"), "missing or bad field 'epoch'"),
    ("env-steps-huge", _set("env_steps", 2**70), "bad field 'env_steps'"),
    ("wall-nan", _set("wall_s", float("nan")), "bad field 'wall_s': expected a finite number"),
    ("wall-inf", _set("wall_s", float("inf")), "bad field 'wall_s'"),
    ("wall-str", _set("wall_s", "1"), "bad field 'wall_s'"),
    ("unknown-meta", _set("evil", 1), "bad field 'meta': expected only the fields"),
    ("format-other", _set("format", "pgnumpy-checkpoint-3"), "is not a pgnumpy checkpoint"),
    # config
    ("config-list", _set("config", [1]), "bad field 'config': expected a dict"),
    ("config-algo", _set("config", "algo", "dqn"), "bad field 'config/algo'"),
    ("config-no-algo", _drop("config", "algo"), "bad field 'config/algo'"),
    ("config-gamma", _set("config", "gamma", 1.5), "'config': gamma must be in (0, 1], got 1.5"),
    ("config-hidden", _set("config", "hidden", 5), "bad field 'config'"),
    ("config-flag", _set("config", "norm_obs", "yes"), "bad field 'config/norm_obs'"),
    ("config-env", _set("config", "env_id", 5), "bad field 'config/env_id'"),
    ("config-unknown", _set("config", "colour", 1), "unexpected keyword argument 'colour'"),
    # generator states: numpy raises on some bad values and silently truncates others
    ("rngs-list", _set("rngs", []), "bad field 'rngs'"),
    ("rng-other-type", _set("rngs", "act", "bit_generator", "MT19937"), "bad field 'rngs/act'"),
    ("rng-negative", _set("rngs", "act", "state", "state", -1), "bad field 'rngs/act'"),
    ("rng-huge", _set("rngs", "act", "state", "state", 2**130), "bad field 'rngs/act'"),
    ("rng-float-inc", _set("rngs", "act", "state", "inc", 2.5), "bad field 'rngs/act'"),
    ("rng-has-uint32", _set("rngs", "act", "has_uint32", 7), "bad field 'rngs/act'"),
    ("rng-uinteger-float", _set("rngs", "act", "uinteger", 0.0), "bad field 'rngs/act'"),
    ("rng-no-state", _drop("rngs", "act", "state"), "bad field 'rngs/act'"),
    ("rng-not-dict", _set("rngs", "minibatch", 3), "bad field 'rngs/minibatch'"),
    # extras
    ("extra-list", _set("extra", []), "bad field 'extra': expected a dict"),
    ("extra-unknown", _set("extra", "gamma", 1), "bad field 'extra'"),
    ("beta-negative", _set("extra", "beta", -1.0), "bad field 'extra/beta'"),
    ("beta-nan", _set("extra", "beta", float("nan")), "bad field 'extra/beta'"),
    ("beta-str", _set("extra", "beta", "1"), "bad field 'extra/beta'"),
    ("beta-missing", _drop("extra", "beta"), "bad field 'extra/beta'"),
    ("obs-norm-missing", _drop("extra", "obs_norm"), "bad field 'extra/obs_norm'"),
    ("obs-norm-nan", _set("extra", "obs_norm", "mean", [0.0, float("nan"), 0.0]),
     "bad field 'extra/obs_norm'"),
    ("obs-norm-var", _set("extra", "obs_norm", "var", [1.0, -1.0, 1.0]),
     "bad field 'extra/obs_norm'"),
    ("obs-norm-count", _set("extra", "obs_norm", "count", -1), "bad field 'extra/obs_norm'"),
    ("obs-norm-lengths", _set("extra", "obs_norm", "var", [1.0, 1.0]),
     "bad field 'extra/obs_norm'"),
    ("obs-norm-str", _set("extra", "obs_norm", "mean", "abc"), "bad field 'extra/obs_norm'"),
    ("rew-scale-var", _set("extra", "rew_scale", "var", -0.5), "bad field 'extra/rew_scale'"),
    ("rew-scale-mean", _set("extra", "rew_scale", "mean", None), "bad field 'extra/rew_scale'"),
    ("rew-scale-missing", _drop("extra", "rew_scale"), "bad field 'extra/rew_scale'"),
    # optimizer scalars
    ("opt-t-negative", _set("opt_scalars", "policy", "t", -1), "'opt_scalars/policy/t'"),
    ("opt-t-float", _set("opt_scalars", "policy", "t", 1.5), "'opt_scalars/policy/t'"),
    ("opt-lr-zero", _set("opt_scalars", "critic", "lr", 0.0), "'opt_scalars/critic/lr'"),
    ("opt-lr-inf", _set("opt_scalars", "critic", "lr", float("inf")), "'opt_scalars/critic/lr'"),
    ("opt-scalars-missing", _drop("opt_scalars", "critic"), "bad field 'opt_scalars'"),
    # arrays
    ("returns-2d", _array("episode_returns", lambda a: a.reshape(1, -1)),
     "bad field 'episode_returns'"),
    ("returns-int", _array("episode_returns", lambda a: a.astype(np.int64)),
     "bad field 'episode_returns'"),
    ("returns-nan", _array("episode_returns", _nan_at_0), "bad field 'episode_returns'"),
    ("returns-missing", _array("episode_returns", None),
     "missing or bad field 'episode_returns'"),
    ("lengths-float", _array("episode_lengths", lambda a: a.astype(np.float64)),
     "bad field 'episode_lengths'"),
    ("lengths-shorter", _array("episode_lengths", lambda a: a[:-1]),
     "bad field 'episode_lengths'"),
    ("lengths-zero", _array("episode_lengths", lambda a: a * 0), "bad field 'episode_lengths'"),
    ("net-2d", _array("net/policy", lambda a: a.reshape(1, -1)), "bad field 'net/policy'"),
    ("net-int", _array("net/critic", lambda a: a.astype(np.int64)), "bad field 'net/critic'"),
    ("net-big-endian", _array("net/policy", lambda a: a.astype(">f4")), "bad field 'net/policy'"),
    ("net-nan", _array("net/policy", _nan_at_0), "holds NaN/inf parameters in network 'policy'"),
    ("net-inf", _array("net/critic", lambda a: a * np.inf),
     "holds NaN/inf parameters in network 'critic'"),
    ("opt-shape", _array("opt/policy", lambda a: a[:, :-1]), "bad field 'opt/policy'"),
    ("opt-3-rows", _array("opt/policy", lambda a: np.concatenate([a, a[:1]])),
     "bad field 'opt/policy'"),
    ("opt-dtype", _array("opt/policy", lambda a: a.astype(np.float64)), "bad field 'opt/policy'"),
    ("opt-nan", _array("opt/critic", _nan_at_0), "NaN/inf or negative Adam moments for 'critic'"),
    ("opt-negative-v", _array("opt/critic", lambda a: a * np.array([[1.0], [-1.0]], np.float32)
                              - np.array([[0.0], [1.0]], np.float32)),
     "negative Adam moments for 'critic'"),
    ("opt-without-net", _array("net/critic", None), "bad field 'opt/critic'"),
    ("stray-entry", lambda meta, arrays: arrays.update(foo=np.zeros(3)), "bad field 'entries'"),
    ("bool-entry", _array("net/policy", lambda a: a > 0), "not a plain number"),
    ("complex-entry", _array("net/policy", lambda a: a.astype(np.complex64)),
     "not a plain number"),
]


@pytest.mark.parametrize("edit, message", [c[1:] for c in FIELD_CASES],
                         ids=[c[0] for c in FIELD_CASES])
def test_every_bad_field_is_a_one_line_error_naming_file_and_field(good, tmp_path, edit, message):
    assert message in one_line_error(craft(good, tmp_path, edit))


def _resume(path):
    ck = load_checkpoint(path)
    cfg = dict(ck["config"])
    del cfg["algo"]
    return ppo.train(ppo.PPOConfig(**cfg), resume=ck)


RESTORE_CASES = [
    ("extra-network", lambda meta, arrays: arrays.update({"net/q": np.zeros(5, np.float32)}),
     "network 'q' is not one this config builds"),
    ("float64-network", lambda meta, arrays: arrays.update(
        {k: arrays[k].astype(np.float64) for k in ("net/policy", "opt/policy")}),
     "network 'policy' does not match the config (float64 (42,), expected float32 (42,))"),
    ("no-optimizer", lambda meta, arrays: (arrays.pop("opt/critic"),
                                           meta["opt_scalars"].pop("critic")),
     "no optimizer state for 'critic'"),
    ("rng-missing", _drop("rngs", "minibatch"), "no PCG64 state for the generator 'minibatch'"),
    ("obs-norm-length", lambda meta, arrays: meta["extra"]["obs_norm"].update(
        mean=[0.0] * 5, var=[1.0] * 5), "observation statistics of length 5, expected 3"),
]


@pytest.mark.parametrize("edit, message", [c[1:] for c in RESTORE_CASES],
                         ids=[c[0] for c in RESTORE_CASES])
def test_what_only_the_built_networks_can_check_is_checked_before_training(
        good, tmp_path, monkeypatch, edit, message):
    path = craft(good, tmp_path, edit)
    monkeypatch.setattr(ppo, "collect", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(UserError) as e:
        _resume(path)
    assert message in str(e.value) and str(path) in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_observation_statistics_of_another_length_are_refused_for_api_callers(good):
    ck = load_checkpoint(good)
    checkpoint.check_obs_norm_dim(ck, 3)  # Pendulum's observations
    with pytest.raises(UserError, match="observation statistics of length 3, expected 4"):
        checkpoint.check_obs_norm_dim(ck, 4)


def test_resume_of_a_crafted_checkpoint_is_one_line_on_the_cli(good, tmp_path, capsys):
    path = craft(good, tmp_path, _array("net/policy", _nan_at_0))
    assert main(["--resume", str(path.parent)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "holds NaN/inf parameters in network 'policy'" in err


def test_an_untouched_checkpoint_resumes(good, tmp_path):
    copy = tmp_path / "copy" / "checkpoint.npz"
    copy.parent.mkdir()
    copy.write_bytes(good.read_bytes())
    res = _resume(copy)  # budget 4 iterations, epoch 3 saved: nothing to do, but restored
    assert res.history == []


# ---------------------------------------------------------- pickles, huge claims, zip bombs


class Payload:
    """Unpickling this creates the marker file: what a crafted checkpoint could do if it were
    unpickled (any callable could stand in for open)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_is_refused_and_never_run(good, tmp_path):
    marker = tmp_path / "pwned"
    evil = np.empty(1, dtype=object)
    evil[0] = Payload(marker)
    path = craft(good, tmp_path, lambda meta, arrays: arrays.update({"net/policy": evil}))
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    assert not marker.exists()
    assert "has dtype object, not a plain number/str" in str(e.value)
    whole = tmp_path / "whole" / "checkpoint.npz"  # the whole file a pickle, not a zip
    whole.parent.mkdir()
    with open(whole, "wb") as f:
        np.save(f, evil, allow_pickle=True)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(whole)
    assert not marker.exists()
    # the payload is live: unpickling (what allow_pickle=True would do) creates the marker
    with np.load(path, allow_pickle=True) as z:
        z["net/policy"]
    assert marker.exists()


def _npy_header(shape, descr="<f8") -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False,
                                             "shape": shape})
    return f.getvalue()


def _with_member(good, tmp_path, name, data, compress=zipfile.ZIP_STORED) -> Path:
    """A copy of the good checkpoint with the entry `name` replaced by raw bytes."""
    out = tmp_path / "raw" / "checkpoint.npz"
    out.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename != name:
                dst.writestr(info.filename, src.read(info))
        dst.writestr(name, data, compress_type=compress)
    return out


def test_a_header_claiming_a_huge_array_is_refused_before_allocating(good, tmp_path):
    # 10**12 float64 = 8 TB claimed by a 128-byte entry; np.load would allocate it first
    path = _with_member(good, tmp_path, "episode_returns.npy",
                        _npy_header((10**12,)) + bytes(64))
    msg = one_line_error(path)
    assert "claims shape (1000000000000,) of float64 (8000000000000 bytes) but holds 64" in msg


def test_a_compressed_entry_a_zip_bomb_is_refused_unread(good, tmp_path):
    bomb = _npy_header((2**21,)) + bytes(8 * 2**21)  # 16 MB of zeros, ~16 KB deflated
    path = _with_member(good, tmp_path, "episode_returns.npy", bomb, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    assert "'episode_returns.npy' is compressed (checkpoints are stored)" in one_line_error(path)


def test_a_directory_claiming_more_bytes_than_the_file_holds_is_refused(good, tmp_path):
    data = bytearray(good.read_bytes())
    cd = data.index(b"PK\x01\x02")  # the first central-directory entry: patch its sizes
    struct.pack_into("<II", data, cd + 20, 2**29, 2**29)  # compressed and uncompressed size
    path = tmp_path / "lie" / "checkpoint.npz"
    path.parent.mkdir()
    path.write_bytes(bytes(data))
    assert "claims 536870912 bytes (536870912 stored) in a file of" in one_line_error(path)


def test_an_entry_over_the_absolute_cap_is_refused(good, monkeypatch):
    monkeypatch.setattr(checkpoint, "MAX_MEMBER_BYTES", 100)
    assert "claims" in one_line_error(good)


@pytest.mark.parametrize("name, data, message", [
    ("meta.npy", b"[" * 100_000, "not a readable checkpoint"),  # not an .npy at all
    ("meta.npy", _npy_header((3,), "<f8") + bytes(24), "'meta.npy' is not a string"),
    ("net/policy.npy", _npy_header((-4,), "<f4"), "not a readable checkpoint"),
    ("net/policy.npy", _npy_header((2,), "|V8") + bytes(16), "not a plain number"),
    ("net/policy", b"hello", "entry 'net/policy' is not a .npy array"),
    # an unclosed brace: numpy's header parser raises tokenize's TokenError, not a ValueError
    ("episode_returns.npy", b"\x93NUMPY\x01\x00\x37\x00{'descr': '<f8', " + b" " * 37 + b"\n",
     "entry 'episode_returns.npy' has a bad .npy header"),
])
def test_malformed_entries_are_one_line_errors(good, tmp_path, name, data, message):
    assert message in one_line_error(_with_member(good, tmp_path, name, data))


def test_deeply_nested_json_is_a_one_line_error(good, tmp_path):
    path = tmp_path / "nested" / "checkpoint.npz"
    path.parent.mkdir()
    np.savez(path, meta=np.array("[" * 100_000 + "]" * 100_000))
    assert "not a readable checkpoint" in one_line_error(path)


def test_duplicate_entries_are_refused(good, tmp_path):
    path = tmp_path / "dup" / "checkpoint.npz"
    path.parent.mkdir()
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        with pytest.warns(UserWarning, match="Duplicate name"):
            dst.writestr("net/policy.npy", src.read("net/policy.npy"))
    assert "duplicate entries" in one_line_error(path)


# ------------------------------------------------------------------------------------ fuzzing


@settings(max_examples=8 * settings.default.max_examples, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_damaged_file_is_a_one_line_error_or_loads_unchanged(good, tmp_path_factory, data):
    """Truncate, flip or insert one byte anywhere: a one-line UserError, or (a flip in a byte the
    reader does not use) a load equal to the original in every field."""
    original = good.read_bytes()
    n = len(original)
    kind = data.draw(st.sampled_from(["truncate", "flip", "insert"]))
    if kind == "truncate":
        damaged = original[: data.draw(st.integers(0, n - 1))]
    elif kind == "flip":
        i = data.draw(st.integers(0, n - 1))
        damaged = original[:i] + bytes([original[i] ^ data.draw(st.integers(1, 255))]) + \
            original[i + 1:]
    else:
        i = data.draw(st.integers(0, n))
        damaged = original[:i] + bytes([data.draw(st.integers(0, 255))]) + original[i:]
    path = _fuzz_dir(tmp_path_factory) / "checkpoint.npz"
    path.write_bytes(damaged)
    try:
        got = load_checkpoint(path)
    except UserError as e:
        assert "\n" not in str(e), str(e)
        return
    assert same(got, load_checkpoint(good))


_FUZZ_DIR = []


def _fuzz_dir(factory) -> Path:
    if not _FUZZ_DIR:
        _FUZZ_DIR.append(factory.mktemp("fuzz"))
    return _FUZZ_DIR[0]


# --------------------------------------------------------------------------- writing the file


class _DiskFills:
    """A file whose write stores some bytes, then fails as a full disk does."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, b):
        self.f.write(bytes(b)[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_keeps_the_last_good_checkpoint_and_leaves_no_temp_file(
        good, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(good.read_bytes())
    ck = load_checkpoint(run)
    state = dict(nets={}, opts={}, rngs={}, runner=type("R", (), dict(
        env_steps=7, episode_returns=[], episode_lengths=[]))(), wall_s=0.0)
    monkeypatch.setattr(fileio, "open", lambda p, mode, **kw: _DiskFills(open(p, mode, **kw)),
                        raising=False)
    with pytest.raises(UserError) as e:
        save_checkpoint(run / "checkpoint.npz", config=ck["config"], epoch=9, **state)
    msg = str(e.value)
    assert "\n" not in msg and "could not write the checkpoint" in msg
    assert "No space left on device" in msg and "the last good checkpoint is kept" in msg
    assert (run / "checkpoint.npz").read_bytes() == good.read_bytes()
    assert not (run / "checkpoint.npz.tmp").exists()


def test_a_full_disk_mid_run_is_one_line_on_the_cli_and_keeps_epoch_1(tmp_path, monkeypatch,
                                                                       capsys):
    writes = {"n": 0}

    def fills_at_the_third(p, mode, **kw):  # counts checkpoint writes only (fileio writes more)
        if not str(p).endswith("checkpoint.npz.tmp"):
            return open(p, mode, **kw)
        writes["n"] += 1
        return (_DiskFills if writes["n"] == 3 else lambda f: f)(open(p, mode, **kw))

    monkeypatch.setattr(fileio, "open", fills_at_the_third, raising=False)
    import pgnumpy.train

    monkeypatch.setattr(pgnumpy.train, "CHECKPOINT_EVERY_S", 0.0)  # a write after every epoch
    run = tmp_path / "r"
    argv = ["--total-steps", "2048", "--num-envs", "8", "--steps-per-env", "64", "--quiet",
            "--target-return", "inf", "--out", str(run)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not write the checkpoint" in err, err
    assert load_checkpoint(run)["epoch"] == 1
    assert os.listdir(run) and not (run / "checkpoint.npz.tmp").exists()


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_the_write_defers_ctrl_c_until_the_block_ends():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_sigint():
            os.kill(os.getpid(), signal.SIGINT)
            done.append(1)  # still running: the signal was held
    assert done == [1] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_an_ignored_sigint_stays_ignored_during_the_write():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job starts
    try:
        with deferred_sigint():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # and no KeyboardInterrupt
    finally:
        signal.signal(signal.SIGINT, previous)
