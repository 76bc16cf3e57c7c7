"""`python -m pgnumpy.train`: train a policy and write its run directory.

With no flags it trains the default algorithm on CartPole-v1 until the mean return of the last
100 episodes reaches gymnasium's threshold (475), printing one row per epoch. Every field of the
chosen algorithm's config is a flag (`--algo simple_pg --help` lists simple_pg's).

The run directory (--out, default runs/ALGO-ENV-seedS-TIME) holds
    config.json       the algorithm and its full config
    progress.csv      one row per epoch (the console table)
    checkpoint.npz    the run's whole state at a completed epoch (written atomically: after
                      the first epoch, every 10 s, and when the run ends; see Checkpointer)
    learning_curve.png  with --plot only: drawing it costs ~0.4 s, a third of the default run's
                      whole process (matplotlib's import and render); `python -m pgnumpy.plot
                      RUN` draws it at any time
"""

from __future__ import annotations

import os

from pgnumpy import cli

if __name__ == "__main__":
    cli.guard_startup()  # Ctrl-C while numpy, numba and gymnasium load: one line

# Small matrices: one BLAS thread is faster than several fighting for 2 cores (set before numpy;
# training also pins it at run time, pgnumpy/algos/common.py::one_blas_thread).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import typing  # noqa: E402
from pathlib import Path  # noqa: E402

from pgnumpy import rundir  # noqa: E402
from pgnumpy.algos import ALGOS, load_checkpoint  # noqa: E402
from pgnumpy.algos.common import recent_mean  # noqa: E402
from pgnumpy.checkpoint import (  # noqa: E402
    snapshot,
    snapshot_arrays,
    write_checkpoint,
)
from pgnumpy.errors import UserError  # noqa: E402
from pgnumpy.fileio import atomic_write, check_no_symlink  # noqa: E402
from pgnumpy.logger import Logger, read_progress  # noqa: E402
from pgnumpy.rollout import check_run_env, env_spec  # noqa: E402

DEFAULT_ALGO = "ppo"  # the fastest reliable configuration on CartPole-v1 (README)
FLAG_NAMES = {"env_id": "env"}  # config field -> CLI flag, where they differ


_Parser = cli.ArgumentParser


def build_parser(algo: str) -> argparse.ArgumentParser:
    cfg_cls, _ = ALGOS[algo]
    module = sys.modules[cfg_cls.__module__]
    presets = getattr(module, "PRESETS", {})
    p = _Parser(
        prog="python -m pgnumpy.train",
        description=f"Train a policy-gradient agent. Flags below are {algo}'s "
        f"(see `--algo NAME --help` for the others: {', '.join(ALGOS)})."
        + (f" Tuned presets replace the defaults for: {', '.join(presets)} (see PRESETS in "
           f"{cfg_cls.__module__}); flags given still win." if presets else ""),
    )
    # flags default to SUPPRESS so that only what the user typed overrides a preset
    p.add_argument("--algo", default=DEFAULT_ALGO, choices=list(ALGOS),
                   help=f"algorithm (default: {DEFAULT_ALGO})")
    p.add_argument("--out", default=None, help="run directory (default: runs/ALGO-ENV-seedS-TIME)")
    p.add_argument("--quiet", action="store_true", help="no progress table")
    p.add_argument("--plot", action="store_true",
                   help="also draw learning_curve.png in the run directory (~0.4 s: matplotlib)")
    hints = typing.get_type_hints(cfg_cls)
    helps = field_help(module.__doc__ or "")
    for f in dataclasses.fields(cfg_cls):
        flag = "--" + FLAG_NAMES.get(f.name, f.name).replace("_", "-")
        kind = hints[f.name]
        text = f"{helps.get(f.name, f.name)} (default: {f.default})"
        if kind is bool:
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=text)
        elif f.name == "hidden":
            p.add_argument(flag, dest=f.name, type=_widths, default=argparse.SUPPRESS,
                           help=text + "; comma-separated widths, e.g. 64,64")
        else:
            args_ = typing.get_args(kind)  # X | None -> (X, NoneType)
            base = next(t for t in args_ if t is not type(None)) if args_ else kind
            parse = _optional(base) if type(None) in args_ else base
            p.add_argument(flag, dest=f.name, type=parse, default=argparse.SUPPRESS, help=text)
    return p


