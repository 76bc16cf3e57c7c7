"""gSDE (PPOConfig.sde, policy.GSDEPolicy; derivations/gaussian.md, GAU.8-9): the gradient
against central differences, the action distribution against its formula, the noise schedule
and the log-prob as PPO sees them in a real run, and the config, CLI, checkpoint and greedy
evaluation from outside."""

import json

import numpy as np
import pytest
from cli_helpers import one_line

from pgnumpy import api
from pgnumpy.algos import load_checkpoint, ppo
from pgnumpy.algos.ppo import PPOConfig
from pgnumpy.distributions import LOG_2PI, DiagGaussian
from pgnumpy.errors import UserError
from pgnumpy.objectives import pg_loss
from pgnumpy.policy import GSDEPolicy
from pgnumpy.testing import norm_rel_error, numeric_gradient, with_params
from pgnumpy.train import main, parse_args

EPS = 1e-6  # SB3's epsilon inside the std, written here independently of the policy's
TOL = 1e-7  # norm-relative error; float64 central differences reach ~1e-9 on these nets


def features(net, params: np.ndarray, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, z) by a tanh forward written out here over a copy of the MLP's parameters."""
    Ws, bs = net.layer_views(params[: net.params.size].astype(np.float64))
    h = obs.astype(np.float64)
    for W, b in zip(Ws[:-1], bs[:-1]):
        h = np.tanh(h @ W + b)
    return h @ Ws[-1] + bs[-1], h


def variance(pol: GSDEPolicy, params: np.ndarray, z: np.ndarray) -> np.ndarray:
    """v_i(s) = sum_j z_j^2 sigma_ji^2   (GAU.8)."""
    log_sigma = params[pol.n_net :].astype(np.float64).reshape(pol.log_sigma.shape)
    return (z**2) @ np.exp(2 * log_sigma)


def log_prob(a: np.ndarray, mu: np.ndarray, v: np.ndarray) -> np.ndarray:
    var = v + EPS
    return (-0.5 * (a - mu) ** 2 / var - 0.5 * np.log(var) - 0.5 * LOG_2PI).sum(axis=-1)


# ---- (GAU.9): backward against central differences -------------------------------------------

@pytest.mark.parametrize("scale", ["wide", "tiny"])  # tiny: v ~ eps, where the epsilon matters
@pytest.mark.parametrize("w_pg, w_ent, w_kl", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0.3, 0.7)])
def test_backward_matches_central_differences(scale, w_pg, w_ent, w_kl):
    """w_pg * pg_loss - w_ent * mean(H) + w_kl * mean(KL(old || pi)), d/d[MLP params, log_sigma],
    with z(s) held at its value at the point (SB3 detaches it from the variance): the scalar is
    computed here from the MLP's mean, a frozen z and log_sigma, not by GSDEPolicy."""
    rng = np.random.default_rng(7)
    batch, act_dim = 6, 2
    pol = GSDEPolicy(3, act_dim, [5, 4], rng=rng, dtype=np.float64)
    pol.params[:] = rng.normal(0, 0.5, pol.params.shape)
    lo, hi = (-1.0, 0.5) if scale == "wide" else (-8.0, -6.0)
    pol.log_sigma[:] = rng.uniform(lo, hi, pol.log_sigma.shape)
    obs = rng.normal(size=(batch, 3))
    mu0, z0 = features(pol.net, pol.params, obs)
    v0 = variance(pol, pol.params, z0)
    assert scale == "wide" or np.median(v0) < 10 * EPS
    act = mu0 + np.sqrt(v0 + EPS) * rng.normal(0, 1.5, mu0.shape)  # |a - mu| on the std's scale
    phi = rng.normal(size=batch)
    old = DiagGaussian(mu0 + 0.3 * rng.normal(size=mu0.shape),
                       0.5 * np.log(v0 + EPS) + rng.uniform(-0.5, 0.5, mu0.shape))

    def scalar():
        d = DiagGaussian(pol.net(obs), 0.5 * np.log(variance(pol, pol.params, z0) + EPS))
        return (w_pg * pg_loss(d.log_prob(act), phi)[0] - w_ent * d.entropy().mean()
                + w_kl * old.kl(d).mean())

    dist, cache = pol.dist(obs)
    _, dlogp = pg_loss(dist.log_prob(act), phi)
    g = pol.backward(cache, dist, act, w_pg * dlogp, dent=-w_ent / batch,
                     dkl=np.full(batch, w_kl / batch) if w_kl else None,
                     old=old if w_kl else None)
    fd = numeric_gradient(with_params(pol.params, scalar), pol.params)
    assert norm_rel_error(g, fd) < TOL
    # log_sigma's own block, and the MLP's, each carry a gradient of their own
    assert norm_rel_error(g[pol.n_net :], fd[pol.n_net :]) < TOL
    assert np.abs(fd[pol.n_net :]).max() > 1e-6


