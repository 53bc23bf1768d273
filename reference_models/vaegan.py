"""VAE/GAN (Larsen, Sønderby, Larochelle & Winther, ICML 2016, "Autoencoding beyond pixels using a
learned similarity metric"): a VAE whose reconstruction error is measured in a layer of a GAN
discriminator, trained jointly with that GAN.

docs/models.md §4 and §12 ([C] ``andersbll/autoencoding_beyond_pixels``: ``architectures.py:img64x64``,
``model/aegan.py``, ``model/ae.py``, ``aegan.py``, ``celeba_aegan.py``; those files were also
read for this module, and facts found only there are tagged [C, read here]):

* All convolutions 5x5 with "same" padding; BatchNorm momentum 0.9 in the code's convention
  (PyTorch ``bn_momentum`` 0.1), eps 1e-6; weight decay 1e-5 [C]. The code gives those two
  values to its spatial BatchNorm only; using them for the BatchNorm after FC layers too is [A].
* Encoder [C]: conv64 s2 - BN - ReLU -> conv128 s2 - BN - ReLU -> conv256 s2 - BN - ReLU ->
  FC 1024 - BN - ReLU -> (mu, log sigma^2), 128-d each. ``enc_fc`` = 1024 follows the code;
  the paper's table lists FC 2048 [R] (docs/models.md §12): pass ``enc_fc=2048`` for it.
* Decoder [C]: FC 8*8*256 - BN - ReLU -> deconv256 s2 -> deconv128 s2 -> deconv32 s2 (each
  BN - ReLU) -> conv C (stride 1) -> tanh.
* Discriminator [C]: conv32 (stride 1) - ReLU -> conv128 s2 - BN - ReLU -> conv256 s2 - BN -
  ReLU -> conv256 s2 - BN - ReLU -> FC 512 - BN - ReLU -> FC 1 sigmoid.
  Convolutions and FC layers followed by BatchNorm have no bias; D's first conv, D's output,
  the decoder's last conv and the mu / log sigma^2 heads have one [C, read here].
* Layer l [C ``recon_depth=9``]: the output of D's 4th conv (256 x 8 x 8) *before* its
  BatchNorm. ``llike_layer`` = k (1-based, default 4) takes the output of D's k-th conv
  before its BatchNorm (k = 1: before its ReLU).
* Losses [C], all summed over the minibatch as the code does (reported per image):
  - L_prior = KL(N(mu, sigma^2) || N(0, I)), summed over z.
  - L_llike = 1/2 ||D_l(x~) - D_l(x)||^2 summed over the layer's units (Gaussian NLL, sigma = 1,
    up to a constant), x~ = Dec(z), z ~ q(z|x) reparameterised. D_l sees [x~; x] as one
    minibatch (shared BatchNorm statistics) and D_l(x) is a constant target [C, read here].
  - L_GAN = log D(x) + log(1 - D(x_gen)), with x_gen = Dec(z_p), z_p ~ N(0, I): D sees
    [x; x_gen] as one minibatch [C, read here]; the code's probabilities carry eps = 1e-3
    inside the logs (``log_eps``) [C, read here]. D minimises
    ``real_weight`` * sum -log(D(x) + eps) + (1 - ``real_weight``) * (B / G) * sum -log(1 - D(x_gen) + eps)
    (B real, G generated images; real_weight 0.5 [C]).
  - ``gan_on_reconstructions``: the paper's L_GAN also scores Dec(Enc(x)) [P]; the CelebA
    script does not (``discriminate_ae_recon=False``) [C] (docs/models.md §12). False (default)
    follows the script; True decodes [z; z_p] again (z without gradient to the encoder) as
    x_gen, so G = 2B, as the code does with both flags on [C, read here].
* Updates [C]: encoder <- grad(L_prior + L_llike) (no GAN gradient reaches it); decoder <-
  grad(gamma * L_llike + (1 - gamma) * L_GAN_dec), L_GAN_dec = sum log(1 - D(x_gen) + eps),
  the saturating form the code uses (``dec_gan_loss="nonsaturating"``: sum -log(D(x_gen) + eps)
  [A, an option]); D <- grad of its loss above (L_llike never trains D). gamma = 1e-6 for CelebA
  (``recon_vs_gan_weight``; the code's library default is 5e-5). The paper's Alg. 1 writes the
  decoder's objective as gamma L_llike - L_GAN, without the (1 - gamma) factor: the same at
  gamma = 1e-6. All gradients are taken at the current parameters, then the steps (one forward
  per minibatch, as the code).
* Balancing (the authors' code only, not in the paper [C]): with real_cost = mean -log(D(x) + eps)
  and fake_cost = mean -log(1 - D(x_gen) + eps) of the current minibatch (before any update),
  skip D's update if either is below ``equilibrium - margin`` (0.68 - 0.35; D too good), skip
  the decoder's update if either is above ``equilibrium + margin`` (D too bad); if both would be
  skipped, update both. The encoder is always updated. ``balance=False`` always updates all.
* Optimiser [C]: RMSProp (decay 0.9, eps 1e-8 outside the square root, as PyTorch's
  ``RMSprop(alpha=0.9)``), weight decay 1e-5 on the conv / FC weights except the mu and
  log sigma^2 heads, added to the gradient [C, read here; the additive form is A]. Learning rate
  [C ``aegan.py``]: the code's ``GammaAnnealer(0.025, 1e-5, 250 epochs, gamma 0.75)`` divided
  by the batch size 64: lr(t) = lr - (t / E)^0.75 (lr - lr_final), t the code's epoch of
  ``lr_epoch_steps`` = 250 minibatches (the CelebA script's ``epoch_size``), E =
  ``lr_anneal_epochs`` = 250, lr = 0.025 / 64 ~ 3.9e-4 and lr_final = 1e-5 / 64 [C]; held at
  lr_final after E epochs [A]. The schedule depends only on the step counter, so it is the
  same for any data set size. The paper states lr 3e-4 [R]; ``lr_anneal_epochs=0`` keeps lr
  constant. Batch 64 (the training config's ``batch_size``), 250 x 250 minibatches [C].
* Init: PyTorch defaults [A] (the code uses deeppy's ``AutoFiller``).
* Data [C]: images in [-1, 1] for the networks; this model maps the [0, 1] images it is given
  and its outputs back. The CelebA crop / blur / augmentation is the data set's business.

Other image sizes: the channel lists are arguments; the decoder starts from
H / 2^len(dec_channels), the encoder and D must halve H and W that many times exactly (D's
first conv has stride 1). The code's 32x32 network [C, read here] is enc (64, 128, 256),
dec_channels (192, 128, 32) from 4x4, dis_channels (32, 128, 192, 256).

Capabilities: ``encode`` (posterior mean, eval mode), ``encode_dist`` (mu, log sigma^2),
``decode`` (images in [0, 1], eval mode, keeps the graph), ``reconstruct``, ``sample``
(z ~ N(0, I) -> decoder). Eval mode means BatchNorm running averages, as the code's test phase.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .blocks import evaluating
from .vae import gaussian_kl

DEC_GAN_LOSSES = ("saturating", "nonsaturating")


def _halved(size: int, times: int, what: str) -> int:
    if size % 2**times:
        raise ValueError(f"{what}: image size {size} is not divisible by 2^{times} (one halving per stride-2 layer)")
    return size // 2**times


# ----------------------------------------------------------------------------- networks
class Encoder(nn.Module):
    """Convs (stride 2, BN, ReLU) -> FC (BN, ReLU) -> (mu, log sigma^2)."""

    def __init__(self, c: int, hw: tuple[int, int], channels: Sequence[int], fc: int, z_dim: int, k: int, bn: dict):
        super().__init__()
        layers: list[nn.Module] = []
        for w in channels:
            layers += [nn.Conv2d(c, w, k, 2, k // 2, bias=False), nn.BatchNorm2d(w, **bn), nn.ReLU()]
            c = w
        h, w_ = (_halved(s, len(channels), "encoder") for s in hw)
        layers += [nn.Flatten(), nn.Linear(c * h * w_, fc, bias=False), nn.BatchNorm1d(fc, **bn), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.mu = nn.Linear(fc, z_dim)
        self.logvar = nn.Linear(fc, z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    """FC to channels[0] x base (BN, ReLU) -> transposed convs (stride 2, BN, ReLU) -> conv to C -> tanh."""

    def __init__(self, c: int, hw: tuple[int, int], channels: Sequence[int], z_dim: int, k: int, bn: dict):
        super().__init__()
        self.base = tuple(_halved(s, len(channels), "decoder") for s in hw)
        c0 = channels[0]
        self.fc = nn.Sequential(nn.Linear(z_dim, c0 * self.base[0] * self.base[1], bias=False),
                                nn.BatchNorm1d(c0 * self.base[0] * self.base[1], **bn), nn.ReLU())
        layers: list[nn.Module] = []
        cin = c0
        for w in channels:
            layers += [nn.ConvTranspose2d(cin, w, k, 2, k // 2, output_padding=1, bias=False), nn.BatchNorm2d(w, **bn), nn.ReLU()]
            cin = w
        layers.append(nn.Conv2d(cin, c, k, 1, k // 2))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], -1, *self.base)
        return torch.tanh(self.body(h))


class Discriminator(nn.Module):
    """conv (stride 1) - ReLU, then convs (stride 2) - BN - ReLU, FC - BN - ReLU, FC -> logit."""

    def __init__(self, c: int, hw: tuple[int, int], channels: Sequence[int], fc: int, k: int, bn: dict):
        super().__init__()
        self.convs, self.post = nn.ModuleList(), nn.ModuleList()
        for i, w in enumerate(channels):
            first = i == 0
            self.convs.append(nn.Conv2d(c, w, k, 1 if first else 2, k // 2, bias=first))
            self.post.append(nn.ReLU() if first else nn.Sequential(nn.BatchNorm2d(w, **bn), nn.ReLU()))
            c = w
        h, w_ = (_halved(s, len(channels) - 1, "discriminator") for s in hw)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w_, fc, bias=False), nn.BatchNorm1d(fc, **bn), nn.ReLU(),
                                  nn.Linear(fc, 1))

    def forward(self, x: torch.Tensor, *, layer: Optional[int] = None) -> torch.Tensor:
        """The logit of each image ``[N]``; with ``layer=k``: the k-th conv's output before its
        BatchNorm / ReLU, flattened ``[N, units]`` (the rest of D is not run)."""
        h = x
        for i, (conv, post) in enumerate(zip(self.convs, self.post), 1):
            h = conv(h)
            if i == layer:
                return h.flatten(1)
            h = post(h)
        return self.head(h).squeeze(1)


# ----------------------------------------------------------------------------- the model
class VAEGAN(nn.Module):
    registry_name = "vaegan"
    description = "Larsen et al. 2016 VAE/GAN (reconstruction error in a discriminator layer; the authors' CelebA 64x64 networks)"

    def __init__(
        self,
        image_shape: Sequence[int] = (3, 64, 64),
        z_dim: int = 128,
        enc_channels: Sequence[int] = (64, 128, 256),
        enc_fc: int = 1024,
        dec_channels: Sequence[int] = (256, 128, 32),
        dis_channels: Sequence[int] = (32, 128, 256, 256),
        dis_fc: int = 512,
        kernel_size: int = 5,
        llike_layer: int = 4,
        gamma: float = 1e-6,
        gan_on_reconstructions: bool = False,
        dec_gan_loss: str = "saturating",
        real_weight: float = 0.5,
        log_eps: float = 1e-3,
        balance: bool = True,
        equilibrium: float = 0.68,
        margin: float = 0.35,
        lr: float = 0.025 / 64,
        lr_final: float = 1e-5 / 64,
        lr_gamma: float = 0.75,
        lr_anneal_epochs: int = 250,
        lr_epoch_steps: int = 250,
        rmsprop_alpha: float = 0.9,
        rmsprop_eps: float = 1e-8,
        weight_decay: float = 1e-5,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-6,
    ):
        super().__init__()
        self.hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in locals().items() if k not in ("self", "__class__")}
        if dec_gan_loss not in DEC_GAN_LOSSES:
            raise ValueError(f"dec_gan_loss must be one of {DEC_GAN_LOSSES}, got {dec_gan_loss!r}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd ('same' padding), got {kernel_size!r}")
        if not 1 <= llike_layer <= len(dis_channels):
            raise ValueError(f"llike_layer must name one of D's convs, 1..{len(dis_channels)}, got {llike_layer!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        if lr_anneal_epochs > 0 and lr_epoch_steps < 1:
            raise ValueError(f"lr_epoch_steps must be >= 1, got {lr_epoch_steps!r}")
        self.image_shape = tuple(int(s) for s in image_shape)
        c, h, w = self.image_shape
        bn = {"momentum": bn_momentum, "eps": bn_eps}
        self.z_dim = z_dim
        self.encoder = Encoder(c, (h, w), enc_channels, enc_fc, z_dim, kernel_size, bn)
        self.decoder = Decoder(c, (h, w), dec_channels, z_dim, kernel_size, bn)
        self.discriminator = Discriminator(c, (h, w), dis_channels, dis_fc, kernel_size, bn)

    # --- capabilities ------------------------------------------------------------
    def _device(self):
        return next(self.parameters()).device

    @torch.no_grad()
    def encode_dist(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) = N(mu, diag exp(logvar)) of images ``x`` in [0, 1] (eval mode): ``(mu, logvar)``."""
        with evaluating(self.encoder):
            return self.encoder(2 * x.to(self._device()) - 1)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean ``[N, z_dim]``."""
        return self.encode_dist(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder images ``[N, C, H, W]`` in [0, 1] (eval mode; keeps the graph)."""
        with evaluating(self.decoder):
            return (self.decoder(z) + 1) / 2

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Dec(posterior mean)."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` samples ``[n, C, H, W]`` in [0, 1]: z ~ N(0, I) -> decoder. ``generator`` must live on the model's device."""
        return self.decode(torch.randn(n, self.z_dim, device=self._device(), generator=generator))

    # --- losses --------------------------------------------------------------------
    def llike_features(self, x: torch.Tensor) -> torch.Tensor:
        """D_l: the ``llike_layer``-th conv output of D (before its BatchNorm), flattened, for ``x`` in [-1, 1]."""
        return self.discriminator(x, layer=self.hparams["llike_layer"])

    def llike_loss(self, x_tilde: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """L_llike summed over the minibatch: 1/2 ||D_l(x~) - D_l(x)||^2, with [x~; x] as one D
        minibatch and D_l(x) a constant target (both in [-1, 1])."""
        f = self.llike_features(torch.cat([x_tilde, real]))
        f_tilde, f_real = f[: x_tilde.shape[0]], f[x_tilde.shape[0]:].detach()
        return 0.5 * (f_tilde - f_real).pow(2).sum()

    def lr_at(self, step: int) -> float:
        """The code's GammaAnnealer at the code's epoch ``step // lr_epoch_steps`` (lr_final after ``lr_anneal_epochs``)."""
        h = self.hparams
        if h["lr_anneal_epochs"] <= 0:
            return h["lr"]
        t = min((step // h["lr_epoch_steps"]) / h["lr_anneal_epochs"], 1.0)
        return h["lr"] - t ** h["lr_gamma"] * (h["lr"] - h["lr_final"])

    def balance_updates(self, real_cost: float, fake_cost: float) -> tuple[bool, bool]:
        """``(update_discriminator, update_decoder)`` from the code's equilibrium rule."""
        h = self.hparams
        if not h["balance"]:
            return True, True
        lo, hi = h["equilibrium"] - h["margin"], h["equilibrium"] + h["margin"]
        dis = not (real_cost < lo or fake_cost < lo)
        dec = not (real_cost > hi or fake_cost > hi)
        if not (dis or dec):
            return True, True
        return dis, dec

    # --- training ------------------------------------------------------------------
    def _param_groups(self, module: nn.Module, no_decay: Sequence[nn.Module] = ()) -> list[dict]:
        """Weight decay on conv / FC weights, none on biases, BatchNorm and the ``no_decay`` modules."""
        skip = {id(p) for m in no_decay for p in m.parameters()}
        decay = [m.weight for m in module.modules()
                 if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and id(m.weight) not in skip]
        ids = {id(p) for p in decay}
        rest = [p for p in module.parameters() if id(p) not in ids]
        return [{"params": decay, "weight_decay": self.hparams["weight_decay"]}, {"params": rest, "weight_decay": 0.0}]

    def configure_optimizers(self):
        h = self.hparams
        kw = dict(lr=self.lr_at(0), alpha=h["rmsprop_alpha"], eps=h["rmsprop_eps"])
        return {
            "encoder": torch.optim.RMSprop(self._param_groups(self.encoder, (self.encoder.mu, self.encoder.logvar)), **kw),
            "decoder": torch.optim.RMSprop(self._param_groups(self.decoder), **kw),
            "discriminator": torch.optim.RMSprop(self._param_groups(self.discriminator), **kw),
        }

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        """One minibatch (labels ignored): all three gradients at the current parameters, then
        the encoder's step and, as the balancing rule allows, the decoder's and D's."""
        h = self.hparams
        lr = self.lr_at(step)
        for opt in optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        b = x.shape[0]
        real = 2 * x - 1
        # VAE part: z ~ q(z|x), x~ = Dec(z); L_prior and L_llike
        mu, logvar = self.encoder(real)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        kl = gaussian_kl(mu, logvar).sum()
        llike = self.llike_loss(self.decoder(z), real)
        # GAN part: x_gen = Dec(z_p) (and Dec(z) without gradient to the encoder); D sees [x; x_gen]
        z_p = torch.randn_like(mu)
        x_gen = self.decoder(torch.cat([z.detach(), z_p]) if h["gan_on_reconstructions"] else z_p)
        p = torch.sigmoid(self.discriminator(torch.cat([real, x_gen])))
        p_real, p_gen = p[:b], p[b:]
        eps = h["log_eps"]
        cost_real, cost_fake = -torch.log(p_real + eps), -torch.log(1 - p_gen + eps)
        dis_loss = h["real_weight"] * cost_real.sum() + (1 - h["real_weight"]) * (b / p_gen.shape[0]) * cost_fake.sum()
        dec_gan = -cost_fake.sum() if h["dec_gan_loss"] == "saturating" else -torch.log(p_gen + eps).sum()
        # gradients, each for its own network's parameters
        nets = {"encoder": (self.encoder, kl + llike),
                "decoder": (self.decoder, h["gamma"] * llike + (1 - h["gamma"]) * dec_gan),
                "discriminator": (self.discriminator, dis_loss)}
        for name, (net, loss) in nets.items():
            params = list(net.parameters())
            for prm, g in zip(params, torch.autograd.grad(loss, params, retain_graph=name != "discriminator")):
                prm.grad = g
        real_cost, fake_cost = cost_real.mean().item(), cost_fake.mean().item()
        update_dis, update_dec = self.balance_updates(real_cost, fake_cost)
        optimizers["encoder"].step()
        if update_dec:
            optimizers["decoder"].step()
        if update_dis:
            optimizers["discriminator"].step()
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        return {
            "kl": kl.item() / b,
            "llike": llike.item() / b,
            "dec_gan": dec_gan.item() / b,
            "real_cost": real_cost,
            "fake_cost": fake_cost,
            "dis_updated": float(update_dis),
            "dec_updated": float(update_dec),
        }
