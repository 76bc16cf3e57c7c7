"""Actor and critics: an MLP plus a distribution head, and the backward pass from dL/dlogp.

The chain rule a policy-gradient step follows, outermost first:

    dL/dlogp  (the objective, pgnumpy/objectives.py)
      -> dL/dlogits = dL/dlogp * (onehot(a) - p) + dL/dH * dH/dlogits   (CAT.2, CAT.4)
      -> dL/dparams by the MLP's backward                                (MLP.1-3)

TRPO's Fisher-vector product runs the chain both ways (TRPO.5): J v by the MLP's forward mode
(MLP.4-6), the distribution's Fisher M in its own parameters (CAT.7, GAU.6), then J^T by the
backward.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from pgnumpy import kernels
from pgnumpy.distributions import LOG_2PI, Categorical, DiagGaussian
from pgnumpy.nn import MLP, mlp_size
from pgnumpy.objectives import value_loss


class CategoricalPolicy:
    """pi(a|s) = softmax(MLP(s))_a over a Discrete action space."""

    def __init__(
        self,
        obs_dim: int,
        n_act: int,
        hidden: Sequence[int],
        activation: str = "tanh",
        *,
        rng: np.random.Generator,
        dtype=np.float64,
    ):
        # a small last-layer gain starts the policy near uniform (as PPO implementations do)
        self.net = MLP([obs_dim, *hidden, n_act], activation, rng=rng, dtype=dtype, out_gain=0.01)

    @property
    def params(self) -> np.ndarray:
        return self.net.params

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Sample a ~ pi(.|obs) for a batch of observations; return (act, logp)."""
        # one jitted pass samples and scores (kernels.categorical_sample); equal in distribution
        # to Categorical(logits).sample, which the tests check
        return kernels.categorical_sample(self.net(obs), rng.random(len(obs)))

    def act_deterministic(self, obs: np.ndarray) -> np.ndarray:
        return Categorical(self.net(obs)).mode()

    def dist(self, obs: np.ndarray) -> tuple[Categorical, list]:
        logits, cache = self.net.forward(obs)
        return Categorical(logits), cache

    def backward(
        self,
        cache: list,
        dist: Categorical,
        act: np.ndarray,
        dlogp: np.ndarray,
        dent: float = 0.0,
        dkl: np.ndarray | None = None,
        old: Categorical | None = None,
    ) -> np.ndarray:
        """dL/dparams from dL/dlogp (per sample), dL/dH (one weight for every sample's entropy)
        and, for PPO-KL, dL/dKL_i with KL_i = KL(old_i || pi_i) (per sample)   (POL.1, PPOKL.2)."""
        dlogits = dlogp[:, None] * dist.log_prob_grad(act)  # (CAT.2)
        if dent:
            dlogits += dent * dist.entropy_grad()  # (CAT.4)
        if dkl is not None:
            dlogits += dkl[:, None] * old.kl_grad_other(dist)  # (CAT.6)
        grad, _ = self.net.backward(cache, dlogits.astype(self.net.dtype, copy=False))
        return grad

    def fisher_vp(
        self, cache: list, dist: Categorical, v: np.ndarray, weights: np.ndarray | None = None
    ) -> np.ndarray:
        """F v = sum_i w_i J_i^T M_i J_i v, J_i = d logits_i / d params, M_i = diag(p_i) - p_i p_i^T
        (TRPO.5, CAT.7): the Fisher of the policy averaged over the batch's states (w_i = 1/n by
        default; `weights` for an exact expectation over states, TRPO.10). It is the Hessian of
        the mean KL(pi_old || pi) at theta_old (TRPO.4). `cache` and `dist` are those of
        `dist(obs)` at the parameters where F is taken."""
        w = np.full(len(dist.probs), 1.0 / len(dist.probs)) if weights is None else weights
        u = dist.fisher_vp(self.net.jvp(cache, v))  # M J v   (MLP.4-6, CAT.7)
        grad, _ = self.net.backward(cache, (w[:, None] * u).astype(self.net.dtype, copy=False))
        return grad


