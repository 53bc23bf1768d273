"""Autoencoders with a low-dimensional latent space, trained on posterior samples θ.

Both models offer the *latent map* interface that :mod:`evalkit.hmc.latent` samples with
(a user's own encoder/decoder plugs in by offering the same four members):

* ``latent_dim: int``
* ``encode(theta [C, D]) -> (mean [C, d], std [C, d])``: the coupling density
  r(z | θ) = N(z; mean, diag std²) used by the corrected latent sampler;
* ``decode(z [C, d]) -> (mean [C, D], std [C, D])``: the θ-proposal density
  q(θ | z) = N(θ; mean, diag std²) used by the corrected latent sampler;
* ``decode_mean(z)``: g(z), the deterministic decoder, for a single z [d] or a batch
  [C, d]; the latent dynamics differentiate it (torch.func);
* optionally ``decode_mean_and_jacobian(z [C, d]) -> (g(z) [C, D], J(z) [C, D, d])``, a
  faster batched path differentiable by plain autograd (both models here have it: exact
  forward-mode propagation through the MLP).

:class:`AutoEncoder` (deterministic, trained by mean squared error): g and e are MLPs. The
latent codes are whitened after training (z ← (e(θ) − m)/s with the mean m and standard
deviation s of the training codes) so that a trajectory length in z has the same meaning as
for the VAE. The stds of the two densities are not learned; they are set after training
from the training set by stated rules: decoder std = per-coordinate RMS of the residual
θ − g(e(θ)); encoder std = per-coordinate RMS of the cycle error e(g(z) + ε) − z with
z = e(θ), ε ~ N(0, decoder std²), floored at 0.05 (whitened units).

:class:`VAE` (Kingma & Welling 2014): q_φ(z | θ) = N(μ_φ(θ), diag σ_φ²(θ)), prior N(0, I),
p_ψ(θ | z) = N(g_ψ(z), diag σ_x²) with one learned σ_x per coordinate; trained by the
one-sample reparameterised ELBO. Its encoder and decoder *are* the two densities.

Training cost (wall time, optimiser steps, final loss) is returned in :class:`TrainReport`,
separate from any sampler's cost. Everything is float64 and seeded.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import nn

from .target import DTYPE

__all__ = ["LatentMap", "mlp_value_and_jacobian", "AutoEncoder", "VAE", "TrainReport", "train_autoencoder", "train_vae"]


class LatentMap(Protocol):
    latent_dim: int

    def encode(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor: ...


@dataclass
class TrainReport:
    """Cost and outcome of training one latent model (counted apart from sampling)."""

    kind: str
    wall_time_s: float
    steps: int
    n_train: int
    final_loss: float
    seed: int


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


def mlp_value_and_jacobian(net: nn.Sequential, x: torch.Tensor, dx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact forward-mode pass through a Linear/Tanh MLP: returns (net(x), ∂net/∂x · dx).

    ``x`` [C, n_in], ``dx`` [C, n_in, k] (a Jacobian of x w.r.t. k inputs) → ([C, n_out],
    [C, n_out, k]). Linear: h = W x + b, ∂h = W ∂x; Tanh: h = tanh(a), ∂h = (1 − h²) ∂a.
    """
    h, j = x, dx
    for layer in net:
        if isinstance(layer, nn.Linear):
            h = layer(h)
            j = torch.einsum("oi,cik->cok", layer.weight, j)
        elif isinstance(layer, nn.Tanh):
            h = torch.tanh(h)
            j = (1 - h**2)[..., None] * j
        else:
            raise TypeError(f"mlp_value_and_jacobian supports Linear and Tanh layers, not {type(layer).__name__}")
    return h, j


