"""MCMC diagnostics: multi-chain ESS (Geyer's initial monotone sequence), split R-hat, moment errors.

Conventions: draws are numpy arrays [M, N] (M chains, N draws of one scalar) or [M, N, D]
(then every function works per coordinate and returns [D]).

Effective sample size (Geyer 1992; multi-chain form of Vehtari, Gelman, Simpson, Carpenter
& Bürkner 2021, "Rank-normalization, folding, and localization", §3.2, as in Stan):

1. split every chain in two halves (the middle draw is dropped when N is odd): M' = 2M
   chains of n = ⌊N/2⌋ draws;
2. ``rank_normalize=True`` (the *bulk* ESS, the default): replace the pooled draws by
   z = Φ⁻¹((r − 3/8)/(M'n + 1/4)) with r their pooled (average) ranks; ``False``: plain;
3. per chain the biased autocovariance γ̂_m(t) = (1/n) Σ_i (x_i − x̄_m)(x_{i+t} − x̄_m) (FFT),
   W = mean_m s_m² (s_m² = n/(n−1) γ̂_m(0)), B/n = variance of the chain means (ddof 1),
   var⁺ = (n−1)/n W + B/n, and ρ̂_t = 1 − (W − mean_m γ̂_m(t)) / var⁺;
4. Geyer's initial monotone sequence: P̂_k = ρ̂_{2k} + ρ̂_{2k+1} for k = 0, 1, …, stopping
   before the first negative P̂_k, then P̂_k ← min(P̂_k, P̂_{k−1}); τ̂ = −1 + 2 Σ_k P̂_k;
5. ESS = M'n / τ̂ (capped at M'n log10(M'n), as Stan does for antithetic chains).

For an AR(1) chain x_t = ρ x_{t−1} + ε_t, τ = (1+ρ)/(1−ρ), so ESS = n(1−ρ)/(1+ρ).

Split R-hat (Gelman et al., BDA3 §11.4): R̂ = √(var⁺ / W) on the split chains, optionally
rank-normalised (Vehtari et al. 2021). Values near 1 mean the chains agree.
"""
from __future__ import annotations

import math
import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

__all__ = [
    "split_chains",
    "rank_normalize",
    "autocorrelation",
    "ess",
    "split_rhat",
    "moment_errors",
]


def _as_3d(x: np.ndarray) -> tuple[np.ndarray, bool]:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2:
        return a[:, :, None], True
    if a.ndim == 3:
        return a, False
    raise ValueError(f"draws must be [chains, draws] or [chains, draws, dim], got shape {a.shape}")


def split_chains(x: np.ndarray) -> np.ndarray:
    """[M, N, D] -> [2M, ⌊N/2⌋, D]: first and second halves as separate chains."""
    a, _ = _as_3d(x)
    m, n, d = a.shape
    if n < 4:
        raise ValueError(f"need at least 4 draws per chain to split, got {n}")
    h = n // 2
    return np.concatenate([a[:, :h], a[:, n - h :]], axis=0)


def rank_normalize(x: np.ndarray) -> np.ndarray:
    """Pooled ranks (per coordinate) mapped through the normal quantile, same shape [M, N, D]."""
    a, _ = _as_3d(x)
    m, n, d = a.shape
    out = np.empty_like(a)
    s = m * n
    for j in range(d):
        r = rankdata(a[:, :, j].ravel(), method="average").reshape(m, n)
        out[:, :, j] = ndtri((r - 0.375) / (s + 0.25))
    return out


_rank_normalize = rank_normalize  # the functions below take a keyword of the same name


