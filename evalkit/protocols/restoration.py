"""Image restoration (the restoration table): PSNR / SSIM of a method's output against the clean image.

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
for ``natural``; ``celeba`` splits by file). The test images' fingerprint joins the cell key.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from .. import data as ekdata
from ..errors import EvalkitError
from ..images import check_images, to_uint8
from ..measurement import Example, Measurement
from ..training import TrainingRequest
from .base import Cell, CellResult, Protocol, RunSettings, no_training, register
from .common import train, trained_info, user_model

GROUPS = ("natural", "faces")

DEFAULTS = {"task": None, "channel": "rgb", "crop_border": 0, "n_test": 0, "patch_size": 64, "n_patches": 4000}


def group_data(group: str, data_dir: Optional[str] = None) -> tuple[Any, list, str, str]:
    """(train images, test images as a list of [1, C, H, W] tensors, description, test fingerprint)."""
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


def training_patches(train: Any, size: int, n: int, seed: int) -> Any:
    """``n`` random ``size``-pixel crops of the training images (an ImageSet or ImageList)."""
    if isinstance(train, ekdata.ImageSet):
        train = ekdata.ImageList(train.name, train.split, tuple(train.images), tuple(str(i) for i in range(len(train))), train.fingerprint)
    return train.crop_patches(size, n, seed=seed)


def model_degradation(deg: Any) -> dict:
    """The ``degradation`` keyword of ``reference_models.restoration_gan`` for an evalkit task."""
    p = deg.params
    if deg.kind == "sr":
        return {"kind": "sr", "scale": int(p["scale"])}
    if deg.kind == "noise":
        return {"kind": "noise", "sigma": float(p["noise_sigma"])}
    return {"kind": "blur", "size": int(p["kernel_size"]), "sigma": float(p["kernel_sigma"]), "noise": float(p["noise_sigma"])}


def applicable(row: Any, settings: Mapping[str, Any]) -> bool:
    """Whether a baseline row restores the column's degradation kind (models: always)."""
    if row.pipeline != "baseline":
        return True
    from ..baselines import DEGRADATIONS, RESTORERS

    return DEGRADATIONS[settings["task"]].kind in RESTORERS[row.pipeline_kwargs["restorer"]].kinds


def restorer_for(row: Any, deg: Any) -> tuple[Callable, dict]:
    """(restore callable, parameters recorded) of a baseline row."""
    from ..baselines import RESTORERS

    name = row.pipeline_kwargs.get("restorer")
    if name not in RESTORERS:
        raise EvalkitError(f"row {row.id!r}: unknown restorer {name!r}; known: {', '.join(sorted(RESTORERS))}")
    overrides = {k: v for k, v in row.pipeline_kwargs.items() if k != "restorer"}
    base = RESTORERS[name]
    return base.bind(deg, **overrides).restore, base.params(deg, **overrides)


def evaluate_restoration(
    restore: Callable[[torch.Tensor], torch.Tensor],
    images: Sequence[torch.Tensor],
    degradation: Any,
    *,
    seed: int,
    channel: str = "rgb",
    crop_border: int = 0,
    who: str = "restorer",
    progress: bool = False,
) -> Measurement:
    """PSNR (dB) and SSIM of ``restore(degraded)`` against the clean images, per image,
    averaged over images (docs/models.md, Protocol contracts: MAX = 1 on [0, 1], RGB unless ``channel="y"``).

    ``images``: clean ``[1, C, H, W]`` tensors in [0, 1] (sizes may differ). Image ``i`` is
    degraded with seed ``seed * 100003 + i``, so every method sees identical inputs. The
    degraded input's own PSNR (after clamping to [0, 1]) is recorded beside it. The first
    image's (input, restoration, target) is the measurement's ``example``.
    """
    from tqdm.auto import tqdm

    from ..metrics import psnr, ssim

    vals, svals, in_vals = [], [], []
    example = None
    t0 = time.perf_counter()
    for i, clean in enumerate(tqdm(images, disable=not progress, desc=who, leave=False)):
        target = degradation.target(clean)
        y = degradation.apply(clean, seed=seed * 100003 + i).y
        with torch.no_grad():
            out = restore(y)
        if not isinstance(out, torch.Tensor):
            out = torch.as_tensor(np.asarray(out))
        out = out.detach().float().cpu()
        check_images(out, who=who, what="restore()", shape=target.shape, noun="restore() output")
        vals.append(float(psnr(out, target, channel=channel, crop_border=crop_border)[0]))
        svals.append(float(ssim(out, target, channel=channel, crop_border=crop_border)[0]))
        if degradation.kind != "sr":
            in_vals.append(float(psnr(y.clamp(0, 1), target, channel=channel, crop_border=crop_border)[0]))
        if example is None:
            example = Example(to_uint8(y)[0], to_uint8(out)[0], to_uint8(target)[0])
    return Measurement(
        value=float(np.mean(vals)),
        pm=None,
        details={
            "psnr": vals,
            "ssim": float(np.mean(svals)),
            "ssim_per_image": svals,
            "input_psnr": float(np.mean(in_vals)) if in_vals else None,
            "n_images": len(vals),
            "channel": channel,
            "crop_border": crop_border,
            "degradation": degradation.to_dict(),
            "degradation_seed": seed,
        },
        timings={"eval_s": time.perf_counter() - t0},
        example=example,
    )


