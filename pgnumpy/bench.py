"""`python -m pgnumpy.bench`: the training-quality and speed benchmark (not a unit test).

    python -m pgnumpy.bench                                  # PPO on CartPole-v1, 5 seeds
    python -m pgnumpy.bench --env Pendulum-v1 --target -250  # with its preset, 300k steps
    python -m pgnumpy.bench --algo vpg --seeds 3
    python -m pgnumpy.bench --algo trpo                      # + where TRPO's time goes

For each seed it trains as `python -m pgnumpy.train` does (the CLI's defaults and the env's
preset, a run directory with its checkpoints as the CLI writes them, here a temporary one),
stopping at the target (default: the env's reward_threshold), and reports: seeds solved, median
env steps and wall seconds (training only, imports excluded) at which the 100-episode mean first
reached the target, the median final return, the training throughput (env steps per second,
updates included), and, measured in the same process: the bare env rate (random actions) and
the acting rate (policy forward + sampling + env step), with their ratio. For an algorithm that
keeps phase timers (TRPO: rollouts, gradient + CG, line search, critic fit) it also prints each
phase's median share of the training time.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from pgnumpy import cli

if __name__ == "__main__":
    cli.guard_startup()

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from pgnumpy import kernels  # noqa: E402
from pgnumpy.errors import UserError  # noqa: E402
from pgnumpy.rollout import Runner, collect, make_env  # noqa: E402
from pgnumpy.train import ALGOS, _widths, parse_args, run  # noqa: E402


def env_rates(cfg, seconds: float = 1.0) -> tuple[float, float]:
    """(bare env steps/s with random actions, acting steps/s with a fresh policy), same env."""
    from pgnumpy.policy import make_policy

    env = make_env(cfg.env_id, cfg.num_envs)
    env.reset(seed=0)
    env.action_space.seed(0)
    acts = [env.action_space.sample() for _ in range(64)]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step(acts[n % 64])
        n += 1
    bare = n * cfg.num_envs / (time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    policy = make_policy(env, cfg.hidden, cfg.activation, rng=rng)
    runner = Runner.start(env, seed=0)
    kernels.warm_up()  # load collect's numba kernel before the clock, as train does
    T = max(1, int(bare * seconds / cfg.num_envs / 3))
    t0 = time.perf_counter()
    collect(runner, lambda o: policy.act(o, rng), T=T)
    acting = T * cfg.num_envs / (time.perf_counter() - t0)
    env.close()
    return bare, acting


THREADS_CODE = """
import json
from pgnumpy.algos.ppo import PPOConfig, train
walls = [train(PPOConfig(seed=s, hidden={hidden!r}, target_return=float('inf'),
                         total_steps=40_000)).history[-1]['wall_s'] for s in (0, 1, 2)]