def _autocov(a: np.ndarray) -> np.ndarray:
    """Biased autocovariance per chain and coordinate by FFT: [M, n, D] -> [M, n, D]."""
    m, n, d = a.shape
    c = a - a.mean(axis=1, keepdims=True)
    size = 1 << int(math.ceil(math.log2(2 * n)))
    f = np.fft.rfft(c, n=size, axis=1)
    acov = np.fft.irfft(f * np.conj(f), n=size, axis=1)[:, :n]
    return acov / n


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Multi-chain ρ̂_t (step 3 of the module docstring) on the chains as given, [n, D]."""
    a, _ = _as_3d(x)
    m, n, d = a.shape
    acov = _autocov(a)
    w = (acov[:, 0] * n / (n - 1)).mean(0)
    b_over_n = a.mean(1).var(0, ddof=1) if m > 1 else np.zeros(d)
    var_plus = (n - 1) / n * w + b_over_n
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = 1.0 - (w[None, :] - acov.mean(0)) / var_plus[None, :]
    rho[0] = 1.0
    return rho


def _geyer_tau(rho: np.ndarray) -> float:
    """τ̂ = −1 + 2 Σ P̂_k over the initial monotone positive sequence (one coordinate)."""
    n = rho.shape[0]
    total = 0.0
    prev = math.inf
    for k in range(n // 2):
        pk = rho[2 * k] + rho[2 * k + 1]
        if not pk >= 0:  # also stops on NaN
            break
        pk = min(pk, prev)
        total += pk
        prev = pk
    return -1.0 + 2.0 * total


def ess(x: np.ndarray, *, rank_normalize: bool = True, split: bool = True) -> np.ndarray | float:
    """Effective sample size per coordinate (module docstring); bulk ESS by default.

    Returns a float for [M, N] input and an array [D] for [M, N, D]. A coordinate that is
    constant in all draws gets ESS 0 (nothing to estimate).
    """
    a, scalar = _as_3d(x)
    if split:
        a = split_chains(a)
    if rank_normalize:
        a = _rank_normalize(a)
    m, n, d = a.shape
    rho = autocorrelation(a)
    out = np.empty(d)
    for j in range(d):
        if not np.isfinite(rho[1, j]):  # constant draws: var⁺ = 0
            out[j] = 0.0
            continue
        tau = _geyer_tau(rho[:, j])
        s = m * n
        out[j] = min(s / tau, s * math.log10(s)) if tau > 0 else s * math.log10(s)
    return float(out[0]) if scalar else out


def split_rhat(x: np.ndarray, *, rank_normalize: bool = False) -> np.ndarray | float:
    """Split R̂ = √(var⁺/W) per coordinate (plain by default; rank-normalised on request)."""
    a, scalar = _as_3d(x)
    a = split_chains(a)
    if rank_normalize:
        a = _rank_normalize(a)
    m, n, d = a.shape
    w = a.var(axis=1, ddof=1).mean(0)
    b_over_n = a.mean(1).var(0, ddof=1)
    var_plus = (n - 1) / n * w + b_over_n
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.sqrt(var_plus / w)
    return float(r[0]) if scalar else r


def moment_errors(draws: np.ndarray, ref_mean: np.ndarray, ref_cov: np.ndarray) -> dict[str, float]:
    """Errors of the pooled posterior mean and covariance against a reference.

    ``mean_err`` = ‖m − m_ref‖₂ / √tr(Σ_ref) (a scale-free error, in units of the reference's
    total standard deviation); ``cov_err`` = ‖Σ − Σ_ref‖_F / ‖Σ_ref‖_F (relative Frobenius).
    ``draws``: [..., D], pooled over all leading axes.
    """
    flat = np.asarray(draws, dtype=np.float64).reshape(-1, np.shape(draws)[-1])
    ref_mean = np.asarray(ref_mean, dtype=np.float64)
    ref_cov = np.atleast_2d(np.asarray(ref_cov, dtype=np.float64))
    m = flat.mean(0)
    c = np.atleast_2d(np.cov(flat, rowvar=False))
    return {
        "mean_err": float(np.linalg.norm(m - ref_mean) / math.sqrt(np.trace(ref_cov))),
        "cov_err": float(np.linalg.norm(c - ref_cov) / np.linalg.norm(ref_cov)),
    }
