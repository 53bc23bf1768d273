"""Image-restoration GAN (EE367 Winter 2017, Yan Wang): one SRResNet-like generator for
super-resolution, denoising and deblurring, trained with 0.9 L1 + 0.1 adversarial loss.

docs/models.md §9. The report PDF is not available: the known facts are the loss
(0.9 L1 + 0.1 adversarial), the ResNet generator and the data (CelebA, MIT Places);
everything else is [A].

* Loss [known]: G minimises ``l1_weight * ||G(y) - x||_1 + adv_weight * BCE(D(G(y)), 1)``
  (0.9 and 0.1, constructor arguments); D minimises
  ``1/2 [BCE(D(x), 1) + BCE(D(G(y)), 0)]``. BCE on D's logit, averaged over the batch.
  ``l1_reduction="sum"`` (default) takes ||.||_1 as written, the L1 norm of each image's
  error (sum over pixels and channels), averaged over the batch; the adversarial term is
  then small beside it and mainly shapes residual texture. ``"mean"`` divides by the
  number of pixels (the per-pixel mean absolute error) [A]: on 48x48 RGB crops the 0.1
  adversarial term then dominates, and in evalkit's first runs (6 epochs, Adam 1e-4) the
  training L1 error doubled as D improved and the restorations ended below the degraded
  input (SR x2: 23.8 dB against bicubic's 29.5 on natural images), so it is kept only as an option.
* G [A, SRGAN's SRResNet]: the network sees ``2 y - 1``; conv 9x9 -> ``channels`` (64) +
  PReLU; ``n_blocks`` (16) residual blocks conv3x3 - BN - PReLU - conv3x3 - BN + skip;
  conv3x3 - BN + long skip from the first conv; conv 9x9 -> C. PReLU: one slope per layer,
  init 0.25 (``nn.PReLU()``). Convolutions followed by BN have no bias.
* Output [A]: ``output="residual"`` (default) predicts a correction added to the input,
  ``G(y) = y + r(y)``, with the last conv initialised to zero so G starts exactly at the
  identity, i.e. at the degraded image (for SR: the bicubic baseline). The losses are
  computed on the unclamped output (a clamp would stop the gradient of pixels that
  overshoot); ``restore`` clamps to [0, 1].
  ``output="sigmoid"`` gives ``sigmoid(conv)`` instead.
* One architecture for every task [A]: for super-resolution G takes the bicubic-upsampled
  low-resolution image (the same size as the target), as SRCNN does, instead of a
  PixelShuffle upsampler; so ``restore(y)`` for SR takes the *low-resolution* image ``y``
  (exactly what the bicubic baseline gets) and upsamples it by ``scale`` first.
* D [A, SRGAN/DCGAN]: conv3x3 stride 1 / conv3x3 stride 2 pairs with ``d_channels``
  (64, 128, 256, 512) channels, BatchNorm on all but the first conv, LReLU 0.2; then
  global average pooling (so any image size works, instead of SRGAN's flatten) -> FC
  ``d_fc`` (1024) LReLU 0.2 -> FC 1 logit. Real and fake batches go through D separately
  (BatchNorm statistics never mixed), as in DCGAN code.
* Init: PyTorch defaults [A], except the zero-initialised last conv of a residual G.
* Per minibatch [A, SRGAN order]: degrade the clean batch, one D step on (x, G(y)), then
  one G step on the same G(y) rescored by the updated D (gradient for G's parameters only).
  ``pretrain_l1_steps`` (0: off) first trains G alone on the L1 loss for that many steps
  (SRGAN's SRResNet initialisation); D is not updated and no D loss is reported then.
* Adam lr 1e-4, beta1 0.5 [A, docs/models.md]; batch 16-64 [A] (the training config's
  ``batch_size``). Images 64x64 (CelebA) or 128x128 / 256x256 (Places) [A]; the networks
  are fully convolutional up to D's pooling, so ``image_shape`` only fixes C and checks
  that H and W are multiples of the SR scale.

Degradations (docs/models.md §9; in torch here, because reference_models never import evalkit;
the parameter names are those of ``evalkit.baselines.degradations``). The ``degradation``
constructor argument is a dict; the clean training images are degraded inside
``train_step`` with the global torch RNG, so every epoch sees fresh noise and the training
loop's checkpointed RNG state keeps a resumed run identical:

* ``{"kind": "noise", "sigma": 0.1, "clip": False}``: AWGN ``x + sigma n``, n ~ N(0, 1),
  not clipped unless ``clip`` (as ``evalkit.baselines.degradations``, so G trains on the
  inputs the benchmark gives it; the noisy input may leave [0, 1]).
* ``{"kind": "sr", "scale": 4}``: bicubic downsampling by ``scale`` with antialiasing
  (``F.interpolate(..., mode="bicubic", antialias=True)``: the a = -0.5 kernel of MATLAB
  ``imresize``; equals PIL's ``BICUBIC`` resize to float precision), clipped to [0, 1]. H and W must be multiples of ``scale``. The model
  upsamples it back the same way (bicubic, ``antialias=True`` so the same a = -0.5 kernel,
  clipped to [0, 1]) before G [A].
* ``{"kind": "blur", "size": 9, "sigma": 2.0, "noise": 0.01, "boundary": "circular",
  "clip": False}``: convolution of each channel with a normalised ``size`` x ``size``
  Gaussian kernel (MATLAB ``fspecial('gaussian')``: ``exp(-d^2 / 2 sigma^2)`` on integer
  offsets from the centre, divided by its sum; ``size`` odd), then AWGN of std ``noise``,
  not clipped unless ``clip``. ``boundary="circular"`` (default [A]: the periodic boundary
  the FFT baselines -- Wiener, ADMM-TV with psf2otf -- assume and evalkit's blur uses) or
  ``"reflect"``. A direct convolution here, evalkit's is an FFT: equal to float32 rounding.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .gasa_blocks import adversarial_step
from .training import make_optimizer

OUTPUTS = ("residual", "sigmoid")
BOUNDARIES = ("circular", "reflect")
DEGRADATION_DEFAULTS = {
    "noise": {"sigma": 0.1, "clip": False},
    "sr": {"scale": 4},
    "blur": {"size": 9, "sigma": 2.0, "noise": 0.01, "boundary": "circular", "clip": False},
}


# ----------------------------------------------------------------------------- degradations
def normalise_degradation(spec: dict) -> dict:
    """``spec`` with the kind's defaults filled in; ``ValueError`` on an unknown kind or key."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in DEGRADATION_DEFAULTS:
        raise ValueError(f"degradation kind must be one of {tuple(DEGRADATION_DEFAULTS)}, got {kind!r}")
    unknown = set(spec) - set(DEGRADATION_DEFAULTS[kind])
    if unknown:
        raise ValueError(f"degradation {kind!r} takes {sorted(DEGRADATION_DEFAULTS[kind])}, got unknown {sorted(unknown)}")
    out = {"kind": kind, **DEGRADATION_DEFAULTS[kind], **spec}
    if kind == "sr" and (int(out["scale"]) != out["scale"] or out["scale"] < 1):
        raise ValueError(f"sr degradation: scale must be a positive integer, got {out['scale']!r}")
    if kind == "blur":
        if int(out["size"]) != out["size"] or out["size"] < 1 or out["size"] % 2 == 0:
            raise ValueError(f"blur degradation: size must be a positive odd integer, got {out['size']!r}")
        if out["boundary"] not in BOUNDARIES:
            raise ValueError(f"blur degradation: boundary must be one of {BOUNDARIES}, got {out['boundary']!r}")
        if out["sigma"] <= 0:
            raise ValueError(f"blur degradation: sigma must be positive, got {out['sigma']!r}")
    if kind in ("noise", "blur"):
        if not isinstance(out["clip"], bool):
            raise ValueError(f"{kind} degradation: clip must be True or False, got {out['clip']!r}")
        key = "sigma" if kind == "noise" else "noise"
        if out[key] < 0:
            raise ValueError(f"{kind} degradation: {key} must be >= 0, got {out[key]!r}")
    return out


