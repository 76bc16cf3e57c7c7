"""Vanilla policy gradient (VPG) with a learned value function, top to bottom.

    grad J(theta) = E[ sum_t grad log pi_theta(a_t|s_t) Phi_t ],  Phi_t by name   (PG.4)

One epoch: step N sub-envs T times with the current policy; evaluate the critic on the batch;
form Phi_t (default: GAE-lambda advantage, GAE.2); normalise it; take one Adam step on the
surrogate (PG.5); then fit V by `vf_iters` full-batch regression steps on the reward-to-go
(VAL.1). Episodes cut by the end of the rollout and time-limit truncations are bootstrapped with
V of the true next state (never treated as terminations); terminations are not.

Hyperparameters (VPGConfig):
    env_id           gymnasium id (Discrete actions: categorical policy; Box: diagonal Gaussian).
    phi              gradient form: return | rtg | rtg-baseline | q | gae (pgnumpy/phi.py).
    hidden           hidden widths of the policy and the critic MLPs.
    activation       tanh | relu.
    lr               Adam learning rate of the policy.
    vf_lr            Adam learning rate of the critic(s).
    vf_iters         full-batch critic regression steps per epoch.
    steps_per_env    T, env steps per sub-env per epoch (batch = T * num_envs steps).
    num_envs         N, parallel sub-envs.
    epochs           maximum number of epochs (one policy step each).
    gamma            discount.
    lam              GAE lambda (phi = "gae"): 1 gives rtg - V, 0 the one-step TD residual.
    norm_adv         normalise Phi over the batch (zero mean, unit std).
    max_grad_norm    global gradient-norm clip of the policy step (None: no clip).
    seed             seeds the init, the action sampling and the env.
    target_return    stop once the mean of the last 100 episodes reaches it; None: the env's
                     reward_threshold (gymnasium's "solved"; never if it has none); inf: never.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from pgnumpy import kernels
from pgnumpy.algos.common import (
    ONE_STEP,
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
    check_bool,
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
from pgnumpy.objectives import normalize, pg_loss
from pgnumpy.optim import Adam, clip_grad_norm
from pgnumpy.phi import check_phi, next_values, phi
from pgnumpy.policy import QCritic, ValueCritic, make_policy
from pgnumpy.rollout import Runner, collect, make_env


@user_config
@dataclass
class VPGConfig:
    env_id: str = "CartPole-v1"
    phi: str = "gae"
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    lr: float = 1e-2
    vf_lr: float = 1e-2
    vf_iters: int = 20
    steps_per_env: int = 256
    num_envs: int = 8
    epochs: int = 200
    gamma: float = 0.99
    lam: float = 0.95
    norm_adv: bool = True
    max_grad_norm: float | None = 0.5
    seed: int = 0
    target_return: float | None = None

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check every field (UserError naming it); train() checks again, so a field set after
        construction cannot skip this."""
        plain(self)
        check_str("env_id", self.env_id)
        check_bool(self, "norm_adv")
        self.hidden = check_hidden("hidden", self.hidden)
        check_phi(self.phi)
        check_choice("activation", self.activation, ("tanh", "relu"))
        check_range("lr", self.lr, 0, None, lo_open=True)
        check_range("vf_lr", self.vf_lr, 0, None, lo_open=True)
        check_int("vf_iters", self.vf_iters, lo=1)
        check_int("steps_per_env", self.steps_per_env, lo=2, why=ONE_STEP)
        check_int("num_envs", self.num_envs)
        check_int("epochs", self.epochs)
        check_range("gamma", self.gamma, 0, 1, lo_open=True)
        check_range("lam", self.lam, 0, 1)
        if self.max_grad_norm is not None:
            check_range("max_grad_norm", self.max_grad_norm, 0, None, lo_open=True)
        check_int("seed", self.seed, lo=0)
        check_target_return(self.target_return)


