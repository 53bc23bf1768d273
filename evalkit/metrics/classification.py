"""Classification metrics: error rate, confusion matrix, per-class accuracy.

Conventions shared by every function here:

* Predictions are either class indices, shape [N] (integers, or floats with
  integral values), or scores/logits/probabilities, shape [N, K], in which
  case the prediction is the row-wise argmax (first index on ties).
* Labels are non-negative integer class indices, shape [N].
* Inputs may be numpy arrays, torch tensors (any device) or sequences.
* Bad input (length mismatch, empty input, NaN scores, negative or
  out-of-range classes, wrong dimensionality) raises ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

__all__ = [
    "PerClassAccuracy",
    "confusion_matrix",
    "error_rate",
    "per_class_accuracy",
]


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name} must be array-like ({exc})") from exc


def _labels(labels: Any, name: str = "labels") -> np.ndarray:
    """Validate integer class labels [N] -> int64 numpy array."""
    a = _to_numpy(labels, name)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices [N], got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty; pass at least one example")
    if a.dtype.kind == "b" or a.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integer class indices, got dtype {a.dtype}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise ValueError(f"{name} must hold integer class indices, got non-integral values")
    if np.any(a < 0):
        raise ValueError(f"{name} has negative class indices (min {a.min()}); classes are 0..K-1")
    return a.astype(np.int64)


def _predictions(pred_or_logits: Any, name: str = "pred_or_logits") -> tuple[np.ndarray, int | None]:
    """Return (class indices [N] int64, K or None) from indices [N] or scores [N, K]."""
    a = _to_numpy(pred_or_logits, name)
    if a.ndim == 2:
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise ValueError(f"{name} is empty (shape {a.shape}); pass scores of shape [N, K]")
        if a.dtype.kind not in "iuf" or a.dtype.kind == "b":
            raise ValueError(f"{name} scores must be numeric, got dtype {a.dtype}")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or Inf scores; fix the model outputs first")
        return np.argmax(a, axis=1).astype(np.int64), int(a.shape[1])
    if a.ndim == 1:
        return _labels(a, name), None
    raise ValueError(
        f"{name} must be class indices [N] or scores/logits [N, K], got shape {a.shape}"
    )


def _check_lengths(pred: np.ndarray, labels: np.ndarray, pname: str = "predictions") -> None:
    if pred.shape[0] != labels.shape[0]:
        raise ValueError(
            f"length mismatch: {pname} has {pred.shape[0]} examples but labels has "
            f"{labels.shape[0]}; pass one prediction per label"
        )


def error_rate(pred_or_logits: Any, labels: Any) -> float:
    """Fraction of misclassified examples, in [0, 1] (multiply by 100 for %).

    Protocol: ``pred_or_logits`` is class indices [N] or scores [N, K]
    (argmax taken); error = mean(pred != labels).
    """
    pred, _ = _predictions(pred_or_logits)
    y = _labels(labels)
    _check_lengths(pred, y)
    return float(np.mean(pred != y))


def _num_classes(num_classes: Any, k_scores: int | None, pred: np.ndarray, y: np.ndarray) -> int:
    top = int(max(pred.max(), y.max())) + 1
    if num_classes is None:
        return max(top, k_scores or 0)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    num_classes = int(num_classes)
    if k_scores is not None and k_scores != num_classes:
        raise ValueError(
            f"scores have K={k_scores} columns but num_classes={num_classes}; they must agree"
        )
    if top > num_classes:
        raise ValueError(
            f"class index {top - 1} found in predictions/labels but num_classes={num_classes}; "
            f"classes must be 0..num_classes-1"
        )
    return num_classes


def confusion_matrix(pred: Any, labels: Any, num_classes: int | None = None) -> np.ndarray:
    """Confusion matrix, int64 [K, K]: entry [i, j] counts examples of true class i predicted as j.

    Rows are true classes, columns predictions. ``pred`` may be class indices
    [N] or scores [N, K]. ``num_classes`` defaults to K (scores) or
    ``max(index) + 1``; an index >= ``num_classes`` raises ValueError.
    """
    p, k_scores = _predictions(pred, "pred")
    y = _labels(labels)
    _check_lengths(p, y)
    k = _num_classes(num_classes, k_scores, p, y)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


@dataclass(frozen=True, eq=False)
class PerClassAccuracy:
    """Per-class accuracy report.

    Attributes:
        per_class: float64 [K]; accuracy (recall) of each true class, NaN for a
            class with no examples in ``labels``.
        mean: mean of ``per_class`` over classes present in the labels
            (NaN entries excluded) — the "balanced accuracy".
        overall: fraction of all examples classified correctly (1 - error rate).
        confusion: int64 [K, K], rows = true class, columns = prediction.
        class_names: K names (default ``"0"``, ``"1"``, ...).
    """

    per_class: np.ndarray = field(repr=False)
    mean: float
    overall: float
    confusion: np.ndarray = field(repr=False)
    class_names: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict; NaN accuracies (absent classes) become ``None``."""

        def f(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {
            "metric": "per_class_accuracy",
            "per_class": {n: f(v) for n, v in zip(self.class_names, self.per_class)},
            "mean": f(self.mean),
            "overall": float(self.overall),
            "confusion": self.confusion.tolist(),
            "class_names": list(self.class_names),
        }


def per_class_accuracy(
    pred_or_logits: Any,
    labels: Any,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> PerClassAccuracy:
    """Accuracy of every class, their mean, overall accuracy and the confusion matrix.

    Protocol: ``per_class[k] = confusion[k, k] / confusion[k].sum()`` (the
    fraction of true-class-k examples predicted as k). Classes absent from
    ``labels`` get NaN and are excluded from ``mean``. ``num_classes``
    defaults to ``len(class_names)``, else K of the scores, else
    ``max(index) + 1``.
    """
    p, k_scores = _predictions(pred_or_logits)
    y = _labels(labels)
    _check_lengths(p, y)
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    k = _num_classes(num_classes, k_scores, p, y)
    if class_names is None:
        names = tuple(str(i) for i in range(k))
    else:
        names = tuple(str(n) for n in class_names)
        if len(names) != k:
            raise ValueError(f"class_names has {len(names)} entries but there are {k} classes")
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    present = ~np.isnan(per)
    return PerClassAccuracy(
        per_class=per.astype(np.float64),
        mean=float(per[present].mean()),
        overall=float(np.trace(cm) / y.shape[0]),
        confusion=cm,
        class_names=names,
    )
