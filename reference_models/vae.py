"""Variational autoencoder (Kingma & Welling 2014), in its M1 configuration of Kingma,
Rezende, Mohamed & Welling 2014 (an unsupervised feature extractor: a classifier is then
trained on the posterior means) and as the VAE row of the likelihood tables.

docs/models.md §10 gives the loss [C]: negative ELBO = BCE summed over pixels + KL, with
KL = -1/2 sum(1 + log s^2 - mu^2 - s^2), and the original paper's MNIST values [R] (500 hidden
units, Adagrad, M = 100, L = 1). The M1 values below are not in docs/models.md; they are [A]
(the task brief's statement, which matches my recollection of Kingma et al. 2014 §4):

* Encoder q(z|x): D -> 600 -> 600 (softplus) -> (mu, log s^2), ``z_dim`` = 50 (diagonal
  Gaussian). Decoder p(x|z): 50 -> 600 -> 600 (softplus) -> D logits, sigmoid means.
* Bernoulli likelihood on the [0, 1] grey levels (BCE summed over pixels; no binarisation),
  prior N(0, I), one reparameterised sample per example (L = 1); the KL term in closed form.
* Optimiser: "RMSProp with momentum and bias correction, lr 3e-4, first/second moment decay
  0.1/0.001" = Adam(lr 3e-4, betas (0.9, 0.999)), batch 100 (the training loop's default).
* Init: weights N(0, 0.001^2), biases 0 [A, same recollection]. ``init_std`` = 0 (or None)
  keeps PyTorch's default initialisation (0 because TOML specs cannot say null).

Options: ``hidden`` (the encoder's widths; the decoder mirrors them), ``z_dim``,
``activation`` ("softplus" | "relu" | "tanh"), ``likelihood`` ("bernoulli" | "gaussian": a
Gaussian with the sigmoid mean and a fixed ``sigma`` [A: 0.1], i.e. a scaled squared error).
Labels are ignored. Capabilities: ``encode`` (posterior mean, the M1 features),
``encode_dist`` (mu, log s^2), ``decode`` (means in [0, 1]), ``sample`` (decoder means of
z ~ N(0, I), the usual images for a Parzen estimate), ``reconstruct``, ``elbo`` (per example,
nats) and ``log_likelihood`` (importance-weighted estimate of log p(x) with ``k`` samples,
Burda et al. 2016; not in the papers above, offered for likelihood tables).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import init_normal_, mlp
from .training import make_optimizer

ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU, "tanh": nn.Tanh}
LIKELIHOODS = ("bernoulli", "gaussian")
_LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per row, in nats (closed form)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


class VAE(nn.Module):
    registry_name = "vae"
    description = "Kingma & Welling 2014 variational autoencoder (M1 of Kingma et al. 2014: Gaussian q(z|x), Bernoulli p(x|z))"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        z_dim: int = 50,
        hidden: Sequence[int] = (600, 600),
        activation: str = "softplus",
        likelihood: str = "bernoulli",
        sigma: float = 0.1,
        init_std: Optional[float] = 0.001,
        lr: float = 3e-4,
        betas: Sequence[float] = (0.9, 0.999),
    ):
        super().__init__()
        self.hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in locals().items() if k not in ("self", "__class__")}
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        self.image_shape = tuple(image_shape)
        dim = math.prod(self.image_shape)
        self.z_dim, self.likelihood, self.sigma = z_dim, likelihood, float(sigma)
        act = ACTIVATIONS[activation]
        self.encoder = mlp([dim, *hidden, 2 * z_dim], activation=act)  # -> (mu, log s^2)
        self.decoder = mlp([z_dim, *list(hidden)[::-1], dim], activation=act)  # -> logits
        if init_std:
            init_normal_(self, init_std)

    # --- capabilities ------------------------------------------------------------
    def encode_dist(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) = N(mu, diag exp(logvar)): ``(mu, logvar)``, each ``[N, z_dim]``."""
        mu, logvar = self.encoder(x.flatten(1)).chunk(2, dim=1)
        return mu, logvar

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean ``[N, z_dim]`` (deterministic; the M1 features)."""
        return self.encode_dist(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's means ``[N, C, H, W]`` in [0, 1]."""
        return torch.sigmoid(self.decoder(z)).view(z.shape[0], *self.image_shape)

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` samples ``[n, C, H, W]`` in [0, 1]: z ~ N(0, I), then the decoder's means."""
        device = next(self.parameters()).device
        return self.decode(torch.randn(n, self.z_dim, device=device, generator=generator))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder means at the posterior mean."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, *, k: int = 1, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Per-example evidence lower bound ``[N]`` in nats: E_q[log p(x|z)] (Monte Carlo,
        ``k`` samples averaged) - KL(q(z|x) || p(z)) (closed form)."""
        mu, logvar = self.encode_dist(x)
        flat = x.flatten(1)
        rec = sum(self._log_px_z(self._draw(mu, logvar, generator)[0], flat) for _ in range(k)) / k
        return rec - gaussian_kl(mu, logvar)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, *, k: int = 100, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Importance-weighted estimate of log p(x) ``[N]`` in nats with ``k`` samples from
        q(z|x): log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x). A lower bound in expectation,
        at least the ``k``-sample ELBO, tightening as ``k`` grows."""
        mu, logvar = self.encode_dist(x)
        flat = x.flatten(1)
        acc = None
        for _ in range(k):  # one pass over the batch per sample: memory stays O(N * D)
            z, eps = self._draw(mu, logvar, generator)
            log_q = -0.5 * (eps.pow(2) + logvar + _LOG_2PI).sum(1)
            log_p = -0.5 * (z.pow(2) + _LOG_2PI).sum(1)
            log_w = self._log_px_z(z, flat) + log_p - log_q
            acc = log_w if acc is None else torch.logaddexp(acc, log_w)
        return acc - math.log(k)

    # --- pieces --------------------------------------------------------------------
    def _draw(self, mu, logvar, generator=None):
        eps = torch.randn(mu.shape, device=mu.device, generator=generator)
        return mu + torch.exp(0.5 * logvar) * eps, eps

    def _log_px_z(self, z: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example, summed over pixels (``flat``: x as ``[N, D]``)."""
        logits = self.decoder(z)
        if self.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(logits, flat, reduction="none").sum(1)
        sq = (flat - torch.sigmoid(logits)).pow(2).sum(1)
        return -0.5 * sq / self.sigma**2 - flat.shape[1] * (math.log(self.sigma) + 0.5 * _LOG_2PI)

    # --- training ------------------------------------------------------------------
    def configure_optimizers(self):
        h = self.hparams
        return {"vae": make_optimizer(torch.optim.Adam, self.parameters(), lr=h["lr"], betas=tuple(h["betas"]))}

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        """One Adam step on the negative ELBO (one reparameterised sample per example,
        averaged over the minibatch). Labels are ignored."""
        mu, logvar = self.encode_dist(x)
        z, _ = self._draw(mu, logvar)
        rec = -self._log_px_z(z, x.flatten(1)).mean()
        kl = gaussian_kl(mu, logvar).mean()
        loss = rec + kl
        opt = optimizers["vae"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out = torch.stack([loss, rec, kl]).detach().tolist()
        return {"loss": out[0], "rec": out[1], "kl": out[2]}
