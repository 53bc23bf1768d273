"""evalkit.baselines: degradations and classical restorers (depends only on torch/numpy/scipy/skimage).

* Degradations (:mod:`.degradations`): :class:`Degradation` tasks in
  :data:`DEGRADATIONS` (``sr2``, ``sr4``, ``noise05``, ``noise10``,
  ``noise20``, ``blur``), built by :func:`sr_degradation`,
  :func:`noise_degradation`, :func:`blur_degradation`; primitives
  :func:`modcrop`, :func:`bicubic_downsample`, :func:`add_gaussian_noise`,
  :func:`gaussian_kernel`, :func:`psf2otf`, :func:`circular_blur`.
* Classical restorers (:mod:`.classical`, :mod:`.admm`):
  :func:`nearest_upscale`, :func:`bicubic_upscale`, :func:`median_filter`,
  :func:`nl_means`, :func:`wiener`, :func:`admm_tv`.
* :data:`RESTORERS` (:mod:`.registry`): every baseline as
  ``restore(y, degradation, **overrides) -> x_hat``.

Images are float ``[N, C, H, W]`` in [0, 1]; blur is circular (periodic) and
the known-PSF restorers assume the same boundary and kernel centring.
"""

from .admm import admm_tv, tv_objective
from .classical import bicubic_upscale, median_filter, nearest_upscale, nl_means, wiener
from .degradations import (
    DEGRADATIONS,
    Degradation,
    Degraded,
    add_gaussian_noise,
    bicubic_downsample,
    blur_degradation,
    circular_blur,
    gaussian_kernel,
    get_degradation,
    modcrop,
    noise_degradation,
    psf2otf,
    sr_degradation,
)
from .registry import RESTORERS, Baseline, BoundBaseline, get_restorer

__all__ = [
    "DEGRADATIONS",
    "RESTORERS",
    "Baseline",
    "BoundBaseline",
    "Degradation",
    "Degraded",
    "add_gaussian_noise",
    "admm_tv",
    "bicubic_downsample",
    "bicubic_upscale",
    "blur_degradation",
    "circular_blur",
    "gaussian_kernel",
    "get_degradation",
    "get_restorer",
    "median_filter",
    "modcrop",
    "nearest_upscale",
    "nl_means",
    "noise_degradation",
    "psf2otf",
    "sr_degradation",
    "tv_objective",
    "wiener",
]
