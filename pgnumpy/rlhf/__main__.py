"""`python -m pgnumpy.rlhf`: the whole RLHF pipeline at toy scale, in under a minute.

    python -m pgnumpy.rlhf --out runs/rlhf                      # all stages
    python -m pgnumpy.rlhf --out runs/rlhf --from-stage rl --beta 0.02   # RL again, same LM and RM

The run directory holds config.json, lm.npz / rm.npz / rl.npz (each stage's checkpoint),
lm.csv, rm.csv, rl.csv and rl_beta_B.csv (one row per step or iteration), samples.txt
(sentences before and after RL), summary.json and the figures rlhf_*.png.

The run directory is pgnumpy's: --out must be new, empty, or an RLHF run (a directory holding
other files is refused before anything is written), and one process at a time works in it.
Interrupted (Ctrl-C, a kill), a run is continued by the same command (or by --config
OUT/config.json --out OUT): the finished stages are loaded and the rest rerun, with the same
results. --from-stage reruns a stage of a run, and first moves every file the rerun replaces
to OUT/replaced/STAMP/ with the config.json that made it: nothing measured is lost.
"""

from __future__ import annotations

import os

from pgnumpy import cli

if __name__ == "__main__":
    cli.guard_startup()  # Ctrl-C while numpy loads: one line

# Small matrices: one BLAS thread is faster than several fighting for 2 cores (set before numpy).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from pgnumpy.errors import UserError  # noqa: E402
from pgnumpy.rlhf.dpo import ALGOS  # noqa: E402
from pgnumpy.rlhf.finetune import ESTIMATORS, KL_PENALTIES  # noqa: E402
from pgnumpy.rlhf.losses import KL_ESTIMATORS, LOSS_AGGS, SCALE_REWARDS  # noqa: E402
from pgnumpy.rlhf.pipeline import (  # noqa: E402
    STAGES,
    RLHFConfig,
    no_run_message,
    read_config,
    run,
)

_Parser = cli.ArgumentParser


def _floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


