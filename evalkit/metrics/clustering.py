"""Unsupervised clustering accuracy (Makhzani et al., Adversarial Autoencoders, §6).

Paper protocol, implemented by :func:`cluster_assignment_error`: "for each
cluster i, we found the validation example x_n that maximizes q(y_i|x_n), and
assigned the label of x_n to all points in cluster i"; a test point belongs
to cluster ``argmax_i q(y_i|x)`` and the error is the fraction of test points
whose cluster's label differs from their true label.

Hungarian accuracy and NMI are standard clustering scores that are reported
*beside* the paper's error (never instead of it): they measure something
different (best one-to-one matching / information shared) and are not
comparable to the numbers in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score
from .classification import _to_numpy

__all__ = [
    "ClusterResult",
    "cluster_assignment_error",
    "hungarian_accuracy",
    "nmi",
]

_REFERENCES = ("validation", "train")


def _int_vector(x: Any, name: str) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer ids [N], got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty; pass at least one example")
    if a.dtype.kind == "b" or a.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    if a.dtype.kind == "f" and (not np.all(np.isfinite(a)) or np.any(a != np.round(a))):
        raise ValueError(f"{name} must hold integers, got non-integral or NaN values")
    return a.astype(np.int64)


def _probs(x: Any, name: str) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be cluster probabilities of shape [N, K], got shape {a.shape}")
    if a.dtype.kind not in "fiu" or a.dtype.kind == "b":
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or Inf")
    row = a.sum(axis=1)
    if np.any(a < -1e-6) or np.any(np.abs(row - 1.0) > 1e-3):
        raise ValueError(
            f"{name} must hold probabilities q(y|x) (non-negative rows summing to 1); got "
            f"min {a.min():.4g}, row sums in [{row.min():.4g}, {row.max():.4g}]. Apply softmax "
            f"to logits first: the paper's reference step compares q(y_i|x_n) across examples, "
            f"which logits do not preserve"
        )
    return a


def _same_length(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"length mismatch: {na} has {a.shape[0]} examples but {nb} has {b.shape[0]}"
        )


def hungarian_accuracy(pred_clusters: Any, labels: Any) -> float:
    """Best one-to-one cluster-to-class matching accuracy (scipy ``linear_sum_assignment``).

    Protocol: build the contingency table (clusters x classes, using the ids
    that actually occur), find the one-to-one assignment maximising the
    number of matched examples, and return matched / N. With K clusters !=
    number of classes only min(K, C) pairs can be matched: points in
    unmatched clusters (K > C) count as errors. Reported beside the paper's
    cluster-assignment error, never instead of it.
    """
    c = _int_vector(pred_clusters, "pred_clusters")
    y = _int_vector(labels, "labels")
    _same_length(c, y, "pred_clusters", "labels")
    cu, ci = np.unique(c, return_inverse=True)
    yu, yi = np.unique(y, return_inverse=True)
    table = np.zeros((cu.size, yu.size), dtype=np.int64)
    np.add.at(table, (ci, yi), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / c.shape[0])


def nmi(pred_clusters: Any, labels: Any) -> float:
    """Normalized mutual information between cluster ids and labels, in [0, 1].

    ``sklearn.metrics.normalized_mutual_info_score`` (arithmetic-mean
    normalisation). Reported beside the paper's error, never instead of it.
    """
    c = _int_vector(pred_clusters, "pred_clusters")
    y = _int_vector(labels, "labels")
    _same_length(c, y, "pred_clusters", "labels")
    return float(normalized_mutual_info_score(y, c))


@dataclass(frozen=True, eq=False)
class ClusterResult:
    """Result of :func:`cluster_assignment_error`.

    Attributes:
        error: the paper's test error (fraction in [0, 1]).
        cluster_labels: int64 [K]; label assigned to each cluster (the label of
            the reference example with the highest q(y_i|x_n)).
        hungarian_accuracy: best one-to-one matching accuracy of the test
            clusters (beside the paper's metric, not comparable to it).
        nmi: normalized mutual information of the test clusters and labels.
        n_clusters_used: number of distinct clusters the test points fall in.
        n_clusters: K.
        reference: which set supplied ``probs_ref``/``labels_ref``
            ("validation", the paper's choice, or "train").
    """

    error: float
    cluster_labels: np.ndarray = field(repr=False)
    hungarian_accuracy: float
    nmi: float
    n_clusters_used: int
    n_clusters: int
    reference: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (plain floats, ints and lists)."""
        return {
            "metric": "cluster_assignment_error",
            "error": float(self.error),
            "cluster_labels": [int(v) for v in self.cluster_labels],
            "hungarian_accuracy": float(self.hungarian_accuracy),
            "nmi": float(self.nmi),
            "n_clusters_used": int(self.n_clusters_used),
            "n_clusters": int(self.n_clusters),
            "reference": self.reference,
        }


def cluster_assignment_error(
    probs_test: Any,
    labels_test: Any,
    probs_ref: Any,
    labels_ref: Any,
    *,
    reference: str = "validation",
) -> ClusterResult:
    """Unsupervised clustering error of Makhzani et al. (AAE §6), plus Hungarian accuracy and NMI.

    Protocol: for each cluster i the reference example n* = argmax_n
    q(y_i|x_n) over ``probs_ref`` [R, K] gives the cluster its label
    ``labels_ref[n*]`` (first maximiser on ties; every cluster gets a label
    even if no test point lands in it). Each test point goes to cluster
    argmax_i q(y_i|x) of ``probs_test`` [N, K]; the error is the fraction of
    test points whose cluster label differs from ``labels_test``.

    ``reference`` only records which set the caller passed as
    ``probs_ref``/``labels_ref``: ``"validation"`` (the paper) or ``"train"``
    (what some summaries describe). Probabilities must be softmax outputs
    (rows summing to 1); logits raise ValueError. Hungarian accuracy and NMI
    are computed on the test clusters and reported beside the paper's error,
    never instead of it.
    """
    if reference not in _REFERENCES:
        raise ValueError(f"reference must be one of {_REFERENCES}, got {reference!r}")
    pt = _probs(probs_test, "probs_test")
    pr = _probs(probs_ref, "probs_ref")
    yt = _int_vector(labels_test, "labels_test")
    yr = _int_vector(labels_ref, "labels_ref")
    _same_length(pt, yt, "probs_test", "labels_test")
    _same_length(pr, yr, "probs_ref", "labels_ref")
    if pt.shape[1] != pr.shape[1]:
        raise ValueError(
            f"probs_test has K={pt.shape[1]} clusters but probs_ref has K={pr.shape[1]}; "
            f"both must come from the same model"
        )
    cluster_labels = yr[np.argmax(pr, axis=0)]
    clusters = np.argmax(pt, axis=1)
    err = float(np.mean(cluster_labels[clusters] != yt))
    return ClusterResult(
        error=err,
        cluster_labels=cluster_labels.astype(np.int64),
        hungarian_accuracy=hungarian_accuracy(clusters, yt),
        nmi=nmi(clusters, yt),
        n_clusters_used=int(np.unique(clusters).size),
        n_clusters=int(pt.shape[1]),
        reference=reference,
    )