print(json.dumps(walls))
"""


def compare_threads(hidden: tuple[int, ...], repeats: int = 2) -> None:
    """PPO on CartPole for 40k steps, 3 seeds, with 1 and with 2 BLAS threads, alternating, each
    in a fresh process (the thread count is fixed when numpy loads)."""
    import json
    import statistics
    import subprocess

    walls: dict[str, list[float]] = {"1": [], "2": []}
    for _ in range(repeats):
        for n in walls:
            env = dict(os.environ, OPENBLAS_NUM_THREADS=n, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)
            code = THREADS_CODE.format(hidden=tuple(hidden))
            out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                 capture_output=True, text=True).stdout
            walls[n] += json.loads(out.strip().splitlines()[-1])
    for n, w in walls.items():
        print(f"{n} BLAS thread(s), hidden {tuple(hidden)}: median {statistics.median(w):.2f} s "
              f"over {len(w)} runs of 40k steps {[round(x, 2) for x in w]}")


def _main(argv: list[str] | None) -> int:
    p = cli.ArgumentParser(prog="python -m pgnumpy.bench", description=__doc__.splitlines()[0])
    p.add_argument("--algo", default="ppo", choices=list(ALGOS))
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--target", type=float, default=None, help="return that counts as solved")
    p.add_argument("--total-steps", type=int, default=None, help="budget per seed (ppo, trpo)")
    p.add_argument("--compare-threads", action="store_true",
                   help="only time 1 vs 2 BLAS threads (PPO, CartPole, 40k steps, 3 seeds x 2)")
    p.add_argument("--hidden", default=None,
                   help="with --compare-threads: layer widths, e.g. 64,64 (default: PPO's)")
    args = p.parse_args(argv)
    given = [f for f, d in (("--algo", "ppo"), ("--env", "CartPole-v1"), ("--seeds", 5),
                            ("--target", None), ("--total-steps", None))
             if getattr(args, f[2:].replace("-", "_")) != d]
    if args.compare_threads:
        if given:  # compare_threads has its own fixed protocol: refuse flags it would ignore
            raise UserError(f"--compare-threads times a fixed PPO CartPole run; drop "
                            f"{' '.join(given)}")
        from pgnumpy.algos.ppo import PPOConfig

        widths = PPOConfig.hidden if args.hidden is None else _widths(args.hidden)
        compare_threads(widths)
        return 0
    if args.hidden is not None:
        raise UserError("--hidden goes with --compare-threads; for a benchmark run, the preset's "
                        "widths are used")
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    flags = ["--algo", args.algo, "--env", args.env]
    if args.target is not None:
        flags += ["--target-return", str(args.target)]
    if args.total_steps is not None:
        flags += ["--total-steps", str(args.total_steps)]
    _, cfg, _ = parse_args(flags)
    make_env(cfg.env_id, 1).close()  # an unknown or unsupported env: one line, before any run

    solved_steps, solved_wall, finals, rates, shares = [], [], [], [], []
    for seed in range(args.seeds):
        _, cfg, _ = parse_args([*flags, "--seed", str(seed)])
        with tempfile.TemporaryDirectory() as out:  # as the CLI runs: run directory, checkpoints
            r = run(args.algo, cfg, Path(out), quiet=True)
        last = r.history[-1]
        finals.append(last["ep_return_mean"])
        rates.append(last["env_steps"] / last["wall_s"])
        if r.solved_at is not None:
            solved_steps.append(r.solved_at["env_steps"])
            solved_wall.append(r.solved_at["wall_s"])
        if r.timers:
            shares.append({k: v / last["wall_s"] for k, v in r.timers.items()})
        s = r.solved_at
        print(f"seed {seed}: " + (f"solved at {s['env_steps']} steps, {s['wall_s']:.2f} s"
                                  if s else f"not solved in {last['env_steps']} steps, "
                                  f"{last['wall_s']:.2f} s")
              + f"; final 100-episode mean {last['ep_return_mean']:.1f}", flush=True)
    if shares:
        print("time split (median share of training time over seeds): " + ", ".join(
            f"{k} {np.median([sh[k] for sh in shares]):.0%}" for k in shares[0])
            + f", other {np.median([1 - sum(sh.values()) for sh in shares]):.0%}")
    bare, acting = env_rates(cfg)
    med = (lambda x: f"{np.median(x):.0f}") if solved_steps else (lambda x: "-")
    medw = f"{np.median(solved_wall):.2f}" if solved_wall else "-"
    header = ("| env | algo | solved | median steps to solve | median seconds to solve | "
              "median final return | train steps/s | bare env steps/s | acting steps/s (ratio) |")
    print(header)
    print("|" + "---|" * 9)
    print(f"| {cfg.env_id} (N={cfg.num_envs}) | {args.algo} | {len(solved_steps)}/{args.seeds} | "
          f"{med(solved_steps)} | {medw} | {np.median(finals):.1f} | {np.median(rates):,.0f} | "
          f"{bare:,.0f} | {acting:,.0f} ({acting / bare:.0%}) |")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.entry(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
