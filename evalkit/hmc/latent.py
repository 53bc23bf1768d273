"""HMC in the latent space of an autoencoder, with and without a correction to the true posterior.

The density sampled in z (the latent dynamics)
----------------------------------------------
With decoder mean g: R^d → R^D (d = 2) and Jacobian J(z) = ∂g/∂z ∈ R^{D×d}, the latent
dynamics run leapfrog on the *pulled-back posterior*

    s(z) = log p(g(z) | y) + ½ log det(J(z)ᵀ J(z))            (:class:`PulledBackDensity`)

i.e. the posterior restricted to the decoder's image, expressed in z with the area element
of an injective g. For D = d and a bijective g, exp s is exactly the density of z = g⁻¹(θ)
under the posterior, so g(z) with z ~ exp s is exact; for D > d the image of g is a
d-dimensional surface in R^D and no z-only chain can represent the D-dimensional posterior.
(``jacobian=False`` drops the ½ log det term: the "naive" pull-back, which is wrong even for
D = d unless g is volume preserving.)

Sampler ``latent-uncorrected`` (what the lecture's figure shows)
-----------------------------------------------------------------
Plain HMC on s(z) (accepted by the usual min(1, exp(−ΔH)) on s), reporting θ = g(z). This
is what the lecture did: HMC in the latent space of an AE trained on samples, trajectory
plotted, no correction. Its stationary law is g_# (exp s): exact only when g is an exact
bijection and the Jacobian term is included; otherwise biased by the autoencoder's error,
and for D > d it is supported on a d-dimensional surface (the covariance of θ has rank ≤ d).
It never evaluates the θ-space posterior apart from through s.

Sampler ``latent-corrected`` (exact: delayed acceptance on an augmented space)
-----------------------------------------------------------------------------
State (z, θ) with the *augmented target*

    π(z, θ) = p(θ | y) · r(z | θ),   r(z | θ) = N(z; e_μ(θ), diag e_σ(θ)²)   (the encoder),

whose θ-marginal is exactly the posterior for any encoder. One iteration (momentum p ~ N(0,I)):

1. leapfrog on s from (z, p) to (z', p') (a volume-preserving involution after the momentum
   flip), and draw θ' ~ q(θ' | z') = N(g(z'), Σ(z')) (:class:`ThetaProposal`; default
   ``"linearised"``: Σ = J e_σ² Jᵀ + diag d_σ², the first-order law of θ given z under the
   coupling; ``"decoder"``: Σ = diag d_σ², the decoder's own density);
2. stage 1 (cheap, no θ-space evaluation): accept with α1 = min(1, exp(s(z') − ½‖p'‖² − s(z) + ½‖p‖²));
3. stage 2: accept with α2 = min(1, w(z', θ') / w(z, θ)), log w(z, θ) = log π(z, θ) − log q(θ | z) − s(z).

The product α1·α2 is the delayed-acceptance rule (Christen & Fox 2005) for the
Metropolis–Hastings ratio π(z',θ') N(p') q(θ|z) / (π(z,θ) N(p) q(θ'|z')) of this proposal,
so the chain leaves π(z, θ) invariant and its θ-draws target p(θ | y) *exactly*, whatever the
quality of the autoencoder: a poor autoencoder costs efficiency (stage-2 rejections), never
correctness. Any choice of s, r and q keeps exactness; they only move acceptance.
w is an importance weight of π against s(z)·q(θ|z); stage 2 accepts well only
where the decoder density q(θ|z) covers the posterior around g(z) and r(z|θ) matches where
the dynamics put z. For D > d, q must cover D − d directions by its noise alone, so
acceptance is expected to fall as D grows (an honest cost of a 2-d latent space).

Costs counted: ``n_grad`` = gradient evaluations of s (one per leapfrog step per chain;
each contains a decoder Jacobian and its derivative, dearer than a θ-space gradient);
``n_logp`` = θ-space log p evaluations (stage 2 only, for the chains that passed stage 1).
The step size is adapted in warm-up by dual averaging on the stage-1 acceptance statistic
(target ``target_accept``), then frozen. The autoencoder's training cost is not included.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch.func import grad_and_value, jacfwd, vmap

from .autoencoders import LatentMap
from .samplers import HMC_TARGET_ACCEPT, ChainResult, DualAveraging, _log_accept, leapfrog, n_leapfrog_for
from .target import DTYPE, Target

__all__ = ["PulledBackDensity", "ThetaProposal", "PROPOSALS", "decoder_jacobian", "latent_hmc", "gaussian_log_density"]


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag std²) summed over the last axis, with its normalising constant."""
    return (-0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)


