"""The "NN baseline" of the AAE paper's semi-supervised table (Makhzani et al. 2015, Table 2):
the semi-supervised AAE's encoder and q(y|x) head trained as a plain classifier on the
labelled examples only.

docs/models.md §2B, §11 (the AAE appendix could not be re-read: architecture values are [R],
optimiser values [A]):

* D -> 1000 ReLU -> 1000 ReLU -> 10 (logits; softmax in the loss), weights
  N(0, 0.01^2), biases 0, as the semi-supervised AAE's shared encoder + q(y|x) head [R].
* Cross-entropy on a labelled minibatch of ``batch_size`` (100) drawn from the labelled
  pool (``self._pool``) at every ``train_step``; the unlabelled minibatch that the training
  loop hands over is ignored, so one epoch is still one pass over the training images'
  worth of steps.
* ``optimizer="adam"`` (default; lr 1e-3, beta1 0.5) [A] or ``"sgd"`` (lr 0.1, momentum
  0.9, the AAE's recalled supervised-phase values [R]); constant learning rate.
* ``input_noise`` (Gaussian sigma on the input, training only; the AAE used 0.3 [R]) and
  ``dropout`` (on each hidden layer's output) are off by default: the paper does not say
  what regularised its baseline.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import LabelledPool, init_normal_
from .training import make_optimizer

OPTIMIZERS = ("adam", "sgd")


class MLPClassifier(nn.Module):
    registry_name = "mlp_classifier"
    description = "NN baseline of the AAE semi-supervised table: D-1000-1000-10 ReLU MLP on the labelled examples only"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        n_classes: int = 10,
        hidden: Sequence[int] = (1000, 1000),
        init_std: float = 0.01,
        input_noise: float = 0.0,
        dropout: float = 0.0,
        optimizer: str = "adam",
        adam_lr: float = 1e-3,
        beta1: float = 0.5,
        sgd_lr: float = 0.1,
        momentum: float = 0.9,
        batch_size: int = 100,
    ):
        super().__init__()
        self.hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in locals().items() if k not in ("self", "__class__")}
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.image_shape = tuple(image_shape)
        self.n_classes, self.input_noise = n_classes, input_noise
        layers: list[nn.Module] = []
        in_f = math.prod(self.image_shape)
        for width in hidden:
            layers += [nn.Linear(in_f, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_f = width
        layers.append(nn.Linear(in_f, n_classes))
        self.net = nn.Sequential(*layers)
        init_normal_(self, init_std)
        self._pool: Optional[LabelledPool] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        if self.training and self.input_noise > 0:
            h = h + self.input_noise * torch.randn_like(h)
        return self.net(h)

    # --- capabilities ------------------------------------------------------------
    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[N, n_classes]`` (eval mode: no noise, no dropout)."""
        was = self.training
        self.eval()
        out = self(x.to(next(self.parameters()).device))
        self.train(was)
        return out

    # --- training --------------------------------------------------------------
    def on_fit_start(self, x_all: torch.Tensor, y_all: Optional[torch.Tensor]) -> None:
        self._pool = LabelledPool(x_all, y_all)

    def configure_optimizers(self):
        h = self.hparams
        if h["optimizer"] == "adam":
            return {"classifier": make_optimizer(torch.optim.Adam, self.parameters(), lr=h["adam_lr"], betas=(h["beta1"], 0.999), fused_default=True)}
        return {"classifier": make_optimizer(torch.optim.SGD, self.parameters(), lr=h["sgd_lr"], momentum=h["momentum"])}

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        if self._pool is None:
            raise RuntimeError("MLPClassifier.train_step needs the labelled pool: call on_fit_start(x_all, y_all) first (fit does)")
        x_lab, y_lab = self._pool.batch(self.hparams["batch_size"])
        logits = self(x_lab)
        loss = F.cross_entropy(logits, y_lab)
        opt = optimizers["classifier"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            err = (logits.argmax(1) != y_lab).float().mean()
        return {"loss": loss.item(), "train_err": err.item()}
