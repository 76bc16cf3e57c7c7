"""The Python API, for notebooks: train from a config, load a run, act with its policy.

    from pgnumpy.api import train, load
    from pgnumpy.algos.ppo import PPOConfig

    result = train(PPOConfig(total_steps=50_000), out="runs/demo")   # out=None: nothing written
    result.history[-1]["ep_return_mean"]
    agent = load("runs/demo")
    action = agent.act(obs)            # one observation -> one action; a batch -> a batch
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from pgnumpy.algos.common import TrainResult
from pgnumpy.checkpoint import load_checkpoint
from pgnumpy.errors import UserError
from pgnumpy.logger import Logger
from pgnumpy.policy import CategoricalPolicy


def train(config, out: str | Path | None = None, quiet: bool = True) -> TrainResult:
    """Train with the algorithm the config belongs to; with `out`, write a run directory too."""
    from pgnumpy.train import ALGOS, run

    algo = next((name for name, (cls, _) in ALGOS.items() if isinstance(config, cls)), None)
    if algo is None:
        raise UserError(f"config must be one of {[c.__name__ for c, _ in ALGOS.values()]}, "
                        f"got {type(config).__name__}")
    if out is not None:
        return run(algo, config, Path(out), quiet=quiet)
    return ALGOS[algo][1](config, Logger(quiet=quiet))


class Agent:
    """A trained policy loaded from a run directory."""

    def __init__(self, config: dict, policy: CategoricalPolicy, epoch: int):
        self.config, self.policy, self.epoch = config, policy, epoch

    def act(self, obs: np.ndarray, deterministic: bool = True,
            rng: np.random.Generator | None = None):
        """The action for one observation (an int) or for a batch (an array).

        deterministic: the most probable action (as SB3's predict); else a sample from pi(.|obs).
        """
        obs = np.asarray(obs, dtype=np.float64)
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        if deterministic:
            act = self.policy.act_deterministic(batch)
        else:
            act, _ = self.policy.act(batch, rng if rng is not None else np.random.default_rng())
        return int(act[0]) if single else act


def build_policy(config: dict, seed: int | None = None) -> CategoricalPolicy:
    """The policy network a config describes, freshly initialised (as training starts it)."""
    env = gym.make(config["env_id"])
    obs_dim, n_act = env.observation_space.shape[0], int(env.action_space.n)
    env.close()
    init_rng, _ = np.random.default_rng(config["seed"] if seed is None else seed).spawn(2)
    return CategoricalPolicy(obs_dim, n_act, config["hidden"], config["activation"],
                             rng=init_rng, dtype=np.float32)


def load(run_dir: str | Path) -> Agent:
    """Load the policy of the last completed epoch of a run directory."""
    ckpt = load_checkpoint(run_dir)
    policy = build_policy(ckpt["config"])
    if ckpt["net/policy"].shape != policy.params.shape:
        raise UserError(f"checkpoint in {run_dir} does not match its config's network")
    policy.net.params[:] = ckpt["net/policy"]
    return Agent(ckpt["config"], policy, int(ckpt["epoch"]))
