"""Improved techniques for training GANs (Salimans et al. 2016): the semi-supervised MNIST
model (permutation-invariant), with feature matching and, as an option, minibatch
discrimination.

docs/models.md §7, read in the authors' code [C] (openai/improved-gan,
``train_mnist_feature_matching.py`` and ``nn.py``):

* G: z ~ U(0, 1)^100 -> FC 500 -> BN -> softplus -> FC 500 -> BN -> softplus -> FC D
  sigmoid. The hidden FCs have no bias and Glorot-uniform weights; their BatchNorm has a
  learned bias and no gain (``g=None``). The output FC is weight-normalised with a
  trainable scale (``l2normalize``). In the code BN normalises before the softplus (the
  paper's "FC500 softplus + BN" lists the same pieces).
* D: x + N(0, 0.3^2) -> 1000 -> +N(0, 0.5^2) -> 500 -> noise -> 250 -> noise -> 250 ->
  noise -> 250 -> noise -> 10 (linear). Every layer is a weight-normalised dense layer
  ``W = theta * scale / ||theta||`` (per unit), theta ~ N(0, 0.1^2), bias 0, ReLU; the
  hidden scales are fixed after the data-dependent init, the output scale is trained.
* Data-dependent init [C]: one pass over 500 training images (noise on) sets each
  layer's scale and bias so its pre-activations have zero mean and unit std on them
  (``init_from_data`` uses the first ``init_batch`` images it is given).
* K + 1 classes with l_{K+1} fixed to 0, so D(x) = Z / (Z + 1), Z = sum_k exp l_k:
  L_lab = -l_y + lse(l); L_unl = -1/2 E_data[lse] + 1/2 E_data[softplus(lse)]
  + 1/2 E_G[softplus(lse)]; D minimises L_lab + ``unlabeled_weight`` * L_unl (weight 1).
* Feature matching (default): G minimises mean_k (mean_batch f(x_unl) - mean_batch
  f(G(z)))_k^2, f = the last 250-unit hidden layer's output (``layers[-3]``).
* Adam lr 0.003, beta1 0.5, beta2 0.999, batch 100 (labelled, unlabelled and generated);
  one D step then one G step per minibatch; no lr decay. The code's Adam adds its 1e-8
  *inside* the square root, close to PyTorch's eps = 1e-4 outside it (``adam_eps``).
* Test-time classifier: Polyak averages a <- a + 1e-4 (p - a) of D's trainable
  parameters after each D step (``ema_rate``; 0 = use the live parameters).

Choices of this re-implementation:

* The labelled minibatch comes from the labelled pool (``self._pool``, class-balanced,
  a fresh permutation per pass as the code does); the unlabelled minibatch is the ``x``
  handed to ``train_step`` (all training images, labelled ones included, as in the code).
  The G step reuses that ``x`` for f(x_unl), where the code draws a second, independent
  permutation of the unlabelled set [A].
* The code starts the averages at zero. ``ema_debias=True`` (default) divides by
  1 - (1 - rate)^t, as Adam does its moments, which is the same average once
  t >> 1 / rate (the paper's 180K steps: a relative difference of e^-18) but does not
  shrink the test-time biases toward zero in runs of a few thousand steps. ``False``
  reproduces the code's zero-started average exactly.
* ``sample`` runs G in eval mode (BatchNorm running averages); the code always used
  batch statistics.

Minibatch discrimination (``minibatch_discrimination=True``; §3.2, ``nn.MinibatchLayer``
[C]): the 250 features entering the output layer (after their noise) pass through
M_i = f(x_i) T, T = theta exp(log_scale) / ||theta|| (theta ~ N(0, 0.05^2) of shape
A x B x C, B = 100 kernels, C = 5, log-scale 0), o(x_i)_b = sum_{j != i}
exp(-||M_{i,b} - M_{j,b}||_1) + bias_b (bias -1; self-pairs excluded); [f, o] goes to the
output layer. Its data-dependent init rescales the kernels by half the mean
nearest-neighbour distance and sets bias = -mean o [C]. The labelled, unlabelled and
generated minibatches are separate minibatches for it (the code calls D on each), and
``predict_logits`` scores ``batch_size`` images at a time (the code's test batches).
Without feature matching G minimises ``g_loss``: "minimax" = -softplus(lse(l_G)) =
log(1 - D(G(z))) (the MD scripts' loss) or "nonsaturating" = softplus(-lse(l_G)) =
-log D(G(z)).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import LabelledPool
from .training import make_optimizer

G_LOSSES = ("minimax", "nonsaturating")


def semi_supervised_losses(l_lab, y_lab, l_unl, l_fake) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_lab, L_unl) of §5 from the K class logits (l_{K+1} = 0) of labelled, unlabelled and generated images."""
    loss_lab = (torch.logsumexp(l_lab, 1) - l_lab.gather(1, y_lab[:, None]).squeeze(1)).mean()
    lse_unl, lse_fake = torch.logsumexp(l_unl, 1), torch.logsumexp(l_fake, 1)
    loss_unl = -0.5 * lse_unl.mean() + 0.5 * F.softplus(lse_unl).mean() + 0.5 * F.softplus(lse_fake).mean()
    return loss_lab, loss_unl


