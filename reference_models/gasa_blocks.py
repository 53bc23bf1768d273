"""Building blocks of the GASA models (:mod:`reference_models.gasa`): the paired-image
convention, the convolutional encoder / decoder, the one-layer and DCGAN discriminators, the
pixel loss, PSNR, Adam with the GAN settings, and one adversarial step (also the restoration
GAN's, :mod:`reference_models.restoration_gan`). The assumptions behind
each are stated in :mod:`reference_models.gasa`'s docstring."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("mse", "l1")
KERNELS = (3, 4)


# ----------------------------------------------------------------------------- pairs
def make_pairs(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Training tensor ``[N, 2C, H, W]`` for ``fit``: each input image with its target image."""
    if inputs.shape != targets.shape or inputs.ndim != 4:
        raise ValueError(f"inputs and targets must both be [N, C, H, W] of one shape; got {tuple(inputs.shape)} and {tuple(targets.shape)}")
    return torch.cat([inputs, targets], dim=1)


def split_pairs(x: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, 2C, H, W]`` -> (inputs, targets); ``[N, C, H, W]`` -> (x, x). ``ValueError`` otherwise."""
    if x.ndim == 4 and x.shape[1] == 2 * channels:
        return x[:, :channels], x[:, channels:]
    if x.ndim == 4 and x.shape[1] == channels:
        return x, x
    raise ValueError(
        f"training images must be [N, {channels}, H, W] (target = input) or [N, {2 * channels}, H, W] "
        f"(input and target stacked along channels: make_pairs(inputs, targets)); got {tuple(x.shape)}"
    )


# ----------------------------------------------------------------------------- networks
def _paddings(kernel: int) -> tuple[int, int]:
    """(padding, output_padding) that make a stride-2 conv halve and its transpose double H, W."""
    return (1, 0) if kernel == 4 else (1, 1)


def _bottleneck_area(image_size: Optional[Sequence[int]], n_conv: int) -> int:
    """H W of the last conv map after ``n_conv`` halvings."""
    if image_size is None:
        raise ValueError("code_dim > 0 needs image_size (H, W)")
    f = 2**n_conv
    return (image_size[0] // f) * (image_size[1] // f)


class ConvEncoder(nn.Module):
    """``2 x - 1`` -> per entry of ``channels`` conv(k, stride 2) -> [BN] -> LeakyReLU; with
    ``code_dim`` > 0 one more layer: flatten -> linear ``code_dim`` -> LeakyReLU (needs
    ``image_size`` (H, W)). ``forward(x, depth)`` applies the first ``depth`` layers (all by default)."""

    def __init__(self, image_channels: int, channels: Sequence[int], kernel: int = 4, batch_norm: bool = False,
                 slope: float = 0.2, code_dim: int = 0, image_size: Optional[Sequence[int]] = None):
        super().__init__()
        pad, _ = _paddings(kernel)
        self.layers = nn.ModuleList()
        c_in = image_channels
        for c in channels:
            mods: list[nn.Module] = [nn.Conv2d(c_in, c, kernel, stride=2, padding=pad, bias=not batch_norm)]
            if batch_norm:
                mods.append(nn.BatchNorm2d(c))
            mods.append(nn.LeakyReLU(slope))
            self.layers.append(nn.Sequential(*mods))
            c_in = c
        if code_dim:
            d = c_in * _bottleneck_area(image_size, len(channels))
            self.layers.append(nn.Sequential(nn.Flatten(), nn.Linear(d, code_dim), nn.LeakyReLU(slope)))

    def forward(self, x: torch.Tensor, depth: Optional[int] = None) -> torch.Tensor:
        h = 2.0 * x - 1.0
        for layer in self.layers[: len(self.layers) if depth is None else depth]:
            h = layer(h)
        return h


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: ``layers[l]`` is block l+1's decoder layer (it rebuilds
    encoder representation l from l+1; ``layers[0]`` rebuilds the image, with a sigmoid). With
    ``code_dim``: a last layer linear -> LeakyReLU -> reshape to the last conv map."""

    def __init__(self, image_channels: int, channels: Sequence[int], kernel: int = 4, batch_norm: bool = False,
                 slope: float = 0.2, code_dim: int = 0, image_size: Optional[Sequence[int]] = None):
        super().__init__()
        pad, out_pad = _paddings(kernel)
        self.layers = nn.ModuleList()
        outs = [image_channels, *channels[:-1]]
        for i, (c_in, c_out) in enumerate(zip(channels, outs)):
            image = i == 0
            mods: list[nn.Module] = [
                nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=pad, output_padding=out_pad, bias=image or not batch_norm)
            ]
            if batch_norm and not image:
                mods.append(nn.BatchNorm2d(c_out))
            mods.append(nn.Sigmoid() if image else nn.LeakyReLU(slope))
            self.layers.append(nn.Sequential(*mods))
        if code_dim:
            f = 2 ** len(channels)
            h, w = image_size[0] // f, image_size[1] // f
            self.layers.append(nn.Sequential(nn.Linear(code_dim, channels[-1] * h * w), nn.LeakyReLU(slope),
                                             nn.Unflatten(1, (channels[-1], h, w))))

    def forward(self, h: torch.Tensor, depth: Optional[int] = None) -> torch.Tensor:
        """Representation ``depth`` (the bottleneck by default) -> image in [0, 1]."""
        for i in reversed(range(len(self.layers) if depth is None else depth)):
            h = self.layers[i](h)
        return h


