"""Sample-quality metrics on feature vectors: FD, KID, precision/recall, mode coverage.

All functions take *features* (one vector per image, e.g. the penultimate layer of
:class:`evalkit.features.FeatureNet`), as numpy arrays or torch tensors of shape
[N, D], and compute in float64. Protocols:

* **Fréchet distance** (Heusel et al. 2017, "FID" when the features are
  Inception pool3): fit a Gaussian to each set (mean, covariance with ``ddof=1``
  as ``numpy.cov``) and return
  ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})``.
  ``Tr((S1 S2)^{1/2})`` is the sum of the square roots of the eigenvalues of the
  symmetric PSD matrix ``S1^{1/2} S2 S1^{1/2}`` (the same eigenvalues as
  ``S1 S2``), computed with ``eigh``, not ``scipy.linalg.sqrtm``: faster,
  symmetric by construction, and exact for rank-deficient covariances.
  Eigenvalues that are negative by rounding (> -1e-6 of the largest) are
  clipped to 0; clearly negative ones are an error (not a covariance). The FD
  estimate is biased upwards for finite N, so values are comparable only at
  equal sample counts.
* **Kernel inception distance** (Bińkowski et al. 2018): the unbiased estimate
  of MMD^2 with the polynomial kernel ``k(x, y) = (gamma x.y + coef0)^degree``
  (default ``gamma = 1/D``, ``coef0 = 1``, ``degree = 3``)::

      MMD^2_u = sum_{i!=j} k(x_i,x_j) / (m(m-1)) + sum_{i!=j} k(y_i,y_j) / (m(m-1))
                - 2 sum_{i,j} k(x_i,y_j) / m^2

  on ``subsets`` pairs of random subsets of ``m = min(subset_size, N1, N2)``
  points of each set, drawn without replacement from a seeded
  ``numpy.random.default_rng``; reported as the mean and the standard deviation
  (``ddof=0``) over subsets, as in the original code. It is unbiased, so it can
  be (slightly) negative when the two distributions are equal.
* **Improved precision and recall** (Kynkäänniemi et al. 2019): the radius of a
  point of a set is the distance to its k-th nearest neighbour *among the other
  points of the same set* (duplicates count as neighbours at distance 0). A
  point ``q`` is *in the manifold* of a set S if ``||q - s|| <= radius(s)`` for
  some ``s`` in S. Precision = fraction of fake points in the real manifold;
  recall = fraction of real points in the fake manifold. Distances are
  Euclidean in float64; each deciding distance is the *direct* sum of squared
  differences, so a point is at distance exactly 0 from an identical point and
  ``precision_recall(X, X) == (1.0, 1.0)`` exactly. **Ties**: a point exactly on
  the k-NN sphere is inside (``<=``), but a float64 sum of D squares is only
  correct to about ``D`` ulps and its rounding differs between CPUs, SIMD widths
  and BLAS/torch builds, so the test is
  ``||q - s||^2 <= radius(s)^2 * (1 + TIE_RTOL)`` with ``TIE_RTOL = 1e-9``
  (squared distances; ``5e-10`` on distances): far above float64 rounding for
  any practical D (``2 (D + 2) * 1.1e-16`` is ``2e-11`` at D = 10^5) and far
  below the resolution of float32 features (``1.2e-7``), so it only decides
  ties (points on the sphere up to rounding) and the result does not flip
  between machines. Identical points are at distance exactly 0, so a radius of
  0 (duplicates) still admits only exact copies. Large sets are processed in
  chunks with a matrix-multiply screen (``||x||^2 + ||y||^2 - 2 x.y`` with a
  rigorous rounding-error bound); only the pairs the screen cannot decide are
  recomputed directly, so the result equals the brute-force computation (with
  the same tie rule) and does not depend on the chunk size, while memory stays ``O(chunk^2)``.
* **Mode coverage**: each sample is assigned the class ``argmax`` of a
  classifier's probabilities (or a given predicted label). A class is
  *covered* if at least ``min_count`` (default 1) samples are assigned to it.
  Reported: the number of covered classes, the count per class and
  ``KL(p || uniform) = sum_c p_c log(K p_c)`` (nats, ``0 log 0 = 0``) of the
  histogram ``p`` of assigned classes (0 = perfectly balanced; log K = all
  samples in one class).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .feature_checks import _array, _features, _json, _positive_int, _same_dim

__all__ = [
    "KIDResult",
    "KIDSubsetSizeWarning",
    "ModeCoverage",
    "PrecisionRecall",
    "frechet_distance",
    "frechet_distance_from_features",
    "kernel_inception_distance",
    "mode_coverage",
    "precision_recall",
]


# --------------------------------------------------------------------------- Fréchet distance
def _psd_eigh(s: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric PSD matrix, tiny negative eigenvalues clipped to 0."""
    w, v = np.linalg.eigh(s)
    scale = max(float(np.abs(w).max(initial=0.0)), np.finfo(np.float64).tiny)
    if w.min(initial=0.0) < -1e-6 * scale:
        raise ValueError(f"{name} is not positive semi-definite (eigenvalue {w.min():.3g}, largest {scale:.3g}); "
                         f"pass a covariance matrix")
    return np.clip(w, 0.0, None), v


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any = None, sigma2: Any = None) -> float:
    """Fréchet distance (see the module docstring), called either way:

    * ``frechet_distance(features_a, features_b)``: two feature matrices [N1, D] and
      [N2, D] (numpy or torch); Gaussians are fitted to each (as
      :func:`frechet_distance_from_features`, which it calls).
    * ``frechet_distance(mu1, sigma1, mu2, sigma2)``: means [D] and covariances [D, D].

    Returns a float >= 0 (rounding below 0 is clamped). Raises ValueError on shape
    mismatch, NaN/Inf, non-symmetric or clearly non-PSD covariances, and TypeError
    on any other number of arguments.
    """
    if mu2 is None and sigma2 is None:
        return frechet_distance_from_features(mu1, sigma1)
    if mu2 is None or sigma2 is None:
        raise TypeError("frechet_distance takes two feature matrices (a, b) or four moments (mu1, sigma1, mu2, sigma2), "
                        "got three arguments")
    return _frechet_from_moments(mu1, sigma1, mu2, sigma2)


