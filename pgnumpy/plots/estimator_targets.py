"""What the training code's estimators really estimate, exactly, on small MDPs: two tables for
derivations/03-reward-to-go.md and derivations/variance.md.

    python -m pgnumpy.plots.estimator_targets

1. The forms that drop gamma^t (rtg, rtg - b, Q, A, GAE) estimate g_1, the policy-gradient sum
   over UNdiscounted state visits (RTG.3-4), not grad J_gamma: how far apart they are as gamma
   falls, on one 4-state MDP (closed form, no time limit).
2. pg_loss's per-step mean over a batch of B whole episodes is a ratio estimator (EX.6): its exact
   expectation against grad J / E[L], on one 2-state MDP with episodes of 1-3 steps.
"""

from __future__ import annotations

import numpy as np

from pgnumpy.exact import (
    EpisodicMDP,
    alive_distributions,
    capped_values,
    discounted_visits,
    mean_estimate,
    probs,
    stationary_values,
    tabular_policy,
    weighted_direction,
)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def discounting_table(gammas=(1.0, 0.99, 0.9, 0.8, 0.5), seed: int = 0) -> list[tuple]:
    """(gamma, cos(g_1, grad J), ||g_1 / |g_1| - grad J / |grad J|||) on one 4-state MDP."""
    rng = np.random.default_rng(seed)
    base = EpisodicMDP.random(rng, 4, 2, 1.0, 1)
    base.p_term[:] = rng.uniform(0.02, 0.1, base.p_term.shape)  # long episodes: ~10-50 steps
    pol = tabular_policy(base, rng)
    pi = probs(pol, base.S)
    rows = []
    for gamma in gammas:
        mdp = EpisodicMDP(base.mu, base.P, base.p_term, base.r, gamma, 1)
        _, Q = stationary_values(mdp, pi)
        grad_J = weighted_direction(pol, discounted_visits(mdp, pi, gamma)[None], pi, Q)
        g_1 = weighted_direction(pol, discounted_visits(mdp, pi, 1.0)[None], pi, Q)
        unit = np.linalg.norm(g_1 / np.linalg.norm(g_1) - grad_J / np.linalg.norm(grad_J))
        rows.append((gamma, cos(g_1, grad_J), unit))
    return rows


def ratio_table(batches=(1, 4, 16, 64), seed: int = 5) -> tuple[float, list[tuple]]:
    """E[L] and (B, cos(E[mean], grad J), ||E[L] E[mean] - grad J|| / ||grad J||) for R(tau)."""
    rng = np.random.default_rng(seed)
    mdp = EpisodicMDP.random(rng, 2, 2, 1.0, 3)
    pol = tabular_policy(mdp, rng)
    pi = probs(pol, mdp.S)
    grad_J = weighted_direction(pol, alive_distributions(mdp, pi), pi, capped_values(mdp, pi)[1])
    rows, EL = [], None
    for B in batches:
        mean, EL = mean_estimate(mdp, pol, "return", B)
        rows.append((B, cos(mean, grad_J),
                     float(np.linalg.norm(EL * mean - grad_J) / np.linalg.norm(grad_J))))
    return EL, rows


def main() -> None:
    print("| gamma | cos(g_1, grad J_gamma) | distance of the unit vectors |")
    print("|---|---|---|")
    for gamma, c, u in discounting_table():
        print(f"| {gamma} | {c:.4f} | {u:.3f} |")
    EL, rows = ratio_table()
    print(f"\nE[L] = {EL:.4f} steps per episode\n")
    print("| episodes per batch B | cos(E[mean], grad J) | relative error of E[L] E[mean] |")
    print("|---|---|---|")
    for B, c, e in rows:
        print(f"| {B} | {c:.6f} | {e:.4f} |")


if __name__ == "__main__":
    main()
