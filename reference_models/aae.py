"""Adversarial autoencoder (Makhzani et al. 2015), the unsupervised likelihood model.

docs/models.md §2A (values tagged [R] there were recalled, not re-read):

* Encoder D -> 1000 ReLU -> 1000 ReLU -> z (linear); decoder z -> 1000 ReLU -> 1000 ReLU
  -> D sigmoid; latent discriminator z -> 1000 ReLU -> 1000 ReLU -> 1. Init N(0, 0.01^2).
* MNIST: z = 8, prior N(0, 5^2 I). Batch 100. Euclidean reconstruction loss.
* Per minibatch: (i) reconstruction phase: encoder + decoder step on the reconstruction
  loss; (ii) regularisation phase: the discriminator step (prior samples real, q(z|x)
  codes fake), then the encoder step as generator (fool the discriminator).
* Posterior q(z|x): ``deterministic`` (default, the paper's MNIST choice), ``gaussian``
  (reparameterised mean/log-variance heads) or ``universal`` (the encoder also takes
  input noise eta ~ N(0, I) of ``noise_dim`` dims: q(z|x) = int q(z|x, eta) p(eta)).
* Samples: z ~ prior -> decoder.

Optimiser: the paper's values are [R] (SGD with momentum). ``optimizer="sgd"`` gives the
recalled schedule (reconstruction lr 0.01 momentum 0.9; adversarial lr 0.1 momentum 0.1,
both / 10 after ``sgd_decay_epoch`` epochs). ``optimizer="adam"`` (default) uses Adam
(lr 2e-4 reconstruction, 2e-4 adversarial, beta1 0.5), as the public reproduction that
reached 345 nats did; the benchmark report footnotes the choice.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import init_normal_, mlp
from .training import make_optimizer

POSTERIORS = ("deterministic", "gaussian", "universal")


class AAE(nn.Module):
    registry_name = "aae"
    description = "Makhzani et al. 2015 adversarial autoencoder (likelihood model, Gaussian prior)"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        z_dim: int = 8,
        hidden: Sequence[int] = (1000, 1000),
        disc_hidden: Sequence[int] = (1000, 1000),
        prior_std: float = 5.0,
        posterior: str = "deterministic",
        noise_dim: int = 100,
        init_std: float = 0.01,
        optimizer: str = "adam",
        lr_recon: float = 2e-4,
        lr_adv: float = 2e-4,
        beta1: float = 0.5,
        sgd_recon: Sequence[float] = (0.01, 0.9),
        sgd_adv: Sequence[float] = (0.1, 0.1),
        sgd_decay_epoch: int = 50,
    ):
        super().__init__()
        self.hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in locals().items() if k not in ("self", "__class__")}
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior must be one of {POSTERIORS}, got {posterior!r}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.image_shape = tuple(image_shape)
        dim = math.prod(self.image_shape)
        self.z_dim, self.prior_std, self.posterior = z_dim, prior_std, posterior
        self.noise_dim = noise_dim if posterior == "universal" else 0
        enc_out = 2 * z_dim if posterior == "gaussian" else z_dim
        self.encoder = mlp([dim + self.noise_dim, *hidden, enc_out])
        self.decoder = mlp([z_dim, *list(hidden)[::-1], dim])  # sigmoid applied in decode
        self.discriminator = mlp([z_dim, *disc_hidden, 1])
        init_normal_(self, init_std)

    # --- capabilities ------------------------------------------------------------
    def encode(self, x: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """q(z|x): a draw from the posterior (the code itself when deterministic)."""
        h = x.flatten(1)
        if self.noise_dim:
            h = torch.cat([h, torch.randn(h.shape[0], self.noise_dim, device=h.device, generator=generator)], 1)
        out = self.encoder(h)
        if self.posterior == "gaussian":
            mu, logvar = out.chunk(2, dim=1)
            return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, device=mu.device, generator=generator)
        return out

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z)).view(z.shape[0], *self.image_shape)

    def prior(self, n: int, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.prior_std * torch.randn(n, self.z_dim, device=device, generator=generator)

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` samples ``[n, C, H, W]`` in [0, 1]: z ~ N(0, prior_std^2 I), then the decoder."""
        device = next(self.parameters()).device
        return self.decode(self.prior(n, device, generator))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # --- training --------------------------------------------------------------
    def configure_optimizers(self):
        h = self.hparams
        ae_params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        if h["optimizer"] == "adam":
            betas = (h["beta1"], 0.999)
            return {
                "recon": make_optimizer(torch.optim.Adam, ae_params, lr=h["lr_recon"], betas=betas),
                "disc": make_optimizer(torch.optim.Adam, self.discriminator.parameters(), lr=h["lr_adv"], betas=betas),
                "gen": make_optimizer(torch.optim.Adam, self.encoder.parameters(), lr=h["lr_adv"], betas=betas),
            }
        (lr_r, m_r), (lr_a, m_a) = h["sgd_recon"], h["sgd_adv"]
        return {
            "recon": make_optimizer(torch.optim.SGD, ae_params, lr=lr_r, momentum=m_r),
            "disc": make_optimizer(torch.optim.SGD, self.discriminator.parameters(), lr=lr_a, momentum=m_a),
            "gen": make_optimizer(torch.optim.SGD, self.encoder.parameters(), lr=lr_a, momentum=m_a),
        }

    def on_epoch_start(self, epoch: int, optimizers) -> None:
        h = self.hparams
        if h["optimizer"] != "sgd":
            return
        scale = 0.1 if epoch >= h["sgd_decay_epoch"] else 1.0
        for name, opt in optimizers.items():
            base = h["sgd_recon"][0] if name == "recon" else h["sgd_adv"][0]
            for group in opt.param_groups:
                group["lr"] = base * scale

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        n = x.shape[0]
        flat = x.flatten(1)
        # (i) reconstruction phase: encoder + decoder
        recon = self.decoder(self.encode(x))
        rec_loss = F.mse_loss(torch.sigmoid(recon), flat, reduction="sum") / n
        optimizers["recon"].zero_grad(set_to_none=True)
        rec_loss.backward()
        optimizers["recon"].step()
        # (ii) regularisation phase: discriminator, then the encoder as generator
        z_fake = self.encode(x)
        z_real = self.prior(n, x.device)
        d_real = self.discriminator(z_real).squeeze(1)
        d_fake = self.discriminator(z_fake.detach()).squeeze(1)
        ones, zeros = torch.ones_like(d_real), torch.zeros_like(d_real)
        d_loss = 0.5 * (F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(d_fake, zeros))
        optimizers["disc"].zero_grad(set_to_none=True)
        d_loss.backward()
        optimizers["disc"].step()
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(z_fake).squeeze(1), ones)
        optimizers["gen"].zero_grad(set_to_none=True)
        g_loss.backward()
        optimizers["gen"].step()
        return {"rec_loss": rec_loss.item(), "d_loss": d_loss.item(), "g_loss": g_loss.item()}
