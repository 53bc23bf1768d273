"""Per-emotion accuracy (the GASA paper's per-emotion tables): a 7-class expression classifier
trained on a face set's training subjects and scored per class on its test subjects.

A column names a face set with expression labels (``ckplus48``: anger ... surprise with
contempt and no neutral; ``jaffe``: angry ... surprise with neutral), both split by subject
(:mod:`evalkit.data.faces`), images centre-cropped and resized to the protocol's ``size``
(:func:`evalkit.data.face_tasks.preprocess`; CK+48 stays 48x48, JAFFE 64x64). A row is

* a classifier trained from scratch (``resnet34``, ``emotion_cnn``), or a user model with
  ``predict_logits``;
* ``pipeline = "gasa-pretrained"``: first a GASA autoencoder (``pipeline_kwargs.model``,
  ``.task``, ``.epochs``, ``.model_kwargs``) is trained on the set's pose-normalisation pairs
  (training subjects only), then the classifier starts from its encoder
  (``encoder_checkpoint``) and is fine-tuned.

Measured: ``per_class_accuracy`` on the test split: value = mean per-class accuracy (%),
``details.per_class`` = {class: accuracy %}, overall accuracy and the confusion matrix.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

import numpy as np
import torch

from .. import data as ekdata
from ..devices import choose_device
from ..evaluation import class_logits
from ..measurement import Measurement
from ..training import ModelRecipe, TrainingRequest
from .base import Cell, CellResult, Protocol, RunSettings, no_training, register
from .common import train, user_model
from .reconstruction import pair_training_set

#: ``size_by_dataset``: the working size of each face set when ``size`` is not given.
DEFAULTS = {"size": None, "size_by_dataset": {"ckplus48": 48, "jaffe": 64}, "train_split": "train", "test_split": "test"}


def working_size(dataset: str, size: Optional[int] = None) -> Optional[int]:
    """``size`` if given, else the protocol's size for ``dataset`` (None: the images' own)."""
    return size or DEFAULTS["size_by_dataset"].get(dataset)


def emotion_split(dataset: str, split: str, size: Optional[int], data_dir: Optional[str] = None) -> tuple[torch.Tensor, np.ndarray, list, str]:
    """(images float [N, 1, S, S], labels, class names, fingerprint) of a face set's split."""
    from ..data.core import make_fingerprint
    from ..data.face_tasks import preprocess

    ds = ekdata.load(dataset, split, data_dir=data_dir)
    size = int(size or ds.image_shape[-1])
    fp = make_fingerprint(dataset, split, [ds.fingerprint], extra=f"emotion size={size}")
    return preprocess(ds.images, size), np.asarray(ds.labels, np.int64), list(ds.classes), fp


def score_classifier(model: Any, images: torch.Tensor, labels: np.ndarray, classes: list, who: str) -> Measurement:
    """Per-class accuracy (%) of ``predict_logits`` on ``images``."""
    from ..metrics import per_class_accuracy

    logits = class_logits(model, images, len(classes), choose_device(None, model=model), who, where="this data set")
    res = per_class_accuracy(logits.numpy(), labels, class_names=classes)
    per = {c: 100.0 * float(a) for c, a in zip(classes, res.per_class)}
    return Measurement(
        value=100.0 * float(res.mean),
        pm=None,
        details={
            "per_class": per,
            "mean_per_class_pct": 100.0 * float(res.mean),
            "overall_accuracy_pct": 100.0 * float(res.overall),
            "confusion": np.asarray(res.confusion).tolist(),
            "classes": list(classes),
            "n_test": int(len(labels)),
        },
    )


