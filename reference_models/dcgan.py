"""Deep convolutional GAN (Radford, Metz & Chintala 2015), with minibatch discrimination
(Salimans et al. 2016) as an option.

docs/models.md §8 ([P] the paper's guidelines, [C] ``Newmu/dcgan_code`` ``faces/train_uncond_dcgan.py``
and PyTorch ``examples/dcgan``), §7 for minibatch discrimination:

* Guidelines [P]: strided convolutions in D and fractionally strided (transposed) convolutions
  in G, no pooling; BatchNorm in G and D except G's output layer and D's input layer; no fully
  connected hidden layers; ReLU in G with a tanh output; LeakyReLU 0.2 in D.
* Standard 64x64 network [C, Theano, ngf = ndf = 128]: G: z (100) -> "project and reshape" to
  4x4x1024 -> transposed convs to 8x8x512 -> 16x16x256 -> 32x32x128 -> 64x64xC -> tanh.
  D mirrors it: C -> 128 -> 256 -> 512 -> 1024 (4x4) -> flatten -> one sigmoid output.
  The projection is a bias-free FC layer followed by BatchNorm over its 4*4*1024 units and ReLU,
  then a reshape; no layer has a bias (BatchNorm supplies the shifts) and D's first conv has
  neither bias nor BatchNorm; D's output layer is a bias-free dot product with the flattened
  4x4x1024 features [C, read for this module in a copy of ``faces/train_uncond_dcgan.py``;
  "[C, read here]" below]. BatchNorm eps is PyTorch's default [A].
* Kernels: ``kernel_size=4`` (default; PyTorch ``examples/dcgan`` [C] and the task brief) or 5
  (the Theano code [C]). Every stride-2 layer exactly halves (D) or doubles (G) the size:
  padding ``(k - 1) // 2`` and, for transposed convs, output padding ``k % 2``.
* Init [C]: weights N(0, 0.02^2); BatchNorm gains N(1, 0.02^2), shifts 0.
* Training [P/C]: images in [-1, 1] (this model maps the [0, 1] images it is given, and its
  samples back); z ~ U(-1, 1)^100 (Theano code [C]; ``noise="gaussian"``: N(0, I), the PyTorch
  example); Adam lr 2e-4, beta1 0.5 (beta2 0.999 [A: the Adam default]); L2 weight decay 1e-5
  added to the gradients, as the Theano code's regulariser [C] (``weight_decay``; 0 = the
  PyTorch example); batch 128 (the training config's ``batch_size``).
* Losses [C, read here]: D minimises BCE(D(x), 1) + BCE(D(G(z)), 0) (the sum of the two
  minibatch means); G minimises the non-saturating BCE(D(G(z)), 1) = -log D(G(z)). Real and
  generated images go through D as separate minibatches (BatchNorm statistics never mixed).
* Update order: ``updates="alternate"`` (default) follows the Theano code [C]: G and D are
  updated on successive minibatches (even steps of the training loop update G, odd steps D;
  step 0 updates G as the code's ``n_updates % (k + 1) == 0`` with k = 1 [C, read here]). Both
  losses are computed and reported every step (the code's training functions return both costs
  too [C, read here]). Fresh z every minibatch. ``updates="both"``: one D step, then one G
  step on the same G(z) rescored by the updated D, per minibatch (PyTorch ``examples/dcgan``).
  The faces run trained 25 epochs [C].

Other image sizes (a generalisation, [A]): the number of stride-2 layers ``n`` and the base size
``s0`` come from the image height: halve it while it stays even and the half is at least 4.
64 -> n = 4, s0 = 4 (the paper's network); 32 -> 3 layers from 4x4; 28 (MNIST) -> 2 layers from
7x7; 16 -> 2 layers from 4x4. G's widths are ``g_channels * 2^(n-1), ..., g_channels`` (from
the base up), D's ``d_channels, ..., d_channels * 2^(n-1)``; so for 28x28 with the defaults
G is z -> 7x7x256 -> 14x14x128 -> 28x28xC and D is C -> 128 (14x14) -> 256 (7x7) -> 1. Images
must be square. ``g_channels`` / ``d_channels`` are width multipliers (128 in the paper's code)
so tests can run tiny networks.

Minibatch discrimination (``minibatch_discrimination=True``, docs/models.md §7 [P/C]): the layer of
:mod:`reference_models.improved_gan` (B = ``md_kernels`` = 100, C = ``md_dim`` = 5, weight-normed
T with theta ~ N(0, 0.05^2), bias -1, self-pairs excluded) sits on D's flattened last conv
features, before the output layer, which then sees [f, o] (A + B inputs). Placing it there
(instead of after the global pooling of the Salimans CIFAR network) is [A]. Pairs never cross
the real and generated minibatches, which D scores separately. Its data-dependent init [C,
improved-gan] runs in ``init_from_data`` on the first ``md_init_batch`` (128 [A]: one DCGAN
minibatch) training images; 0 skips it.

Sampling: ``sample`` runs G in eval mode, so its BatchNorm layers use the running averages
(PyTorch momentum 0.1) accumulated over G's training forward passes; each sample then depends on
its own z only. The Theano code's sampler (``_gen``) reuses the training graph, whose
``batchnorm`` normalises each generated batch with its own statistics [C, read here; the
``batchnorm`` default itself is recalled]: a sample there depends on the rest of its batch.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .improved_gan import MinibatchDiscrimination
from .training import make_optimizer

NOISES = ("uniform", "gaussian")
UPDATES = ("alternate", "both")


def layer_plan(size: int) -> tuple[int, int]:
    """``(n, s0)``: the number of stride-2 layers and the base size for ``size`` x ``size`` images
    (halve ``size`` while it stays even and the half is at least 4)."""
    n, s = 0, int(size)
    while s % 2 == 0 and s // 2 >= 4:
        s //= 2
        n += 1
    if n == 0:
        raise ValueError(f"image size {size} cannot be halved to a base of at least 4: DCGAN needs an even size >= 8")
    return n, s


def stride2_padding(kernel_size: int) -> tuple[int, int]:
    """(padding, output_padding) that make a stride-2 conv halve and a transposed conv double an even size."""
    return (kernel_size - 1) // 2, kernel_size % 2


def dcgan_init_(module: nn.Module, std: float = 0.02) -> None:
    """Conv / transposed conv / linear weights N(0, std^2), BatchNorm gains N(1, std^2), shifts and biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- networks
