"""Proximal policy optimisation: PPO-clip (default) and PPO with an adaptive KL penalty.

    PPO-clip:  L(theta) = -E[min(r A, g(clip_eps, A))],  r = pi_theta(a|s) / pi_old(a|s)   (PPO.1-2)
    PPO-KL:    L(theta) = -E[r A] + beta * E[KL(pi_old || pi_theta)], beta adapted      (PPOKL.1-3)

One iteration (as Spinning Up, CleanRL and SB3 do it): step N sub-envs T times with the current
policy; evaluate V on the batch in one forward; GAE-lambda advantages (GAE.2) with bootstraps at
truncations and at the cut; then `update_epochs` passes over the batch in shuffled minibatches,
each an Adam step on  policy loss - ent_coef * entropy + vf_coef * value loss,  with the
advantage normalised per minibatch and the global gradient norm clipped. A pass stops early once
the approximate KL between the old and the new policy exceeds `target_kl` (clip variant).

Hyperparameters (PPOConfig):
    env_id           gymnasium id (Discrete actions: categorical policy; Box: diagonal Gaussian).
    variant          clip | kl: the clipped surrogate, or the KL-penalty surrogate.
    hidden           hidden widths of the policy and value MLPs.
    activation       tanh | relu.
    lr               Adam learning rate (policy and value), annealed linearly to 0 if anneal_lr.
    anneal_lr        linear learning-rate annealing over `total_steps`.
    num_envs         N, parallel sub-envs.
    steps_per_env    T, env steps per sub-env per iteration.
    total_steps      budget of env steps (iterations = total_steps / (N T)).
    update_epochs    passes over each batch.
    minibatches      minibatches per pass.
    gamma            discount.
    lam              GAE lambda.
    clip_eps         clip range epsilon of PPO-clip.
    ent_coef         entropy bonus coefficient.
    vf_coef          value-loss coefficient.
    clip_vf          clip the value prediction's change to +-clip_eps too (CleanRL's clip_vloss).
    norm_obs         running observation normalisation (pgnumpy/normalize.py); checkpointed.
    norm_rew         reward scaling by the running std of the discounted return (SB3's
                     VecNormalize norm_reward; pgnumpy/normalize.py); checkpointed.
    max_grad_norm    global gradient-norm clip (None: no clip).
    log_std_init     the Gaussian policy's initial log std (Box actions only): exploration's
                     starting scale, in [-5, 2] (derivations/gaussian.md, GAU.7); with sde,
                     every entry of the log_sigma matrix starts there.
    sde              generalized state-dependent exploration (gSDE, SB3's use_sde; Box actions
                     only): a = mu(s) + z(s)^T W, z(s) the policy's last hidden layer, W a noise
                     matrix per sub-env redrawn at each rollout's start (policy.GSDEPolicy;
                     derivations/gaussian.md, GAU.8-9). Runs the reference minibatch step
                     whatever `fused` says (the fused head assumes a state-independent std).
    sde_sample_freq  with sde, redraw W every this many env steps of a rollout too (-1: only at
                     the rollout's start).
    fused            the clip variant's minibatch steps through pgnumpy/fused.py (both networks
                     stacked, one BLAS call a layer; the loss head and Adam as numba kernels),
                     a step 69 us against the reference's 178 us at the default sizes, equal
                     to it within float32 rounding (tests/test_fused.py); False runs the
                     NumPy reference, MinibatchStep below, the code derivations/ maps (the kl
                     variant always runs it).
    target_kl        stop the epoch loop when approx KL exceeds it (None: never) / d_targ of PPO-KL.
    beta             initial KL coefficient of PPO-KL.
    seed             seeds the init, the action sampling, the minibatch shuffles and the env.
    target_return    stop once the mean of the last 100 episodes reaches it; None: the env's
                     reward_threshold (gymnasium's "solved"; never if it has none); inf: never.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from pgnumpy import fused, kernels
from pgnumpy.algos.common import (
    ONE_STEP,
    TrainResult,
    check_memory,
    end_epoch,
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
from pgnumpy.errors import UserError
from pgnumpy.logger import Logger
from pgnumpy.normalize import ObsNorm, RewScale
from pgnumpy.objectives import (
    adapt_beta,
    clipped_value_loss,
    normalize,
    ppo_clip_loss,
    ppo_kl_loss,
    value_loss,
)
from pgnumpy.optim import Adam
from pgnumpy.phi import next_values, phi
from pgnumpy.policy import GaussianPolicy, ValueCritic, make_policy
from pgnumpy.rollout import Runner, collect, make_env

# The dataclass defaults below are CartPole-v1's (the default env), tuned for wall time to solve:
# 32 envs x 16 steps, 4 epochs x 4 minibatches of 128, (32, 32) tanh nets, lr 4e-3 (seeds 0-19:
# median 78.5k steps, all under 90k; over seeds 0-79, 20 of 80 need more than 90k, and 13 of 80
# with fused=False: float32 rounding makes every run its own). Other envs get tuned settings
# here, applied by `python -m pgnumpy.train --env ID` under the flags you give (and by
# `PPOConfig(**PRESETS[env_id])` in Python). Pendulum: RL-Zoo's settings translated (4 envs x
# 1024 steps, 64 minibatches of 64, 10 epochs, lambda 0.95, lr 1e-3, (64, 64), no normalisation)
# with its gSDE (sde, noise redrawn every 4 steps, log_std_init 0; derivations/gaussian.md
# GAU.8-9), 100k steps, and gamma 0.95 for Zoo's 0.9: greedy -141.7 / -152.9 / -148.8 / -163.9 /
# -156.7 over seeds 0-4 (Zoo -172.2); with gamma 0.9 (Zoo's setting exactly) 1 of 5 seeds passed
# -172.2, as SB3 with Zoo's settings passed 2 of 5 here. Without gSDE no setting tried got every
# seed past it (docs/presets.md has the searches).
# The Box2D landers' shared layout (both landers take one setting, as in RL-Zoo): 16 envs x 256
# steps, 4 epochs x 16 minibatches of 256, (64, 64) nets, gamma 0.999, lambda 0.98, lr 1e-3, no
# entropy bonus, observations and rewards normalised, 1M steps.
_LUNAR = dict(hidden=(64, 64), num_envs=16, steps_per_env=256, total_steps=1_000_000,
              update_epochs=4, minibatches=16, gamma=0.999, lam=0.98, lr=1e-3, ent_coef=0.0,
              norm_obs=True, norm_rew=True)
# The MuJoCo presets' shared layout: a 2048-step batch from 4 envs x 512, 10 epochs x 32
# minibatches, (64, 64) nets, lr 3e-4, observations and rewards normalised, 1M steps.
_MUJOCO = dict(hidden=(64, 64), num_envs=4, steps_per_env=512, total_steps=1_000_000,
               update_epochs=10, minibatches=32, lr=3e-4, norm_obs=True, norm_rew=True)

PRESETS: dict[str, dict] = {
    "Pendulum-v1": dict(
        env_id="Pendulum-v1", hidden=(64, 64), num_envs=4, steps_per_env=1024,
        total_steps=100_000, update_epochs=10, minibatches=64, gamma=0.95, lam=0.95, lr=1e-3,
        sde=True, sde_sample_freq=4, log_std_init=0.0,
    ),
    # Acrobot: CartPole's defaults solve it (python -m pgnumpy.sweep --set env_id=Acrobot-v1
    # total_steps=300000 --grid norm_obs=False,True gamma=0.98,0.99 --seeds 5 --workers 1: the
    # defaults reached -100 at 5/5 seeds, median 22,873 env steps, 2.0 s; normalised observations
    # were slower, 35k). Named here so that --env Acrobot-v1 is a tuned, measured setting.
    "Acrobot-v1": dict(env_id="Acrobot-v1", total_steps=200_000),
    # MountainCar: RL-Zoo's settings (16 envs x 16 steps, gamma 0.99, lam 0.98, 4 epochs,
    # observations and rewards normalised) with lr 1e-3 for Zoo's 3e-4: sweep --grid
    # lr=3e-4,1e-3,4e-3 --seeds 3 at 1M steps: 1e-3 3/3 reach -110 at a median 301,289 steps
    # (31.8 s); 4e-3 3/3 at 336,563; 3e-4 2/3 at 764,415 (seed 0 ended at -110.5). Seeds 0-4
    # (bench --suite): 5/5, median 301,289 steps, 37.7 s. The near-uniform initial policy finds
    # the flag often enough with 16 envs and normalised observations: no exploration aid needed.
    "MountainCar-v0": dict(
        env_id="MountainCar-v0",
        num_envs=16,
        steps_per_env=16,
        total_steps=1_000_000,
        update_epochs=4,
        minibatches=4,
        gamma=0.99,
        lam=0.98,
        lr=1e-3,
        norm_obs=True,
        norm_rew=True,
    ),
    # LunarLander: RL-Zoo's gamma 0.999 and lam 0.98 with (64, 64) nets, but 16 envs x 256 steps
    # (Zoo: x 1024), 16 minibatches of 256 (Zoo: of 64), lr 1e-3 and no entropy bonus (Zoo: 3e-4,
    # 0.01), observations and rewards normalised. Zoo's settings as they are reached a 100-episode
    # mean of only 138.7 at 1M steps (seed 0, 147 s): the 0.01 entropy bonus keeps the policy
    # hovering. Search: sweep --set (the above) --grid ent_coef=0,0.01 lr=3e-4,1e-3 --seeds 1:
    # ent 0 / lr 1e-3 reached 200 at 245,049 steps, ent 0 / 3e-4 ended at 110.9 after 1M; the ent
    # 0.01 pair was stopped unrun for time. Seeds 0-4 (bench --suite): 5/5 reach 200, median
    # 183,671 steps, 53.5 s.
    "LunarLander-v3": dict(_LUNAR, env_id="LunarLander-v3"),
    # LunarLanderContinuous: LunarLander's preset as it is (Zoo too uses one setting for both):
    # sweep --set (it) --grid log_std_init=-0.5,0 --seeds 2: -0.5 (the default) reached 200 at
    # 298,046 and 326,856 steps; the 0 pair was stopped before it ran (time). Seeds 0-4 (bench
    # --suite): 5/5 reach 200, median 314,662 steps, 78.6 s.
    "LunarLanderContinuous-v3": dict(_LUNAR, env_id="LunarLanderContinuous-v3"),
    # MountainCarContinuous: no exploration aid needed once observations and rewards are
    # normalised and gamma is 0.999 (the goal's +100 is ~100-200 steps away): 5/5 seeds reach 90
    # in a median 9,444 env steps, 1.0 s (docs/presets.md: the search, with log_std_init -0.5 to 1)
    "MountainCarContinuous-v0": dict(
        env_id="MountainCarContinuous-v0",
        num_envs=8,
        steps_per_env=32,
        total_steps=20_000,
        update_epochs=10,
        minibatches=8,
        gamma=0.999,
        lam=0.95,
        lr=1e-3,
        norm_obs=True,
        norm_rew=True,
    ),
    # MuJoCo (pip install -e ".[mujoco]"): CleanRL's ppo_continuous_action settings, but the
    # 2048 steps of a batch from 4 envs x 512 rather than 1 x 2048: acting on 4 observations at
    # once costs about what acting on 1 does, which took ~1M steps/160 s -> ~84 s here
    "HalfCheetah-v5": dict(_MUJOCO, env_id="HalfCheetah-v5", gamma=0.99, lam=0.95),
    # Hopper: HalfCheetah's settings with clip_eps 0.1 (Zoo's Hopper translated: 256x256 ReLU,
    # lr 9.8e-5, log_std -2, reached greedy 1033.5 / 1027.2 at seeds 0, 1). With clip 0.2, seeds
    # 0-3 reach greedy 3613.3 / 3374.2 / 3584.9 / 3072.7 but seed 4 only 1315.7 (it settles into
    # a ~1200 hop); clip 0.1 at seeds 3, 4: 3638.4, 3528.0 (docs/presets.md). Zoo 2410.
    "Hopper-v5": dict(_MUJOCO, env_id="Hopper-v5", gamma=0.99, lam=0.95, clip_eps=0.1),
    "Walker2d-v5": dict(_MUJOCO, env_id="Walker2d-v5", gamma=0.99, lam=0.95),
    # Swimmer: RL-Zoo's gamma 0.9999 on HalfCheetah's layout, with GAE lambda 0.99 (Zoo: 0.95),
    # rewards scaled too and log_std_init 0.5. Zoo's translation (lam 0.95, rewards unscaled,
    # log_std -0.5; no time feature) stalls in the ~100 gait: greedy 88.7 / 95.7 (seeds 0, 1).
    # Scaling rewards and log_std 0 / 0.5 lifted seed 0 to 123.8 / 144.3; lam 0.99 is what
    # breaks out: a 100-episode training mean of 354.8 (lr 3e-4) and 358.6 (lr 1e-3) at 1M
    # (docs/presets.md: the searches). Seeds 0-4 (bench --suite --envs Swimmer-v5 --workers 2):
    # greedy 357.0 / 357.6 / 357.6 / 358.7 / 355.8 (100 episodes each; Zoo 282) after 1M steps.
    "Swimmer-v5": dict(_MUJOCO, env_id="Swimmer-v5", gamma=0.9999, lam=0.99, log_std_init=0.5),
}


# the networks' dtype: float32 is ~3x faster than float64 here; tests set float64 to check
# gradients against finite differences and the fused path against the reference to 1e-12
DTYPE = np.float32


@user_config
@dataclass
class PPOConfig:
    env_id: str = "CartPole-v1"
    variant: str = "clip"
    hidden: tuple[int, ...] = (32, 32)
    activation: str = "tanh"
    lr: float = 4e-3
    anneal_lr: bool = True
    num_envs: int = 32
    steps_per_env: int = 16
    total_steps: int = 200_000
    update_epochs: int = 4
    minibatches: int = 4
    gamma: float = 0.98
    lam: float = 0.8
    clip_eps: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    clip_vf: bool = False
    norm_obs: bool = False
    norm_rew: bool = False
    max_grad_norm: float | None = 0.5
    log_std_init: float = -0.5
    sde: bool = False
    sde_sample_freq: int = -1
    fused: bool = True
    target_kl: float | None = None
    beta: float = 1.0
    seed: int = 0
    target_return: float | None = None

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check every field (UserError naming it); train() checks again, so a field set after
        construction cannot skip this."""
        plain(self)
        check_str("env_id", self.env_id)
        check_bool(self, "anneal_lr", "clip_vf", "norm_obs", "norm_rew", "sde", "fused")
        self.hidden = check_hidden("hidden", self.hidden)
        check_choice("variant", self.variant, ("clip", "kl"))
        check_choice("activation", self.activation, ("tanh", "relu"))
        check_range("lr", self.lr, 0, None, lo_open=True)
        for name in ("num_envs", "total_steps", "update_epochs", "minibatches"):
            check_int(name, getattr(self, name))
        check_int("steps_per_env", self.steps_per_env, lo=2, why=ONE_STEP)
        if self.minibatches > self.num_envs * self.steps_per_env:
            raise UserError(f"minibatches ({self.minibatches}) must be <= num_envs * "
                            f"steps_per_env ({self.num_envs * self.steps_per_env})")
        check_range("gamma", self.gamma, 0, 1, lo_open=True)
        check_range("lam", self.lam, 0, 1)
        check_range("clip_eps", self.clip_eps, 0, 1, lo_open=True, hi_open=True)
        check_range("ent_coef", self.ent_coef, 0)
        check_range("vf_coef", self.vf_coef, 0)
        if self.max_grad_norm is not None:
            check_range("max_grad_norm", self.max_grad_norm, 0, None, lo_open=True)
        if self.target_kl is not None:
            check_range("target_kl", self.target_kl, 0, None, lo_open=True)
        check_range("beta", self.beta, 0)
        check_range("log_std_init", self.log_std_init, -5, 2)
        if not (type(self.sde_sample_freq) is int and self.sde_sample_freq == -1):
            check_int("sde_sample_freq", self.sde_sample_freq, why=" (or -1: once a rollout)")
        check_int("seed", self.seed, lo=0)
        check_target_return(self.target_return)