def field_help(doc: str) -> dict[str, str]:
    """Each field's description from the "Hyperparameters" list of the algorithm's docstring."""
    helps, lines = {}, doc.split("Hyperparameters", 1)[-1].splitlines()
    for line in lines:
        m = re.match(r"^ {4}(\w+(?:, \w+)*) {2,}(\S.*)$", line)
        if m:
            for name in m.group(1).split(", "):
                helps[name] = m.group(2)
        elif helps and line.startswith(" " * 8) and line.strip():
            last = list(helps)[-1]
            helps[last] += " " + line.strip()
    return helps


def _optional(base):
    def parse(s: str):
        return None if s.lower() == "none" else base(s)

    parse.__name__ = base.__name__
    return parse


def _widths(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in s.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def parse_args(argv: list[str] | None) -> tuple[str, object, argparse.Namespace]:
    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algo", default=DEFAULT_ALGO)
    algo = pre.parse_known_args(argv)[0].algo
    if algo not in ALGOS:
        raise UserError(f"unknown --algo {algo!r}; choose one of {', '.join(ALGOS)}")
    args = build_parser(algo).parse_args(argv)
    cfg_cls, _ = ALGOS[algo]
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cfg_cls)
             if hasattr(args, f.name)}
    env_id = given.get("env_id", cfg_cls.env_id)
    preset = getattr(sys.modules[cfg_cls.__module__], "PRESETS", {}).get(env_id, {})
    cfg = cfg_cls(**{**preset, **given})
    return algo, cfg, args


def preset_note(algo: str, env_id: str) -> str | None:
    """The line a run prints at its start when `env_id` has no tuned preset for `algo`: the
    defaults were tuned for CartPole-v1 and often fail elsewhere (LunarLander-v3 peaks near +16
    and falls back below -100 with them), so a user should know they are not tuned settings."""
    cfg_cls, _ = ALGOS[algo]
    module = sys.modules[cfg_cls.__module__]
    if env_id == cfg_cls.env_id or env_id in getattr(module, "PRESETS", {}):
        return None
    return (f"no tuned preset for {env_id}: using CartPole's defaults (see PRESETS in "
            f"{cfg_cls.__module__} and docs/presets.md for the tuned envs)")


