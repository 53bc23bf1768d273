"""GMMN+AE: a generative moment matching network in the code space of an autoencoder
(Li, Swersky, Zemel 2015, "Generative Moment Matching Networks"), the GMMN+AE row of the
Parzen tables (docs/models.md §1/§2: 282 ± 2 nats on MNIST, 2204 ± 20 on TFD [P via the AAE
table]).

docs/models.md has no section on this model and the paper was not re-read. The facts below
were read in the authors' code, ``yujiali/gmmn`` ``train.py`` (``mnist_mmd_code_space``,
which its ``__main__`` runs with its defaults), ``core/generative.py``, and their network
library ``yujiali/pynn`` (``layer.py``, ``nn.py``): tagged [C]. Whether the published 282
nats came from exactly these defaults is not known. [A] marks our assumptions; [P] the
paper's published numbers as docs/models.md copies them.

Autoencoder (stage 1):

* Encoder D -> 1024 sigmoid -> 32 sigmoid; decoder 32 -> 1024 sigmoid -> D sigmoid [C
  ``ae_n_hids=[1024, 32]``, sigmoid on every layer]. Codes therefore lie in (0, 1)^32.
* Dropout on the input of each encoder layer: 0.2 on the image, 0.5 on the 1024 hidden
  units [C ``ae_dropout=[0.2, 0.5]``; pynn drops a layer's *inputs*]. pynn drops without
  rescaling and scales the weights at test time; PyTorch's inverted dropout is the same
  model in expectation. Dropout is used only in the autoencoder's training steps;
  ``encode`` (and the codes the GMMN matches) never drop [A: the code's
  ``autoencoder.encode`` is assumed to run without noise].
* Loss: binary cross-entropy, summed over pixels, mean over the minibatch [C decoder loss
  ``BINARY_CROSSENTROPY``; the sum/mean split is our reading of pynn's normalisation].
* Init: weights N(0, 0.1^2), biases 0 [C pynn ``init_scale=1e-1``], for every network.
* Optimiser [C]: SGD lr 0.1, minibatch 100, momentum 0 -> 0.5 from update 50 -> 0.9 from
  update 200, gradient norm clipped to 10 (over all autoencoder parameters at once [A]).
* The authors pretrain the autoencoder layer-wise (3000 updates, lr 0.1, momentum 0.5)
  before 3000 updates of end-to-end fine-tuning (= 6 epochs of MNIST's 50K training
  images). Layer-wise pretraining is NOT implemented; ``ae_epochs`` = 12 [A] trains end to
  end for as many minibatch updates as pretraining + fine-tuning together.

GMMN (stage 2, autoencoder frozen):

* Generator: h ~ U[-1, 1]^10 -> 64 ReLU -> 256 ReLU -> 256 ReLU -> 1024 ReLU -> 32 sigmoid
  [C ``mmd_n_hids=[10, 64, 256, 256, 1024]``, ``sample_hiddens`` = 2 rand - 1].
* Kernel: k(a, b) = sum_s exp(-||a - b||^2 / (2 s)) over the scales s in ``kernel_scales``
  [C ``GaussianKernelMmdLoss``: s is a *variance* (bandwidth squared), not a standard
  deviation; scale weights 1]. MNIST code space: the single scale s = 1 [C, the default
  ``mmd_sigma=1`` that ``train.py`` runs]. The authors' other settings, for reference:
  TFD code space (1, 2, 5, 10, 20, 40); MNIST pixel space (2, 5, 10, 20, 40, 80).
* Estimate: the biased (V-statistic) MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y),
  diagonal terms included [C: their s-vector form s^T K s]. It is never negative (for a
  positive-definite kernel), so its square root is defined: the authors minimise
  sqrt(MMD^2) [C ``MMDGEN_SQRT_GAUSSIAN``; loss weight 1000 divided by the 1000 samples
  per update, i.e. sqrt(MMD^2) itself, as we read pynn's learner]. ``unbiased_mmd=True``
  switches training to the unbiased U-statistic (then the objective is MMD^2 itself, as
  its square root may not exist) [A]; :func:`mmd2` offers both.
* Each update compares ``mmd_batch`` = 1000 generated codes with the codes of 1000
  training images [C ``minibatch_size=1000``, ``n_samples_per_update=1000``], drawn
  without replacement by the global torch RNG from all training images that the
  training loop hands to ``on_fit_start`` [A: the code walks random-order minibatches].
  The loop's own minibatch only counts the updates (one GMMN update per minibatch).
* Optimiser [C]: SGD lr 2, momentum 0.9; after 10000 updates lr / 10 and momentum
  1 - (1 - 0.9) / 10 = 0.99; 40000 updates in all. Here the switch happens
  ``mmd_decay_epoch`` = 20 GMMN epochs after the stage starts: 10000 updates at MNIST's
  500 minibatches of 100 per epoch [A: the conversion assumes that loop batch size].
  40000 updates are 80 GMMN epochs, so the authors' budget is ``ae_epochs + 80`` epochs.

``optimizer="adam"`` swaps both stages to Adam (``adam_lr_ae``, ``adam_lr_mmd``,
``adam_beta1``) without momentum schedules or decay [A, for short CPU budgets].

Stages by epoch counter only: epochs ``< ae_epochs`` train the autoencoder, later epochs
the GMMN; the autoencoder's parameters are never updated in a GMMN epoch and the
generator's never in an autoencoder epoch.

Samples: h ~ U[-1, 1]^10 -> generator -> decoder, ``[n, C, H, W]`` in [0, 1].
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .aae_semi import constructor_kwargs, optimizer_step
from .blocks import init_normal_, mlp
from .training import make_optimizer


# ----------------------------------------------------------------------------- MMD
def mmd2(x: torch.Tensor, y: torch.Tensor, scales: Sequence[float], *, unbiased: bool = False) -> torch.Tensor:
    """Squared maximum mean discrepancy between samples ``x`` [n, d] and ``y`` [m, d].

    Kernel k(a, b) = sum over ``scales`` s of exp(-||a - b||^2 / (2 s)) (s is a variance).
    Biased (default): mean k(x_i, x_j) + mean k(y_i, y_j) - 2 mean k(x_i, y_j) over all
    pairs, diagonal included (>= 0). ``unbiased``: the within-sample means leave out
    i = j (the U-statistic; may be slightly negative). Differentiable in both arguments.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be [n, d] and [m, d]; got {tuple(x.shape)} and {tuple(y.shape)}")
    n, m = x.shape[0], y.shape[0]
    if unbiased and min(n, m) < 2:
        raise ValueError("the unbiased estimate needs at least 2 samples on each side")
    z = torch.cat([x, y])
    sq = (z * z).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)).clamp_min(0.0)
    k = sum(torch.exp(d2 / (-2.0 * float(s))) for s in scales)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    if unbiased:
        xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        return xx + yy - 2.0 * kxy.mean()
    return kxx.mean() + kyy.mean() - 2.0 * kxy.mean()


