"""The LLM-RL loss options, exactly: the table and figure of derivations/14-rlhf-losses.md.

    python -m pgnumpy.plots.rlhf_losses [--out plots/rlhf_losses.png] [--no-figure]

On the enumerated toy of pgnumpy/exact_seq.py (a 5-token TinyLM, cap 3, 40 sentences; pi, pi_ref
two random tiny LMs, r ~ N(0, 1), beta = 0.3), every row is named by the option a reader sets in
TRL or verl, and reports the exact E[g] against grad J_beta (cos, scale = ||E g|| / ||grad J||,
bias = ||E g - grad J|| / ||grad J||), the exact tr Cov of one group's estimate, and tr Cov at
grad J's scale (tr Cov / scale^2, comparable across rows). Then: the bias split into its parts,
how cos moves with k, the cap and beta, mu steps on one batch, and DPO / IPO against pi*.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from pgnumpy import exact_losses as E
from pgnumpy import exact_seq as X
from pgnumpy.plots.rlhf_exact import toy_gold
from pgnumpy.rlhf import dpo as D

F = E.Form
GRPO_AXES = dict(baseline="mean")  # TRL's and verl's group forms subtract the group mean

# (row name, library, Form, groups per batch): one axis varied at a time from GRPO-style
# defaults (group-mean baseline, no std scaling, k1 in the reward), so each row shows its own axis
ROWS: list[tuple[str, str, E.Form, int]] = [
    ("grpo", "TRL loss_type", F(agg="grpo", **GRPO_AXES), 1),
    ("bnpo (micro-batch 1)", "TRL loss_type", F(agg="bnpo", micro=1, **GRPO_AXES), 1),
    ("bnpo (one micro-batch)", "TRL loss_type", F(agg="bnpo", **GRPO_AXES), 1),
    ("dr_grpo", "TRL loss_type", F(agg="dr_grpo", **GRPO_AXES), 1),
    ("dapo", "TRL loss_type", F(agg="dapo", **GRPO_AXES), 1),
    ("token-mean", "verl loss_agg_mode", F(agg="token-mean", **GRPO_AXES), 1),
    ("seq-mean-token-sum", "verl loss_agg_mode", F(agg="seq-mean-token-sum", **GRPO_AXES), 1),
    ("seq-mean-token-mean", "verl loss_agg_mode", F(agg="seq-mean-token-mean", **GRPO_AXES), 1),
    ("seq-mean-token-sum-norm", "verl loss_agg_mode",
     F(agg="seq-mean-token-sum-norm", **GRPO_AXES), 1),
    ("scale_rewards=group", "TRL scale_rewards", F(scale="group", **GRPO_AXES), 1),
    ("scale_rewards=batch (2 groups)", "TRL scale_rewards", F(scale="batch", **GRPO_AXES), 2),
    ("scale_rewards=none", "TRL scale_rewards", F(scale="none", **GRPO_AXES), 1),
    ("rloo (KL inside the baseline)", "OpenRLHF #515 / TRL", F(), 1),
    ("rloo (KL outside the baseline)", "OpenRLHF #515", F(kl_in_baseline=False), 1),
]
for _kl in ("k1", "k2", "k3", "abs", "full"):
    _alias = {"k2": "k2 (mse)", "k3": "k3 (low_var_kl)"}.get(_kl, _kl)
    ROWS.append((f"{_alias} in reward", "verl kl_penalty / TRL #4967", F(kl=_kl), 1))
for _kl in ("k1", "k2", "k3", "abs", "full"):
    _alias = {"k2": "k2 (mse)", "k3": "k3 (low_var_kl)"}.get(_kl, _kl)
    ROWS.append((f"{_alias} in loss", "verl kl_loss_type / TRL beta",
                 F(kl=_kl, kl_place="loss"), 1))
ROWS.append(("k3 (low_var_kl) x ratio in loss", "DeepSeek-V3.2 / TRL PR #4638",
             F(kl="k3", kl_place="loss", kl_ratio=True), 1))
HEADLINE = {  # the forms whose cos is followed over k, the cap and beta (sweep)
    "rloo, k1 in reward": F(),
    "grpo (TRL default axes: std, k3 in loss)": F(agg="grpo", scale="group", kl="k3",
                                                   kl_place="loss", baseline="mean"),
    "dapo / token-mean": F(agg="dapo", baseline="mean"),
    "dr_grpo": F(agg="dr_grpo", baseline="mean"),
    "k3 in loss (rloo)": F(kl="k3", kl_place="loss"),
}


SAME_AGG = {"token-mean": "dapo", "seq-mean-token-mean": "grpo",
            "seq-mean-token-sum-norm": "dr_grpo"}  # one weighting under two names (LOSS.1)


def matrix(w: E.World, ks=(2, 3, 4)) -> list[tuple[str, str, dict[int, E.Row]]]:
    """Every row at every k; the rows that are one form under two names (dapo = token-mean,
    grpo = seq-mean-token-mean, ...) computed once. The 2-group batch-scaling row at k = 2 only
    (672,400 batches), the KL rows at k = 2 and 4 (with the leave-one-out baseline their mean
    does not depend on k, RLX.5)."""
    out, cache = [], {}
    for name, lib, form, groups in ROWS:
        kk = (2,) if groups > 1 else ((2, 4) if form.baseline == "loo" else ks)
        rows = {}
        for k in kk:
            key = (replace(form, agg=SAME_AGG.get(form.agg, form.agg)), k, groups)
            if key not in cache:
                cache[key] = E.row(w, E.form_moments(w, form, k, groups))
            rows[k] = cache[key]
        out.append((name, lib, rows))
    return out


def sweep(ks=(2, 3, 4), caps=(2, 3, 4), betas=(0.1, 0.3, 1.0)) -> dict[str, dict]:
    """cos(E g, grad J) of the headline forms over k (cap 3, beta 0.3), over the cap (k = 2,
    beta 0.3) and over beta (k = 2, cap 3)."""
    res: dict[str, dict] = {name: {"k": {}, "cap": {}, "beta": {}} for name in HEADLINE}
    w = E.world()
    for name, form in HEADLINE.items():
        for k in ks:
            res[name]["k"][k] = E.row(w, E.form_moments(w, form, k)).cos
    for cap in caps:
        wc = E.world(max_len=cap)
        for name, form in HEADLINE.items():
            res[name]["cap"][cap] = E.row(wc, E.form_moments(wc, form, 2)).cos
    for beta in betas:
        wb = E.world(beta=beta)
        for name, form in HEADLINE.items():
            res[name]["beta"][beta] = E.row(wb, E.form_moments(wb, form, 2)).cos
    return res


MU_FORMS = {"rloo, k1 in reward": F(), "rloo, k2 in loss": F(kl="k2", kl_place="loss"),
            "rloo, k3 in loss": F(kl="k3", kl_place="loss"),
            "rloo, k3 x ratio in loss": F(kl="k3", kl_place="loss", kl_ratio=True)}


def mu_table(w: E.World, mus=(1, 2, 4), lr: float = 0.005) -> dict[str, dict]:
    """E[theta_mu - theta_0] against mu exact-gradient steps at the same lr, groups of k = 2:
    (bias, cos, scale) with PPO's clip 0.2 and without a clip."""
    out = {}
    exact = {mu: E.exact_steps(w, mu, lr) for mu in mus}
    for name, form in MU_FORMS.items():
        for clip in (0.2, 1e9):
            key = f"{name}, clip {'0.2' if clip < 1 else 'off'}"
            out[key] = {}
            upd = E.mu_step_update(w, form, 2, mus, lr, clip)
            for mu, d in upd.items():
                ex = exact[mu]
                rel, cos = X.report(d, ex)
                out[key][mu] = (rel, cos, float(np.linalg.norm(d) / np.linalg.norm(ex)))
    return out


