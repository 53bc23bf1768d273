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
warm-up ε is frozen at the averaged iterate ε̄ and the draws are kept. By default every
chain adapts its own ε_c from its own acceptance statistic (as one Stan chain does) and
takes ⌈T/ε_c⌉ steps; optionally all chains share one ε adapted on the acceptance averaged
over chains (see :func:`hmc`). Warm-up draws are discarded; wall time and gradient counts include warm-up.

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
    ``init`` may be a float (one ε) or an array (one independent ε per chain); the
    statistics passed to :meth:`update` then have the same shape.
    """

    def __init__(self, init: float | np.ndarray, target: float, *, gamma: float = 0.05, t0: float = 10.0,
                 kappa: float = 0.75):
        if not (0.0 < target < 1.0):
            raise ValueError(f"target acceptance must be in (0, 1), got {target}")
        init_a = np.asarray(init, dtype=np.float64)
        if not np.all((init_a > 0) & np.isfinite(init_a)):
            raise ValueError(f"initial step must be positive and finite, got {init}")
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self._scalar = init_a.ndim == 0
        self.mu = np.log(10.0 * init_a)
        self.m = 0
        self.h_bar = np.zeros_like(init_a)
        self.log_eps = np.log(init_a)
        self.log_eps_bar = np.zeros_like(init_a)

    def _out(self, x: np.ndarray) -> float | np.ndarray:
        return float(x) if self._scalar else x.copy()

    def update(self, accept_stat: float | np.ndarray) -> float | np.ndarray:
        a = np.clip(np.nan_to_num(np.asarray(accept_stat, dtype=np.float64), nan=0.0), 0.0, 1.0)
        self.m += 1
        m = self.m
        w = 1.0 / (m + self.t0)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target - a)
        self.log_eps = self.mu - math.sqrt(m) / self.gamma * self.h_bar
        eta = m ** (-self.kappa)
        self.log_eps_bar = eta * self.log_eps + (1 - eta) * self.log_eps_bar
        return self._out(np.exp(self.log_eps))

    @property
    def current(self) -> float | np.ndarray:
        return self._out(np.exp(self.log_eps))

    @property
    def final(self) -> float | np.ndarray:
        return self._out(np.exp(self.log_eps_bar if self.m > 0 else self.log_eps))


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
    grad_fn: GradFn, x: torch.Tensor, p: torch.Tensor, grad: torch.Tensor, step: float | torch.Tensor,
    n_steps: int | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Leapfrog steps for all chains.

    ``grad_fn(x) -> (log π(x), ∇log π(x))``; ``grad`` is ∇log π at the start. ``step`` and
    ``n_steps`` are shared (float, int) or per chain (tensors [C]); a chain with fewer steps
    than the longest stays put (masked) once its own trajectory is done. Returns the end point
    ``(x, p, log π, ∇log π)`` and the list of positions after every step, for plots.
    """
    C = x.shape[0]
    eps = (step if torch.is_tensor(step) else torch.full((C,), float(step), dtype=x.dtype))[:, None]
    n = n_steps if torch.is_tensor(n_steps) else torch.full((C,), int(n_steps), dtype=torch.long)
    path = []
    p = p + 0.5 * eps * grad
    lp = None
    for i in range(int(n.max())):
        active = (i < n)[:, None]
        x = torch.where(active, x + eps * p, x)
        lp, grad = grad_fn(x)
        last = (i == n - 1)[:, None]
        p = torch.where(active, p + torch.where(last, 0.5, 1.0) * eps * grad, p)
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
    per_chain_step: bool = True,
    grad_fn: Optional[GradFn] = None,
) -> ChainResult:
    """HMC with dual-averaging warm-up (module docstring) from ``theta0`` [C, D].

    ``per_chain_step`` (default): every chain adapts and then freezes its own ε_c (from its
    own acceptance statistic) and takes L_c = min(max_leapfrog, ⌈T/ε_c⌉) steps, so all
    trajectories have length ≈ T. A chain that wandered during warm-up into the stiff tails
    of the banana (large θ_even, where the posterior is much narrower) can then shrink its
    step and return instead of rejecting forever. ``False``: one ε for all chains, adapted
    on the acceptance averaged over chains. ``step_size`` in the result is the median ε_c.
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
    da = DualAveraging(np.full(C, init_step) if per_chain_step else init_step, target_accept)
    step = np.broadcast_to(np.asarray(da.current), (C,)).copy()
    draws = np.empty((C, n_draws, D))
    accepted = 0
    warm_stats = []

    def n_steps(eps: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.clip(np.ceil(traj_length / eps), 1, max_leapfrog).astype(np.int64))

    for it in range(n_warmup + n_draws):
        warm = it < n_warmup
        if it == n_warmup and n_warmup > 0:
            step = np.broadcast_to(np.asarray(da.final), (C,)).copy()
        L = n_steps(step)
        p = torch.randn(C, D, generator=gen, dtype=DTYPE)
        x_new, p_new, lp_new, g_new, _ = leapfrog(gfn, x, p, g, torch.from_numpy(step), L)
        n_grad += int(L.sum())
        log_a = _log_accept((lp_new - 0.5 * (p_new**2).sum(1)) - (lp - 0.5 * (p**2).sum(1)))
        u = torch.rand(C, generator=gen, dtype=DTYPE)
        acc = torch.log(u) < log_a
        x = torch.where(acc[:, None], x_new, x)
        lp = torch.where(acc, lp_new, lp)
        g = torch.where(acc[:, None], g_new, g)
        a_chain = torch.exp(torch.clamp(log_a, max=0.0)).numpy()
        if warm:
            warm_stats.append(float(a_chain.mean()))
            new = da.update(a_chain if per_chain_step else float(a_chain.mean()))
            step = np.broadcast_to(np.asarray(new), (C,)).copy()
        else:
            accepted += int(acc.sum())
            draws[:, it - n_warmup] = x.numpy()
    wall = time.perf_counter() - t_start
    return ChainResult(
        draws=draws,
        accept_rate=accepted / max(1, C * n_draws),
        step_size=float(np.median(step)),
        n_leapfrog=int(np.median(n_steps(step).numpy())),
        n_grad=n_grad,
        n_logp=0,
        wall_time_s=wall,
        warmup_accept=float(np.mean(warm_stats[len(warm_stats) // 2 :])) if warm_stats else float("nan"),
        extra={"traj_length": traj_length, "target_accept": target_accept, "max_leapfrog": max_leapfrog,
               "step_sizes": step.copy(), "per_chain_step": per_chain_step},
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
