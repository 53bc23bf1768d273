"""Input handling of the Parzen estimator (:mod:`evalkit.metrics.parzen`): points as [N, D]
arrays, value checks done in bounded chunks, chunk sizes within a memory budget, sigma grids."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

#: The sigma grid of the original code: ``numpy.logspace(-1, 0, 10)``.
DEFAULT_SIGMAS = np.logspace(-1, 0, 10)

# Memory budget for the per-(test chunk, sample chunk) work buffers; with the
# sample chunk copy and the evaluation points this keeps peak extra memory
# around 0.5 GB.
_WORK_BYTES = 256 << 20
_SAMPLE_BYTES = 96 << 20
# Rows per chunk when scanning an array for NaN/Inf/out-of-range values.
_CHECK_BYTES = 64 << 20


def _to_points(x: Any, name: str) -> np.ndarray | torch.Tensor:
    """Return ``x`` as a 2-D [N, D] numpy array or torch tensor (no copy if possible)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex() or not t.is_floating_point():
            raise ValueError(
                f"{name} must hold floating-point values in [0, 1], got dtype {t.dtype}; "
                f"convert integer images with x.float() / 255."
            )
        arr: np.ndarray | torch.Tensor = t
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise ValueError(f"{name} must be a numpy array or torch tensor ({exc})") from exc
        if arr.dtype.kind != "f":
            raise ValueError(
                f"{name} must hold floating-point values in [0, 1], got dtype {arr.dtype}; "
                f"convert integer images with x.astype(np.float32) / 255."
            )
    if arr.ndim == 0:
        raise ValueError(f"{name} must have shape [N, ...] (N points), got a scalar")
    n = arr.shape[0]
    if n == 0 or any(s == 0 for s in arr.shape[1:]):
        raise ValueError(f"{name} is empty (shape {tuple(arr.shape)}); pass at least one point")
    if arr.ndim == 1:
        arr = arr.reshape(n, 1)
    elif arr.ndim > 2:
        arr = arr.reshape(n, -1)
    return arr


def _row_chunk(arr: np.ndarray | torch.Tensor, start: int, stop: int) -> torch.Tensor:
    chunk = arr[start:stop]
    if isinstance(chunk, np.ndarray):
        chunk = torch.from_numpy(np.ascontiguousarray(chunk))
    return chunk


def _check_values(arr: np.ndarray | torch.Tensor, name: str, check_range: bool) -> None:
    """Raise ValueError if ``arr`` has NaN/Inf, or values outside [0, 1] when ``check_range``.

    Scans in row chunks (``aminmax`` propagates NaN), so it never allocates a
    full-size temporary.
    """
    n, d = arr.shape
    rows = max(1, _CHECK_BYTES // (8 * d))
    lo, hi = math.inf, -math.inf
    for start in range(0, n, rows):
        chunk = _row_chunk(arr, start, start + rows)
        if chunk.dtype in (torch.float16, torch.bfloat16) and chunk.device.type == "cpu":
            chunk = chunk.float()
        cmin, cmax = torch.aminmax(chunk)
        cmin, cmax = float(cmin), float(cmax)
        if not (math.isfinite(cmin) and math.isfinite(cmax)):
            raise ValueError(
                f"{name} contains NaN or Inf values (first bad chunk: rows {start}.."
                f"{min(n, start + rows) - 1}); remove or fix those points"
            )
        lo, hi = min(lo, cmin), max(hi, cmax)
    if check_range and (lo < 0.0 or hi > 1.0):
        raise ValueError(
            f"{name} has values outside [0, 1] (min {lo:.6g}, max {hi:.6g}); the Parzen "
            f"protocol expects images scaled to [0, 1] (e.g. x / 255 for uint8 pixels, "
            f"(x + 1) / 2 for tanh outputs). Pass check_range=False to skip this check."
        )


def _check_dims(samples: Any, other: Any, name: str) -> None:
    if samples.shape[1] != other.shape[1]:
        raise ValueError(
            f"dimension mismatch: samples have D={samples.shape[1]} (flattened shape "
            f"{tuple(samples.shape)}) but {name} has D={other.shape[1]} (flattened shape "
            f"{tuple(other.shape)}); both must be flattened images of the same size"
        )


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _default_chunks(dim: int, test_chunk: int | None, sample_chunk: int | None) -> tuple[int, int]:
    if sample_chunk is None:
        # float64 copy + float32 original of one sample chunk within _SAMPLE_BYTES
        sample_chunk = int(min(8192, max(256, _SAMPLE_BYTES // (12 * dim))))
    else:
        sample_chunk = _positive_int(sample_chunk, "sample_chunk")
    if test_chunk is None:
        # d2 (float64) + delta (float32) + exp buffer (float32) = 16 bytes/element
        test_chunk = int(min(2048, max(64, _WORK_BYTES // (16 * sample_chunk))))
    else:
        test_chunk = _positive_int(test_chunk, "test_chunk")
    return test_chunk, sample_chunk


def _check_sigmas(sigmas: Any, name: str = "sigmas") -> np.ndarray:
    s = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise ValueError(f"{name} is empty; pass at least one positive bandwidth")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {s.tolist()}")
    return s
