"""Training a row's model for a cell, or reusing the run folder an earlier run left in the cache.

A *run folder* (``<cache>/runs/<model>-<dataset>-<hash>/seed<k>/``) holds one training run's
checkpoints; its key is the model, its constructor arguments, the data set, the split (with the
fingerprint of a training set built in code), the batch size and the labels it saw, never the
number of epochs (the snapshot at epoch E of a longer run is the E-epoch model). Protocols say
what training a cell needs as :class:`TrainingRequest` objects; :func:`train_or_reuse` carries
one out. Nothing here knows about protocols, benchmarks or the result store.
"""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import numpy as np
import torch

import reference_models
from reference_models.training import (
    TrainConfig,
    checkpoint_mismatch,
    fit,
    latest_resumable,
    load_checkpoint,
    quarantine,
    seed_everything,
)

from . import data as ekdata
from . import distributed as ekdist
from .checkpoints import LoadedModel, default_cache_dir, load_evalkit_checkpoint, run_dir
from .devices import choose_device
from .errors import EvalkitError
from .locks import file_lock


class Recipe(Protocol):
    """What trains: a benchmark row (:class:`evalkit.benchmarks.Row`) or a :class:`ModelRecipe`."""

    id: str
    model: Optional[str]

    def kwargs_for(self, dataset: str) -> dict:
        """Constructor arguments on ``dataset``."""
        ...

    def train_for(self, dataset: str) -> dict:
        """Training settings (``batch_size``, ``epochs``, ...) on ``dataset``."""
        ...


@dataclass(frozen=True)
class ModelRecipe:
    """A model to train that is not a row of a spec (e.g. the autoencoder an emotion row pre-trains)."""

    id: str
    model: str
    model_kwargs: dict = field(default_factory=dict)
    batch_size: int = 100

    def kwargs_for(self, dataset: str) -> dict:
        """Constructor arguments (the same on every data set)."""
        return dict(self.model_kwargs)

    def train_for(self, dataset: str) -> dict:
        """Training settings: the batch size."""
        return {"batch_size": self.batch_size}


@dataclass
class Trained:
    """A trained (or reused) model and where its checkpoint lies."""

    loaded: LoadedModel
    path: Path
    epochs: int
    trained_now: bool
    train_seconds: float


@dataclass
class TrainingRequest:
    """One training run a cell needs: ``recipe``'s model on ``dataset``/``split`` for ``epochs``
    epochs with ``seed``.

    ``labels`` (int64, -1 = unlabelled) replaces the split's labels; ``label_key`` names them in
    the run folder's key. ``train_set`` replaces the loaded split (its fingerprint joins the key),
    ``split_set`` is ``dataset``/``split`` already loaded (same key), ``extra_kwargs`` add
    constructor arguments (e.g. a restoration task), ``snapshot_every`` keeps a checkpoint every
    so many epochs."""

    recipe: Recipe
    dataset: str
    split: str
    seed: int
    epochs: int
    labels: Optional[np.ndarray] = None
    label_key: Optional[str] = None
    train_set: Any = None
    split_set: Any = None
    extra_kwargs: Optional[dict] = None
    snapshot_every: int = 0
    ddp: int = 0  # > 1: trained data-parallel over this many processes (its own run folder)

    def resolved(self, data_dir: Optional[str] = None) -> tuple[Any, str, dict, int]:
        """(training set, split as keyed, constructor arguments, batch size)."""
        recipe, split = self.recipe, self.split
        if not recipe.model:
            raise EvalkitError(f"row {recipe.id!r} has no reference model to train")
        train_set = self.train_set
        if train_set is None:
            train_set = self.split_set if self.split_set is not None else ekdata.load(self.dataset, split, data_dir=data_dir)
        else:
            split = f"{split}:{train_set.fingerprint[:16]}"
        kwargs = {"image_shape": list(train_set.image_shape), **recipe.kwargs_for(self.dataset), **(self.extra_kwargs or {})}
        batch_size = int(recipe.train_for(self.dataset).get("batch_size", 100))
        return train_set, split, kwargs, batch_size

    def run_dir(self, cache_dir: Optional[Path] = None, data_dir: Optional[str] = None) -> Path:
        """The run folder this request trains in (or reuses)."""
        _, split, kwargs, batch_size = self.resolved(data_dir)
        return self._run_dir(cache_dir, split, kwargs, batch_size)

    def _run_dir(self, cache_dir: Optional[Path], split: str, kwargs: dict, batch_size: int) -> Path:
        return run_dir(
            Path(cache_dir) if cache_dir else default_cache_dir(), model=self.recipe.model, model_kwargs=kwargs,
            dataset=self.dataset, split=split, batch_size=batch_size, seed=self.seed, labels=self.label_key, ddp=self.ddp,
        )

    def checkpoint(self, cache_dir: Optional[Path] = None, data_dir: Optional[str] = None) -> Path:
        """The checkpoint :func:`train_or_reuse` returns for this request."""
        return self.run_dir(cache_dir, data_dir) / f"epoch_{self.epochs}.pt"


