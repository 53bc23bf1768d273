"""θ-space samplers: Hamiltonian Monte Carlo and random-walk Metropolis, vectorised over chains.

HMC (Neal 2011, "MCMC using Hamiltonian dynamics")
---------------------------------------------------
State θ ∈ R^D, momentum p ~ N(0, I) (identity mass matrix), Hamiltonian
H(θ, p) = −log π(θ) + ½‖p‖². One iteration: draw p, take L leapfrog steps of size ε

    p ← p + ½ε ∇log π(θ);  repeat L times { θ ← θ + ε p;  p ← p + ε ∇log π(θ) } (last one ½ε),

and accept the end point with probability min(1, exp(H(θ, p) − H(θ', p'))). The trajectory
length (integration time) T is fixed and stated; L = min(max_leapfrog, ⌈T/ε⌉).

Step size: during warm-up ε is adapted by dual averaging (Hoffman & Gelman 2014, JMLR 15,
Algorithm 5, their constants γ = 0.05, t0 = 10, κ = 0.75, μ = log(10 ε0)) so that the mean
acceptance probability over chains approaches ``target_accept`` (default 0.8); after
warm-up ε is frozen at the averaged iterate ε̄ and the draws are kept. All chains share one
ε (the statistic fed to dual averaging is the acceptance probability averaged over
chains). Warm-up draws are discarded; wall time and gradient counts include warm-up.

Random-walk Metropolis: θ' = θ + s ξ, ξ ~ N(0, I), accepted with min(1, π(θ')/π(θ)); log s
is adapted during warm-up by the same dual averaging towards acceptance 0.234 (Roberts,
Gelman & Gilks 1997), then frozen.

Gradient evaluations are counted per chain: one leapfrog step of C chains adds C.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from .target import DTYPE, Target, log_prob_and_grad

__all__ = ["DualAveraging", "ChainResult", "leapfrog", "hmc", "rwm", "HMC_TARGET_ACCEPT", "RWM_TARGET_ACCEPT"]

HMC_TARGET_ACCEPT = 0.8
RWM_TARGET_ACCEPT = 0.234

GradFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class DualAveraging:
    """Hoffman & Gelman (2014) dual averaging of log ε towards a target acceptance δ.

    After m updates with acceptance statistics α_1..α_m:
        H̄_m = (1 − 1/(m+t0)) H̄_{m−1} + (δ − α_m)/(m+t0)
        log ε_m = μ − √m / γ · H̄_m
        log ε̄_m = m^{−κ} log ε_m + (1 − m^{−κ}) log ε̄_{m−1}
    :meth:`update` returns ε_m (used during warm-up); :attr:`final` is ε̄_m (frozen after).
    """

    def __init__(self, init: float, target: float, *, gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75):
        if not (0.0 < target < 1.0):
            raise ValueError(f"target acceptance must be in (0, 1), got {target}")
        if not (init > 0 and math.isfinite(init)):
            raise ValueError(f"initial step must be positive and finite, got {init}")
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.mu = math.log(10.0 * init)
        self.m = 0
        self.h_bar = 0.0
        self.log_eps = math.log(init)
        self.log_eps_bar = 0.0

    def update(self, accept_stat: float) -> float:
        a = 0.0 if not math.isfinite(accept_stat) else min(1.0, max(0.0, accept_stat))
        self.m += 1
        m = self.m
        w = 1.0 / (m + self.t0)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target - a)
        self.log_eps = self.mu - math.sqrt(m) / self.gamma * self.h_bar
        eta = m ** (-self.kappa)
        self.log_eps_bar = eta * self.log_eps + (1 - eta) * self.log_eps_bar
        return math.exp(self.log_eps)

    @property
    def current(self) -> float:
        return math.exp(self.log_eps)

    @property
    def final(self) -> float:
        return math.exp(self.log_eps_bar) if self.m > 0 else math.exp(self.log_eps)


@dataclass
class ChainResult:
    """Draws and costs of one sampler run.

    ``draws``: θ after warm-up, numpy float64 [C, S, D]. ``accept_rate``: fraction of
    post-warm-up proposals accepted (over all chains). ``n_grad``: gradient evaluations
    (per chain, summed over chains, warm-up included); ``n_logp``: log-density evaluations
    without gradient (same convention). ``wall_time_s``: warm-up + sampling.
    """

    draws: np.ndarray
    accept_rate: float
    step_size: float
    n_leapfrog: int
    n_grad: int
    n_logp: int
    wall_time_s: float
    warmup_accept: float
    extra: dict[str, Any] = field(default_factory=dict)


def leapfrog(
    grad_fn: GradFn, x: torch.Tensor, p: torch.Tensor, grad: torch.Tensor, step: float, n_steps: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``n_steps`` leapfrog steps of size ``step`` for all chains.

    ``grad_fn(x) -> (log π(x), ∇log π(x))``; ``grad`` is ∇log π at the start. Returns the
    end point ``(x, p, log π, ∇log π)`` and the list of intermediate positions (the start
    excluded), for trajectory plots.
    """
    path = []
    p = p + 0.5 * step * grad
    lp = None
    for i in range(n_steps):
        x = x + step * p
        lp, grad = grad_fn(x)
        p = p + (step if i < n_steps - 1 else 0.5 * step) * grad
        path.append(x)
    assert lp is not None
    return x, p, lp, grad, path


def _log_accept(delta: torch.Tensor) -> torch.Tensor:
    """log acceptance ratio with NaN (a diverged trajectory) mapped to −∞."""
    return torch.where(torch.isnan(delta), torch.full_like(delta, -math.inf), delta)


