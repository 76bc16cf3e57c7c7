"""RLHF verified exactly: the tables and the figure of derivations/13-rlhf-exact.md.

    python -m pgnumpy.plots.rlhf_exact [--out plots/rlhf_exact.png] [--no-tables]

On the 5-token TinyLM with cap 3 (40 sentences, pgnumpy/exact_seq.py):
  1. every gradient form's exact bias (||E g - grad J|| / ||grad J||, cosine, scale) and tr Cov,
     k = 1 .. 4 (every group enumerated);
  2. exact-gradient ascent to pi* (KL(pi || pi*) against step) and PPO with sampled batches
     (finetune.rl_finetune at the tiny size) over seeds;
  3. best-of-n exactly: KL(pi_bon || pi_ref) against log n - (n-1)/n;
  4. over-optimisation: a proxy reward model (reward_model.py's network and Bradley-Terry loss)
     from limited noisy preferences, gold reward against d = sqrt(KL) for RL at its exact
     optimum over beta, along an exact-gradient run, and for best-of-n over n, with Gao et al.'s
     (2022) fits R_bon = d (a - b d), R_RL = d (a - b log d).
"""

from __future__ import annotations

import argparse

import numpy as np

from pgnumpy import exact_seq as X
from pgnumpy.optim import Adam
from pgnumpy.rlhf import finetune
from pgnumpy.rlhf.grammar import EOS, Grammar
from pgnumpy.rlhf.reward_model import RewardModel

BETA = 0.3


def estimator_table(max_k: int = 4) -> list[tuple]:
    """Rows (form, k, rel bias, cosine, scale, tr Cov) for the world of tests/test_rlhf_exact.py."""
    ref, lm = X.tiny_lm(np.random.default_rng(0)), X.tiny_lm(np.random.default_rng(1))
    y = X.sentences()
    sp = X.space(lm, ref, y)
    r = np.random.default_rng(2).normal(size=len(y))
    grad = X.exact_grad(lm, sp, r, BETA)
    Gt = X.token_grads(lm, y)
    one = X.Batches(np.arange(len(y))[:, None], sp.p)
    rows = []

    def add(name, k, m):
        rel, cos = X.report(m.mean, grad)
        rows.append((name, k, rel, cos, float(np.linalg.norm(m.mean) / np.linalg.norm(grad)),
                     m.var))

    rew = finetune.shaped_rewards(sp.logp_tok, sp.logp_ref_tok, sp.mask, r, BETA)
    V = X.exact_values(sp, rew)
    klt, Dt, dl = X.analytic_kl_direct(lm, ref, sp, BETA)
    for name, kw in [("reinforce (r - beta sum k1)", dict(form="reinforce")),
                     ("rtg, k1 in reward", dict(form="rtg_k1")),
                     ("rtg, k2 in reward", dict(form="rtg_k2")),
                     ("rtg, k3 in reward", dict(form="rtg_k3")),
                     ("GAE lam=0, exact V", dict(form="rtg_k1", lam=0.0, val=V)),
                     ("GAE lam=0.95, exact V", dict(form="rtg_k1", lam=0.95, val=V)),
                     ("r + k1 in loss", dict(form="loss_k1")),
                     ("r + k2 in loss", dict(form="loss_k2")),
                     ("r + k3 in loss", dict(form="loss_k3"))]:
        add(name, 1, X.moments(lm, sp, Gt, one, X.token_form_coef(sp, r, BETA, **kw)))
    add("r + analytic KL in loss", 1, X.moments(
        lm, sp, Gt, one, X.token_form_coef(sp, r, BETA, "loss_analytic"), (Dt, dl)))
    add("analytic KL-to-go + direct", 1, X.moments(
        lm, sp, Gt, one, X.token_form_coef(sp, r, BETA, "analytic", klt=klt), (Dt, dl)))
    adv, _ = finetune.advantages(rew, V, sp.mask, 0.95)
    for B in range(1, min(max_k, 3) + 1):
        bt = X.all_batches(sp.p, B)
        add("PPO token mean, GAE exact V", B, X.moments(lm, sp, Gt, bt,
                                                        X.whitened_coef(sp, adv, bt, False)))
        add("PPO as run: + whitened", B, X.moments(lm, sp, Gt, bt, X.whitened_coef(sp, adv, bt)))
    for k in range(2, max_k + 1):
        bt = X.all_batches(sp.p, k)
        for est in ("rloo", "dr_grpo", "grpo_nostd", "grpo"):
            for klp in ("reward", "k3_loss"):
                add(f"{est}, KL {'k1 in reward' if klp == 'reward' else 'k3 in loss'}", k,
                    X.moments(lm, sp, Gt, bt, X.group_coef(sp, r, BETA, bt, est, klp)))
    return rows