class WNLinear(nn.Module):
    """Weight-normalised dense layer (``nn.DenseLayer`` of the authors' code):
    ``y = x (theta * scale / ||theta||)^T + bias``, one norm per output unit.

    ``theta_std=None`` draws theta Glorot-uniform (lasagne's default), else N(0, theta_std^2).
    The scale is a parameter when ``train_scale``, else a buffer (set only by :meth:`init_`).
    """

    def __init__(self, in_features: int, out_features: int, *, train_scale: bool, theta_std: Optional[float] = None):
        super().__init__()
        theta = torch.empty(out_features, in_features)
        if theta_std is None:
            nn.init.xavier_uniform_(theta)
        else:
            nn.init.normal_(theta, 0.0, theta_std)
        self.theta = nn.Parameter(theta)
        scale = torch.ones(out_features)
        if train_scale:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def weight(self) -> torch.Tensor:
        return self.theta * (self.scale / self.theta.norm(dim=1)).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)

    @torch.no_grad()
    def init_(self, x: torch.Tensor) -> torch.Tensor:
        """Data-dependent init on ``x``: scale and bias give zero-mean, unit-std pre-activations; returns them."""
        a = F.linear(x, self.weight())
        m = a.mean(0)
        s = (a - m).pow(2).mean(0).sqrt().clamp_min(1e-12)
        self.scale.div_(s)
        self.bias.copy_(-m / s)
        return (a - m) / s


class MinibatchDiscrimination(nn.Module):
    """``nn.MinibatchLayer``: appends o(x_i)_b = sum_{j != i} exp(-||M_{i,b} - M_{j,b}||_1) + bias_b to x."""

    def __init__(self, in_features: int, kernels: int = 100, dim: int = 5, theta_std: float = 0.05):
        super().__init__()
        self.kernels, self.dim = kernels, dim
        self.theta = nn.Parameter(torch.randn(in_features, kernels, dim) * theta_std)
        self.log_scale = nn.Parameter(torch.zeros(kernels, dim))
        self.bias = nn.Parameter(torch.full((kernels,), -1.0))

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, N] L1 distances between the rows' kernel projections; +inf on the diagonal (self-pairs)."""
        w = self.theta * (self.log_scale.exp() / self.theta.norm(dim=0))
        m = (x @ w.flatten(1)).view(x.shape[0], self.kernels, self.dim).transpose(0, 1)  # [B, N, C]
        d = torch.cdist(m, m, p=1)
        eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        return d.masked_fill(eye, math.inf)

    def forward(self, x: torch.Tensor, groups: Optional[Sequence[int]] = None) -> torch.Tensor:
        """``groups``: sizes of the separate minibatches stacked in ``x`` (pairs never cross them)."""
        parts = x.split(list(groups)) if groups else (x,)
        o = torch.cat([torch.exp(-self.distances(p)).sum(2).t() for p in parts])
        return torch.cat([x, o + self.bias], 1)

    @torch.no_grad()
    def init_(self, x: torch.Tensor) -> torch.Tensor:
        d = self.distances(x)
        mmad = 0.5 * d.amin(2).mean(1)  # [B]: half the mean distance to the nearest other row
        self.log_scale.sub_(torch.log(mmad).unsqueeze(1))
        o = torch.exp(-d / mmad[:, None, None]).sum(2).t()
        mean = o.mean(0)
        self.bias.copy_(-mean)
        return torch.cat([x, o - mean], 1)


class _BiasOnlyBatchNorm(nn.Module):
    """BatchNorm with a learned bias and no gain (``nn.batch_norm(..., g=None)``; eps 1e-6 as the code)."""

    def __init__(self, features: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(features, eps=1e-6, affine=False)
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x) + self.bias