class MinibatchStep:
    """One minibatch step of PPO in NumPy, as derivations/09-ppo-clip.md and 10-ppo-kl.md write
    it: the reference the derivations map. `fused.PPOUpdate` is a drop-in for it (the same
    `pack`, `step`, `unpack`), chosen once per run by `train`: the same step for the clip
    variant in fewer calls, equal to this one within float32 rounding (tests/test_fused.py).

    The loss on a minibatch of n samples, with the advantage normalised over it (VPG.1):
        clip:  L = -(1/n) sum min(r A, g(clip_eps, A))      (PPO.1, PPO.2; its gradient PPO.3)
        kl:    L = -(1/n) sum r A + beta (1/n) sum KL(pi_old || pi_theta)      (PPOKL.1, PPOKL.2)
    minus ent_coef times the mean entropy, plus vf_coef times the value loss (VAL.1, or VAL.2
    with clip_vf); one global gradient-norm clip over both networks (CLIP.1); one Adam step on
    each (ADAM.1-3)."""

    def __init__(self, policy, vf: ValueCritic, opt: Adam, vf_opt: Adam, beta: float):
        self.policy, self.vf, self.opt, self.vf_opt = policy, vf, opt, vf_opt
        self.beta = beta  # PPO-KL's coefficient, adapted between iterations by train

    def pack(self) -> None:
        """Nothing to stack: the reference steps the networks and optimisers themselves."""

    def unpack(self) -> None:
        """Nothing to write back."""

    def step(self, obs, act, logp_old, adv, ret, val_old, old=None, *, clip_eps: float,
             ent_coef: float, vf_coef: float, clip_vf: bool, max_grad_norm: float | None
             ) -> tuple:
        """One Adam step on a minibatch; `old` is pi_old's distribution on it (kl variant) or
        None (clip). Returns (pi_loss, v_loss, entropy, approx_kl, clip_frac)."""
        policy, vf = self.policy, self.vf
        a_mb = normalize(adv)  # per-minibatch normalisation   (VPG.1)
        dist, cache = policy.dist(obs)
        logp = dist.log_prob(act)
        dent = -ent_coef / len(obs)  # loss term -ent_coef * mean(H)
        if old is None:  # PPO-clip   (PPO.2, PPO.3)
            pi_loss, dlogp, info = ppo_clip_loss(logp, logp_old, a_mb, clip_eps)
            g_pi = policy.backward(cache, dist, act, dlogp, dent=dent)
        else:  # PPO-KL   (PPOKL.1, PPOKL.2)
            kl = old.kl(dist)
            pi_loss, dlogp, dkl = ppo_kl_loss(logp, logp_old, a_mb, kl, self.beta)
            g_pi = policy.backward(cache, dist, act, dlogp, dent=dent, dkl=dkl, old=old)
            info = {"approx_kl": float(kl.mean()), "clip_frac": 0.0}
        v, vcache = vf.net.forward(obs)
        v = v[:, 0].astype(np.float64)
        if clip_vf:  # (VAL.2)
            v_loss, dv = clipped_value_loss(v, val_old, ret, clip_eps)
        else:  # (VAL.1)
            v_loss, dv = value_loss(v, ret)
        g_v, _ = vf.net.backward(vcache, (vf_coef * dv)[:, None].astype(vf.net.dtype))
        if max_grad_norm is not None:  # one global norm over both networks   (CLIP.1)
            norm = np.sqrt(np.dot(g_pi, g_pi) + np.dot(g_v, g_v))
            if norm > max_grad_norm:
                g_pi *= max_grad_norm / norm
                g_v *= max_grad_norm / norm
        self.opt.step(g_pi)
        self.vf_opt.step(g_v)
        return (pi_loss, v_loss, float(dist.entropy().mean()), info["approx_kl"],
                info["clip_frac"])


