"""Tests for evalkit.hmc: target, θ-space samplers, diagnostics, latent samplers, cell and figures.

Everything is seeded and small (the whole file runs in well under a minute on one thread).
Monte Carlo checks use tolerances derived from the estimated ESS, so a wrong sampler fails
them while a right one passes with overwhelming probability at the fixed seeds.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import stats

from evalkit.hmc.autoencoders import AutoEncoder, mlp_value_and_jacobian
from evalkit.hmc.cell import run_cell, train_latent
from evalkit.hmc.diagnostics import ess, moment_errors, split_rhat
from evalkit.hmc.figures import plot_latent_trajectory, plot_pair_marginals
from evalkit.hmc.latent import PulledBackDensity, latent_hmc
from evalkit.hmc.reference import initial_states, quadrature_moments, reference_hmc
from evalkit.hmc.samplers import DualAveraging, hmc, rwm
from evalkit.hmc.target import BananaPosterior, GaussianTarget, log_prob_and_grad

torch.set_num_threads(1)
F64 = torch.float64


# ---------------------------------------------------------------- target


def test_mu_y_follows_the_lecture_definition():
    t = BananaPosterior.make(5)
    th = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]], dtype=F64)
    # odd (1-based) coordinates linear, even ones squared: 1 + 3 + 5 + 2² + 4²
    assert float(t.mu_y(th)) == pytest.approx(29.0)
    assert t.n_data == 100 and t.y.dtype == F64
    assert abs(t.y_mean - 1.0) < 4 * 2.0 / math.sqrt(100)  # data drawn with mean 1, sd 2
    assert torch.equal(t.y, BananaPosterior.make(5).y)  # the recorded seed reproduces the data
    assert not torch.equal(t.y, BananaPosterior.make(5, data_seed=1).y)


@pytest.mark.parametrize("D", [2, 3, 10])
def test_sufficient_statistic_form_equals_direct_sum_up_to_a_constant(D):
    t = BananaPosterior.make(D)
    th = torch.randn(50, D, generator=torch.Generator().manual_seed(D), dtype=F64)
    diff = t.log_prob(th) - t.log_prob_direct(th)
    assert float(diff.max() - diff.min()) < 1e-9 * float(t.log_prob_direct(th).abs().max())


@pytest.mark.parametrize("D", [2, 3, 10])
def test_gradient_matches_central_finite_differences(D):
    t = BananaPosterior.make(D)
    th = torch.randn(6, D, generator=torch.Generator().manual_seed(10 + D), dtype=F64)
    lp, g = log_prob_and_grad(t, th)
    assert torch.allclose(lp, t.log_prob(th))
    h = 1e-6
    fd = torch.empty_like(th)
    for i in range(D):
        e = torch.zeros(D, dtype=F64)
        e[i] = h
        fd[:, i] = (t.log_prob_direct(th + e) - t.log_prob_direct(th - e)) / (2 * h)
    assert torch.allclose(g, fd, rtol=1e-6, atol=1e-5 * float(fd.abs().max()) * 1e-2)


# ---------------------------------------------------------------- diagnostics


def ar1(rho: float, chains: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((chains, n))
    x[:, 0] = rng.standard_normal(chains)  # stationary start (unit marginal variance)
    e = rng.standard_normal((chains, n)) * math.sqrt(1 - rho**2)
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + e[:, t]
    return x


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9, -0.3])
@pytest.mark.parametrize("rank", [True, False])
def test_ess_matches_ar1_theory(rho, rank):
    chains, n = 4, 20_000
    x = ar1(rho, chains, n, seed=int(100 * (rho + 1)))
    want = chains * n * (1 - rho) / (1 + rho)
    got = ess(x, rank_normalize=rank)
    assert isinstance(got, float)
    assert abs(got / want - 1) < 0.12, (rho, rank, got, want)


def test_ess_is_per_coordinate_and_detects_a_stuck_chain_set():
    x = np.stack([ar1(0.0, 4, 2000, 1), ar1(0.95, 4, 2000, 2)], axis=-1)
    e = ess(x)
    assert e.shape == (2,) and e[0] > 5 * e[1]
    assert ess(np.ones((4, 100)), rank_normalize=False) == 0.0  # nothing to estimate


def test_split_rhat_near_one_for_iid_and_large_for_disagreeing_chains():
    rng = np.random.default_rng(0)
    iid = rng.standard_normal((4, 1000, 3))
    r = split_rhat(iid)
    assert r.shape == (3,) and np.all(np.abs(r - 1) < 0.01)
    shifted = iid.copy()
    shifted[:2] += 1.0  # two chains sit one sd away from the other two
    assert np.all(split_rhat(shifted) > 1.1)
    trend = iid[:, :, 0] + np.linspace(0, 3, 1000)[None, :]  # every chain drifts: split halves disagree
    assert split_rhat(trend) > 1.1
    assert split_rhat(trend, rank_normalize=True) > 1.1


def test_moment_errors_are_zero_for_the_reference_itself():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5000, 3)) @ np.diag([1.0, 2.0, 0.5])
    m, c = x.mean(0), np.cov(x, rowvar=False)
    e = moment_errors(x, m, c)
    assert e["mean_err"] < 1e-12 and e["cov_err"] < 1e-12
    e2 = moment_errors(x + 1.0, m, c)
    assert e2["mean_err"] == pytest.approx(math.sqrt(3) / math.sqrt(np.trace(c)), rel=1e-9)


# ---------------------------------------------------------------- θ-space samplers


def test_dual_averaging_converges_on_a_known_acceptance_curve():
    # acceptance falls with ε as exp(-ε): the step that gives 0.8 is -log 0.8.
    da = DualAveraging(1.0, 0.8)
    eps = 1.0
    for _ in range(2000):
        eps = da.update(math.exp(-eps))
    assert da.final == pytest.approx(-math.log(0.8), rel=0.05)
    vec = DualAveraging(np.array([1.0, 0.01]), 0.5)
    for _ in range(2000):
        e = vec.current
        vec.update(np.exp(-e))
    assert np.allclose(vec.final, -math.log(0.5), rtol=0.05)


@pytest.mark.parametrize("per_chain", [True, False])
def test_hmc_recovers_standard_gaussian_moments(per_chain):
    D, C = 3, 8
    t = GaussianTarget.standard(D)
    res = hmc(t, 3 * initial_states(D, C, 0), n_warmup=200, n_draws=500, seed=1, per_chain_step=per_chain)
    assert res.draws.shape == (C, 500, D)
    d = res.draws
    flat = d.reshape(-1, D)
    # Each moment is checked to 4.5 Monte Carlo standard errors, with the ESS of the
    # functional itself (HMC can be antithetic for θ but not for θ²): sd(θ_i) = 1,
    # sd(θ_i²) = √2, sd(θ_i θ_j) = 1 under N(0, I).
    assert np.all(np.abs(flat.mean(0)) < 4.5 / np.sqrt(ess(d, rank_normalize=False)))
    cov = np.cov(flat, rowvar=False)
    for i in range(D):
        for j in range(i, D):
            e = ess(d[..., i] * d[..., j], rank_normalize=False)
            sd = math.sqrt(2.0) if i == j else 1.0
            assert abs(cov[i, j] - (i == j)) < 4.5 * sd / math.sqrt(e), (i, j, cov[i, j], e)
    assert np.all(split_rhat(res.draws) < 1.02)
    assert res.n_grad >= C * 700 and res.n_logp == 0


@pytest.mark.parametrize("target_accept", [0.6, 0.9])
@pytest.mark.parametrize("per_chain", [False, True])
def test_hmc_dual_averaging_reaches_the_target_acceptance(target_accept, per_chain):
    # 20-d Gaussian with scales in [0.7, 1.4]: acceptance is a smooth function of ε here.
    t = GaussianTarget(torch.zeros(20, dtype=F64), torch.diag(torch.linspace(0.5, 2.0, 20, dtype=F64)))
    res = hmc(t, initial_states(20, 16, 3), n_warmup=300, n_draws=300, seed=4, target_accept=target_accept,
              per_chain_step=per_chain)
    assert abs(res.warmup_accept - target_accept) < 0.02, res.warmup_accept  # what dual averaging controls
    # after freezing at the averaged ε̄ the realised rate is close (per-chain ε̄ are noisier)
    assert abs(res.accept_rate - target_accept) < (0.1 if per_chain else 0.06), res.accept_rate


def test_rwm_adapts_to_0234_and_recovers_the_mean():
    t = GaussianTarget(torch.tensor([1.0, -2.0], dtype=F64), torch.eye(2, dtype=F64))
    res = rwm(t, initial_states(2, 8, 5), n_warmup=500, n_draws=1000, seed=6, thin=2)
    assert abs(res.accept_rate - 0.234) < 0.05
    e = ess(res.draws, rank_normalize=False)
    assert np.all(np.abs(res.draws.reshape(-1, 2).mean(0) - [1.0, -2.0]) < 4.5 / np.sqrt(e))
    assert res.n_grad == 0 and res.n_logp == 8 * (1 + 500 + 2000)


def test_reference_hmc_on_the_banana_agrees_with_quadrature():
    t = BananaPosterior.make(2)
    ref = reference_hmc(t, n_chains=16, n_warmup=200, n_draws=500, seed=7)
    qm, qc = quadrature_moments(t, n=401)
    qm2, qc2 = quadrature_moments(t, n=801)
    assert np.allclose(qm, qm2, atol=1e-8) and np.allclose(qc, qc2, atol=1e-8)  # grid converged
    sd = np.sqrt(np.diag(qc))
    assert ref.converged and ref.rhat_max < 1.01
    assert np.all(np.abs(ref.mean - qm) < 4.5 * sd / np.sqrt(ref.ess_min))
    assert np.all(np.abs(np.diag(ref.cov) / np.diag(qc) - 1) < 4.5 * np.sqrt(2 / ref.ess_min) * 2)
    # the banana: θ1 ≈ ȳ − θ2², so θ1 and θ2² are strongly anti-correlated
    d = ref.draws
    assert np.corrcoef(d[:, 0], d[:, 1] ** 2)[0, 1] < -0.8


# ---------------------------------------------------------------- latent samplers


class LinearMap:
    """g(z) = A z + b, e(θ) = B (θ − b) with constant stds: a toy latent map (torch.func path)."""

    latent_dim = 2

    def __init__(self, A, b, B, dec_std, enc_std):
        self.A, self.b, self.B = A, b, B
        self.dec_std, self.enc_std = dec_std, enc_std

    def decode_mean(self, z):
        return z @ self.A.T + self.b

    def decode(self, z):
        m = self.decode_mean(z)
        return m, self.dec_std.expand_as(m)

    def encode(self, theta):
        m = (theta - self.b) @ self.B.T
        return m, self.enc_std.expand_as(m)


class LinearMapFast(LinearMap):
    """The same map with the batched Jacobian path."""

    def decode_mean_and_jacobian(self, z):
        return self.decode_mean(z), self.A.expand(z.shape[0], -1, -1)


def _toy():
    """A 3-d correlated Gaussian target and a deliberately imperfect 2-d linear latent map."""
    L = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.4, 0.7]], dtype=F64)
    target = GaussianTarget(torch.tensor([0.5, -1.0, 0.3], dtype=F64), L @ L.T)
    A = torch.tensor([[1.1, 0.0], [0.5, 0.7], [-0.2, 0.5]], dtype=F64)  # not the target's factor
    b = torch.tensor([0.3, -0.8, 0.2], dtype=F64)  # not its mean
    B = torch.linalg.pinv(A)
    normal = torch.linalg.svd(A.T).Vh[-1]  # unit vector orthogonal to the decoder's image
    return target, A, b, B, normal


@pytest.mark.parametrize("proposal,enc_std", [("decoder", 0.5), ("linearised", 0.3)])
def test_corrected_latent_sampler_matches_its_target_and_uncorrected_does_not(proposal, enc_std):
    # (the torch.func path for maps without decode_mean_and_jacobian is checked against the
    # fast path in test_pulled_back_density_fast_path_equals_torch_func_path)
    target, A, b, B, normal = _toy()
    lmap = LinearMapFast(A, b, B, torch.full((3,), 0.6, dtype=F64), torch.full((2,), enc_std, dtype=F64))
    theta0 = initial_states(3, 8, 11)
    iid = target.sample(20_000, torch.Generator().manual_seed(12)).numpy()
    dirs = np.concatenate([np.eye(3), normal.numpy()[None]], 0)  # 3 coordinates + the off-image normal

    res = latent_hmc(target, lmap, theta0, n_warmup=200, n_draws=1200, seed=13, corrected=True, proposal=proposal)
    assert 0.05 < res.accept_rate < 0.95 and res.extra["stage1_accept"] > 0.5
    # Effect sizes, not p-values: the draws are autocorrelated, and a KS p-value on ESS-thinned
    # draws proved machine-dependent (on the 2026-12-02 dev machine it fell below 1e-5 for 6 of
    # seeds 13-22 with either proposal, while CI had passed at seed 13). Over those seeds the
    # corrected samplers' two-sample KS distance to i.i.d. target draws stayed <= 0.05 (decoder)
    # and <= 0.12 (linearised, x coordinate; the other directions <= 0.09); the uncorrected
    # sampler's is 0.68 along the normal of the decoder's plane, which it cannot leave.
    ks = [stats.ks_2samp(res.draws.reshape(-1, 3) @ u, iid @ u).statistic for u in dirs]
    assert max(ks) < 0.2, ks

    bad = latent_hmc(target, lmap, theta0, n_warmup=200, n_draws=1200, seed=13, corrected=False)
    ks_bad = [stats.ks_2samp(bad.draws.reshape(-1, 3) @ u, iid @ u).statistic for u in dirs]
    assert ks_bad[3] > 0.5 and ks_bad[3] > 3 * max(ks), (ks_bad, ks)  # g(z) lies on a plane: the normal direction is degenerate


def test_pulled_back_density_fast_path_equals_torch_func_path():
    torch.manual_seed(0)
    ae = AutoEncoder(4, 2, hidden=8)
    with torch.no_grad():
        ae.z_scale.fill_(1.7)
        ae.z_shift.fill_(0.2)
    target = BananaPosterior.make(4)
    fast = PulledBackDensity(target, ae)
    slow = PulledBackDensity(target, ae)
    slow._fast = False
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    v1, g1 = fast.log_prob_and_grad(z)
    v2, g2 = slow.log_prob_and_grad(z)
    assert torch.allclose(v1, v2, rtol=1e-10, atol=1e-10) and torch.allclose(g1, g2, rtol=1e-8, atol=1e-8)
    assert torch.allclose(fast.log_prob(z), v1)
    # and the forward-mode Jacobian equals autograd's
    m, J = mlp_value_and_jacobian(ae.dec, z, torch.eye(2, dtype=F64).expand(5, -1, -1))
    ref = torch.stack([torch.autograd.functional.jacobian(ae.dec, zi) for zi in z])
    assert torch.allclose(J, ref, atol=1e-12) and torch.allclose(m, ae.dec(z))


def test_pulled_back_density_of_a_linear_bijection_is_the_target():
    # D = d = 2, g(z) = A z + b: s(z) = log p(Az + b) + log|det A| exactly.
    t = GaussianTarget(torch.zeros(2, dtype=F64), torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=F64))
    A = torch.tensor([[1.5, 0.2], [-0.4, 0.9]], dtype=F64)
    b = torch.tensor([0.1, -0.2], dtype=F64)
    lmap = LinearMapFast(A, b, torch.linalg.inv(A), torch.ones(2, dtype=F64), torch.ones(2, dtype=F64))
    z = torch.randn(7, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    s = PulledBackDensity(t, lmap).log_prob(z)
    want = t.log_prob(lmap.decode_mean(z)) + torch.log(torch.abs(torch.linalg.det(A)))
    assert torch.allclose(s, want, atol=1e-12)


# ---------------------------------------------------------------- cell and figures


def test_run_cell_and_figures_smoke(tmp_path):
    t = BananaPosterior.make(2)
    ref = reference_hmc(t, n_chains=4, n_warmup=100, n_draws=200, seed=3)
    ref = dataclasses.replace(ref, converged=True)  # a short reference is enough for a smoke test
    latent = train_latent("ae", ref, seed=0, n_train=500, steps=100)
    assert latent[1].wall_time_s > 0 and latent[1].steps == 100
    cells = {}
    for s in ("hmc", "rwm", "latent-ae", "latent-ae-uncorrected"):
        cells[s] = run_cell(s, 2, 0, n_chains=4, n_warmup=30, n_draws=60, reference=ref,
                            latent=latent if s.startswith("latent") else None, record=5, return_result=True)
    for s, c in cells.items():
        for k in ("ess", "ess_per_s", "accept_rate", "mean_err", "cov_err", "rhat", "wall_time_s", "train_time_s"):
            assert np.isfinite(c[k]), (s, k)
    assert math.isnan(cells["rwm"]["ess_per_grad"]) and cells["hmc"]["ess_per_grad"] > 0
    assert cells["latent-ae"]["train_time_s"] == latent[1].wall_time_s and cells["hmc"]["train_time_s"] == 0.0
    with pytest.raises(ValueError, match="unknown sampler"):
        run_cell("nuts", 2, 0, reference=ref)
    res = cells["latent-ae"]["result"]
    assert len(res.extra["trajectories"]) == 5
    p1 = plot_latent_trajectory(res, PulledBackDensity(t, latent[0]), tmp_path / "traj.png")
    p2 = plot_pair_marginals({s: c["result"].draws for s, c in cells.items()}, ref.draws, tmp_path / "pairs.png")
    assert p1.stat().st_size > 1000 and p2.stat().st_size > 1000
