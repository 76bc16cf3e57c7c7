"""Small pieces every algorithm uses: building the actor and critics, fitting a critic, stats."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pgnumpy.errors import UserError
from pgnumpy.optim import Adam


@dataclass
class TrainResult:
    """What `train` returns: the trained networks and the per-epoch history (the progress rows)."""

    policy: object
    critic: object | None
    history: list[dict] = field(default_factory=list)
    solved_at: dict | None = None  # the row where the 100-episode mean first hit the target
    obs_norm: object | None = None  # the observation normaliser, if the run used one
    timers: dict | None = None  # seconds per phase, where the algorithm keeps them (TRPO)


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