# ---- the toy gold reward and a proxy learned from it -------------------------------------------

WORD_GOLD = {2: 1.0, 3: 0.4, 4: -0.6}  # a, b, c: distinct words count once
CUT = -1.5  # a sentence cut at the cap (no <eos>)


def toy_gold(y: np.ndarray) -> np.ndarray:
    out = np.zeros(len(y))
    for i, row in enumerate(y):
        words = set(row[row != EOS].tolist())
        out[i] = sum(WORD_GOLD[w] for w in words) + CUT * (EOS not in row)
    return out


def proxy_reward(ref, pairs: int, rng: np.random.Generator, tau: float = 0.5,
                 steps: int = 400) -> RewardModel:
    """reward_model.py's RewardModel (context 3, fresh trunk), Bradley-Terry on `pairs` noisy
    preferences between sentences sampled from pi_ref (RLHF.7, RLHF.8), normalised (RLHF.9)."""
    y_a, y_b = ref.sample(pairs, rng, 3), ref.sample(pairs, rng, 3)
    g_a, g_b = toy_gold(y_a), toy_gold(y_b)
    a_wins = rng.random(pairs) < 1 / (1 + np.exp(-(g_a - g_b) / tau))
    y_w, y_l = np.where(a_wins[:, None], y_a, y_b), np.where(a_wins[:, None], y_b, y_a)
    rm = RewardModel(3, 4, (16,), rng=rng)
    opt = Adam(rm.params, lr=3e-3)
    for _ in range(steps):
        idx = rng.integers(0, pairs, 64)
        opt.step(rm.loss_and_grad(y_w[idx], y_l[idx])[1])
    rm.normalize(ref.sample(2000, rng, 3))
    return rm


class TableReward(RewardModel):
    """A reward model whose score is a given table over the enumerated sentences (the trainer
    reads only score(); clone() gives the value function a fresh network of the same shape)."""

    def __init__(self, y: np.ndarray, r: np.ndarray, rng: np.random.Generator):
        super().__init__(3, 4, (16,), rng=rng)
        self.table = {tuple(row): float(v) for row, v in zip(y, r)}

    def score(self, tokens: np.ndarray) -> np.ndarray:
        return np.array([self.table[tuple(row)] for row in tokens])


def exact_ascent(ref, y, r, beta, steps, lr=0.03, every=10):
    """Adam on the exact gradient from pi_ref; (steps, KL(pi || pi*), KL(pi || pi_ref), pi)."""
    lm = ref.clone()
    logp_star, _ = X.optimum(X.space(ref, ref, y).logp_ref, r, beta)
    opt = Adam(lm.params, lr=lr)
    rows = []
    for it in range(steps + 1):
        sp = X.space(lm, ref, y)
        if it % every == 0:
            rows.append((it, X.kl(sp.logp, logp_star), X.kl(sp.logp, sp.logp_ref), sp.p))
        opt.step(-X.exact_grad(lm, sp, r, beta))
    return rows