# ---- DPO and IPO --------------------------------------------------------------------------------


def free_optimum(logp_ref: np.ndarray, wins: np.ndarray, losses_: np.ndarray,
                 weight: np.ndarray, beta: float, algo: str, steps: int = 3000,
                 lr: float = 0.05) -> np.ndarray:
    """The minimiser of an (empirical or population) pair loss over all distributions on the
    sentences: Adam on free logits z, log pi = log softmax(z) (dL/dz = g - pi sum g)."""
    from pgnumpy.optim import Adam

    z = logp_ref.copy()
    opt = Adam(z, lr=lr)
    for _ in range(steps):
        logp = z - np.logaddexp.reduce(z)
        u = logp - logp_ref
        _, du_w, du_l = D.pair_loss(u[wins], u[losses_], beta, algo, weight)
        g = np.zeros_like(z)
        np.add.at(g, wins, du_w)
        np.add.at(g, losses_, du_l)
        opt.step(g - np.exp(logp) * g.sum())
    return z - np.logaddexp.reduce(z)


def dpo_section(beta: float = 0.3) -> dict:
    """DPO / IPO against pi*, all on the enumerated toy."""
    w = E.world()
    y, logp_ref = w.y, w.sp.logp_ref
    out: dict = {}
    # 1. infinite Bradley-Terry data on r: DPO's population loss is stationary at pi*
    P = E.bt_probs(w.r)
    logp_star, _ = X.optimum(logp_ref, w.r, beta)
    _, g = E.population_pair_loss(logp_star, logp_ref, P, beta, "dpo")
    out["stationarity"] = float(np.abs(g).max())
    ref32 = X.tiny_lm(np.random.default_rng(0), hidden=(32,), out_scale=4.0)
    lr32 = X.space(ref32, ref32, y).logp
    ls32, _ = X.optimum(lr32, w.r, beta)
    lm = E.population_ascent(ref32, y, P, beta, "dpo", 1500)
    out["optimiser_kl"] = X.kl(X.space(lm, ref32, y).logp, ls32)
    out["optimiser_kl0"] = X.kl(lr32, ls32)
    # 2. near-deterministic preferences on the toy gold reward: labeller temperature tau
    gold = toy_gold(y)
    out["tau"] = {}
    ls_gold, _ = X.optimum(logp_ref, gold, beta)
    for tau in (1.0, 0.5, 0.1, 0.02):
        Pg = E.bt_probs(gold, tau)
        ld, _ = X.optimum(logp_ref, gold / tau, beta)  # DPO's population optimum (DPO.3)
        li = E.ipo_optimum(logp_ref, Pg, beta)  # IPO's (DPO.4)
        out["tau"][tau] = {
            algo: {"kl_ref": X.kl(lp, logp_ref), "kl_star": X.kl(lp, ls_gold),
                   "gold": float(np.exp(lp) @ gold)}
            for algo, lp in (("dpo", ld), ("ipo", li))}
    out["star"] = {"kl_ref": X.kl(ls_gold, logp_ref), "gold": float(np.exp(ls_gold) @ gold)}
    return out


