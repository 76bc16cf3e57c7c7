"""The whole RLHF pipeline, stage by stage, writing a run directory.

    from pgnumpy.rlhf.pipeline import RLHFConfig, run
    summary = run(RLHFConfig(seed=0), out="runs/rlhf")        # or `python -m pgnumpy.rlhf`

Stages (each writes its checkpoint, an .npz with no pickled objects, written atomically):
    lm   pretrain the language model on the grammar's corpus          -> lm.npz, lm.csv
    rm   label pairs from it, train and normalise the reward model   -> rm.npz, rm.csv
    rl   PPO under the KL penalty at cfg.rl.beta (the main run), then  -> rl.csv, rl_beta_B.csv,
         the same from the same start at each of sweep_betas             rl.npz (every run's
                                                                         policy)
Then samples.txt (sentences before and after RL), the figures and summary.json (last: it says
the run finished). Each stage writes its CSVs, then its checkpoint, whose presence says the
stage finished. `from_stage="rm"` reloads lm.npz from the run directory and reruns from there;
every stage draws from its own seeded stream, so a rerun from a checkpoint gives what the full
run gave, and an interrupted run continued by the same call gives what an uninterrupted one
gives (tests/test_rlhf_runs.py kills it at each step).

The run directory is claimed and locked (pgnumpy/rundir.py) before anything is written, and
every file goes through fileio.atomic_write (whole or absent, never through a symlink). What a
rerun from a stage replaces is moved to out/replaced/STAMP/ first: kept, rather than refused
without a flag, because trying another beta from the same LM and RM is what --from-stage is
for, a flag to overwrite would be typed as a habit and then lose results, and the files are
small (at the default sizes rl.npz, four policies, is 285 kB and the figures 169 kB, measured
with `python -m pgnumpy.rlhf --out X --rl-iterations 2 --lm-steps 10 --rm-steps 10`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgnumpy import rundir
from pgnumpy.checkpoint import read_npz
from pgnumpy.config import check_choice, check_int, check_range, plain, user_config
from pgnumpy.errors import UserError
from pgnumpy.fileio import atomic_write, check_no_symlink, deferred_sigint
from pgnumpy.rlhf.dpo import dpo_finetune
from pgnumpy.rlhf.finetune import (
    ESTIMATORS,
    KL_PENALTIES,
    RLConfig,
    check_combinations,
    rl_finetune,
)
from pgnumpy.rlhf.grammar import Grammar, gold_reward, to_words
from pgnumpy.rlhf.lm import LMConfig, TinyLM, pretrain
from pgnumpy.rlhf.losses import check_loss_fields
from pgnumpy.rlhf.reward_model import RewardModel, RMConfig, preference_pairs, train_reward_model

STAGES = ("lm", "rm", "rl")
FORMAT = "pgnumpy-rlhf-1"


BETA_MAX = 1e3  # the RM is normalised to std 1 (RLHF.9): at beta 1000 one nat outweighs 1000 stds
CONFIG_KEYS = ("seed", "lm", "rm", "rl", "sweep_betas")


@user_config
@dataclass
class RLHFConfig:
    """seed: every stage's random stream derives from it; sweep_betas: extra RL runs (fixed
    beta, same start, same length as the main run) for the over-optimisation figure.

    Every field is checked on construction and again when `run` starts (a field set after
    construction): a bad one is a UserError naming it."""

    seed: int = 0
    lm: LMConfig = field(default_factory=LMConfig)
    rm: RMConfig = field(default_factory=RMConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    sweep_betas: tuple[float, ...] = (0.2, 0.01, 0.0)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise UserError naming the first bad field (types first: a string where a section
        or a number goes is refused here, never left to fail deep in a stage)."""
        for name, cls in (("lm", LMConfig), ("rm", RMConfig), ("rl", RLConfig)):
            if not isinstance(getattr(self, name), cls):
                raise UserError(f"RLHFConfig.{name} must be an {cls.__name__}, got "
                                f"{getattr(self, name)!r}")
        for c in (self, self.lm, self.rm, self.rl):
            plain(c)
        if isinstance(self.sweep_betas, (str, bytes, dict)) or not hasattr(
                self.sweep_betas, "__iter__"):
            raise UserError(f"sweep_betas must be a list of numbers, got {self.sweep_betas!r}")
        self.sweep_betas = tuple(self.sweep_betas)
        names: dict[str, float] = {}
        for b in self.sweep_betas:
            check_range("sweep_betas", b, 0, BETA_MAX)
            if f"beta_{b:g}" in names:  # one file name, rl_beta_B.csv, per run
                raise UserError(f"sweep_betas holds beta {b:g} twice ({names[f'beta_{b:g}']!r} "
                                f"and {b!r} share the name rl_beta_{b:g}.csv)")
            names[f"beta_{b:g}"] = b
        self.sweep_betas = tuple(float(b) for b in self.sweep_betas)
        check_int("seed", self.seed, lo=0)
        self.lm.check()
        self.rm.check()
        rl = self.rl
        for name in ("iterations", "batch", "max_len", "kl_horizon", "update_epochs",
                     "minibatches"):
            check_int(f"rl.{name}", getattr(rl, name))
        check_range("rl.beta", rl.beta, 0, BETA_MAX)
        if not isinstance(rl.adaptive, bool):
            raise UserError(f"rl.adaptive must be True or False, got {rl.adaptive!r}")
        check_range("rl.kl_target", rl.kl_target, 0, None, lo_open=True)
        check_combinations(rl)  # RLConfig's own check, again: a field may be set after it
        if rl.adaptive and not rl.kl_horizon > 0.2 * rl.batch:
            raise UserError(f"rl.kl_horizon must be > 0.2 * rl.batch ({0.2 * rl.batch:g}) with "
                            f"rl.adaptive, got {rl.kl_horizon}: the controller's step "
                            "beta (1 + e batch / horizon), e >= -0.2, would make beta negative "
                            "(RLHF.14)")
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
    def from_dict(cls, d: dict, where: str | None = None) -> RLHFConfig:
        """The config a dict (a config.json) describes, every field checked: unknown fields
        are refused, fields left out take their defaults. `where` (a file) starts messages."""
        try:
            return cls._from_dict(d, where or "an RLHF config")
        except UserError as e:
            if where is None or str(e).startswith(where):
                raise
            raise UserError(f"{where}: {e}") from None

    @classmethod
    def _from_dict(cls, d: dict, where: str) -> RLHFConfig:
        if not isinstance(d, dict):
            raise UserError(f"{where} must be a JSON object of fields ({', '.join(CONFIG_KEYS)}),"
                            f" got {type(d).__name__}")
        unknown = sorted(set(d) - set(CONFIG_KEYS))
        if unknown:
            raise UserError(f"{where}: unknown field {unknown[0]!r}; an RLHF config has "
                            f"{', '.join(CONFIG_KEYS)}")
        kw = {k: d[k] for k in ("seed", "sweep_betas") if k in d}
        for name, sub in (("lm", LMConfig), ("rm", RMConfig), ("rl", RLConfig)):
            if name not in d:
                continue
            if not isinstance(d[name], dict):
                raise UserError(f"{where}: {name} must be an object of fields, got "
                                f"{d[name]!r}")
            known = {f.name for f in dataclasses.fields(sub)}
            bad = sorted(set(d[name]) - known)
            if bad:
                raise UserError(f"{where}: unknown field {bad[0]!r} in {name}; its fields: "
                                f"{', '.join(sorted(known))}")
            try:
                kw[name] = sub(**d[name])
            except UserError:
                raise
            except (TypeError, ValueError) as e:  # a dataclass's own __post_init__
                raise UserError(f"{where}: {name}: {e}") from None
        return cls(**kw)


