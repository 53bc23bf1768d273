"""Input checks shared by the feature-space metrics (Fréchet distance, KID, precision / recall,
mode coverage): numpy / torch inputs to validated float64 feature matrices, with errors that
name the argument and say how to fix it."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def _array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name} must be a numpy array or torch tensor ({exc})") from exc


def _features(x: Any, name: str, min_rows: int = 2) -> np.ndarray:
    """Validate a feature matrix [N, D] -> float64 C-contiguous numpy array."""
    a = _array(x, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a feature matrix of shape [N, D], got shape {a.shape}")
    if a.dtype.kind not in "fiu" or a.dtype.kind == "b":
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    if a.shape[1] == 0:
        raise ValueError(f"{name} has no feature dimensions (shape {a.shape})")
    if a.shape[0] < min_rows:
        raise ValueError(f"{name} has {a.shape[0]} samples; this metric needs at least {min_rows}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        bad = int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])
        raise ValueError(f"{name} contains NaN or Inf (first bad row: {bad}); check the images and the feature network")
    return a


def _same_dim(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimension mismatch: {na} has D={a.shape[1]} (shape {a.shape}), "
                         f"{nb} has D={b.shape[1]} (shape {b.shape}); use the same feature network for both")


def _positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _json(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None