def fixed_noise_scales(x: torch.Tensor, z: torch.Tensor, rec: torch.Tensor, encode_mean: Callable[[torch.Tensor], torch.Tensor],
                       gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dec_std, enc_std)`` of a deterministic coder from posterior draws ``x``, their codes
    ``z = e(x)`` and reconstructions ``rec = g(z)``: the decoder std is the per-coordinate RMS of
    ``x - rec`` (floor 1e-4), the encoder std the per-coordinate RMS of the cycle error
    ``e(rec + eps) - z`` with ``eps ~ N(0, dec_std^2)`` drawn from ``gen`` (floor 0.05)."""
    dec_std = (x - rec).pow(2).mean(0).sqrt().clamp_min(1e-4)
    noisy = rec + dec_std * torch.randn(x.shape, generator=gen, dtype=DTYPE)
    enc_std = (encode_mean(noisy) - z).pow(2).mean(0).sqrt().clamp_min(0.05)
    return dec_std, enc_std


class FixedNoiseCoder:
    """``encode``/``decode`` as Gaussians with the fixed per-coordinate stds ``enc_std`` /
    ``dec_std`` around ``encode_mean`` / ``decode_mean`` (:class:`LatentMap`)."""

    enc_std: torch.Tensor
    dec_std: torch.Tensor

    def encode(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.encode_mean(theta)
        return m, self.enc_std.expand_as(m)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.decode_mean(z)
        return m, self.dec_std.expand_as(m)


class AutoEncoder(FixedNoiseCoder, nn.Module):
    """Deterministic MLP autoencoder D → d → D with whitened codes (module docstring)."""

    def __init__(self, dim: int, latent_dim: int = 2, hidden: int = 64):
        super().__init__()
        self.dim, self.latent_dim = dim, latent_dim
        self.enc = _mlp(dim, hidden, latent_dim)
        self.dec = _mlp(latent_dim, hidden, dim)
        self.register_buffer("z_shift", torch.zeros(latent_dim, dtype=DTYPE))
        self.register_buffer("z_scale", torch.ones(latent_dim, dtype=DTYPE))
        self.register_buffer("dec_std", torch.ones(dim, dtype=DTYPE))
        self.register_buffer("enc_std", torch.ones(latent_dim, dtype=DTYPE))
        self.to(DTYPE)

    def encode_mean(self, theta: torch.Tensor) -> torch.Tensor:
        return (self.enc(theta) - self.z_shift) / self.z_scale

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z * self.z_scale + self.z_shift)

    def decode_mean_and_jacobian(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dz = torch.diag_embed(self.z_scale.expand_as(z))
        return mlp_value_and_jacobian(self.dec, z * self.z_scale + self.z_shift, dz)


class VAE(nn.Module):
    """Gaussian VAE D → d → D with a learned per-coordinate decoder std (module docstring)."""

    def __init__(self, dim: int, latent_dim: int = 2, hidden: int = 64):
        super().__init__()
        self.dim, self.latent_dim = dim, latent_dim
        self.enc = _mlp(dim, hidden, 2 * latent_dim)
        self.dec = _mlp(latent_dim, hidden, dim)
        self.log_dec_std = nn.Parameter(torch.zeros(dim, dtype=DTYPE))
        self.to(DTYPE)

    def encode(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.enc(theta)
        mean, log_std = h[..., : self.latent_dim], h[..., self.latent_dim :]
        return mean, torch.exp(log_std.clamp(-8.0, 3.0))

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z)

    def decode_mean_and_jacobian(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.eye(self.latent_dim, dtype=z.dtype).expand(z.shape[0], -1, -1)
        return mlp_value_and_jacobian(self.dec, z, eye)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.dec(z)
        return m, torch.exp(self.log_dec_std).expand_as(m)

    def elbo(self, theta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Mean over the batch of the one-sample ELBO (nats)."""
        mu, std = self.encode(theta)
        z = mu + std * torch.randn(mu.shape, generator=generator, dtype=DTYPE)
        xm, xs = self.decode(z)
        rec = (-0.5 * ((theta - xm) / xs) ** 2 - torch.log(xs) - 0.5 * math.log(2 * math.pi)).sum(-1)
        kl = 0.5 * (mu**2 + std**2 - 1.0 - 2 * torch.log(std)).sum(-1)
        return (rec - kl).mean()


def _batches(n: int, batch: int, steps: int, gen: torch.Generator):
    for _ in range(steps):
        yield torch.randint(0, n, (batch,), generator=gen)


def _fit(model: nn.Module, x: torch.Tensor, loss_of: Callable[[torch.Tensor], torch.Tensor], *, steps: int, batch: int,
         lr: float, gen: torch.Generator) -> torch.Tensor:
    """``steps`` Adam steps (cosine-annealed ``lr``) on ``loss_of(minibatch)``, minibatches of
    ``x`` drawn with ``gen``; returns the last loss."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss = torch.tensor(float("nan"))
    for idx in _batches(x.shape[0], batch, steps, gen):
        loss = loss_of(x[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return loss


def train_autoencoder(
    samples: torch.Tensor, *, latent_dim: int = 2, hidden: int = 64, steps: int = 3000, batch: int = 256,
    lr: float = 3e-3, seed: int = 0,
) -> tuple[AutoEncoder, TrainReport]:
    """Fit an :class:`AutoEncoder` to ``samples`` [n, D] by MSE with Adam, then set the
    whitening and the two stds by the rules of the module docstring."""
    x = samples.detach().to(DTYPE)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = AutoEncoder(x.shape[1], latent_dim, hidden)
    t0 = time.perf_counter()
    loss = _fit(model, x, lambda xb: ((model.dec(model.enc(xb)) - xb) ** 2).sum(-1).mean(), steps=steps, batch=batch, lr=lr, gen=gen)
    with torch.no_grad():
        codes = model.enc(x)
        model.z_shift.copy_(codes.mean(0))
        model.z_scale.copy_(codes.std(0).clamp_min(1e-8))
        z = model.encode_mean(x)
        dec_std, enc_std = fixed_noise_scales(x, z, model.decode_mean(z), model.encode_mean, gen)
        model.dec_std.copy_(dec_std)
        model.enc_std.copy_(enc_std)
    wall = time.perf_counter() - t0
    return model.eval(), TrainReport("ae", wall, steps, int(x.shape[0]), float(loss.detach()), seed)


def train_vae(
    samples: torch.Tensor, *, latent_dim: int = 2, hidden: int = 64, steps: int = 3000, batch: int = 256,
    lr: float = 3e-3, seed: int = 0,
) -> tuple[VAE, TrainReport]:
    """Fit a :class:`VAE` to ``samples`` [n, D] by maximising the ELBO with Adam."""
    x = samples.detach().to(DTYPE)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = VAE(x.shape[1], latent_dim, hidden)
    t0 = time.perf_counter()
    loss = _fit(model, x, lambda xb: -model.elbo(xb, gen), steps=steps, batch=batch, lr=lr, gen=gen)
    wall = time.perf_counter() - t0
    return model.eval(), TrainReport("vae", wall, steps, int(x.shape[0]), float(loss.detach()), seed)
