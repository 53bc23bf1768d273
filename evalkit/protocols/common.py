"""Pieces several protocols share: getting the model a cell measures, and the footnotes every
trained row gets."""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from .. import data as ekdata
from ..checkpoints import LoadedModel, load_evalkit_checkpoint, load_model
from ..devices import choose_device
from ..locks import file_lock
from ..measurement import Measurement
from ..training import Trained, TrainingRequest, train_or_reuse
from .base import Cell, RunSettings, no_training


def user_model(cell: Cell, run: RunSettings) -> LoadedModel:
    """The user model of a row added with ``--model`` (and ``--checkpoint``)."""
    return load_model(cell.row.model, cell.row.checkpoint, choose_device(run.device))


def train(request: TrainingRequest, run: RunSettings, log: Callable[[str], None]) -> Trained:
    """:func:`~evalkit.training.train_or_reuse` with the run's cache, data, device and progress."""
    return train_or_reuse(request, cache_dir=run.cache_dir, data_dir=run.data_dir, device=run.device, progress=run.progress, log=log,
                          ddp=run.ddp)


def trained_info(tr: Trained, **extra: Any) -> dict:
    """The record's ``train`` field of a cell whose model was trained (or reused)."""
    return {"epochs": tr.epochs, "trained_now": tr.trained_now, "train_s": tr.train_seconds, **extra}


def model_training(cell: Cell, run: RunSettings, labels: Optional[np.ndarray] = None, label_key: Optional[str] = None,
                   split_set: Any = None) -> list[TrainingRequest]:
    """A reference-model row trains once on the protocol's training split (labels as given)."""
    row = cell.row
    if row.user or not row.model:
        return []
    split = cell.settings["train_split"]
    if split_set is None:
        split_set = ekdata.load(cell.column.dataset, split, data_dir=run.data_dir)
    return [TrainingRequest(row, cell.column.dataset, split, cell.seed, cell.epochs, labels=labels, label_key=label_key, split_set=split_set)]


def figure_only(cell: Cell) -> Measurement:
    """A row trained for the report's figures: nothing is measured."""
    return Measurement(value=None, pm=None, details={"figure_only": True}, timings={})


def sampled_model(cell: Cell, run: RunSettings, log: Callable[[str], None], requests: list[TrainingRequest],
                  label_key: Optional[str]) -> tuple[Any, Optional[LoadedModel], dict, str]:
    """(model, loaded checkpoint, ``train`` field, who) of a cell on an image data set's splits:
    a user model, the row's reference model trained by ``requests[0]`` (its sampler settings then
    chosen on the validation split, never the test split, and kept in the checkpoint), or no
    model for a pipeline row."""
    row, settings = cell.row, cell.settings
    if row.user:
        loaded = user_model(cell, run)
        return loaded.model, loaded, no_training(), f"user model {row.model}"
    if not requests:
        return None, None, no_training(), f"pipeline {row.pipeline}"
    tr = train(requests[0], run, log)
    loaded, model = tr.loaded, tr.loaded.model
    info = trained_info(tr, labels=label_key)
    if callable(getattr(model, "choose_on_validation", None)):
        with file_lock(tr.path.parent / ".lock", what=f"sampler choice of {row.id} on {cell.column.dataset}, seed {cell.seed}", log=log):
            valid = ekdata.load(cell.column.dataset, settings.get("valid_split", "valid"), data_dir=run.data_dir).tensor()
            model.choose_on_validation(valid, n_samples=min(int(settings.get("n_samples", 10000)), 10000), seed=cell.seed, checkpoint=tr.path, log=log)
            loaded = load_evalkit_checkpoint(tr.path, choose_device(run.device))  # re-read: the file (and its sha256) now holds the choice
        model = loaded.model
        info["sample_choice"] = model.choice_summary()
    return model, loaded, info, f"reference model {row.model}"
