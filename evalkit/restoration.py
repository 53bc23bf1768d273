"""Restoration cells: data of a column, the method of a row, PSNR/SSIM of the pair
(:func:`evaluate_restoration`, also behind ``evalkit eval restoration``).

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

import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from . import data as ekdata
from .errors import EvalkitError
from .evaluation import uint8_images

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


def evaluate_restoration(
    restore: Callable[[torch.Tensor], torch.Tensor],
    images: Sequence[torch.Tensor],
    degradation,
    *,
    seed: int,
    channel: str = "rgb",
    crop_border: int = 0,
    who: str = "restorer",
    progress: bool = False,
) -> dict:
    """PSNR (dB) and SSIM of ``restore(degraded)`` against the clean images, per image,
    averaged over images (DESIGN.md: MAX = 1 on [0, 1], RGB unless ``channel="y"``).

    ``images``: clean ``[1, C, H, W]`` tensors in [0, 1] (sizes may differ). Image ``i`` is
    degraded with seed ``seed * 100003 + i``, so every method sees identical inputs. The
    degraded input's own PSNR (after clamping to [0, 1]) is recorded beside it. The first
    image's (input, restoration, target) is returned under ``_example`` for figures.
    """
    from tqdm.auto import tqdm

    from .metrics import psnr, ssim

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
        if out.shape != target.shape:
            raise EvalkitError(f"{who}: restore() returned shape {tuple(out.shape)} for a target of shape {tuple(target.shape)}")
        if not torch.isfinite(out).all():
            raise EvalkitError(f"{who}: restore() returned NaN or infinite values")
        lo, hi = float(out.min()), float(out.max())
        if lo < 0 or hi > 1:
            raise EvalkitError(f"{who}: restore() returned values in [{lo:.4g}, {hi:.4g}], outside [0, 1]; clamp the output")
        vals.append(float(psnr(out, target, channel=channel, crop_border=crop_border)[0]))
        svals.append(float(ssim(out, target, channel=channel, crop_border=crop_border)[0]))
        if degradation.kind != "sr":
            in_vals.append(float(psnr(y.clamp(0, 1), target, channel=channel, crop_border=crop_border)[0]))
        if example is None:
            example = (uint8_images(y.clamp(0, 1))[0], uint8_images(out)[0], uint8_images(target)[0])
    return {
        "value": float(np.mean(vals)),
        "pm": None,
        "details": {
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
        "timings": {"eval_s": time.perf_counter() - t0},
        "_example": example,
    }


def restoration_cell(bench, row, column, seed, epochs, protocol, opts, log):
    """(measurement fields, loaded model or None, training info) of one restoration cell."""
    from reference_models.training import pick_device

    from .baselines import DEGRADATIONS
    from .checkpoints import load_model
    from .runner import train_or_reuse

    deg = DEGRADATIONS[protocol["task"]]
    train, test_images, desc, test_fp = group_data(column.dataset, opts.data_dir)
    limit = int(protocol.get("n_test", 0) or 0)
    if limit:
        test_images = test_images[:limit]
    loaded, trained_info = None, {"epochs": None, "trained_now": False, "train_s": None}
    if row.user:
        loaded = load_model(row.model, row.checkpoint, pick_device(opts.device))
        restore, who, method = loaded.model.restore, f"user model {row.model}", {"model": row.model}
    elif row.pipeline == "baseline":
        restore, params = restorer_for(row, deg)
        who, method = f"baseline {row.pipeline_kwargs['restorer']}", {"restorer": row.pipeline_kwargs["restorer"], **params}
    else:
        patches = training_patches(train, int(protocol.get("patch_size", 64)), int(protocol.get("n_patches", 4000)), seed=seed)
        tr = train_or_reuse(
            row, column.dataset, "train", seed, epochs, train_set=patches, extra_kwargs={"degradation": model_degradation(deg)},
            cache_dir=opts.cache_dir, data_dir=opts.data_dir, device=opts.device, progress=opts.progress, log=log,
        )
        loaded = tr.loaded
        restore, who, method = loaded.model.restore, f"reference model {row.model}", {"model": row.model}
        trained_info = {"epochs": tr.epochs, "trained_now": tr.trained_now, "train_s": tr.train_seconds, "patches": patches.fingerprint}
    m = evaluate_restoration(
        restore, test_images, deg, seed=seed, channel=protocol.get("channel", "rgb"),
        crop_border=int(protocol.get("crop_border", 0)), who=who, progress=opts.progress,
    )
    m["details"].update(method=method, data=desc)
    m["data"] = {"group": column.dataset, "test": test_fp}
    return m, loaded, trained_info
