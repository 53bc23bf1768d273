"""Improved precision and recall (Kynkäänniemi et al. 2019) in a feature space, and the
mode coverage of samples' predicted classes. See :mod:`evalkit.metrics.sample_quality` for the
protocol text (k-NN balls, the tie tolerance :data:`TIE_RTOL`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .feature_checks import _array, _features, _positive_int, _same_dim

# Rows/columns per block of the pairwise-distance screen: 1024^2 float64 = 8 MB per buffer.
DEFAULT_CHUNK = 1024
# Relative tolerance on squared distances for "inside a k-NN ball" (see the module docstring of
# evalkit.metrics.sample_quality: it only resolves ties, which rounding would otherwise decide
# differently on different machines).
TIE_RTOL = 1e-9


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