def overopt_curves(n_pairs: int = 300, tau: float = 0.5) -> dict[str, np.ndarray]:
    """Gold gain against d = sqrt(KL(pi || pi_ref)) over beta: the RL optimum for a proxy reward
    model learned from n_pairs noisy pairs (rlhf_exact's), and DPO / IPO's optimum over all
    distributions on the same n_pairs pairs (the empirical loss, free logits)."""
    from pgnumpy.plots.rlhf_exact import proxy_reward

    y = X.sentences()
    ref = X.tiny_lm(np.random.default_rng(0), hidden=(32,), out_scale=4.0)
    logp_ref = X.space(ref, ref, y).logp
    gold = toy_gold(y)
    g0 = float(np.exp(logp_ref) @ gold)
    proxy = proxy_reward(ref, n_pairs, np.random.default_rng(5)).score(y)
    # the same kind of pairs for DPO: sampled from pi_ref, labelled by Bradley-Terry on gold
    rng = np.random.default_rng(7)
    p = np.exp(logp_ref)
    a, b = rng.choice(len(y), n_pairs, p=p / p.sum()), rng.choice(len(y), n_pairs, p=p / p.sum())
    a_wins = rng.random(n_pairs) < E.bt_probs(gold, tau)[a, b]
    wins, loses = np.where(a_wins, a, b), np.where(a_wins, b, a)
    betas = np.geomspace(3.0, 0.02, 12)
    curves = {"rl": [], "dpo": [], "ipo": []}
    for beta in betas:
        ls, _ = X.optimum(logp_ref, proxy, beta)
        curves["rl"].append((np.sqrt(X.kl(ls, logp_ref)), float(np.exp(ls) @ gold) - g0))
        for algo in ("dpo", "ipo"):
            lp = free_optimum(logp_ref, wins, loses, None, beta, algo, steps=1500)
            curves[algo].append((np.sqrt(max(X.kl(lp, logp_ref), 0.0)),
                                 float(np.exp(lp) @ gold) - g0))
    return {k: np.array(v) for k, v in curves.items()} | {"betas": betas}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="plots/rlhf_losses.png")
    ap.add_argument("--no-figure", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    w = E.world()
    print(f"world: 40 sentences, beta {w.beta}, ||grad J|| {np.linalg.norm(w.grad):.3f}")
    print(f"\n{'row':34s} {'option of':27s} {'k':>2s} {'cos':>8s} {'scale':>7s} {'bias':>9s} "
          f"{'tr Cov':>8s} {'Cov@1':>8s}")
    mat = matrix(w)
    for name, lib, by_k in mat:
        for k, r in by_k.items():
            print(f"{name:34s} {lib:27s} {k:2d} {r.cos:8.5f} {r.scale:7.4f} {r.rel:9.3e} "
                  f"{r.var:8.3f} {r.var_at_scale:8.3f}")
    print("\nbias split into its parts (k = 2; ||part|| / ||grad J||; the parts add up exactly)")
    parts_of = {"grpo (TRL default axes)": HEADLINE["grpo (TRL default axes: std, k3 in loss)"],
                "bnpo, micro-batch 1": F(agg="bnpo", micro=1, baseline="mean"),
                "dapo": F(agg="dapo", baseline="mean")}
    for name, form in parts_of.items():
        parts = E.bias_parts(w, form, 2)
        total = sum(parts.values())
        print(f"  {name:26s} " + "  ".join(
            f"{p} {np.linalg.norm(v) / np.linalg.norm(w.grad):.3f}" for p, v in parts.items())
            + f"  | total {np.linalg.norm(total) / np.linalg.norm(w.grad):.3f}")
    print("\ncos(E g, grad J) over k (cap 3, beta 0.3) | cap (k 2) | beta (k 2)")
    sw = sweep()
    for name, d in sw.items():
        print(f"  {name:42s} " + " ".join(f"{v:.4f}" for v in d["k"].values()) + " | "
              + " ".join(f"{v:.4f}" for v in d["cap"].values()) + " | "
              + " ".join(f"{v:.4f}" for v in d["beta"].values()))
    print("\nmu steps on one batch (k = 2, lr 0.005, plain gradient steps) against mu exact-"
          "gradient steps: bias, cos, scale at mu = 1 / 2 / 4")
    mu = mu_table(w)
    for name, d in mu.items():
        print(f"  {name:32s} " + "   ".join(f"{a:.4f} {b:.5f} {c:.4f}" for a, b, c in d.values()))
    print("\nDPO / IPO (beta = 0.3)")
    ds = dpo_section()
    print(f"  dpo: infinite Bradley-Terry data: max |dL/dlog pi(y)| at pi* = "
          f"{ds['stationarity']:.2e}; Adam on the TinyLM, 1500 steps: KL(pi || pi*) "
          f"{ds['optimiser_kl0']:.4f} -> {ds['optimiser_kl']:.2e}")
    print(f"  RLHF optimum pi* for gold: KL(pi* || pi_ref) {ds['star']['kl_ref']:.4f}, gold "
          f"{ds['star']['gold']:+.4f}")
    for tau, d in ds["tau"].items():
        print(f"  labeller tau {tau:5.2f}: " + "   ".join(
            f"{algo}: KL to pi_ref {v['kl_ref']:.4f}, KL to pi* {v['kl_star']:.4f}, gold "
            f"{v['gold']:+.4f}" for algo, v in d.items()))
    print(f"(tables: {time.perf_counter() - t0:.1f} s wall, {time.process_time():.1f} s CPU)")
    if args.no_figure:
        return
    curves = overopt_curves()
    for key in ("rl", "dpo", "ipo"):
        c = curves[key]
        top = int(np.argmax(c[:, 1]))
        print(f"gold against d = sqrt KL over beta 3 .. 0.02, {key}: peak {c[top, 1]:+.4f} at "
              f"d {c[top, 0]:.3f} (beta {curves['betas'][top]:.3g}); at beta 0.02: "
              f"{c[-1, 1]:+.4f} at d {c[-1, 0]:.3f}; at beta 3: {c[0, 1]:+.4f} at d {c[0, 0]:.3f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(21, 5.2))
    names = [n for n, _, _ in mat]
    for j, k in enumerate((2, 3, 4)):
        cos = [by_k.get(k, by_k.get(2)).cos for _, _, by_k in mat]
        ax[0].barh(np.arange(len(names)) + 0.27 * (j - 1), cos, height=0.27, label=f"k = {k}")
    ax[0].set(yticks=range(len(names)), xlim=(0.8, 1.005), xlabel="cos(E ĝ, ∇J_β)",
              title="direction: every row, exactly")
    ax[0].set_yticklabels(names, fontsize=7)
    ax[0].invert_yaxis()
    ax[0].legend(fontsize=7)
    for j, k in enumerate((2, 3, 4)):
        sc = [by_k.get(k, by_k.get(2)).scale for _, _, by_k in mat]
        ax[1].barh(np.arange(len(names)) + 0.27 * (j - 1), sc, height=0.27, label=f"k = {k}")
    ax[1].axvline(1.0, color="k", lw=0.6)
    ax[1].set(yticks=range(len(names)), xlabel="‖E ĝ‖ / ‖∇J_β‖", title="length (step size)")
    ax[1].set_yticklabels([])
    ax[1].invert_yaxis()
    for name, d in mu.items():
        ax[2].plot(list(d), [v[0] for v in d.values()], "o-" if "0.2" in name else "s--",
                   label=name)
    ax[2].set(xlabel="μ (steps on one batch)", ylabel="‖E Δθ − Δθ_exact‖ / ‖Δθ_exact‖",
              title="μ steps, lr 0.005, k = 2", xticks=[1, 2, 4])
    ax[2].legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    for key, style in (("rl", "s-"), ("dpo", "o-"), ("ipo", "^-")):
        c = curves[key]
        ax[3].plot(c[:, 0], c[:, 1], style, ms=4, label={
            "rl": "RL optimum π*_β on a proxy RM (300 pairs)",
            "dpo": "DPO, 300 pairs (gold BT, τ 0.5), 1500 Adam steps on free π",
            "ipo": "IPO, the same pairs and steps"}[key])
    ax[3].set(xlabel="d = √KL(π ‖ π_ref)", ylabel="gold − gold(π_ref)",
              title="gold against KL, β from 3 to 0.02")
    ax[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