class Generator(nn.Module):
    """z -> bias-free FC to ``widths[0]`` x s0 x s0 (BatchNorm over its units, ReLU) -> transposed
    convs (BatchNorm, ReLU) through ``widths[1:]`` -> transposed conv to C -> tanh (in [-1, 1])."""

    def __init__(self, z_dim: int, image_channels: int, widths: Sequence[int], base: int, kernel_size: int):
        super().__init__()
        self.base = base
        units = widths[0] * base * base
        self.project = nn.Linear(z_dim, units, bias=False)
        self.project_bn = nn.BatchNorm1d(units)
        pad, out_pad = stride2_padding(kernel_size)
        chans = [*widths, image_channels]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
            layers.append(nn.ConvTranspose2d(a, b, kernel_size, 2, pad, output_padding=out_pad, bias=False))
            if i < len(chans) - 2:  # no BatchNorm on the output layer
                layers += [nn.BatchNorm2d(b), nn.ReLU()]
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.project_bn(self.project(z)))
        return torch.tanh(self.deconvs(h.view(z.shape[0], -1, self.base, self.base)))


class Discriminator(nn.Module):
    """Strided convs through ``widths`` (BatchNorm on all but the first, LeakyReLU), flatten,
    optional minibatch discrimination, bias-free linear output -> one logit per image."""

    def __init__(self, image_channels: int, widths: Sequence[int], base: int, kernel_size: int, slope: float,
                 md: Optional[tuple[int, int, float]]):
        super().__init__()
        pad, _ = stride2_padding(kernel_size)
        layers: list[nn.Module] = []
        c = image_channels
        for i, w in enumerate(widths):
            layers.append(nn.Conv2d(c, w, kernel_size, 2, pad, bias=False))
            if i > 0:  # no BatchNorm on the input layer
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.LeakyReLU(slope))
            c = w
        self.convs = nn.Sequential(*layers)
        features = c * base * base
        self.md = MinibatchDiscrimination(features, *md) if md else None
        self.out = nn.Linear(features + (md[0] if md else 0), 1, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened last conv features ``[N, A]`` (``x`` in [-1, 1])."""
        return self.convs(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if self.md is not None:
            f = self.md(f)  # pairs within this minibatch only
        return self.out(f).squeeze(1)


# ----------------------------------------------------------------------------- the model
class DCGAN(nn.Module):
    registry_name = "dcgan"
    description = "Radford et al. 2015 DCGAN (strided-conv G and D with BatchNorm; minibatch discrimination optional)"

    def __init__(
        self,
        image_shape: Sequence[int] = (3, 64, 64),
        z_dim: int = 100,
        g_channels: int = 128,
        d_channels: int = 128,
        kernel_size: int = 4,
        lrelu_slope: float = 0.2,
        noise: str = "uniform",
        init_std: float = 0.02,
        minibatch_discrimination: bool = False,
        md_kernels: int = 100,
        md_dim: int = 5,
        md_theta_std: float = 0.05,
        md_init_batch: int = 128,
        updates: str = "alternate",
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        weight_decay: float = 1e-5,
    ):
        super().__init__()
        self.hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in locals().items() if k not in ("self", "__class__")}
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
        if updates not in UPDATES:
            raise ValueError(f"updates must be one of {UPDATES}, got {updates!r}")
        if kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2, got {kernel_size!r}")
        self.image_shape = tuple(int(s) for s in image_shape)
        c, h, w = self.image_shape
        if h != w:
            raise ValueError(f"DCGAN needs square images, got image_shape {self.image_shape}")
        n, base = layer_plan(h)
        self.n_layers, self.base = n, base
        self.z_dim, self.noise_kind = z_dim, noise
        g_widths = [g_channels * 2 ** (n - 1 - i) for i in range(n)]  # from the base up: 8g, 4g, 2g, g at 64x64
        d_widths = [d_channels * 2**i for i in range(n)]  # d, 2d, 4d, 8d at 64x64
        md = (md_kernels, md_dim, md_theta_std) if minibatch_discrimination else None
        self.generator = Generator(z_dim, c, g_widths, base, kernel_size)
        self.discriminator = Discriminator(c, d_widths, base, kernel_size, lrelu_slope, md)
        dcgan_init_(self.generator, init_std)
        dcgan_init_(self.discriminator, init_std)  # minibatch discrimination keeps its own init

    # --- model -----------------------------------------------------------------
    def noise(self, n: int, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """z: U(-1, 1)^z_dim (``noise="uniform"``) or N(0, I)."""
        if self.noise_kind == "uniform":
            return 2 * torch.rand(n, self.z_dim, device=device, generator=generator) - 1
        return torch.randn(n, self.z_dim, device=device, generator=generator)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """G(z) as images in [0, 1] (current mode, keeps the graph)."""
        return (self.generator(z) + 1) / 2

    def discriminator_logits(self, x: torch.Tensor) -> torch.Tensor:
        """D's logit for each image of ``x`` (in [0, 1]), as one minibatch (current mode)."""
        return self.discriminator(2 * x - 1)

    def _device(self):
        return next(self.parameters()).device

    # --- capabilities ------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` samples ``[n, C, H, W]`` in [0, 1]; G in eval mode (BatchNorm running averages).
        ``generator`` must live on the model's device."""
        was = self.generator.training
        self.generator.eval()
        try:
            return self.generate(self.noise(n, self._device(), generator))
        finally:
            self.generator.train(was)

    # --- training --------------------------------------------------------------
    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Data-dependent init of the minibatch-discrimination layer on the first ``md_init_batch`` images."""
        d, k = self.discriminator, self.hparams["md_init_batch"]
        if d.md is None or not k:
            return
        x = x[:k].to(self._device())
        if x.shape[0] < 2:
            raise ValueError("minibatch discrimination's data-dependent init needs at least 2 images")
        was = d.training
        d.train()
        d.md.init_(d.features(2 * x - 1))
        d.train(was)

    def configure_optimizers(self):
        h = self.hparams
        kw = dict(lr=h["lr"], betas=(h["beta1"], h["beta2"]), weight_decay=h["weight_decay"])
        return {
            "discriminator": make_optimizer(torch.optim.Adam, self.discriminator.parameters(), **kw),
            "generator": make_optimizer(torch.optim.Adam, self.generator.parameters(), **kw),
        }

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        """One minibatch (labels ignored): a G or a D step (``alternate``, by the parity of ``step``)
        or a D step then a G step (``both``)."""
        d_opt, g_opt = optimizers["discriminator"], optimizers["generator"]
        real = 2 * x - 1
        z = self.noise(x.shape[0], x.device)
        g_params = [p for grp in g_opt.param_groups for p in grp["params"]]
        mode = self.hparams["updates"]
        if mode == "alternate" and step % 2 == 0:  # G step
            fake = self.generator(z)
            with torch.no_grad():
                d_real = self.discriminator(real)
            d_fake = self.discriminator(fake)
            g_loss = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
            for p, g in zip(g_params, torch.autograd.grad(g_loss, g_params)):
                p.grad = g
            g_opt.step()
            d_fake = d_fake.detach()
            d_loss = self._d_loss(d_real, d_fake)
        else:  # D step
            with torch.no_grad() if mode == "alternate" else torch.enable_grad():
                fake = self.generator(z)
            d_real = self.discriminator(real)
            d_fake = self.discriminator(fake.detach())
            d_loss = self._d_loss(d_real, d_fake)
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            if mode == "alternate":
                g_loss = F.binary_cross_entropy_with_logits(d_fake.detach(), torch.ones_like(d_fake))
            else:  # G step: the same G(z) rescored by the updated D; gradient for G's parameters only
                logits = self.discriminator(fake)
                g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
                for p, g in zip(g_params, torch.autograd.grad(g_loss, g_params)):
                    p.grad = g
                g_opt.step()
        with torch.no_grad():
            stats = torch.stack([d_loss, g_loss, torch.sigmoid(d_real).mean(), torch.sigmoid(d_fake).mean()]).tolist()
        return dict(zip(("d_loss", "g_loss", "d_real", "d_fake"), stats))

    @staticmethod
    def _d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        """BCE(D(x), 1) + BCE(D(G(z)), 0), each averaged over its minibatch."""
        return F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy_with_logits(
            d_fake, torch.zeros_like(d_fake)
        )