def ppo_final_kl(ref, y, r, beta, seeds, iterations=150, estimator="ppo"):
    """KL(pi || pi*) after finetune.rl_finetune with sampled batches, one value per seed."""
    logp_star, _ = X.optimum(X.space(ref, ref, y).logp_ref, r, beta)
    out = []
    for s in seeds:
        cfg = finetune.RLConfig(iterations=iterations, batch=64, max_len=3, beta=beta,
                                lr=3e-3, estimator=estimator)
        pol, _ = finetune.rl_finetune(cfg, ref, TableReward(y, r, np.random.default_rng(s)),
                                      Grammar(), np.random.default_rng(100 + s))
        out.append(X.kl(X.space(pol, ref, y).logp, logp_star))
    return out


def fit(d: np.ndarray, R: np.ndarray, kind: str) -> tuple[float, float, float]:
    """Least squares (a, b, rms residual) of R = d (a - b d) ("bon") or d (a - b log d) ("rl")."""
    keep = d > 0
    d, R = d[keep], R[keep]
    A = np.stack([d, -d * (d if kind == "bon" else np.log(d))], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, R, rcond=None)
    return float(a), float(b), float(np.sqrt(np.mean((A @ [a, b] - R) ** 2)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="plots/rlhf_exact.png")
    ap.add_argument("--no-tables", action="store_true")
    args = ap.parse_args(argv)
    if not args.no_tables:  # ~5 s
        print(f"{'form':38s} {'k':>2s} {'|bias|/|grad|':>14s} {'cos':>9s} {'scale':>7s} "
              f"{'tr Cov':>9s}")
        for name, k, rel, cos, scale, var in estimator_table():
            print(f"{name:38s} {k:2d} {rel:14.3e} {cos:9.6f} {scale:7.4f} {var:9.4f}")

    y = X.sentences()
    ref = X.tiny_lm(np.random.default_rng(0), hidden=(32,), out_scale=4.0)
    logp_ref = X.space(ref, ref, y).logp
    p_ref = np.exp(logp_ref)
    gold = toy_gold(y)

    # 3. the optimum reached: exact ascent on a random reward, and PPO sampled
    r = np.random.default_rng(2).normal(size=len(y))
    run = exact_ascent(ref, y, r, BETA, 1500)
    print(f"\nexact ascent: KL(pi || pi*) {run[0][1]:.4f} at step 0 -> {run[-1][1]:.3e} at "
          f"step {run[-1][0]}")
    ppo = {e: ppo_final_kl(ref, y, r, BETA, range(3), estimator=e) for e in ("ppo", "rloo")}
    for e, v in ppo.items():
        print(f"{e} with sampled batches (150 iterations of 64): final KL(pi || pi*) "
              f"{', '.join(f'{x:.4f}' for x in v)} (seeds 0, 1, 2)")

    # 4. best-of-n exactly (on the gold reward, which has ties)
    ns = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256])
    kl_bon = np.array([X.kl(X.best_of_n(logp_ref, gold, n), logp_ref) for n in ns])
    bound = np.log(ns) - (ns - 1) / ns
    print("\nbest-of-n on gold: n, KL exact, log n - (n-1)/n, gold")
    for n, k, b in zip(ns, kl_bon, bound):
        print(f"  {n:4d} {k:8.4f} {b:8.4f} {np.exp(X.best_of_n(logp_ref, gold, n)) @ gold:+.4f}")

    # 5. over-optimisation with a proxy from limited preferences
    rm = proxy_reward(ref, 300, np.random.default_rng(5))
    proxy = rm.score(y)
    g0 = float(p_ref @ gold)
    c = np.cov(proxy, gold, aweights=p_ref)
    print(f"\nproxy from 300 pairs: corr(proxy, gold) under pi_ref "
          f"{c[0, 1] / np.sqrt(c[0, 0] * c[1, 1]):.3f}; gold under pi_ref {g0:+.4f}; "
          f"best gold {gold.max():+.2f}")
    betas = np.geomspace(3.0, 0.01, 25)
    rl_beta = []
    for b in betas:
        ls, _ = X.optimum(logp_ref, proxy, b)
        rl_beta.append((np.sqrt(X.kl(ls, logp_ref)), float(np.exp(ls) @ gold) - g0,
                        float(np.exp(ls) @ proxy)))
    rl_beta = np.array(rl_beta)
    traj = exact_ascent(ref, y, proxy, 0.01, 400, every=5)
    rl_run = np.array([(np.sqrt(max(k, 0.0)), float(p @ gold) - g0) for _, _, k, p in traj])
    bon = np.array([(np.sqrt(max(X.kl(lb, logp_ref), 0.0)), float(np.exp(lb) @ gold) - g0)
                    for lb in (X.best_of_n(logp_ref, proxy, n) for n in range(1, 200))])
    fits = {"bon": fit(bon[:, 0], bon[:, 1], "bon"), "rl (over beta)":
            fit(rl_beta[:, 0], rl_beta[:, 1], "rl"), "rl (one run)": fit(*rl_run.T, "rl")}
    for name, (a, b, res) in fits.items():
        print(f"fit {name:15s} a {a:+.4f}  b {b:+.4f}  rms residual {res:.4f}")
    print(f"RL over beta: gold peaks at d = {rl_beta[np.argmax(rl_beta[:, 1]), 0]:.3f} "
          f"(+{rl_beta[:, 1].max():.4f}), ends at d = {rl_beta[-1, 0]:.3f} "
          f"({rl_beta[-1, 1]:+.4f}); best-of-n peaks at d = {bon[np.argmax(bon[:, 1]), 0]:.3f}"
          f" (+{bon[:, 1].max():.4f}), ends at d = {bon[-1, 0]:.3f} ({bon[-1, 1]:+.4f})")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(16, 4.6))
    steps = [row[0] for row in run]
    ax[0].semilogy(steps, [row[1] for row in run], label="exact gradient (Adam)")
    for e, v in ppo.items():
        ax[0].scatter([steps[-1]] * len(v), v, marker="x" if e == "ppo" else "o",
                      label=f"{e}, sampled: final KL (3 seeds)")
    ax[0].set(xlabel="step", ylabel="KL(π ‖ π*)", title=f"reaching π* ∝ π_ref e^(r/β), β={BETA}")
    ax[0].legend(fontsize=8)
    ax[1].plot(ns, kl_bon, "o-", label="exact (ties in gold)")
    ax[1].plot(ns, bound, "--", label="log n − (n−1)/n")
    ax[1].set(xscale="log", xlabel="n", ylabel="KL(π_bon ‖ π_ref)", title="best-of-n, exactly")
    ax[1].legend(fontsize=8)
    dd = np.linspace(1e-3, max(bon[:, 0].max(), rl_beta[:, 0].max()), 200)
    ax[2].plot(bon[:, 0], bon[:, 1], "o", ms=3, label="best-of-n, n = 1..199")
    ax[2].plot(rl_beta[:, 0], rl_beta[:, 1], "s", ms=4, label="RL optimum π*_β, β = 3..0.01")
    ax[2].plot(rl_run[:, 0], rl_run[:, 1], "-", lw=1, label="one exact RL run, β = 0.01")
    a, b, _ = fits["bon"]
    ax[2].plot(dd, dd * (a - b * dd), "k--", lw=0.8, label="fit d(α − βd)")
    a, b, _ = fits["rl (over beta)"]
    ax[2].plot(dd, dd * (a - b * np.log(dd)), "k:", lw=1, label="fit d(α − β log d)")
    ax[2].set(xlabel="d = √KL(π ‖ π_ref)", ylabel="gold − gold(π_ref)",
              title="over-optimisation of a proxy from 300 pairs")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
