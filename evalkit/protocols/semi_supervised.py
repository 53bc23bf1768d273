"""Semi-supervised classification (the AAE paper's Table 2, the SGAN table): test error (or
accuracy) of a classifier trained with a class-balanced labelled subset of the training split.

Cells train on the training split with every label outside the cell's labelled subset replaced
by -1 (the subset is drawn with ``label_seed + seed``). A ``svm-on-codes`` row trains its model
with no labels at all and fits an SVM on the codes of the labelled examples (the M1 protocol).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

import numpy as np

from .. import data as ekdata
from ..devices import choose_device
from ..errors import EvalkitError
from ..evaluation import call_capability, class_logits
from ..measurement import Measurement
from .base import Cell, CellResult, Protocol, RunSettings, register
from .common import figure_only, model_training, sampled_model

DEFAULTS = {"train_split": "train", "test_split": "test", "value": "error", "n_classes": 10, "n_labels": 0, "label_seed": 0}


def classification_fields(logits_or_pred: np.ndarray, labels: np.ndarray, value: str = "error") -> Measurement:
    """``value`` (error in % or accuracy as a fraction, as the paper prints it) and per-class accuracy."""
    from ..metrics import error_rate, per_class_accuracy

    err = error_rate(logits_or_pred, labels)
    pca = per_class_accuracy(logits_or_pred, labels)
    v = 100.0 * err if value == "error" else 1.0 - err
    return Measurement(
        value=float(v),
        pm=None,
        details={
            "error": float(err),
            "accuracy": float(1.0 - err),
            "n_errors": int(round(err * len(labels))),
            "per_class_accuracy": [float(a) for a in pca.per_class],
            "mean_class_accuracy": float(pca.mean),
        },
    )


def evaluate_classifier(
    model: Any,
    *,
    dataset: str,
    protocol: Mapping[str, Any],
    data_dir: Optional[str] = None,
    device: Optional[str] = None,
    who: str = "model",
) -> Measurement:
    """Test error of ``predict_logits`` (argmax over the first ``n_classes`` outputs) on the
    protocol's test split. The last-epoch model is evaluated: nothing is selected on test."""
    p = {**DEFAULTS, **protocol}
    dev = choose_device(device, model=model)
    test = ekdata.load(dataset, p["test_split"], data_dir=data_dir)
    t0 = time.perf_counter()
    logits = class_logits(model, test.tensor(), int(p["n_classes"]), dev, who)
    out = classification_fields(logits.numpy(), np.asarray(test.labels), p["value"])
    out.data = {"dataset": dataset, "test": test.fingerprint}
    out.timings = {"eval_s": time.perf_counter() - t0}
    return out


def svm_on_codes(
    model: Any,
    *,
    dataset: str,
    protocol: Mapping[str, Any],
    labelled: np.ndarray,
    data_dir: Optional[str] = None,
    device: Optional[str] = None,
    svm: Optional[dict] = None,
    who: str = "model",
) -> Measurement:
    """M1-style evaluation: an SVM (scikit-learn ``SVC``) trained on the codes ``encode(x)`` of
    the labelled training examples ``labelled`` (indices into the training split), tested
    on the codes of the test split.

    ``svm`` holds ``SVC`` arguments (default RBF kernel, ``C=1``, ``gamma="scale"``: the
    library's defaults) plus ``scaling``: ``"global"`` (default: centre with the labelled
    codes' mean, divide by their one overall std, which keeps the relative scale of the
    dimensions), ``"per-dim"`` (standardise each dimension; this inflates a VAE's inactive
    dimensions, pure posterior noise, to unit variance) or ``"none"``.
    """
    from sklearn.svm import SVC

    p = {**DEFAULTS, **protocol}
    dev = choose_device(device, model=model)
    train = ekdata.load(dataset, p["train_split"], data_dir=data_dir)
    test = ekdata.load(dataset, p["test_split"], data_dir=data_dir)
    t0 = time.perf_counter()
    x_lab = train.subset(labelled).tensor()
    y_lab = np.asarray(train.labels)[labelled]
    c_lab = call_capability(model, "encode", x_lab, dev, who).numpy().astype(np.float64)
    c_test = call_capability(model, "encode", test.tensor(), dev, who).numpy().astype(np.float64)
    params = {"kernel": "rbf", "C": 1.0, "gamma": "scale", "scaling": "global", **(svm or {})}
    scaling = params.pop("scaling")
    if scaling == "global":
        mu, sd = c_lab.mean(0), c_lab.std() + 1e-8
    elif scaling == "per-dim":
        mu, sd = c_lab.mean(0), c_lab.std(0) + 1e-8
    elif scaling == "none":
        mu, sd = 0.0, 1.0
    else:
        raise EvalkitError(f"svm scaling must be 'global', 'per-dim' or 'none', got {scaling!r}")
    clf = SVC(**params).fit((c_lab - mu) / sd, y_lab)
    pred = clf.predict((c_test - mu) / sd)
    params["scaling"] = scaling
    out = classification_fields(pred, np.asarray(test.labels), p["value"])
    out.details["svm"] = params
    out.details["code_dim"] = int(c_lab.shape[1])
    out.data = {"dataset": dataset, "test": test.fingerprint}
    out.timings = {"eval_s": time.perf_counter() - t0}
    return out


