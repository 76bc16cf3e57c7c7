"""Collect (T steps x N envs) rollouts from a gymnasium vector env.

Autoreset. gymnasium vector envs reset an ended sub-env automatically; pgnumpy accepts the
NEXT_STEP mode (the default of gymnasium 1.x and the only mode of the numpy-vectorised
CartPole) and refuses the others. In NEXT_STEP mode the step that ends an episode returns the
episode's final observation, and the *next* call to `step` on that sub-env ignores its action,
resets, and returns the first observation of a new episode with reward 0. That reset step belongs
to no episode: we keep it in the (T, N) arrays (so every column stays aligned in time) but mark it
`valid = False`, and every loss, statistic and advantage ignores it.

The layout has a convenient consequence. The observation stored at a reset step is the previous
episode's final observation, so `next_val[t] = val[t + 1]` is V of the TRUE next state at every
step, including a time-limit truncation; termination zeroes it inside the kernels (GAE.1).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from pgnumpy import kernels
from pgnumpy.errors import UserError

SUPPORTED_ACTION_SPACES = "Discrete, and 1-D Box with finite bounds"


def env_module(env_id: str) -> str | None:
    """The module of gymnasium's `module:EnvId` syntax, which gymnasium imports to register the
    env (so a user's own env works from the command line); None for a plain id."""
    return env_id.split(":", 1)[0] if ":" in env_id else None


def check_run_env(env_id: str, import_module: str | None, where: str) -> None:
    """An env id read from a run directory may name a module; importing it would run code that
    came with the run. Allowed only when the user named that module (`--import`)."""
    module = env_module(env_id)
    if module is not None and module != import_module:
        raise UserError(
            f"{where} was trained on {env_id!r}: loading it imports the module {module!r}, and "
            f"pgnumpy imports no code named by a run directory; pass --import {module} "
            f"(Python: import_module={module!r}) if you trust it"
        )


def env_spec(env_id: str):
    """gymnasium's spec for env_id (importing the module of a `module:EnvId` id), or UserError."""
    if not isinstance(env_id, str):
        raise UserError(f"env id must be a string, got {env_id!r}")
    module = env_module(env_id)
    if module is not None:  # gym.make imports it too, but gym.spec does not
        try:
            importlib.import_module(module)
        except Exception as e:  # the user's module: its error, in one line
            raise UserError(f"env {env_id!r}: importing {module!r} failed: "
                            f"{type(e).__name__}: {' '.join(str(e).split())}") from None
    try:
        return gym.spec(env_id.split(":", 1)[-1])
    except gym.error.Error as e:
        raise UserError(f"unknown env id {env_id!r}: {e}") from None


# gymnasium's env families whose dependencies are one of pgnumpy's extras (pyproject.toml)
EXTRAS = {"gymnasium.envs.box2d.": "box2d", "gymnasium.envs.mujoco.": "mujoco"}


def install_hint(spec, error: Exception) -> str:
    """What to install for an env whose dependency is missing: pgnumpy's extra where the env's
    family has one (gymnasium's own advice for Box2D, `pip install swig` first, is not needed
    with the box2d wheel), else gymnasium's message."""
    entry = spec.entry_point if isinstance(spec.entry_point, str) else ""
    extra = next((x for prefix, x in EXTRAS.items() if entry.startswith(prefix)), None)
    if extra is None:
        return str(error)
    return f'pip install -e ".[{extra}]" (pgnumpy\'s {extra} extra; {type(error).__name__})'


def make_env(env_id: str, num_envs: int = 1) -> gym.vector.VectorEnv:
    """A vector env: gymnasium's numpy-vectorised one where the env has it, else SyncVectorEnv."""
    if not isinstance(num_envs, int) or num_envs < 1:
        raise UserError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    spec = env_spec(env_id)
    mode = "vector_entry_point" if spec.vector_entry_point is not None else "sync"
    try:
        env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
    except (gym.error.DependencyNotInstalled, ImportError) as e:
        raise UserError(f"env {env_id!r} needs an extra package: {install_hint(spec, e)}") from None
    except Exception as e:  # a user's env that fails to build: say which, in one line
        raise UserError(f"env {env_id!r} could not be created: {type(e).__name__}: {e}") from None
    env.pgnumpy_id = env_id  # named in the errors a misbehaving env gets
    try:
        check_env(env)
    except UserError:
        env.close()
        raise
    return env


def check_env(env: gym.vector.VectorEnv) -> None:
    """Refuse what pgnumpy cannot handle correctly, saying what it supports."""
    mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    if mode != gym.vector.AutoresetMode.NEXT_STEP:
        raise UserError(
            f"autoreset mode {mode} is not supported; create the vector env with "
            "autoreset_mode=AutoresetMode.NEXT_STEP (gymnasium's default)"
        )
    obs_space = env.single_observation_space
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        raise UserError(
            f"observation space {obs_space} is not supported: pgnumpy needs a flat Box "
            "(wrap image or dict observations with gymnasium.wrappers.FlattenObservation)"
        )
    if obs_space.shape[0] < 1:
        raise UserError(f"observation space {obs_space} has no dimensions: a policy needs at "
                        "least one observed number")
    act_space = env.single_action_space
    box_ok = (isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1
              and act_space.shape[0] >= 1
              and np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high)))
    if not (isinstance(act_space, gym.spaces.Discrete) or box_ok):
        raise UserError(
            f"action space {act_space} is not supported; supported: {SUPPORTED_ACTION_SPACES}"
        )
    if isinstance(act_space, gym.spaces.Discrete) and act_space.start != 0:
        raise UserError(f"Discrete action space must start at 0, got start={act_space.start}")


