"""Trust region policy optimisation (TRPO) with a hand-derived Fisher-vector product.

    maximise  L(theta) = E[r A],  r = pi_theta(a|s) / pi_old(a|s)                       (TRPO.1-2)
    subject to  KL_bar(theta) = E_s[KL(pi_old(.|s) || pi_theta(.|s))] <= delta

Linearise L, take the KL to second order (its Hessian at theta_old is the Fisher F, TRPO.4), and
the step is along the natural gradient F^-1 g (TRPO.6), scaled to the edge of the trust region:
s = sqrt(2 delta / x^T F x) x (TRPO.8). F is never formed: conjugate gradient needs only products
F v = J^T M J v (TRPO.5), a forward-mode pass through the network, the distribution's Fisher, and
the ordinary backward. A backtracking line search then makes the constraint and the improvement
hold for the real L and KL, not their approximations (TRPO.9). See derivations/11-trpo.md.

One iteration: step N sub-envs T times with the current policy; V on the batch; GAE advantages
(GAE.2), bootstrapped at truncations and at the cut, normalised; g = grad L at theta_old; x by
`cg_iters` CG iterations on (F + damping I) x = g; the full step and the line search; then V fit
by Adam on the bootstrapped reward-to-go (VAL.1): `vf_iters` full-batch steps as in VPG, or, with
`vf_minibatches` > 1, `vf_iters` shuffled passes of that many minibatch steps (as SB3's TRPO).
The policy is float64 throughout (its CG and Fisher products in float64 too); the critic float32.

Hyperparameters (TRPOConfig):
    env_id           gymnasium id (Discrete actions: categorical policy; Box: diagonal Gaussian).
    hidden           hidden widths of the policy and value MLPs.
    activation       tanh | relu.
    delta            KL radius of the trust region (max mean KL(pi_old || pi) of a step).
    cg_iters         conjugate-gradient iterations per step (a fixed number; stops early only
                     once the residual is ~0).
    damping          added to F in the CG solve, (F + damping I) x = g.
    backtrack_coef   the line search shrinks the step by this factor per try.
    backtrack_iters  tries of the line search before it keeps theta_old.
    vf_lr            Adam learning rate of the critic.
    vf_iters         critic regression passes over the batch per iteration.
    vf_minibatches   minibatches per critic pass (1: full-batch steps, as VPG).
    num_envs         N, parallel sub-envs.
    steps_per_env    T, env steps per sub-env per iteration (batch = N T steps).
    total_steps      budget of env steps (iterations = total_steps / (N T)).
    gamma            discount.
    lam              GAE lambda.
    norm_adv         normalise the advantages over the batch (zero mean, unit std).
    norm_obs         running observation normalisation (pgnumpy/normalize.py); checkpointed.
    norm_rew         reward scaling by the running std of the discounted return (as PPO's);
                     checkpointed.
    seed             seeds the init, the action sampling, the critic's shuffles and the env.
    target_return    stop once the mean of the last 100 episodes reaches it; None: the env's
                     reward_threshold (gymnasium's "solved"; never if it has none); inf: never.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pgnumpy import kernels
from pgnumpy.algos.common import (
    ONE_STEP,
    TrainResult,
    check_memory,
    end_epoch,
    fit_critic,
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
from pgnumpy.objectives import normalize
from pgnumpy.optim import Adam
from pgnumpy.phi import next_values, phi
from pgnumpy.policy import ValueCritic, make_policy
from pgnumpy.rollout import Runner, collect, make_env

# The dataclass defaults are CartPole-v1's, chosen over seeds 0-4 for reliable solves: 32 envs x
# 64 steps, delta 0.02, gamma 0.98, lambda 0.9 solved 5/5 in 75-102k steps (delta 0.01-0.05,
# 8-32 envs and gamma 0.99 / lambda 0.95 were slower or had a seed past 130k). Other envs get
# the settings below, applied by `python -m pgnumpy.train --algo trpo --env ID` under the flags
# given (and by `TRPOConfig(**PRESETS[env_id])` in Python).
PRESETS: dict[str, dict] = {
    # Pendulum: RL-Zoo's TRPO settings (2 envs x 1024 steps, gamma 0.9, critic minibatches;
    # without its state-dependent exploration), delta 0.02 (seeds 0-1 at 100k steps: delta
    # 0.01 -402, -355; 0.02 -282, -196; 0.03 -252, -502)
    "Pendulum-v1": dict(
        env_id="Pendulum-v1",
        hidden=(64, 64),
        num_envs=2,
        steps_per_env=1024,
        total_steps=200_000,
        delta=0.02,
        gamma=0.9,
        lam=0.95,
        vf_lr=1e-3,
        vf_iters=10,
        vf_minibatches=16,
        norm_obs=True,
    ),
    # MuJoCo (pip install -e ".[mujoco]"): RL-Zoo's TRPO settings for MuJoCo (delta as its
    # HalfCheetah target_kl, 25 CG iterations, critic minibatches of 128, normalised
    # observations and rewards), with one env of 2048 steps per batch
    "HalfCheetah-v5": dict(
        env_id="HalfCheetah-v5",
        hidden=(64, 64),
        num_envs=1,
        steps_per_env=2048,
        total_steps=1_000_000,
        delta=0.04,
        cg_iters=25,
        damping=0.1,
        gamma=0.99,
        lam=0.95,
        vf_lr=1e-3,
        vf_iters=20,
        vf_minibatches=16,
        norm_obs=True,
        norm_rew=True,
    ),
}


@user_config
@dataclass
class TRPOConfig:
    env_id: str = "CartPole-v1"
    hidden: tuple[int, ...] = (32, 32)
    activation: str = "tanh"
    delta: float = 0.02
    cg_iters: int = 10
    damping: float = 0.1
    backtrack_coef: float = 0.8
    backtrack_iters: int = 10
    vf_lr: float = 1e-2
    vf_iters: int = 20
    vf_minibatches: int = 1
    num_envs: int = 32
    steps_per_env: int = 64
    total_steps: int = 300_000
    gamma: float = 0.98
    lam: float = 0.9
    norm_adv: bool = True
    norm_obs: bool = False
    norm_rew: bool = False
    seed: int = 0
    target_return: float | None = None

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check every field (UserError naming it); train() checks again, so a field set after
        construction cannot skip this."""
        plain(self)
        check_str("env_id", self.env_id)
        check_bool(self, "norm_adv", "norm_obs", "norm_rew")
        self.hidden = check_hidden("hidden", self.hidden)
        check_choice("activation", self.activation, ("tanh", "relu"))
        check_range("delta", self.delta, 0, None, lo_open=True)
        check_int("cg_iters", self.cg_iters)
        check_range("damping", self.damping, 0)
        check_range("backtrack_coef", self.backtrack_coef, 0, 1, lo_open=True, hi_open=True)
        check_int("backtrack_iters", self.backtrack_iters)
        check_range("vf_lr", self.vf_lr, 0, None, lo_open=True)
        for name in ("vf_iters", "vf_minibatches", "num_envs", "total_steps"):
            check_int(name, getattr(self, name))
        check_int("steps_per_env", self.steps_per_env, lo=2, why=ONE_STEP)
        if self.vf_minibatches > self.num_envs * self.steps_per_env:
            raise UserError(f"vf_minibatches ({self.vf_minibatches}) must be <= num_envs * "
                            f"steps_per_env ({self.num_envs * self.steps_per_env})")
        check_range("gamma", self.gamma, 0, 1, lo_open=True)
        check_range("lam", self.lam, 0, 1)
        check_int("seed", self.seed, lo=0)
        check_target_return(self.target_return)