def _uniform(shape, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """U[-1, 1] draws on ``device`` (from ``generator``, which may live on another device)."""
    dev = generator.device if generator is not None else device
    return (2.0 * torch.rand(*shape, device=dev, generator=generator) - 1.0).to(device)


# ----------------------------------------------------------------------------- model
class GMMNAE(nn.Module):
    registry_name = "gmmn_ae"
    description = "Li et al. 2015 GMMN+AE: moment-matching generator (MMD) in an autoencoder's code space"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        ae_hidden: Sequence[int] = (1024,),
        code_dim: int = 32,
        ae_dropout: Sequence[float] = (0.2, 0.5),
        noise_dim: int = 10,
        gen_hidden: Sequence[int] = (64, 256, 256, 1024),
        kernel_scales: Sequence[float] = (1.0,),
        mmd_batch: int = 1000,
        unbiased_mmd: bool = False,
        ae_epochs: int = 12,
        init_std: float = 0.1,
        optimizer: str = "sgd",
        sgd_ae: Sequence[float] = (0.1, 0.9),
        ae_momentum_steps: Sequence[int] = (50, 200),
        grad_clip: float = 10.0,
        sgd_mmd: Sequence[float] = (2.0, 0.9),
        mmd_decay_epoch: int = 20,
        adam_lr_ae: float = 1e-3,
        adam_lr_mmd: float = 1e-3,
        adam_beta1: float = 0.9,
    ):
        super().__init__()
        self.hparams = constructor_kwargs(locals())
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' (the authors' schedule) or 'adam', got {optimizer!r}")
        if len(ae_dropout) != len(ae_hidden) + 1:
            n_layers = len(ae_hidden) + 1
            raise ValueError(f"ae_dropout needs one rate per encoder layer ({n_layers}); got {list(ae_dropout)}")
        if not kernel_scales or min(kernel_scales) <= 0:
            raise ValueError(f"kernel_scales must be positive variances; got {list(kernel_scales)}")
        self.image_shape = tuple(image_shape)
        dim = math.prod(self.image_shape)
        self.code_dim, self.noise_dim, self.ae_epochs = code_dim, noise_dim, ae_epochs
        self.dropout = [float(p) for p in ae_dropout]
        self.kernel_scales = [float(s) for s in kernel_scales]
        sizes = [dim, *ae_hidden, code_dim]
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.decoder = mlp(sizes[::-1], activation=nn.Sigmoid)  # logits; sigmoid in decode
        self.generator = mlp([noise_dim, *gen_hidden, code_dim])  # logits; sigmoid in generate
        init_normal_(self, init_std)
        self._images: Optional[torch.Tensor] = None  # training images from on_fit_start (not state)
        self._pool: Optional[torch.Tensor] = None  # their codes, cached for the GMMN stage

    # --- capabilities ------------------------------------------------------------
    def _encode(self, x: torch.Tensor, *, dropout: bool) -> torch.Tensor:
        h = x.flatten(1)
        for p, layer in zip(self.dropout, self.encoder):
            h = torch.sigmoid(layer(F.dropout(h, p, training=dropout and p > 0)))
        return h

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``[N, code_dim]`` in (0, 1); deterministic (no dropout)."""
        return self._encode(x, dropout=False)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z)).view(z.shape[0], *self.image_shape)

    def generate(self, h: torch.Tensor) -> torch.Tensor:
        """GMMN: noise ``[N, noise_dim]`` -> codes ``[N, code_dim]`` in (0, 1)."""
        return torch.sigmoid(self.generator(h))

    def noise(self, n: int, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return _uniform((n, self.noise_dim), device, generator)

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` samples ``[n, C, H, W]`` in [0, 1]: h ~ U[-1, 1]^noise_dim -> GMMN -> decoder."""
        device = next(self.parameters()).device
        return self.decode(self.generate(self.noise(n, device, generator)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def code_mmd2(self, x: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Biased MMD^2 (the model's kernel) between the codes of ``x`` and as many generated codes."""
        z = self.encode(x)
        return mmd2(self.generate(self.noise(z.shape[0], z.device, generator)), z, self.kernel_scales)

    # --- training --------------------------------------------------------------
    def stage(self, epoch: int) -> str:
        """``"ae"`` for epochs < ``ae_epochs``, else ``"gmmn"`` (depends on the epoch alone)."""
        return "ae" if epoch < self.ae_epochs else "gmmn"

    def configure_optimizers(self):
        h = self.hparams
        ae = list(self.encoder.parameters()) + list(self.decoder.parameters())
        if h["optimizer"] == "adam":
            betas = (h["adam_beta1"], 0.999)
            return {
                "ae": make_optimizer(torch.optim.Adam, ae, lr=h["adam_lr_ae"], betas=betas),
                "gmmn": make_optimizer(torch.optim.Adam, self.generator.parameters(), lr=h["adam_lr_mmd"], betas=betas),
            }
        return {
            "ae": make_optimizer(torch.optim.SGD, ae, lr=h["sgd_ae"][0], momentum=h["sgd_ae"][1]),
            "gmmn": make_optimizer(torch.optim.SGD, self.generator.parameters(), lr=h["sgd_mmd"][0], momentum=h["sgd_mmd"][1]),
        }

    def on_fit_start(self, x: torch.Tensor, y=None) -> None:
        self._images, self._pool = x, None

    def on_epoch_start(self, epoch: int, optimizers) -> None:
        """SGD: the GMMN's lr / 10 and momentum 1 - (1 - m) / 10 from GMMN epoch ``mmd_decay_epoch`` on."""
        h = self.hparams
        if h["optimizer"] != "sgd":
            return
        lr, m = h["sgd_mmd"]
        if epoch >= self.ae_epochs + h["mmd_decay_epoch"]:
            lr, m = lr / 10.0, 1.0 - (1.0 - m) / 10.0
        for group in optimizers["gmmn"].param_groups:
            group["lr"], group["momentum"] = lr, m

    def ae_momentum(self, step: int) -> float:
        """The authors' autoencoder momentum schedule: 0, then 0.5 from update 50, final from update 200."""
        first, second = self.hparams["ae_momentum_steps"]
        return 0.0 if step < first else 0.5 if step < second else float(self.hparams["sgd_ae"][1])

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        if self.stage(epoch) == "ae":
            return self.ae_step(x, step, optimizers["ae"])
        return self.gmmn_step(x, optimizers["gmmn"])

    def ae_step(self, x: torch.Tensor, step: int, optimizer: torch.optim.Optimizer) -> dict:
        """One autoencoder update (dropout on): BCE summed over pixels, mean over the batch."""
        self._pool = None  # the encoder changes: cached codes are stale
        flat = x.flatten(1)
        logits = self.decoder(self._encode(flat, dropout=True))
        loss = F.binary_cross_entropy_with_logits(logits, flat, reduction="sum") / flat.shape[0]
        if self.hparams["optimizer"] == "sgd":
            for group in optimizer.param_groups:
                group["momentum"] = self.ae_momentum(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.hparams["grad_clip"]:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            nn.utils.clip_grad_norm_(params, self.hparams["grad_clip"])
        optimizer.step()
        return {"rec_loss": loss.item()}

    @torch.no_grad()
    def _target_codes(self, x: torch.Tensor) -> torch.Tensor:
        """``mmd_batch`` codes of training images (all of ``on_fit_start``'s, else the minibatch)."""
        if self._images is None:
            return self.encode(x)
        if self._pool is None:
            self._pool = torch.cat([self.encode(c) for c in self._images.split(2000)])
        idx = torch.randperm(self._pool.shape[0], device=self._pool.device)[: self.hparams["mmd_batch"]]
        return self._pool[idx]

    def gmmn_step(self, x: torch.Tensor, optimizer: torch.optim.Optimizer) -> dict:
        """One GMMN update: sqrt of the biased MMD^2 (or the unbiased MMD^2) between generated
        and encoded codes; the autoencoder is frozen."""
        target = self._target_codes(x)
        fake = self.generate(self.noise(self.hparams["mmd_batch"], target.device))
        loss = mmd2(fake, target, self.kernel_scales, unbiased=self.hparams["unbiased_mmd"])
        objective = loss if self.hparams["unbiased_mmd"] else (loss.clamp_min(0.0) + 1e-12).sqrt()
        optimizer_step(optimizer, objective)
        return {"mmd2": loss.item()}