def plot_learning_curve(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["env_steps"] for r in rows]
    y = [r["ep_return_mean"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, y)
    ax.set_xlabel("env steps")
    ax.set_ylabel("mean return, last 100 episodes")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


CHECKPOINT_EVERY_S = 10.0


class Checkpointer:
    """The `on_epoch` of a run: after every epoch, the run's state copied in memory (~0.1 ms,
    checkpoint.snapshot); written to disk atomically (~1 ms) after the first epoch, then
    at most every `every` seconds, and by flush() when the run ends, however it ends (finished,
    solved, Ctrl-C, a non-finite loss). So an interrupted run loses at most the epoch in progress,
    as when every epoch was written, and a killed one (SIGKILL, power) at most `every` seconds.
    Writing after every epoch cost ~12% of the default CartPole run's training time."""

    def __init__(self, path: Path, config: dict, every: float = CHECKPOINT_EVERY_S):
        self.path, self.config, self.every = path, config, every
        self.pending: dict | None = None  # the last completed epoch's snapshot, not yet written
        self.written_at = -float("inf")

    def __call__(self, epoch: int, state: dict) -> None:
        self.pending = snapshot(config=self.config, epoch=epoch, **state)
        if time.monotonic() - self.written_at >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.pending is not None:
            # taken before the write: a failed write (a full disk) is not retried by the flush at
            # the run's end, so the checkpoint on disk is the one its error line says is kept
            snap, self.pending = self.pending, None
            write_checkpoint(self.path, snapshot_arrays(snap))
            self.written_at = time.monotonic()


BUDGET_FLAGS = {"total_steps": "--total-steps", "epochs": "--epochs",
                "target_return": "--target-return"}  # what --resume may change: how long to go


def holds_legacy_run(path: Path) -> bool:
    """A run directory a pgnumpy older than the run marker wrote: a config.json naming one of our
    algorithms, or a checkpoint.npz (read as JSON, or not at all: nothing in the directory is
    executed; --resume then reads the checkpoint and says what, if anything, is wrong with it)."""
    try:
        saved = json.loads((path / "config.json").read_text())
        return isinstance(saved, dict) and saved.get("algo") in ALGOS
    except (OSError, ValueError):
        return (path / "checkpoint.npz").is_file() and not (path / "checkpoint.npz").is_symlink()


def claim_run(out: Path) -> rundir.RunDir:
    """Claim `out` for a training run (pgnumpy/rundir.py): ours, or refused in one line; locked."""
    return rundir.claim(out, "train", adopt=holds_legacy_run, what="run")


def start_fresh(out: Path, config: dict) -> None:
    """Write a new run's config.json into the claimed `out`. A directory that holds a checkpoint
    holds a run, which is never overwritten; one with config.json but no checkpoint is a start
    that ended before its first epoch (Ctrl-C, an unknown env, the memory check): nothing of it
    can be lost, so it starts over."""
    refuse_a_run(out)
    check_run_files(out)
    (out / "progress.csv").unlink(missing_ok=True)  # rows of a start that had no checkpoint
    atomic_write(out / "config.json", json.dumps(config, indent=2) + "\n")


def refuse_a_run(out: Path) -> None:
    if (out / "checkpoint.npz").exists():
        raise UserError(f"{out} already holds a run: continue it with --resume {out}, or give "
                        "another --out")


def check_run_files(out: Path) -> None:
    """Refuse, before anything is read or written, a run file (or its temp file) that is a
    symlink: pgnumpy writes only real files inside the run directory (pgnumpy/fileio.py)."""
    for name in ("config.json", "progress.csv", "checkpoint.npz", "learning_curve.png"):
        check_no_symlink(out / name)
        check_no_symlink(out / f"{name}.tmp")


def budget_epochs(cfg) -> int:
    """The number of epochs (iterations) a config's budget runs, as each algorithm counts them."""
    if hasattr(cfg, "epochs"):
        return cfg.epochs
    return max(1, cfg.total_steps // (cfg.num_envs * cfg.steps_per_env))


class StopRun(Exception):
    """Raised after an epoch's checkpoint when `run`'s should_stop() says so (a sweep stopping)."""


def run(algo: str, cfg, out: Path, quiet: bool = False, resume: dict | None = None,
        should_stop=None, plot: bool = False, run_dir: rundir.RunDir | None = None):
    """Train `cfg` with `algo`, writing the run directory `out` (and learning_curve.png if
    `plot`); returns the TrainResult. `out` is claimed and locked for the run (rundir.claim),
    unless the caller already holds `run_dir`.

    should_stop: called after each epoch's checkpoint; True stops the run there (StopRun), so
    that a run stopped from outside loses nothing and continues with --resume."""
    cfg.validate()
    own = run_dir is None
    if own:
        if resume is None:
            refuse_a_run(out)  # before the claim, so that a refusal touches nothing
        run_dir = claim_run(out)
    try:
        return _run(algo, cfg, out, quiet, resume, should_stop, plot)
    finally:
        if own:
            run_dir.release()


def _run(algo, cfg, out, quiet, resume, should_stop, plot):
    config = {"algo": algo, **dataclasses.asdict(cfg)}
    if resume is None:
        start_fresh(out, config)
    elif json.loads(json.dumps(config)) != resume["config"]:  # --resume extended the budget
        atomic_write(out / "config.json", json.dumps(config, indent=2) + "\n")
    _, train_fn = ALGOS[algo]
    checkpointer = Checkpointer(out / "checkpoint.npz", config, CHECKPOINT_EVERY_S)

    def on_epoch(epoch: int, state: dict) -> None:
        checkpointer(epoch, state)
        if should_stop is not None and should_stop():  # written by the flush below: nothing lost
            raise StopRun(f"stopped after epoch {epoch}")

    logger = Logger(out, quiet=quiet, append=int(resume["epoch"]) if resume is not None else False)
    try:
        result = train_fn(cfg, logger, on_epoch=on_epoch, resume=resume)
    finally:  # the end, Ctrl-C, a non-finite loss: the last completed epoch goes to disk now
        logger.close()
        checkpointer.flush()
    if plot and result.history:
        title = f"{algo} on {cfg.env_id}"
        plot_learning_curve(logger.read_all(), out / "learning_curve.png", title)
    return result


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--resume" in argv:
        out = resume_dir(argv)
        with claim_run(out) as run_dir:  # locked before the checkpoint is read: one process
            algo, cfg, resume, quiet, plot = parse_resume(argv, out)
            if resume is not None and (done := nothing_to_do(cfg, resume, out)):
                print(f"nothing to do: {done}")
                return 0
            return _train(algo, cfg, out, resume, quiet, plot, run_dir)
    algo, cfg, args = parse_args(argv)
    note = preset_note(algo, cfg.env_id)
    if note is not None:  # stdout: stderr stays the one line of an error
        print(note, flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/{algo}-{cfg.env_id}-seed{cfg.seed}-{stamp}")
    return _train(algo, cfg, out, None, args.quiet, args.plot, None)


def _train(algo, cfg, out, resume, quiet, plot, run_dir) -> int:
    try:
        result = run(algo, cfg, out, quiet, resume, plot=plot, run_dir=run_dir)
    except (KeyboardInterrupt, Exception) as e:  # also an error raised while handling one (numba)
        if not cli.is_interrupt(e):
            raise
        if (out / "checkpoint.npz").exists():
            where = (f"; the last completed epoch's checkpoint is in {out}/ (continue with "
                     f"--resume {out})")
        else:
            where = (f"; no epoch had completed, so there is no checkpoint: the same command, or "
                     f"--resume {out}, starts the run again")
        print(f"\ninterrupted{where}", file=sys.stderr)
        return cli.INTERRUPTED
    if not result.history:
        print(f"nothing to do: the run in {out}/ had already finished its budget")
        return 0
    last = result.history[-1]
    if result.solved_at is not None:
        s = result.solved_at
        print(f"solved: mean return of the last 100 episodes {s['ep_return_mean']:.1f} "
              f"after {s['env_steps']} env steps, {s['wall_s']:.2f} s")
    else:
        print(f"finished: mean return of the last 100 episodes {last['ep_return_mean']:.1f} "
              f"after {last['env_steps']} env steps, {last['wall_s']:.2f} s")
    print(f"run written to {out}/" + ("" if plot else f" (draw its learning curve: python -m "
                                          f"pgnumpy.plot {out})"))
    return 0


def nothing_to_do(cfg, resume: dict, out: Path) -> str | None:
    """Why resuming `cfg` from `resume` would train nothing (its budget spent, or its target
    return reached), with the flag that extends it; None if there is work left."""
    done = int(resume["epoch"]) + 1
    if done >= budget_epochs(cfg):
        flag = "--epochs" if hasattr(cfg, "epochs") else "--total-steps"
        return (f"the run in {out}/ has finished its budget ({done} epochs, "
                f"{int(resume['env_steps'])} env steps); extend it with --resume {out} "
                f"{flag} N, N larger")
    returns = resume["episode_returns"]
    target = cfg.target_return
    if target is None:
        spec = env_spec(cfg.env_id)
        target = float("inf") if spec.reward_threshold is None else float(spec.reward_threshold)
    if len(returns) and recent_mean(list(returns)) >= target:
        return (f"the run in {out}/ reached its target return ({recent_mean(list(returns)):.1f} "
                f">= {target:g}, the mean of the last 100 episodes); train on past it with "
                f"--resume {out} --target-return inf")
    return None


def main(argv: list[str] | None = None) -> int:
    """The command: every error one line (pgnumpy/cli.py), Ctrl-C exit status 130."""
    return cli.entry(_main, argv)


def resume_dir(argv: list[str]) -> Path:
    """The run directory `--resume` names: one that holds a run (refused in one line if not)."""
    p = _Parser(prog="python -m pgnumpy.train --resume", add_help=False)
    p.add_argument("--resume", required=True)
    out = Path(p.parse_known_args(argv)[0].resume)
    if not out.is_dir():
        raise UserError(f"no checkpoint at {out}: no such directory")
    if not any((out / f).exists() for f in ("checkpoint.npz", "config.json")):
        raise UserError(f"no checkpoint at {out}: it holds no checkpoint.npz or config.json, so "
                        "it is not a run directory")
    check_run_files(out)
    return out


def parse_resume(argv: list[str], out: Path):
    """`--resume RUN_DIR [--quiet] [--plot] [--total-steps N | --epochs N] [--target-return R]`:
    continue a run with its saved config, its budget extended by the flags given. A run whose
    start ended before its first checkpoint starts again from its config.json."""
    p = _Parser(prog="python -m pgnumpy.train --resume")
    p.add_argument("--resume", required=True)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--plot", action="store_true", help="also draw learning_curve.png")
    p.add_argument("--import", dest="import_module", default=None,
                   help="import this module for a run trained on a module:EnvId env")
    p.add_argument("--total-steps", type=int, default=None, help="a new, larger budget")
    p.add_argument("--epochs", type=int, default=None, help="a new, larger budget")
    p.add_argument("--target-return", type=_optional(float), default=argparse.SUPPRESS,
                   help="a new target return (inf: never stop early)")
    args, rest = p.parse_known_args(argv)
    if rest:
        raise UserError(f"--resume continues a run with its saved config; drop {' '.join(rest)} "
                        f"(only {', '.join(BUDGET_FLAGS.values())} may change)")
    if (out / "checkpoint.npz").exists():
        ckpt = load_checkpoint(out)
        saved = dict(ckpt["config"])
        saved = check_config_json(out, saved)
    else:  # a start that ended before its first epoch: its config.json is all there is
        ckpt = None
        saved = read_config_json(out)
    check_run_env(str(saved.get("env_id")), args.import_module, str(out))
    if ckpt is not None and (out / "progress.csv").exists():
        read_progress(out / "progress.csv")  # a damaged file: refused now, not at the first row
    algo = saved.pop("algo", None)
    if algo not in ALGOS:
        raise UserError(f"{out} names an unknown algorithm {algo!r}")
    cfg_cls, _ = ALGOS[algo]
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    for name, flag in BUDGET_FLAGS.items():
        value = getattr(args, name, None) if name != "target_return" else vars(args).get(name, ...)
        if value is None or value is ...:
            continue
        if name not in fields:
            raise UserError(f"{flag}: {algo} has no {name} (its budget is "
                            f"{'--epochs' if 'epochs' in fields else '--total-steps'})")
        saved[name] = value
    try:
        cfg = cfg_cls(**saved)
    except TypeError as e:
        raise UserError(f"the config in {out} does not fit {algo}: {e}") from None
    cfg.validate()
    if ckpt is not None and budget_epochs(cfg) < int(ckpt["epoch"]) + 1 and (
            args.total_steps is not None or args.epochs is not None):
        raise UserError(f"the run in {out}/ has already trained {int(ckpt['epoch']) + 1} epochs "
                        f"({int(ckpt['env_steps'])} env steps): a budget can only grow")
    return algo, cfg, ckpt, args.quiet, args.plot


def read_config_json(out: Path) -> dict:
    """config.json of a run that never wrote a checkpoint, checked to be a dict naming an algo."""
    path = out / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is damaged ({e}) and {out} holds no checkpoint: start a new run "
                        "with the same command and another --out") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path} is not a pgnumpy config (a JSON object expected)")
    return saved


def with_added_defaults(older: dict, config: dict) -> dict:
    """`older` (a config.json an earlier pgnumpy wrote) with the fields a newer pgnumpy added
    (fused, sde, say) taken from `config` where `config` holds their default: absent from the
    older file, they are not another setting. Both as JSON holds them (tuples as lists)."""
    if config.get("algo") not in ALGOS:
        return older
    defaults = {f.name: f.default for f in dataclasses.fields(ALGOS[config["algo"]][0])}
    return older | {k: config[k] for k in set(config) - set(older)
                    if k in defaults and json.loads(json.dumps(defaults[k])) == config[k]}


def check_config_json(run_dir: Path, saved: dict) -> dict:
    """A run continues with its checkpoint's config; a config.json edited by hand would be
    silently ignored, so it is refused instead, naming the first field that differs. Only the
    budget (BUDGET_FLAGS) may differ: a --resume that extended it writes config.json first and
    its checkpoint at its first epoch; config.json's budget is the latest. Returns the config."""
    path = run_dir / "config.json"
    if not path.exists():
        return saved
    try:
        on_disk = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is damaged ({e}); the checkpoint holds the run's config: "
                        "restore config.json or remove it") from None
    saved = json.loads(json.dumps(saved))  # tuples as lists, as they are on disk
    if isinstance(on_disk, dict):
        saved |= {k: on_disk[k] for k in BUDGET_FLAGS if k in saved and k in on_disk}
    if isinstance(on_disk, dict):
        on_disk = with_added_defaults(on_disk, saved)
    if on_disk != saved:
        keys = sorted(set(on_disk) | set(saved) if isinstance(on_disk, dict) else saved)
        k = next((k for k in keys if not isinstance(on_disk, dict)
                  or on_disk.get(k) != saved.get(k)), "?")
        got = on_disk.get(k) if isinstance(on_disk, dict) else on_disk
        raise UserError(f"{path} differs from the run's checkpoint ({k}: {got!r} in config.json, "
                        f"{saved.get(k)!r} in the checkpoint); a run continues with the config it "
                        "was trained with: restore config.json, or start a new run")
    return saved


if __name__ == "__main__":
    cli.exit_now(main())  # sys.exit, without the ~0.2 s teardown of numba's modules
