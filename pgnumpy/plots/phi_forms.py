"""The five gradient forms Phi_t compared: VPG on CartPole-v1, 5 seeds each.

    python -m pgnumpy.plots.phi_forms [--seeds 5] [--epochs 60] [--out plots/phi_forms.png]

Every run has the same budget (no early stop), the same network and learning rates; only Phi
differs. Runs go to runs/phi_forms/ (kept, so `python -m pgnumpy.plot` can redraw them).
"""

from __future__ import annotations

import argparse
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from pathlib import Path  # noqa: E402

from pgnumpy.algos.vpg import VPGConfig  # noqa: E402
from pgnumpy.phi import PHI_FORMS  # noqa: E402
from pgnumpy.plot import plot_runs  # noqa: E402
from pgnumpy.train import run  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--runs", default="runs/phi_forms")
    p.add_argument("--out", default="plots/phi_forms.png")
    args = p.parse_args(argv)
    dirs = []
    for name in PHI_FORMS:
        for seed in range(args.seeds):
            out = Path(args.runs) / f"{name}-seed{seed}"
            r = run("vpg", VPGConfig(phi=name, seed=seed, epochs=args.epochs, target_return=None),
                    out, quiet=True)
            h = r.history[-1]
            print(f"phi={name:13s} seed {seed}: last-100 mean {h['ep_return_mean']:6.1f} after "
                  f"{h['env_steps']} steps, {h['wall_s']:.1f} s", flush=True)
            dirs.append(str(out))
    plot_runs(dirs, args.out, title=f"VPG on CartPole-v1: the gradient forms Phi_t "
              f"({args.seeds} seeds, mean +- std)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
