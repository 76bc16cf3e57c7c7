"""`python -m pgnumpy.bench --suite`: every PPO preset over seeds 0..N-1, one table beside RL-Zoo.

    python -m pgnumpy.bench --suite                          # every preset, seeds 0-4, 1 worker
    python -m pgnumpy.bench --suite --envs Acrobot-v1,LunarLander-v3 --seeds 3
    python -m pgnumpy.bench --suite --workers 2              # returns only: times are shared

Each env's seeds run as one `pgnumpy.sweep` (Ray) of its preset into OUT/ENV/ (default OUT:
runs/suite): one worker by default, because the table reports training seconds, and seconds
measured while other trials share the cores are not the run's own (--workers K runs K at once
when only returns are wanted; the table then says so). Each run stops at its bar where the bar is
gymnasium's reward threshold (the 100-episode training mean, as `pgnumpy.train` stops); where the
env has none it runs the preset's whole budget. After training, each seed's final policy plays
100 episodes with greedy actions (RL-Zoo's measure: deterministic evaluation), env seeds
10_000 + 100 * seed + k. The table: seeds that reached the bar, the median env steps and training
seconds to it (or the median final training return at the budget), the greedy return's mean +-
std over all seeds' episodes and its worst seed, and Zoo's PPO figure. OUT/ENV/seeds.png
draws every seed's learning curve and the bar (OUT/ENV/learning_curves.png is the sweep's).
Then the throughput table for CartPole-v1 (gymnax-blines' layout): seconds per 1M env steps
with random actions, with the policy acting, and for PPO's whole training, at the default
num_envs.
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

from pgnumpy.errors import UserError

# RL-Zoo's PPO results (its benchmark.md, as quoted in issue 26): (return, env steps). Zoo's
# figure is the mean return of its trained agent over evaluation episodes.
ZOO_PPO: dict[str, tuple[float, int]] = {
    "Acrobot-v1": (-73.5, 1_000_000),
    "MountainCar-v0": (-110.4, 1_000_000),
    "MountainCarContinuous-v0": (88.3, 20_000),
    "Pendulum-v1": (-172.2, 100_000),
    "LunarLander-v3": (242.1, 1_000_000),
    "LunarLanderContinuous-v3": (270.9, 1_000_000),
    "Hopper-v5": (2410.0, 1_000_000),
    "Walker2d-v5": (3479.0, 1_000_000),
    "Swimmer-v5": (282.0, 1_000_000),
}
EVAL_EPISODES = 100
THROUGHPUT_STEPS = 200_000  # PPO's training budget in the throughput table (CartPole-v1)


def bar(env_id: str) -> tuple[float, bool]:
    """(the return a seed must reach, whether it is gymnasium's threshold a run stops at): the
    threshold where the env has one that the issue names (CartPole 475, Acrobot -100, MountainCar
    -110, MountainCarContinuous 90, LunarLander 200), else Zoo's return, judged by the greedy
    evaluation after the whole budget."""
    import gymnasium as gym

    threshold = gym.spec(env_id).reward_threshold
    if threshold is not None and not env_id.endswith("-v5"):  # MuJoCo's thresholds: Zoo's bar
        return float(threshold), True
    if env_id in ZOO_PPO:
        return ZOO_PPO[env_id][0], False
    return math.inf, False


def greedy_returns(run_dir: str, seed: int, episodes: int | None = None) -> list[float]:
    from pgnumpy.api import load
    from pgnumpy.evaluate import run_episodes

    returns, _ = run_episodes(load(run_dir), episodes or EVAL_EPISODES, seed=10_000 + 100 * seed)
    return returns


def draw_seeds(env_id: str, run_dirs: list[tuple[int, str]], target: float, path: Path,
               workers: int = 1) -> None:
    """Every seed's learning curve to its own end (the sweep's figure bands the seeds over the
    range all of them ran, which hides the last steps of the longer runs), and the bar."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pgnumpy.fileio import atomic_write
    from pgnumpy.plot import read_run

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for seed, d in run_dirs:
        _, cols = read_run(Path(d))
        for ax, xkey in zip(axes, ("env_steps", "wall_s")):
            ax.plot(cols[xkey], cols["ep_return_mean"], label=f"seed {seed}", lw=1.2)
    seconds = "training seconds (1 worker)" if workers == 1 else \
        f"training seconds ({workers} trials at a time)"
    for ax, xlabel in zip(axes, ("env steps", seconds)):
        if math.isfinite(target):
            ax.axhline(target, color="k", ls="--", lw=0.8, label=f"bar {target:g}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean return, last 100 episodes")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"PPO preset on {env_id}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def suite_row(env_id: str, seeds: int, out: Path, workers: int) -> dict:
    from pgnumpy.sweep import run_sweep

    target, stops = bar(env_id)
    sets = [f"env_id={env_id}"] + ([] if stops else ["target_return=inf"])
    result = run_sweep("ppo", out, sets=sets, seeds=seeds, workers=workers)
    if result.failed:
        raise UserError(f"{env_id}: {result.failed} trial(s) failed; see {out}/trials/*/trial.json")
    records = sorted(((t.seed, t.run_dir, t.record) for t in result.trials), key=lambda x: x[0])
    draw_seeds(env_id, [(s, str(d)) for s, d, _ in records], target, out / "seeds.png",
               workers)
    evals = {s: greedy_returns(str(d), s) for s, d, _ in records}
    if stops:
        reached = [r for _, _, r in records if r["solved_steps"] is not None]
    else:
        reached = [r for s, _, r in records if statistics.fmean(evals[s]) >= target]
    pooled = [x for s in evals for x in evals[s]]
    return {
        "env": env_id, "bar": target, "stops": stops, "seeds": seeds,
        "reached": len(reached),
        "steps": statistics.median(r["solved_steps"] for r in reached) if stops and reached
        else None,
        "seconds": statistics.median(r["solved_s"] for r in reached) if stops and reached
        else None,
        "final": statistics.median(r["final_return"] for _, _, r in records),
        "budget_steps": statistics.median(r["env_steps"] for _, _, r in records),
        "budget_s": statistics.median(r["wall_s"] for _, _, r in records),
        "eval_mean": statistics.fmean(pooled), "eval_std": statistics.pstdev(pooled),
        "eval_worst": min(statistics.fmean(v) for v in evals.values()),
        "zoo": ZOO_PPO.get(env_id),
    }