@dataclass
class Runner:
    """The env and what persists between rollouts: the current obs and the running episodes."""

    env: gym.vector.VectorEnv
    obs: np.ndarray  # (N, obs_dim) the observation each sub-env is in now
    reset_next: np.ndarray  # (N,) bool: the next step of this sub-env is a NEXT_STEP reset step
    ep_ret: np.ndarray  # (N,) return of the running episode so far
    ep_len: np.ndarray  # (N,) length of the running episode so far
    episode_returns: list[float] = field(default_factory=list)  # every finished episode
    episode_lengths: list[int] = field(default_factory=list)
    env_steps: int = 0  # valid steps taken (reset steps excluded)

    act_low: np.ndarray | None = None  # Box bounds: sampled actions are clipped to them only
    act_high: np.ndarray | None = None  # when passed to the env (logp is of the raw sample)

    @classmethod
    def start(cls, env: gym.vector.VectorEnv, seed: int | None) -> Runner:
        try:
            obs, _ = env.reset(seed=seed)
        except Exception as e:
            raise env_error(env, "in reset", e) from None
        n = env.num_envs
        shape = (n, *env.single_observation_space.shape)
        if getattr(obs, "shape", None) != shape or obs.dtype.kind not in "biuf":
            raise UserError(f"env {env_name(env)} returned an observation of shape "
                            f"{getattr(obs, 'shape', type(obs).__name__)} and dtype "
                            f"{getattr(obs, 'dtype', '?')} in reset; expected {shape}, numbers")
        runner = cls(env, obs, np.zeros(n, bool), np.zeros(n), np.zeros(n, np.int64))
        space = env.single_action_space
        if isinstance(space, gym.spaces.Box):
            runner.act_low, runner.act_high = space.low, space.high
        return runner

    def restart(self) -> None:
        """Reset every sub-env (the seed's epochs each begin with fresh episodes)."""
        self.obs, _ = self.env.reset()
        self.reset_next[:] = False
        self.ep_ret[:] = 0.0
        self.ep_len[:] = 0


@dataclass
class Batch:
    """A rollout in (T, N) layout. `valid` is False at NEXT_STEP reset steps."""

    obs: np.ndarray  # (T, N, obs_dim)
    act: np.ndarray  # (T, N) int64 for Discrete, (T, N, act_dim) float for Box (unclipped)
    logp: np.ndarray  # (T, N) log pi(a|s) under the acting policy
    rew: np.ndarray  # (T, N) float64
    term: np.ndarray  # (T, N) bool: episode terminated at this step (no bootstrap)
    trunc: np.ndarray  # (T, N) bool: episode truncated (time limit) at this step (bootstrap)
    valid: np.ndarray  # (T, N) bool
    last_obs: np.ndarray  # (N, obs_dim) the state the rollout stopped in

    @property
    def T(self) -> int:
        return self.rew.shape[0]


