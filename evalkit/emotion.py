"""Emotion cells (the GASA paper's per-emotion table): a 7-class expression classifier trained
on a face set's training subjects and scored per class on its test subjects.

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

import numpy as np
import torch

from .errors import EvalkitError


def emotion_split(dataset: str, split: str, size, data_dir=None):
    """(images float [N, 1, S, S], labels, class names, fingerprint) of a face set's split."""
    from . import data as ekdata
    from .data.core import make_fingerprint
    from .data.face_tasks import preprocess

    ds = ekdata.load(dataset, split, data_dir=data_dir)
    size = int(size or ds.image_shape[-1])
    fp = make_fingerprint(dataset, split, [ds.fingerprint], extra=f"emotion size={size}")
    return preprocess(ds.images, size), np.asarray(ds.labels, np.int64), list(ds.classes), fp


def score_classifier(model, images: torch.Tensor, labels: np.ndarray, classes, who: str) -> dict:
    """Per-class accuracy (%) of ``predict_logits`` on ``images``; the record's measurement fields."""
    from .evaluation import _call_capability, _device_of
    from .metrics import per_class_accuracy

    logits = _call_capability(model, "predict_logits", images, _device_of(model, None), who)
    if logits.shape[1] < len(classes):
        raise EvalkitError(f"{who}: predict_logits() gives {logits.shape[1]} scores per image; this data set has {len(classes)} classes")
    res = per_class_accuracy(logits[:, : len(classes)].numpy(), labels, class_names=classes)
    per = {c: 100.0 * float(a) for c, a in zip(classes, res.per_class)}
    return {
        "value": 100.0 * float(res.mean),
        "pm": None,
        "details": {
            "per_class": per,
            "mean_per_class_pct": 100.0 * float(res.mean),
            "overall_accuracy_pct": 100.0 * float(res.overall),
            "confusion": np.asarray(res.confusion).tolist(),
            "classes": list(classes),
            "n_test": int(len(labels)),
        },
    }


def emotion_cell(bench, row, column, seed, epochs, protocol, opts, log):
    """(measurement fields, loaded model or None, training info) of one emotion cell."""
    from reference_models.training import pick_device

    from .checkpoints import load_model
    from .data.core import TensorTrainingSet
    from .runner import train_or_reuse

    size = protocol.get("size")
    x_tr, y_tr, classes, fp_tr = emotion_split(column.dataset, protocol.get("train_split", "train"), size, opts.data_dir)
    x_te, y_te, _, fp_te = emotion_split(column.dataset, protocol.get("test_split", "test"), size, opts.data_dir)
    info = {"epochs": None, "trained_now": False, "train_s": None}
    if row.user:
        loaded = load_model(row.model, row.checkpoint, pick_device(opts.device))
        who = f"user model {row.model}"
    else:
        extra = {"image_shape": list(x_tr.shape[1:]), "n_classes": len(classes)}
        if row.pipeline == "gasa-pretrained":
            extra["encoder_checkpoint"], info["pretrain"] = _pretrain_encoder(row, column, seed, protocol, opts, log)
        tr = train_or_reuse(
            row, column.dataset, "train", seed, epochs, train_set=TensorTrainingSet(x_tr, y_tr, fp_tr), extra_kwargs=extra,
            cache_dir=opts.cache_dir, data_dir=opts.data_dir, device=opts.device, progress=opts.progress, log=log,
        )
        loaded, who = tr.loaded, f"reference model {row.model}"
        info.update(epochs=tr.epochs, trained_now=tr.trained_now, train_s=tr.train_seconds)
    t0 = time.perf_counter()
    m = score_classifier(loaded.model, x_te, y_te, classes, who)
    m["data"] = {"dataset": column.dataset, "train": fp_tr, "test": fp_te}
    m["timings"] = {"eval_s": time.perf_counter() - t0}
    return m, loaded, info


def _pretrain_encoder(row, column, seed, protocol, opts, log) -> tuple:
    """Train (or reuse) the GASA autoencoder whose encoder initialises the classifier; returns
    (checkpoint path, what was trained)."""
    from .benchmarks import Row
    from .data.face_tasks import task_pairs
    from .reconstruction import pair_training_set
    from .runner import train_or_reuse

    kw = row.pipeline_kwargs
    task = kw.get("task", f"pose-{column.dataset}")
    pairs = task_pairs(task, "train", size=protocol.get("size"), data_dir=opts.data_dir)
    pre = Row(id=f"{row.id}-pretrain", label="GASA pre-training", model=kw.get("model", "gasa"), model_kwargs=dict(kw.get("model_kwargs", {})),
              model_by_dataset={}, train={"batch_size": int(kw.get("batch_size", 32))}, published={}, published_notes={})
    epochs = int(kw.get("epochs", 50))
    tr = train_or_reuse(
        pre, task, "train", seed, epochs, train_set=pair_training_set(pairs), extra_kwargs={"image_shape": list(pairs.image_shape)},
        cache_dir=opts.cache_dir, data_dir=opts.data_dir, device=opts.device, progress=opts.progress, log=log,
        snapshot_every=1,  # the same run as gasa-reconstruction's GASA row (same key): keep what its timing curve reads
    )
    return str(tr.path), {"model": pre.model, "task": task, "epochs": epochs, "checkpoint": str(tr.path), "pairs": pairs.fingerprint}
