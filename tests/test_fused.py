"""The fused PPO update (pgnumpy/fused.py) against the NumPy reference it replaces.

In float64 every piece and whole training iterations agree to 1e-12 / 1e-9: what is left is the
order of floating-point sums (BLAS on a stacked array, a numba loop), not the maths, so a wrong
index, factor, sign or mask shows at O(1e-3) or more.

In float32 (what training runs) both paths round, differently. The bound used below: a float32
sum of n products carries a relative error of at most gamma_n = n u / (1 - n u), u = 2^-24
(Higham, Accuracy and Stability of Numerical Algorithms, 3.1). A gradient entry of the (32, 32)
networks passes through at most 5 such sums on the way (3 forward, 2 backward) of n <= 128 terms,
so its error is below ~5 gamma_128 = 3.8e-5 of the magnitudes summed; the tests allow 1e-4 of the
gradient's norm, and check that the float32 reference meets the same bound against float64, so
the bound is one both paths honour and not one tuned to the fast path.
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pgnumpy import fused
from pgnumpy.algos import ppo
from pgnumpy.objectives import clipped_value_loss, normalize, ppo_clip_loss, value_loss
from pgnumpy.optim import Adam
from pgnumpy.policy import CategoricalPolicy, GaussianPolicy, ValueCritic

U = 2.0**-24
GAMMA_128 = 128 * U / (1 - 128 * U)
F32_TOL = 1e-4  # > 5 gamma_128 = 3.8e-5: see the module docstring


def make_nets(seed, obs_dim, hidden, n_out, gaussian, activation="tanh", dtype=np.float64):
    rng = np.random.default_rng(seed)
    cls = GaussianPolicy if gaussian else CategoricalPolicy
    policy = cls(obs_dim, n_out, hidden, activation, rng=rng, dtype=dtype)
    critic = ValueCritic(obs_dim, hidden, activation, rng=rng, dtype=dtype)
    # move every parameter off its init (zero biases, a tiny last layer) so nothing hides
    policy.params[:] += rng.normal(0, 0.3, policy.params.shape).astype(dtype)
    critic.params[:] += rng.normal(0, 0.3, critic.params.shape).astype(dtype)
    return policy, critic


def make_batch(seed, policy, obs_dim, n, gaussian):
    rng = np.random.default_rng(seed + 1)
    obs = rng.normal(0, 1, (n, obs_dim)).astype(policy.params.dtype)
    dist, _ = policy.dist(obs)
    act = dist.sample(rng)
    # logp_old away from logp, so that some samples are clipped on each side
    logp_old = dist.log_prob(act) + rng.normal(0, 0.3, n)
    adv = rng.normal(0.3, 2.0, n)
    ret = rng.normal(0, 2.0, n)
    val_old = ret + rng.normal(0, 0.5, n)
    return obs, act, logp_old, adv, ret, val_old


def reference_grads(policy, critic, obs, act, logp_old, adv, ret, val_old, clip_eps, ent_coef,
                    vf_coef, clip_vf):
    """The reference path's minibatch gradient, from the NumPy pieces (algos/ppo.py's loop)."""
    dist, cache = policy.dist(obs)
    logp = dist.log_prob(act)
    pi_loss, dlogp, info = ppo_clip_loss(logp, logp_old, normalize(adv), clip_eps)
    g_pi = policy.backward(cache, dist, act, dlogp, dent=-ent_coef / len(obs))
    v, vcache = critic.net.forward(obs)
    v = v[:, 0].astype(np.float64)
    v_loss, dv = (clipped_value_loss(v, val_old, ret, clip_eps) if clip_vf
                  else value_loss(v, ret))
    g_v, _ = critic.net.backward(vcache, (vf_coef * dv)[:, None].astype(critic.net.dtype))
    stats = (pi_loss, v_loss, float(dist.entropy().mean()), info["approx_kl"], info["clip_frac"])
    return g_pi, g_v, stats, logp


def fused_grads(upd, obs, act, logp_old, adv, ret, val_old, clip_eps, ent_coef, vf_coef,
                clip_vf):
    """The fused gradient (before the clip and Adam), written back in each network's layout."""
    hs = upd.forward(obs)
    dout = np.empty_like(hs[-1])
    if upd.gaussian:
        stats = fused.gaussian_clip_head(hs[-1], upd.log_std, act, logp_old, adv, ret, val_old,
                                         clip_eps, ent_coef, vf_coef, clip_vf, dout,
                                         upd.dlog_std)
    else:
        stats = fused.categorical_clip_head(hs[-1], act, logp_old, adv, ret, val_old, clip_eps,
                                            ent_coef, vf_coef, clip_vf, dout)
    upd.backward(hs, dout)
    # the stacked gradient, in each network's own layout (pack/unpack's gather)
    return upd.grad[upd.pol_at], upd.grad[upd.crit_at], stats, hs


