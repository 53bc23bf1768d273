"""Generative adversarial nets (Goodfellow et al. 2014): the MNIST MLP GAN.

Follows ``mnist.yaml`` of the authors' code (``goodfeli/adversarial``), docs/models.md §1:

* G: z ~ U[-sqrt(3), sqrt(3)]^100 -> FC 1200 ReLU -> FC 1200 ReLU -> FC D sigmoid;
  weights U(+-0.05); output bias initialised to the logit of the pixel marginals.
* D: D -> maxout 240 units x 5 pieces -> maxout 240 x 5 -> FC 1 sigmoid; weights
  U(+-0.005). Dropout on each layer's input: keep 0.8 at the input, 0.5 elsewhere
  (inverted dropout: ``AdversaryCost2`` sets include 0.8 / scale 1.25 at h0 and
  include 0.5 / scale 2 elsewhere, i.e. scale = 1/p). D keeps its dropout in the pass
  that gives G's loss (``no_drop_in_d_for_g`` is False in ``mnist.yaml``).
* No column-norm constraint: ``mnist.yaml`` has no ``max_col_norm`` (only the TFD yamls
  constrain columns, 1.9365 on every D layer). ``max_col_norm`` is offered for those;
  on MNIST with the SGD schedule it lets D win (accuracy ~1.0) and G collapse
  (results/diagnostics/gan-colnorm.md).
* Losses: D minimises 1/2 [BCE(D(x), 1) + BCE(D(G(z)), 0)]; G minimises
  BCE(D(G(z)), 1) = -log D(G(z)) (non-saturating). D and G are updated at the same step
  from the same minibatch (k = 1, simultaneous gradient step, as pylearn2 does).
* SGD, batch 100, lr 0.1 decayed by 1/1.000004 per update (floor 1e-6), momentum
  0.5 -> 0.7 linearly over epochs 1-250 (pylearn2 ``MomentumAdjustor``): ``optimizer="sgd"``,
  the default. ``optimizer="adam"`` (lr 2e-4, beta1 0.5, the DCGAN-era default) is offered
  because the SGD schedule collapsed in evalkit's own MNIST run (see reports/parzen.md).

Sizes are constructor arguments, so the same class trains at toy size on CPU.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Maxout, init_uniform_, max_col_norm_, mlp, sigmoid_bias_from_marginals
from .training import make_optimizer


class GAN(nn.Module):
    registry_name = "gan"
    description = "Goodfellow et al. 2014 MLP GAN (maxout discriminator, uniform noise)"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        z_dim: int = 100,
        g_hidden: Sequence[int] = (1200, 1200),
        d_units: int = 240,
        d_pieces: int = 5,
        d_layers: int = 2,
        input_keep: float = 0.8,
        hidden_keep: float = 0.5,
        g_irange: float = 0.05,
        d_irange: float = 0.005,
        max_col_norm: Optional[float] = None,
        noise: str = "uniform",
        lr: float = 0.1,
        lr_decay: float = 1.000004,
        min_lr: float = 1e-6,
        init_momentum: float = 0.5,
        final_momentum: float = 0.7,
        momentum_start: int = 1,
        momentum_saturate: int = 250,
        optimizer: str = "sgd",
        adam_lr: float = 2e-4,
        adam_beta1: float = 0.5,
    ):
        super().__init__()
        self.hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in locals().items() if k not in ("self", "__class__")}
        self.image_shape = tuple(image_shape)
        dim = math.prod(self.image_shape)
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' (the authors' schedule) or 'adam', got {optimizer!r}")
        if noise not in ("uniform", "gaussian"):
            raise ValueError(f"noise must be 'uniform' or 'gaussian', got {noise!r}")
        self.z_dim, self.noise = z_dim, noise
        self.generator = mlp([z_dim, *g_hidden, dim])  # sigmoid applied in decode
        layers: list[nn.Module] = []
        in_f = dim
        for _ in range(d_layers):
            layers.append(Maxout(in_f, d_units, d_pieces))
            in_f = d_units
        self.d_hidden = nn.ModuleList(layers)
        self.d_out = nn.Linear(in_f, 1)
        self.keeps = [input_keep] + [hidden_keep] * d_layers
        init_uniform_(self.generator, g_irange)
        init_uniform_(self.d_hidden, d_irange)
        init_uniform_(self.d_out, d_irange)

    # --- model ---------------------------------------------------------------
    def noise_like(self, n: int, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if self.noise == "uniform":
            u = torch.rand(n, self.z_dim, device=device, generator=generator)
            return (2 * u - 1) * math.sqrt(3.0)  # U[-sqrt 3, sqrt 3]: zero mean, unit variance
        return torch.randn(n, self.z_dim, device=device, generator=generator)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.generator(z)).view(z.shape[0], *self.image_shape)

    def discriminator_logits(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for keep, layer in zip(self.keeps, self.d_hidden):
            h = layer(F.dropout(h, 1 - keep, self.training))
        return self.d_out(F.dropout(h, 1 - self.keeps[-1], self.training)).squeeze(1)

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` samples ``[n, C, H, W]`` in [0, 1]. ``generator`` must live on the model's device."""
        device = next(self.parameters()).device
        was = self.training
        self.eval()
        out = self.generate(self.noise_like(n, device, generator))
        self.train(was)
        return out

    # --- training --------------------------------------------------------------
    def init_from_data(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            self.generator[-1].bias.copy_(sigmoid_bias_from_marginals(x).to(self.generator[-1].bias))

    def configure_optimizers(self):
        h = self.hparams
        d_params = list(self.d_hidden.parameters()) + list(self.d_out.parameters())
        if h["optimizer"] == "adam":
            betas = (h["adam_beta1"], 0.999)
            return {
                "generator": make_optimizer(torch.optim.Adam, self.generator.parameters(), lr=h["adam_lr"], betas=betas),
                "discriminator": make_optimizer(torch.optim.Adam, d_params, lr=h["adam_lr"], betas=betas),
            }
        g = make_optimizer(torch.optim.SGD, self.generator.parameters(), lr=h["lr"], momentum=h["init_momentum"])
        d = make_optimizer(torch.optim.SGD, d_params, lr=h["lr"], momentum=h["init_momentum"])
        return {"generator": g, "discriminator": d}

    def momentum_at(self, epoch: int) -> float:
        """pylearn2 MomentumAdjustor: linear from ``momentum_start`` to ``momentum_saturate`` (1-based epochs)."""
        h = self.hparams
        e = epoch + 1
        a = min(max((e - h["momentum_start"]) / max(h["momentum_saturate"] - h["momentum_start"], 1), 0.0), 1.0)
        return h["init_momentum"] + a * (h["final_momentum"] - h["init_momentum"])

    def lr_at(self, step: int) -> float:
        h = self.hparams
        return max(h["lr"] * h["lr_decay"] ** (-step), h["min_lr"])

    def on_epoch_start(self, epoch: int, optimizers) -> None:
        if self.hparams["optimizer"] != "sgd":
            return
        m = self.momentum_at(epoch)
        for opt in optimizers.values():
            for group in opt.param_groups:
                group["momentum"] = m

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        g_opt, d_opt = optimizers["generator"], optimizers["discriminator"]
        if self.hparams["optimizer"] == "sgd":
            lr = self.lr_at(step)
            for opt in (g_opt, d_opt):
                for group in opt.param_groups:
                    group["lr"] = lr
        n = x.shape[0]
        fake = self.generate(self.noise_like(n, x.device))
        d_real = self.discriminator_logits(x)
        d_fake = self.discriminator_logits(fake)
        ones, zeros = torch.ones_like(d_real), torch.zeros_like(d_real)
        d_loss = 0.5 * (F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(d_fake, zeros))
        g_loss = F.binary_cross_entropy_with_logits(d_fake, ones)
        d_params = [p for grp in d_opt.param_groups for p in grp["params"]]
        g_params = [p for grp in g_opt.param_groups for p in grp["params"]]
        # Simultaneous update: both gradients at the current parameters, then both steps.
        d_grads = torch.autograd.grad(d_loss, d_params, retain_graph=True)
        g_grads = torch.autograd.grad(g_loss, g_params)
        for p, gr in zip(d_params, d_grads):
            p.grad = gr
        for p, gr in zip(g_params, g_grads):
            p.grad = gr
        d_opt.step()
        g_opt.step()
        if self.hparams["max_col_norm"]:  # the TFD yamls: every D layer (not in mnist.yaml)
            for layer in [*(m.linear for m in self.d_hidden), self.d_out]:
                max_col_norm_(layer, self.hparams["max_col_norm"])
        with torch.no_grad():
            acc = 0.5 * ((d_real > 0).float().mean() + (d_fake < 0).float().mean())
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "d_acc": acc.item()}
