"""Tests for evalkit.metrics.classification against slow Python-loop references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from evalkit.metrics import PerClassAccuracy, confusion_matrix, error_rate, per_class_accuracy


def loop_confusion(pred, labels, k):
    cm = [[0] * k for _ in range(k)]
    for p, y in zip(pred, labels):
        cm[y][p] += 1
    return np.array(cm)


def loop_per_class(pred, labels, k):
    out = []
    for c in range(k):
        idx = [i for i, y in enumerate(labels) if y == c]
        out.append(float("nan") if not idx else sum(pred[i] == c for i in idx) / len(idx))
    return np.array(out)


def test_hand_checkable_case():
    pred = [0, 1, 1, 2, 2, 2]
    labels = [0, 1, 2, 2, 2, 0]
    # wrong: index 2 (true 2 -> 1) and index 5 (true 0 -> 2)
    assert error_rate(pred, labels) == pytest.approx(2 / 6)
    cm = confusion_matrix(pred, labels, 3)
    assert cm.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 2]]
    r = per_class_accuracy(pred, labels, class_names=["a", "b", "c"])
    assert isinstance(r, PerClassAccuracy)
    np.testing.assert_allclose(r.per_class, [0.5, 1.0, 2 / 3])
    assert r.mean == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    assert r.overall == pytest.approx(4 / 6)
    assert r.class_names == ("a", "b", "c")
    assert r.confusion.tolist() == cm.tolist()


def test_logits_and_torch_inputs():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.1, 0.2, 0.9], [5.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    assert error_rate(logits, labels) == pytest.approx(0.5)
    assert error_rate(logits.argmax(1), labels.numpy()) == pytest.approx(0.5)
    assert confusion_matrix(logits, labels).shape == (3, 3)  # K from the scores
    r = per_class_accuracy(logits, labels)
    assert r.per_class.tolist() == [1.0, 0.5, 0.0]


def test_random_against_loop_reference():
    rng = np.random.default_rng(0)
    k = 7
    labels = rng.integers(0, k - 1, 500)  # class 6 never appears in labels
    logits = rng.normal(size=(500, k))
    logits[np.arange(500), labels] += 1.0
    pred = logits.argmax(1)
    assert error_rate(logits, labels) == pytest.approx(np.mean([p != y for p, y in zip(pred, labels)]))
    np.testing.assert_array_equal(confusion_matrix(pred, labels, k), loop_confusion(pred, labels, k))
    r = per_class_accuracy(logits, labels)
    ref = loop_per_class(pred, labels, k)
    np.testing.assert_allclose(r.per_class, ref, equal_nan=True)
    assert math.isnan(r.per_class[6])
    assert r.mean == pytest.approx(np.nanmean(ref))  # absent class excluded
    assert r.overall == pytest.approx(1 - error_rate(pred, labels))


def test_to_dict_json():
    r = per_class_accuracy([0, 0, 1], [0, 1, 1], num_classes=3)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["per_class"] == {"0": 1.0, "1": 0.5, "2": None}
    assert d["mean"] == pytest.approx(0.75)
    assert d["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]  # row 1: true 1 -> 0 and 1


def test_bad_inputs():
    with pytest.raises(ValueError, match="length mismatch"):
        error_rate([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        error_rate([], [])
    with pytest.raises(ValueError, match="negative"):
        error_rate([0, 1], [0, -1])
    with pytest.raises(ValueError, match="NaN"):
        error_rate(np.array([[0.0, np.nan], [1.0, 0.0]]), [0, 1])
    with pytest.raises(ValueError, match="shape"):
        error_rate(np.zeros((2, 2, 2)), [0, 1])
    with pytest.raises(ValueError, match="integer"):
        error_rate([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="num_classes=2"):
        confusion_matrix([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="K=3.*num_classes=2"):
        confusion_matrix(np.zeros((2, 3)), [0, 1], 2)
    with pytest.raises(ValueError, match="class_names"):
        per_class_accuracy([0, 1], [0, 1], num_classes=2, class_names=["a"])
    with pytest.raises(ValueError, match="num_classes"):
        per_class_accuracy([0, 1], [0, 1], num_classes=0)
