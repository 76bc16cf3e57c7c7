"""`python -m pgnumpy.bench`: the training-quality and speed benchmark (not a unit test).

    python -m pgnumpy.bench                                  # PPO on CartPole-v1, 5 seeds
    python -m pgnumpy.bench --env Pendulum-v1 --target -250  # with its preset (gSDE), 100k steps
    python -m pgnumpy.bench --algo vpg --seeds 3
    python -m pgnumpy.bench --algo trpo                      # + where TRPO's time goes
    python -m pgnumpy.bench --compare HEAD~1 --seeds 2       # this tree vs a revision, ratios
    python -m pgnumpy.bench --suite                          # every PPO preset vs RL-Zoo

For each seed it trains as `python -m pgnumpy.train` does (the CLI's defaults and the env's
preset, a run directory with its checkpoints as the CLI writes them, here a temporary one),
stopping at the target (default: the env's reward_threshold), and reports: seeds solved, median
env steps and wall seconds (training only, imports excluded) at which the 100-episode mean first
reached the target, the median final return, the training throughput (env steps per second,
updates included), and, measured in the same process: the bare env rate (random actions) and
the acting rate (policy forward + sampling + env step), with their ratio. For an algorithm that
keeps phase timers (TRPO: rollouts, gradient + CG, line search, critic fit) it also prints each
phase's median share of the training time.

`--compare REF` times this tree against another version of the code (a git revision, exported
to a temporary directory, or a path to another checkout): each run a fresh `python -m
pgnumpy.train` process of one tree or the other, interleaved, with the ratios of the medians.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pgnumpy import cli

if __name__ == "__main__":
    cli.guard_startup()

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from pgnumpy import kernels  # noqa: E402
from pgnumpy.algos.common import solved_threshold  # noqa: E402
from pgnumpy.errors import UserError  # noqa: E402
from pgnumpy.logger import read_progress  # noqa: E402
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


# ---------------------------------------------------------------------------- --compare REF

TREE = Path(__file__).resolve().parents[1]  # the checkout this file belongs to: "this"
WARM_UP_STEPS = 2048  # the untimed run per tree: enough to load (or compile) every numba kernel
# the run's own last line, checked against its progress.csv (which is what is measured)
SAID = re.compile(r"^(solved|finished): .* after (\d+) env steps", re.MULTILINE)


@dataclass
class Tree:
    name: str  # "this" or "ref"
    root: Path  # the directory holding its pgnumpy/ package
    label: str  # how the table names it


@dataclass
class Timed:
    tree: str
    seed: int
    repeat: int
    solved: bool
    steps: int  # env steps at the solve, or at the end of the budget
    train_s: float  # training seconds to the same point (progress.csv's wall_s)
    process_s: float  # the whole child process, start-up and imports included


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("--compare with a revision needs git, which is not installed") from None


def resolve_ref(ref: str, work: Path) -> Tree:
    """REF as a path to a pgnumpy checkout (an existing path wins over a revision of the same
    name; the table's label says which it was), or else as a git revision of this tree's
    repository, exported under `work` (removed with it)."""
    if not ref.strip():  # Path("") is ".": the tree compared with itself, "identical runs"
        raise UserError("--compare needs a git revision or the path of a pgnumpy checkout, "
                        "got an empty string")
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "pgnumpy" / "__init__.py").is_file():
            raise UserError(f"--compare {ref}: not a pgnumpy checkout (no "
                            f"pgnumpy/__init__.py in {path})")
        return Tree("ref", path.resolve(), f"ref ({path.resolve()})")
    top = _git(["rev-parse", "--show-toplevel"], TREE)
    if top.returncode != 0:
        raise UserError(f"--compare {ref}: no such directory, and git cannot read it as a "
                        f"revision of {TREE}: {_last_line(top.stderr, 'not a git checkout')}")
    commit = _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], TREE)
    if ref.startswith("-") or commit.returncode != 0:
        raise UserError(f"--compare {ref}: neither a directory nor a revision git knows in "
                        f"{top.stdout.strip()}")
    sha = commit.stdout.strip()
    dest = work / "ref"
    dest.mkdir()
    # from the repository's root, found from this file, not the cwd (the bench may run anywhere)
    with subprocess.Popen(["git", "archive", sha], cwd=top.stdout.strip(),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as archive:
        tar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout,
                             capture_output=True, text=True)
    if archive.returncode != 0 or tar.returncode != 0:
        raise UserError(f"--compare {ref}: exporting {sha[:10]} failed: "
                        f"{_last_line(tar.stderr, 'git archive failed')}")
    # this tree may sit below the repository's root: the ref's is at the same place
    root = dest / _git(["rev-parse", "--show-prefix"], TREE).stdout.strip()
    if not (root / "pgnumpy" / "__init__.py").is_file():
        raise UserError(f"--compare {ref}: revision {sha[:10]} has no pgnumpy package")
    return Tree("ref", root, f"ref ({ref} = {sha[:10]})")


def _last_line(text: str, default: str) -> str:
    return next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), default)


def _child_env(tree: Tree) -> dict[str, str]:
    """The environment that makes `import pgnumpy` load `tree` (ahead of any installed copy)."""
    path = [str(tree.root), *filter(None, [os.environ.get("PYTHONPATH")])]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


def check_import(tree: Tree, cwd: Path) -> None:
    """Refuse to time a tree that its child process would not import (an install that shadows
    PYTHONPATH): the ratios would compare a tree with itself."""
    code = "import pgnumpy; print(pgnumpy.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=_child_env(tree),
                         capture_output=True, text=True)
    got = Path(out.stdout.strip()).resolve() if out.returncode == 0 else None
    if got != (tree.root / "pgnumpy" / "__init__.py").resolve():
        raise UserError(f"the {tree.name} tree at {tree.root} is not what `import pgnumpy` loads "
                        f"with it on PYTHONPATH ({got or _last_line(out.stderr, 'no output')})")


def train_child(tree: Tree, argv: list[str], cwd: Path, what: str) -> tuple[float, str]:
    """`python -m pgnumpy.train --quiet ARGV` in a fresh process importing `tree`: (its wall
    seconds, its stdout). A failed run is one UserError naming it; Ctrl-C kills the child."""
    cmd = [sys.executable, "-m", "pgnumpy.train", "--quiet", *argv]
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, cwd=cwd, env=_child_env(tree), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate()
        except BaseException:  # Ctrl-C: Popen's exit would not wait for it; it must not outlive us
            proc.kill()
            proc.wait()
            raise
    seconds = time.perf_counter() - t0
    # a terminal's Ctrl-C reaches the whole process group: the child may have stopped first
    if proc.returncode in (cli.INTERRUPTED, -signal.SIGINT):
        raise KeyboardInterrupt
    if proc.returncode != 0:
        raise UserError(f"the {tree.name} tree's {what} failed (exit status {proc.returncode}): "
                        f"{_last_line(err, 'nothing on stderr')}")
    return seconds, out


def measure(run_dir: Path, stdout: str, env_target: float, what: str) -> tuple[bool, int, float]:
    """(solved, env steps, training seconds) at the row where the 100-episode mean first reached
    the run's target, else at its last row, read from progress.csv; the run's printed last line
    must agree."""
    config = json.loads((run_dir / "config.json").read_text())
    target = config.get("target_return")
    target = env_target if target is None else float(target)
    rows = read_progress(run_dir / "progress.csv")
    if not rows:
        raise UserError(f"{what}: no epoch in its progress.csv")
    hit = next((r for r in rows if r["ep_return_mean"] >= target), None)
    row = hit or rows[-1]
    solved, steps = hit is not None, int(row["env_steps"])
    said = SAID.search(stdout)
    if said and (said[1] == "solved", int(said[2])) != (solved, steps):
        raise UserError(f"{what}: its progress.csv says {'solved' if solved else 'finished'} at "
                        f"{steps} env steps, its output line says {said[1]} at {said[2]}")
    return solved, steps, row["wall_s"]


def compare(ref: str, flags: list[str], seeds: int, repeats: int, env_target: float,
            warm_flags: list[str]) -> None:
    """Time this tree against REF: per tree one untimed run (numba's cache, the OS's file cache),
    then for each repeat and seed a run of each tree, in alternating order (ABBA), so that
    machine noise hits both alike; then the medians and their ratios."""
    with tempfile.TemporaryDirectory(prefix="pgnumpy-compare-") as tmp:  # also on Ctrl-C
        work = Path(tmp)
        trees = [Tree("this", TREE, f"this ({TREE})"), resolve_ref(ref, work)]
        cwd = work / "cwd"  # empty: `python -m` puts the cwd first on sys.path
        cwd.mkdir()
        for tree in trees:
            check_import(tree, cwd)
        which = "seed 0" if seeds == 1 else f"seeds 0-{seeds - 1}"
        print(f"{trees[0].label} vs {trees[1].label}: {' '.join(flags)}, {which} x {repeats} "
              "repeat(s), interleaved, each run a fresh process", flush=True)
        for tree in trees:
            train_child(tree, [*flags, *warm_flags, "--seed", "0", "--out",
                               str(work / f"warm-{tree.name}")], cwd, "warm-up run (seed 0)")
        runs = []
        for r in range(repeats):
            for seed in range(seeds):
                order = trees if (r * seeds + seed) % 2 == 0 else trees[::-1]
                for tree in order:
                    runs.append(timed_run(tree, seed, r, flags, work, cwd, env_target))
    report(runs, trees)


def timed_run(tree: Tree, seed: int, repeat: int, flags: list[str], work: Path, cwd: Path,
              env_target: float) -> Timed:
    out = work / f"{tree.name}-seed{seed}-repeat{repeat}"
    what = f"run (seed {seed}, repeat {repeat})"
    process_s, stdout = train_child(tree, [*flags, "--seed", str(seed), "--out", str(out)], cwd,
                                    what)
    solved, steps, train_s = measure(out, stdout, env_target, f"the {tree.name} tree's {what}")
    t = Timed(tree.name, seed, repeat, solved, steps, train_s, process_s)
    print(f"{tree.name:>4} seed {seed} repeat {repeat}: "
          f"{'solved at' if solved else 'not solved in'} {steps} steps, training {_s(train_s)} s, "
          f"process {_s(process_s)} s", flush=True)
    return t


def _s(seconds: float) -> str:
    return f"{seconds:.2f}" if seconds >= 0.1 else f"{seconds:.3f}"  # a tiny run: 0.015 s


def _ratio(ref: float, this: float) -> str:
    return f"{ref / this:.2f}" if this > 0 else "-"  # a tiny run's training can read 0.000 s


def _speed(ref: float, this: float) -> str:
    if this <= 0 or ref <= 0:
        return "not comparable (a median of 0 s)"
    if f"{ref / this:.2f}" == "1.00":
        return "as fast (1.00x)"
    return f"{ref / this:.2f}x faster" if ref > this else f"{this / ref:.2f}x slower"


def report(runs: list[Timed], trees: list[Tree]) -> None:
    """The table (one row per tree), the ratio line, and whether both trees made the same runs."""
    med: dict[str, tuple[float, float]] = {}
    print("| tree | solved | median steps to solve | median training s | median process s |")
    print("|" + "---|" * 5)
    for tree in trees:
        rs = [r for r in runs if r.tree == tree.name]
        solved = [r.steps for r in rs if r.solved]
        med[tree.name] = (statistics.median(r.train_s for r in rs),
                          statistics.median(r.process_s for r in rs))
        steps = f"{statistics.median(solved):.0f}" if solved else "-"
        print(f"| {tree.label} | {len(solved)}/{len(rs)} | {steps} | {_s(med[tree.name][0])} | "
              f"{_s(med[tree.name][1])} |")
    print("(training s: progress.csv's seconds at the solve, or at the end of the budget if not "
          "solved; process s: the whole `python -m pgnumpy.train`, imports included)")
    (this_t, this_p), (ref_t, ref_p) = med["this"], med["ref"]
    print(f"this is {_speed(ref_t, this_t)} in training (median {_s(this_t)} s vs {_s(ref_t)} s), "
          f"{_speed(ref_p, this_p)} in the whole process ({_s(this_p)} s vs {_s(ref_p)} s); "
          f"ref/this: training {_ratio(ref_t, this_t)}, process {_ratio(ref_p, this_p)}")
    ends: dict[int, set] = {}
    for r in runs:
        ends.setdefault(r.seed, set()).add((r.solved, r.steps))
    differ = [s for s, e in ends.items() if len(e) > 1]
    if not differ:
        print("identical runs: the same env steps at every seed, in both trees and every repeat")
    else:
        print("the runs differ, so the ratios mix speed with what was learned (env steps per "
              "run): " + "; ".join(f"seed {s}: " + ", ".join(f"{r.tree} {r.steps}" for r in runs
                                                           if r.seed == s) for s in differ))


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--suite" in argv:  # every preset, one table beside RL-Zoo: pgnumpy/bench_suite.py
        from pgnumpy import bench_suite

        return bench_suite.main(argv)
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
    p.add_argument("--compare", metavar="REF", default=None,
                   help="time this tree against REF (a git revision, or a path to another "
                   "pgnumpy checkout): fresh processes, interleaved, ratios of the medians")
    p.add_argument("--repeats", type=int, default=None,
                   help="with --compare: passes over the seeds (default: 2)")
    args = p.parse_args(argv)
    if args.compare is not None and args.compare_threads:
        raise UserError("--compare and --compare-threads are two benchmarks; give one of them")
    if args.repeats is not None and args.compare is None:
        raise UserError("--repeats goes with --compare")
    if args.repeats is not None and args.repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {args.repeats}")
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
    env = make_env(cfg.env_id, 1)  # an unknown or unsupported env: one line, before any run
    env_target = solved_threshold(None, env)  # a run's target when its config has none
    env.close()
    if args.compare is not None:
        # a short untimed run per tree, by the budget flag its algorithm has
        warm = (["--total-steps", str(min(cfg.total_steps, WARM_UP_STEPS))]
                if hasattr(cfg, "total_steps") else ["--epochs", "1"])
        repeats = 2 if args.repeats is None else args.repeats
        compare(args.compare, flags, args.seeds, repeats, env_target, warm)
        return 0

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