def n_leapfrog_for(step: float, traj_length: float, max_leapfrog: int) -> int:
    return int(max(1, min(max_leapfrog, math.ceil(traj_length / step))))


def hmc(
    target: Target,
    theta0: torch.Tensor,
    *,
    n_warmup: int,
    n_draws: int,
    seed: int,
    traj_length: float = 1.5,
    target_accept: float = HMC_TARGET_ACCEPT,
    init_step: float = 0.1,
    max_leapfrog: int = 100,
    grad_fn: Optional[GradFn] = None,
) -> ChainResult:
    """HMC with dual-averaging warm-up (module docstring) from ``theta0`` [C, D].

    ``grad_fn`` overrides the autograd gradient of ``target.log_prob`` (same contract as
    :func:`leapfrog`).
    """
    if theta0.ndim != 2 or theta0.shape[1] != target.dim:
        raise ValueError(f"theta0 must be [C, {target.dim}], got {tuple(theta0.shape)}")
    gfn: GradFn = grad_fn or (lambda x: log_prob_and_grad(target, x))
    gen = torch.Generator().manual_seed(int(seed))
    C, D = theta0.shape
    x = theta0.detach().to(DTYPE).clone()
    t_start = time.perf_counter()
    lp, g = gfn(x)
    n_grad = C
    da = DualAveraging(init_step, target_accept)
    step = init_step
    draws = np.empty((C, n_draws, D))
    accepted = 0
    warm_stats = []
    for it in range(n_warmup + n_draws):
        warm = it < n_warmup
        if not warm and it == n_warmup:
            step = da.final if n_warmup > 0 else init_step
        L = n_leapfrog_for(step, traj_length, max_leapfrog)
        p = torch.randn(C, D, generator=gen, dtype=DTYPE)
        x_new, p_new, lp_new, g_new, _ = leapfrog(gfn, x, p, g, step, L)
        n_grad += C * L
        log_a = _log_accept((lp_new - 0.5 * (p_new**2).sum(1)) - (lp - 0.5 * (p**2).sum(1)))
        u = torch.rand(C, generator=gen, dtype=DTYPE)
        acc = torch.log(u) < log_a
        x = torch.where(acc[:, None], x_new, x)
        lp = torch.where(acc, lp_new, lp)
        g = torch.where(acc[:, None], g_new, g)
        a_stat = float(torch.exp(torch.clamp(log_a, max=0.0)).mean())
        if warm:
            warm_stats.append(a_stat)
            step = da.update(a_stat)
        else:
            accepted += int(acc.sum())
            draws[:, it - n_warmup] = x.numpy()
    wall = time.perf_counter() - t_start
    return ChainResult(
        draws=draws,
        accept_rate=accepted / max(1, C * n_draws),
        step_size=step,
        n_leapfrog=n_leapfrog_for(step, traj_length, max_leapfrog),
        n_grad=n_grad,
        n_logp=0,
        wall_time_s=wall,
        warmup_accept=float(np.mean(warm_stats[len(warm_stats) // 2 :])) if warm_stats else float("nan"),
        extra={"traj_length": traj_length, "target_accept": target_accept, "max_leapfrog": max_leapfrog},
    )


def rwm(
    target: Target,
    theta0: torch.Tensor,
    *,
    n_warmup: int,
    n_draws: int,
    seed: int,
    target_accept: float = RWM_TARGET_ACCEPT,
    init_scale: float = 0.1,
    thin: int = 1,
) -> ChainResult:
    """Random-walk Metropolis with an isotropic Gaussian proposal (module docstring).

    ``thin`` keeps every ``thin``-th post-warm-up state (``n_draws`` are kept in all), so a
    cheap sampler can be given the same number of stored draws for more iterations.
    """
    if theta0.ndim != 2 or theta0.shape[1] != target.dim:
        raise ValueError(f"theta0 must be [C, {target.dim}], got {tuple(theta0.shape)}")
    gen = torch.Generator().manual_seed(int(seed))
    C, D = theta0.shape
    x = theta0.detach().to(DTYPE).clone()
    t_start = time.perf_counter()
    with torch.no_grad():
        lp = target.log_prob(x)
        n_logp = C
        da = DualAveraging(init_scale, target_accept)
        scale = init_scale
        draws = np.empty((C, n_draws, D))
        accepted = proposals = 0
        warm_stats = []
        n_iter = n_warmup + n_draws * thin
        for it in range(n_iter):
            warm = it < n_warmup
            if it == n_warmup and n_warmup > 0:
                scale = da.final
            prop = x + scale * torch.randn(C, D, generator=gen, dtype=DTYPE)
            lp_new = target.log_prob(prop)
            n_logp += C
            log_a = _log_accept(lp_new - lp)
            acc = torch.log(torch.rand(C, generator=gen, dtype=DTYPE)) < log_a
            x = torch.where(acc[:, None], prop, x)
            lp = torch.where(acc, lp_new, lp)
            a_stat = float(torch.exp(torch.clamp(log_a, max=0.0)).mean())
            if warm:
                warm_stats.append(a_stat)
                scale = da.update(a_stat)
            else:
                accepted += int(acc.sum())
                proposals += C
                k = it - n_warmup
                if (k + 1) % thin == 0:
                    draws[:, k // thin] = x.numpy()
    wall = time.perf_counter() - t_start
    return ChainResult(
        draws=draws,
        accept_rate=accepted / max(1, proposals),
        step_size=scale,
        n_leapfrog=0,
        n_grad=0,
        n_logp=n_logp,
        wall_time_s=wall,
        warmup_accept=float(np.mean(warm_stats[len(warm_stats) // 2 :])) if warm_stats else float("nan"),
        extra={"target_accept": target_accept, "thin": thin},
    )