def test_fingerprint(column: Any, settings: Mapping[str, Any], data_dir: Optional[str]) -> str:
    """The fingerprint of the column's test images (defined in code: part of the cell key)."""
    return group_data(column.dataset, data_dir)[3]


def training(cell: Cell, run: RunSettings, train_images: Any = None) -> list:
    """A model row trains on random crops of the group's training images, one model per task."""
    row, s = cell.row, cell.settings
    if row.user or row.pipeline == "baseline":
        return []
    from ..baselines import DEGRADATIONS

    if train_images is None:
        train_images = group_data(cell.column.dataset, run.data_dir)[0]
    patches = training_patches(train_images, int(s["patch_size"]), int(s["n_patches"]), seed=cell.seed)
    return [TrainingRequest(row, cell.column.dataset, "train", cell.seed, cell.epochs, train_set=patches,
                            extra_kwargs={"degradation": model_degradation(DEGRADATIONS[s["task"]])})]


def run_cell(cell: Cell, run: RunSettings, log: Callable[[str], None]) -> CellResult:
    """Restore the column's test images with the row's method (trained first for a model row)."""
    from ..baselines import DEGRADATIONS

    row, s = cell.row, cell.settings
    deg = DEGRADATIONS[s["task"]]
    train_images, test_images, desc, test_fp = group_data(cell.column.dataset, run.data_dir)
    limit = int(s["n_test"] or 0)
    if limit:
        test_images = test_images[:limit]
    loaded, info = None, no_training()
    if row.user:
        loaded = user_model(cell, run)
        restore, who, method = loaded.model.restore, f"user model {row.model}", {"model": row.model}
    elif row.pipeline == "baseline":
        restore, params = restorer_for(row, deg)
        who, method = f"baseline {row.pipeline_kwargs['restorer']}", {"restorer": row.pipeline_kwargs["restorer"], **params}
    else:
        (request,) = training(cell, run, train_images)
        tr = train(request, run, log)
        loaded = tr.loaded
        restore, who, method = loaded.model.restore, f"reference model {row.model}", {"model": row.model}
        info = trained_info(tr, patches=request.train_set.fingerprint)
    m = evaluate_restoration(restore, test_images, deg, seed=cell.seed, channel=s["channel"], crop_border=int(s["crop_border"]),
                             who=who, progress=run.progress)
    m.details.update(method=method, data=desc)
    m.data = {"group": cell.column.dataset, "test": test_fp}
    return CellResult(m, loaded, info)


#: The measurement schema: what each ``details`` key of a record holds.
DETAILS = {
    "psnr": "PSNR (dB) per test image", "ssim": "mean SSIM", "ssim_per_image": "SSIM per test image",
    "input_psnr": "PSNR of the degraded input (not for SR)", "n_images": "test images", "channel": "rgb or y",
    "crop_border": "pixels cropped before scoring", "degradation": "the task's parameters", "degradation_seed": "noise seed",
    "method": "the restorer or model", "data": "the image group",
}


RESTORATION = register(Protocol(
    name="restoration", defaults=DEFAULTS, run_cell=run_cell, training=training, test_data=test_fingerprint,
    applies_to=applicable, pipelines=("model", "baseline"), details=DETAILS, figures=("panels",),
    panel_labels=("degraded input", "original"),
))
