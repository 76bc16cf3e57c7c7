"""The fast path of PPO-clip's minibatch update: the reference's maths in a fifth of the calls.

At PPO's default sizes ((32, 32) networks, minibatches of 128) one NumPy minibatch step makes
about 100 NumPy calls of 1-2 us each, while its arithmetic (~1.8 MFLOP) takes BLAS ~30 us: the
step is call overhead. Three changes cut the calls, and nothing else:

1. The policy and the critic are stacked. Both are MLPs with the same hidden widths on the same
   input, so layer l of both is one (2, n_in, n_out) weight array, and one `np.matmul` runs the
   layer for both networks (NumPy calls BLAS on each slice). The critic's one output is padded to
   the policy's width with zero columns: their gradient is exactly 0, so Adam leaves them 0
   (m = v = 0 gives a step of 0 / eps = 0), and the critic computes what it computed alone.
2. The loss head (log-softmax or Gaussian log-prob, ratio, clip, entropy, value loss, and the
   gradients of all of it with respect to the networks' outputs) is one numba kernel: per sample
   it is a few dozen scalar operations, which NumPy would spread over ~40 calls.
3. Adam, with the global-norm clip's scale folded in, is one numba kernel over one flat vector
   holding both networks (and the Gaussian's log-std).

The NumPy reference stays what `derivations/` maps and what a reader follows: `nn.MLP.forward`
and `backward` (MLP.1-3), `distributions` (CAT.*, GAU.*), `objectives.ppo_clip_loss` (PPO.2-3),
`objectives.value_loss` / `clipped_value_loss` (VAL.1-2), `objectives.normalize` (VPG.1) and
`optim.Adam.step` (ADAM.1-3). Each kernel here names the equations it computes, and
tests/test_fused.py checks every piece and whole updates against the reference: to 1e-12 in
float64, within float32's rounding (the bound is derived there) in float32. `PPOConfig.fused =
False` (`--no-fused`) runs the reference instead.

How PPO uses it: `PPOUpdate(policy, critic, opt, vf_opt)` once per run; then each iteration
`.pack()` copies the parameters and Adam's state into the stacked layout, `.step(...)` runs one
minibatch, and `.unpack()` copies everything back, so acting, checkpoints and the reference see
the usual objects.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from pgnumpy.distributions import LOG_2PI
from pgnumpy.fileio import deferred_sigint
from pgnumpy.policy import GaussianPolicy


class PPOUpdate:
    """The policy and its critic stacked into one flat parameter vector (see the module doc).

    Layout of `theta` (and of `grad`, Adam's `m` and `v`): for each layer l, W_l as
    (2, n_in, n_out) then b_l as (2, 1, n_out), index 0 the policy's and 1 the critic's; then,
    for a Gaussian policy, log_std (n_out,)."""

    def __init__(self, policy, critic, opt, vf_opt):
        if opt.betas != vf_opt.betas or opt.eps != vf_opt.eps:  # (t and lr: pack checks)
            raise ValueError("the fused update steps both networks together: their Adams must "
                             "share betas and eps")
        self.policy, self.critic, self.opt, self.vf_opt = policy, critic, opt, vf_opt
        self.gaussian = isinstance(policy, GaussianPolicy)
        net = policy.net
        if critic.net.sizes != (*net.sizes[:-1], 1) or critic.net.activation != net.activation:
            raise ValueError("the fused update needs a critic with the policy's hidden layers")
        self.sizes, self.tanh, dtype = net.sizes, net.activation == "tanh", net.dtype
        n = sum(2 * (i * o + o) for i, o in zip(self.sizes[:-1], self.sizes[1:]))
        n_log_std = self.sizes[-1] if self.gaussian else 0
        self.theta, self.grad, self.m, self.v = (np.zeros(n + n_log_std, dtype) for _ in range(4))
        self.W, self.b, self.log_std = self._views(self.theta)
        self.dW, self.db, self.dlog_std = self._views(self.grad)
        self.WT = [W.transpose(0, 2, 1) for W in self.W]  # for dh = dz W^T, no copy
        self.db2 = [db[:, 0, :] for db in self.db]  # (2, n_out): the target of 1^T dz
        # where each parameter of the policy and of the critic sits in the stacked vector: the
        # layout written out once, so that packing and unpacking are one gather/scatter each
        self.pol_at = np.empty(policy.params.size, np.int64)
        self.crit_at = np.empty(critic.params.size, np.int64)
        Ws, bs, log_std = self._views(np.arange(self.theta.size))
        n_net = net.params.size
        for k, (mlp, at) in enumerate(((net, self.pol_at[:n_net]), (critic.net, self.crit_at))):
            for W, b, w, c in zip(Ws, bs, *mlp.layer_views(at)):
                o = w.shape[1]  # the critic's last layer: column 0 of the padded one
                w[:], c[:] = W[k, :, :o], b[k, 0, :o]
        if log_std is not None:
            self.pol_at[n_net:] = log_std
        self.t, self.lr = opt.t, opt.lr
        self._work: dict[int, dict] = {}  # minibatch size -> work arrays (_buffers)
        self.pack()

    def _views(self, flat: np.ndarray):
        Ws, bs, k = [], [], 0
        for i, o in zip(self.sizes[:-1], self.sizes[1:]):
            Ws.append(flat[k : k + 2 * i * o].reshape(2, i, o))
            k += 2 * i * o
            bs.append(flat[k : k + 2 * o].reshape(2, 1, o))
            k += 2 * o
        return Ws, bs, (flat[k:] if self.gaussian else None)

    def _pairs(self):
        return ((self.theta, self.policy.params, self.critic.params),
                (self.m, self.opt.m, self.vf_opt.m), (self.v, self.opt.v, self.vf_opt.v))

    def pack(self) -> None:
        """Copy the networks' parameters, their Adams' moments, step count and learning rate into
        the stacked layout (before an iteration's first step: lr is annealed between them)."""
        if self.opt.t != self.vf_opt.t or self.opt.lr != self.vf_opt.lr:
            raise ValueError("the fused update steps both networks together: their Adams must "
                             "share t and lr")
        for stacked, pol, crit in self._pairs():
            stacked[self.pol_at] = pol
            stacked[self.crit_at] = crit
        self.t, self.lr = self.opt.t, self.opt.lr

    def unpack(self) -> None:
        """Write the parameters and Adam's state back into the policy, the critic and their
        Adams (after an iteration's last step), where acting, checkpoints and the reference
        read them."""
        for stacked, pol, crit in self._pairs():
            pol[:] = stacked[self.pol_at]
            crit[:] = stacked[self.crit_at]
        self.opt.t = self.vf_opt.t = self.t

    def forward(self, obs: np.ndarray) -> list[np.ndarray]:
        """Both networks' layers at once   (MLP.1 forward): h_0 = obs (B, n_0) shared, then
        h_l = act(h_{l-1} W_l + b_l) as (2, B, n_l); the last layer linear. Returns every h."""
        h = np.asarray(obs, self.theta.dtype)
        hs = [h]
        last = len(self.W) - 1
        zs = self._buffers(len(h))["z"]
        for l in range(last + 1):
            z = np.matmul(h, self.W[l], out=zs[l])  # (B, n_in) or (2, B, n_in) @ (2, n_in, n_out)
            z += self.b[l]
            if l < last:
                h = np.tanh(z, out=z) if self.tanh else np.maximum(z, 0, out=z)
            else:
                h = z
            hs.append(h)
        return hs

    def backward(self, hs: list[np.ndarray], dout: np.ndarray) -> None:
        """self.grad from dout = dL/d(outputs) (2, B, n_out)   (MLP.1, MLP.2, MLP.3), both
        networks per call: dW = h^T dz, db = 1^T dz, dh = dz W^T, dz = dh act'."""
        dz = dout
        buf = self._buffers(dz.shape[1])
        ones = buf["ones"]
        for l in range(len(self.W) - 1, -1, -1):
            h_in = hs[l]
            h_in_T = h_in.T if l == 0 else h_in.transpose(0, 2, 1)  # obs is shared: (n_0, B)
            np.matmul(h_in_T, dz, out=self.dW[l])
            np.matmul(ones, dz, out=self.db2[l])  # the batch sum as one product (nn.py)
            if l == 0:
                return
            dh = np.matmul(dz, self.WT[l], out=buf["dh"][l - 1])
            if self.tanh:
                tanh_backward(dh, h_in)
            else:
                dh *= h_in > 0
            dz = dh

    def _buffers(self, n: int) -> dict:
        """Work arrays for a minibatch of n rows, made once per size (allocating them every
        step cost ~3 us of ~70): each layer's output z, dL/dh, dL/d(outputs), and ones."""
        buf = self._work.get(n)
        if buf is None:
            dt, widths = self.theta.dtype, self.sizes[1:]
            buf = self._work[n] = {"z": [np.empty((2, n, w), dt) for w in widths],
                                   "dh": [np.empty((2, n, w), dt) for w in widths[:-1]],
                                   "dout": np.empty((2, n, widths[-1]), dt),
                                   "ones": np.ones(n, dt)}
        return buf

    def step(self, obs, act, logp_old, adv, ret, val_old, *, clip_eps: float, ent_coef: float,
             vf_coef: float, clip_vf: bool, max_grad_norm: float | None) -> tuple:
        """One minibatch step of PPO-clip (what algos/ppo.py's MinibatchStep.step computes):
        forward, loss head, backward, global-norm clip, Adam. Returns (pi_loss, v_loss,
        entropy, approx_kl, clip_frac), the reference's statistics."""
        hs = self.forward(obs)
        out = hs[-1]
        dout = self._buffers(len(obs))["dout"]
        if self.gaussian:
            stats = gaussian_clip_head(out, self.log_std, act, logp_old, adv, ret, val_old,
                                       clip_eps, ent_coef, vf_coef, clip_vf, dout,
                                       self.dlog_std)
        else:
            stats = categorical_clip_head(out, act, logp_old, adv, ret, val_old, clip_eps,
                                          ent_coef, vf_coef, clip_vf, dout)
        self.backward(hs, dout)
        scale = 1.0
        if max_grad_norm is not None:  # one global norm over both networks   (CLIP.1)
            norm = np.sqrt(np.dot(self.grad, self.grad))
            if norm > max_grad_norm:
                scale = float(max_grad_norm / norm)  # float32 as the reference's, one type
        self.t += 1
        b1, b2 = self.opt.betas
        step_size, eps_hat = adam_scalars(self.lr, b1, b2, self.opt.eps, self.t)
        adam_step(self.theta, self.grad, self.m, self.v, step_size, eps_hat, b1, b2, scale)
        return stats


@numba.njit(cache=True, error_model="numpy")
def tanh_backward(dh, h):
    """dz = dh * (1 - h^2) in place on dh, with h = tanh(z) the layer's output   (MLP.2)."""
    dh_flat, h_flat = dh.reshape(dh.size), h.reshape(h.size)
    for i in range(dh_flat.size):
        dh_flat[i] *= 1 - h_flat[i] * h_flat[i]


@numba.njit(cache=True, error_model="numpy")
def _normalized(adv):
    """(adv - mean) / (std + 1e-8) over the minibatch   (VPG.1), as objectives.normalize."""
    n = len(adv)
    mean = 0.0
    for i in range(n):
        mean += adv[i]
    mean /= n
    ss = 0.0
    for i in range(n):
        ss += (adv[i] - mean) ** 2
    return (adv - mean) / (math.sqrt(ss / n) + 1e-8)


@numba.njit(cache=True, error_model="numpy")
def _clip_term(logp, logp_old, a, clip_eps, n):
    """One sample's PPO-clip terms   (PPO.1, PPO.2, PPO.3): (min(r A, clip(r) A), dL/dlogp,
    the KL estimate r - 1 - log r, 1 if unclipped). At a kink the clipped side (gradient 0)."""
    log_ratio = logp - logp_old
    r = math.exp(log_ratio)
    unclipped = r < 1 + clip_eps if a >= 0 else r > 1 - clip_eps
    surrogate = min(r * a, min(max(r, 1 - clip_eps), 1 + clip_eps) * a)
    dlogp = -r * a / n if unclipped else 0.0
    return surrogate, dlogp, r - 1 - log_ratio, 1 if unclipped else 0


@numba.njit(cache=True, error_model="numpy")
def _value_term(v, val_old, ret, clip_eps, clip_vf, n):
    """One sample's value loss 1/2 (v - R)^2 and dL/dv = (v - R)/n   (VAL.1); with clip_vf,
    the max of the clipped and unclipped errors, 0 where the clipped one wins outside the band
    (VAL.2), as objectives.clipped_value_loss."""
    if not clip_vf:
        return 0.5 * (v - ret) ** 2, (v - ret) / n
    v_clip = val_old + min(max(v - val_old, -clip_eps), clip_eps)
    use_clip = (v_clip - ret) ** 2 > (v - ret) ** 2
    chosen = v_clip if use_clip else v
    inside = abs(v - val_old) < clip_eps
    return 0.5 * (chosen - ret) ** 2, (0.0 if use_clip and not inside else (chosen - ret) / n)


@numba.njit(cache=True, error_model="numpy")
def categorical_clip_head(out, act, logp_old, adv, ret, val_old, clip_eps, ent_coef, vf_coef,
                          clip_vf, dout):
    """The loss head of a categorical policy and its critic, one pass per sample: writes
    dout[0] = dL/dlogits and dout[1, :, 0] = dL/dV (the padded columns 0) for
        L = -mean min(r A, g(eps, A)) - ent_coef mean H + vf_coef value loss
    with A normalised over the minibatch. Per sample: the max-shifted log-softmax (CAT.1),
    p, H (CAT.3), the clip terms (PPO.1, PPO.2, PPO.3), dlogits = dL/dlogp (onehot - p) (CAT.2)
    - ent_coef/n dH/dz (CAT.4), the value terms (VAL.1-2). Returns the reference's stats."""
    n, n_act = out.shape[1], out.shape[2]
    a_norm = _normalized(adv)
    logp_all = np.empty(n_act)
    pi_loss = v_loss = entropy = kl = 0.0
    unclipped = 0
    for i in range(n):
        z = out[0, i]
        m = z[0]
        for j in range(1, n_act):
            m = max(m, z[j])
        s = 0.0
        for j in range(n_act):
            s += math.exp(z[j] - m)
        lse = m + math.log(s)  # every exp argument <= 0, s >= 1   (CAT.1)
        H = 0.0
        for j in range(n_act):
            logp_all[j] = z[j] - lse
            H -= math.exp(logp_all[j]) * logp_all[j]  # (CAT.3)
        surrogate, dlogp, k, u = _clip_term(logp_all[act[i]], logp_old[i], a_norm[i], clip_eps,
                                            n)
        pi_loss -= surrogate
        kl += k
        unclipped += u
        entropy += H
        dent = -ent_coef / n
        for j in range(n_act):
            p = math.exp(logp_all[j])
            onehot = 1.0 if j == act[i] else 0.0
            dout[0, i, j] = dlogp * (onehot - p) + dent * (-p * (logp_all[j] + H))  # CAT.2, 4
        vl, dv = _value_term(np.float64(out[1, i, 0]), val_old[i], ret[i], clip_eps, clip_vf, n)
        v_loss += vl
        dout[1, i, 0] = vf_coef * dv
        for j in range(1, n_act):
            dout[1, i, j] = 0.0
    return pi_loss / n, v_loss / n, entropy / n, kl / n, 1.0 - unclipped / n


@numba.njit(cache=True, error_model="numpy")
def gaussian_clip_head(out, log_std, act, logp_old, adv, ret, val_old, clip_eps, ent_coef,
                       vf_coef, clip_vf, dout, dlog_std):
    """As categorical_clip_head for a diagonal Gaussian with a state-independent log_std:
    dout[0] = dL/dmean, dlog_std = dL/dlog_std summed over the minibatch. Per sample:
    z = (a - mean)/sigma, log p (GAU.1), the clip terms (PPO.1, PPO.2, PPO.3),
    dlog p/dmean = z/sigma and dlog p/dlog sigma = z^2 - 1 (GAU.2), dH/dlog sigma = 1 (GAU.3),
    the value terms (VAL.1-2)."""
    n, d = out.shape[1], out.shape[2]
    a_norm = _normalized(adv)
    std = np.exp(log_std.astype(np.float64))
    H = 0.0
    for j in range(d):
        H += log_std[j] + 0.5 * (1.0 + LOG_2PI)  # the same for every sample   (GAU.3)
    dent = -ent_coef / n
    dls = np.zeros(d)
    pi_loss = v_loss = kl = 0.0
    unclipped = 0
    for i in range(n):
        logp = 0.0
        for j in range(d):
            zj = (act[i, j] - out[0, i, j]) / std[j]
            logp += -0.5 * zj * zj - log_std[j] - 0.5 * LOG_2PI  # (GAU.1)
        surrogate, dlogp, k, u = _clip_term(logp, logp_old[i], a_norm[i], clip_eps, n)
        pi_loss -= surrogate
        kl += k
        unclipped += u
        for j in range(d):
            zj = (act[i, j] - out[0, i, j]) / std[j]
            dout[0, i, j] = dlogp * zj / std[j]  # (GAU.2)
            dls[j] += dlogp * (zj * zj - 1.0) + dent  # (GAU.2), (GAU.3)
        vl, dv = _value_term(np.float64(out[1, i, 0]), val_old[i], ret[i], clip_eps, clip_vf, n)
        v_loss += vl
        dout[1, i, 0] = vf_coef * dv
        for j in range(1, d):
            dout[1, i, j] = 0.0
    for j in range(d):
        dlog_std[j] = dls[j]
    return pi_loss / n, v_loss / n, H, kl / n, 1.0 - unclipped / n


# error_model="numpy": no ZeroDivisionError branch in the loop, so LLVM vectorises it (7x here).
# Every kernel here uses it: a division by a std that underflowed to 0 (a diverging lr) gives
# inf/NaN as NumPy would, which check_finite turns into its one line, not a ZeroDivisionError.
@numba.njit(cache=True, error_model="numpy")
def adam_step(theta, grad, m, v, step_size, eps_hat, b1, b2, scale):
    """Adam on the flat vector, in place, on the gradient times `scale` (the global-norm clip's
    factor, CLIP.1)   (ADAM.1, ADAM.2, ADAM.3), in the folded form of optim.Adam.step:
        theta -= step_size m / (sqrt(v) + eps_hat),
        step_size = lr sqrt(c2) / c1,  eps_hat = eps sqrt(c2),  c1 = 1 - b1^t,  c2 = 1 - b2^t.
    The caller computes the two scalars in Python (adam_scalars): LLVM turns pow(b, t) with an
    integer t into repeated products, which round apart from C's pow by an ulp. Every scalar is
    cast to the parameters' dtype, as NumPy does with Python floats, so in float32 each
    operation rounds as the reference's does."""
    c = np.empty(7, theta.dtype)  # the cast
    c[0], c[1], c[2], c[3], c[4], c[5], c[6] = step_size, eps_hat, b1, b2, 1 - b1, 1 - b2, scale
    k, e, b1_, b2_, a1, a2, s = c[0], c[1], c[2], c[3], c[4], c[5], c[6]
    for i in range(theta.size):
        g = grad[i] * s if scale != 1.0 else grad[i]
        m[i] = b1_ * m[i] + a1 * g  # (ADAM.1)
        v[i] = b2_ * v[i] + a2 * (g * g)
        theta[i] -= m[i] * k / (np.sqrt(v[i]) + e)  # (ADAM.2-3), folded


def adam_scalars(lr: float, b1: float, b2: float, eps: float, t: int) -> tuple[float, float]:
    """(lr sqrt(c2) / c1, eps sqrt(c2)) of Adam's step t, as optim.Adam.step computes them."""
    sqrt_c2 = math.sqrt(1 - b2**t)
    return lr * sqrt_c2 / (1 - b1**t), eps * sqrt_c2


def warm_up(dtype=np.float32, gaussian: bool = False) -> None:
    """Load (or compile) the kernels one PPO run uses, for its dtype and policy, before the
    training clock starts, with Ctrl-C held until they are ready, as kernels.warm_up does (an
    interrupt inside numba's compiler is lost in an llvmlite callback)."""
    z, i64 = np.zeros((2, 1, 1), dtype), np.zeros(1, np.int64)
    one = np.zeros(1)
    with deferred_sigint():
        tanh_backward(np.zeros((2, 1, 1), dtype), z)
        if gaussian:
            gaussian_clip_head(z, np.zeros(1, dtype), np.zeros((1, 1)), one, one, one, one, 0.2,
                               0.0, 0.5, False, np.empty_like(z), np.zeros(1, dtype))
        else:
            categorical_clip_head(z, i64, one, one, one, one, 0.2, 0.0, 0.5, False,
                                  np.empty_like(z))
        adam_step(np.zeros(1, dtype), np.zeros(1, dtype), np.zeros(1, dtype),
                  np.zeros(1, dtype), 1e-3, 1e-8, 0.9, 0.999, 1.0)