class Discriminator(nn.Module):
    """D/C: Gaussian noise, weight-normalised ReLU layers with noise after each, optional MD, K logits."""

    def __init__(self, in_features, hidden, n_classes, input_noise, hidden_noise, theta_std, md: Optional[tuple[int, int, float]]):
        super().__init__()
        self.input_noise, self.hidden_noise = input_noise, hidden_noise
        sizes = [in_features, *hidden]
        self.hidden = nn.ModuleList(WNLinear(a, b, train_scale=False, theta_std=theta_std) for a, b in zip(sizes[:-1], sizes[1:]))
        self.md = MinibatchDiscrimination(sizes[-1], *md) if md else None
        self.out = WNLinear(sizes[-1] + (md[0] if md else 0), n_classes, train_scale=True, theta_std=theta_std)

    def _noise(self, h: torch.Tensor, std: float) -> torch.Tensor:
        return h + std * torch.randn_like(h) if self.training and std > 0 else h

    def forward(self, x, groups=None, *, features_only: bool = False, init: bool = False):
        """(K logits, f) where f is the last hidden layer's output before its noise; logits None when ``features_only``."""
        h = self._noise(x.flatten(1), self.input_noise)
        for layer in self.hidden:
            f = F.relu(layer.init_(h) if init else layer(h))
            h = self._noise(f, self.hidden_noise)
        if features_only:
            return None, f
        if self.md is not None:
            h = self.md.init_(h) if init else self.md(h, groups)
        return (self.out.init_(h) if init else self.out(h)), f


