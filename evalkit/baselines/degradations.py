"""Degradations for the restoration benchmarks: bicubic super-resolution, AWGN, Gaussian blur.

Conventions shared by everything here:

* Clean images are float tensors ``[N, C, H, W]`` with values in ``[0, 1]``
  (numpy arrays are accepted and converted); any other shape, a non-float
  dtype, NaN/Inf or values outside ``[0, 1]`` raise ``ValueError``. Outputs
  keep the input's dtype and device.
* Every degradation is a :class:`Degradation` with a ``name``, a ``kind``
  (``"sr"``, ``"noise"`` or ``"blur"``) and JSON-serialisable ``params``;
  :meth:`Degradation.apply` returns a :class:`Degraded` pair ``(y, params)``
  so a result can record exactly what was done (seed included).
* Randomness: noise is drawn on the CPU from a ``torch.Generator`` (pass
  ``seed=`` or ``generator=``; a random degradation without either raises) and
  then moved to the image's device, so the same seed gives the same noise on
  every device.
* **Super-resolution** ``×s``: the image is first cropped to a multiple of
  ``s`` (:func:`modcrop`: keeps the top-left ``s·⌊H/s⌋ × s·⌊W/s⌋`` pixels;
  the ground truth must be cropped identically, :meth:`Degradation.target`
  does it), then downsampled with
  ``torch.nn.functional.interpolate(mode="bicubic", antialias=True,
  align_corners=False)`` to ``H/s × W/s``. This is Keys' cubic (a = −0.5)
  widened by the factor ``s`` — the same filter as PIL's
  ``Image.resize(..., BICUBIC)`` (equal to ~1e-7 on float images) and close to,
  not bit-identical with, MATLAB ``imresize``. The result is clamped to
  ``[0, 1]`` (bicubic overshoot), so low-resolution inputs obey the image
  contract.
* **Noise**: additive white Gaussian noise ``y = x + σ·ε``, ``ε ~ N(0, 1)``
  i.i.d. per pixel and channel, σ on the ``[0, 1]`` scale. **Not clipped** by
  default (``clip=False``; the noisy image may leave ``[0, 1]``), so the noise
  is exactly zero-mean Gaussian; ``clip=True`` clamps to ``[0, 1]``.
* **Blur**: convolution with a normalised, centred Gaussian kernel
  (:func:`gaussian_kernel`, default 9×9, σ = 2) under a **circular (periodic)
  boundary**, computed by FFT: ``y[i, j] = Σ_{a,b} k[a, b] ·
  x[(i − a + r) mod H, (j − b + r) mod W]`` with ``r = size // 2`` (the kernel
  centre is element ``[r, r]``); then AWGN with σ = 0.01, not clipped.
  :func:`psf2otf` is the one place that turns a kernel into its transfer
  function, and the Wiener and ADMM-TV restorers use it too, so the known-PSF
  restorers invert exactly the blur applied here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ._validation import as_image_batch, check_nonneg_float, check_positive_int

__all__ = [
    "DEGRADATIONS",
    "Degradation",
    "Degraded",
    "add_gaussian_noise",
    "bicubic_downsample",
    "blur_degradation",
    "circular_blur",
    "gaussian_kernel",
    "get_degradation",
    "modcrop",
    "noise_degradation",
    "psf2otf",
    "sr_degradation",
]


KINDS = ("sr", "noise", "blur")


# --------------------------------------------------------------------------- primitives

def modcrop(x: Any, scale: int) -> torch.Tensor:
    """Crop ``[N, C, H, W]`` images to ``s·⌊H/s⌋ × s·⌊W/s⌋`` by keeping the top-left corner.

    ``scale`` (positive int) is the SR factor ``s``. Apply it to the ground
    truth whenever the low-resolution input was made by
    :func:`bicubic_downsample` / an SR :class:`Degradation` (which crop the
    same way), so restored and clean images have the same size. Images
    smaller than ``s`` in either dimension raise ``ValueError``. Returns a
    view (no copy).
    """
    s = check_positive_int(scale, "scale")
    t = as_image_batch(x, check_range=False)
    h, w = t.shape[-2:]
    if h < s or w < s:
        raise ValueError(f"image of {h}x{w} pixels is smaller than the scale factor {s}")
    return t[..., : h - h % s, : w - w % s]


def bicubic_downsample(x: Any, scale: int, *, clamp: bool = True) -> torch.Tensor:
    """Anti-aliased bicubic downsampling by an integer factor: ``[N,C,H,W] -> [N,C,H/s,W/s]``.

    ``x``: clean images in [0, 1]; ``scale``: integer factor ``s`` ≥ 1.
    The image is first :func:`modcrop`-ped to a multiple of ``s``, then
    resized with ``F.interpolate(size=(H/s, W/s), mode="bicubic",
    antialias=True, align_corners=False)`` (PIL-equivalent bicubic, see the
    module docstring). ``clamp`` (default True) clamps the result to [0, 1].
    """
    s = check_positive_int(scale, "scale")
    t = modcrop(as_image_batch(x), s)
    h, w = t.shape[-2:]
    y = F.interpolate(t, size=(h // s, w // s), mode="bicubic", antialias=True, align_corners=False)
    return y.clamp(0.0, 1.0) if clamp else y


def _make_generator(seed: int | None, generator: torch.Generator | None) -> tuple[torch.Generator, int | None]:
    if seed is not None and generator is not None:
        raise ValueError("pass seed= or generator=, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError("generator must be a CPU torch.Generator (noise is drawn on the CPU)")
        return generator, None
    if seed is None:
        raise ValueError(
            "this degradation is random: pass seed=<int> (recorded in the parameters) or "
            "generator=<CPU torch.Generator>"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return torch.Generator().manual_seed(int(seed)), int(seed)


def add_gaussian_noise(
    x: Any,
    sigma: float,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    clip: bool = False,
) -> torch.Tensor:
    """Additive white Gaussian noise: ``x + sigma * N(0, 1)``, not clipped unless ``clip=True``.

    ``x``: images ``[N, C, H, W]`` (any finite values, so noise can be added
    to an already blurred image); ``sigma``: noise standard deviation on the
    [0, 1] scale (≥ 0); ``seed`` or ``generator`` (CPU ``torch.Generator``):
    exactly one is required; the noise is drawn on the CPU in float32 with
    the image's shape and moved to its device. ``clip``: clamp to [0, 1].
    """
    t = as_image_batch(x, check_range=False)
    sigma = check_nonneg_float(sigma, "sigma")
    gen, _ = _make_generator(seed, generator)
    eps = torch.randn(t.shape, generator=gen, dtype=torch.float32)
    y = t + (sigma * eps).to(device=t.device, dtype=t.dtype)
    return y.clamp(0.0, 1.0) if clip else y


def gaussian_kernel(size: int = 9, sigma: float = 2.0) -> torch.Tensor:
    """Normalised 2-D Gaussian blur kernel, float64 ``[size, size]``, summing to 1.

    ``size``: odd positive integer (the centre is element ``[size//2,
    size//2]``); ``sigma``: standard deviation in pixels (> 0).
    ``k[a, b] ∝ exp(−((a−r)² + (b−r)²) / (2σ²))``, sampled at integer
    offsets (not integrated over pixels), like MATLAB ``fspecial('gaussian')``.
    """
    size = check_positive_int(size, "size")
    if size % 2 == 0:
        raise ValueError(f"size must be odd so the kernel has a centre pixel, got {size}")
    sigma = check_nonneg_float(sigma, "sigma", positive=True)
    r = size // 2
    c = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(c**2) / (2.0 * sigma**2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


def _as_kernel(kernel: Any) -> torch.Tensor:
    k = torch.as_tensor(kernel)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"kernel must be a 2-D array with odd sides (centre pixel), got shape {tuple(k.shape)}")
    if not k.is_floating_point():
        k = k.to(torch.float64)
    if not torch.isfinite(k).all():
        raise ValueError("kernel contains NaN or Inf values")
    return k


def psf2otf(kernel: Any, shape: tuple[int, int], *, device: torch.device | str | None = None) -> torch.Tensor:
    """Transfer function of a centred kernel for circular convolution on ``shape = (H, W)``.

    The kernel (2-D, odd sides ``kh × kw`` ≤ ``H × W``) is zero-padded to
    ``H × W`` and circularly shifted so that its centre element
    ``[kh//2, kw//2]`` lands on ``[0, 0]``; the result is its real FFT
    (``torch.fft.rfft2``), complex128 ``[H, W//2 + 1]``. Multiplying an
    image's ``rfft2`` by it is the circular convolution of
    :func:`circular_blur` (MATLAB ``psf2otf`` convention).
    """
    k = _as_kernel(kernel).to(torch.float64)
    h, w = int(shape[0]), int(shape[1])
    kh, kw = k.shape
    if kh > h or kw > w:
        raise ValueError(f"kernel of {kh}x{kw} is larger than the {h}x{w} image")
    pad = torch.zeros(h, w, dtype=torch.float64)
    pad[:kh, :kw] = k
    pad = torch.roll(pad, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
    otf = torch.fft.rfft2(pad)
    return otf.to(device) if device is not None else otf


def circular_blur(x: Any, kernel: Any) -> torch.Tensor:
    """Circular (periodic-boundary) convolution of every channel with a centred kernel, by FFT.

    ``x``: images ``[N, C, H, W]`` (any finite values); ``kernel``: 2-D,
    odd sides, no larger than the image. Computed in float64 as
    ``irfft2(rfft2(x) · psf2otf(kernel))`` and returned in ``x``'s dtype.
    Equals ``y[i, j] = Σ_{a,b} k[a, b] · x[(i − a + r_h) mod H, (j − b + r_w) mod W]``
    with ``r = kernel side // 2`` (a true convolution; the Gaussian kernel
    is symmetric, so it is also a correlation).
    """
    t = as_image_batch(x, check_range=False)
    h, w = t.shape[-2:]
    otf = psf2otf(kernel, (h, w), device=t.device)
    y = torch.fft.irfft2(torch.fft.rfft2(t.to(torch.float64)) * otf, s=(h, w))
    return y.to(t.dtype)


# --------------------------------------------------------------------------- Degradation

class Degraded(NamedTuple):
    """Result of :meth:`Degradation.apply`: the degraded batch ``y`` and the JSON-able ``params``."""

    y: torch.Tensor
    params: dict


@dataclass(frozen=True, eq=False)
class Degradation:
    """A named degradation task with JSON-serialisable parameters.

    Build one with :func:`sr_degradation`, :func:`noise_degradation`,
    :func:`blur_degradation` or take it from :data:`DEGRADATIONS`.

    * ``name``: registry name (e.g. ``"sr4"``); ``kind``: ``"sr"``,
      ``"noise"`` or ``"blur"``; ``params``: the parameters (see the
      factories; a read-only mapping — :meth:`to_dict` gives a plain,
      JSON-serialisable dict); ``description``: one line for report footnotes.
    * :meth:`apply` degrades a clean batch; :meth:`target` crops the clean
      batch the way :meth:`apply` does (SR: :func:`modcrop`; otherwise the
      images unchanged), giving the ground truth to compare restorations with.
    """

    name: str
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        # read-only copy: registry entries are shared, so nobody may edit them in place
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def is_random(self) -> bool:
        """True when :meth:`apply` draws noise (and so needs ``seed`` or ``generator``)."""
        return self.noise_sigma > 0

    @property
    def noise_sigma(self) -> float:
        """Standard deviation of the additive noise on [0, 1] (0 for SR)."""
        return float(self.params.get("noise_sigma", 0.0))

    @property
    def scale(self) -> int:
        """SR factor (1 for the other kinds)."""
        return int(self.params.get("scale", 1))

    def kernel(self) -> torch.Tensor:
        """Blur kernel (float64 ``[size, size]``); only for ``kind == "blur"``."""
        if self.kind != "blur":
            raise ValueError(f"degradation {self.name!r} ({self.kind}) has no blur kernel")
        return gaussian_kernel(self.params["kernel_size"], self.params["kernel_sigma"])

    def to_dict(self) -> dict:
        """``{"name", "kind", **params}``: JSON-serialisable record of the task."""
        return {"name": self.name, "kind": self.kind, **self.params}

    def target(self, x: Any) -> torch.Tensor:
        """Ground truth matching :meth:`apply`'s output geometry (SR: modcrop; else ``x``)."""
        t = as_image_batch(x)
        return modcrop(t, self.scale) if self.kind == "sr" else t

    def apply(
        self, x: Any, *, seed: int | None = None, generator: torch.Generator | None = None
    ) -> Degraded:
        """Degrade a clean batch ``x`` ``[N, C, H, W]`` in [0, 1] -> :class:`Degraded` ``(y, params)``.

        ``seed`` / ``generator``: source of the noise, exactly one needed for
        a random degradation (``noise`` and ``blur``); optional for SR (not
        used, but recorded when given). ``params`` is
        :meth:`to_dict` plus ``"seed"`` (the int given, else ``None``) and,
        for a generator, ``"generator_initial_seed"``.
        """
        t = as_image_batch(x)
        rec = self.to_dict()
        gen = None
        if self.is_random or seed is not None or generator is not None:
            gen, used_seed = _make_generator(seed, generator)
            rec["seed"] = used_seed
            if generator is not None:
                rec["generator_initial_seed"] = int(generator.initial_seed())
        else:
            rec["seed"] = None
        p = self.params
        if self.kind == "sr":
            y = bicubic_downsample(t, p["scale"], clamp=p["clamp"])
        else:
            y = circular_blur(t, self.kernel()) if self.kind == "blur" else t
            if self.noise_sigma > 0:
                y = add_gaussian_noise(y, self.noise_sigma, generator=gen, clip=p["clip"])
        return Degraded(y, rec)


def sr_degradation(scale: int, *, name: str | None = None) -> Degradation:
    """Super-resolution task ×``scale``: modcrop + anti-aliased bicubic downsampling, clamped.

    Parameters recorded: ``scale``, ``method="bicubic"``, ``antialias=True``,
    ``align_corners=False``, ``clamp=True``, ``crop="modcrop-top-left"``.
    """
    s = check_positive_int(scale, "scale")
    if s < 2:
        raise ValueError(f"scale must be at least 2 for a super-resolution task, got {s}")
    params = {"scale": s, "method": "bicubic", "antialias": True, "align_corners": False,
              "clamp": True, "crop": "modcrop-top-left"}
    desc = (f"x{s} super-resolution: image cropped to a multiple of {s} (top-left kept), "
            f"downsampled by torch bicubic interpolation with anti-aliasing (PIL-equivalent), "
            f"clamped to [0, 1]")
    return Degradation(name or f"sr{s}", "sr", params, desc)


def noise_degradation(sigma: float, *, clip: bool = False, name: str | None = None) -> Degradation:
    """Denoising task: AWGN with standard deviation ``sigma`` on [0, 1]; ``clip`` (default False).

    Parameters recorded: ``noise_sigma``, ``clip``.
    """
    sigma = check_nonneg_float(sigma, "sigma", positive=True)
    params = {"noise_sigma": sigma, "clip": bool(clip)}
    desc = (f"additive white Gaussian noise, sigma = {sigma:g} on [0, 1], "
            + ("clipped to [0, 1]" if clip else "not clipped"))
    return Degradation(name or f"noise{int(round(sigma * 100)):02d}", "noise", params, desc)


def blur_degradation(
    size: int = 9, sigma: float = 2.0, *, noise_sigma: float = 0.01, clip: bool = False,
    name: str | None = None,
) -> Degradation:
    """Deblurring task: circular convolution with a ``size``×``size`` Gaussian (σ = ``sigma``) + AWGN.

    Defaults follow docs/models.md §9: 9×9 kernel, σ = 2, noise σ = 0.01, not
    clipped. Parameters recorded: ``kernel="gaussian"``, ``kernel_size``,
    ``kernel_sigma``, ``boundary="circular"``, ``noise_sigma``, ``clip``.
    """
    size = check_positive_int(size, "size")
    gaussian_kernel(size, sigma)  # validates size (odd) and sigma
    noise_sigma = check_nonneg_float(noise_sigma, "noise_sigma")
    params = {"kernel": "gaussian", "kernel_size": size, "kernel_sigma": float(sigma),
              "boundary": "circular", "noise_sigma": noise_sigma, "clip": bool(clip)}
    desc = (f"{size}x{size} Gaussian blur (sigma = {float(sigma):g} px, circular boundary) "
            f"+ white Gaussian noise sigma = {noise_sigma:g}, "
            + ("clipped to [0, 1]" if clip else "not clipped"))
    return Degradation(name or "blur", "blur", params, desc)


DEGRADATIONS: dict[str, Degradation] = {
    d.name: d
    for d in (
        sr_degradation(2),
        sr_degradation(4),
        noise_degradation(0.05),
        noise_degradation(0.10),
        noise_degradation(0.20),
        blur_degradation(9, 2.0, noise_sigma=0.01),
    )
}
"""Named restoration tasks: ``sr2``, ``sr4``, ``noise05``, ``noise10``, ``noise20``, ``blur``."""


def get_degradation(name: str) -> Degradation:
    """Look up a task in :data:`DEGRADATIONS`; unknown names raise ``ValueError`` listing the known ones."""
    try:
        return DEGRADATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown degradation {name!r}; known: {', '.join(sorted(DEGRADATIONS))}"
        ) from None
