"""The seed's experiment over 5 seeds: the return climbs, and the surrogate "loss" climbs with it.

    python -m pgnumpy.plots.simple_pg_loss_vs_return [--seeds 5] [--out PNG]

Runs simple_pg with the study note's settings (MLP [32], Adam 1e-2, >= 5000 steps per epoch,
50 epochs, Phi = R(tau)) on CartPole-v1 for each seed, prints per seed the mean return of epochs
46-50 and the Spearman rank correlation between loss and return over the epochs, then the median,
and draws both curves per seed.
"""

from __future__ import annotations

import argparse
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from pgnumpy.algos.simple_pg import SimplePGConfig, train  # noqa: E402


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Rank correlation (ties get distinct ranks; returns here are real-valued means)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--out", default="plots/simple_pg_loss_vs_return.png")
    args = p.parse_args(argv)

    runs = []
    for seed in range(args.seeds):
        h = train(SimplePGConfig(seed=seed, epochs=args.epochs)).history
        ret = np.array([r["return"] for r in h])
        loss = np.array([r["loss"] for r in h])
        rho = spearman(loss, ret)
        tail = float(ret[-5:].mean())
        print(f"seed {seed}: mean return of epochs {len(h) - 4}-{len(h)} = {tail:7.1f}   "
              f"last-100-episode mean = {h[-1]['ep_return_mean']:6.1f}   "
              f"spearman(loss, return) = {rho:+.3f}   wall {h[-1]['wall_s']:.1f} s", flush=True)
        runs.append((ret, loss, tail, rho))
    tails = [r[2] for r in runs]
    print(f"median over {len(runs)} seeds of the mean return of the last 5 epochs: "
          f"{np.median(tails):.1f}; rank correlation > 0 in {sum(r[3] > 0 for r in runs)}"
          f"/{len(runs)} seeds")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for seed, (ret, loss, _, rho) in enumerate(runs):
        ep = np.arange(len(ret))
        ax1.plot(ep, ret, label=f"seed {seed}")
        ax2.plot(ep, loss, label=f"seed {seed} (rank corr. {rho:+.2f})")
    ax1.set(xlabel="epoch", ylabel="mean episode return in the epoch",
            title="Return climbs ...")
    ax2.set(xlabel="epoch", ylabel="surrogate loss  -mean(logp * R(tau))",
            title="... and so does the 'loss'")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Simplest policy gradient on CartPole-v1 (the study note's settings)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