def read_config(path: Path) -> RLHFConfig:
    """The RLHFConfig of a config.json, or one UserError saying why not."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text: not an RLHF config") from None
    try:
        d = json.loads(text)
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    except RecursionError:
        raise UserError(f"{path} is not an RLHF config (JSON nested too deep)") from None
    if not isinstance(d, dict):
        raise UserError(f"{path} is not a JSON object: not an RLHF config")
    return RLHFConfig.from_dict(d, where=str(path))


# ---- checkpoints and files --------------------------------------------------------------------

KIND = "rlhf"  # the run directory's marker kind (pgnumpy/rundir.py)
STAGE_FILES = {"lm": ("lm.csv", "lm.npz"), "rm": ("rm.csv", "rm.npz"), "rl": ("rl.csv", "rl.npz")}
REPORT_FILES = ("samples.txt", "rlhf_lm_loss.png", "rlhf_rm_accuracy.png",
                "rlhf_overoptimisation.png", "summary.json")
REPLACED = "replaced"


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


def _finite(x, lo: float = -math.inf, lo_open: bool = False, hi: float = math.inf) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            and (x > lo if lo_open else x >= lo) and x <= hi)


# What each stage's checkpoint meta holds besides format and config: field -> check.
_SUMMARY = {
    "lm": {"true_entropy": lambda x: _finite(x, 0), "context_floor": lambda x: _finite(x, 0),
           "heldout_ce": lambda x: _finite(x, 0)},
    "rm": {"heldout_acc": lambda x: _finite(x, 0, hi=1), "best_acc": lambda x: _finite(x, 0, hi=1),
           "train_acc": lambda x: _finite(x, 0, hi=1), "raw_mean": _finite,
           "raw_std": lambda x: _finite(x, 1e-9)},  # below: every reference sample scored
}                                                  # alike, nothing to normalise (RLHF.9)


def stage_config(cfg: RLHFConfig, stage: str) -> dict:
    """The config fields a stage's result depends on, flat ("lm.steps": 2500), as JSON holds
    them: recorded in its checkpoint, so a checkpoint is never used under another config."""
    d = json.loads(json.dumps(cfg.to_dict()))
    flat = {f"{stage}.{k}": v for k, v in d[stage].items()}
    if stage == "rm":
        flat["rl.max_len"] = d["rl"]["max_len"]  # the pairs are sampled with the RL length cap
    if stage == "rl":
        flat["sweep_betas"] = d["sweep_betas"]
    return flat


def check_stage_meta(stage: str, meta: dict, path: Path, cfg: RLHFConfig) -> None:
    """A stage checkpoint's meta, field by field (a hand edit is refused naming the field), and
    its recorded config against `cfg` (a checkpoint from before the record is taken as is)."""
    def bad(why: str) -> UserError:
        return UserError(f"{path} is not a readable stage checkpoint ({why}); rerun its stage "
                         f"with --from-stage {stage}")

    want = {"format", "config"} | ({"summary"} if stage in _SUMMARY else {"final_beta", "runs"})
    for k in sorted(set(meta) - want):
        raise bad(f"unknown field {k!r}")
    for k in sorted(want - set(meta) - {"config", "runs"}):
        raise bad(f"missing field {k!r}")
    if stage in _SUMMARY:
        summary = meta["summary"]
        if not isinstance(summary, dict) or set(summary) != set(_SUMMARY[stage]):
            raise bad(f"bad field 'summary': expected the fields {sorted(_SUMMARY[stage])}")
        for k, ok in _SUMMARY[stage].items():
            if not ok(summary[k]):
                raise bad(f"bad field 'summary/{k}': got {str(summary[k])[:40]!r}")
    else:
        if not _finite(meta["final_beta"], 0):
            raise bad(f"bad field 'final_beta': got {str(meta['final_beta'])[:40]!r}")
        runs = meta.get("runs", ["main"])
        if not (isinstance(runs, list) and runs and all(isinstance(r, str) for r in runs)):
            raise bad(f"bad field 'runs': got {str(runs)[:40]!r}")
    recorded = meta.get("config")
    if recorded is None:
        return
    if not isinstance(recorded, dict):
        raise bad("bad field 'config'")
    now = stage_config(cfg, stage)
    for k in sorted(set(recorded) & set(now)):
        if recorded[k] != now[k]:
            raise UserError(f"{path} was made with {k} = {recorded[k]!r}, but the config says "
                            f"{now[k]!r} (config.json edited?): a checkpoint is used only with "
                            f"the config it was made with; rerun with --from-stage {stage}")


def load_params(net, arrays: dict, key: str, path: Path) -> None:
    """net.params <- arrays[key], checked: a 1-D float array of the network's size, finite
    (NaN/inf parameters are refused, as train --resume refuses them)."""
    got = arrays.get(key)
    if got is None or got.ndim != 1 or got.dtype.kind != "f" or got.shape != net.params.shape:
        raise UserError(f"{path}: {key!r} does not fit the config (shape "
                        f"{None if got is None else got.shape}, expected {net.params.shape}): "
                        f"different model sizes?")
    if not np.isfinite(got).all():
        raise UserError(f"{path} holds NaN/inf parameters in {key!r} (a diverged or damaged "
                        f"stage?); rerun that stage")
    net.params[:] = got


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, buf.getvalue())


_COLUMNS = {"lm": ("step", "train_ce", "heldout_ce", "wall_s"),
            "rm": ("step", "train_acc", "heldout_acc", "best_acc", "wall_s"),
            "rl": ("iter", "proxy", "gold", "kl", "beta", "grammatical", "wall_s")}


def read_rows(path: Path, stage: str) -> list[dict]:
    """The numeric columns the summary and figures read from a stage's CSV, as floats; a
    missing, damaged or hand-edited file is one UserError naming it."""
    def bad(why: str) -> UserError:
        return UserError(f"{path} is {why}; rerun its stage with --from-stage {stage}")

    if not path.is_file():
        raise bad("missing")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            raw = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise bad(f"damaged ({e})") from None
    if not raw:
        raise bad("damaged (no rows)")
    rows = []
    for i, r in enumerate(raw, 2):
        row = {}
        for c in _COLUMNS[stage]:
            try:
                row[c] = float(r.get(c))
            except (TypeError, ValueError):
                raise bad(f"damaged (line {i}, column {c!r}: {str(r.get(c))[:30]!r})") from None
            if not math.isfinite(row[c]):
                raise bad(f"damaged (line {i}, column {c!r}: {r.get(c)!r})")
        rows.append(row)
    return rows


def holds_legacy_run(path: Path) -> bool:
    """A run directory an RLHF pipeline older than the run marker wrote: its config.json is an
    RLHF config (a JSON object of exactly the RLHFConfig fields, its sections objects)."""
    c = Path(path) / "config.json"
    if c.is_symlink() or not c.is_file() or c.stat().st_size > 1 << 20:
        return False
    try:
        d = json.loads(c.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return (isinstance(d, dict) and set(d) == set(CONFIG_KEYS)
            and all(isinstance(d[k], dict) for k in ("lm", "rm", "rl")))


def no_run_message(out: Path) -> str:
    """Why --from-stage cannot use `out`, which holds no config.json."""
    c = out / "config.json"
    if c.exists() or c.is_symlink():
        return f"{c} is not a regular file: not an RLHF run's config"
    if (out / rundir.MARKER).exists() and rundir.is_claimed(out, KIND):
        return (f"no stage of the RLHF run in {out} has finished (it holds no config.json): "
                f"run without --from-stage to start it")
    return f"no config.json in {out}: not an RLHF run directory"


# ---- the pipeline ---------------------------------------------------------------------------

def run(
    cfg: RLHFConfig, out: str | Path, from_stage: str | None = None, figures: bool = True,
    print_fn: Callable[[str], None] = print,
) -> dict:
    """Run the pipeline in the run directory `out`; returns the summary (also written to
    summary.json). The Python API: the stage functions pretrain, train_reward_model and
    rl_finetune can also be called one by one, as this function does.

    from_stage None: start the run, or continue it (the same config, with the stages whose
    checkpoints exist loaded; a run with no finished stage starts over). from_stage "lm", "rm"
    or "rl": rerun from that stage, the earlier ones loaded; every result the rerun replaces
    is first moved to out/replaced/STAMP/ (with the config.json it was made with).

    `out` is claimed first (pgnumpy/rundir.py): created, empty, or a pgnumpy RLHF run, and
    locked against a second process; anything else is refused before a byte is written."""
    if not isinstance(cfg, RLHFConfig):
        raise UserError(f"run's cfg must be an RLHFConfig, got {str(cfg)[:60]!r}")
    if not isinstance(out, (str, os.PathLike)):
        raise UserError(f"run's out must be a path (str or os.PathLike), got {out!r}")
    if from_stage is not None and (not isinstance(from_stage, str) or from_stage not in STAGES):
        raise UserError(f"from_stage must be one of {', '.join(STAGES)} (or None); got "
                        f"{from_stage!r}")
    if not isinstance(figures, bool):
        raise UserError(f"figures must be True or False, got {figures!r}")
    if not callable(print_fn):
        raise UserError(f"print_fn must be callable, got {print_fn!r}")
    cfg.check()  # a field may have been set after construction
    out = Path(out)
    if from_stage is not None and not (out / "config.json").is_file():
        raise UserError(no_run_message(out))  # refused before the claim writes its marker
    with rundir.claim(out, KIND, adopt=holds_legacy_run, what="RLHF run"):
        _check_outputs(cfg, out)  # before reading any: a link there is refused, not followed
        first = _plan(cfg, out, from_stage, print_fn)
        loaded = _load_stages(cfg, out, first)  # every reused file checked before anything moves
        if from_stage is not None:
            _keep_replaced(out, first, print_fn)
        atomic_write(out / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        return _run_stages(cfg, out, first, loaded, figures, print_fn)


def _stage_done(out: Path, stage: str) -> bool:
    """A stage finished iff its checkpoint exists: each stage writes its CSVs first and its
    .npz last. (An rl.npz without the list of runs is an older pipeline's, written after the
    main run but before the sweep: not a finished stage.)"""
    path = out / f"{stage}.npz"
    if not path.is_file():
        return False
    return stage != "rl" or "runs" in load_npz(path)[0]


def _plan(cfg: RLHFConfig, out: Path, from_stage: str | None, say) -> int:
    """The index of the first stage to run (3: only the samples, figures and summary), or a
    UserError before anything is written."""
    done = [_stage_done(out, s) for s in STAGES]
    finished = done.index(False) if False in done else len(STAGES)
    saved = out / "config.json"
    if from_stage is not None:
        if not saved.is_file():
            raise UserError(no_run_message(out))
        first = STAGES.index(from_stage)
        for s, ok in zip(STAGES[:first], done):
            if not ok:
                raise UserError(f"{out} has no {s}.npz: its {s} stage did not finish; rerun "
                                f"from it with --from-stage {s}, or run without --from-stage "
                                "to continue the run")
        return first
    npz = [f"{s}.npz" for s in STAGES if (out / f"{s}.npz").exists()]
    if not saved.exists():
        if npz:
            raise UserError(f"{out} holds {', '.join(npz)} but no config.json: the run cannot "
                            "be continued; give another --out")
        return 0
    old = read_config(saved)
    if old.to_dict() != cfg.to_dict():
        if not npz:  # nothing measured yet: starting over loses nothing
            say(f"[run] no stage of the run in {out} had finished: starting it over with this "
                "config")
            return 0
        raise UserError(f"{out} holds an RLHF run with another config ({_difference(old, cfg)}):"
                        f" continue it with the same flags (or --config {saved}), rerun a stage "
                        "with --from-stage, or give another --out")
    if finished == len(STAGES) and (out / "summary.json").exists():
        raise UserError(f"{out} already holds a finished RLHF run: rerun a stage of it with "
                        f"--from-stage lm|rm|rl --out {out} (what the rerun replaces is kept in "
                        f"{out}/{REPLACED}/), or give another --out")
    if npz:
        say(f"[run] continuing the run in {out}: "
            + (f"from the {STAGES[finished]} stage" if finished < len(STAGES)
               else "the stages are done; writing the samples, figures and summary"))
    return finished


def _difference(a: RLHFConfig, b: RLHFConfig) -> str:
    da, db = a.to_dict(), b.to_dict()
    for k in CONFIG_KEYS:
        if isinstance(da[k], dict):
            for f in da[k]:
                if da[k][f] != db[k].get(f):
                    return f"{k}.{f}: {da[k][f]!r} there, {db[k].get(f)!r} here"
        elif da[k] != db[k]:
            return f"{k}: {da[k]!r} there, {db[k]!r} here"
    return "?"


def _outputs(cfg: RLHFConfig, out: Path) -> list[Path]:
    names = ["config.json", *(f for s in STAGES for f in STAGE_FILES[s]),
             *(f"rl_{name}.csv" for name, _ in _rl_settings(cfg)[1:]), *REPORT_FILES]
    return [out / n for n in names]


def _check_outputs(cfg: RLHFConfig, out: Path) -> None:
    """Before anything is written: no link, directory or device where a run file (or its temp
    file) goes, and no link as the folder replaced results go to (check_no_symlink's line)."""
    for p in _outputs(cfg, out):
        for q in (p, p.with_name(p.name + ".tmp")):
            check_no_symlink(q)
            if q.exists() and not q.is_file():
                raise UserError(f"{q} is not a regular file: pgnumpy writes its own file there; "
                                "move it away")
    kept = out / REPLACED
    check_no_symlink(kept)
    if kept.exists() and not kept.is_dir():
        raise UserError(f"{kept} is not a directory: pgnumpy keeps replaced results there; "
                        "move it away")


def _keep_replaced(out: Path, first: int, say) -> None:
    """Move every file the rerun from STAGES[first] will replace into out/replaced/STAMP/, with a
    copy of the config.json that made them: a rerun never loses what a run measured. Each move
    is a rename within the run directory (atomic, Ctrl-C held); a kill between two moves leaves
    every file in one place or the other."""
    names = [f for s in STAGES[first:] for f in STAGE_FILES[s]]
    if first <= STAGES.index("rl"):
        names += sorted(p.name for p in out.glob("rl_beta_*.csv"))
    names += REPORT_FILES
    moving = [n for n in names if (out / n).is_file() and not (out / n).is_symlink()]
    if not moving:
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / REPLACED).mkdir(exist_ok=True)
    dest, i = out / REPLACED / stamp, 1
    while dest.exists():
        i += 1
        dest = out / REPLACED / f"{stamp}-{i}"
    dest.mkdir()
    atomic_write(dest / "config.json", (out / "config.json").read_bytes())
    with deferred_sigint():
        for n in moving:
            os.replace(out / n, dest / n)
    say(f"[run] the results this rerun replaces are kept in {dest}/")