def test_z_is_a_constant_in_the_variance():
    """The gradient is the detached one (SB3's learn_features=False), not the full one: against
    central differences of the loss through pol.dist, where z moves with the MLP's parameters,
    log_sigma's block agrees and the MLP's does not (by far more than the tolerance)."""
    rng = np.random.default_rng(3)
    pol = GSDEPolicy(3, 2, [5, 4], rng=rng, dtype=np.float64)
    pol.params[:] = rng.normal(0, 0.5, pol.params.shape)
    obs, act, phi = rng.normal(size=(6, 3)), rng.normal(size=(6, 2)), rng.normal(size=6)
    dist, cache = pol.dist(obs)
    g = pol.backward(cache, dist, act, pg_loss(dist.log_prob(act), phi)[1])
    full = numeric_gradient(with_params(pol.params, lambda: pg_loss(
        pol.dist(obs)[0].log_prob(act), phi)[0]), pol.params)
    assert norm_rel_error(g[pol.n_net :], full[pol.n_net :]) < TOL
    assert norm_rel_error(g[: pol.n_net], full[: pol.n_net]) > 1e-3


# ---- (GAU.8): the action distribution ------------------------------------------------------

def test_actions_have_mean_mu_and_variance_v():
    """One state, n = 40,000 independent noise matrices (one per 'sub-env'): each dimension's
    sample mean lies within 5 standard errors sqrt(v / n) of mu, its sample variance within 5
    standard errors v sqrt(2 / (n - 1)) of v (a Gaussian's), the two dimensions' sample
    correlation within 5 / sqrt(n) of 0; v computed here from z and log_sigma. The log-prob act
    returns is log N(a; mu, v + eps) of the action it returns."""
    rng = np.random.default_rng(0)
    pol = GSDEPolicy(3, 2, [8, 6], rng=rng, dtype=np.float64, log_std_init=-0.5)
    pol.params[:] = rng.normal(0, 0.5, pol.params.shape)
    pol.log_sigma[:] = rng.uniform(-1.5, 0.5, pol.log_sigma.shape)  # unequal sigmas
    n = 40_000
    obs = np.tile(rng.normal(size=(1, 3)), (n, 1))
    pol.begin_rollout(n, rng)
    a, logp = pol.act(obs, rng)
    mu, z = features(pol.net, pol.params, obs[:1])
    v = variance(pol, pol.params, z)[0]
    mu = mu[0]
    assert np.all(np.abs(a.mean(axis=0) - mu) < 5 * np.sqrt(v / n))
    assert np.all(np.abs(a.var(axis=0, ddof=1) - v) < 5 * v * np.sqrt(2 / (n - 1)))
    assert abs(np.corrcoef(a.T)[0, 1]) < 5 / np.sqrt(n)
    np.testing.assert_allclose(logp, log_prob(a, mu, v), rtol=1e-12)
    # the policy's own distribution is that Gaussian too
    dist, _ = pol.dist(obs[:1])
    np.testing.assert_allclose(dist.std[0] ** 2, v + EPS, rtol=1e-12)


def test_greedy_action_is_the_mean():
    rng = np.random.default_rng(1)
    pol = GSDEPolicy(3, 2, [8], rng=rng, dtype=np.float64)
    pol.params[:] = rng.normal(0, 0.5, pol.params.shape)
    obs = rng.normal(size=(5, 3))
    np.testing.assert_allclose(pol.act_deterministic(obs), features(pol.net, pol.params, obs)[0],
                               rtol=1e-12)


# ---- the noise schedule and the log-prob, in a real PPO run ----------------------------------

def spy_run(monkeypatch, sample_freq: int, T: int = 7, iterations: int = 3, **kw):
    """Train PPO with sde on Pendulum, recording at each act call the parameters it acted with,
    the observations, the actions and the noise matrices the policy held for that call."""
    seen = {"calls": [], "steps": []}
    real_make = ppo.make_policy

    def make_policy(*a, **k):
        pol = real_make(*a, **k)
        real_act = pol.act

        def act(obs, rng):
            params = pol.params.copy()
            out = real_act(obs, rng)
            seen["calls"].append((params, obs.copy(), out[0].copy(), out[1].copy(),
                                  pol.noise.copy()))
            return out

        pol.act = act
        seen["policy"] = pol
        return pol

    real_step = ppo.MinibatchStep.step

    def step(self, *args, **kwargs):
        seen["steps"].append([x.copy() for x in args[:3]])  # obs, act, logp_old
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(ppo, "make_policy", make_policy)
    monkeypatch.setattr(ppo.MinibatchStep, "step", step)
    cfg = PPOConfig(env_id="Pendulum-v1", sde=True, sde_sample_freq=sample_freq, num_envs=2,
                    steps_per_env=T, total_steps=2 * T * iterations, minibatches=2,
                    update_epochs=1, target_return=float("inf"), **kw)
    ppo.train(cfg)
    return seen


