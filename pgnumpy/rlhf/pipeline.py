"""The whole RLHF pipeline, stage by stage, writing a run directory.

    from pgnumpy.rlhf.pipeline import RLHFConfig, run
    summary = run(RLHFConfig(seed=0), out="runs/rlhf")        # or `python -m pgnumpy.rlhf`

Stages (each writes its checkpoint, an .npz with no pickled objects, written atomically):
    lm   pretrain the language model on the grammar's corpus          -> lm.npz, lm.csv
    rm   label pairs from it, train and normalise the reward model   -> rm.npz, rm.csv
    rl   PPO under the KL penalty at cfg.rl.beta (the main run), then  -> rl.npz, rl.csv,
         the same from the same start at each of sweep_betas             rl_beta_B.csv
Then the figures and samples.txt (sentences before and after RL). `from_stage="rm"` reloads
lm.npz from the run directory and reruns from there; every stage draws from its own seeded
stream, so a rerun from a checkpoint gives what the full run gave.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgnumpy.checkpoint import read_npz
from pgnumpy.config import check_choice, check_int, check_range
from pgnumpy.errors import UserError
from pgnumpy.fileio import atomic_write
from pgnumpy.rlhf.dpo import dpo_finetune
from pgnumpy.rlhf.finetune import ESTIMATORS, KL_PENALTIES, RLConfig, rl_finetune
from pgnumpy.rlhf.grammar import Grammar, gold_reward, to_words
from pgnumpy.rlhf.lm import LMConfig, TinyLM, pretrain
from pgnumpy.rlhf.losses import check_loss_fields
from pgnumpy.rlhf.reward_model import RewardModel, RMConfig, preference_pairs, train_reward_model

STAGES = ("lm", "rm", "rl")
FORMAT = "pgnumpy-rlhf-1"


@dataclass
class RLHFConfig:
    """seed: every stage's random stream derives from it; sweep_betas: extra RL runs (fixed
    beta, same start, same length as the main run) for the over-optimisation figure."""

    seed: int = 0
    lm: LMConfig = field(default_factory=LMConfig)
    rm: RMConfig = field(default_factory=RMConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    sweep_betas: tuple[float, ...] = (0.2, 0.01, 0.0)

    def __post_init__(self):
        self.sweep_betas = tuple(float(b) for b in self.sweep_betas)
        check_int("seed", self.seed, lo=0)
        for b in self.sweep_betas:
            check_range("sweep_betas", b, 0)
        lm, rm, rl = self.lm, self.rm, self.rl
        for name in ("context", "d_embed", "corpus", "heldout", "steps", "batch", "eval_every"):
            check_int(f"lm.{name}", getattr(lm, name))
        check_range("lm.lr", lm.lr, 0, None, lo_open=True)
        for name in ("pairs", "heldout", "steps", "batch", "norm_samples", "eval_every"):
            check_int(f"rm.{name}", getattr(rm, name))
        check_range("rm.temperature", rm.temperature, 0, None, lo_open=True)
        check_range("rm.lr", rm.lr, 0, None, lo_open=True)
        for name in ("iterations", "batch", "max_len", "kl_horizon", "update_epochs",
                     "minibatches"):
            check_int(f"rl.{name}", getattr(rl, name))
        check_range("rl.beta", rl.beta, 0)
        check_range("rl.kl_target", rl.kl_target, 0, None, lo_open=True)
        for name in ("lr", "vf_lr", "max_grad_norm"):
            check_range(f"rl.{name}", getattr(rl, name), 0, None, lo_open=True)
        check_range("rl.clip_eps", rl.clip_eps, 0, 1, lo_open=True, hi_open=True)
        check_range("rl.lam", rl.lam, 0, 1)
        check_choice("rl.estimator", rl.estimator, ESTIMATORS)
        check_choice("rl.kl_penalty", rl.kl_penalty, KL_PENALTIES)
        if rl.estimator != "ppo":
            check_int("rl.group", rl.group, lo=2)
            if rl.batch % rl.group:
                raise UserError(f"rl.batch ({rl.batch}) must be a multiple of rl.group "
                                f"({rl.group}): the batch is split into groups")
        elif rl.kl_penalty != "reward" and rl.algo == "rl":
            raise UserError("rl.kl_penalty 'k3_loss' goes with a group estimator (rloo, grpo, "
                            "grpo_nostd, dr_grpo); ppo puts the KL in the reward")
        check_loss_fields(rl)  # issue 27's options (derivations/14-rlhf-losses.md)
        if self.rl.max_len < Grammar().max_len:
            raise UserError(f"rl.max_len must be >= {Grammar().max_len} (the grammar's longest "
                            f"sentence), got {self.rl.max_len}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RLHFConfig:
        try:
            return cls(seed=d["seed"], lm=LMConfig(**d["lm"]), rm=RMConfig(**d["rm"]),
                       rl=RLConfig(**d["rl"]), sweep_betas=tuple(d["sweep_betas"]))
        except (KeyError, TypeError) as e:
            raise UserError(f"config.json does not describe an RLHF run ({e})") from None


# ---- checkpoints and files --------------------------------------------------------------------

def save_npz(path: Path, meta: dict, **arrays: np.ndarray) -> None:
    """Arrays and a JSON meta entry in one .npz, replaced atomically (pgnumpy/fileio.py): an
    interrupted or failed write never leaves half a file."""
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps({"format": FORMAT} | meta)), **arrays)
    atomic_write(path, buf.getvalue())


def load_npz(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) of a stage checkpoint, read as run checkpoints are (no pickle, sizes
    checked before reading: pgnumpy/checkpoint.py::read_npz), or a UserError saying why not."""
    if not path.exists():
        raise UserError(f"no checkpoint at {path}: run the earlier stages first (without "
                        f"--from-stage, or from an earlier one)")
    meta, arrays = read_npz(path, "stage checkpoint")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path} is not an RLHF stage checkpoint (expected format {FORMAT})")
    return meta, arrays


