"""Unsupervised clustering (the AAE paper's Table 3): cluster-assignment error.

Models train with no labels at all. Each cluster takes the label of the reference example
(default: the held-out validation split) that maximises q(y_i|x); the error is measured on the
test split, with Hungarian accuracy and NMI beside it. Pipelines: ``kmeans-on-pixels`` and
``kmeans-on-codes`` (k-means on a trained model's codes) as baselines.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from .. import data as ekdata
from ..devices import choose_device
from ..evaluation import batched, call_capability
from ..measurement import Measurement
from .base import Cell, CellResult, Protocol, RunSettings, register
from .common import figure_only, model_training, sampled_model

DEFAULTS = {"train_split": "train", "valid_split": "valid", "test_split": "test", "reference": "validation"}


def cluster_fields(probs_test: np.ndarray, y_test: np.ndarray, probs_ref: np.ndarray, y_ref: np.ndarray, reference: str) -> Measurement:
    """Cluster-assignment error (%) of the test split, clusters labelled from the reference set."""
    from ..metrics import cluster_assignment_error

    res = cluster_assignment_error(probs_test, y_test, probs_ref, y_ref, reference=reference)
    return Measurement(value=100.0 * res.error, pm=None, details={**res.to_dict(), "hungarian_accuracy_pct": 100.0 * res.hungarian_accuracy})


def evaluate_clusterer(
    model: Any,
    *,
    dataset: str,
    protocol: Mapping[str, Any],
    data_dir: Optional[str] = None,
    device: Optional[str] = None,
    who: str = "model",
) -> Measurement:
    """Cluster-assignment error of the AAE paper (§6; docs/models.md §11) of ``cluster_probs``:
    each cluster takes the label of the reference example that maximises q(y_i|x)."""
    p = {**DEFAULTS, **protocol}
    dev = choose_device(device, model=model)
    reference = p["reference"]
    ref_split = p["valid_split"] if reference == "validation" else p["train_split"]
    ref = ekdata.load(dataset, ref_split, data_dir=data_dir)
    test = ekdata.load(dataset, p["test_split"], data_dir=data_dir)
    t0 = time.perf_counter()
    p_ref = call_capability(model, "cluster_probs", ref.tensor(), dev, who).numpy()
    p_test = call_capability(model, "cluster_probs", test.tensor(), dev, who).numpy()
    out = cluster_fields(p_test, np.asarray(test.labels), p_ref, np.asarray(ref.labels), reference)
    out.data = {"dataset": dataset, "test": test.fingerprint, "reference": ref.fingerprint}
    out.timings = {"eval_s": time.perf_counter() - t0}
    return out


class KMeansClusterer:
    """k-means as a :class:`~evalkit.capabilities.Clusterer`: ``cluster_probs`` is a softmax
    over negative squared distances to the centroids (temperature = the mean squared
    distance to the nearest centroid on the fitting set), so argmax = nearest centroid and
    the reference example that maximises q(y_i|x) is the one closest to centroid i."""

    def __init__(self, n_clusters: int, seed: int, features: Optional[Callable] = None):
        self.n_clusters, self.seed, self.features = n_clusters, seed, features

    def _feats(self, x: torch.Tensor) -> np.ndarray:
        f = self.features(x) if self.features else x.flatten(1)
        return np.asarray(f.detach().cpu() if isinstance(f, torch.Tensor) else f, dtype=np.float64)

    def fit(self, x: torch.Tensor) -> "KMeansClusterer":
        """k-means (4 initialisations, seeded) on the features of ``x``."""
        from sklearn.cluster import KMeans

        f = self._feats(x)
        self.km_ = KMeans(n_clusters=self.n_clusters, n_init=4, random_state=self.seed).fit(f)
        self.temp_ = float(self.km_.inertia_ / f.shape[0]) or 1.0
        return self

    def cluster_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax over negative squared distances to the centroids, per image."""
        f = self._feats(x)
        c = self.km_.cluster_centers_
        d2 = (f**2).sum(1, keepdims=True) + (c**2).sum(1)[None] - 2 * f @ c.T
        logits = -d2 / self.temp_
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return torch.as_tensor(p / p.sum(1, keepdims=True))


def training(cell: Cell, run: RunSettings, train: Any = None) -> list:
    """The row's model (also a ``kmeans-on-codes`` row's) trains on the training split without labels."""
    train = ekdata.load(cell.column.dataset, cell.settings["train_split"], data_dir=run.data_dir) if train is None else train
    return model_training(cell, run, np.full_like(np.asarray(train.labels), -1, dtype=np.int64), "none", split_set=train)


def run_cell(cell: Cell, run: RunSettings, log: Callable[[str], None]) -> CellResult:
    """Train (or reuse) the row's model without labels, or fit the row's k-means, then cluster the test split."""
    row = cell.row
    train = ekdata.load(cell.column.dataset, cell.settings["train_split"], data_dir=run.data_dir)
    model, loaded, info, who = sampled_model(cell, run, log, training(cell, run, train), "none")
    if row.figure_only:
        return CellResult(figure_only(cell), loaded, info, model)
    common = dict(dataset=cell.column.dataset, protocol=cell.settings, data_dir=run.data_dir, device=run.device, who=who)
    if row.pipeline == "model":
        m = evaluate_clusterer(model, **common)
    else:
        k = int(row.pipeline_kwargs.get("n_clusters", 16))
        feats = None
        if row.pipeline == "kmeans-on-codes":
            enc, dev = model.encode, choose_device(run.device)
            feats = lambda x: batched(enc, x, dev)  # noqa: E731
        t1 = time.perf_counter()
        km = KMeansClusterer(k, cell.seed, feats).fit(train.tensor())
        m = evaluate_clusterer(km, **common)
        m.timings["kmeans_fit_s"] = time.perf_counter() - t1
    return CellResult(m, loaded, info, model)


def provenance_text(entry: Mapping[str, Any]) -> str:
    """The value, with Hungarian accuracy, NMI and the clusters used."""
    d = entry.get("details") or {}
    text = f"{entry['value']:.4g}"
    if "hungarian_accuracy" in d:
        text += (f" (Hungarian acc. {100 * d['hungarian_accuracy']:.2f}%, NMI {d['nmi']:.3f}, "
                 f"{d.get('n_clusters_used')}/{d.get('n_clusters')} clusters used)")
    return text


#: The measurement schema: what each ``details`` key of a record holds.
DETAILS = {
    "error": "cluster-assignment error (fraction)", "hungarian_accuracy": "accuracy under the best one-to-one matching",
    "hungarian_accuracy_pct": "the same in %", "nmi": "normalised mutual information", "n_clusters": "clusters of the model",
    "n_clusters_used": "clusters some test image falls in", "cluster_labels": "label given to each cluster", "reference": "set that labels clusters",
}


CLUSTERING = register(Protocol(
    name="clustering", defaults=DEFAULTS, run_cell=run_cell, training=training,
    pipelines=("model", "kmeans-on-pixels", "kmeans-on-codes"), details=DETAILS, higher_is_better=lambda settings: False,
    provenance_text=provenance_text, figures=("samples", "embedding", "style", "curve"),
    previews=("sample", "embed", "style"), curve_label="cluster-assignment error (%)",
))
