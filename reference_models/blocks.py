"""Small building blocks shared by the reference models."""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import torch
from torch import nn


class Maxout(nn.Module):
    """Maxout layer (Goodfellow et al. 2013): ``units`` outputs, each the max of ``pieces`` linear pieces.

    Pieces of one unit are contiguous, as in pylearn2's ``Maxout``.
    """

    def __init__(self, in_features: int, units: int, pieces: int):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return z.view(z.shape[0], self.units, self.pieces).amax(dim=2)


@contextlib.contextmanager
def evaluating(module: nn.Module):
    """Run ``module`` in eval mode inside the block, then restore its mode."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


def mlp(sizes: Sequence[int], *, activation=nn.ReLU, final_activation: nn.Module | None = None) -> nn.Sequential:
    """Fully connected stack ``sizes[0] -> ... -> sizes[-1]``; ``activation`` between layers,
    ``final_activation`` (or none: linear) after the last."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    if final_activation is not None:
        layers.append(final_activation)
    return nn.Sequential(*layers)


def init_uniform_(module: nn.Module, irange: float) -> None:
    """pylearn2's ``irange`` init: weights U(-irange, irange), biases zero."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, -irange, irange)
            nn.init.zeros_(m.bias)


def init_normal_(module: nn.Module, std: float) -> None:
    """Weights N(0, std^2), biases zero."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)


def sigmoid_bias_from_marginals(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Logit of the per-pixel mean of ``x`` (in [0, 1]), clipped to [eps, 1-eps]
    (pylearn2's ``init_sigmoid_bias_from_marginals``)."""
    p = x.flatten(1).mean(0).clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


def max_col_norm_(linear: nn.Linear, max_norm: float) -> None:
    """pylearn2's ``max_col_norm``: rescale each unit's incoming weight vector to norm <= max_norm."""
    with torch.no_grad():
        w = linear.weight  # [out, in]: one row per unit = one pylearn2 column
        norms = w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        w.mul_(torch.clamp(max_norm / norms, max=1.0))


class LabelledPool:
    """The labelled subset a semi-supervised model keeps from ``on_fit_start(x, y)``.

    ``y == -1`` marks an unlabelled image. :meth:`batch` draws a labelled minibatch with
    the global torch RNG (whose state the training loop checkpoints; a resumed run starts a
    fresh pass over the pool): a random permutation of the pool is walked in order, and
    a new one is drawn when it runs out, so every labelled example is seen once per pass;
    a request larger than the pool repeats examples.
    """

    def __init__(self, x: torch.Tensor, y: Optional[torch.Tensor]):
        if y is None:
            y = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        mask = y >= 0
        self.x, self.y = x[mask], y[mask].long()
        self._perm: Optional[torch.Tensor] = None
        self._pos = 0

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self) == 0:
            raise ValueError("no labelled examples: this model needs labels (y >= 0) for some training images")
        out = []
        while n > 0:
            if self._perm is None or self._pos >= len(self):
                self._perm = torch.randperm(len(self)).to(self.y.device)
                self._pos = 0
            take = self._perm[self._pos : self._pos + n]
            self._pos += take.shape[0]
            n -= take.shape[0]
            out.append(take)
        idx = torch.cat(out)
        return self.x[idx], self.y[idx]