def format_row(r: dict) -> str:
    what = "threshold" if r["stops"] else "Zoo, greedy"
    if not math.isfinite(r["bar"]):  # no threshold and no Zoo figure (HalfCheetah): returns only
        bar_cell, reached = "none", "-"
    else:
        bar_cell, reached = f"{r['bar']:g} ({what})", f"{r['reached']}/{r['seeds']}"
    if r["stops"] and r["steps"] is not None:
        to_bar = f"{r['steps']:,.0f} | {r['seconds']:.1f}"
    else:
        to_bar = (f"- (final {r['final']:.1f} at {r['budget_steps']:,.0f}) | "
                  f"{r['budget_s']:.1f} for the budget")
    zoo = f"{r['zoo'][0]:g} @ {r['zoo'][1]:,}" if r["zoo"] else "-"
    return (f"| {r['env']} | {bar_cell} | {reached} | {to_bar} | "
            f"{r['eval_mean']:.1f} ± {r['eval_std']:.1f} (worst seed {r['eval_worst']:.1f}) | "
            f"{zoo} |")


HEADER = ("| env | bar | seeds reaching it | median env steps to it | median training s to it "
          "| greedy return, {episodes} episodes a seed: mean ± std | RL-Zoo PPO |\n"
          "|---|---|---|---|---|---|---|")


def throughput(seconds: float = 2.0, steps: int | None = None) -> str:
    """gymnax-blines' table for CartPole-v1: seconds per 1M env steps (random actions; the
    policy acting; PPO's whole training, a fixed budget of `steps` run through pgnumpy.sweep
    with one worker), at the default config's num_envs."""
    import tempfile

    from pgnumpy.bench import env_rates
    from pgnumpy.sweep import run_sweep
    from pgnumpy.train import parse_args

    steps = THROUGHPUT_STEPS if steps is None else steps
    _, cfg, _ = parse_args([])
    bare, acting = env_rates(cfg, seconds)
    with tempfile.TemporaryDirectory() as tmp:
        res = run_sweep("ppo", Path(tmp), sets=[f"total_steps={steps}", "target_return=inf"],
                        seeds=1, workers=1, plot=False)
        rec = res.trials[0].record
    train = rec["wall_s"] / rec["env_steps"] * 1e6
    return (f"| CartPole-v1, num_envs = {cfg.num_envs} | random policy | policy acting "
            "| PPO training |\n"
            "|---|---|---|---|\n"
            f"| seconds per 1M env steps | {1e6 / bare:.1f} | {1e6 / acting:.1f} | {train:.1f} |")


def run_suite(envs: list[str], seeds: int, out: Path, workers: int) -> None:
    rows = []
    for env_id in envs:
        print(f"\n== {env_id}: {seeds} seeds, {workers} worker(s) ==", flush=True)
        rows.append(suite_row(env_id, seeds, out / env_id, workers))
    print("\nPPO presets, seeds 0-{}, {} worker(s){}".format(
        seeds - 1, workers, "" if workers == 1 else " (times measured with trials sharing the "
        "cores: compare returns only)"))
    print(HEADER.format(episodes=EVAL_EPISODES))
    for r in rows:
        print(format_row(r))
    print("learning curves, every seed: " + ", ".join(str(out / e / "seeds.png") for e in envs))
    print("\n" + throughput())
    sys.stdout.flush()


def suite_envs(text: str | None) -> list[str]:
    from pgnumpy.algos.ppo import PRESETS, PPOConfig

    tuned = [PPOConfig.env_id, *PRESETS]  # CartPole's settings are the dataclass defaults
    if text is None:
        return tuned
    envs = [e.strip() for e in text.split(",") if e.strip()]
    unknown = [e for e in envs if e not in tuned]
    if not envs or unknown:
        raise UserError(f"--envs takes preset env ids ({', '.join(tuned)}); got "
                        f"{', '.join(unknown) or repr(text)}")
    return envs


def main(argv: list[str]) -> int:
    from pgnumpy import cli

    p = cli.ArgumentParser(prog="python -m pgnumpy.bench --suite",
                           description=__doc__.splitlines()[0])
    p.add_argument("--suite", action="store_true", required=True)
    p.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 per preset (default 5)")
    p.add_argument("--envs", default=None, help="comma-separated preset env ids (default: all)")
    p.add_argument("--workers", type=int, default=1,
                   help="trials at once (default 1: training seconds are measured)")
    p.add_argument("--out", default="runs/suite", help="where the sweeps go (default runs/suite)")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.workers < 1:
        raise UserError(f"--seeds and --workers must be >= 1, got {args.seeds}, {args.workers}")
    run_suite(suite_envs(args.envs), args.seeds, Path(args.out), args.workers)
    return 0
