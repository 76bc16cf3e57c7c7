"""The five gradient forms Phi_t compared: VPG on CartPole-v1, 5 seeds each, run as a sweep.

    python -m pgnumpy.plots.phi_forms [--seeds 5] [--epochs 60] [--out plots/phi_forms.png]

Every run has the same budget and stops at the same target, the same network and learning
rates; only Phi differs. The runs are a `pgnumpy.sweep` grid over phi (on Ray: the cores here,
or a cluster with --address) into runs/phi_forms/, kept, so rerunning skips what finished and
`python -m pgnumpy.plot` can redraw them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pgnumpy import cli
from pgnumpy.phi import PHI_FORMS
from pgnumpy.plot import check_out_path, plot_runs
from pgnumpy.sweep import run_sweep


def _main(argv: list[str] | None) -> int:
    p = cli.ArgumentParser(prog="python -m pgnumpy.plots.phi_forms",
                           description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--runs", default="runs/phi_forms", help="the sweep directory")
    p.add_argument("--out", default="plots/phi_forms.png")
    p.add_argument("--address", default=None, help="a Ray cluster (default: Ray on this machine)")
    p.add_argument("--workers", type=int, default=None, help="runs at once (default: the cores)")
    args = p.parse_args(argv)
    check_out_path(args.out)
    result = run_sweep("vpg", Path(args.runs), grid=[f"phi={','.join(PHI_FORMS)}"],
                       sets=[f"epochs={args.epochs}"], seeds=args.seeds, metric="return",
                       address=args.address, workers=args.workers, plot=False)
    plot_runs(result.run_dirs(), args.out, title=f"VPG on CartPole-v1: the gradient forms "
              f"Phi_t ({args.seeds} seeds, mean +- std)")
    print(f"wrote {args.out}")
    return 1 if result.failed else 0


def main(argv: list[str] | None = None) -> int:
    return cli.entry(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