def labelled_subset(cell: Cell, train: Any) -> np.ndarray:
    """Indices of the cell's class-balanced labelled subset of the training split."""
    s = cell.settings
    return ekdata.labelled_subset(np.asarray(train.labels), int(s["n_labels"] or 0), seed=int(s["label_seed"]) + cell.seed)


def training_labels(cell: Cell, train: Any) -> tuple[np.ndarray, str]:
    """(labels the model trains with, -1 = unlabelled; their name in the run folder's key)."""
    y = np.asarray(train.labels)
    if cell.row.pipeline == "svm-on-codes":
        return np.full_like(y, -1, dtype=np.int64), "none"
    keep = labelled_subset(cell, train)
    if keep.size == y.size:
        return y.astype(np.int64), "all"
    return ekdata.masked_labels(y, keep), f"{keep.size}:{ekdata.subset_fingerprint(keep)}"


def _split(cell: Cell, run: RunSettings) -> Any:
    return ekdata.load(cell.column.dataset, cell.settings["train_split"], data_dir=run.data_dir)


def training(cell: Cell, run: RunSettings, train: Any = None) -> list:
    """The row's model trains once on the training split with the cell's labels."""
    train = _split(cell, run) if train is None else train
    labels, key = training_labels(cell, train)
    return model_training(cell, run, labels, key, split_set=train)


def run_cell(cell: Cell, run: RunSettings, log: Callable[[str], None]) -> CellResult:
    """Train (or reuse) the row's model with the cell's labels, then score it on the test split."""
    train = _split(cell, run)
    requests = training(cell, run, train)
    label_key = requests[0].label_key if requests else None
    model, loaded, info, who = sampled_model(cell, run, log, requests, label_key)
    if cell.row.figure_only:
        return CellResult(figure_only(cell), loaded, info, model)
    keep = labelled_subset(cell, train)
    common = dict(dataset=cell.column.dataset, protocol=cell.settings, data_dir=run.data_dir, device=run.device, who=who)
    if cell.row.pipeline == "svm-on-codes":
        m = svm_on_codes(model, labelled=keep, svm=cell.row.pipeline_kwargs.get("svm"), **common)
    else:
        m = evaluate_classifier(model, **common)
    m.details.update(n_labels=int(keep.size), labelled_subset=ekdata.subset_fingerprint(keep),
                     label_seed=int(cell.settings["label_seed"]) + cell.seed)
    return CellResult(m, loaded, info, model)


def provenance_text(entry: Mapping[str, Any]) -> str:
    """The value and the labelled subset it was trained with."""
    d = entry.get("details") or {}
    text = f"{entry['value']:.4g}"
    if "n_labels" in d:
        text += f" ({d['n_labels']} labels, subset {d.get('labelled_subset')} (label seed {d.get('label_seed')}))"
    return text


#: The measurement schema: what each ``details`` key of a record holds.
DETAILS = {
    "error": "test error (fraction)", "accuracy": "1 - error", "n_errors": "misclassified test images",
    "per_class_accuracy": "accuracy per class", "mean_class_accuracy": "their mean",
    "n_labels": "size of the labelled subset", "labelled_subset": "its fingerprint", "label_seed": "the seed it was drawn with",
    "svm": "SVM settings (svm-on-codes rows)", "code_dim": "code size (svm-on-codes rows)",
}


SEMI_SUPERVISED = register(Protocol(
    name="semi-supervised", defaults=DEFAULTS, run_cell=run_cell, training=training, pipelines=("model", "svm-on-codes"),
    details=DETAILS, higher_is_better=lambda settings: settings.get("value", "error") != "error",
    provenance_text=provenance_text, figures=("samples", "embedding", "style", "curve"),
    previews=("sample", "embed", "style"), curve_label="test error / accuracy",
))