def gaussian_kernel(size: int, sigma: float, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised ``[size, size]`` Gaussian (MATLAB ``fspecial('gaussian', size, sigma)``)."""
    r = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, size: int, sigma: float, boundary: str = "circular") -> torch.Tensor:
    """Each channel of ``x`` [N, C, H, W] convolved with the Gaussian kernel; ``boundary``:
    ``"circular"`` (periodic) or ``"reflect"`` (mirrored without repeating the edge pixel)."""
    c = x.shape[1]
    p = size // 2
    k = gaussian_kernel(size, sigma, dtype=x.dtype, device=x.device).expand(c, 1, size, size)
    return F.conv2d(F.pad(x, (p, p, p, p), mode=boundary), k, groups=c)


def bicubic_resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bicubic resize with antialiasing (a = -0.5, PIL / MATLAB), clipped to [0, 1]."""
    return F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def _awgn(x: torch.Tensor, sigma: float, clip: bool, generator: Optional[torch.Generator]) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    n = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    y = x + sigma * n
    return y.clamp(0, 1) if clip else y


def degrade(x: torch.Tensor, spec: dict, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Apply the degradation ``spec`` (see the module docstring) to clean images ``x`` in [0, 1].

    Noise comes from ``generator`` (any device; drawn there in ``x``'s dtype, then moved to
    ``x``'s device), else the global torch RNG on ``x``'s device. For ``sr`` the result is
    the low-resolution image ``[N, C, H / scale, W / scale]``. Noisy images are not clipped
    unless ``clip`` is set, so they may leave [0, 1].
    """
    spec = normalise_degradation(spec)
    kind = spec["kind"]
    if kind == "noise":
        return _awgn(x, spec["sigma"], spec["clip"], generator)
    if kind == "sr":
        s = int(spec["scale"])
        h, w = x.shape[-2:]
        if h % s or w % s:
            raise ValueError(f"sr degradation: image size {h}x{w} is not a multiple of scale {s}")
        return bicubic_resize(x, (h // s, w // s))
    y = gaussian_blur(x, int(spec["size"]), float(spec["sigma"]), spec["boundary"])
    return _awgn(y, spec["noise"], spec["clip"], generator) if spec["noise"] > 0 else y


# ----------------------------------------------------------------------------- networks
class ResidualBlock(nn.Module):
    """conv3x3 - BN - PReLU - conv3x3 - BN, plus the input (SRResNet)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.PReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.body(h)


class Generator(nn.Module):
    """SRResNet without the upsampler: image in, image (or residual) out, same size."""

    def __init__(self, image_channels: int, channels: int, n_blocks: int, output: str):
        super().__init__()
        self.output = output
        self.head = nn.Sequential(nn.Conv2d(image_channels, channels, 9, padding=4), nn.PReLU())
        self.blocks = nn.Sequential(*[ResidualBlock(channels) for _ in range(n_blocks)])
        self.trunk_out = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.tail = nn.Conv2d(channels, image_channels, 9, padding=4)
        if output == "residual":  # start at the identity: G(y) = y
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h = self.head(2 * y - 1)
        h = h + self.trunk_out(self.blocks(h))
        out = self.tail(h)
        return y + out if self.output == "residual" else torch.sigmoid(out)


class Discriminator(nn.Module):
    """SRGAN-style conv stack (stride 1 / stride 2 pairs), global average pooling, FC -> 1 logit."""

    def __init__(self, image_channels: int, channels: Sequence[int], fc: int, slope: float):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = image_channels
        for i, c in enumerate(channels):
            for stride in (1, 2):
                first = i == 0 and stride == 1
                layers.append(nn.Conv2d(c_in, c, 3, stride=stride, padding=1, bias=first))
                if not first:
                    layers.append(nn.BatchNorm2d(c))
                layers.append(nn.LeakyReLU(slope))
                c_in = c
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Linear(c_in, fc), nn.LeakyReLU(slope), nn.Linear(fc, 1)] if fc else [nn.Linear(c_in, 1)]
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3))).squeeze(1)


