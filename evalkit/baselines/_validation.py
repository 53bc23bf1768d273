"""Input checks shared by the degradations and the classical restorers (one place for the messages).

* :func:`as_image_batch`: float ``[N, C, H, W]``, finite, optionally in [0, 1].
* :func:`degraded_batch`: the same without the [0, 1] check (unclipped noise
  may leave it) but with a sanity bound :data:`INPUT_BOUND` that catches
  0..255 images.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["INPUT_BOUND", "as_image_batch", "check_nonneg_float", "check_positive_int", "degraded_batch"]


def as_image_batch(x: Any, name: str = "x", *, check_range: bool = True) -> torch.Tensor:
    """Validate an image batch and return it as a floating torch tensor ``[N, C, H, W]``.

    Raises ``ValueError`` for a wrong number of dimensions, an empty batch, a
    non-floating dtype, NaN/Inf, or (when ``check_range``) values outside
    ``[0, 1]``. Used by the degradations and the restorers.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        raise ValueError(f"{name} must be a torch tensor (or numpy array) [N, C, H, W], got {type(x).__name__}")
    if t.ndim != 4:
        raise ValueError(
            f"{name} must be an image batch [N, C, H, W], got shape {tuple(t.shape)} "
            f"(add batch/channel axes, e.g. x[None] or x[None, None])"
        )
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if not t.is_floating_point():
        raise ValueError(
            f"{name} must be floating point with values in [0, 1], got dtype {t.dtype} "
            f"(convert uint8 images with x.float() / 255)"
        )
    lo, hi = (float(v) for v in torch.aminmax(t))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or Inf values")
    if check_range and (lo < 0.0 or hi > 1.0):
        raise ValueError(
            f"{name} has values outside [0, 1] (min {lo:.6g}, max {hi:.6g}); images must be "
            f"float in [0, 1] (clamp, or divide 0..255 pixels by 255)"
        )
    return t


def check_positive_int(v: Any, name: str) -> int:
    """``v`` as an int ≥ 1 (bools rejected), else ``ValueError`` naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def check_nonneg_float(v: Any, name: str, *, positive: bool = False) -> float:
    """``v`` as a finite float ≥ 0 (> 0 when ``positive``), else ``ValueError`` naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(v)) or v < 0 or (positive and v == 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a finite {kind} number, got {v!r}")
    return float(v)


#: Sanity bound for degraded inputs that may leave [0, 1] (unclipped noise):
#: values outside it almost certainly mean 0..255 images, not noise.
INPUT_BOUND = (-4.0, 5.0)


def degraded_batch(y: Any, name: str = "y") -> torch.Tensor:
    """Validate a degraded batch that may leave [0, 1] (unclipped noise); see the module docstring."""
    t = as_image_batch(y, name, check_range=False)
    lo, hi = (float(v) for v in torch.aminmax(t))
    if lo < INPUT_BOUND[0] or hi > INPUT_BOUND[1]:
        raise ValueError(
            f"{name} has values in [{lo:.4g}, {hi:.4g}], outside the sanity bound "
            f"[{INPUT_BOUND[0]:g}, {INPUT_BOUND[1]:g}]: degraded images must be on the [0, 1] "
            f"scale (noise may push them slightly outside; divide 0..255 images by 255)"
        )
    return t