def _half_logdet_gram(jac: torch.Tensor) -> torch.Tensor:
    """½ log det(JᵀJ) for J [..., D, d]; the 2×2 case in closed form. A singular J gives −∞
    or NaN (never an exception); the samplers reject such proposals."""
    gram = jac.transpose(-1, -2) @ jac
    if gram.shape[-1] == 2:
        det = gram[..., 0, 0] * gram[..., 1, 1] - gram[..., 0, 1] * gram[..., 1, 0]
    else:
        det = torch.linalg.det(gram)
    return 0.5 * torch.log(det)


class PulledBackDensity:
    """s(z) = log p(g(z) | y) + ½ log det(J(z)ᵀ J(z)) (module docstring), vectorised over chains.

    Uses the map's ``decode_mean_and_jacobian`` with plain autograd when it has one, else
    torch.func (vmap of jacfwd of ``decode_mean``), which accepts any differentiable decoder.
    """

    def __init__(self, target: Target, lmap: LatentMap, *, jacobian: bool = True):
        self.target, self.lmap, self.jacobian = target, lmap, jacobian
        self.dim = lmap.latent_dim
        self._fast = hasattr(lmap, "decode_mean_and_jacobian")

        def single(z: torch.Tensor) -> torch.Tensor:
            theta = lmap.decode_mean(z)
            val = target.log_prob(theta[None])[0]
            if jacobian:
                val = val + _half_logdet_gram(jacfwd(lmap.decode_mean)(z))
            return val

        self._value = vmap(single)
        self._grad_value = vmap(grad_and_value(single))

    def _batched(self, z: torch.Tensor) -> torch.Tensor:
        if self.jacobian:
            theta, jac = self.lmap.decode_mean_and_jacobian(z)  # type: ignore[attr-defined]
            return self.target.log_prob(theta) + _half_logdet_gram(jac)
        return self.target.log_prob(self.lmap.decode_mean(z))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._batched(z.to(DTYPE)) if self._fast else self._value(z.to(DTYPE))

    def log_prob_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._fast:
            with torch.enable_grad():
                x = z.detach().to(DTYPE).requires_grad_(True)
                v = self._batched(x)
                (g,) = torch.autograd.grad(v.sum(), x)
            return v.detach(), g
        with torch.no_grad():
            g, v = self._grad_value(z.to(DTYPE))
        return v, g