# ----------------------------------------------------------------------------- the model
class RestorationGAN(nn.Module):
    registry_name = "restoration_gan"
    description = "EE367 2017 restoration GAN: SRResNet generator, 0.9 L1 + 0.1 adversarial (SR, denoising, deblurring)"

    def __init__(
        self,
        image_shape: Sequence[int] = (3, 64, 64),
        degradation: Optional[dict] = None,
        channels: int = 64,
        n_blocks: int = 16,
        output: str = "residual",
        d_channels: Sequence[int] = (64, 128, 256, 512),
        d_fc: int = 1024,
        lrelu_slope: float = 0.2,
        l1_weight: float = 0.9,
        adv_weight: float = 0.1,
        lr: float = 1e-4,
        beta1: float = 0.5,
        pretrain_l1_steps: int = 0,
        l1_reduction: str = "sum",
    ):
        super().__init__()
        degradation = normalise_degradation(degradation if degradation is not None else {"kind": "noise"})
        self.hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in locals().items() if k not in ("self", "__class__")}
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if l1_reduction not in ("sum", "mean"):
            raise ValueError(f"l1_reduction must be 'sum' or 'mean', got {l1_reduction!r}")
        if pretrain_l1_steps < 0:
            raise ValueError(f"pretrain_l1_steps must be >= 0, got {pretrain_l1_steps!r}")
        self.image_shape = tuple(image_shape)
        c, h, w = self.image_shape
        self.degradation = degradation
        if degradation["kind"] == "sr" and (h % degradation["scale"] or w % degradation["scale"]):
            raise ValueError(f"image_shape {self.image_shape}: height and width must be multiples of the sr scale {degradation['scale']}")
        self.generator = Generator(c, channels, n_blocks, output)
        self.discriminator = Discriminator(c, d_channels, d_fc, lrelu_slope)

    # --- degradation and generator input ------------------------------------------
    def degrade(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The model's degradation of clean ``x`` (for SR: the low-resolution image)."""
        return degrade(x, self.degradation, generator)

    def generator_input(self, y: torch.Tensor) -> torch.Tensor:
        """What G sees: ``y`` itself, or for SR ``y`` bicubic-upsampled by ``scale``."""
        if self.degradation["kind"] != "sr":
            return y
        s = int(self.degradation["scale"])
        return bicubic_resize(y, (y.shape[-2] * s, y.shape[-1] * s))

    # --- capabilities ------------------------------------------------------------
    @torch.no_grad()
    def restore(self, y: torch.Tensor) -> torch.Tensor:
        """Degraded ``y`` [N, C, h, w] -> restored image in [0, 1] (eval mode, on the model's device).

        ``y`` is what the benchmark's degradation gives (unclipped noise may leave [0, 1]).
        For SR ``y`` is the low-resolution image and the output is ``scale`` times larger.
        """
        was = self.training
        self.eval()
        y = y.to(next(self.parameters()).device, torch.float32)
        out = self.generator(self.generator_input(y)).clamp(0, 1)
        self.train(was)
        return out

    # --- training --------------------------------------------------------------
    def configure_optimizers(self):
        h = self.hparams
        betas = (h["beta1"], 0.999)
        return {
            "discriminator": make_optimizer(torch.optim.Adam, self.discriminator.parameters(), lr=h["lr"], betas=betas, fused_default=True),
            "generator": make_optimizer(torch.optim.Adam, self.generator.parameters(), lr=h["lr"], betas=betas, fused_default=True),
        }

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        """One minibatch of *clean* images ``x``: degrade (global RNG), D step, G step. Labels ignored."""
        h = self.hparams
        d_opt, g_opt = optimizers["discriminator"], optimizers["generator"]
        with torch.no_grad():
            y_in = self.generator_input(self.degrade(x))
        fake = self.generator(y_in)
        err = (fake - x).abs().flatten(1)
        l1 = err.sum(1).mean() if h["l1_reduction"] == "sum" else err.mean()
        out = {}
        if step < h["pretrain_l1_steps"]:
            g_opt.zero_grad(set_to_none=True)
            l1.backward()
            g_opt.step()
            g_loss = l1.item()
        else:
            # D step (real -> 1, fake -> 0), then G on l1_weight * L1 + adv_weight * BCE(D(G(y)), 1)
            # rescored by the updated D: the shared step of the GASA models
            g_params = [p for grp in g_opt.param_groups for p in grp["params"]]
            out = adversarial_step(self.discriminator, x, fake, h["l1_weight"] * l1, adv_weight=h["adv_weight"],
                                   d_opt=d_opt, g_params=g_params, g_opts=[g_opt])
            g_loss = out.pop("g_loss")
        with torch.no_grad():
            mse = (fake.detach().clamp(0, 1) - x).pow(2).flatten(1).mean(1).clamp_min(1e-10)
            psnr = (-10 * torch.log10(mse)).mean()
        return {"g_loss": g_loss, "l1": l1.item(), "psnr": psnr.item(), **out}
