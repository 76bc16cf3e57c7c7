"""The PPO-clip objective against the ratio, drawn from the package's own `ppo_clip_loss`.

    python -m pgnumpy.plots.ppo_clip_objective [--eps 0.2] [--out plots/ppo_clip_objective.png]

Left: A > 0, the objective min(r A, (1 + eps) A) rises with r until 1 + eps, then is flat.
Right: A < 0, min(r A, (1 - eps) A) is flat below 1 - eps and falls with r above it. The dashed
line is the unclipped r A; the gradient (PPO.3) is r A where the curve follows it, 0 where flat.
"""

from __future__ import annotations

import argparse

import numpy as np

from pgnumpy.objectives import ppo_clip_loss


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eps", type=float, default=0.2)
    p.add_argument("--out", default="plots/ppo_clip_objective.png")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = np.linspace(0.01, 2.0, 400)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, A in zip(axes, (1.0, -1.0)):
        # one sample per ratio: the objective is -loss, and d objective / d logp = -n dlogp
        obj, slope = [], []
        for ri in r:
            loss, dlogp, _ = ppo_clip_loss(np.array([np.log(ri)]), np.array([0.0]),
                                           np.array([A]), args.eps)
            obj.append(-loss)
            slope.append(-dlogp[0])
        ax.plot(r, r * A, "--", color="gray", label="unclipped r A")
        ax.plot(r, obj, lw=2.5, label="L(r, A) = min(r A, g(eps, A))")
        ax.plot(r, slope, ":", lw=2, label="d L / d log pi  (PPO.3)")
        for x in (1 - args.eps, 1 + args.eps):
            ax.axvline(x, color="k", lw=0.6, alpha=0.4)
        ax.axvline(1.0, color="k", lw=0.6, ls="-.", alpha=0.4)
        ax.set(xlabel="ratio r = pi / pi_old", title=f"A = {A:+.0f}  (eps = {args.eps})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("PPO-clip objective, from pgnumpy.objectives.ppo_clip_loss")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
