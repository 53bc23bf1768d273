"""Adversarial autoencoders with a categorical code (Makhzani et al. 2015): semi-supervised
classification, unsupervised clustering and dimensionality reduction.

docs/models.md §2B-§2D and §11. The AAE appendix could not be re-read, so everything below is
[R] (recalled) unless tagged [P] (paper text quoted elsewhere) or [A] (our assumption).

``SemiSupervisedAAE`` (§2B, registry ``aae_semi``):

* Encoder D -> 1000 ReLU -> 1000 ReLU with two linear heads: q(y|x) = softmax over
  ``n_classes`` = 10 and q(z|x) (deterministic, ``z_dim`` = 10). Both heads are stored as
  one output layer of width ``n_classes + z_dim`` (identical maths, one matmul).
* Decoder [y, z] -> 1000 ReLU -> 1000 ReLU -> D sigmoid. Loss: half the squared error,
  summed over pixels, mean over the minibatch.
* Two discriminators, each in -> 1000 ReLU -> 1000 ReLU -> 1: D_cat on y (the softmax
  probabilities) against one-hot samples of Cat(n_classes); D_gauss on z against
  N(0, ``prior_std``^2 I), ``prior_std`` = 1.
* Init N(0, 0.01^2), biases 0 (``init_std``). Gaussian noise of std ``input_noise`` = 0.3 is
  added to every encoder input during training only (the reconstruction target is the
  clean image); evaluation never adds noise.
* Per minibatch ``x`` (all training images, treated as unlabelled; the loop's ``y`` is
  ignored): (i) reconstruction phase: encoder + decoder step; (ii) regularisation phase:
  one step of both discriminators (prior samples real, encoder outputs fake, loss
  1/2 [BCE(real, 1) + BCE(fake, 0)] each), then one encoder step as generator on
  BCE(D_cat(y), 1) + BCE(D_gauss(z), 1); (iii) semi-supervised phase: cross-entropy of
  q(y|x) on a labelled minibatch of the same size drawn from the labelled pool that
  ``on_fit_start`` keeps (``y >= 0`` only); skipped when there are no labels. The two-phase
  scheme is [P-quote], the third phase [R].
* ``optimizer="sgd"`` (default): the recalled schedule, [R, low confidence]: reconstruction
  lr 0.01 momentum 0.9, adversarial (both discriminators and the generator step) lr 0.1
  momentum 0.1, supervised lr 0.1 momentum 0.9, every lr / 10 from epoch
  ``sgd_decay_epoch`` = 50 on. docs/models.md also recalls a later second / 10 of the
  adversarial and supervised rates at an epoch it does not give; not implemented.
  ``optimizer="adam"``: per-phase rates ``adam_lr_recon`` 1e-3, ``adam_lr_adv`` 2e-4,
  ``adam_lr_semi`` 1e-3, beta1 ``adam_beta1`` 0.5 -- [A] choices for short CPU budgets,
  not the paper's.
* Capabilities: ``predict_logits`` = the logits of q(y|x) (prediction = argmax, [R]);
  ``cluster_probs`` = q(y|x); ``encode(x)`` = ``[q(y|x), z]`` concatenated, shape
  ``[N, n_classes + z_dim]``, which ``decode`` accepts (so ``decode(encode(x))`` is the
  reconstruction); ``sample`` draws y ~ Cat (one-hot) and z ~ N(0, prior_std^2 I).

``ClusteringAAE`` (§2C, ``aae_cluster``): the same model with ``n_classes`` = 16, ``z_dim``
= 5 and 3000-3000 ReLU layers in encoder, decoder and discriminators (corroborated by a
public re-implementation [C]); momentum 0.9 (autoencoder) / 0.1 (adversarial) as above.
No labels are ever used, even when the data set has some. ``input_noise`` is inherited
from §2B [A: §2C's recalled text does not mention it].

``DimRedAAE`` (§2D, ``aae_dimred``): the decoder sees only the ``code_dim`` = 2 code
W_c y + z, where W_c (``n_classes`` x ``code_dim``, learned) holds one "cluster head" per
class, y = q(y|x) (softmax; D_cat pushes it towards one-hot) and z = q(z|x) in
``code_dim`` dims with prior N(0, ``prior_std``^2 I), ``prior_std`` = 1 [A]. Extra cost in
the reconstruction phase: ``head_weight`` * sum over pairs i < j of
relu(``eta`` - ||w_i - w_j||)^2 [A: the paper penalises pairs closer than a threshold
eta; its form and values were not recalled]. Defaults ``eta`` = 4 prior stds (two
neighbouring clusters then meet about 2 stds from each head, so 10 heads spread over a
disc of radius ~6 stds) and ``head_weight`` = 1 [A]; heads initialised N(0, eta^2 I) [A].
Semi-supervised (phase iii) when labels exist, unsupervised otherwise (the paper's
unsupervised run uses 20 clusters: pass ``n_classes=20``). ``embed(x)`` returns the 2-d
code (z is deterministic) for scatter plots.

Sizes are constructor arguments, so every class also trains at toy size on CPU. The
phase helpers below are shared with :mod:`reference_models.aae_supervised`.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import LabelledPool, init_normal_, mlp
from .training import make_optimizer

# optimiser name -> the phase whose learning rate it uses
PHASE = {"recon": "recon", "disc": "adv", "gen": "adv", "semi": "semi"}


# ----------------------------------------------------------------------------- shared helpers
def constructor_kwargs(scope: dict) -> dict:
    """``locals()`` of an ``__init__`` -> its keyword arguments (tuples as lists, for checkpoints)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in scope.items() if k not in ("self", "__class__", "kwargs")}


