"""Ground truth for the posterior moments: a long θ-space HMC run, and quadrature for D = 2.

:func:`reference_hmc` runs :func:`evalkit.hmc.samplers.hmc` with many chains started from
the prior and keeps the pooled draws; it records the largest split R-hat and the smallest
bulk ESS over coordinates, and ``converged`` = (R-hat < 1.01). The caller decides what to do
with an unconverged reference (:func:`evalkit.hmc.cell.run_cell` refuses it).

:func:`quadrature_moments` (D = 2 only) evaluates the unnormalised posterior on a uniform
grid over [−L, L]² and returns the normalised mean and covariance (a Riemann sum; the
integrand is smooth and decays like the N(0, I) prior, so the error is far below Monte Carlo
error for L = 6 and a few hundred points per axis).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .diagnostics import ess, split_rhat
from .samplers import hmc
from .target import DTYPE, Target

__all__ = ["Reference", "reference_hmc", "quadrature_moments", "initial_states"]


@dataclass
class Reference:
    """Reference mean [D], covariance [D, D] and pooled draws [n, D] (for training and plots)."""

    mean: np.ndarray
    cov: np.ndarray
    draws: np.ndarray
    method: str
    rhat_max: float
    ess_min: float
    wall_time_s: float
    converged: bool
    meta: dict[str, Any] = field(default_factory=dict)


def initial_states(dim: int, n_chains: int, seed: int) -> torch.Tensor:
    """Chain starts drawn from the prior N(0, I), float64 [C, D]."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(n_chains, dim, generator=gen, dtype=DTYPE)


def reference_hmc(
    target: Target, *, n_chains: int = 32, n_warmup: int = 1000, n_draws: int = 2000, seed: int = 10_000,
    traj_length: float = 1.5,
) -> Reference:
    """A long, many-chain θ-space HMC run as the reference (module docstring)."""
    res = hmc(target, initial_states(target.dim, n_chains, seed), n_warmup=n_warmup, n_draws=n_draws,
              seed=seed + 1, traj_length=traj_length)
    flat = res.draws.reshape(-1, target.dim)
    rhat = float(np.max(split_rhat(res.draws)))
    return Reference(
        mean=flat.mean(0),
        cov=np.atleast_2d(np.cov(flat, rowvar=False)),
        draws=flat,
        method="hmc",
        rhat_max=rhat,
        ess_min=float(np.min(ess(res.draws))),
        wall_time_s=res.wall_time_s,
        converged=rhat < 1.01,
        meta={"n_chains": n_chains, "n_warmup": n_warmup, "n_draws": n_draws, "seed": seed,
              "step_size": res.step_size, "n_leapfrog": res.n_leapfrog, "accept_rate": res.accept_rate},
    )


def quadrature_moments(target: Target, *, half_width: float = 6.0, n: int = 801) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean [2] and covariance [2, 2] by a Riemann sum on an n×n grid (D = 2 only)."""
    if target.dim != 2:
        raise ValueError(f"quadrature is implemented for D = 2 only, got D = {target.dim}")
    ax = torch.linspace(-half_width, half_width, n, dtype=DTYPE)
    g1, g2 = torch.meshgrid(ax, ax, indexing="ij")
    pts = torch.stack([g1.ravel(), g2.ravel()], 1)
    with torch.no_grad():
        lp = target.log_prob(pts)
    w = torch.exp(lp - lp.max())
    w = (w / w.sum()).numpy()
    x = pts.numpy()
    mean = w @ x
    c = x - mean
    cov = (c * w[:, None]).T @ c
    return mean, cov
