"""Tests for evalkit.metrics.clustering against explicit-loop references."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from evalkit.metrics import ClusterResult, cluster_assignment_error, hungarian_accuracy, nmi


def loop_cluster_error(probs_test, labels_test, probs_ref, labels_ref):
    """The paper's procedure written out with explicit loops."""
    k = len(probs_ref[0])
    cluster_label = []
    for i in range(k):
        best_n, best_q = None, -1.0
        for n in range(len(probs_ref)):
            if probs_ref[n][i] > best_q:
                best_n, best_q = n, probs_ref[n][i]
        cluster_label.append(labels_ref[best_n])
    wrong = 0
    for p, y in zip(probs_test, labels_test):
        c = max(range(k), key=lambda i: (p[i], -i))  # first argmax
        wrong += cluster_label[c] != y
    return wrong / len(labels_test), cluster_label


def brute_hungarian(clusters, labels):
    """Best one-to-one matching by enumerating all injective maps (tiny cases only)."""
    cs, ys = sorted(set(clusters)), sorted(set(labels))
    best = 0
    if len(cs) <= len(ys):
        for perm in itertools.permutations(ys, len(cs)):
            m = dict(zip(cs, perm))
            best = max(best, sum(m[c] == y for c, y in zip(clusters, labels)))
    else:
        for perm in itertools.permutations(cs, len(ys)):
            m = dict(zip(perm, ys))
            best = max(best, sum(m.get(c) == y for c, y in zip(clusters, labels)))
    return best / len(labels)


def softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def test_hand_checkable_case():
    # 3 clusters; reference examples: cluster 0 most confident on ref #1 (label 7),
    # cluster 1 on ref #0 (label 3), cluster 2 on ref #2 (label 3)
    probs_ref = np.array([[0.1, 0.8, 0.1], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]])
    labels_ref = np.array([3, 7, 3])
    probs_test = np.array([[0.7, 0.2, 0.1],   # cluster 0 -> 7
                           [0.1, 0.8, 0.1],   # cluster 1 -> 3
                           [0.1, 0.1, 0.8],   # cluster 2 -> 3
                           [0.6, 0.3, 0.1]])  # cluster 0 -> 7
    labels_test = np.array([7, 3, 7, 3])
    r = cluster_assignment_error(probs_test, labels_test, probs_ref, labels_ref)
    assert isinstance(r, ClusterResult)
    assert r.cluster_labels.tolist() == [7, 3, 3]
    assert r.error == pytest.approx(0.5)
    assert r.n_clusters_used == 3 and r.n_clusters == 3 and r.reference == "validation"
    # clusters [0, 1, 2, 0] vs labels [7, 3, 7, 3]: best matching 0->7, 1->3 => 2/4
    assert r.hungarian_accuracy == pytest.approx(0.5)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["cluster_labels"] == [7, 3, 3] and d["error"] == 0.5


def test_random_against_loop_reference():
    rng = np.random.default_rng(0)
    k, n_classes = 16, 10
    labels_ref = rng.integers(0, n_classes, 300)
    labels_test = rng.integers(0, n_classes, 400)
    centers = rng.normal(size=(n_classes, k)) * 2
    probs_ref = softmax(centers[labels_ref] + rng.normal(size=(300, k)))
    probs_test = softmax(centers[labels_test] + rng.normal(size=(400, k)))
    r = cluster_assignment_error(torch.from_numpy(probs_test), labels_test, probs_ref,
                                 torch.from_numpy(labels_ref), reference="train")
    err, cl = loop_cluster_error(probs_test.tolist(), labels_test.tolist(),
                                 probs_ref.tolist(), labels_ref.tolist())
    assert r.error == pytest.approx(err)
    assert r.cluster_labels.tolist() == cl
    assert r.reference == "train"
    clusters = probs_test.argmax(1)
    assert r.nmi == pytest.approx(normalized_mutual_info_score(labels_test, clusters))
    assert r.n_clusters_used == len(set(clusters.tolist()))


@pytest.mark.parametrize("k_clusters", [3, 4, 5])
def test_hungarian_against_brute_force(k_clusters):
    rng = np.random.default_rng(k_clusters)
    labels = rng.integers(0, 4, 60)
    clusters = np.where(rng.random(60) < 0.7, labels % k_clusters, rng.integers(0, k_clusters, 60))
    assert hungarian_accuracy(clusters, labels) == pytest.approx(brute_hungarian(clusters.tolist(), labels.tolist()))


def test_hungarian_and_nmi_simple():
    assert hungarian_accuracy([5, 5, 9, 9], [0, 0, 1, 1]) == 1.0  # relabelling is free
    assert nmi([5, 5, 9, 9], [0, 0, 1, 1]) == pytest.approx(1.0)
    # 4 clusters, 2 classes: only two clusters can be matched, the rest are errors
    assert hungarian_accuracy([0, 1, 2, 3], [0, 0, 1, 1]) == pytest.approx(0.5)


def test_bad_inputs():
    p = np.full((4, 2), 0.5)
    with pytest.raises(ValueError, match="length mismatch"):
        cluster_assignment_error(p, [0, 1, 0], p, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="probs_ref.*K=3"):
        cluster_assignment_error(p, [0, 1, 0, 1], np.full((4, 3), 1 / 3), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="softmax"):
        cluster_assignment_error(p * 3, [0, 1, 0, 1], p, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="reference"):
        cluster_assignment_error(p, [0, 1, 0, 1], p, [0, 1, 0, 1], reference="test")
    with pytest.raises(ValueError, match="shape"):
        cluster_assignment_error(p[:, 0], [0, 1, 0, 1], p, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="length mismatch"):
        hungarian_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        nmi([], [])