def _rl_settings(cfg: RLHFConfig) -> list[tuple[str, RLConfig]]:
    """The RL runs: the main one at cfg.rl, then one per sweep beta (fixed, same start)."""
    return [("main", cfg.rl)] + [
        (f"beta_{b:g}", dataclasses.replace(cfg.rl, beta=b, adaptive=False))
        for b in cfg.sweep_betas if cfg.rl.algo == "rl" or b > 0]  # DPO / IPO need beta > 0


def _load_stages(cfg: RLHFConfig, out: Path, first: int) -> dict:
    """Every checkpoint and CSV of the stages before `first`, loaded and checked."""
    got: dict = {}
    if first > 0:
        meta, arrays = load_npz(out / "lm.npz")
        check_stage_meta("lm", meta, out / "lm.npz", cfg)
        lm = TinyLM(cfg.lm.context, cfg.lm.d_embed, cfg.lm.hidden, rng=np.random.default_rng(0))
        load_params(lm, arrays, "params", out / "lm.npz")
        got["lm"] = (lm, meta["summary"], read_rows(out / "lm.csv", "lm"))
    if first > 1:
        meta, arrays = load_npz(out / "rm.npz")
        check_stage_meta("rm", meta, out / "rm.npz", cfg)
        rm = RewardModel(cfg.lm.context, cfg.lm.d_embed, cfg.lm.hidden,
                         rng=np.random.default_rng(0))
        load_params(rm, arrays, "params", out / "rm.npz")
        got["rm"] = (rm, meta["summary"], read_rows(out / "rm.csv", "rm"))
    if first > 2:
        meta, arrays = load_npz(out / "rl.npz")
        check_stage_meta("rl", meta, out / "rl.npz", cfg)
        names = [name for name, _ in _rl_settings(cfg)]
        if meta.get("runs") != names:
            raise UserError(f"{out / 'rl.npz'} holds the RL runs {meta.get('runs')}, the config "
                            f"{names}; rerun with --from-stage rl")
        policies, runs = {}, {}
        for name in names:
            policies[name] = got["lm"][0].clone()
            load_params(policies[name], arrays, f"policy_{name}", out / "rl.npz")
            runs[name] = read_rows(out / ("rl.csv" if name == "main" else f"rl_{name}.csv"),
                                   "rl")
        got["rl"] = (policies, runs)
    return got


