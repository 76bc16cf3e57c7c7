"""The simplest policy gradient: the study note's CartPole experiment, top to bottom.

    grad J(theta) = E_tau[ sum_t grad log pi_theta(a_t|s_t) Phi_t ]      (PG.4)
    surrogate:    L(theta) = -(1/n) sum_{t in batch} log pi_theta(a_t|s_t) Phi_t   (PG.5)

One epoch = act with the current policy until at least `steps_per_epoch` steps are collected,
finishing the episodes still running (the seed's loop); then ONE gradient step on L. The next
epoch needs fresh data from the new policy: L is only a gradient estimator at the parameters that
sampled the batch, and its value is no measure of performance (it climbs with the return).

Without a critic (Phi = "return" or "rtg") nothing is bootstrapped: every episode is finished,
and a CartPole time-limit end is the end of a capped episode, whose return is the objective.
With Phi = "rtg-baseline" or "gae", a value net V fitted to reward-to-go supplies b(s_t); with
Phi = "q", an action-value net Q_w fitted to reward-to-go supplies Q_w(s_t, a_t).

Hyperparameters (SimplePGConfig):
    env_id           gymnasium id (Discrete actions: categorical policy; Box: diagonal Gaussian).
    phi              gradient form Phi_t: return | rtg | rtg-baseline | q | gae (pgnumpy/phi.py).
    hidden           hidden layer widths of the policy MLP (the seed: [32]); critics use the same.
    activation       tanh | relu.
    lr               Adam learning rate of the policy (the seed: 1e-2).
    steps_per_epoch  minimum env steps per epoch, summed over envs (the seed: 5000).
    epochs           number of epochs = number of policy gradient steps (the seed: 50).
    gamma            discount in Phi (the seed: 1, the undiscounted episode return).
    lam              GAE lambda, used only by phi = "gae".
    num_envs         parallel sub-envs (the seed used 1; 8 gives the same statistics ~6x
                     faster: an epoch still finishes every episode it starts before the cut).
    vf_lr, vf_iters  Adam learning rate and full-batch steps per epoch of the critic, if any.
    seed             seeds the network init, the action sampling and the env.
    target_return    stop once the mean of the last 100 episodes reaches it; None: the env's
                     reward_threshold (gymnasium's "solved"; never if it has none); inf: never.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from pgnumpy import kernels
from pgnumpy.algos.common import (
    TrainResult,
    check_memory,
    end_epoch,
    fit_critic,
    n_discrete_actions,
    one_blas_thread,
    recent_mean,
    resume_env_seed,
    solved_threshold,
)
from pgnumpy.checkpoint import restore
from pgnumpy.config import (
    check_choice,
    check_hidden,
    check_int,
    check_range,
    check_str,
    check_target_return,
    plain,
    user_config,
)
from pgnumpy.logger import Logger
from pgnumpy.objectives import pg_loss
from pgnumpy.optim import Adam
from pgnumpy.phi import PHI_FORMS, check_phi, next_values, phi
from pgnumpy.policy import QCritic, ValueCritic, make_policy
from pgnumpy.rollout import Runner, collect, make_env


@user_config
@dataclass
class SimplePGConfig:
    env_id: str = "CartPole-v1"
    phi: str = "return"
    hidden: tuple[int, ...] = (32,)
    activation: str = "tanh"
    lr: float = 1e-2
    steps_per_epoch: int = 5000
    epochs: int = 50
    gamma: float = 1.0
    lam: float = 0.97
    num_envs: int = 8
    vf_lr: float = 1e-3
    vf_iters: int = 80
    seed: int = 0
    target_return: float | None = float("inf")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check every field (UserError naming it); train() checks again, so a field set after
        construction cannot skip this."""
        plain(self)
        check_str("env_id", self.env_id)
        self.hidden = check_hidden("hidden", self.hidden)
        check_phi(self.phi)
        check_choice("activation", self.activation, ("tanh", "relu"))
        check_range("lr", self.lr, 0, None, lo_open=True)
        check_int("steps_per_epoch", self.steps_per_epoch)
        check_int("epochs", self.epochs)
        check_range("gamma", self.gamma, 0, 1, lo_open=True)
        check_range("lam", self.lam, 0, 1)
        check_int("num_envs", self.num_envs)
        check_range("vf_lr", self.vf_lr, 0, None, lo_open=True)
        # a critic-based Phi with 0 critic steps would weight by an untrained network
        check_int("vf_iters", self.vf_iters, lo=1 if PHI_FORMS[self.phi] else 0,
                  why=f" for phi {self.phi!r}" if PHI_FORMS[self.phi] else "")
        check_int("seed", self.seed, lo=0)
        check_target_return(self.target_return)


