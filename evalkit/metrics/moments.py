"""Streaming, mergeable first and second moments of feature vectors: the Fréchet distance of
features that never exist as one array, or that several processes extract.

``FeatureMoments(D)`` keeps, in float64, the count ``n``, the sum ``sum x`` and the sum of outer
products ``sum x x^T`` of the (optionally shifted) features added; :meth:`FeatureMoments.merge_ranks`
adds those of every rank of :func:`evalkit.distributed.rank_world` with one ``all_reduce`` (SUM),
so ranks that each extract their own share of the samples end with the statistics of all of
them. :meth:`FeatureMoments.mean_cov` gives the mean and the ``ddof=1`` covariance (as
``numpy.cov``), which :func:`evalkit.metrics.sample_quality.frechet_distance` takes.

Precision: the covariance is ``(sum x x^T - n mu mu^T) / (n - 1)``, exact in exact arithmetic;
in float64 its relative error grows with ``|mean|^2 / variance``. ``shift`` (a fixed vector,
e.g. the reference features' mean, the same on every rank) is subtracted before accumulating
to keep that ratio small; :meth:`FeatureMoments.mean_cov` adds it back to the mean, and the
covariance does not depend on it.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from ..distributed import all_reduce_


class FeatureMoments:
    """Running float64 count, sum and outer-product sum of D-dimensional feature vectors."""

    def __init__(self, dim: int, *, shift: Optional[Any] = None, device: Any = "cpu") -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = int(dim)
        self.device = torch.device(device)
        self.shift = (torch.zeros(dim, dtype=torch.float64, device=self.device) if shift is None
                      else torch.as_tensor(np.asarray(shift, dtype=np.float64), device=self.device).reshape(dim))
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64, device=self.device)
        self.outer = torch.zeros((dim, dim), dtype=torch.float64, device=self.device)

    def add(self, features: Any) -> "FeatureMoments":
        """Fold features [k, D] (numpy or torch) into the sums; returns ``self``."""
        x = torch.as_tensor(features).to(device=self.device, dtype=torch.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features must have shape [k, {self.dim}], got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("features contain NaN or Inf")
        x = x - self.shift
        self.n += int(x.shape[0])
        self.sum += x.sum(0)
        self.outer.addmm_(x.t(), x)
        return self

    def merge_ranks(self) -> "FeatureMoments":
        """Sum the statistics of every rank (a collective call on every rank; no-op for one)."""
        flat = torch.cat([torch.tensor([float(self.n)], dtype=torch.float64, device=self.device), self.sum, self.outer.reshape(-1)])
        all_reduce_(flat, "sum")
        self.n = int(round(float(flat[0])))
        self.sum = flat[1 : 1 + self.dim].clone()
        self.outer = flat[1 + self.dim :].reshape(self.dim, self.dim).clone()
        return self

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean [D], covariance [D, D] with ``ddof=1``) as float64 numpy arrays; needs n >= 2."""
        if self.n < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, have {self.n}")
        mu = self.sum / self.n
        cov = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        cov = (cov + cov.t()) / 2
        return (mu + self.shift).cpu().numpy(), cov.cpu().numpy()


__all__ = ["FeatureMoments"]