@pytest.mark.parametrize("k", [3, -1])
def test_noise_is_redrawn_at_each_rollout_start_and_every_k_steps(k, monkeypatch):
    """T = 7 steps a rollout (not a multiple of k = 3), 3 rollouts: the matrices the policy acts
    with change exactly at steps 0, 3, 6 of each rollout (k = -1: at step 0 only), and each
    action is mu(s) + z(s)^T W_e with the matrices recorded (so they are what it acted with)."""
    T = 7
    seen = spy_run(monkeypatch, k, T)
    calls = seen["calls"]
    assert len(calls) == 3 * T
    changed = [not np.array_equal(calls[t][4], calls[t - 1][4]) for t in range(1, len(calls))]
    expect = [t % T == 0 or (k > 0 and (t % T) % k == 0) for t in range(1, len(calls))]
    assert changed == expect
    for params, obs, a, _, noise in calls:
        assert noise.shape == (2, seen["policy"].n_feat, 1)
        mu, z = features(seen["policy"].net, params, obs)
        np.testing.assert_allclose(a, mu + np.einsum("bj,bji->bi", z, noise), rtol=1e-5,
                                   atol=1e-6)  # float32 networks


def test_the_log_prob_ppo_ratios_against_is_log_n_of_the_action(monkeypatch):
    """What the minibatch step receives as logp_old (with the default fused=True: sde runs the
    reference step) is log N(a; mu(s), v(s) + eps) at the parameters that acted, computed here."""
    seen = spy_run(monkeypatch, 4, T=8, iterations=1)
    params = seen["calls"][0][0]  # the first rollout acts with the initial parameters
    assert all(np.array_equal(c[0], params) for c in seen["calls"])
    obs, act, logp_old = seen["steps"][0]
    mu, z = features(seen["policy"].net, params, obs)
    np.testing.assert_allclose(logp_old, log_prob(act, mu, variance(seen["policy"], params, z)),
                               rtol=1e-5, atol=1e-5)  # float32 networks
    assert len(seen["steps"]) == 2  # one epoch of 2 minibatches, all through MinibatchStep


# ---- config, CLI, checkpoint, resume, greedy evaluation --------------------------------------

@pytest.mark.parametrize("kw, message", [
    (dict(sde_sample_freq=0), "sde_sample_freq must be an integer >= 1 (or -1: once a rollout)"),
    (dict(sde_sample_freq=-2), "sde_sample_freq must be an integer >= 1"),
    (dict(sde_sample_freq=2.0), "sde_sample_freq must be an integer >= 1"),
    (dict(sde=1), "sde must be True or False"),
])
def test_bad_sde_settings_are_refused_in_one_line(kw, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PPOConfig(**kw)


def test_sde_with_discrete_actions_is_one_line(capsys, tmp_path):
    with pytest.raises(UserError, match="sde=True needs a Box action space; CartPole-v1 has"):
        ppo.train(PPOConfig(env_id="CartPole-v1", sde=True, total_steps=512))
    err = one_line(main(["--sde", "--out", str(tmp_path / "r"), "--quiet"]), capsys)
    assert "sde=True needs a Box action space" in err
    err = one_line(main(["--env", "Pendulum-v1", "--sde", "--sde-sample-freq", "0", "--out",
                         str(tmp_path / "r2"), "--quiet"]), capsys)
    assert "sde_sample_freq must be an integer >= 1" in err


def test_flags_set_the_fields():
    assert parse_args(["--env", "Pendulum-v1", "--sde", "--sde-sample-freq", "4"])[1].sde is True
    cfg = parse_args(["--env", "MountainCarContinuous-v0", "--sde", "--no-sde"])[1]
    assert cfg.sde is False and cfg.sde_sample_freq == -1
    assert parse_args(["--sde-sample-freq", "4"])[1].sde_sample_freq == 4


def test_cli_run_checkpoint_resume_and_greedy_evaluation(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--env", "Pendulum-v1", "--sde", "--sde-sample-freq", "4", "--norm-obs",
            "--num-envs", "8", "--steps-per-env", "128", "--minibatches", "8",
            "--total-steps", "2048", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["sde"] is True and ckpt["config"]["sde_sample_freq"] == 4
    assert json.loads((out / "config.json").read_text())["sde"] is True
    agent = api.load(out)
    assert isinstance(agent.policy, GSDEPolicy)
    np.testing.assert_array_equal(agent.policy.params, ckpt["net/policy"])
    # greedy: mu(s) of the normalised observation, clipped to the bounds
    obs = np.random.default_rng(0).normal(size=(6, 3))
    mu, _ = features(agent.policy.net, ckpt["net/policy"], agent.obs_norm(obs))
    np.testing.assert_allclose(agent.act(obs), np.clip(mu, -2, 2), rtol=1e-5, atol=1e-6)
    assert agent.act(obs, deterministic=False, rng=np.random.default_rng(1)).shape == (6, 1)
    from pgnumpy.evaluate import main as evaluate

    assert evaluate([str(out), "--episodes", "1"]) == 0
    # resume: log_sigma is restored with the parameters; the noise is redrawn at the next rollout
    epochs = int(ckpt["epoch"])
    capsys.readouterr()
    assert main(["--resume", str(out), "--total-steps", "4096", "--quiet"]) == 0
    assert int(load_checkpoint(out)["epoch"]) == epochs + 2
