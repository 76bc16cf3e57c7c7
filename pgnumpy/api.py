"""The Python API, for notebooks: train from a config, load a run, act with its policy.

    from pgnumpy.api import train, load
    from pgnumpy.algos.ppo import PPOConfig

    result = train(PPOConfig(total_steps=50_000), out="runs/demo")   # out=None: nothing written
    result.history[-1]["ep_return_mean"]
    agent = load("runs/demo")
    action = agent.act(obs)            # one observation -> one action; a batch -> a batch
"""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import numpy as np

from pgnumpy.algos import ALGOS, load_checkpoint
from pgnumpy.algos.common import TrainResult
from pgnumpy.checkpoint import check_obs_norm_dim
from pgnumpy.errors import UserError
from pgnumpy.logger import Logger
from pgnumpy.normalize import ObsNorm
from pgnumpy.policy import CategoricalPolicy, GaussianPolicy, GSDEPolicy
from pgnumpy.rollout import check_run_env, env_spec


def train(config, out: str | Path | None = None, quiet: bool = True) -> TrainResult:
    """Train with the algorithm the config belongs to; with `out`, write a run directory too."""
    from pgnumpy.train import run

    algo = next((name for name, (cls, _) in ALGOS.items() if isinstance(config, cls)), None)
    if algo is None:
        raise UserError(f"config must be one of {[c.__name__ for c, _ in ALGOS.values()]}, "
                        f"got {type(config).__name__}")
    if not isinstance(quiet, bool):
        raise UserError(f"quiet must be True or False, got {quiet!r}")
    if out is not None:
        return run(algo, config, as_path(out, "out"), quiet=quiet)
    return ALGOS[algo][1](config, Logger(quiet=quiet))


def as_path(value, name: str) -> Path:
    """A path argument of the API (str or os.PathLike), or UserError naming it."""
    if isinstance(value, (str, os.PathLike)) and str(value):
        return Path(value)
    raise UserError(f"{name} must be a path (a str or pathlib.Path), got {value!r}")


class Agent:
    """A trained policy loaded from a run directory (with its observation normaliser, if any)."""

    def __init__(self, config: dict, policy, epoch: int, obs_norm: ObsNorm | None = None,
                 act_bounds: tuple[np.ndarray, np.ndarray] | None = None):
        self.config, self.policy, self.epoch = config, policy, epoch
        self.obs_norm, self.act_bounds = obs_norm, act_bounds

    def act(self, obs: np.ndarray, deterministic: bool = True,
            rng: np.random.Generator | None = None):
        """The action for one observation (an int, or an array for Box actions) or for a batch.

        deterministic: the most probable action / the Gaussian's mean (as SB3's predict); else a
        sample from pi(.|obs). Box actions are clipped to the bounds, as in training rollouts.
        """
        dim = self.policy.net.sizes[0]
        try:
            obs = np.asarray(obs, dtype=np.float64)
        except (TypeError, ValueError):
            raise UserError(f"observation must be numbers, got {type(obs).__name__}") from None
        if obs.ndim not in (1, 2) or obs.shape[-1] != dim:
            raise UserError(f"observation of shape {obs.shape} does not fit the policy: expected "
                            f"({dim},) or a batch (n, {dim})")
        if not np.isfinite(obs).all():
            raise UserError("observation holds NaN or inf; the policy needs finite numbers")
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        if self.obs_norm is not None:
            batch = self.obs_norm(batch)
        if deterministic:
            act = self.policy.act_deterministic(batch)
        else:
            act, _ = self.policy.act(batch, rng if rng is not None else np.random.default_rng())
        if self.act_bounds is not None:
            act = np.clip(act, *self.act_bounds)
        if single:
            return int(act[0]) if self.act_bounds is None else act[0]
        return act


def _spaces(env_id: str):
    env_spec(env_id)  # an unknown id or a failing module import: one line
    try:
        env = gym.make(env_id)
    except Exception as e:
        raise UserError(f"env {env_id!r} could not be created: {type(e).__name__}: {e}") from None
    spaces = env.observation_space, env.action_space
    env.close()
    return spaces


def build_policy(config: dict, seed: int | None = None):
    """The policy network a config describes, freshly initialised (as training starts it)."""
    obs_space, act_space = _spaces(config["env_id"])
    init_rng, _ = np.random.default_rng(config["seed"] if seed is None else seed).spawn(2)
    if isinstance(act_space, gym.spaces.Box) and config.get("sde", False):  # PPO's gSDE
        return GSDEPolicy(obs_space.shape[0], act_space.shape[0], config["hidden"],
                          config["activation"], rng=init_rng, dtype=np.float32,
                          log_std_init=config.get("log_std_init", -0.5),
                          sample_freq=config.get("sde_sample_freq", -1))
    if isinstance(act_space, gym.spaces.Box):
        return GaussianPolicy(obs_space.shape[0], act_space.shape[0], config["hidden"],
                              config["activation"], rng=init_rng, dtype=np.float32,
                              log_std_init=config.get("log_std_init", -0.5))
    return CategoricalPolicy(obs_space.shape[0], int(act_space.n), config["hidden"],
                             config["activation"], rng=init_rng, dtype=np.float32)


def load(run_dir: str | Path, import_module: str | None = None) -> Agent:
    """Load the policy of the last completed epoch of a run directory.

    Nothing the run directory names is imported: a run trained on a `module:EnvId` env needs
    `import_module="module"`, the user's word that the module may be imported."""
    from pgnumpy.train import check_config_json

    run_dir = as_path(run_dir, "run_dir")
    if import_module is not None and not isinstance(import_module, str):
        raise UserError(f"import_module must be a module name (a str), got {import_module!r}")
    ckpt = load_checkpoint(run_dir)
    config = ckpt["config"]
    if not isinstance(config, dict) or not isinstance(config.get("env_id"), str):
        raise UserError(f"checkpoint in {run_dir} holds no env id in its config")
    check_config_json(Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent, config)
    check_run_env(config["env_id"], import_module, str(run_dir))
    policy = build_policy(config)
    check_obs_norm_dim(ckpt, policy.net.sizes[0])
    if ckpt["net/policy"].shape != policy.params.shape:
        raise UserError(f"checkpoint in {run_dir} does not match its config's network")
    policy.params[:] = ckpt["net/policy"]
    obs_norm = None
    if "obs_norm" in ckpt["extra"]:
        obs_norm = ObsNorm(policy.net.sizes[0])
        obs_norm.load(ckpt["extra"]["obs_norm"])
    _, act_space = _spaces(ckpt["config"]["env_id"])
    bounds = (act_space.low, act_space.high) if isinstance(act_space, gym.spaces.Box) else None
    return Agent(ckpt["config"], policy, int(ckpt["epoch"]), obs_norm, bounds)