@one_blas_thread
def train(
    cfg: PPOConfig, logger: Logger | None = None, on_epoch=None, resume: dict | None = None
) -> TrainResult:
    """Train; `on_epoch(epoch, state)` after each iteration (checkpointing); `resume` a loaded
    checkpoint."""
    cfg.validate()
    logger = logger or Logger(quiet=True)
    init_rng, act_rng, mb_rng = np.random.default_rng(cfg.seed).spawn(3)
    check_memory(cfg)  # a lower bound, before the env allocates its num_envs copies
    env = make_env(cfg.env_id, cfg.num_envs)
    target = solved_threshold(cfg.target_return, env)
    obs_dim = env.single_observation_space.shape[0]
    check_memory(cfg, obs_dim, int(np.prod(env.single_action_space.shape or (2,))))
    dtype = DTYPE
    if cfg.sde and not isinstance(env.single_action_space, gym.spaces.Box):
        env.close()
        raise UserError(f"sde=True needs a Box action space; {cfg.env_id} has "
                        f"{env.single_action_space}")
    policy = make_policy(env, cfg.hidden, cfg.activation, rng=init_rng, dtype=dtype,
                         log_std_init=cfg.log_std_init, sde=cfg.sde,
                         sde_sample_freq=cfg.sde_sample_freq)
    vf = ValueCritic(obs_dim, cfg.hidden, cfg.activation, rng=init_rng, dtype=dtype)
    opt, vf_opt = Adam(policy.params, lr=cfg.lr), Adam(vf.params, lr=cfg.lr)
    obs_norm = ObsNorm(obs_dim) if cfg.norm_obs else None
    rew_scale = RewScale(cfg.num_envs, cfg.gamma) if cfg.norm_rew else None
    result = TrainResult(policy, vf, obs_norm=obs_norm)
    beta = cfg.beta
    iterations = max(1, cfg.total_steps // (cfg.num_envs * cfg.steps_per_env))
    logger.total_epochs = iterations

    runner = Runner.start(env, seed=resume_env_seed(cfg.seed, resume))
    nets, opts = {"policy": policy, "critic": vf}, {"policy": opt, "critic": vf_opt}
    rngs = {"act": act_rng, "minibatch": mb_rng}
    first, wall0 = 0, 0.0
    if resume is not None:
        first, wall0 = restore(resume, nets=nets, opts=opts, rngs=rngs, runner=runner)
        beta = resume["extra"]["beta"]
        for name, flag, on in (("obs_norm", "norm_obs", obs_norm), ("rew_scale", "norm_rew",
                                                                   rew_scale)):
            if on is not None and name not in resume["extra"]:
                raise UserError(f"{flag}=True, but the checkpoint holds no {name} statistics: "
                                f"resume with the config the run was trained with")
        if obs_norm is not None:
            obs_norm.load(resume["extra"]["obs_norm"])
        if rew_scale is not None:
            rew_scale.load(resume["extra"]["rew_scale"])
    kernels.warm_up()  # JIT compile / cache load before the clock starts
    # the minibatch step, chosen once: the reference above, or the same step on a stacked copy
    # of both networks in fewer calls (fused.py; the clip variant without sde)
    if cfg.fused and cfg.variant == "clip" and not cfg.sde:
        fused.warm_up(dtype, gaussian=isinstance(policy, GaussianPolicy))
        update = fused.PPOUpdate(policy, vf, opt, vf_opt)
    else:
        update = MinibatchStep(policy, vf, opt, vf_opt, beta)
    hyper = dict(clip_eps=cfg.clip_eps, ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef,
                 clip_vf=cfg.clip_vf, max_grad_norm=cfg.max_grad_norm)
    start = time.perf_counter() - wall0
    for it in range(first, iterations):
        if cfg.anneal_lr:  # linear decay to 0 over the budget
            opt.lr = vf_opt.lr = cfg.lr * (1.0 - it / iterations)

        # 1. collect T steps from each of N sub-envs; logp_old is the acting policy's log-prob
        prep = obs_norm if obs_norm is not None else (lambda o: o)  # frozen for this iteration
        if cfg.sde:  # gSDE: fresh noise matrices at each rollout's start   (GAU.8)
            policy.begin_rollout(cfg.num_envs, act_rng)
        batch = collect(runner, lambda o, f=prep: policy.act(f(o), act_rng), T=cfg.steps_per_env)
        m = batch.valid
        all_obs = prep(batch.obs.reshape(-1, obs_dim))

        # 2. V on the whole batch (reset steps hold final observations: truncation bootstraps),
        #    GAE advantages, and lambda-returns as value targets (CleanRL, SB3)
        val = vf(all_obs).reshape(batch.rew.shape)
        next_val = next_values(val, vf(prep(batch.last_obs)))
        rew = batch.rew if rew_scale is None else rew_scale(batch.rew, batch.term, batch.trunc, m)
        adv_all = phi(
            "gae",
            rew,
            batch.term,
            batch.trunc,
            cfg.gamma,
            cfg.lam,
            valid=m,
            val=val,
            next_val=next_val,
        )  # (GAE.2)
        obs, act, logp_old = all_obs[m.ravel()], batch.act[m], batch.logp[m]
        adv, ret, val_old = adv_all[m], (adv_all + val)[m], val[m]
        old_dist = policy.dist(obs)[0] if cfg.variant == "kl" else None

        # 3. update_epochs passes over the batch, shuffled once an epoch (each minibatch a view)
        n = len(obs)
        mb_size = max(1, n // cfg.minibatches)
        data = [obs, act, logp_old, adv, ret, val_old]
        if old_dist is not None:  # the kl variant: pi_old on each minibatch
            data.append(old_dist)
        stats = []
        update.pack()  # (fused) this iteration's parameters, Adam state and annealed lr
        for _ in range(cfg.update_epochs):
            perm = mb_rng.permutation(n)
            shuffled = [x[perm] for x in data]
            for lo in range(0, n - mb_size + 1, mb_size):
                stats.append(update.step(*(x[lo : lo + mb_size] for x in shuffled), **hyper))
            if cfg.variant == "clip" and cfg.target_kl is not None and stats[-1][3] > cfg.target_kl:
                break
        update.unpack()  # (fused) parameters and Adam's state back into the networks
        pi_loss, v_loss, entropy, approx_kl, clip_frac = np.mean(stats, axis=0)
        if cfg.variant == "kl":
            # d of (PPOKL.3) is the KL the whole update moved the policy, measured after it on the
            # whole batch; the mean over minibatch steps would start at 0 and understate it, and
            # beta would halve towards 0 even while the steps are too large
            approx_kl = float(old_dist.kl(policy.dist(obs)[0]).mean())
            beta = update.beta = adapt_beta(beta, approx_kl, cfg.target_kl or 0.01)
        if obs_norm is not None:  # statistics move only between iterations
            obs_norm.update(batch.obs[m])

        row = {
            "epoch": it,
            "env_steps": runner.env_steps,
            "wall_s": round(time.perf_counter() - start, 3),
            "ep_return_mean": recent_mean(runner.episode_returns),
            "ep_len_mean": recent_mean(runner.episode_lengths),
            "episodes": len(runner.episode_returns),
            "loss": float(pi_loss),
            "entropy": float(entropy),
            "value_loss": float(v_loss),
            "approx_kl": float(approx_kl),
            "clip_frac": float(clip_frac),
            "lr": opt.lr,
        }
        if cfg.variant == "kl":
            row["beta"] = beta
        state = dict(
            nets=nets,
            opts=opts,
            rngs=rngs,
            runner=runner,
            wall_s=row["wall_s"],
            extra={"beta": beta}
            | ({"obs_norm": obs_norm.state()} if obs_norm else {})
            | ({"rew_scale": rew_scale.state()} if rew_scale else {}),
        )
        if end_epoch(
            it,
            row,
            result,
            logger,
            on_epoch,
            state,
            target,
            loss=row["loss"],
            value_loss=row["value_loss"],
        ):
            break
    env.close()
    return result
