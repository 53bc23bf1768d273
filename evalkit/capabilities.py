"""What a model must offer for each metric.

Each capability is a small :class:`typing.Protocol`. A metric asks for the
capability it needs and nothing else, so any user model that offers it plugs
in. Images are float32 tensors ``[N, C, H, W]`` with values in ``[0, 1]``.
"""
from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import torch


@runtime_checkable
class Sampler(Protocol):
    """A generative model: ``sample(n, generator=...) -> [n, C, H, W]`` in [0, 1]."""

    def sample(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor: ...


@runtime_checkable
class Classifier(Protocol):
    """``predict_logits(x) -> [N, K]`` unnormalised class scores."""

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Clusterer(Protocol):
    """``cluster_probs(x) -> [N, K]`` soft cluster assignments q(y|x)."""

    def cluster_probs(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Restorer(Protocol):
    """``restore(x) -> Tensor``: degraded image in, restored image out, both in [0, 1]."""

    def restore(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class AutoEncoder(Protocol):
    """``encode(x) -> z`` and ``decode(z) -> x`` (images in [0, 1])."""

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class LatentCoder(Protocol):
    """``encode(theta [N, D]) -> z [N, d]`` and ``decode(z [N, d]) -> theta [N, D]`` on
    parameter vectors (not images), float32 or float64, any latent size d: what
    ``evalkit eval latent-hmc`` runs HMC in (the latent dynamics differentiate ``decode``
    twice with torch.func, so it must be a differentiable torch function of z). The two
    Gaussian densities the exact (corrected) sampler needs are set from posterior draws
    (:class:`evalkit.protocols.latent_hmc.UserLatentMap`). Same method names as
    :class:`AutoEncoder`, so ``missing_capability(model, "encode")`` checks it too."""

    def encode(self, theta: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


CAPABILITIES = {
    "sample": Sampler,
    "predict_logits": Classifier,
    "cluster_probs": Clusterer,
    "restore": Restorer,
    "encode": AutoEncoder,
}


def missing_capability(model: object, method: str) -> Optional[str]:
    """Return an error message if ``model`` lacks ``method``, else None."""
    if callable(getattr(model, method, None)):
        return None
    proto = CAPABILITIES.get(method)
    doc = (proto.__doc__ or "").strip().splitlines()[0] if proto else method
    return (
        f"{type(model).__name__} has no method {method!r}, which this metric needs "
        f"({doc}). Add it to your model class or wrap the model."
    )
