"""The RLHF run's figures, drawn from its metrics (pipeline.run calls these)."""

from __future__ import annotations

import io
from pathlib import Path

from pgnumpy.fileio import atomic_write


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def lm_figure(rows: list[dict], summary: dict, path: Path) -> None:
    """Pretraining: train and held-out cross-entropy against the grammar's exact bounds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    step = [r["step"] for r in rows]
    ax.plot(step, [r["train_ce"] for r in rows], "o-", label="train CE (mean since last point)")
    ax.plot(step, [r["heldout_ce"] for r in rows], "s-", label="held-out CE")
    ax.axhline(summary["context_floor"], color="C2", ls="--",
               label=f"best possible with its window: {summary['context_floor']:.4f}")
    ax.axhline(summary["true_entropy"], color="k", ls=":",
               label=f"true entropy of the grammar: {summary['true_entropy']:.4f}")
    ax.set(xlabel="Adam step", ylabel="nats per token", title="Pretraining the tiny LM",
           ylim=(summary["true_entropy"] - 0.05, max(r["heldout_ce"] for r in rows) + 0.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(plt, fig, path)


def rm_figure(rows: list[dict], path: Path) -> None:
    """Reward model: accuracy on the noisy labels, train and held out, against the best any
    model can reach on the held-out labels."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    step = [r["step"] for r in rows]
    ax.plot(step, [r["train_acc"] for r in rows], "o-", label="train pairs")
    ax.plot(step, [r["heldout_acc"] for r in rows], "s-", label="held-out pairs")
    ax.axhline(rows[-1]["best_acc"], color="k", ls=":",
               label=f"best possible on these labels: {rows[-1]['best_acc']:.3f}")
    ax.axhline(0.5, color="gray", ls="--", label="chance")
    ax.set(xlabel="Adam step", ylabel="accuracy on the rater's labels",
           title="Reward model (Bradley-Terry)", ylim=(0.45, 0.85))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(plt, fig, path)


def overoptimisation_figure(runs: dict[str, list[dict]], path: Path) -> None:
    """Proxy (reward model) and gold reward against KL(pi || pi_ref), one curve per RL run:
    the over-optimisation picture (Gao et al., 2022) at toy scale."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, (name, rows) in enumerate(runs.items()):
        beta = rows[0]["beta"]
        label = f"beta {beta:g}" + (" (main run)" if name == "main" else "")
        kl = [r["kl"] for r in rows]
        c = f"C{i}"
        axes[0].plot(kl, [r["proxy"] for r in rows], ".-", color=c, alpha=0.7, label=label)
        axes[1].plot(kl, [r["gold"] for r in rows], ".-", color=c, alpha=0.7, label=label)
        axes[2].plot([r["iter"] for r in rows], [r["gold"] for r in rows], "-", color=c,
                     label=f"{label}: gold")
        axes[2].plot([r["iter"] for r in rows], [r["proxy"] for r in rows], ":", color=c,
                     label=f"{label}: proxy")
    axes[0].set(xlabel="KL(pi || pi_ref), nats per sentence", ylabel="reward model score",
                title="What RL optimises: the proxy")
    axes[1].set(xlabel="KL(pi || pi_ref), nats per sentence", ylabel="gold reward",
                title="What the rater thinks: the gold reward")
    axes[2].set(xlabel="RL iteration", ylabel="mean over the batch",
                title="Proxy (dotted) and gold (solid) by iteration")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(plt, fig, path)


def _save(plt, fig, path: Path) -> None:
    """Render to memory, then replace the file atomically, never through a link (fileio): a
    figure is whole or absent, and a link planted at its name is refused."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=100, format="png")
    finally:
        plt.close(fig)
    atomic_write(path, buf.getvalue())
