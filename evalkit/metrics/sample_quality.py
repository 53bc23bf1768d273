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
import torch

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

# Rows/columns per block of the pairwise-distance screen: 1024^2 float64 = 8 MB per buffer.
DEFAULT_CHUNK = 1024
# Relative tolerance on squared distances for "inside a k-NN ball" (see the module docstring:
# it only resolves ties, which rounding would otherwise decide differently on different machines).
TIE_RTOL = 1e-9


# --------------------------------------------------------------------------- input handling
def _array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name} must be a numpy array or torch tensor ({exc})") from exc


def _features(x: Any, name: str, min_rows: int = 2) -> np.ndarray:
    """Validate a feature matrix [N, D] -> float64 C-contiguous numpy array."""
    a = _array(x, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a feature matrix of shape [N, D], got shape {a.shape}")
    if a.dtype.kind not in "fiu" or a.dtype.kind == "b":
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    if a.shape[1] == 0:
        raise ValueError(f"{name} has no feature dimensions (shape {a.shape})")
    if a.shape[0] < min_rows:
        raise ValueError(f"{name} has {a.shape[0]} samples; this metric needs at least {min_rows}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        bad = int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])
        raise ValueError(f"{name} contains NaN or Inf (first bad row: {bad}); check the images and the feature network")
    return a


def _same_dim(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimension mismatch: {na} has D={a.shape[1]} (shape {a.shape}), "
                         f"{nb} has D={b.shape[1]} (shape {b.shape}); use the same feature network for both")


def _positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _json(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


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


# --------------------------------------------------------------------------- precision / recall
@dataclass(frozen=True, eq=False)
class PrecisionRecall:
    """Result of :func:`precision_recall`. ``real_radii`` / ``fake_radii`` are the k-NN
    radii (Euclidean distances) of each set's points within their own set."""

    precision: float
    recall: float
    k: int
    n_real: int
    n_fake: int
    real_radii: np.ndarray = field(repr=False)
    fake_radii: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": "precision_recall", "precision": self.precision, "recall": self.recall, "k": self.k,
                "n_real": self.n_real, "n_fake": self.n_fake}


def _direct_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise ``sum((a - b)^2)``: the deciding ("exact") squared distance of a pair."""
    d = a - b
    return (d * d).sum(1)


class _Screen:
    """Matrix-multiply squared distances of one block with a rigorous bound on their
    difference from :func:`_direct_sq` (float64 error analysis of both, doubled)."""

    def __init__(self, x: torch.Tensor, dim: int):
        self.norms = (x * x).sum(1)
        self.coef = 4.0 * (dim + 4) * float(np.finfo(np.float64).eps)

    @staticmethod
    def block(q: torch.Tensor, qn: torch.Tensor, r: torch.Tensor, rn: torch.Tensor, coef: float):
        norms = qn[:, None] + rn[None, :]
        d2 = torch.addmm(norms, q, r.t(), beta=1.0, alpha=-2.0)
        tol = norms.mul_(coef)
        return d2 - tol, d2.add_(tol)  # lower, upper bounds of the direct value


def _smallest_k(a: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, a.shape[1])
    return torch.topk(a, k, dim=1, largest=False, sorted=True).values


def _knn_radii_sq(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Squared distance of every row of ``x`` to its k-th nearest other row (direct values)."""
    n = x.shape[0]
    scr = _Screen(x, x.shape[1])
    out = torch.empty(n, dtype=torch.float64)
    inf = math.inf
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        q, qn = x[a:b], scr.norms[a:b]
        best_u = torch.full((b - a, k), inf, dtype=torch.float64)
        best_e = torch.full((b - a, k), inf, dtype=torch.float64)
        for c0 in range(0, n, chunk):
            c1 = min(n, c0 + chunk)
            lo, hi = _Screen.block(q, qn, x[c0:c1], scr.norms[c0:c1], scr.coef)
            lo0, lo1 = max(a, c0), min(b, c1)
            self_idx = torch.arange(lo0, max(lo0, lo1))  # each point itself (none off the diagonal)
            hi[self_idx - a, self_idx - c0] = inf
            best_u = _smallest_k(torch.cat([best_u, _smallest_k(hi, k)], 1), k)
            cand = lo <= best_u[:, k - 1:k]
            cand[self_idx - a, self_idx - c0] = False
            ri, ci = torch.nonzero(cand, as_tuple=True)
            exact = torch.full_like(hi, inf)
            exact[ri, ci] = _direct_sq(q[ri], x[c0 + ci])
            best_e = _smallest_k(torch.cat([best_e, _smallest_k(exact, k)], 1), k)
        out[a:b] = best_e[:, k - 1]
    return out


def _in_manifold(q_all: torch.Tensor, ref: torch.Tensor, rad2: torch.Tensor, chunk: int) -> torch.Tensor:
    """Bool [Nq]: does some ref point j have direct ||q - ref_j||^2 <= rad2_j?

    Callers pass ``rad2`` already widened by ``(1 + TIE_RTOL)`` (see :func:`precision_recall`)."""
    dim = ref.shape[1]
    qs, rs = _Screen(q_all, dim), _Screen(ref, dim)
    out = torch.zeros(q_all.shape[0], dtype=torch.bool)
    for a in range(0, q_all.shape[0], chunk):
        b = min(q_all.shape[0], a + chunk)
        q, qn = q_all[a:b], qs.norms[a:b]
        inside = torch.zeros(b - a, dtype=torch.bool)
        for c0 in range(0, ref.shape[0], chunk):
            c1 = min(ref.shape[0], c0 + chunk)
            lo, hi = _Screen.block(q, qn, ref[c0:c1], rs.norms[c0:c1], qs.coef)
            r2 = rad2[None, c0:c1]
            inside |= (hi <= r2).any(1)
            ri, ci = torch.nonzero((lo <= r2) & ~inside[:, None], as_tuple=True)
            if ri.numel():
                hit = _direct_sq(q[ri], ref[c0 + ci]) <= rad2[c0 + ci]
                inside[ri[hit]] = True
            if bool(inside.all()):
                break
        out[a:b] = inside
    return out


def precision_recall(real_features: Any, fake_features: Any, *, k: int = 3, chunk_size: int = DEFAULT_CHUNK) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN radii (see module docstring).

    Args:
        real_features: [N_real, D]; fake_features: [N_fake, D] (numpy or torch).
        k: neighbour rank for the radii (paper: 3); each set needs more than k points.
        chunk_size: rows/columns per block (memory ~ 5 * chunk_size^2 * 8 bytes);
            the result does not depend on it.
    """
    k = _positive_int(k, "k")
    chunk = _positive_int(chunk_size, "chunk_size")
    real, fake = _features(real_features, "real_features", k + 1), _features(fake_features, "fake_features", k + 1)
    _same_dim(real, fake, "real_features", "fake_features")
    r, f = torch.from_numpy(real), torch.from_numpy(fake)
    with torch.no_grad():
        r_rad2, f_rad2 = _knn_radii_sq(r, k, chunk), _knn_radii_sq(f, k, chunk)
        # ties (distance == radius up to rounding) count as inside on every machine: TIE_RTOL
        precision = float(_in_manifold(f, r, r_rad2 * (1.0 + TIE_RTOL), chunk).double().mean())
        recall = float(_in_manifold(r, f, f_rad2 * (1.0 + TIE_RTOL), chunk).double().mean())
    # numpy's sqrt is the correctly rounded IEEE one (so the radius of an integer lattice is
    # exactly math.sqrt of the integer squared radius)
    return PrecisionRecall(precision, recall, k, real.shape[0], fake.shape[0],
                           np.sqrt(r_rad2.numpy()), np.sqrt(f_rad2.numpy()))


# --------------------------------------------------------------------------- mode coverage
@dataclass(frozen=True, eq=False)
class ModeCoverage:
    """Result of :func:`mode_coverage`: ``n_covered`` classes with at least ``min_count``
    samples, ``counts`` [n_classes] samples per class, ``kl`` = KL(p || uniform) in nats."""

    n_covered: int
    n_classes: int
    counts: np.ndarray
    kl: float
    n_samples: int
    min_count: int

    def to_dict(self) -> dict[str, Any]:
        return {"metric": "mode_coverage", "n_covered": self.n_covered, "n_classes": self.n_classes,
                "counts": [int(c) for c in self.counts], "kl": self.kl, "n_samples": self.n_samples,
                "min_count": self.min_count}


def mode_coverage(class_probs_or_labels: Any, n_classes: int, *, min_count: int = 1) -> ModeCoverage:
    """Mode coverage of samples from predicted classes (see module docstring).

    ``class_probs_or_labels``: predicted labels [N] (integers in 0..n_classes-1) or class
    probabilities / logits [N, n_classes] (assigned class = argmax, first on ties).
    """
    n_classes = _positive_int(n_classes, "n_classes")
    min_count = _positive_int(min_count, "min_count")
    a = _array(class_probs_or_labels, "class_probs_or_labels")
    if a.ndim == 2:
        if a.shape[1] != n_classes:
            raise ValueError(f"class probabilities have {a.shape[1]} columns but n_classes={n_classes}")
        if a.dtype.kind not in "fiu" or not np.all(np.isfinite(a)):
            raise ValueError("class probabilities must be finite numbers")
        labels = np.argmax(a, axis=1) if a.shape[0] else np.zeros(0, np.int64)
    elif a.ndim == 1:
        if a.size and (a.dtype.kind not in "fiu" or a.dtype.kind == "b" or not np.all(np.isfinite(a))
                       or np.any(a != np.round(a))):
            raise ValueError(f"predicted labels must be integers, got dtype {a.dtype}")
        labels = a.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"predicted labels must be in 0..{n_classes - 1}, got range {labels.min()}..{labels.max()}")
    else:
        raise ValueError(f"pass predicted labels [N] or class probabilities [N, K], got shape {a.shape}")
    if labels.size == 0:
        raise ValueError("no samples: mode coverage needs at least one")
    counts = np.bincount(labels, minlength=n_classes)
    p = counts / counts.sum()
    nz = p > 0
    kl = float(np.sum(p[nz] * np.log(p[nz] * n_classes)))
    return ModeCoverage(int((counts >= min_count).sum()), n_classes, counts, max(kl, 0.0), int(labels.size), min_count)