def surrogate(logp: np.ndarray, logp_old: np.ndarray, adv: np.ndarray) -> tuple[float, np.ndarray]:
    """L = (1/n) sum_i r_i A_i with r_i = exp(logp_i - logp_old_i), and dL/dlogp_i = r_i A_i / n
    (TRPO.2). At theta = theta_old, r = 1: L = mean(A) and the gradient is VPG's (TRPO.3)."""
    r_adv = np.exp(logp - logp_old) * adv
    return float(r_adv.mean()), r_adv / len(r_adv)


def cg(Avp: Callable[[np.ndarray], np.ndarray], b: np.ndarray, iters: int,
       tol: float = 1e-28) -> np.ndarray:
    """x ~ A^-1 b for a symmetric positive (semi-)definite A, from products A p only  (TRPO.7).

    Conjugate gradient from x = 0: each iteration minimises x^T A x / 2 - b^T x over one more
    A-conjugate direction, so `iters` iterations cost `iters` products. In exact arithmetic n
    iterations solve an n x n system; in floating point conjugacy is lost gradually and a few
    more may be needed. It stops early only when r^T r <= tol b^T b (solved to round-off: another
    step would divide ~0 by ~0). Started at 0 with b in A's range, the iterates stay in that
    range: for a singular A the limit is the minimum-norm solution, A^+ b.
    """
    x = np.zeros_like(b)
    r = b.copy()  # residual b - A x
    p = r.copy()  # search direction
    rr = float(r @ r)
    stop = tol * rr
    for _ in range(iters):
        if rr <= stop:
            break
        Ap = Avp(p)
        alpha = rr / float(p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def natural_step(fvp: Callable[[np.ndarray], np.ndarray], g: np.ndarray, delta: float,
                 cg_iters: int, damping: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(full step s, natural direction x, predicted gain g^T s)   (TRPO.6, TRPO.7, TRPO.8).

    Given the exact gradient and an exactly weighted Fisher product (damping 0, enough CG
    iterations) x is the exact natural gradient (TRPO.10).

    x ~ (F + damping I)^-1 g by CG; s = sqrt(2 delta / x^T (F + damping I) x) x puts the
    quadratic model of the mean KL, s^T F s / 2, at delta (at most: the damped product is the
    larger, so the model KL of s is <= delta). The damped product is the matrix CG solved with.
    """
    def Fv(v):
        return fvp(v) + damping * v

    x = cg(Fv, g, cg_iters)
    xFx = float(x @ Fv(x))
    if not xFx > 0:  # g = 0 (or numerically so): there is no direction to step in
        return np.zeros_like(g), x, 0.0
    s = np.sqrt(2.0 * delta / xFx) * x
    return s, x, float(g @ s)


def line_search(evaluate: Callable[[np.ndarray], tuple[float, float]], theta_old: np.ndarray,
                step: np.ndarray, surr_old: float, delta: float, backtrack_coef: float,
                backtrack_iters: int) -> tuple[np.ndarray, dict]:
    """Try theta_old + c^j s for j = 0, 1, ...; accept the first whose surrogate is strictly
    larger than at theta_old AND whose mean KL from pi_old is <= delta   (TRPO.9).

    `evaluate(theta)` returns (L(theta), mean KL(pi_old || pi_theta)). A NaN in either fails the
    test (comparisons with NaN are false). If no try passes, theta_old is kept: info["accepted"]
    is 0 and the iteration leaves the policy as it was.
    """
    for j in range(backtrack_iters):
        theta = theta_old + backtrack_coef**j * step
        surr, kl = evaluate(theta)
        if kl <= delta and surr > surr_old:
            return theta, {"accepted": 1, "backtracks": j, "surr": surr, "kl": kl}
    return theta_old.copy(), {"accepted": 0, "backtracks": backtrack_iters, "surr": surr_old,
                              "kl": 0.0}


@one_blas_thread
def train(
    cfg: TRPOConfig, logger: Logger | None = None, on_epoch=None, resume: dict | None = None
) -> TrainResult:
    """Train: each iteration one step on the KL-constrained problem (TRPO.1) from the batch's
    gradient (TRPO.3). `on_epoch(epoch, state)` after each iteration (checkpointing); `resume` a
    loaded checkpoint. result.timers: seconds spent in rollouts, the gradient and CG, the line
    search and the critic fit."""
    cfg.validate()
    logger = logger or Logger(quiet=True)
    init_rng, act_rng, vf_rng = np.random.default_rng(cfg.seed).spawn(3)
    check_memory(cfg)  # a lower bound, before the env allocates its num_envs copies
    env = make_env(cfg.env_id, cfg.num_envs)
    target = solved_threshold(cfg.target_return, env)
    obs_dim = env.single_observation_space.shape[0]
    check_memory(cfg, obs_dim, int(np.prod(env.single_action_space.shape or (2,))))
    # float64 policy (acting, Fisher products, CG, line search), the reference precision. Measured
    # once on a CartPole batch (2048 states, (32, 32), after 8 iterations): a float32 policy's
    # natural step differed from this one's by 8e-7 (relative norm) and took 0.019 s against
    # 0.047 s, so float32 looks usable; not adopted. The critic is float32, as in VPG and PPO
    policy = make_policy(env, cfg.hidden, cfg.activation, rng=init_rng, dtype=np.float64)
    vf = ValueCritic(obs_dim, cfg.hidden, cfg.activation, rng=init_rng, dtype=np.float32)
    vf_opt = Adam(vf.params, lr=cfg.vf_lr)
    obs_norm = ObsNorm(obs_dim) if cfg.norm_obs else None
    rew_scale = RewScale(cfg.num_envs, cfg.gamma) if cfg.norm_rew else None
    result = TrainResult(policy, vf, obs_norm=obs_norm)
    timers = result.timers = {"rollout": 0.0, "gradient_cg": 0.0, "line_search": 0.0,
                              "critic": 0.0}
    iterations = max(1, cfg.total_steps // (cfg.num_envs * cfg.steps_per_env))
    logger.total_epochs = iterations

    runner = Runner.start(env, seed=resume_env_seed(cfg.seed, resume))
    nets, opts = {"policy": policy, "critic": vf}, {"critic": vf_opt}
    rngs = {"act": act_rng, "critic": vf_rng}
    first, wall0 = 0, 0.0
    if resume is not None:
        first, wall0 = restore(resume, nets=nets, opts=opts, rngs=rngs, runner=runner)
        if obs_norm is not None:
            obs_norm.load(resume["extra"]["obs_norm"])
        if rew_scale is not None:
            rew_scale.load(resume["extra"]["rew_scale"])
    kernels.warm_up()  # JIT compile / cache load before the clock starts
    start = time.perf_counter() - wall0
    for it in range(first, iterations):
        # 1. collect T steps from each of N sub-envs with pi_old
        t0 = time.perf_counter()
        prep = obs_norm if obs_norm is not None else (lambda o: o)  # frozen for this iteration
        batch = collect(runner, lambda o, f=prep: policy.act(f(o), act_rng), T=cfg.steps_per_env)
        m = batch.valid
        all_obs = prep(batch.obs.reshape(-1, obs_dim))
        t1 = time.perf_counter()
        timers["rollout"] += t1 - t0

        # 2. V on the whole batch (reset steps hold final observations: truncation bootstraps),
        #    GAE advantages (GAE.2), normalised (VPG.1)
        val = vf(all_obs).reshape(batch.rew.shape)
        next_val = next_values(val, vf(prep(batch.last_obs)))
        rew = batch.rew if rew_scale is None else rew_scale(batch.rew, batch.term, batch.trunc, m)
        adv = phi("gae", rew, batch.term, batch.trunc, cfg.gamma, cfg.lam, valid=m, val=val,
                  next_val=next_val)[m]
        if cfg.norm_adv:
            adv = normalize(adv)
        obs, act = all_obs[m.ravel()], batch.act[m]

        # 3. g = grad L at theta_old (TRPO.3): logp_old recomputed by the same forward that
        #    the line search uses, so L(theta_old) = mean(A) exactly and "improves" is consistent
        theta_old = policy.params.copy()
        dist_old, cache = policy.dist(obs)
        logp_old = dist_old.log_prob(act)
        surr_old, dlogp = surrogate(logp_old, logp_old, adv)
        g = policy.backward(cache, dist_old, act, dlogp)

        # 4. natural direction by CG on Fisher-vector products, and the full step (TRPO.5-8)
        def fvp(v, cache=cache, dist_old=dist_old):  # bound now: these change every iteration
            return policy.fisher_vp(cache, dist_old, v)

        step, _, expected = natural_step(fvp, g, cfg.delta, cfg.cg_iters, cfg.damping)
        t2 = time.perf_counter()
        timers["gradient_cg"] += t2 - t1

        # 5. backtracking line search on the real surrogate and KL (TRPO.9)
        def evaluate(theta, obs=obs, act=act, logp_old=logp_old, adv=adv, dist_old=dist_old):
            policy.params[:] = theta
            dist = policy.dist(obs)[0]
            surr, _ = surrogate(dist.log_prob(act), logp_old, adv)
            return surr, float(dist_old.kl(dist).mean())

        theta, info = line_search(evaluate, theta_old, step, surr_old, cfg.delta,
                                  cfg.backtrack_coef, cfg.backtrack_iters)
        policy.params[:] = theta
        t3 = time.perf_counter()
        timers["line_search"] += t3 - t2

        # 6. regress V on the bootstrapped reward-to-go (VAL.1): full-batch steps as VPG, or
        #    shuffled minibatches
        rtg = phi("rtg", rew, batch.term, batch.trunc, cfg.gamma, valid=m, next_val=next_val)[m]
        if cfg.vf_minibatches == 1:
            value_loss = fit_critic(vf, vf_opt, cfg.vf_iters, obs, rtg)
        else:
            value_loss = vf.loss_and_grad(obs, rtg)[0]  # before the fit, as fit_critic reports
            for _ in range(cfg.vf_iters):
                for idx in np.array_split(vf_rng.permutation(len(obs)), cfg.vf_minibatches):
                    fit_critic(vf, vf_opt, 1, obs[idx], rtg[idx])
        if obs_norm is not None:  # statistics move only between iterations
            obs_norm.update(batch.obs[m])
        timers["critic"] += time.perf_counter() - t3

        row = {
            "epoch": it,
            "env_steps": runner.env_steps,
            "wall_s": round(time.perf_counter() - start, 3),
            "ep_return_mean": recent_mean(runner.episode_returns),
            "ep_len_mean": recent_mean(runner.episode_lengths),
            "episodes": len(runner.episode_returns),
            "loss": -info["surr"],  # minus the surrogate where the iteration leaves theta
            "entropy": float(dist_old.entropy().mean()),
            "value_loss": value_loss,
            "kl": info["kl"],
            "accepted": info["accepted"],
            "backtracks": info["backtracks"],
            "surr_gain": info["surr"] - surr_old,
            "expected_gain": expected * cfg.backtrack_coef ** info["backtracks"]
            if info["accepted"] else 0.0,
            "grad_norm": float(np.linalg.norm(g)),
        }
        state = dict(
            nets=nets,
            opts=opts,
            rngs=rngs,
            runner=runner,
            wall_s=row["wall_s"],
            extra=({"obs_norm": obs_norm.state()} if obs_norm else {})
            | ({"rew_scale": rew_scale.state()} if rew_scale else {}),
        )
        if end_epoch(it, row, result, logger, on_epoch, state, target, loss=row["loss"],
                     value_loss=value_loss):
            break
    env.close()
    return result
