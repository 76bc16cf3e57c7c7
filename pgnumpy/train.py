"""`python -m pgnumpy.train`: train a policy and write its run directory.

With no flags it trains the default algorithm on CartPole-v1 until the mean return of the last
100 episodes reaches gymnasium's threshold (475), printing one row per epoch. Every field of the
chosen algorithm's config is a flag (`--algo simple_pg --help` lists simple_pg's).

The run directory (--out, default runs/ALGO-ENV-seedS-TIME) holds
    config.json       the algorithm and its full config
    progress.csv      one row per epoch (the console table)
    checkpoint.npz    the networks' parameters after the last completed epoch (written atomically)
    learning_curve.png
"""

from __future__ import annotations

import os

# Small matrices: one BLAS thread is faster than several fighting for 2 cores (set before numpy).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import typing  # noqa: E402
from pathlib import Path  # noqa: E402

from pgnumpy.algos import ppo, simple_pg, trpo, vpg  # noqa: E402
from pgnumpy.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from pgnumpy.errors import UserError  # noqa: E402
from pgnumpy.logger import Logger  # noqa: E402

ALGOS = {
    "ppo": (ppo.PPOConfig, ppo.train),
    "vpg": (vpg.VPGConfig, vpg.train),
    "trpo": (trpo.TRPOConfig, trpo.train),
    "simple_pg": (simple_pg.SimplePGConfig, simple_pg.train),
}
DEFAULT_ALGO = "ppo"  # the fastest reliable configuration on CartPole-v1 (README)
FLAG_NAMES = {"env_id": "env"}  # config field -> CLI flag, where they differ


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, non-zero exit, no usage dump
        raise UserError(message)


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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(algo: str, cfg, out: Path, quiet: bool = False, resume: dict | None = None):
    """Train `cfg` with `algo`, writing the run directory `out`; returns the TrainResult."""
    out.mkdir(parents=True, exist_ok=True)
    config = {"algo": algo, **dataclasses.asdict(cfg)}
    if resume is None:
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    _, train_fn = ALGOS[algo]

    def on_epoch(epoch: int, state: dict) -> None:
        save_checkpoint(out / "checkpoint.npz", config=config, epoch=epoch, **state)

    logger = Logger(out, quiet=quiet, append=int(resume["epoch"]) if resume is not None else False)
    result = train_fn(cfg, logger, on_epoch=on_epoch, resume=resume)
    if result.history:
        title = f"{algo} on {cfg.env_id}"
        plot_learning_curve(logger.read_all(), out / "learning_curve.png", title)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = None
    try:
        if "--resume" in argv:
            algo, cfg, out, resume, quiet = parse_resume(argv)
        else:
            algo, cfg, args = parse_args(argv)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path(args.out or f"runs/{algo}-{cfg.env_id}-seed{cfg.seed}-{stamp}")
            resume, quiet = None, args.quiet
        result = run(algo, cfg, out, quiet, resume)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = f"; the last completed epoch's checkpoint is in {out}/" if out else ""
        print(f"\ninterrupted{where} (continue with --resume {out})", file=sys.stderr)
        return 130
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
    print(f"run written to {out}/")
    return 0


def parse_resume(argv: list[str]):
    """`--resume RUN_DIR [--quiet]`: continue a run with its saved config."""
    p = _Parser(prog="python -m pgnumpy.train --resume")
    p.add_argument("--resume", required=True)
    p.add_argument("--quiet", action="store_true")
    args, rest = p.parse_known_args(argv)
    if rest:
        raise UserError(f"--resume continues a run with its saved config; drop {' '.join(rest)}")
    out = Path(args.resume)
    ckpt = load_checkpoint(out)
    saved = dict(ckpt["config"])
    algo = saved.pop("algo", None)
    if algo not in ALGOS:
        raise UserError(f"checkpoint in {out} names an unknown algorithm {algo!r}")
    cfg_cls, _ = ALGOS[algo]
    try:
        cfg = cfg_cls(**saved)
    except TypeError as e:
        raise UserError(f"checkpoint config in {out} does not fit {algo}: {e}") from None
    return algo, cfg, out, ckpt, args.quiet


if __name__ == "__main__":
    sys.exit(main())
