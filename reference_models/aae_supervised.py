"""Supervised adversarial autoencoder (Makhzani et al. 2015): disentangling style and content.

The AAE paper's "supervised AAE" section; its appendix could not be re-read, so the values
below are [R] (recalled) or [A] (our assumption), see docs/models.md §2:

* Encoder D -> 1000 ReLU -> 1000 ReLU -> z (linear, deterministic q(z|x)); ``z_dim`` = 15
  [A: the paper's MNIST style code size was not re-read].
* Decoder [one-hot(y), z] -> 1000 ReLU -> 1000 ReLU -> D sigmoid: the label carries the
  content, so z is free to carry only the style. Loss: half the squared error, summed
  over pixels, mean over the minibatch (as §2B).
* D_gauss: z -> 1000 ReLU -> 1000 ReLU -> 1 against N(0, ``prior_std``^2 I), ``prior_std``
  = 1 [A]. Init N(0, 0.01^2) [R, as §2A/§2B].
* Per minibatch: (i) reconstruction phase (encoder + decoder), (ii) regularisation phase
  (D_gauss step, then the encoder as generator), the same phase helpers as
  :mod:`reference_models.aae_semi`.
* Labels of all training images are used: ``on_fit_start`` keeps every labelled image
  (``y >= 0``) in a pool; ``train_step`` uses the minibatch's own labels when all of them
  are known, and otherwise trains on a minibatch of the same size from the pool.
* ``optimizer="adam"`` (default, [A]: lr ``adam_lr_recon`` 1e-3, ``adam_lr_adv`` 2e-4, beta1
  0.5, as for the other AAE variants on short CPU budgets); ``optimizer="sgd"`` gives the
  recalled §2A/§2B schedule (reconstruction lr 0.01 momentum 0.9, adversarial lr 0.1
  momentum 0.1, both / 10 from epoch ``sgd_decay_epoch``) [R, low confidence].

Capabilities: ``encode(x) -> z`` ``[N, z_dim]``; ``decode(z, y)`` needs the label (int
``[N]`` or one-hot/probabilities ``[N, n_classes]``), as the model's decoder does;
``reconstruct(x, y)``; ``sample(n)`` draws uniform labels and z ~ prior; ``style_grid``
renders the paper's figure (rows: one style z each; columns: the classes).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .aae_semi import (
    check_optimizer,
    constructor_kwargs,
    discriminator_step,
    draw_labels,
    draw_normal,
    generator_step,
    half_squared_error,
    make_optimizers,
    optimizer_step,
    sgd_decay_,
)
from .blocks import LabelledPool, init_normal_, mlp


class SupervisedAAE(nn.Module):
    registry_name = "aae_supervised"
    description = "Makhzani et al. 2015 supervised AAE (label + Gaussian style code; style/content disentanglement)"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        n_classes: int = 10,
        z_dim: int = 15,
        hidden: Sequence[int] = (1000, 1000),
        disc_hidden: Sequence[int] = (1000, 1000),
        prior_std: float = 1.0,
        init_std: float = 0.01,
        optimizer: str = "adam",
        sgd_recon: Sequence[float] = (0.01, 0.9),
        sgd_adv: Sequence[float] = (0.1, 0.1),
        sgd_decay_epoch: int = 50,
        adam_lr_recon: float = 1e-3,
        adam_lr_adv: float = 2e-4,
        adam_beta1: float = 0.5,
    ):
        super().__init__()
        self.hparams = constructor_kwargs(locals())
        check_optimizer(optimizer)
        self.image_shape = tuple(image_shape)
        dim = math.prod(self.image_shape)
        self.n_classes, self.z_dim, self.prior_std = n_classes, z_dim, prior_std
        self.encoder = mlp([dim, *hidden, z_dim])
        self.decoder = mlp([n_classes + z_dim, *list(hidden)[::-1], dim])  # sigmoid in decode
        self.d_gauss = mlp([z_dim, *disc_hidden, 1])
        init_normal_(self, init_std)
        self._pool: Optional[LabelledPool] = None  # set by on_fit_start; not part of the state dict

    # --- capabilities -------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The style code z = q(z|x), ``[N, z_dim]`` (deterministic)."""
        return self.encoder(x.flatten(1))

    def _decoder_logits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.ndim == 1:
            y = F.one_hot(y.long(), self.n_classes).to(z.dtype)
        return self.decoder(torch.cat([y, z], 1))

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Style ``z`` ``[N, z_dim]`` and content ``y`` (labels ``[N]`` or ``[N, n_classes]``) -> images in [0, 1]."""
        return torch.sigmoid(self._decoder_logits(z, y)).view(z.shape[0], *self.image_shape)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), y)

    def prior(self, n: int, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return draw_normal((n, self.z_dim), self.prior_std, device, generator)

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` samples ``[n, C, H, W]`` in [0, 1]: y uniform over the classes, z ~ N(0, prior_std^2 I)."""
        device = next(self.parameters()).device
        y = draw_labels(n, self.n_classes, device, generator)
        return self.decode(self.prior(n, device, generator), y)

    @torch.no_grad()
    def style_grid(self, n_styles: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``[n_styles, n_classes, C, H, W]`` in [0, 1]: row r decodes one style z_r ~ prior with
        every label 0..n_classes-1 (the paper's style/content figure)."""
        device = next(self.parameters()).device
        z = self.prior(n_styles, device, generator).repeat_interleave(self.n_classes, 0)
        y = torch.arange(self.n_classes, device=device).repeat(n_styles)
        return self.decode(z, y).view(n_styles, self.n_classes, *self.image_shape)

    # --- training -------------------------------------------------------------------
    def on_fit_start(self, x_all: torch.Tensor, y_all: Optional[torch.Tensor]) -> None:
        self._pool = LabelledPool(x_all, y_all)
        if len(self._pool) == 0:
            raise ValueError("SupervisedAAE needs labels (y >= 0) for the training images; the data set has none")

    def configure_optimizers(self):
        ae = list(self.encoder.parameters()) + list(self.decoder.parameters())
        params = {"recon": ae, "disc": list(self.d_gauss.parameters()), "gen": list(self.encoder.parameters())}
        return make_optimizers(self.hparams, params)

    def on_epoch_start(self, epoch: int, optimizers) -> None:
        sgd_decay_(self.hparams, optimizers, epoch)

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        n = x.shape[0]
        if y is None or bool((y < 0).any()):
            x, y = self._pool.batch(n)  # a minibatch with unknown labels: train on labelled images instead
        flat = x.flatten(1)
        # (i) reconstruction phase: encoder + decoder
        rec_loss = half_squared_error(self._decoder_logits(self.encode(flat), y), flat)
        out = {"rec_loss": optimizer_step(optimizers["recon"], rec_loss)}
        # (ii) regularisation phase: D_gauss, then the encoder as generator
        pairs = [(self.d_gauss, self.prior(n, x.device), self.encode(flat))]
        (out["d_loss"],) = discriminator_step(pairs, optimizers["disc"])
        out["g_loss"] = generator_step(pairs, optimizers["gen"])
        return out