def parse_args(argv: list[str]) -> tuple[RLHFConfig, argparse.Namespace]:
    p = _Parser(prog="python -m pgnumpy.rlhf", description=__doc__.splitlines()[0],
                epilog=__doc__.split("\n\n", 2)[2].strip(),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    S = argparse.SUPPRESS  # only what the user typed overrides the defaults / the saved config
    p.add_argument("--out", default=None, help="run directory (default: runs/rlhf-seedS-TIME)")
    p.add_argument("--from-stage", default=None, choices=STAGES,
                   help="rerun the run in --out from this stage, loading the earlier stages' "
                        "checkpoints and its saved config (flags given still win). Nothing "
                        "measured is lost: every file the rerun replaces is first moved to "
                        "OUT/replaced/STAMP/ with the config.json that made it. Without "
                        "--from-stage, the command starts a run, or continues an interrupted "
                        "one with the same config")
    p.add_argument("--config", default=None,
                   help="start from this config.json (e.g. a run directory's) instead of the "
                        "defaults; flags given still win")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--seed", type=int, default=S, help="(default: 0)")
    p.add_argument("--lm-steps", type=int, default=S, help="pretraining Adam steps (2500)")
    p.add_argument("--rm-steps", type=int, default=S, help="reward-model Adam steps (800)")
    p.add_argument("--rm-temperature", type=float, default=S,
                   help="the rater's noise tau in (RLHF.7) (0.5)")
    p.add_argument("--beta", type=float, default=S, help="KL coefficient of the main RL run")
    p.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=S,
                   help="Ziegler et al.'s adaptive KL controller for the main run (off)")
    p.add_argument("--kl-target", type=float, default=S,
                   help="the controller's target, nats per sentence (with --adaptive only)")
    p.add_argument("--rl-iterations", type=int, default=S, help="PPO iterations per RL run")
    p.add_argument("--estimator", default=S,
                   choices=ESTIMATORS,
                   help="the advantage fed to PPO-clip: GAE + critic (ppo), or a group form "
                        "(derivations/13-rlhf-exact.md) (ppo)")
    p.add_argument("--group", type=int, default=S,
                   help="sentences per group for the group estimators (4; refused with ppo)")
    p.add_argument("--kl-penalty", default=S, choices=KL_PENALTIES,
                   help="KL as k1 in the reward, or GRPO's k3 term in the loss (reward)")
    # issue 27: the loss options of TRL and verl (derivations/14-rlhf-losses.md)
    p.add_argument("--loss-agg", default=S, choices=LOSS_AGGS,
                   help="token weights of a group form: TRL loss_type or verl loss_agg_mode "
                        "(the estimator's own)")
    p.add_argument("--scale-rewards", default=S, choices=SCALE_REWARDS,
                   help="TRL scale_rewards: divide by the group's or batch's std, or not")
    p.add_argument("--kl-estimator", default=S, choices=KL_ESTIMATORS,
                   help="verl kl_penalty / kl_loss_type; in the reward, or in the loss with "
                        "--kl-penalty loss (k1)")
    p.add_argument("--micro-batch", type=int, default=S,
                   help="sentences per micro-batch, gradients accumulated (0: one)")
    p.add_argument("--steps-per-batch", type=int, default=S,
                   help="passes over each batch (TRL num_iterations, verl ppo_epochs) (4)")
    p.add_argument("--algo", default=S, choices=ALGOS,
                   help="stage 3: rl, or dpo / ipo on the labeller's pairs (rl)")
    p.add_argument("--sweep-betas", type=_floats, default=S,
                   help="extra fixed-beta RL runs for the over-optimisation figure, e.g. "
                        "0.2,0.01,0 ('' for none)")
    args = p.parse_args(argv)
    saved = None
    if args.from_stage is not None:
        if args.out is None:
            raise UserError("--from-stage needs --out: the run directory whose checkpoints to use")
        if args.config is not None:
            raise UserError("--config starts a run from a config file; --from-stage reruns a "
                            "stage of the run in --out with its own config.json: give one")
        saved = Path(args.out) / "config.json"
        if not saved.is_file():
            raise UserError(no_run_message(Path(args.out)))
    if args.config is not None:
        saved = Path(args.config)
        if not saved.is_file():
            raise UserError(f"{saved} is not a regular file" if saved.exists() else
                            f"no config file at {saved}")
    base = read_config(saved) if saved is not None else RLHFConfig()
    d = base.to_dict()
    given = vars(args)
    for flag, (section, name) in {
        "seed": (None, "seed"), "sweep_betas": (None, "sweep_betas"),
        "lm_steps": ("lm", "steps"), "rm_steps": ("rm", "steps"),
        "rm_temperature": ("rm", "temperature"), "beta": ("rl", "beta"),
        "adaptive": ("rl", "adaptive"), "kl_target": ("rl", "kl_target"),
        "rl_iterations": ("rl", "iterations"), "estimator": ("rl", "estimator"),
        "group": ("rl", "group"), "kl_penalty": ("rl", "kl_penalty"),
        "loss_agg": ("rl", "loss_agg"), "scale_rewards": ("rl", "scale_rewards"),
        "kl_estimator": ("rl", "kl_estimator"), "micro_batch": ("rl", "micro_batch"),
        "steps_per_batch": ("rl", "update_epochs"), "algo": ("rl", "algo"),
    }.items():
        if flag in given:
            (d if section is None else d[section])[name] = given[flag]
    rl = d["rl"]  # flags the final config would ignore: refused, not dropped silently
    if "group" in given and rl["estimator"] == "ppo":
        raise UserError("--group is the group estimators' group size; ppo has none (give "
                        "--estimator rloo, grpo, grpo_nostd or dr_grpo)")
    if "kl_target" in given and not rl["adaptive"]:
        raise UserError("--kl-target sets the adaptive controller's target: add --adaptive "
                        "(without it beta stays fixed and the target is unused)")
    first = STAGES.index(args.from_stage or "lm")
    for section in STAGES[:first]:  # a loaded stage cannot change: its checkpoint is what it is
        if d[section] != base.to_dict()[section]:
            raise UserError(f"--from-stage {args.from_stage} reuses the {section} stage's "
                            f"checkpoint; a flag that changes the {section} stage needs "
                            f"--from-stage {section}")
    return RLHFConfig.from_dict(d), args


def _main(argv: list[str] | None) -> int:
    from threadpoolctl import threadpool_limits

    argv = sys.argv[1:] if argv is None else argv
    cfg, args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/rlhf-seed{cfg.seed}-{stamp}")
    say = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    try:
        with threadpool_limits(limits=1, user_api="blas"):  # as training elsewhere
            summary = run(cfg, out, from_stage=args.from_stage, figures=not args.no_figures,
                          print_fn=say)
    except (KeyboardInterrupt, Exception) as e:  # also an error raised while handling one (numba)
        if not cli.is_interrupt(e):
            raise
        done = [s for s in STAGES if (out / f"{s}.npz").exists()]
        where = (f"; the finished stages' checkpoints ({', '.join(done)}) are kept in {out}/"
                 if done else "; no stage had finished")
        # a rerun from a stage: the same command (again, it moves what it would replace);
        # without --out, the default directory is new each time: name it
        again = "the same command" + ("" if args.out else f" with --out {out}")
        if args.from_stage is None and (out / "config.json").exists():
            again += f", or python -m pgnumpy.rlhf --config {out}/config.json --out {out}"
        print(f"\ninterrupted{where}; to continue: {again}", file=sys.stderr)
        return cli.INTERRUPTED
    main_run = summary["rl_main"]
    print(f"LM held-out CE {summary['heldout_ce']:.4f} nats/token (true entropy "
          f"{summary['true_entropy']:.4f}, best with its window {summary['context_floor']:.4f}); "
          f"RM held-out accuracy {summary['rm_heldout_acc']:.3f} (best possible "
          f"{summary['rm_best_acc']:.3f}); RL gold {main_run['gold_before']:+.3f} -> "
          f"{main_run['gold_after']:+.3f} at KL {main_run['kl_after']:.2f} nats; "
          f"{summary['wall_s']:.1f} s")
    print(f"run written to {out}/")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command, through pgnumpy's one error entry point (pgnumpy/cli.py)."""
    return cli.entry(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