def gaussian_grads(dist: DiagGaussian, act: np.ndarray, dlogp: np.ndarray, dent: float = 0.0,
                   dkl: np.ndarray | None = None, old: DiagGaussian | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, (dL/d mean, dL/d log_std), each (B, D), of L = sum_i dlogp_i log p_i + dent
    sum_i H_i + sum_i dkl_i KL(old_i || p_i): (GAU.2), (GAU.3), (GAU.5). Both Gaussian policies
    chain these into their parameters; they differ only in what log_std is a function of."""
    g_mean, g_log_std = dist.log_prob_grad(act)  # (GAU.2)
    d_mean, d_log_std = dlogp[:, None] * g_mean, dlogp[:, None] * g_log_std
    if dent:
        d_log_std = d_log_std + dent  # dH/d log_std = 1, dH/d mean = 0   (GAU.3)
    if dkl is not None:
        k_mean, k_log_std = old.kl_grad_other(dist)  # (GAU.5)
        d_mean = d_mean + dkl[:, None] * k_mean
        d_log_std = d_log_std + dkl[:, None] * k_log_std
    return d_mean, d_log_std


class GaussianPolicy:
    """pi(a|s) = N(MLP(s), diag(exp(log_std))^2) over a Box action space.

    log_std is a state-independent parameter vector (as Spinning Up and CleanRL), stored at the
    end of the policy's one flat parameter vector: params = [MLP weights and biases, log_std].
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int],
        activation: str = "tanh",
        *,
        rng: np.random.Generator,
        dtype=np.float64,
        log_std_init: float = -0.5,
    ):
        sizes = [obs_dim, *hidden, act_dim]
        self.n_net = mlp_size(sizes)
        self.params = np.zeros(self.n_net + act_dim, dtype)
        self.net = MLP(sizes, activation, rng=rng, dtype=dtype, out_gain=0.01,
                       params=self.params[: self.n_net])
        self.log_std = self.params[self.n_net :]
        self.log_std[:] = log_std_init

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Sample a = mu + sigma * eps, eps ~ N(0, I), and its log-prob (unclipped: the rollout
        clips what the env gets; the log-prob is of this a).

        At this sample z = (a - mu) / sigma is eps itself, so (GAU.1) needs no DiagGaussian and
        no division: the acting hot path at N = 1 (MuJoCo) is mostly per-call overhead. The tests
        check it against DiagGaussian.log_prob.
        """
        mean = self.net(obs)
        eps = rng.standard_normal(mean.shape)
        a = mean + np.exp(self.log_std) * eps
        logp = -0.5 * np.einsum("...i,...i->...", eps, eps) - (
            self.log_std.sum(dtype=np.float64) + 0.5 * len(self.log_std) * LOG_2PI
        )  # (GAU.1)
        return a, logp

    def act_deterministic(self, obs: np.ndarray) -> np.ndarray:
        return self.net(obs)

    def dist(self, obs: np.ndarray) -> tuple[DiagGaussian, list]:
        mean, cache = self.net.forward(obs)
        # a copy: log_std is a view into params, and a distribution kept as "old" (PPO-KL, TRPO)
        # must not move when the parameters are updated in place
        return DiagGaussian(mean, self.log_std.copy()), cache

    def backward(
        self,
        cache: list,
        dist: DiagGaussian,
        act: np.ndarray,
        dlogp: np.ndarray,
        dent: float = 0.0,
        dkl: np.ndarray | None = None,
        old: DiagGaussian | None = None,
    ) -> np.ndarray:
        """As CategoricalPolicy.backward, through (mean, log_std) instead of logits (POL.1);
        log_std, shared by every sample, gets the sum over the batch (GAU.7)."""
        d_mean, d_log_std = gaussian_grads(dist, act, dlogp, dent, dkl, old)
        grad = np.empty_like(self.params)
        g_net, _ = self.net.backward(cache, d_mean.astype(self.net.dtype))
        grad[: self.n_net] = g_net
        grad[self.n_net :] = d_log_std.sum(axis=0)  # log_std is shared by every sample
        return grad

    def fisher_vp(
        self, cache: list, dist: DiagGaussian, v: np.ndarray, weights: np.ndarray | None = None
    ) -> np.ndarray:
        """F v = sum_i w_i J_i^T M_i J_i v over (mean_i, log_std)   (TRPO.4, TRPO.5, GAU.6).

        The mean's Jacobian is the MLP's (MLP.4-6); log_std is the same parameter for every
        sample, so its J_i is the identity and its J_i^T a sum over the batch, as in backward."""
        n = len(dist.mean)
        w = np.full(n, 1.0 / n) if weights is None else weights
        d_mean = self.net.jvp(cache, v[: self.n_net])
        d_log_std = np.broadcast_to(v[self.n_net :], d_mean.shape)
        u_mean, u_log_std = dist.fisher_vp(d_mean, d_log_std)  # (GAU.6)
        grad = np.empty_like(self.params)
        g_net, _ = self.net.backward(cache, (w[:, None] * u_mean).astype(self.net.dtype))
        grad[: self.n_net] = g_net
        grad[self.n_net :] = w @ u_log_std
        return grad


class GSDEPolicy:
    """Generalized state-dependent exploration (gSDE, Raffin et al. 2021; SB3's `use_sde` with
    full_std, no expln, learn_features=False): a Gaussian whose noise is a function of the state.

    z(s) in R^h, the MLP's last hidden layer (the mean layer's input), drives both the mean
    mu(s) = MLP(s) and the noise: each sub-env e holds a matrix W_e (h, D), W_e[j, i] ~
    N(0, sigma[j, i]^2), and acts a = mu(s) + z(s)^T W_e (GAU.8). W_e is redrawn at the start of
    every rollout (`begin_rollout`) and, with sample_freq = k > 0, every k of its act calls; so
    within those k steps the exploration is a smooth function of the state, not i.i.d. jitter.
    For the log-prob, a_i ~ N(mu_i, v_i), v_i(s) = sum_j z_j^2 sigma[j, i]^2, std_i =
    sqrt(v_i + 1e-6): a DiagGaussian with a per-sample log_std(s) = log(v(s) + 1e-6) / 2. z is a
    constant in v (SB3 detaches it): the variance's gradient reaches log_sigma only.

    params = [MLP weights and biases, log_sigma (h, D) row-major]; log_sigma starts at
    log_std_init. The noise matrices are acting state, not parameters: no checkpoint holds them.
    """

    EPS = 1e-6  # SB3's epsilon inside the std: keeps log_std(s) finite where z(s) = 0

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int],
        activation: str = "tanh",
        *,
        rng: np.random.Generator,
        dtype=np.float64,
        log_std_init: float = -0.5,
        sample_freq: int = -1,
    ):
        sizes = [obs_dim, *hidden, act_dim]
        self.n_net = mlp_size(sizes)
        self.n_feat = sizes[-2]  # h: the width of z(s)
        self.params = np.zeros(self.n_net + self.n_feat * act_dim, dtype)
        self.net = MLP(sizes, activation, rng=rng, dtype=dtype, out_gain=0.01,
                       params=self.params[: self.n_net])
        self.log_sigma = self.params[self.n_net :].reshape(self.n_feat, act_dim)
        self.log_sigma[:] = log_std_init
        self.sample_freq = sample_freq
        self.noise: np.ndarray | None = None  # (N, h, D): W_e of each sub-env
        self.steps = 0  # act calls since the noise was last drawn

    def sample_noise(self, n: int, rng: np.random.Generator) -> None:
        """Draw W_e[j, i] ~ N(0, sigma[j, i]^2) for n sub-envs   (GAU.8)."""
        sigma = np.exp(self.log_sigma.astype(np.float64))
        self.noise = sigma * rng.standard_normal((n, *sigma.shape))
        self.steps = 0

    def begin_rollout(self, n: int, rng: np.random.Generator) -> None:
        """The start of a rollout of n sub-envs: fresh noise matrices (SB3's reset_noise)."""
        self.sample_noise(n, rng)

    def features(self, cache: list) -> np.ndarray:
        """z(s): the last hidden layer's output, the input of the mean's layer (float64)."""
        return cache[-1].astype(np.float64)

    def log_std_of(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log_std(s), v(s)) from the features: v = z^2 sigma^2, log_std = log(v + eps) / 2
        (GAU.8)."""
        v = (z * z) @ np.exp(2.0 * self.log_sigma.astype(np.float64))
        return 0.5 * np.log(v + self.EPS), v

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """a = mu(s) + z(s)^T W_e for each sub-env e, and log N(a; mu, v + eps)   (GAU.8).

        The noise is drawn here when there is none for this batch size (a first call, or an
        Agent acting on a batch of another size), and after sample_freq calls on it if > 0."""
        if self.noise is None or len(self.noise) != len(obs):
            self.sample_noise(len(obs), rng)
        elif 0 < self.sample_freq <= self.steps:  # k steps on the same noise: redraw
            self.sample_noise(len(obs), rng)
        self.steps += 1
        mean, cache = self.net.forward(obs)
        z = self.features(cache)
        a = mean + np.einsum("bj,bji->bi", z, self.noise)
        log_std, _ = self.log_std_of(z)
        return a, DiagGaussian(mean, log_std).log_prob(a)

    def act_deterministic(self, obs: np.ndarray) -> np.ndarray:
        return self.net(obs)

    def dist(self, obs: np.ndarray) -> tuple[DiagGaussian, list]:
        """N(mu(s), v(s) + eps) per sample; its log_std is computed, so a copy by construction."""
        mean, cache = self.net.forward(obs)
        return DiagGaussian(mean, self.log_std_of(self.features(cache))[0]), cache

    def backward(
        self,
        cache: list,
        dist: DiagGaussian,
        act: np.ndarray,
        dlogp: np.ndarray,
        dent: float = 0.0,
        dkl: np.ndarray | None = None,
        old: DiagGaussian | None = None,
    ) -> np.ndarray:
        """As GaussianPolicy.backward (GAU.2, GAU.3, GAU.5 per sample), then the per-sample
        dL/d log_std(s) chained into log_sigma through v with z held constant   (GAU.9):
            dL/d log_sigma[j, i] = sum_b dL/d log_std_bi * z_bj^2 sigma_ji^2 / (v_bi + eps)."""
        d_mean, d_log_std = gaussian_grads(dist, act, dlogp, dent, dkl, old)
        z = self.features(cache)
        _, v = self.log_std_of(z)
        sigma2 = np.exp(2.0 * self.log_sigma.astype(np.float64))
        grad = np.empty_like(self.params)
        g_net, _ = self.net.backward(cache, d_mean.astype(self.net.dtype))
        grad[: self.n_net] = g_net  # the mean's path only: z is a constant in v
        grad[self.n_net :] = (sigma2 * ((z * z).T @ (d_log_std / (v + self.EPS)))).ravel()
        return grad


def make_policy(env: gym.vector.VectorEnv, hidden: Sequence[int], activation: str, *,
                rng: np.random.Generator, dtype=np.float32, log_std_init: float = -0.5,
                sde: bool = False, sde_sample_freq: int = -1):
    """The policy class the env's action space calls for (rollout.check_env has vetted it);
    `log_std_init` is a Gaussian policy's initial log std (unused by a categorical one). `sde`
    (PPO only; Box actions, which PPO checks): a GSDEPolicy redrawing its noise every
    `sde_sample_freq` steps."""
    obs_dim = env.single_observation_space.shape[0]
    space = env.single_action_space
    if isinstance(space, gym.spaces.Discrete):
        return CategoricalPolicy(obs_dim, int(space.n), hidden, activation, rng=rng, dtype=dtype)
    if sde:
        return GSDEPolicy(obs_dim, space.shape[0], hidden, activation, rng=rng, dtype=dtype,
                          log_std_init=log_std_init, sample_freq=sde_sample_freq)
    return GaussianPolicy(obs_dim, space.shape[0], hidden, activation, rng=rng, dtype=dtype,
                          log_std_init=log_std_init)


class ValueCritic:
    """V_phi(s): an MLP with one linear output."""

    def __init__(
        self,
        obs_dim: int,
        hidden: Sequence[int],
        activation: str = "tanh",
        *,
        rng: np.random.Generator,
        dtype=np.float64,
    ):
        self.net = MLP([obs_dim, *hidden, 1], activation, rng=rng, dtype=dtype, out_gain=1.0)

    @property
    def params(self) -> np.ndarray:
        return self.net.params

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.net(obs)[:, 0].astype(np.float64)

    def loss_and_grad(self, obs: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean-squared-error regression of V(s) on `target` (VAL.1) and its gradient."""
        v, cache = self.net.forward(obs)
        loss, dv = value_loss(v[:, 0].astype(np.float64), target)
        grad, _ = self.net.backward(cache, dv[:, None].astype(self.net.dtype))
        return loss, grad


class QCritic:
    """Q_w(s, a): an MLP with one output per action; Q(s, a) = MLP(s)[a]."""

    def __init__(
        self,
        obs_dim: int,
        n_act: int,
        hidden: Sequence[int],
        activation: str = "tanh",
        *,
        rng: np.random.Generator,
        dtype=np.float64,
    ):
        self.net = MLP([obs_dim, *hidden, n_act], activation, rng=rng, dtype=dtype, out_gain=1.0)

    @property
    def params(self) -> np.ndarray:
        return self.net.params

    def __call__(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        q = self.net(obs)
        return q[np.arange(len(act)), act].astype(np.float64)

    def loss_and_grad(
        self, obs: np.ndarray, act: np.ndarray, target: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """MSE regression of Q(s, a) on `target` (VAL.1); only the taken action's output moves.

        Q_w(s_t, a_t) then serves as Phi_t (QA.1)."""
        q, cache = self.net.forward(obs)
        rows = np.arange(len(act))
        loss, dq_sa = value_loss(q[rows, act].astype(np.float64), target)
        dq = np.zeros_like(q)
        dq[rows, act] = dq_sa  # d q[rows, act] / d q is the one-hot of the taken action
        grad, _ = self.net.backward(cache, dq)
        return loss, grad
