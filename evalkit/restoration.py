"""Restoration cells: data of a column, the method of a row, PSNR/SSIM of the pair.

A restoration column names a degradation task (``evalkit.baselines.DEGRADATIONS``: ``sr2``,
``sr4``, ``noise05``, ``noise10``, ``noise20``, ``blur``) and an image group:

* ``natural``: :func:`evalkit.data.restoration_split` — train = Kodak24 minus 3 held-out
  photographs + McMaster (39), test = those 3 Kodak photographs + Set14 + the Set5 images not
  in Set14 (20 images, RGB);
* ``faces``: the CelebA sample (``celeba``), train = its train split (350), test = its
  test split (100 images, 89x109 RGB).

A row is a classical baseline (``pipeline = "baseline"``, ``RESTORERS[name]``, given the
known degradation parameters) or a restoration model trained on random crops of the
group's training images (``reference_models.restoration_gan``, one model per task and
group). Test images are never in the training images (the split's leakage test proves it
for ``natural``; ``celeba`` splits by file).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from . import data as ekdata
from .errors import EvalkitError

GROUPS = ("natural", "faces")


def group_data(group: str, data_dir: Optional[str] = None):
    """(train images, test images as a list of [1, C, H, W] tensors, description)."""
    if group == "natural":
        train, test, desc = ekdata.restoration_split("natural", data_dir=data_dir)
        return train, [test.tensor(i) for i in range(len(test))], desc, test.fingerprint
    if group == "faces":
        train = ekdata.load("celeba", "train", data_dir=data_dir)
        test = ekdata.load("celeba", "test", data_dir=data_dir)
        t = test.tensor()
        desc = "CelebA sample: train = celeba train split (350 images), test = celeba test split (100 images, 89x109 RGB)"
        return train, [t[i : i + 1] for i in range(t.shape[0])], desc, test.fingerprint
    raise EvalkitError(f"unknown restoration image group {group!r}; choose one of {', '.join(GROUPS)}")


def training_patches(train, size: int, n: int, seed: int):
    """``n`` random ``size``-pixel crops of the training images (an ImageSet)."""
    if isinstance(train, ekdata.ImageSet):
        train = ekdata.ImageList(train.name, train.split, tuple(train.images), tuple(str(i) for i in range(len(train))), train.fingerprint)
    return train.crop_patches(size, n, seed=seed)


def model_degradation(deg) -> dict:
    """The ``degradation`` keyword of ``reference_models.restoration_gan`` for an evalkit task."""
    p = deg.params
    if deg.kind == "sr":
        return {"kind": "sr", "scale": int(p["scale"])}
    if deg.kind == "noise":
        return {"kind": "noise", "sigma": float(p["noise_sigma"])}
    return {"kind": "blur", "size": int(p["kernel_size"]), "sigma": float(p["kernel_sigma"]), "noise": float(p["noise_sigma"])}


def applicable(row, column_protocol: dict) -> bool:
    """Whether a baseline row restores the column's degradation kind (models: always)."""
    if row.pipeline != "baseline":
        return True
    from .baselines import DEGRADATIONS, RESTORERS

    return DEGRADATIONS[column_protocol["task"]].kind in RESTORERS[row.pipeline_kwargs["restorer"]].kinds


def restorer_for(row, deg):
    """(restore callable, parameters recorded) of a baseline row."""
    from .baselines import RESTORERS

    name = row.pipeline_kwargs.get("restorer")
    if name not in RESTORERS:
        raise EvalkitError(f"row {row.id!r}: unknown restorer {name!r}; known: {', '.join(sorted(RESTORERS))}")
    overrides = {k: v for k, v in row.pipeline_kwargs.items() if k != "restorer"}
    base = RESTORERS[name]
    return base.bind(deg, **overrides).restore, base.params(deg, **overrides)


def example_arrays(example) -> dict:
    y, out, target = example
    return {"input": y, "output": out, "target": target}


def as_numpy_images(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