class Discriminator(nn.Module):
    """conv 4x4 stride 2 per entry of ``channels`` (BN on all but the first when ``batch_norm``),
    LeakyReLU, flatten -> linear -> one logit (DCGAN's layout) for inputs ``[N, in_channels, *size]``."""

    def __init__(self, in_channels: int, size: Sequence[int], channels: Sequence[int], slope: float = 0.2, batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, (h, w) = in_channels, size
        for i, c in enumerate(channels):
            bn = batch_norm and i > 0
            layers.append(nn.Conv2d(c_in, c, 4, stride=2, padding=1, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(slope))
            c_in, h, w = c, h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"discriminator: {len(channels)} stride-2 layers do not fit an input of size {tuple(size)}")
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * h * w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(1)


def pixel_loss(out: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean squared (``"mse"``) or absolute (``"l1"``) error per element."""
    return F.mse_loss(out, target) if kind == "mse" else F.l1_loss(out, target)


def psnr(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over images of 10 log10(1 / MSE) for images in [0, 1]."""
    mse = (out.detach().clamp(0, 1) - target).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return (-10.0 * torch.log10(mse)).mean()


def adam(params, lr: float, beta1: float) -> torch.optim.Adam:
    from .training import make_optimizer

    return make_optimizer(torch.optim.Adam, params, lr=lr, betas=(beta1, 0.999), fused_default=True)


def adversarial_step(disc, real, fake, rec, *, adv_weight: float, d_opt, g_params, g_opts) -> dict:
    """One D step on (real, fake), then one step of ``g_opts`` on ``rec + adv_weight *
    BCE(D(fake), 1)`` rescored by the updated D; gradients for ``g_params`` only."""
    d_real, d_fake = disc(real), disc(fake.detach())  # separate forwards: BN statistics per batch
    d_loss = 0.5 * (
        F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
        + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
    )
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    d_opt.step()
    logits = disc(fake)
    adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    g_loss = rec + adv_weight * adv
    for p, g in zip(g_params, torch.autograd.grad(g_loss, g_params)):
        p.grad = g
    for opt in g_opts:
        opt.step()
    return {"g_loss": g_loss.item(), "g_adv": adv.item(), "d_loss": d_loss.item(),
            "d_real": torch.sigmoid(d_real).mean().item(), "d_fake": torch.sigmoid(d_fake).mean().item()}
