"""Target densities for the latent-space HMC study (issue 16).

The lecture's posterior ("banana / biscuit / doughnut")
-------------------------------------------------------
Parameters θ ∈ R^D with prior θ_i ~ N(0, σ_θ²) iid, σ_θ² = 1. Observation model

    y | θ ~ N(μ_y(θ), σ_y²),   σ_y² = 4,
    μ_y(θ) = Σ_{k=1}^{⌈D/2⌉} θ_{2k−1} + Σ_{k=1}^{⌊D/2⌋} θ_{2k}²

(1-based indices: odd coordinates enter linearly, even coordinates squared). The data are
N = 100 draws y_n ~ N(1, σ_y²) from ``torch.Generator().manual_seed(data_seed)``; the seed
is kept on the object (:attr:`BananaPosterior.data_seed`). The unnormalised log posterior is

    log p(θ | y) = −N (ȳ − μ_y(θ))² / (2σ_y²) − ‖θ‖² / (2σ_θ²) + const,

using the exact identity Σ_n (y_n − μ)² = Σ_n (y_n − ȳ)² + N (ȳ − μ)² (the constant
Σ_n (y_n − ȳ)² / (2σ_y²) and the normalising constants are dropped; they cancel in every
Metropolis ratio). :meth:`BananaPosterior.log_prob_direct` evaluates the plain sum over
n, so the tests can check the identity. The posterior concentrates near the curved set
μ_y(θ) ≈ ȳ (width ≈ σ_y/√N = 0.2): for D = 2 the (θ1, θ2) marginal is a banana
θ1 ≈ ȳ − θ2²; pairs of two linear coordinates (θ1, θ3) are "biscuits" (mass along the
anti-diagonal), pairs of two squared coordinates (θ2, θ4) are "doughnuts" (rings).

Every target here works on float64 tensors of shape [C, D] (C chains) and returns [C];
:func:`log_prob_and_grad` gives the gradient by autograd.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = [
    "Target",
    "BananaPosterior",
    "GaussianTarget",
    "log_prob_and_grad",
    "DEFAULT_DATA_SEED",
]

DEFAULT_DATA_SEED = 16  # the recorded seed of the N = 100 observations (issue 16)
DTYPE = torch.float64


class Target(Protocol):
    """What the samplers need: a dimension and an unnormalised log-density over [C, D]."""

    dim: int

    def log_prob(self, theta: torch.Tensor) -> torch.Tensor:  # [C, D] -> [C]
        ...


def log_prob_and_grad(target: Target, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(θ), ∇_θ log p(θ))`` for every chain, by autograd; both detached, float64.

    The chains are independent, so the gradient of Σ_c log p(θ_c) with respect to θ is the
    stack of the per-chain gradients (one backward pass for all chains).
    """
    with torch.enable_grad():
        x = theta.detach().to(DTYPE).requires_grad_(True)
        lp = target.log_prob(x)
        (g,) = torch.autograd.grad(lp.sum(), x)
    return lp.detach(), g.detach()


@dataclass
class BananaPosterior:
    """The lecture's posterior p(θ | y) in D dimensions (see the module docstring).

    ``y`` holds the N observations (float64); :attr:`y_mean` is their mean ȳ.
    """

    dim: int
    y: torch.Tensor
    data_seed: int
    sigma_theta2: float = 1.0
    sigma_y2: float = 4.0

    @classmethod
    def make(
        cls,
        dim: int,
        *,
        data_seed: int = DEFAULT_DATA_SEED,
        n_data: int = 100,
        true_mu_y: float = 1.0,
        sigma_y2: float = 4.0,
        sigma_theta2: float = 1.0,
    ) -> "BananaPosterior":
        """Draw y_n ~ N(true_mu_y, sigma_y2), n = 1..n_data, from ``data_seed``."""
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        gen = torch.Generator().manual_seed(int(data_seed))
        y = true_mu_y + math.sqrt(sigma_y2) * torch.randn(n_data, generator=gen, dtype=DTYPE)
        return cls(dim=dim, y=y, data_seed=int(data_seed), sigma_theta2=sigma_theta2, sigma_y2=sigma_y2)

    @property
    def n_data(self) -> int:
        return int(self.y.numel())

    @property
    def y_mean(self) -> float:
        return float(self.y.mean())

    def mu_y(self, theta: torch.Tensor) -> torch.Tensor:
        """μ_y(θ) = Σ θ_odd + Σ θ_even² (1-based), shape [C]."""
        if theta.shape[-1] != self.dim:
            raise ValueError(f"theta must have last dimension {self.dim}, got shape {tuple(theta.shape)}")
        return theta[..., 0::2].sum(-1) + (theta[..., 1::2] ** 2).sum(-1)

    def log_prob(self, theta: torch.Tensor) -> torch.Tensor:
        """Unnormalised log p(θ | y) via the sufficient statistic ȳ, shape [C]."""
        mu = self.mu_y(theta)
        ybar = self.y.mean().to(theta)
        return -self.n_data * (ybar - mu) ** 2 / (2 * self.sigma_y2) - (theta**2).sum(-1) / (2 * self.sigma_theta2)

    def log_prob_direct(self, theta: torch.Tensor) -> torch.Tensor:
        """The same density summed over the N observations, with all normalising constants.

        Differs from :meth:`log_prob` by a constant that does not depend on θ.
        """
        mu = self.mu_y(theta)
        y = self.y.to(theta)
        lik = -0.5 * ((y - mu[..., None]) ** 2).sum(-1) / self.sigma_y2 - 0.5 * self.n_data * math.log(
            2 * math.pi * self.sigma_y2
        )
        prior = -0.5 * (theta**2).sum(-1) / self.sigma_theta2 - 0.5 * self.dim * math.log(
            2 * math.pi * self.sigma_theta2
        )
        return lik + prior

    def describe(self) -> dict:
        """The facts a result record needs to name this target."""
        return {
            "target": "banana-posterior",
            "D": self.dim,
            "data_seed": self.data_seed,
            "N": self.n_data,
            "y_mean": self.y_mean,
            "sigma_theta2": self.sigma_theta2,
            "sigma_y2": self.sigma_y2,
        }


@dataclass
class GaussianTarget:
    """N(mean, cov) in D dimensions (a test target with known moments)."""

    mean: torch.Tensor
    cov: torch.Tensor

    def __post_init__(self) -> None:
        self.mean = self.mean.to(DTYPE)
        self.cov = self.cov.to(DTYPE)
        self._prec = torch.linalg.inv(self.cov)
        self._chol = torch.linalg.cholesky(self.cov)

    @classmethod
    def standard(cls, dim: int) -> "GaussianTarget":
        return cls(torch.zeros(dim, dtype=DTYPE), torch.eye(dim, dtype=DTYPE))

    @property
    def dim(self) -> int:
        return int(self.mean.numel())

    def log_prob(self, theta: torch.Tensor) -> torch.Tensor:
        d = theta - self.mean.to(theta)
        return -0.5 * ((d @ self._prec.to(theta)) * d).sum(-1)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn(n, self.dim, generator=generator, dtype=DTYPE)
        return self.mean + eps @ self._chol.T