def train_or_reuse(
    request: TrainingRequest,
    *,
    cache_dir: Optional[Path] = None,
    data_dir: Optional[str] = None,
    device: Optional[str] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    ddp: int = 0,
) -> Trained:
    """Carry out ``request``: reuse ``epoch_<epochs>.pt`` from its run folder when present (and a
    checkpoint of this very model and configuration); otherwise resume from the furthest earlier
    checkpoint (or start) and train to ``epochs``. One process at a time trains or reads a run
    folder (a file lock); a second one waits and then reuses what the first wrote.

    ``ddp`` > 1 (a collective call on every rank of a torch.distributed group of that size):
    the model trains data-parallel (:mod:`reference_models.ddp`) in a run folder of its own; rank 0
    holds the lock, checks and writes the folder, and tells the other ranks whether to reuse or
    to train with it."""
    if ddp > 1:
        rank, world = ekdist.group_world()
        if world != ddp:
            raise EvalkitError(f"--ddp: {ddp} processes requested but this process group has {world}; start evalkit under torchrun")
        request = dataclasses.replace(request, ddp=ddp)
    else:
        rank = 0
    rq = request
    row, dataset, seed, epochs = rq.recipe, rq.dataset, rq.seed, rq.epochs
    train_set, split, kwargs, batch_size = rq.resolved(data_dir)
    rdir = rq._run_dir(cache_dir, split, kwargs, batch_size)
    lock = file_lock(rdir / ".lock", what=f"training run of {row.id} on {dataset}, seed {seed}", log=log) if rank == 0 else contextlib.nullcontext()
    with lock:
        target = rdir / f"epoch_{epochs}.pt"
        # The initial weights depend on the seed alone, not on what ran earlier in this process.
        seed_everything(seed)
        try:
            model = reference_models.build(row.model, **kwargs)
        except (TypeError, ValueError) as e:
            raise EvalkitError(f"row {row.id!r}: model {row.model!r} rejected its arguments {sorted(kwargs)}: {e}") from None
        target_ck = None
        if rank == 0:  # with --ddp the other ranks never touch the folder
            if target.exists():  # reuse only a checkpoint of this very model and configuration (defaults included)
                try:
                    target_ck = load_checkpoint(target)
                    why = checkpoint_mismatch(target_ck, model)
                except Exception as e:
                    why = f"it cannot be read ({type(e).__name__})"
                if why:
                    quarantine(target, f"not reusable for row {row.id!r}: {why}", log)
                    target_ck = None
            if not target.exists():
                last = rdir / "last.pt"
                if last.exists() and latest_resumable(rdir, epochs) == last:
                    ck = load_checkpoint(last)
                    if ck["epoch"] == epochs and not checkpoint_mismatch(ck, model):  # finished but the snapshot was not kept
                        shutil.copyfile(last, target)
                        target_ck = ck
        if ddp > 1:  # rank 0 looked at the folder (the others may not touch it): its answer for all
            reuse = ekdist.broadcast(target.exists() if rank == 0 else None)
            if rank != 0:
                target_ck = None
        else:
            reuse = target.exists()
        if reuse:
            loaded = load_evalkit_checkpoint(target, choose_device(device), checkpoint=target_ck)
            log(f"[{row.id}/{dataset}/seed {seed}] reusing {target}")
            return Trained(loaded, target, epochs, False, float(loaded.info["provenance"].get("wall_time_s", 0.0)))
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, device=device, snapshot_every=rq.snapshot_every, progress=progress,
                          ddp=ddp > 1)
        log(f"[{row.id}/{dataset}/seed {seed}] training {row.model} for {epochs} epochs -> {rdir}")
        y = np.asarray(train_set.labels) if rq.labels is None else rq.labels
        t0 = time.perf_counter()
        try:
            fit(
                model, train_set.tensor(), torch.as_tensor(np.array(y, dtype=np.int64)), cfg, rdir,
                extra={"dataset": {"name": dataset, "split": split, "fingerprint": train_set.fingerprint, "labels": rq.label_key}},
            )
        except FloatingPointError as e:
            raise EvalkitError(
                f"[{row.id}/{dataset}/seed {seed}] {e}. Nothing was recorded for this cell; the last saved epoch is kept "
                f"in {rdir}. A smaller learning rate or another recipe is needed (or a different seed)."
            ) from None
        loaded = load_evalkit_checkpoint(target, choose_device(device))
        return Trained(loaded, target, epochs, True, time.perf_counter() - t0)