def _frechet_from_moments(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    m1, m2 = _array(mu1, "mu1").astype(np.float64), _array(mu2, "mu2").astype(np.float64)
    s1, s2 = _array(sigma1, "sigma1").astype(np.float64), _array(sigma2, "sigma2").astype(np.float64)
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors of the same length, got shapes {m1.shape} and {m2.shape}")
    d = m1.shape[0]
    for s, nm in ((s1, "sigma1"), (s2, "sigma2")):
        if s.shape != (d, d):
            raise ValueError(f"{nm} must have shape ({d}, {d}) to match the means, got {s.shape}")
    for a, nm in ((m1, "mu1"), (m2, "mu2"), (s1, "sigma1"), (s2, "sigma2")):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{nm} contains NaN or Inf")
    for s, nm in ((s1, "sigma1"), (s2, "sigma2")):
        if np.abs(s - s.T).max(initial=0.0) > 1e-6 * max(1.0, float(np.abs(s).max(initial=0.0))):
            raise ValueError(f"{nm} is not symmetric; pass a covariance matrix")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    w1, v1 = _psd_eigh(s1, "sigma1")
    _psd_eigh(s2, "sigma2")  # validation only
    root1 = (v1 * np.sqrt(w1)) @ v1.T  # S1^{1/2}
    m = root1 @ s2 @ root1
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(lam, 0.0, None)).sum())
    diff = m1 - m2
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(fd, 0.0)


def frechet_distance_from_features(f1: Any, f2: Any) -> float:
    """Fréchet distance between Gaussians fitted to features ``f1`` [N1, D] and ``f2`` [N2, D].

    Means and ``numpy.cov`` covariances (``ddof=1``) in float64; needs N >= 2 per set.
    """
    x, y = _features(f1, "f1"), _features(f2, "f2")
    _same_dim(x, y, "f1", "f2")
    return _frechet_from_moments(x.mean(0), np.atleast_2d(np.cov(x, rowvar=False)),
                                 y.mean(0), np.atleast_2d(np.cov(y, rowvar=False)))