@one_blas_thread
def train(
    cfg: SimplePGConfig, logger: Logger | None = None, on_epoch=None, resume: dict | None = None
) -> TrainResult:
    """Train. `on_epoch(epoch, state)` runs after each epoch; `resume`: a loaded checkpoint."""
    cfg.validate()
    logger = logger or Logger(quiet=True)
    logger.total_epochs = cfg.epochs
    init_rng, act_rng = np.random.default_rng(cfg.seed).spawn(2)
    check_memory(cfg)  # a lower bound, before the env allocates its num_envs copies
    env = make_env(cfg.env_id, cfg.num_envs)
    target = solved_threshold(cfg.target_return, env)
    obs_dim = env.single_observation_space.shape[0]
    check_memory(cfg, obs_dim, int(np.prod(env.single_action_space.shape or (2,))))
    policy = make_policy(env, cfg.hidden, cfg.activation, rng=init_rng, dtype=np.float32)
    opt = Adam(policy.params, lr=cfg.lr)
    critic = None
    if PHI_FORMS[cfg.phi] == "v":
        critic = ValueCritic(obs_dim, cfg.hidden, cfg.activation, rng=init_rng, dtype=np.float32)
    elif PHI_FORMS[cfg.phi] == "q":
        critic = QCritic(
            obs_dim,
            n_discrete_actions(env, "phi 'q'"),
            cfg.hidden,
            cfg.activation,
            rng=init_rng,
            dtype=np.float32,
        )
    vf_opt = Adam(critic.params, lr=cfg.vf_lr) if critic is not None else None
    result = TrainResult(policy, critic)

    runner = Runner.start(env, seed=resume_env_seed(cfg.seed, resume))
    nets = {"policy": policy} | ({"critic": critic} if critic is not None else {})
    opts = {"policy": opt} | ({"critic": vf_opt} if critic is not None else {})
    rngs = {"act": act_rng}
    first, wall0 = (
        restore(resume, nets=nets, opts=opts, rngs=rngs, runner=runner)
        if resume is not None
        else (0, 0.0)
    )
    kernels.warm_up()  # JIT compile / cache load before the clock starts
    start = time.perf_counter() - wall0
    for epoch in range(first, cfg.epochs):
        # 1. collect: fresh episodes, each played to its end (the seed's loop)
        if epoch > first:
            runner.restart()
        n_ep0 = len(runner.episode_returns)
        batch = collect(runner, lambda o: policy.act(o, act_rng), min_steps=cfg.steps_per_epoch)
        m = batch.valid

        # 2. Phi_t for every step; critics are evaluated BEFORE they are fitted on this batch
        val = next_val = q_sa = None
        if isinstance(critic, ValueCritic):
            flat_obs = batch.obs.reshape(-1, obs_dim)
            val = critic(flat_obs).reshape(batch.rew.shape)
            # no bootstrap at a time-limit end: the objective is the capped episode's return
            next_val = np.where(batch.trunc, 0.0, next_values(val, critic(batch.last_obs)))
        elif isinstance(critic, QCritic):
            q_sa = critic(batch.obs[m], batch.act[m])
        weights = phi(
            cfg.phi,
            batch.rew,
            batch.term,
            batch.trunc,
            cfg.gamma,
            cfg.lam,
            valid=m,
            val=val,
            next_val=next_val,
            q_sa=_unmask(q_sa, m),
        )[m]

        # 3. one gradient step on the surrogate L (PG.5)
        obs, act = batch.obs[m], batch.act[m]
        dist, cache = policy.dist(obs)
        logp = dist.log_prob(act)
        loss, dlogp = pg_loss(logp, weights)
        opt.step(policy.backward(cache, dist, act, dlogp))

        # 4. fit the critic, if any, to reward-to-go (no bootstrap, as above)
        value_loss = float("nan")
        if critic is not None:
            rtg = phi("rtg", batch.rew, batch.term, batch.trunc, cfg.gamma, valid=m)[m]
            data = (obs, rtg) if isinstance(critic, ValueCritic) else (obs, act, rtg)
            value_loss = fit_critic(critic, vf_opt, cfg.vf_iters, *data)

        rets = runner.episode_returns[n_ep0:]
        row = {
            "epoch": epoch,
            "env_steps": runner.env_steps,
            "wall_s": round(time.perf_counter() - start, 3),
            "loss": loss,
            "return": float(np.mean(rets)),  # this epoch's episodes, as the seed's log prints
            "ep_len": float(np.mean(runner.episode_lengths[n_ep0:])),
            "ep_return_mean": recent_mean(runner.episode_returns),  # last 100 episodes
            "ep_len_mean": recent_mean(runner.episode_lengths),
            "entropy": float(dist.entropy().mean()),
            "value_loss": value_loss,
        }
        state = dict(nets=nets, opts=opts, rngs=rngs, runner=runner, wall_s=row["wall_s"])
        if end_epoch(
            epoch,
            row,
            result,
            logger,
            on_epoch,
            state,
            target,
            loss=loss,
            **({"value_loss": value_loss} if critic is not None else {}),
        ):
            break
    env.close()
    return result


def _unmask(x_valid, m):
    """Scatter per-valid-step values back into the (T, N) layout (zeros at reset steps)."""
    if x_valid is None:
        return None
    out = np.zeros(m.shape)
    out[m] = x_valid
    return out