def check_optimizer(name: str) -> None:
    if name not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' (the recalled schedule) or 'adam', got {name!r}")


def make_optimizers(hp: dict, params: dict[str, list]) -> dict[str, torch.optim.Optimizer]:
    """One optimiser per phase; its lr (and momentum) come from ``hp`` by :data:`PHASE`.
    Fused kernels on CPU/CUDA (Adam's step is ~3x faster on one CPU thread)."""
    out = {}
    for name, ps in params.items():
        phase = PHASE[name]
        if hp["optimizer"] == "adam":
            out[name] = make_optimizer(torch.optim.Adam, ps, lr=hp[f"adam_lr_{phase}"], betas=(hp["adam_beta1"], 0.999), fused_default=True)
        else:
            lr, momentum = hp[f"sgd_{phase}"]
            out[name] = make_optimizer(torch.optim.SGD, ps, lr=lr, momentum=momentum, fused_default=True)
    return out


def sgd_decay_(hp: dict, optimizers: dict, epoch: int) -> None:
    """SGD only: every lr / 10 from epoch ``sgd_decay_epoch`` on (depends on the epoch alone)."""
    if hp["optimizer"] != "sgd":
        return
    scale = 0.1 if epoch >= hp["sgd_decay_epoch"] else 1.0
    for name, opt in optimizers.items():
        for group in opt.param_groups:
            group["lr"] = hp[f"sgd_{PHASE[name]}"][0] * scale


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def half_squared_error(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1/2 ||sigmoid(logits) - target||^2 per image (flattened), mean over the minibatch."""
    return 0.5 * (torch.sigmoid(logits) - target).pow(2).sum(1).mean()


def discriminator_step(pairs, optimizer) -> list[float]:
    """One step of every discriminator in ``pairs`` = [(disc, real, fake), ...] on
    1/2 [BCE(D(real), 1) + BCE(D(fake), 0)] (the mean BCE over real and fake together, one
    forward pass; fakes detached)."""
    losses = []
    for disc, real, fake in pairs:
        logits = disc(torch.cat([real, fake.detach()])).squeeze(1)
        target = torch.cat([torch.ones(real.shape[0], device=logits.device), torch.zeros(fake.shape[0], device=logits.device)])
        losses.append(F.binary_cross_entropy_with_logits(logits, target))
    optimizer.zero_grad(set_to_none=True)
    sum(losses).backward()
    optimizer.step()
    return [l.item() for l in losses]


def generator_step(pairs, optimizer) -> float:
    """One step of the encoder (in ``optimizer``) fooling every discriminator: sum of
    BCE(D(fake), 1). The discriminators' weights get no gradient (saves their backward)."""
    discs = [d for d, _, _ in pairs]
    for d in discs:
        d.requires_grad_(False)
    try:
        loss = sum(
            F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            for logits in (d(fake).squeeze(1) for d, _, fake in pairs)
        )
        return optimizer_step(optimizer, loss)
    finally:
        for d in discs:
            d.requires_grad_(True)


def draw_normal(shape, std: float, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """N(0, std^2) draws on ``device`` (from ``generator``, which may live on another device)."""
    dev = generator.device if generator is not None else device
    return (std * torch.randn(*shape, device=dev, generator=generator)).to(device)


def draw_labels(n: int, n_classes: int, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    dev = generator.device if generator is not None else device
    return torch.randint(n_classes, (n,), device=dev, generator=generator).to(device)


# ----------------------------------------------------------------------------- §2B
class SemiSupervisedAAE(nn.Module):
    registry_name = "aae_semi"
    description = "Makhzani et al. 2015 semi-supervised AAE (categorical y + Gaussian z, two discriminators)"
    use_labels = True  # ClusteringAAE: False

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        n_classes: int = 10,
        z_dim: int = 10,
        hidden: Sequence[int] = (1000, 1000),
        disc_hidden: Sequence[int] = (1000, 1000),
        prior_std: float = 1.0,
        input_noise: float = 0.3,
        init_std: float = 0.01,
        optimizer: str = "sgd",
        sgd_recon: Sequence[float] = (0.01, 0.9),
        sgd_adv: Sequence[float] = (0.1, 0.1),
        sgd_semi: Sequence[float] = (0.1, 0.9),
        sgd_decay_epoch: int = 50,
        adam_lr_recon: float = 1e-3,
        adam_lr_adv: float = 2e-4,
        adam_lr_semi: float = 1e-3,
        adam_beta1: float = 0.5,
    ):
        super().__init__()
        self.hparams = constructor_kwargs(locals())
        check_optimizer(optimizer)
        self.image_shape = tuple(image_shape)
        dim = math.prod(self.image_shape)
        self.n_classes, self.z_dim, self.prior_std, self.input_noise = n_classes, z_dim, prior_std, input_noise
        self.encoder = mlp([dim, *hidden, n_classes + z_dim])  # heads: [logits of q(y|x), z]
        self.decoder = mlp([self._decoder_in(n_classes, z_dim), *list(hidden)[::-1], dim])  # sigmoid in decode
        self.d_cat = mlp([n_classes, *disc_hidden, 1])
        self.d_gauss = mlp([z_dim, *disc_hidden, 1])
        init_normal_(self, init_std)
        self._pool: Optional[LabelledPool] = None  # set by on_fit_start; not part of the state dict

    # --- the pieces subclasses change --------------------------------------------
    def _decoder_in(self, n_classes: int, z_dim: int) -> int:
        return n_classes + z_dim

    def _code(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """What the decoder sees: [y, z]."""
        return torch.cat([y, z], 1)

    def _recon_penalty(self) -> Optional[torch.Tensor]:
        """An extra cost added in the reconstruction phase (none here)."""
        return None

    # --- capabilities -------------------------------------------------------------
    def _encode(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flattened images -> (logits of q(y|x), z)."""
        return self.encoder(flat).split([self.n_classes, self.z_dim], 1)

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|x), ``[N, n_classes]`` (no input noise)."""
        return self._encode(x.flatten(1))[0]

    @torch.no_grad()
    def cluster_probs(self, x: torch.Tensor) -> torch.Tensor:
        """q(y|x), ``[N, n_classes]``."""
        return self.predict_logits(x).softmax(1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[q(y|x), z]`` concatenated: ``[N, n_classes + z_dim]`` (deterministic)."""
        logits, z = self._encode(x.flatten(1))
        return torch.cat([logits.softmax(1), z], 1)

    def decode(self, c: torch.Tensor) -> torch.Tensor:
        """``[y, z]`` (as ``encode`` returns it; y one-hot or probabilities) -> images in [0, 1]."""
        y, z = c.split([self.n_classes, self.z_dim], 1)
        return torch.sigmoid(self.decoder(self._code(y, z))).view(c.shape[0], *self.image_shape)

    def prior(self, n: int, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``[one-hot y ~ Cat(n_classes), z ~ N(0, prior_std^2 I)]``, shape ``[n, n_classes + z_dim]``."""
        y = F.one_hot(draw_labels(n, self.n_classes, device, generator), self.n_classes).float()
        return torch.cat([y, draw_normal((n, self.z_dim), self.prior_std, device, generator)], 1)

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` samples ``[n, C, H, W]`` in [0, 1]: y ~ Cat, z ~ N(0, prior_std^2 I), then the decoder."""
        return self.decode(self.prior(n, next(self.parameters()).device, generator))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # --- training -------------------------------------------------------------------
    def on_fit_start(self, x_all: torch.Tensor, y_all: Optional[torch.Tensor]) -> None:
        """Keep the labelled subset (``y >= 0``) for phase (iii); unlabelled images never enter it."""
        self._pool = LabelledPool(x_all, y_all) if self.use_labels else None

    def configure_optimizers(self):
        enc = list(self.encoder.parameters())
        params = {
            "recon": [p for n, p in self.named_parameters() if not n.startswith(("d_cat.", "d_gauss."))],
            "disc": list(self.d_cat.parameters()) + list(self.d_gauss.parameters()),
            "gen": enc,
        }
        if self.use_labels:
            params["semi"] = enc
        return make_optimizers(self.hparams, params)

    def on_epoch_start(self, epoch: int, optimizers) -> None:
        sgd_decay_(self.hparams, optimizers, epoch)

    def _noisy(self, flat: torch.Tensor) -> torch.Tensor:
        return flat + self.input_noise * torch.randn_like(flat) if self.input_noise else flat

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        n = x.shape[0]
        flat = x.flatten(1)
        noisy = self._noisy(flat)  # one noise draw per minibatch, shared by phases (i) and (ii)
        # (i) reconstruction phase: encoder + decoder (+ DimRed's cluster heads)
        logits, z = self._encode(noisy)
        rec_loss = half_squared_error(self.decoder(self._code(logits.softmax(1), z)), flat)
        penalty = self._recon_penalty()
        optimizer_step(optimizers["recon"], rec_loss if penalty is None else rec_loss + penalty)
        out = {"rec_loss": rec_loss.item()}
        if penalty is not None:
            out["head_penalty"] = penalty.item()
        # (ii) regularisation phase: both discriminators, then the encoder as generator
        logits, z = self._encode(noisy)
        y_real, z_real = self.prior(n, x.device).split([self.n_classes, self.z_dim], 1)
        pairs = [(self.d_cat, y_real, logits.softmax(1)), (self.d_gauss, z_real, z)]
        out["d_cat_loss"], out["d_gauss_loss"] = discriminator_step(pairs, optimizers["disc"])
        out["g_loss"] = generator_step(pairs, optimizers["gen"])
        # (iii) semi-supervised phase: cross-entropy of q(y|x) on a labelled minibatch
        if self._pool is not None and len(self._pool) > 0:
            x_lab, y_lab = self._pool.batch(n)
            logits_lab, _ = self._encode(self._noisy(x_lab.flatten(1)))
            out["semi_loss"] = optimizer_step(optimizers["semi"], F.cross_entropy(logits_lab, y_lab))
        return out


# ----------------------------------------------------------------------------- §2C
class ClusteringAAE(SemiSupervisedAAE):
    """§2C: unsupervised clustering; the §2B model with its own defaults and no labels."""

    registry_name = "aae_cluster"
    description = "Makhzani et al. 2015 unsupervised clustering AAE (16 clusters, 5-d style, 3000-3000 layers)"
    use_labels = False

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        n_classes: int = 16,
        z_dim: int = 5,
        hidden: Sequence[int] = (3000, 3000),
        disc_hidden: Sequence[int] = (3000, 3000),
        **kwargs,
    ):
        # every other argument (and its default) is SemiSupervisedAAE's; hparams holds them all
        super().__init__(image_shape=image_shape, n_classes=n_classes, z_dim=z_dim, hidden=hidden, disc_hidden=disc_hidden, **kwargs)


# ----------------------------------------------------------------------------- §2D
class DimRedAAE(SemiSupervisedAAE):
    """§2D: the decoder sees the 2-d code W_c y + z; cluster heads kept ``eta`` apart."""

    registry_name = "aae_dimred"
    description = "Makhzani et al. 2015 dimensionality-reduction AAE (2-d code = cluster head + style)"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        n_classes: int = 10,
        code_dim: int = 2,
        eta: float = 4.0,
        head_weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(image_shape=image_shape, n_classes=n_classes, z_dim=code_dim, **kwargs)
        self.hparams = {**constructor_kwargs(locals()), **{k: v for k, v in self.hparams.items() if k != "z_dim"}}
        self.eta, self.head_weight = eta, head_weight
        self.cluster_heads = nn.Parameter(torch.randn(n_classes, code_dim) * eta)  # W_c, one row per class

    def _decoder_in(self, n_classes: int, z_dim: int) -> int:
        return z_dim  # the code only

    def _code(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return y @ self.cluster_heads + z

    def head_penalty(self) -> torch.Tensor:
        """sum over pairs i < j of relu(eta - ||w_i - w_j||)^2: zero once all heads are eta apart."""
        w = self.cluster_heads
        i, j = torch.triu_indices(w.shape[0], w.shape[0], 1, device=w.device)
        dist = ((w[i] - w[j]).pow(2).sum(1) + 1e-12).sqrt()
        return F.relu(self.eta - dist).pow(2).sum()

    def _recon_penalty(self) -> Optional[torch.Tensor]:
        return self.head_weight * self.head_penalty() if self.head_weight else None

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The ``[N, code_dim]`` code W_c q(y|x) + z (z deterministic, no input noise)."""
        logits, z = self._encode(x.flatten(1))
        return self._code(logits.softmax(1), z)
