"""Small pieces every algorithm uses: building the actor and critics, fitting a critic, stats."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import numpy as np

from pgnumpy.errors import UserError
from pgnumpy.optim import Adam

# why steps_per_env >= 2: a reset step never ends an episode, so two rows always hold a valid one
ONE_STEP = " (a rollout of 1 step can hold only a NEXT_STEP reset step)"


@dataclass
class TrainResult:
    """What `train` returns: the trained networks and the per-epoch history (the progress rows)."""

    policy: object
    critic: object | None
    history: list[dict] = field(default_factory=list)
    solved_at: dict | None = None  # the row where the 100-episode mean first hit the target
    obs_norm: object | None = None  # the observation normaliser, if the run used one
    timers: dict | None = None  # seconds per phase, where the algorithm keeps them (TRPO)


def one_blas_thread(train_fn):
    """Run a `train` function with BLAS on one thread, however numpy was loaded and whatever
    OPENBLAS_NUM_THREADS says: one thread is the fastest here (README, thread policy), and the
    thread count changes the summation order, so pinning it is what makes the CLI, the API and a
    direct call give the same parameters bit for bit. threadpoolctl does it at run time (an
    environment variable only works before numpy is imported)."""

    @functools.wraps(train_fn)
    def train(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return train_fn(*args, **kwargs)

    return train


def available_memory() -> int:
    """Bytes this machine can still give (Linux's MemAvailable; else the physical total)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(cfg, obs_dim: int = 1, act_dim: int = 1) -> None:
    """Refuse a run whose arrays cannot fit, before anything is allocated: an estimate from the
    config (called once before the env exists, with dims of 1: a lower bound that catches
    absurd widths and sizes early, and once after, with the env's dims).

    Networks: 4 float32 copies of each parameter (weights, Adam's m and v, the gradient) for
    the policy and its critic. Rollout: (obs_dim + act_dim + 10) float64 per step (obs, action,
    logp, reward, flags, values, advantages). Update: 3 float32 activations per hidden unit and
    sample of the largest batch passed through a network at once."""
    widths = list(cfg.hidden)
    params = sum((a + 1) * b for a, b in zip([obs_dim, *widths], [*widths, act_dim]))
    params += sum((a + 1) * b for a, b in zip([obs_dim, *widths], [*widths, 1]))
    n_envs = cfg.num_envs
    steps = getattr(cfg, "steps_per_env", None)
    rows = n_envs * steps if steps else 2 * cfg.steps_per_epoch + n_envs
    need = {"networks": 16 * params,
            "rollout": 8 * rows * (obs_dim + act_dim + 10),
            "update": 12 * rows * (sum(widths) + act_dim)}
    total, free = sum(need.values()), available_memory()
    if total > 0.8 * free:
        big = max(need, key=need.get)
        lower = {"networks": "the hidden widths", "rollout": "num_envs or the steps per rollout",
                 "update": "num_envs or the steps per rollout, or the hidden widths"}[big]
        raise UserError(f"this run would need about {total / 2**30:.1f} GiB (mostly the {big}), "
                        f"more than the {free / 2**30:.1f} GiB available: lower {lower}")


def fit_critic(critic, opt: Adam, iters: int, *data) -> float:
    """`iters` full-batch Adam steps on the critic's MSE (VAL.1); return the loss before them."""
    loss0 = None
    for _ in range(iters):
        loss, grad = critic.loss_and_grad(*data)
        loss0 = loss if loss0 is None else loss0
        opt.step(grad)
    return float(loss0)


def n_discrete_actions(env, what: str) -> int:
    """The number of actions of a Discrete action space; `what` needs one."""
    space = env.single_action_space
    if not hasattr(space, "n"):
        raise UserError(f"{what} needs a Discrete action space, got {space}")
    return int(space.n)


def solved_threshold(target_return: float | None, env) -> float:
    """The return at which training stops: given, or the env's reward_threshold, or never."""
    if target_return is not None:
        return target_return
    spec = getattr(env, "spec", None)
    threshold = getattr(spec, "reward_threshold", None) if spec is not None else None
    return float("inf") if threshold is None else float(threshold)


def recent_mean(x: list, k: int = 100) -> float:
    """Mean of the last k finished episodes (nan before the first one ends)."""
    return float(np.mean(x[-k:])) if x else float("nan")


def resume_env_seed(seed: int, resume: dict | None) -> int:
    """The env seed: the run's seed, or (resuming) one derived from it and the epoch reached."""
    return seed if resume is None else seed + 7919 * (int(resume["epoch"]) + 1)


def check_finite(epoch: int, **quantities: float) -> None:
    """A NaN or inf in a loss would poison every later step: stop, naming the quantity.

    Called before the epoch's checkpoint is written, so the last good checkpoint is kept."""
    for name, v in quantities.items():
        if not np.isfinite(v):
            raise UserError(
                f"non-finite {name} ({v}) at epoch {epoch}; the last good checkpoint "
                "is kept. Lower the learning rate, or check the env's rewards"
            )


def end_epoch(
    epoch: int,
    row: dict,
    result: TrainResult,
    logger,
    on_epoch,
    state: dict,
    target: float,
    **losses: float,
) -> bool:
    """The end of every epoch: stop on a non-finite loss (before the checkpoint, so the last good
    one is kept), log the row, checkpoint via on_epoch(epoch, state), and say whether solved."""
    check_finite(epoch, **losses)
    logger.log(row)
    result.history.append(row)
    if on_epoch is not None:
        on_epoch(epoch, state)
    if row["ep_return_mean"] >= target:
        result.solved_at = row
        return True
    return False