def decoder_jacobian(lmap: LatentMap, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(g(z) [C, D], J(z) [C, D, d]) by the map's fast path if it has one, else torch.func."""
    if hasattr(lmap, "decode_mean_and_jacobian"):
        return lmap.decode_mean_and_jacobian(z)  # type: ignore[attr-defined]
    return lmap.decode_mean(z), vmap(jacfwd(lmap.decode_mean))(z)


PROPOSALS = ("decoder", "linearised")


class ThetaProposal:
    """q(θ | z) = N(θ; g(z), Σ(z)) with a Cholesky factor per chain.

    ``"decoder"``: Σ = diag d_σ(z)² (the map's ``decode``; for a VAE its own p(θ|z)).
    ``"linearised"``: Σ = J(z) diag e_σ(g(z))² J(z)ᵀ + diag d_σ(z)², the law of θ given z
    when z = e(θ) + N(0, e_σ²) and e is the local inverse of g (a first-order expansion):
    it spreads θ along the decoder's surface as the coupling r(z|θ) spreads z, so that for
    D = d the weight w is ≈ constant and stage 2 accepts nearly always.
    """

    def __init__(self, lmap: LatentMap, kind: str):
        if kind not in PROPOSALS:
            raise ValueError(f"unknown proposal {kind!r}; expected one of {PROPOSALS}")
        self.lmap, self.kind = lmap, kind

    def params(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dm, ds = self.lmap.decode(z)
        if self.kind == "decoder":
            return dm, torch.diag_embed(ds)
        g, jac = decoder_jacobian(self.lmap, z)
        _, es = self.lmap.encode(g)
        cov = (jac * es[:, None, :] ** 2) @ jac.transpose(-1, -2) + torch.diag_embed(ds**2)
        return dm, torch.linalg.cholesky(cov)

    def sample(self, z: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        m, tril = self.params(z)
        return m + (tril @ torch.randn(m.shape + (1,), generator=gen, dtype=DTYPE))[..., 0]

    def log_prob(self, theta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        m, tril = self.params(z)
        u = torch.linalg.solve_triangular(tril, (theta - m)[..., None], upper=False)[..., 0]
        logdet = torch.log(torch.diagonal(tril, dim1=-2, dim2=-1)).sum(-1)
        return -0.5 * (u**2).sum(-1) - logdet - 0.5 * m.shape[-1] * math.log(2 * math.pi)


def _log_w(target: Target, lmap: LatentMap, prop: ThetaProposal, s_z: torch.Tensor, z: torch.Tensor,
           theta: torch.Tensor) -> torch.Tensor:
    """log w(z, θ) = log p(θ|y) + log r(z|θ) − log q(θ|z) − s(z) (module docstring)."""
    em, es = lmap.encode(theta)
    return target.log_prob(theta) + gaussian_log_density(z, em, es) - prop.log_prob(theta, z) - s_z


def latent_hmc(
    target: Target,
    lmap: LatentMap,
    theta0: torch.Tensor,
    *,
    n_warmup: int,
    n_draws: int,
    seed: int,
    corrected: bool = True,
    jacobian: bool = True,
    proposal: str = "linearised",
    traj_length: float = 1.5,
    target_accept: float = HMC_TARGET_ACCEPT,
    init_step: float = 0.1,
    max_leapfrog: int = 100,
    record: int = 0,
) -> ChainResult:
    """Latent HMC from θ-states ``theta0`` [C, D] (module docstring for both variants).

    Start: z_0 = e_μ(θ0); the corrected chain starts at (z_0, θ ~ q(·|z_0)) (an arbitrary
    start does not affect exactness, but a θ far from g(z_0) would carry a huge weight w
    and stall the chain), the uncorrected one at z_0.

    ``draws`` are θ: the θ-chain of the augmented sampler when ``corrected``, else g(z).
    ``extra``: ``z_draws`` [C, S, d]; ``stage1_accept`` and ``stage2_accept`` (the latter the
    fraction of stage-1 survivors accepted; corrected only); ``trajectories``: for chain 0 and
    the first ``record`` post-warm-up iterations, dicts with ``start`` [d], ``path`` [L, d]
    (leapfrog positions), ``proposal`` [d] and ``accepted``; ``init_z`` [d] (chain 0's first z).
    """
    gen = torch.Generator().manual_seed(int(seed))
    dens = PulledBackDensity(target, lmap, jacobian=jacobian)
    prop = ThetaProposal(lmap, proposal)
    C = theta0.shape[0]
    d = lmap.latent_dim
    t_start = time.perf_counter()
    with torch.no_grad():
        theta = theta0.detach().to(DTYPE).clone()
        z = lmap.encode(theta)[0].clone()
        if corrected:
            theta = prop.sample(z, gen)
        else:
            theta = lmap.decode_mean(z)
    s_z, g_z = dens.log_prob_and_grad(z)
    n_grad, n_logp = C, 0
    if corrected:
        with torch.no_grad():
            log_w = _log_w(target, lmap, prop, s_z, z, theta)
        n_logp += C
    init_z = z[0].numpy().copy()
    da = DualAveraging(init_step, target_accept)
    step = init_step
    draws = np.empty((C, n_draws, theta.shape[1]))
    z_draws = np.empty((C, n_draws, d))
    acc_total = acc1_total = passed_total = 0
    warm_stats: list[float] = []
    trajectories: list[dict[str, Any]] = []
    for it in range(n_warmup + n_draws):
        warm = it < n_warmup
        if it == n_warmup and n_warmup > 0:
            step = da.final
        L = n_leapfrog_for(step, traj_length, max_leapfrog)
        p = torch.randn(C, d, generator=gen, dtype=DTYPE)
        z_new, p_new, s_new, g_new, path = leapfrog(dens.log_prob_and_grad, z, p, g_z, step, L)
        n_grad += C * L
        log_a1 = _log_accept((s_new - 0.5 * (p_new**2).sum(1)) - (s_z - 0.5 * (p**2).sum(1)))
        acc1 = torch.log(torch.rand(C, generator=gen, dtype=DTYPE)) < log_a1
        acc = acc1.clone()
        if corrected:
            idx = acc1.nonzero().flatten()
            if idx.numel() > 0:
                with torch.no_grad():
                    th_new = prop.sample(z_new[idx], gen)
                    lw_new = _log_w(target, lmap, prop, s_new[idx], z_new[idx], th_new)
                n_logp += int(idx.numel())
                log_a2 = _log_accept(lw_new - log_w[idx])
                acc2 = torch.log(torch.rand(idx.numel(), generator=gen, dtype=DTYPE)) < log_a2
                ok = idx[acc2]
                acc = torch.zeros(C, dtype=torch.bool)
                acc[ok] = True
                theta = theta.clone()
                theta[ok] = th_new[acc2]
                log_w = log_w.clone()
                log_w[ok] = lw_new[acc2]
            else:
                acc = torch.zeros(C, dtype=torch.bool)
        if not warm and len(trajectories) < record:
            trajectories.append(
                {
                    "start": z[0].numpy().copy(),
                    "path": torch.stack([q[0] for q in path]).numpy(),
                    "proposal": z_new[0].numpy().copy(),
                    "accepted": bool(acc[0]),
                    "stage1": bool(acc1[0]),
                }
            )
        z = torch.where(acc[:, None], z_new, z)
        s_z = torch.where(acc, s_new, s_z)
        g_z = torch.where(acc[:, None], g_new, g_z)
        if not corrected:
            with torch.no_grad():
                theta = lmap.decode_mean(z)
        a_stat = float(torch.exp(torch.clamp(log_a1, max=0.0)).mean())
        if warm:
            warm_stats.append(a_stat)
            step = da.update(a_stat)
        else:
            acc1_total += int(acc1.sum())
            acc_total += int(acc.sum())
            draws[:, it - n_warmup] = theta.numpy()
            z_draws[:, it - n_warmup] = z.numpy()
    wall = time.perf_counter() - t_start
    n_prop = max(1, C * n_draws)
    extra: dict[str, Any] = {
        "z_draws": z_draws,
        "stage1_accept": acc1_total / n_prop,
        "stage2_accept": (acc_total / acc1_total) if (corrected and acc1_total) else float("nan"),
        "trajectories": trajectories,
        "init_z": init_z,
        "traj_length": traj_length,
        "target_accept": target_accept,
        "corrected": corrected,
        "proposal": proposal if corrected else None,
        "jacobian": jacobian,
    }
    return ChainResult(
        draws=draws,
        accept_rate=acc_total / n_prop,
        step_size=step,
        n_leapfrog=n_leapfrog_for(step, traj_length, max_leapfrog),
        n_grad=n_grad,
        n_logp=n_logp,
        wall_time_s=wall,
        warmup_accept=float(np.mean(warm_stats[len(warm_stats) // 2 :])) if warm_stats else float("nan"),
        extra=extra,
    )