# --------------------------------------------------------------------------- KID
@dataclass(frozen=True, eq=False)
class KIDResult:
    """Result of :func:`kernel_inception_distance`: ``mean`` and ``std`` (ddof=0) of the
    unbiased MMD^2 over ``subsets`` random subset pairs of ``subset_size`` points each;
    ``values`` holds the per-subset estimates. ``subset_size`` is the size actually used,
    ``requested_subset_size`` the one asked for; ``note`` says why they differ (None when equal)."""

    mean: float
    std: float
    values: np.ndarray = field(repr=False)
    subsets: int
    subset_size: int
    degree: int
    gamma: float
    coef0: float
    requested_subset_size: int | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"metric": "kid", "mean": _json(self.mean), "std": _json(self.std), "subsets": self.subsets,
                "subset_size": self.subset_size, "requested_subset_size": self.requested_subset_size,
                "degree": self.degree, "gamma": self.gamma, "coef0": self.coef0, "note": self.note}


class KIDSubsetSizeWarning(UserWarning):
    """KID's subset size was larger than a set and was reduced to that set's size."""


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> float:
    kxx = (x @ x.T * gamma + coef0) ** degree
    kyy = (y @ y.T * gamma + coef0) ** degree
    kxy = (x @ y.T * gamma + coef0) ** degree
    mx, my = x.shape[0], y.shape[0]
    return float((kxx.sum() - np.trace(kxx)) / (mx * (mx - 1)) + (kyy.sum() - np.trace(kyy)) / (my * (my - 1))
                 - 2.0 * kxy.sum() / (mx * my))


def kernel_inception_distance(
    f1: Any,
    f2: Any,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int | np.random.Generator = 0,
) -> KIDResult:
    """Kernel inception distance of features ``f1`` [N1, D] and ``f2`` [N2, D] (see module docstring).

    ``seed``: an int (``numpy.random.default_rng(seed)``) or a numpy Generator; the
    same seed and inputs give the same result. ``subset_size`` must be at least 2
    (ValueError otherwise: the unbiased estimator needs pairs). A ``subset_size`` above
    ``min(N1, N2)`` is reduced to ``min(N1, N2)`` with a :class:`KIDSubsetSizeWarning`;
    the size used is ``result.subset_size`` and ``result.note`` says so. When it equals
    both set sizes every subset is the whole set, so all subsets give the same value
    and the std over subsets is 0 (up to rounding): it is no measure of uncertainty then.
    """
    x, y = _features(f1, "f1"), _features(f2, "f2")
    _same_dim(x, y, "f1", "f2")
    subsets = _positive_int(subsets, "subsets")
    degree = _positive_int(degree, "degree")
    requested = _positive_int(subset_size, "subset_size")
    if requested < 2:
        raise ValueError(f"KID subset_size must be at least 2, got {requested}: the unbiased MMD^2 estimator "
                         f"averages over pairs of distinct points within a subset")
    m = min(requested, x.shape[0], y.shape[0])
    note = None
    if m < requested:
        note = (f"KID subset size reduced from {requested} to {m} (f1 has {x.shape[0]} and f2 {y.shape[0]} points)"
                + ("; every subset is the whole of both sets, so the std over subsets is 0 and is no measure of "
                   "uncertainty" if m == x.shape[0] == y.shape[0] else "")
                + "; values at different subset sizes are not comparable")
        warnings.warn(note, KIDSubsetSizeWarning, stacklevel=2)
    g = 1.0 / x.shape[1] if gamma is None else float(gamma)
    if not (math.isfinite(g) and g > 0) or not math.isfinite(float(coef0)):
        raise ValueError(f"gamma must be finite and > 0 and coef0 finite, got gamma={gamma!r}, coef0={coef0!r}")
    if isinstance(seed, np.random.Generator):
        rng = seed
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        rng = np.random.default_rng(int(seed))
    else:
        raise ValueError(f"seed must be an int or a numpy.random.Generator, got {seed!r}")
    values = np.empty(subsets)
    for s in range(subsets):
        xs = x[rng.choice(x.shape[0], m, replace=False)]
        ys = y[rng.choice(y.shape[0], m, replace=False)]
        values[s] = _mmd2_unbiased(xs, ys, degree, g, float(coef0))
    return KIDResult(float(values.mean()), float(values.std()), values, subsets, m, degree, g, float(coef0),
                     requested_subset_size=requested, note=note)


# Precision / recall and mode coverage live in :mod:`evalkit.metrics.precision_recall`; their
# names stay importable from here.
from .precision_recall import DEFAULT_CHUNK, TIE_RTOL, ModeCoverage, PrecisionRecall, mode_coverage, precision_recall  # noqa: E402,F401