def pretraining(cell: Cell, run: RunSettings) -> TrainingRequest:
    """The GASA autoencoder whose encoder initialises a ``gasa-pretrained`` row's classifier: the
    same run as gasa-reconstruction's GASA row (same key), keeping what its timing curve reads."""
    from ..data.face_tasks import task_pairs

    kw = cell.row.pipeline_kwargs
    task = kw.get("task", f"pose-{cell.column.dataset}")
    pairs = task_pairs(task, "train", size=cell.settings["size"], data_dir=run.data_dir)
    recipe = ModelRecipe(id=f"{cell.row.id}-pretrain", model=kw.get("model", "gasa"), model_kwargs=dict(kw.get("model_kwargs", {})),
                         batch_size=int(kw.get("batch_size", 32)))
    return TrainingRequest(recipe, task, "train", cell.seed, int(kw.get("epochs", 50)), train_set=pair_training_set(pairs),
                           extra_kwargs={"image_shape": list(pairs.image_shape)}, snapshot_every=1)


def training(cell: Cell, run: RunSettings, split: Optional[tuple] = None) -> list:
    """A model row trains its classifier on the training subjects; a ``gasa-pretrained`` row first
    pre-trains the autoencoder its classifier starts from."""
    row, s = cell.row, cell.settings
    if row.user:
        return []
    x_tr, y_tr, classes, fp_tr = split or emotion_split(cell.column.dataset, s["train_split"], s["size"], run.data_dir)
    extra: dict[str, Any] = {"image_shape": list(x_tr.shape[1:]), "n_classes": len(classes)}
    requests = []
    if row.pipeline == "gasa-pretrained":
        pre = pretraining(cell, run)
        extra["encoder_checkpoint"] = str(pre.checkpoint(run.cache_dir, run.data_dir))
        requests.append(pre)
    from ..data.core import TensorTrainingSet

    requests.append(TrainingRequest(row, cell.column.dataset, "train", cell.seed, cell.epochs,
                                    train_set=TensorTrainingSet(x_tr, y_tr, fp_tr), extra_kwargs=extra))
    return requests


def run_cell(cell: Cell, run: RunSettings, log: Callable[[str], None]) -> CellResult:
    """Train (or reuse) the row's classifier (after its pre-training), then score it per class on the test subjects."""
    row, s = cell.row, cell.settings
    split = emotion_split(cell.column.dataset, s["train_split"], s["size"], run.data_dir)
    x_te, y_te, classes, fp_te = emotion_split(cell.column.dataset, s["test_split"], s["size"], run.data_dir)
    info = no_training()
    if row.user:
        loaded = user_model(cell, run)
        who = f"user model {row.model}"
    else:
        requests = training(cell, run, split)
        if row.pipeline == "gasa-pretrained":
            pre = train(requests[0], run, log)
            info["pretrain"] = {"model": pre_model(row), "task": requests[0].dataset, "epochs": requests[0].epochs,
                                "checkpoint": str(pre.path), "pairs": requests[0].train_set.fingerprint}
        tr = train(requests[-1], run, log)
        loaded, who = tr.loaded, f"reference model {row.model}"
        info.update(epochs=tr.epochs, trained_now=tr.trained_now, train_s=tr.train_seconds)
    t0 = time.perf_counter()
    m = score_classifier(loaded.model, x_te, y_te, classes, who)
    m.data = {"dataset": cell.column.dataset, "train": split[3], "test": fp_te}
    m.timings = {"eval_s": time.perf_counter() - t0}
    return CellResult(m, loaded, info)


def pre_model(row: Any) -> str:
    """The model a ``gasa-pretrained`` row pre-trains."""
    return row.pipeline_kwargs.get("model", "gasa")


#: The measurement schema: what each ``details`` key of a record holds.
DETAILS = {
    "per_class": "accuracy (%) per class", "mean_per_class_pct": "their mean (the value)", "overall_accuracy_pct": "accuracy over all test images",
    "confusion": "confusion matrix (rows: true class)", "classes": "class names in order", "n_test": "test images",
}


EMOTION = register(Protocol(
    name="emotion", defaults=DEFAULTS, run_cell=run_cell, training=training, pipelines=("model", "gasa-pretrained"),
    details=DETAILS, figures=("curve",), curve_label="mean per-class accuracy (%)",
))