def load_params(net, arrays: dict, key: str, path: Path) -> None:
    got = arrays.get(key)
    if got is None or got.shape != net.params.shape:
        raise UserError(f"{path}: {key!r} does not fit the config (shape "
                        f"{None if got is None else got.shape}, expected {net.params.shape}): "
                        f"different model sizes?")
    net.params[:] = got


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, buf.getvalue())


# ---- the pipeline ---------------------------------------------------------------------------

def run(
    cfg: RLHFConfig, out: str | Path, from_stage: str = "lm", figures: bool = True,
    print_fn: Callable[[str], None] = print,
) -> dict:
    """Run the stages from `from_stage` on, writing `out`; returns the summary (also written
    to summary.json). The Python API: the stage functions pretrain, train_reward_model and
    rl_finetune can also be called one by one, as this function does."""
    if from_stage not in STAGES:
        raise UserError(f"from_stage must be one of {', '.join(STAGES)}; got {from_stage!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory for the run")
    if from_stage == "lm" and any((out / f).exists() for f in ("config.json", "lm.npz")):
        raise UserError(f"{out} already holds an RLHF run: rerun a stage of it with "
                        f"--from-stage rm|rl --out {out}, or give another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the run directory {out}: {e.strerror}") from None
    atomic_write(out / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    grammar = Grammar()
    seeds = np.random.SeedSequence(cfg.seed).spawn(4)  # lm, rm, rl, samples: one stream each
    lm_rng, rm_rng = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1])
    first = STAGES.index(from_stage)
    summary: dict = {}
    t0 = time.perf_counter()

    # stage 1: the language model
    lm = TinyLM(cfg.lm.context, cfg.lm.d_embed, cfg.lm.hidden, rng=np.random.default_rng(0))
    if first == 0:
        H, floor = grammar.entropy_per_token(), grammar.context_floor(cfg.lm.context)
        print_fn(f"[lm] grammar: true entropy {H:.4f} nats/token; best with a "
                 f"{cfg.lm.context}-token window {floor:.4f}")
        lm, lm_rows = pretrain(cfg.lm, grammar, lm_rng, lambda r: print_fn(
            f"[lm] step {r['step']:5d}/{cfg.lm.steps}  train CE {r['train_ce']:.4f}  "
            f"held-out CE {r['heldout_ce']:.4f}  ({r['wall_s']:.1f} s)"))
        lm_summary = {"true_entropy": H, "context_floor": floor,
                      "heldout_ce": lm_rows[-1]["heldout_ce"]}
        save_npz(out / "lm.npz", {"summary": lm_summary}, params=lm.params)
        summary["lm_wall_s"] = lm_rows[-1]["wall_s"]  # not in the checkpoint: it is no result
        write_csv(out / "lm.csv", lm_rows)
    else:
        meta, arrays = load_npz(out / "lm.npz")
        load_params(lm, arrays, "params", out / "lm.npz")
        lm_summary = meta["summary"]
        print_fn(f"[lm] loaded {out / 'lm.npz'}")
    summary |= lm_summary

    # stage 2: the reward model
    max_len = cfg.rl.max_len
    rm = RewardModel(cfg.lm.context, cfg.lm.d_embed, cfg.lm.hidden, rng=np.random.default_rng(0))
    if first <= 1:
        rm, rm_rows, rm_summary = train_reward_model(cfg.rm, lm, grammar, rm_rng, max_len,
                                                     lambda r: print_fn(
            f"[rm] step {r['step']:5d}/{cfg.rm.steps}  loss {r['train_loss']:.4f}  "
            f"accuracy train {r['train_acc']:.3f} held-out {r['heldout_acc']:.3f} "
            f"(best possible {r['best_acc']:.3f})  ({r['wall_s']:.1f} s)"))
        save_npz(out / "rm.npz", {"summary": rm_summary}, params=rm.params)
        summary["rm_wall_s"] = rm_rows[-1]["wall_s"]
        write_csv(out / "rm.csv", rm_rows)
    else:
        meta, arrays = load_npz(out / "rm.npz")
        load_params(rm, arrays, "params", out / "rm.npz")
        rm_summary = meta["summary"]
        print_fn(f"[rm] loaded {out / 'rm.npz'}")
    summary |= {f"rm_{k}": v for k, v in rm_summary.items()}

    # stage 3: RL, the main run and the sweep, each from the same start with its own stream
    runs: dict[str, list[dict]] = {}
    policies: dict[str, TinyLM] = {}
    settings = [("main", cfg.rl)] + [
        (f"beta_{b:g}", dataclasses.replace(cfg.rl, beta=b, adaptive=False))
        for b in cfg.sweep_betas if cfg.rl.algo == "rl" or b > 0]  # DPO / IPO need beta > 0
    for (name, rl_cfg), seed in zip(settings, seeds[2].spawn(len(settings))):
        tag = "adaptive" if rl_cfg.adaptive else "fixed"
        print_fn(f"[rl] {name}: beta {rl_cfg.beta:g} ({tag}), {rl_cfg.iterations} iterations "
                 f"of {rl_cfg.batch} sentences")
        every, last = max(1, rl_cfg.iterations // 5), rl_cfg.iterations - 1

        def show(r: dict, every=every, last=last) -> None:
            if r["iter"] % every == 0 or r["iter"] == last:
                print_fn(_rl_line(r))

        rng = np.random.default_rng(seed)
        if rl_cfg.algo == "rl":
            policy, rows = rl_finetune(rl_cfg, lm, rm, grammar, rng, show)
        else:  # DPO / IPO on the labeller's pairs, no RL (derivations/14-rlhf-losses.md)
            pairs = preference_pairs(lm, grammar, cfg.rm.pairs, cfg.rm.temperature, rng, max_len)
            policy, rows = dpo_finetune(rl_cfg, lm, pairs, grammar, rm, rng, show)
        runs[name], policies[name] = rows, policy
        write_csv(out / ("rl.csv" if name == "main" else f"rl_{name}.csv"), rows)
        if name == "main":
            save_npz(out / "rl.npz", {"final_beta": rows[-1]["beta"]}, policy=policy.params)
    summary |= rl_summary(runs)

    # what a reader looks at: sentences before and after, figures
    eval_rng = np.random.default_rng(seeds[3])
    (out / "samples.txt").write_text(samples_text(lm, policies, rm, grammar, eval_rng, max_len))
    if figures:
        from pgnumpy.rlhf.figures import lm_figure, overoptimisation_figure, rm_figure

        lm_figure(_read_csv(out / "lm.csv"), summary, out / "rlhf_lm_loss.png")
        rm_figure(_read_csv(out / "rm.csv"), out / "rlhf_rm_accuracy.png")
        overoptimisation_figure(runs, out / "rlhf_overoptimisation.png")
    summary["wall_s"] = round(time.perf_counter() - t0, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _rl_line(r: dict) -> str:
    return (f"[rl] iter {r['iter']:4d}  proxy {r['proxy']:+.3f}  gold {r['gold']:+.3f}  "
            f"KL {r['kl']:6.2f} +- {r['kl_se']:.2f}  beta {r['beta']:.4f}  "
            f"entropy {r['entropy']:.3f}  grammatical {r['grammatical']:.2f}  | {r['sample']}")


def rl_summary(runs: dict[str, list[dict]]) -> dict:
    """First and last iterations' gold, proxy and KL of every RL run (last: mean of the last
    10 iterations, each of which measured a fresh batch)."""
    out = {}
    for name, rows in runs.items():
        tail = rows[-10:]
        out[f"rl_{name}"] = {
            "beta_final": rows[-1]["beta"],
            "gold_before": rows[0]["gold"], "proxy_before": rows[0]["proxy"],
            "gold_after": float(np.mean([r["gold"] for r in tail])),
            "proxy_after": float(np.mean([r["proxy"] for r in tail])),
            "kl_after": float(np.mean([r["kl"] for r in tail])),
            "grammatical_after": float(np.mean([r["grammatical"] for r in tail])),
            "rl_wall_s": rows[-1]["wall_s"],
        }
    return out


def samples_text(lm: TinyLM, policies: dict[str, TinyLM], rm: RewardModel, grammar: Grammar,
                 rng: np.random.Generator, max_len: int, n: int = 8) -> str:
    """Sentences from the reference and from each fine-tuned policy, with their scores."""
    lines = []
    for name, model in [("reference (pretrained)", lm)] + list(policies.items()):
        y = model.sample(n, rng, max_len)
        lines.append(f"== {name}")
        for row, g, r in zip(y, gold_reward(y, grammar), rm.score(y)):
            lines.append(f"  gold {g:+.2f}  proxy {r:+.2f}  {to_words(row)}")
    return "\n".join(lines) + "\n"


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
