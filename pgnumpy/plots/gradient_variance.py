"""Exact variance of each gradient estimator, and Monte Carlo error against batch size.

    python -m pgnumpy.plots.gradient_variance [--out plots/gradient_variance.png]

On one small tabular MDP (every trajectory enumerated, pgnumpy/exact.py): the exact
tr Cov of each Phi form gives the line E||g_n - grad J||^2 = Var / n for a batch of n
trajectories; the points are sampled batches (mean over repeats). A biased estimator (a baseline
that depends on the action) levels off at its squared bias instead of falling. Also prints, over
300 random MDPs, how often reward-to-go and the V baseline reduce the variance.
"""

from __future__ import annotations

import argparse

import numpy as np

from pgnumpy.exact import (
    TabularMDP,
    enumerate_trajectories,
    estimator,
    exact_grad,
    exact_values,
    exact_variance,
    probs,
    tabular_policy,
    variances,
)


def how_often(n: int = 300) -> tuple[float, float, int]:
    """Fraction of random MDPs where rtg < R(tau) and rtg - V < rtg in variance."""
    rtg_better = base_better = total = 0
    for seed in range(n):
        rng = np.random.default_rng(10_000 + seed)
        S, A, H = int(rng.integers(1, 4)), int(rng.integers(2, 4)), int(rng.integers(2, 4))
        if (S * A) ** H > 3000:
            continue
        mdp = TabularMDP.random(rng, S, A, H, 1.0)
        v = variances(mdp, tabular_policy(mdp, rng, scale=float(rng.uniform(0.1, 3))))
        total += 1
        rtg_better += v["reward-to-go"] <= v["R(tau)"]
        base_better += v["rtg - V"] <= v["reward-to-go"]
    return rtg_better / total, base_better / total, total


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="plots/gradient_variance.png")
    args = p.parse_args(argv)

    rng = np.random.default_rng(7)
    mdp = TabularMDP.random(rng, 3, 2, 4, 1.0)
    mdp.r = mdp.r + 2.0  # positive rewards, as CartPole's: R(tau) is large and noisy
    pol = tabular_policy(mdp, rng)
    pi = probs(pol, mdp.S)
    traj = enumerate_trajectories(mdp, pi)
    grad = exact_grad(mdp, pol)
    V, Q = exact_values(mdp, pi)
    t, s, a = np.arange(mdp.H)[:, None], traj.states, traj.actions
    B = rng.normal(0, 2, (mdp.S, mdp.A))
    forms = {
        "R(tau)": ("return", {}),
        "reward-to-go": ("rtg", {}),
        "rtg - V": ("rtg-baseline", {"val": V[t, s]}),
        "A = Q - V": ("q", {"q_sa": Q[t, s, a] - V[t, s]}),
        "rtg - b(s, a)  (biased)": ("rtg-baseline", {"val": B[s, a]}),
    }
    sizes = 2 ** np.arange(0, 11)
    repeats = 300

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    print(f"MDP: S={mdp.S} A={mdp.A} H={mdp.H}, {len(traj.prob)} trajectories, "
          f"||grad J||^2 = {grad @ grad:.4g}")
    print(f"{'Phi form':26s} {'tr Cov (exact)':>15s} {'bias^2':>10s}")
    for label, (name, kw) in forms.items():
        per_traj, mean = estimator(mdp, pol, traj, name, **kw)
        var = exact_variance(per_traj, traj.prob, mean)  # around its own mean
        bias2 = float((mean - grad) @ (mean - grad))
        print(f"{label:26s} {var:15.4g} {bias2:10.3g}")
        line = var / sizes + bias2
        (h,) = ax.loglog(sizes, line, label=f"{label}: Var = {var:.3g}")
        err = []
        for n in sizes:
            idx = rng.choice(len(traj.prob), size=(repeats, n), p=traj.prob)
            g = per_traj[idx].mean(axis=1)
            err.append(np.mean(np.sum((g - grad) ** 2, axis=1)))
        ax.loglog(sizes, err, "o", color=h.get_color(), ms=4)
    ax.set_xlabel("batch size n (trajectories)")
    ax.set_ylabel("E || g_n - grad J ||^2")
    ax.set_title("Exact lines Var/n (+ bias^2), sampled points (mean of 300 batches)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    frac_rtg, frac_base, total = how_often()
    print(f"over {total} random MDPs: reward-to-go had variance <= R(tau) in {frac_rtg:.0%}; "
          f"rtg - V <= rtg in {frac_base:.0%}")


if __name__ == "__main__":
    main()
