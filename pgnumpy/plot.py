"""`python -m pgnumpy.plot RUN_DIR [RUN_DIR ...]`: learning curves, seeds grouped by config.

Runs whose configs differ only in the seed form one group, drawn as the mean over seeds with a
+-1 std band, against env steps (left) and wall seconds (right); one legend entry per group,
named by what differs between the groups.

    python -m pgnumpy.plot runs/ppo-* runs/vpg-* --out curves.png [--show]
    python -m pgnumpy.plot RUN      # one run: RUN/learning_curve.png, as train --plot draws it

Without --out, one run's figure goes into its own run directory (learning_curve.png), never into
the working directory; several runs need --out.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np

from pgnumpy import cli
from pgnumpy.errors import UserError
from pgnumpy.fileio import atomic_write
from pgnumpy.logger import read_progress


def read_run(run_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{run_dir} is not a run directory (config.json, progress.csv): "
                        f"{' '.join(str(e).split())}") from None
    if not isinstance(config, dict) or "algo" not in config or "env_id" not in config:
        raise UserError(f"{run_dir}/config.json is not a pgnumpy run's config")
    if not (run_dir / "progress.csv").exists():
        raise UserError(f"{run_dir} is not a run directory: no progress.csv")
    rows = read_progress(run_dir / "progress.csv")
    if not rows:
        raise UserError(f"{run_dir}/progress.csv has no epochs yet")
    missing = {"env_steps", "wall_s", "ep_return_mean"} - set(rows[0])
    if missing:
        raise UserError(f"{run_dir}/progress.csv lacks the columns {', '.join(sorted(missing))}")
    cols = {k: np.array([r[k] for r in rows]) for k in ("env_steps", "wall_s", "ep_return_mean")}
    if not np.isfinite(cols["ep_return_mean"]).any():
        raise UserError(f"{run_dir} has no finished episode yet: nothing to plot")
    return config, cols


def check_out_path(out: str) -> None:
    """Before any run is read: a directory that exists and a format matplotlib writes."""
    from matplotlib.backend_bases import FigureCanvasBase

    p = Path(out)
    formats = FigureCanvasBase.get_supported_filetypes()
    if p.suffix[1:].lower() not in formats:
        raise UserError(f"--out {out}: unknown image type {p.suffix!r}; use one of "
                        f"{', '.join('.' + f for f in sorted(formats))}")
    if not p.parent.is_dir():
        raise UserError(f"--out {out}: the directory {p.parent} does not exist")


def group_runs(runs: list[tuple[dict, dict]]) -> dict[str, list[dict]]:
    """Group by config minus the seed; label each group by the keys that differ across groups."""
    unseeded = [{k: v for k, v in c.items() if k != "seed"} for c, _ in runs]
    unique = list({json.dumps(c, sort_keys=True): c for c in unseeded}.values())
    varying = sorted({f for c in unique for f in c
                      if len({json.dumps(o.get(f)) for o in unique}) > 1})
    groups: dict[str, list[dict]] = {}
    for c, (_, cols) in zip(unseeded, runs):
        label = ", ".join(f"{f}={c.get(f)}" for f in varying) or f"{c['algo']} on {c['env_id']}"
        groups.setdefault(label, []).append(cols)
    return groups


def band(xs: list[np.ndarray], ys: list[np.ndarray], n: int = 200):
    """Mean and std of runs interpolated on a common grid, up to where the shortest run ends."""
    grid = np.linspace(max(x[0] for x in xs), min(x[-1] for x in xs), n)
    Y = np.array([np.interp(grid, x, y) for x, y in zip(xs, ys)])
    return grid, Y.mean(axis=0), Y.std(axis=0)


def plot_runs(run_dirs: list[str], out: str, title: str | None = None, show: bool = False) -> None:
    import matplotlib

    if not show:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_runs([read_run(Path(d)) for d in run_dirs])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, runs in groups.items():
        for ax, xkey in zip(axes, ("env_steps", "wall_s")):
            ok = [r for r in runs if np.isfinite(r["ep_return_mean"]).any()]
            xs = [r[xkey][np.isfinite(r["ep_return_mean"])] for r in ok]
            ys = [r["ep_return_mean"][np.isfinite(r["ep_return_mean"])] for r in ok]
            x, m, s = band(xs, ys)
            line, = ax.plot(x, m, label=f"{label} ({len(runs)} seeds)")
            ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.2)
    for ax, xlabel in zip(axes, ("env steps", "wall seconds (training)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean return, last 100 episodes")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format=Path(out).suffix[1:].lower())
    atomic_write(out, buf.getvalue())
    if show:
        plt.show()
    plt.close(fig)


def _main(argv: list[str] | None) -> int:
    p = cli.ArgumentParser(prog="python -m pgnumpy.plot", description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default=None, help="image to write (.png, .pdf, ...); default with "
                   "one run: RUN/learning_curve.png")
    p.add_argument("--title", default=None)
    p.add_argument("--show", action="store_true", help="also open a window")
    args = p.parse_args(argv)
    if args.out is None:
        if len(args.run_dirs) > 1:
            raise UserError(f"{len(args.run_dirs)} runs in one figure: name the image with "
                            "--out FILE.png")
        args.out = str(Path(args.run_dirs[0]) / "learning_curve.png")
    check_out_path(args.out)
    plot_runs(args.run_dirs, args.out, args.title, args.show)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.entry(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
