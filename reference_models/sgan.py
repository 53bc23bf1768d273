"""Semi-supervised GAN (Odena 2016, arXiv 1606.01583): a DCGAN whose discriminator is also
the classifier ("D/C").

docs/models.md §6 (the paper's text was read in full [P]; its code, DoctorTeeth/supergan, could
not be retrieved, so the architecture is an assumption [A]):

* D/C ends in a softmax over N + 1 outputs ``[class 1 .. class N, FAKE]`` [P].
* D/C minimises the NLL: a *labelled* real minibatch -> its class, a fake minibatch ->
  FAKE [P]. Odena trains on the labelled examples only, so the real minibatch is drawn
  from the labelled pool (``self._pool``); the unlabelled minibatch the training loop
  hands to ``train_step`` is ignored (one ``train_step`` = one D step + one G step).
* G maximises D/C's NLL on its samples, i.e. minimises log p_FAKE(G(z)): "we did not use
  the modified objective trick" [P]. ``g_loss="minimax"`` (default) is that;
  ``g_loss="nonsaturating"`` minimises -log(1 - p_FAKE(G(z))) instead.
* Baseline CNN = "the same SGAN trained without ever updating G" [P]:
  ``train_generator=False`` keeps the randomly initialised G fixed and D/C still sees its
  samples as the FAKE class.
* Accuracy = argmax over the N real-class outputs [P]: ``predict_logits`` returns them.

Architecture [A], after carpedm20/DCGAN-tensorflow's MNIST defaults (which supergan was
derived from):

* D: conv 5x5 stride 2 -> 64, LReLU 0.2; conv 5x5 stride 2 -> 128, BatchNorm, LReLU 0.2;
  FC -> N + 1.
* G: z ~ U[-1, 1]^100 -> FC 1024 BN ReLU -> FC 128 (H/4)(W/4) BN ReLU -> deconv 5x5 s2
  -> 64 BN ReLU -> deconv 5x5 s2 -> C sigmoid (images in [0, 1], as carpedm20's MNIST).
  ``padding=2, output_padding=1`` doubles each side, so H and W must be multiples of 4
  (28x28 -> 7x7 base; the 8x8 toy size -> 2x2).
* Weights N(0, 0.02^2), biases 0; BatchNorm eps 1e-5, momentum 0.1 (TF decay 0.9).
  Real and fake minibatches go through D separately, so BatchNorm statistics are never
  mixed (as in DCGAN code). D loss = NLL(real) + NLL(fake) (means, DCGAN's sum).
* Adam lr 2e-4, beta1 0.5, batch 64 [A]. Odena reports "the best result" of a random
  search on the learning rate [P]; ``lr`` is a constructor argument for that search.

The G step reuses the D step's G(z) (same z, as DCGAN code feeds the same batch to both
steps) and rescores it with the freshly updated D/C; its gradient is taken with respect
to G's parameters only.
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


def _init_dcgan_(module: nn.Module, std: float) -> None:
    """DCGAN init: conv / deconv / linear weights N(0, std^2), biases 0; BatchNorm gain 1, bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SGAN(nn.Module):
    registry_name = "sgan"
    description = "Odena 2016 semi-supervised GAN: DCGAN discriminator/classifier with N+1 outputs (FAKE class)"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        n_classes: int = 10,
        z_dim: int = 100,
        d_channels: Sequence[int] = (64, 128),
        g_hidden: int = 1024,
        g_channels: Sequence[int] = (128, 64),
        lrelu_slope: float = 0.2,
        init_std: float = 0.02,
        lr: float = 2e-4,
        beta1: float = 0.5,
        batch_size: int = 64,
        g_loss: str = "minimax",
        train_generator: bool = True,
    ):
        super().__init__()
        self.hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in locals().items() if k not in ("self", "__class__")}
        if g_loss not in G_LOSSES:
            raise ValueError(f"g_loss must be one of {G_LOSSES}, got {g_loss!r}")
        self.image_shape = tuple(image_shape)
        c, h, w = self.image_shape
        if h % 4 or w % 4:
            raise ValueError(f"image_shape {self.image_shape}: height and width must be multiples of 4 (two stride-2 layers)")
        self.n_classes, self.z_dim = n_classes, z_dim
        self.fake_class = n_classes  # index of the FAKE output
        d1, d2 = d_channels
        g1, g2 = g_channels
        self.base = (g1, h // 4, w // 4)
        slope = lrelu_slope
        self.discriminator = nn.Sequential(
            nn.Conv2d(c, d1, 5, stride=2, padding=2),
            nn.LeakyReLU(slope),
            nn.Conv2d(d1, d2, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(d2),
            nn.LeakyReLU(slope),
            nn.Flatten(),
            nn.Linear(d2 * (h // 4) * (w // 4), n_classes + 1),
        )
        self.generator = nn.Sequential(
            nn.Linear(z_dim, g_hidden, bias=False),
            nn.BatchNorm1d(g_hidden),
            nn.ReLU(),
            nn.Linear(g_hidden, math.prod(self.base), bias=False),
            nn.BatchNorm1d(math.prod(self.base)),
            nn.ReLU(),
            nn.Unflatten(1, self.base),
            nn.ConvTranspose2d(g1, g2, 5, stride=2, padding=2, output_padding=1, bias=False),
            nn.BatchNorm2d(g2),
            nn.ReLU(),
            nn.ConvTranspose2d(g2, c, 5, stride=2, padding=2, output_padding=1),
            nn.Sigmoid(),
        )
        _init_dcgan_(self, init_std)
        self._pool: Optional[LabelledPool] = None

    # --- model -----------------------------------------------------------------
    def noise(self, n: int, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """z ~ U[-1, 1]^z_dim (DCGAN)."""
        return 2 * torch.rand(n, self.z_dim, device=device, generator=generator) - 1

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """D/C's N + 1 logits ``[class 1 .. class N, FAKE]``."""
        return self.discriminator(x)

    # --- capabilities ------------------------------------------------------------
    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The N real-class logits (eval mode: BatchNorm running statistics)."""
        was = self.training
        self.eval()
        out = self.logits(x.to(next(self.parameters()).device))[:, : self.n_classes]
        self.train(was)
        return out

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` samples ``[n, C, H, W]`` in [0, 1] from G (eval mode). ``generator`` must live on the model's device."""
        device = next(self.parameters()).device
        was = self.training
        self.eval()
        out = self.generate(self.noise(n, device, generator))
        self.train(was)
        return out

    # --- training --------------------------------------------------------------
    def on_fit_start(self, x_all: torch.Tensor, y_all: Optional[torch.Tensor]) -> None:
        self._pool = LabelledPool(x_all, y_all)

    def configure_optimizers(self):
        h = self.hparams
        betas = (h["beta1"], 0.999)
        return {
            "discriminator": make_optimizer(torch.optim.Adam, self.discriminator.parameters(), lr=h["lr"], betas=betas, fused_default=True),
            "generator": make_optimizer(torch.optim.Adam, self.generator.parameters(), lr=h["lr"], betas=betas, fused_default=True),
        }

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """minimax: mean log p_FAKE(G(z)) (= -NLL of the FAKE class); nonsaturating: mean -log(1 - p_FAKE)."""
        if self.hparams["g_loss"] == "minimax":
            return F.log_softmax(fake_logits, dim=1)[:, self.fake_class].mean()
        return (torch.logsumexp(fake_logits, 1) - torch.logsumexp(fake_logits[:, : self.n_classes], 1)).mean()

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        if self._pool is None:
            raise RuntimeError("SGAN.train_step needs the labelled pool: call on_fit_start(x_all, y_all) first (fit does)")
        d_opt, g_opt = optimizers["discriminator"], optimizers["generator"]
        train_g = self.hparams["train_generator"]
        n = self.hparams["batch_size"]
        x_lab, y_lab = self._pool.batch(n)  # the real minibatch: labelled examples only
        z = self.noise(n, x_lab.device)
        with torch.set_grad_enabled(train_g):
            fake = self.generate(z)
        # D/C step: real -> its class, fake -> FAKE (separate forwards: BatchNorm per minibatch)
        real_logits = self.logits(x_lab)
        fake_logits = self.logits(fake.detach())
        d_real = F.cross_entropy(real_logits, y_lab)
        d_fake = F.cross_entropy(fake_logits, torch.full_like(y_lab, self.fake_class))
        d_loss = d_real + d_fake
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        out = {"d_loss": d_loss.item(), "d_real": d_real.item(), "d_fake": d_fake.item()}
        with torch.no_grad():
            out["train_acc"] = (real_logits[:, : self.n_classes].argmax(1) == y_lab).float().mean().item()
        if train_g:
            # G step: the same samples scored by the updated D/C; gradient for G's parameters only
            g_loss = self.generator_loss(self.logits(fake))
            g_params = [p for grp in g_opt.param_groups for p in grp["params"]]
            for p, g in zip(g_params, torch.autograd.grad(g_loss, g_params)):
                p.grad = g
            g_opt.step()
            out["g_loss"] = g_loss.item()
        return out