cases = st.fixed_dictionaries({
    "seed": st.integers(0, 2**16),
    "obs_dim": st.integers(1, 5),
    "hidden": st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple),
    "n_out": st.integers(1, 4),
    "n": st.integers(2, 40),
    "gaussian": st.booleans(),
    "activation": st.sampled_from(["tanh", "relu"]),
    "clip_vf": st.booleans(),
    "ent_coef": st.sampled_from([0.0, 0.01, 0.3]),
})


@given(cases)
def test_the_stacked_forward_is_both_mlps_forward(c):
    policy, critic = make_nets(c["seed"], c["obs_dim"], c["hidden"], c["n_out"], c["gaussian"],
                               c["activation"])
    upd = fused.PPOUpdate(policy, critic, Adam(policy.params), Adam(critic.params))
    obs = np.random.default_rng(c["seed"]).normal(size=(c["n"], c["obs_dim"]))
    hs = upd.forward(obs)
    np.testing.assert_allclose(hs[-1][0], policy.net(obs), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hs[-1][1][:, :1], critic.net(obs), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(hs[-1][1][:, 1:], 0.0)  # the padded columns stay 0


@given(cases)
def test_the_fused_gradient_is_the_reference_gradient_in_float64(c):
    """Head + stacked backward against distributions/objectives + MLP.backward, per network,
    with samples clipped on both sides, the entropy bonus and both value losses."""
    policy, critic = make_nets(c["seed"], c["obs_dim"], c["hidden"], c["n_out"], c["gaussian"],
                               c["activation"])
    batch = make_batch(c["seed"], policy, c["obs_dim"], c["n"], c["gaussian"])
    coefs = (0.2, c["ent_coef"], 0.5, c["clip_vf"])
    g_pi, g_v, stats, logp = reference_grads(policy, critic, *batch, *coefs)
    ratio = np.exp(logp - batch[2])
    assume(np.min(np.abs(np.abs(ratio - 1) - 0.2)) > 1e-9)  # no sample exactly at a kink
    upd = fused.PPOUpdate(policy, critic, Adam(policy.params), Adam(critic.params))
    f_pi, f_v, f_stats, _ = fused_grads(upd, *batch, *coefs)
    np.testing.assert_allclose(f_pi, g_pi, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(f_v, g_v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(f_stats, stats, rtol=1e-10, atol=1e-12)


@given(cases)
def test_the_fused_gradient_matches_finite_differences(c):
    """The fused step's gradient against central differences of the loss it reports,
    L = pi_loss - ent_coef * entropy + vf_coef * v_loss, as a function of the stacked vector
    itself: no reference function involved (tanh only: relu's kinks are not differentiable, and
    samples near a clip kink are excluded)."""
    from pgnumpy.testing import norm_rel_error, numeric_gradient, rel_error, with_params

    policy, critic = make_nets(c["seed"], c["obs_dim"], c["hidden"], c["n_out"], c["gaussian"])
    batch = make_batch(c["seed"], policy, c["obs_dim"], c["n"], c["gaussian"])
    coefs = (0.2, c["ent_coef"], 0.5, c["clip_vf"])
    upd = fused.PPOUpdate(policy, critic, Adam(policy.params), Adam(critic.params))

    def loss(_):
        hs = upd.forward(batch[0])
        head = fused.gaussian_clip_head if upd.gaussian else fused.categorical_clip_head
        extra = (upd.log_std,) if upd.gaussian else ()
        out = (np.empty_like(hs[-1]),) + ((np.empty(c["n_out"]),) if upd.gaussian else ())
        pi_loss, v_loss, entropy, _, _ = head(hs[-1], *extra, *batch[1:], *coefs, *out)
        return pi_loss - c["ent_coef"] * entropy + 0.5 * v_loss

    # away from the clip's kinks and the clipped value loss's: the FD steps must not cross one
    logp = reference_grads(policy, critic, *batch, *coefs)[3]
    assume(np.min(np.abs(np.abs(np.exp(logp - batch[2]) - 1) - 0.2)) > 1e-3)
    v = critic.net(batch[0])[:, 0]
    assume(np.min(np.abs(np.abs(v - batch[5]) - 0.2)) > 1e-3)
    fused_grads(upd, *batch, *coefs)
    fd = numeric_gradient(with_params(upd.theta, lambda: loss(None)), upd.theta)
    assert rel_error(upd.grad, fd) <= 1e-6 or norm_rel_error(upd.grad, fd) <= 1e-7  # test_nn.py's


@pytest.mark.parametrize("gaussian", [False, True])
def test_the_fused_gradient_is_within_float32_rounding_of_the_reference(gaussian):
    """At PPO's default sizes in float32: fused and reference each within F32_TOL (module doc)
    of the float64 gradient, normwise, per network."""
    errors = {}
    for seed in range(5):
        exact = make_nets(seed, 4, (32, 32), 2, gaussian)
        batch = make_batch(seed, exact[0], 4, 128, gaussian)
        g64 = reference_grads(*exact, *batch, 0.2, 0.01, 0.5, False)
        ratio = np.exp(g64[3] - batch[2])
        assert np.min(np.abs(np.abs(ratio - 1) - 0.2)) > 1e-4  # far from kinks at float32's u
        nets32 = [make_nets(seed, 4, (32, 32), 2, gaussian, dtype=np.float32) for _ in range(2)]
        for net64, n32a, n32b in zip(exact, *nets32):
            n32a.params[:] = n32b.params[:] = net64.params  # the same parameters, rounded
        b32 = (batch[0].astype(np.float32), *batch[1:])
        ref = reference_grads(*nets32[0], *b32, 0.2, 0.01, 0.5, False)
        upd = fused.PPOUpdate(*nets32[1], Adam(nets32[1][0].params), Adam(nets32[1][1].params))
        fast = fused_grads(upd, *b32, 0.2, 0.01, 0.5, False)
        for name, got in (("reference", ref), ("fused", fast)):
            for k in (0, 1):
                err = np.linalg.norm(got[k] - g64[k]) / np.linalg.norm(g64[k])
                errors[name, k] = max(errors.get((name, k), 0.0), err)
    assert max(errors.values()) < F32_TOL, errors


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_step_is_optim_adam_bit_for_bit(dtype):
    """The kernel does the reference's operations in the reference's order and dtype."""
    rng = np.random.default_rng(0)
    theta = rng.normal(size=300).astype(dtype)
    ref = Adam(theta.copy(), lr=3e-3)
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t in range(1, 6):
        g = (rng.normal(size=300) * 10.0 ** rng.integers(-9, 2, 300)).astype(dtype)
        scale = 1.0 if t % 2 else float(np.float32(0.37) if dtype == np.float32 else 0.37)
        ref.step(g * np.asarray(scale, dtype) if scale != 1.0 else g)
        fused.adam_step(theta, g, m, v, *fused.adam_scalars(3e-3, 0.9, 0.999, 1e-8, t), 0.9,
                        0.999, scale)
        np.testing.assert_array_equal(theta, ref.params)
        np.testing.assert_array_equal(m, ref.m)
        np.testing.assert_array_equal(v, ref.v)


def run_ppo(monkeypatch, fused_flag, dtype, **kw):
    monkeypatch.setattr(ppo, "DTYPE", dtype)
    cfg = ppo.PPOConfig(fused=fused_flag, target_return=float("inf"), **kw)
    return ppo.train(cfg)


PPO_CASES = {
    "cartpole": dict(num_envs=4, steps_per_env=32, total_steps=3 * 128, ent_coef=0.01,
                     hidden=(16, 16)),
    "cartpole-clip-vf-relu": dict(num_envs=4, steps_per_env=32, total_steps=3 * 128,
                                  clip_vf=True, activation="relu", max_grad_norm=None,
                                  hidden=(8,)),
    "pendulum": dict(env_id="Pendulum-v1", num_envs=2, steps_per_env=64, total_steps=3 * 128,
                     norm_obs=True, norm_rew=True, ent_coef=0.01, hidden=(16, 16),
                     target_kl=0.02),
}


@pytest.mark.parametrize("case", list(PPO_CASES))
def test_ppo_iterations_fused_equal_reference_in_float64(monkeypatch, case):
    """Three whole iterations through algos/ppo.py (rollouts, GAE, 4 epochs x 4 minibatches,
    annealed lr, grad clip, target_kl): the same parameters and Adam states (m, v, t, lr of both
    optimisers, as a checkpoint saves them) to 1e-9, the same progress rows (losses to 1e-9).
    Planted: fused.PPOUpdate leaving Adam's v out of pack and unpack (the stacked copy kept it,
    so the parameters still agreed; caught by the Adam states)."""
    adams, real_adam = [], ppo.Adam

    class RecordedAdam(real_adam):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            adams.append(self)

    monkeypatch.setattr(ppo, "Adam", RecordedAdam)
    ref = run_ppo(monkeypatch, False, np.float64, **PPO_CASES[case])
    fast = run_ppo(monkeypatch, True, np.float64, **PPO_CASES[case])
    for a, b in ((ref.policy, fast.policy), (ref.critic, fast.critic)):
        np.testing.assert_allclose(b.params, a.params, rtol=1e-9, atol=1e-9)
    assert len(adams) == 4  # policy and critic, of each run
    for a, b in zip(adams[:2], adams[2:]):
        assert a.t == b.t > 0 and a.lr == b.lr
        assert np.all(a.v > 0) and np.any(a.m != 0)  # moved: the comparison sees something
        np.testing.assert_allclose(b.m, a.m, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b.v, a.v, rtol=1e-9, atol=1e-15)
    assert len(ref.history) == len(fast.history) == 3
    for ra, rb in zip(ref.history, fast.history):
        assert ra.keys() == rb.keys()
        for k in ra:
            if k != "wall_s":  # (ep_return_mean is nan until an episode ends)
                assert rb[k] == pytest.approx(ra[k], rel=1e-9, abs=1e-9, nan_ok=True), k


def test_ppo_default_run_fused_is_the_reference_run_within_float32(monkeypatch):
    """The default float32 training: the first iteration's rollout is the same (same init, same
    actions), and its losses agree within F32_TOL relative; the Adam step count and lr agree
    (both optimisers' t and lr at the end: issue 23, they were not compared; planted: the
    fused unpack writing back t - 1, caught here and by the float64 test)."""
    kw = dict(total_steps=2 * 512)
    adams, real_adam = [], ppo.Adam

    class RecordedAdam(real_adam):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            adams.append(self)

    monkeypatch.setattr(ppo, "Adam", RecordedAdam)
    ref = run_ppo(monkeypatch, False, np.float32, **kw)
    fast = run_ppo(monkeypatch, True, np.float32, **kw)
    assert len(adams) == 4
    for a, b in zip(adams[:2], adams[2:]):
        assert a.t == b.t == 2 * 4 * 4 and a.lr == b.lr  # 2 iterations of 4 x 4 steps
    ra, rb = ref.history[0], fast.history[0]
    for k in ("env_steps", "episodes", "ep_return_mean", "lr"):
        assert ra[k] == rb[k], k
    for k in ("loss", "value_loss", "entropy", "approx_kl"):
        assert rb[k] == pytest.approx(ra[k], rel=F32_TOL, abs=1e-7), k
    rel = np.linalg.norm(fast.policy.params - ref.policy.params) / np.linalg.norm(
        ref.policy.params)
    assert rel < F32_TOL


def test_the_fused_update_refuses_networks_it_cannot_stack():
    rng = np.random.default_rng(0)
    policy = CategoricalPolicy(3, 2, (8,), rng=rng)
    with pytest.raises(ValueError, match="hidden layers"):
        fused.PPOUpdate(policy, ValueCritic(3, (9,), rng=rng), Adam(policy.params),
                        Adam(np.zeros(3 * 9 + 9 + 9 + 1)))
    critic = ValueCritic(3, (8,), rng=rng)
    other = Adam(critic.params)
    other.t = 1
    with pytest.raises(ValueError, match="share t"):
        fused.PPOUpdate(policy, critic, Adam(policy.params), other)
    with pytest.raises(ValueError, match="share betas"):
        fused.PPOUpdate(policy, critic, Adam(policy.params), Adam(critic.params, eps=1e-5))