@one_blas_thread
def train(
    cfg: VPGConfig, logger: Logger | None = None, on_epoch=None, resume: dict | None = None
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
    dtype = np.float32  # ~3x faster than float64 here; gradients are checked in float64 in tests
    policy = make_policy(env, cfg.hidden, cfg.activation, rng=init_rng, dtype=dtype)
    vf = ValueCritic(obs_dim, cfg.hidden, cfg.activation, rng=init_rng, dtype=dtype)
    qf = (
        QCritic(
            obs_dim,
            n_discrete_actions(env, "phi 'q'"),
            cfg.hidden,
            cfg.activation,
            rng=init_rng,
            dtype=dtype,
        )
        if cfg.phi == "q"
        else None
    )
    opt, vf_opt = Adam(policy.params, lr=cfg.lr), Adam(vf.params, lr=cfg.vf_lr)
    qf_opt = Adam(qf.params, lr=cfg.vf_lr) if qf is not None else None
    result = TrainResult(policy, vf)

    runner = Runner.start(env, seed=resume_env_seed(cfg.seed, resume))
    nets = {"policy": policy, "critic": vf} | ({"q": qf} if qf is not None else {})
    opts = {"policy": opt, "critic": vf_opt} | ({"q": qf_opt} if qf is not None else {})
    rngs = {"act": act_rng}
    first, wall0 = (
        restore(resume, nets=nets, opts=opts, rngs=rngs, runner=runner)
        if resume is not None
        else (0, 0.0)
    )
    kernels.warm_up()  # JIT compile / cache load before the clock starts
    start = time.perf_counter() - wall0
    for epoch in range(first, cfg.epochs):
        # 1. collect T steps from each of the N sub-envs
        batch = collect(runner, lambda o: policy.act(o, act_rng), T=cfg.steps_per_env)
        m = batch.valid

        # 2. critic values on the whole batch in one forward (reset steps hold final observations,
        #    so next_val is V of the true next state at truncations too)
        val = vf(batch.obs.reshape(-1, obs_dim)).reshape(batch.rew.shape)
        next_val = next_values(val, vf(batch.last_obs))
        q_sa = None
        if qf is not None:
            q_sa = np.zeros(m.shape)
            q_sa[m] = qf(batch.obs[m], batch.act[m])
        adv = phi(
            cfg.phi,
            batch.rew,
            batch.term,
            batch.trunc,
            cfg.gamma,
            cfg.lam,
            valid=m,
            val=val,
            next_val=next_val,
            q_sa=q_sa,
        )[m]
        if cfg.norm_adv:
            adv = normalize(adv)

        # 3. one policy-gradient step on the surrogate (PG.5)
        obs, act = batch.obs[m], batch.act[m]
        dist, cache = policy.dist(obs)
        loss, dlogp = pg_loss(dist.log_prob(act), adv)
        grad = policy.backward(cache, dist, act, dlogp)
        grad_norm = (
            clip_grad_norm(grad, cfg.max_grad_norm)
            if cfg.max_grad_norm
            else float(np.linalg.norm(grad))
        )
        opt.step(grad)

        # 4. regress V (and Q) on the bootstrapped reward-to-go (VAL.1)
        rtg = phi("rtg", batch.rew, batch.term, batch.trunc, cfg.gamma, valid=m,
                  next_val=next_val)[m]
        value_loss = fit_critic(vf, vf_opt, cfg.vf_iters, obs, rtg)
        if qf is not None:
            fit_critic(qf, qf_opt, cfg.vf_iters, obs, act, rtg)

        row = {
            "epoch": epoch,
            "env_steps": runner.env_steps,
            "wall_s": round(time.perf_counter() - start, 3),
            "ep_return_mean": recent_mean(runner.episode_returns),
            "ep_len_mean": recent_mean(runner.episode_lengths),
            "episodes": len(runner.episode_returns),
            "loss": loss,
            "entropy": float(dist.entropy().mean()),
            "value_loss": value_loss,
            "grad_norm": grad_norm,
        }
        state = dict(nets=nets, opts=opts, rngs=rngs, runner=runner, wall_s=row["wall_s"])
        if end_epoch(
            epoch, row, result, logger, on_epoch, state, target, loss=loss, value_loss=value_loss
        ):
            break
    env.close()
    return result
