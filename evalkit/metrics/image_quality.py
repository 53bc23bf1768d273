"""Full-reference image quality: PSNR and SSIM (per image, batched, torch).

Shared conventions:

* ``x`` and ``y`` have the same shape, [N, C, H, W] (a batch), [C, H, W] (one
  image) or [H, W] (one grey image); numpy arrays or torch tensors (any
  device; the result lives on the device of ``x`` if it is a tensor).
* Values are floats in [0, ``data_range``] (default [0, 1]); values outside
  raise ``ValueError`` unless ``check_range=False``.
* ``channel="rgb"`` measures all C channels as given (any C, grey included);
  ``channel="y"`` needs C == 3 (RGB) and measures only the ITU-R BT.601 luma
  used in super-resolution papers: on [0, 1] inputs
  ``Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255`` (so Y is in
  [16/255, 235/255] and measured with a peak of 1).
* ``crop_border=k`` removes k pixels from every side before measuring (SR
  convention: k = scale factor).
* Computation is in float64; results are float64 tensors of shape [N].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "rgb_to_y"]

_Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
_Y_OFFSET = 16.0 / 255.0


def _to_tensor(x: Any, name: str, device: torch.device | None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            a = np.asarray(x)
        except Exception as exc:  # pragma: no cover
            raise ValueError(f"{name} must be a numpy array or torch tensor ({exc})") from exc
        if a.dtype.kind not in "fiu" or a.dtype.kind == "b":
            raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(a))
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be real-valued, got dtype {t.dtype}")
    if device is not None:
        t = t.to(device)
    return t.to(torch.float64)


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma of RGB images in [0, 1]: [N, 3, H, W] -> [N, 1, H, W].

    ``Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255`` (the MATLAB
    ``rgb2ycbcr`` convention used by SR papers), result in [16/255, 235/255].
    """
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"rgb_to_y expects [N, 3, H, W] RGB images, got shape {tuple(img.shape)}")
    w = torch.tensor(_Y_WEIGHTS, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
    return (img * w).sum(dim=1, keepdim=True) + _Y_OFFSET


def _prepare(
    x: Any, y: Any, data_range: float, crop_border: int, channel: str, check_range: bool
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Validate and return ([N, C', H', W'] x, y in float64, peak value)."""
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(data_range)) or data_range <= 0:
        raise ValueError(f"data_range must be a finite positive number, got {data_range!r}")
    data_range = float(data_range)
    if isinstance(crop_border, bool) or not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative integer, got {crop_border!r}")
    if channel not in ("rgb", "y"):
        raise ValueError(f"channel must be 'rgb' or 'y', got {channel!r}")
    dev = x.device if isinstance(x, torch.Tensor) else (y.device if isinstance(y, torch.Tensor) else None)
    xt = _to_tensor(x, "x", dev)
    yt = _to_tensor(y, "y", dev)
    if tuple(xt.shape) != tuple(yt.shape):
        raise ValueError(f"x and y must have the same shape, got {tuple(xt.shape)} and {tuple(yt.shape)}")
    if xt.ndim == 2:
        xt, yt = xt[None, None], yt[None, None]
    elif xt.ndim == 3:
        xt, yt = xt[None], yt[None]
    elif xt.ndim != 4:
        raise ValueError(
            f"images must be [N, C, H, W], [C, H, W] or [H, W], got shape {tuple(xt.shape)}"
        )
    if xt.numel() == 0:
        raise ValueError(f"images are empty (shape {tuple(xt.shape)})")
    for t, name in ((xt, "x"), (yt, "y")):
        lo, hi = torch.aminmax(t)
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{name} contains NaN or Inf values")
        if check_range and (lo < 0.0 or hi > data_range):
            raise ValueError(
                f"{name} has values outside [0, data_range={data_range:g}] (min {lo:.6g}, max "
                f"{hi:.6g}); scale/clamp images (e.g. data_range=255 for 0..255 pixels) or pass "
                f"check_range=False"
            )
    _, c, h, w = xt.shape
    if crop_border:
        if 2 * crop_border >= h or 2 * crop_border >= w:
            raise ValueError(
                f"crop_border={crop_border} removes the whole {h}x{w} image; use a smaller crop"
            )
        xt = xt[..., crop_border:-crop_border, crop_border:-crop_border]
        yt = yt[..., crop_border:-crop_border, crop_border:-crop_border]
    if channel == "y":
        if c != 3:
            raise ValueError(f"channel='y' needs RGB images (C=3), got C={c}; use channel='rgb'")
        xt = rgb_to_y(xt / data_range)
        yt = rgb_to_y(yt / data_range)
        data_range = 1.0
    return xt, yt, data_range


def psnr(
    x: Any,
    y: Any,
    *,
    data_range: float = 1.0,
    crop_border: int = 0,
    channel: str = "rgb",
    check_range: bool = True,
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, one value per image -> float64 tensor [N].

    Protocol: ``10 * log10(data_range**2 / MSE)`` with the MSE taken over all
    channels and pixels of each image (after ``crop_border`` and the optional
    Y conversion, see the module docstring). Identical images give ``+inf``.
    Matches ``skimage.metrics.peak_signal_noise_ratio`` per image. Average the
    returned values over a data set (the usual SR convention), not the MSEs.
    """
    xt, yt, peak = _prepare(x, y, data_range, crop_border, channel, check_range)
    mse = (xt - yt).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(peak * peak / mse)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r = (size - 1) // 2
    coords = torch.arange(-r, r + 1, dtype=dtype, device=device)
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return g / g.sum()


def ssim(
    x: Any,
    y: Any,
    *,
    data_range: float = 1.0,
    crop_border: int = 0,
    channel: str = "rgb",
    check_range: bool = True,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004), one value per image -> float64 tensor [N].

    Protocol: 11x11 Gaussian window with sigma 1.5 (separable), K1 = 0.01,
    K2 = 0.03, ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2`` with ``L = data_range``,
    population (not sample) covariances. The SSIM map is evaluated only where
    the window fits inside the image (i.e. 5 pixels are dropped on every
    side, as ``skimage.metrics.structural_similarity`` does before averaging)
    and averaged over pixels and channels. Equal to
    ``structural_similarity(a, b, data_range=L, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, channel_axis=...)`` up to
    floating-point rounding. Images (after ``crop_border``) must be at least
    11x11.
    """
    xt, yt, peak = _prepare(x, y, data_range, crop_border, channel, check_range)
    n, c, h, w = xt.shape
    win = 11
    if h < win or w < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win} after cropping, got {h}x{w}")
    g = _gaussian_window(win, 1.5, xt.dtype, xt.device)
    stack = torch.cat([xt, yt, xt * xt, yt * yt, xt * yt], dim=1)  # [N, 5C, H, W]
    groups = stack.shape[1]
    out = F.conv2d(stack, g.view(1, 1, win, 1).expand(groups, 1, win, 1), groups=groups)
    out = F.conv2d(out, g.view(1, 1, 1, win).expand(groups, 1, 1, win), groups=groups)
    mx, my, mxx, myy, mxy = out.split(c, dim=1)
    vx = mxx - mx * mx
    vy = myy - my * my
    cxy = mxy - mx * my
    c1 = (0.01 * peak) ** 2
    c2 = (0.03 * peak) ** 2
    s_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s_map.mean(dim=(1, 2, 3))
