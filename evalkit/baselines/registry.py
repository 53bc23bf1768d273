"""``RESTORERS``: every classical baseline behind one signature, ``restore(y, degradation) -> x_hat``.

A :class:`Baseline` takes the degraded batch and the
:class:`~evalkit.baselines.degradations.Degradation` that made it, reads the
parameters it needs from the degradation (SR factor, noise σ, blur kernel),
and returns the restoration in [0, 1] with the shape of
``degradation.target(clean)``. Keyword overrides change a method's
parameters (``RESTORERS["admm_tv"](y, deg, lam=0.005)``; the known-PSF
methods rebuild the Gaussian kernel from ``kernel_size``/``kernel_sigma``,
so overriding those deconvolves with a mis-specified PSF, on purpose);
:meth:`Baseline.params` returns the JSON-serialisable parameters actually
used, for the result store and the report footnotes. :meth:`Baseline.bind`
gives an object with ``restore(y)`` (the ``capabilities.Restorer``
protocol).

========== ============== ==================================================
name       tasks          method
========== ============== ==================================================
identity   noise, blur    the degraded input clamped to [0, 1]
nearest    sr             nearest-neighbour upscaling (the "LRes" row)
bicubic    sr             bicubic upscaling (a = −0.5, as MATLAB/PIL), clamped
median3    noise          3×3 median filter, reflect boundary
nl_means   noise          skimage NL-means, patch 5, distance 6, h = 0.8σ
wiener     blur           Wiener deconvolution, nsr = σ²/0.02 (0.005 at σ=0.01)
admm_tv    blur           ADMM anisotropic TV, λ = 0.01, ρ = 1, 100 iterations
========== ============== ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ._validation import degraded_batch
from .admm import admm_tv
from .classical import bicubic_upscale, median_filter, nearest_upscale, nl_means, wiener
from .degradations import Degradation, gaussian_kernel

__all__ = ["RESTORERS", "Baseline", "BoundBaseline", "get_restorer"]

#: Signal power assumed by the registry's Wiener filter: nsr = σ_noise² / WIENER_SIGNAL_POWER.
WIENER_SIGNAL_POWER = 0.02
#: NSR used by the registry's Wiener filter when the blur task has no noise.
WIENER_MIN_NSR = 1e-4


@dataclass(frozen=True, eq=False)
class Baseline:
    """A classical restorer with the uniform signature ``baseline(y, degradation, **overrides)``.

    ``name``: registry key; ``kinds``: degradation kinds it applies to
    (calling it on another kind raises ``ValueError``); ``description``:
    one line for footnotes; ``resolve(degradation) -> dict``: the default
    keyword parameters for that task (JSON-serialisable); ``run(y,
    degradation, **params) -> Tensor``: the restoration itself.
    """

    name: str
    kinds: tuple[str, ...]
    description: str
    resolve: Callable[[Degradation], dict]
    run: Callable[..., torch.Tensor]

    def _check(self, degradation: Degradation) -> None:
        if not isinstance(degradation, Degradation):
            raise ValueError(
                f"degradation must be an evalkit.baselines.Degradation (e.g. DEGRADATIONS['sr4']), "
                f"got {type(degradation).__name__}"
            )
        if degradation.kind not in self.kinds:
            raise ValueError(
                f"baseline {self.name!r} restores {'/'.join(self.kinds)} tasks, not "
                f"{degradation.name!r} ({degradation.kind})"
            )

    def params(self, degradation: Degradation, **overrides: Any) -> dict:
        """The parameters this baseline uses on ``degradation`` (defaults updated by ``overrides``)."""
        self._check(degradation)
        p = dict(self.resolve(degradation))
        unknown = sorted(set(overrides) - set(p))
        if unknown:
            raise ValueError(
                f"baseline {self.name!r} has no parameter(s) {unknown}; it takes {sorted(p)}"
            )
        p.update(overrides)
        return p

    def __call__(self, y: Any, degradation: Degradation, **overrides: Any) -> torch.Tensor:
        """Restore ``y`` (made by ``degradation.apply``) -> ``[N, C, H, W]`` in [0, 1]."""
        p = self.params(degradation, **overrides)
        return self.run(y, degradation, **p)

    def bind(self, degradation: Degradation, **overrides: Any) -> "BoundBaseline":
        """An object with ``restore(y)`` for this task (the ``capabilities.Restorer`` protocol)."""
        self.params(degradation, **overrides)  # validate now
        return BoundBaseline(self, degradation, dict(overrides))


@dataclass(frozen=True, eq=False)
class BoundBaseline:
    """A :class:`Baseline` fixed to one degradation: ``restore(y) -> x_hat``."""

    baseline: Baseline
    degradation: Degradation
    overrides: dict

    def restore(self, y: Any) -> torch.Tensor:
        return self.baseline(y, self.degradation, **self.overrides)

    def params(self) -> dict:
        return self.baseline.params(self.degradation, **self.overrides)


def _wiener_nsr(d: Degradation) -> float:
    return max(d.noise_sigma**2 / WIENER_SIGNAL_POWER, WIENER_MIN_NSR)


def _kernel_params(d: Degradation) -> dict:
    return {"kernel_size": d.params["kernel_size"], "kernel_sigma": d.params["kernel_sigma"]}


def _identity(y: Any, d: Degradation) -> torch.Tensor:
    return degraded_batch(y).clamp(0.0, 1.0)


_BASELINES = (
    Baseline(
        "identity", ("noise", "blur"),
        "the degraded input itself, clamped to [0, 1]",
        lambda d: {},
        _identity,
    ),
    Baseline(
        "nearest", ("sr",),
        "nearest-neighbour upscaling of the low-resolution input (LRes)",
        lambda d: {"scale": d.scale},
        lambda y, d, scale: nearest_upscale(y, scale),
    ),
    Baseline(
        "bicubic", ("sr",),
        "bicubic upscaling (torch, antialias=True: the a = -0.5 kernel of MATLAB imresize / PIL), "
        "clamped to [0, 1]",
        lambda d: {"scale": d.scale, "antialias": True},
        lambda y, d, scale, antialias: bicubic_upscale(y, scale, antialias=antialias),
    ),
    Baseline(
        "median3", ("noise",),
        "3x3 median filter per channel (scipy.ndimage, reflect boundary)",
        lambda d: {"size": 3},
        lambda y, d, size: median_filter(y, size),
    ),
    Baseline(
        "nl_means", ("noise",),
        "non-local means (skimage denoise_nl_means, fast mode), patch 5, distance 6, h = 0.8 sigma",
        lambda d: {"sigma": d.noise_sigma, "patch_size": 5, "patch_distance": 6, "h_factor": 0.8,
                   "fast_mode": True},
        lambda y, d, **p: nl_means(y, **p),
    ),
    Baseline(
        "wiener", ("blur",),
        "frequency-domain Wiener deconvolution with the known PSF (circular boundary), "
        f"constant NSR = noise_sigma^2 / {WIENER_SIGNAL_POWER:g}",
        lambda d: {**_kernel_params(d), "nsr": _wiener_nsr(d)},
        lambda y, d, kernel_size, kernel_sigma, nsr: wiener(y, gaussian_kernel(kernel_size, kernel_sigma), nsr=nsr),
    ),
    Baseline(
        "admm_tv", ("blur",),
        "ADMM anisotropic-TV deconvolution with the known PSF (circular boundary, FFT x-update)",
        lambda d: {**_kernel_params(d), "lam": 0.01, "rho": 1.0, "iters": 100},
        lambda y, d, kernel_size, kernel_sigma, **p: admm_tv(y, gaussian_kernel(kernel_size, kernel_sigma), **p),
    ),
)

RESTORERS: dict[str, Baseline] = {b.name: b for b in _BASELINES}
"""Classical baselines by name: identity, nearest, bicubic, median3, nl_means, wiener, admm_tv."""


def get_restorer(name: str) -> Baseline:
    """Look up :data:`RESTORERS`; unknown names raise ``ValueError`` listing the known ones."""
    try:
        return RESTORERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(sorted(RESTORERS))}") from None