def collect(
    runner: Runner, act_fn, T: int | None = None, min_steps: int | None = None
) -> Batch:
    """Step all N sub-envs, acting with `act_fn(obs) -> (act, logp)`. Give exactly one of:

    T: step every sub-env T times (VPG, PPO). The episode running in each column at the end is
        cut there; the advantage kernels bootstrap it with V(last_obs).
    min_steps: the seed's loop (simple_pg). Step until at least `min_steps` valid steps are
        recorded (summed over sub-envs), then keep stepping until every episode running at that
        cut has ended, so no episode is cut. Steps of episodes begun after the cut are marked
        invalid; call `runner.restart()` before the next collection.
    """
    if (T is None) == (min_steps is None):
        raise ValueError("give exactly one of T and min_steps")
    if (T if T is not None else min_steps) < 1:
        raise UserError(f"steps per rollout must be >= 1, got {T if T is not None else min_steps}")
    env, n = runner.env, runner.env.num_envs
    finishing = min_steps is not None
    cap = T if T is not None else -(-min_steps // n) + 1
    obs = np.empty((cap, n, runner.obs.shape[1]), runner.obs.dtype)
    space = env.single_action_space
    act = np.empty((cap, n, *space.shape), np.int64 if space.shape == () else np.float64)
    logp = np.empty((cap, n))
    rew = np.empty((cap, n))
    term = np.empty((cap, n), bool)
    trunc = np.empty((cap, n), bool)
    valid = np.empty((cap, n), bool)
    reset_next = runner.reset_next
    recording = np.ones(n, bool)  # finishing: False once a column's last episode has ended
    cut = False
    t = n_valid = 0
    while True:
        if not finishing and t == T:
            break
        if finishing and not cut and n_valid >= min_steps:
            cut = True
            recording &= ~reset_next  # only episodes running at the cut are finished
        if cut and not recording.any():
            break
        if t == cap:  # finishing episodes past the first guess: grow the buffers geometrically
            cap *= 2
            obs, act, logp, rew, term, trunc, valid = (
                _grow(x, cap) for x in (obs, act, logp, rew, term, trunc, valid)
            )
        # the hot loop: act, store, step; everything else is done on the whole batch afterwards
        a, lp = act_fn(runner.obs)
        obs[t], act[t], logp[t] = runner.obs, a, lp
        env_a = a if runner.act_low is None else np.clip(a, runner.act_low, runner.act_high)
        try:  # a user's env: what it raises or returns wrongly is named with the env and step
            nobs, rew[t], term[t], trunc[t], _ = env.step(env_a)
        except Exception as e:
            raise env_error(env, f"at rollout step {t}", e) from None
        if getattr(nobs, "shape", None) != runner.obs.shape or nobs.dtype.kind not in "biuf":
            raise UserError(f"env {env_name(env)} returned an observation of shape "
                            f"{getattr(nobs, 'shape', type(nobs).__name__)} and dtype "
                            f"{getattr(nobs, 'dtype', '?')} at rollout step {t}; expected "
                            f"{runner.obs.shape}, numbers")
        runner.obs = nobs
        if finishing:
            valid[t] = ~reset_next & recording
            n_valid += int(valid[t].sum())
            reset_next = term[t] | trunc[t]
            if cut:
                recording &= ~(reset_next & valid[t])
        t += 1
    if not finishing:  # a step is a NEXT_STEP reset step iff the previous step ended an episode
        valid[0] = ~runner.reset_next
        valid[1:t] = ~(term[: t - 1] | trunc[: t - 1])
    runner.reset_next = term[t - 1] | trunc[t - 1]
    batch = Batch(
        obs[:t], act[:t], logp[:t], rew[:t], term[:t], trunc[:t], valid[:t], runner.obs.copy()
    )
    check_finite(batch, env)
    # episode statistics, from valid steps only (a reset step's reward belongs to no episode)
    rets, lens = kernels.episode_stats(
        batch.rew, batch.term, batch.trunc, batch.valid, runner.ep_ret, runner.ep_len
    )
    runner.episode_returns.extend(rets.tolist())
    runner.episode_lengths.extend(lens.tolist())
    runner.env_steps += int(batch.valid.sum())
    return batch


def _grow(x: np.ndarray, cap: int) -> np.ndarray:
    out = np.empty((cap, *x.shape[1:]), x.dtype)
    out[: len(x)] = x
    return out


def env_name(env) -> str:
    return repr(getattr(env, "pgnumpy_id", None) or type(env).__name__)


def env_error(env, where: str, e: Exception) -> UserError:
    """One line for an exception raised by (or a malformed result of) an env's reset or step."""
    return UserError(f"env {env_name(env)} failed {where}: {type(e).__name__}: "
                     f"{' '.join(str(e).split())}")


def check_finite(batch: Batch, env=None) -> None:
    """NaN or inf in observations or rewards would silently poison every gradient: stop here."""
    for name, x in (("observation", batch.obs), ("reward", batch.rew)):
        bad = ~np.isfinite(x)
        if bad.any():
            t, i = np.argwhere(bad)[0][:2]
            which = f"env {env_name(env)} returned a " if env is not None else ""
            raise UserError(
                f"{which}non-finite {name} {x[t, i]} at rollout step {t} of sub-env {i}: "
                "check the environment, or wrap it to clean its output"
            )
