"""Image arrays at the edges of evaluation: checking what a model returned, and uint8 previews."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .errors import EvalkitError


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Images in [0, 1] (any shape, any device) as a uint8 numpy array: clamped, scaled by 255, rounded."""
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def check_images(
    x: torch.Tensor,
    *,
    who: str,
    what: str,
    shape: Optional[Sequence[int]] = None,
    expected: Optional[str] = None,
    noun: str = "output",
    range_hint: str = "clamp the output",
    nan_hint: str = "",
) -> None:
    """Raise :class:`EvalkitError` naming ``who`` and the call ``what`` (e.g. ``"restore()"``) unless
    ``x`` has ``shape`` (when given; ``expected`` is how the wanted shape is written in the
    message), holds only finite values and lies in [0, 1].

    ``noun`` names the values in the messages (``"sample"``: "3 sample values are NaN ...");
    ``range_hint`` and ``nan_hint`` say what to do about values outside [0, 1] or not finite."""
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise EvalkitError(f"{who}: {what} returned shape {tuple(x.shape)}, expected {expected or tuple(shape)}")
    bad = ~torch.isfinite(x)
    if bad.any():
        raise EvalkitError(f"{who}: {int(bad.sum())} {noun} values are NaN or infinite{nan_hint}")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise EvalkitError(f"{who}: {noun} values range over [{lo:.4g}, {hi:.4g}], outside [0, 1]; {range_hint}")