class ImprovedGAN(nn.Module):
    registry_name = "improved_gan"
    description = "Salimans et al. 2016 semi-supervised GAN (K+1 classes, feature matching; minibatch discrimination optional)"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        n_classes: int = 10,
        z_dim: int = 100,
        g_hidden: Sequence[int] = (500, 500),
        d_hidden: Sequence[int] = (1000, 500, 250, 250, 250),
        input_noise: float = 0.3,
        hidden_noise: float = 0.5,
        theta_std: float = 0.1,
        feature_matching: bool = True,
        minibatch_discrimination: bool = False,
        md_kernels: int = 100,
        md_dim: int = 5,
        md_theta_std: float = 0.05,
        g_loss: str = "minimax",
        unlabeled_weight: float = 1.0,
        lr: float = 0.003,
        beta1: float = 0.5,
        adam_eps: float = 1e-4,
        batch_size: int = 100,
        init_batch: int = 500,
        ema_rate: float = 1e-4,
        ema_debias: bool = True,
    ):
        super().__init__()
        self.hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in locals().items() if k not in ("self", "__class__")}
        if g_loss not in G_LOSSES:
            raise ValueError(f"g_loss must be one of {G_LOSSES}, got {g_loss!r}")
        if not 0.0 <= ema_rate <= 1.0:
            raise ValueError(f"ema_rate must be in [0, 1], got {ema_rate}")
        self.image_shape = tuple(image_shape)
        dim = math.prod(self.image_shape)
        self.n_classes, self.z_dim = n_classes, z_dim
        g_layers: list[nn.Module] = []
        for a, b in zip([z_dim, *g_hidden[:-1]], g_hidden):
            lin = nn.Linear(a, b, bias=False)
            nn.init.xavier_uniform_(lin.weight)
            g_layers += [lin, _BiasOnlyBatchNorm(b), nn.Softplus()]
        g_layers += [WNLinear(g_hidden[-1], dim, train_scale=True), nn.Sigmoid()]
        self.generator = nn.Sequential(*g_layers)
        md = (md_kernels, md_dim, md_theta_std) if minibatch_discrimination else None
        self.discriminator = Discriminator(dim, d_hidden, n_classes, input_noise, hidden_noise, theta_std, md)
        if ema_rate > 0:
            # Test-time (Polyak) copy of D: parameters averaged (zero start, as the code),
            # buffers (the fixed hidden scales) copied. Kept in the state dict.
            self.discriminator_ema = Discriminator(dim, d_hidden, n_classes, input_noise, hidden_noise, theta_std, md)
            for p in self.discriminator_ema.parameters():
                p.requires_grad_(False)
                p.zero_()
            self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        self._pool: Optional[LabelledPool] = None

    # --- model -----------------------------------------------------------------
    def noise(self, n: int, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """z ~ U(0, 1)^z_dim."""
        return torch.rand(n, self.z_dim, device=device, generator=generator)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z).view(z.shape[0], *self.image_shape)

    def _device(self):
        return next(self.parameters()).device

    # --- capabilities ------------------------------------------------------------
    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The K class logits (no noise), from the averaged D when ``ema_rate`` > 0 and a step was taken."""
        use_ema = self.hparams["ema_rate"] > 0 and int(self.ema_steps) > 0
        d = self.discriminator_ema if use_ema else self.discriminator
        was = d.training
        d.eval()
        x = x.to(self._device())
        chunk = self.hparams["batch_size"] if d.md is not None else max(x.shape[0], 1)
        out = torch.cat([d(part)[0] for part in x.split(chunk)])
        d.train(was)
        return out

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` samples ``[n, C, H, W]`` in [0, 1] (G in eval mode). ``generator`` must live on the model's device."""
        was = self.generator.training
        self.generator.eval()
        out = self.generate(self.noise(n, self._device(), generator))
        self.generator.train(was)
        return out

    # --- training --------------------------------------------------------------
    def on_fit_start(self, x_all: torch.Tensor, y_all: Optional[torch.Tensor]) -> None:
        self._pool = LabelledPool(x_all, y_all)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Data-dependent init of D's weight-normalised layers on the first ``init_batch`` images (noise on, as the code)."""
        d = self.discriminator
        was = d.training
        d.train()
        d(x[: self.hparams["init_batch"]].to(self._device()), init=True)
        d.train(was)

    def configure_optimizers(self):
        h = self.hparams
        kw = dict(lr=h["lr"], betas=(h["beta1"], 0.999), eps=h["adam_eps"], fused_default=True)
        return {
            "discriminator": make_optimizer(torch.optim.Adam, self.discriminator.parameters(), **kw),
            "generator": make_optimizer(torch.optim.Adam, self.generator.parameters(), **kw),
        }

    @torch.no_grad()
    def _update_ema(self) -> None:
        h = self.hparams
        self.ema_steps += 1
        rate = h["ema_rate"]
        if h["ema_debias"]:  # the zero-started average divided by 1 - (1 - rate)^t, kept in debiased form
            rate = rate / -math.expm1(int(self.ema_steps) * math.log1p(-rate)) if rate < 1 else 1.0
        live, ema = self.discriminator, self.discriminator_ema
        torch._foreach_lerp_(list(ema.parameters()), list(live.parameters()), rate)
        for b_ema, b in zip(ema.buffers(), live.buffers()):
            b_ema.copy_(b)

    def generator_loss(self, x_unl: torch.Tensor, n: int) -> torch.Tensor:
        h, d = self.hparams, self.discriminator
        fake = self.generate(self.noise(n, x_unl.device))
        if h["feature_matching"]:
            with torch.no_grad():
                f_real = d(x_unl, features_only=True)[1].mean(0)
            f_fake = d(fake, features_only=True)[1].mean(0)
            return (f_real - f_fake).pow(2).mean()
        lse = torch.logsumexp(d(fake)[0], 1)
        return -F.softplus(lse).mean() if h["g_loss"] == "minimax" else F.softplus(-lse).mean()

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        if self._pool is None:
            raise RuntimeError("ImprovedGAN.train_step needs the labelled pool: call on_fit_start(x_all, y_all) first (fit does)")
        h = self.hparams
        d_opt, g_opt = optimizers["discriminator"], optimizers["generator"]
        n = h["batch_size"]
        x_lab, y_lab = self._pool.batch(n)
        x_unl = x.flatten(1)
        with torch.no_grad():
            fake = self.generate(self.noise(n, x.device)).flatten(1)
        # D step: one forward over [labelled; unlabelled; generated] (no BatchNorm in D; MD sees three minibatches)
        groups = [x_lab.shape[0], x_unl.shape[0], n]
        logits, _ = self.discriminator(torch.cat([x_lab.flatten(1), x_unl, fake]), groups)
        l_lab, l_unl, l_fake = logits.split(groups)
        loss_lab, loss_unl = semi_supervised_losses(l_lab, y_lab, l_unl, l_fake)
        d_loss = loss_lab + h["unlabeled_weight"] * loss_unl
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        if h["ema_rate"] > 0:
            self._update_ema()
        # G step with the updated D; gradient for G's parameters only
        g_loss = self.generator_loss(x_unl, n)
        g_params = [p for grp in g_opt.param_groups for p in grp["params"]]
        for p, g in zip(g_params, torch.autograd.grad(g_loss, g_params)):
            p.grad = g
        g_opt.step()
        with torch.no_grad():
            err = (l_lab.argmax(1) != y_lab).float().mean()
        return {"loss_lab": loss_lab.item(), "loss_unl": loss_unl.item(), "g_loss": g_loss.item(), "train_err": err.item()}