class _Diverged(UserError):
    pass


def _watch(stage: str, keys: tuple[str, ...], show: Callable[[dict], None], out: Path):
    """The stage's log callback: every logged number in `keys` must be finite, or the stage
    stops there with one line (a diverged stage is never written)."""
    def log(row: dict) -> None:
        for k in keys:
            if not math.isfinite(row[k]):
                where = f"step {row['step']}" if "step" in row else f"iteration {row['iter']}"
                raise _diverged(stage, f"{k} is {row[k]} at {where}", out)
        show(row)
    return log


def _diverged(stage: str, what: str, out: Path) -> UserError:
    kept = [f"{s}.npz" for s in STAGES[: STAGES.index(stage)]]
    return _Diverged(
        f"the {stage} stage diverged: {what}; nothing of it was written"
        + (f", and {', '.join(kept)} {'is' if len(kept) == 1 else 'are'} kept in {out}/"
           if kept else "")
        + f": lower its learning rate (or beta), then rerun with --from-stage {stage}")


def _check_finite(stage: str, net, out: Path) -> None:
    if not np.isfinite(net.params).all():
        raise _diverged(stage, "its final parameters hold NaN/inf", out)


def _run_stages(cfg: RLHFConfig, out: Path, first: int, loaded: dict, figures: bool,
                print_fn: Callable[[str], None]) -> dict:
    grammar = Grammar()
    seeds = np.random.SeedSequence(cfg.seed).spawn(4)  # lm, rm, rl, samples: one stream each
    lm_rng, rm_rng = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1])
    t0 = time.perf_counter()

    # stage 1: the language model (each stage writes its CSV, then its checkpoint: the
    # checkpoint's presence says the stage finished)
    if first == 0:
        H, floor = grammar.entropy_per_token(), grammar.context_floor(cfg.lm.context)
        print_fn(f"[lm] grammar: true entropy {H:.4f} nats/token; best with a "
                 f"{cfg.lm.context}-token window {floor:.4f}")
        lm, lm_rows = pretrain(cfg.lm, grammar, lm_rng, _watch(
            "lm", ("train_ce", "heldout_ce"), lambda r: print_fn(
                f"[lm] step {r['step']:5d}/{cfg.lm.steps}  train CE {r['train_ce']:.4f}  "
                f"held-out CE {r['heldout_ce']:.4f}  ({r['wall_s']:.1f} s)"), out))
        _check_finite("lm", lm, out)
        lm_summary = {"true_entropy": H, "context_floor": floor,
                      "heldout_ce": lm_rows[-1]["heldout_ce"]}
        write_csv(out / "lm.csv", lm_rows)
        save_npz(out / "lm.npz", {"summary": lm_summary, "config": stage_config(cfg, "lm")},
                 params=lm.params)
    else:
        lm, lm_summary, _ = loaded["lm"]
        print_fn(f"[lm] loaded {out / 'lm.npz'}")

    # stage 2: the reward model
    max_len = cfg.rl.max_len
    if first <= 1:
        rm, rm_rows, rm_summary = train_reward_model(cfg.rm, lm, grammar, rm_rng, max_len, _watch(
            "rm", ("train_loss", "train_acc", "heldout_acc"), lambda r: print_fn(
                f"[rm] step {r['step']:5d}/{cfg.rm.steps}  loss {r['train_loss']:.4f}  "
                f"accuracy train {r['train_acc']:.3f} held-out {r['heldout_acc']:.3f} "
                f"(best possible {r['best_acc']:.3f})  ({r['wall_s']:.1f} s)"), out))
        _check_finite("rm", rm, out)
        for k, ok in _SUMMARY["rm"].items():  # a diverged RM's scores: std inf, or ~0
            if not ok(rm_summary[k]):
                raise _diverged("rm", f"{k} is {rm_summary[k]:.3g} (the reward model's scores "
                                "on reference samples, RLHF.9)", out)
        write_csv(out / "rm.csv", rm_rows)
        save_npz(out / "rm.npz", {"summary": rm_summary, "config": stage_config(cfg, "rm")},
                 params=rm.params)
    else:
        rm, rm_summary, _ = loaded["rm"]
        print_fn(f"[rm] loaded {out / 'rm.npz'}")

    # stage 3: RL, the main run and the sweep, each from the same start with its own stream;
    # every run's CSV, then rl.npz with every run's policy (for the samples)
    settings = _rl_settings(cfg)
    if first <= 2:
        runs: dict[str, list[dict]] = {}
        policies: dict[str, TinyLM] = {}
        for (name, rl_cfg), seed in zip(settings, seeds[2].spawn(len(settings))):
            tag = "adaptive" if rl_cfg.adaptive else "fixed"
            print_fn(f"[rl] {name}: beta {rl_cfg.beta:g} ({tag}), {rl_cfg.iterations} "
                     f"iterations of {rl_cfg.batch} sentences")
            every, last = max(1, rl_cfg.iterations // 5), rl_cfg.iterations - 1

            def show(r: dict, every=every, last=last) -> None:
                if r["iter"] % every == 0 or r["iter"] == last:
                    print_fn(_rl_line(r))

            rng = np.random.default_rng(seed)
            if rl_cfg.algo == "rl":
                keys = ("proxy", "gold", "kl", "beta", "entropy", "approx_kl") + (
                    ("value_loss",) if rl_cfg.estimator == "ppo" else ())  # no critic otherwise
                policy, rows = rl_finetune(rl_cfg, lm, rm, grammar, rng,
                                           _watch("rl", keys, show, out))
            else:  # DPO / IPO on the labeller's pairs, no RL (derivations/14-rlhf-losses.md)
                pairs = preference_pairs(lm, grammar, cfg.rm.pairs, cfg.rm.temperature, rng,
                                         max_len)
                policy, rows = dpo_finetune(rl_cfg, lm, pairs, grammar, rm, rng,
                                            _watch("rl", ("proxy", "gold", "kl", "pair_loss"),
                                                   show, out))
            _check_finite("rl", policy, out)
            runs[name], policies[name] = rows, policy
        for name, rows in runs.items():
            write_csv(out / ("rl.csv" if name == "main" else f"rl_{name}.csv"), rows)
        save_npz(out / "rl.npz", {"final_beta": runs["main"][-1]["beta"], "runs": list(runs),
                                  "config": stage_config(cfg, "rl")},
                 **{f"policy_{name}": p.params for name, p in policies.items()})
    else:
        policies = loaded["rl"][0]
        print_fn(f"[rl] loaded {out / 'rl.npz'}")

    # what a reader looks at, from the files just written or loaded: sentences before and
    # after, figures, the summary (written last: its presence says the run finished)
    lm_rows, rm_rows = read_rows(out / "lm.csv", "lm"), read_rows(out / "rm.csv", "rm")
    runs = {name: read_rows(out / ("rl.csv" if name == "main" else f"rl_{name}.csv"), "rl")
            for name, _ in settings}
    summary = dict(lm_summary) | {"lm_wall_s": lm_rows[-1]["wall_s"]}
    summary |= {f"rm_{k}": v for k, v in rm_summary.items()} | {"rm_wall_s": rm_rows[-1]["wall_s"]}
    summary |= rl_summary(runs)
    eval_rng = np.random.default_rng(seeds[3])
    atomic_write(out / "samples.txt", samples_text(lm, policies, rm, grammar, eval_rng, max_len))
    if figures:
        from pgnumpy.rlhf.figures import lm_figure, overoptimisation_figure, rm_figure

        lm_figure(lm_rows, summary, out / "rlhf_lm_loss.png")
        rm_figure(rm_rows, out / "rlhf_rm_accuracy.png")
        overoptimisation_figure(runs, out / "rlhf_overoptimisation.png")
    summary["wall_s"] = round(time.perf_counter() - t0, 2)
    atomic_write(out / "summary.json", json.dumps(summary, indent=2) + "\n")
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
