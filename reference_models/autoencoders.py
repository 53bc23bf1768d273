"""Regularised MLP autoencoders: sparse, denoising and contractive (docs/models.md §10), with the
Markov-chain samplers that make the denoising and contractive ones generative.

All three share one shape: flattened images ``[N, C*H*W]`` in [0, 1] -> ``hidden`` widths ->
a code of ``code_dim`` units (``activation`` after every encoder layer, the code included)
-> the mirrored decoder -> sigmoid means in [0, 1]. Adam (lr 1e-3, betas (0.9, 0.999)) [A:
the Keras examples' optimiser; §10 lists "Adam/Adadelta"]. PyTorch's default initialisation.

Reconstruction loss [A]: ``loss="bce"`` (default; cross-entropy of the [0, 1] grey levels
under the sigmoid means, as the Keras examples do) or ``"mse"``. ``reduction="mean"``
(default) averages it over pixels per example, then over the batch: the Keras convention in
which §10 states lambda = 1e-4, and the one every penalty weight below is given in;
``reduction="sum"`` sums over pixels (the UFLDL / Rifai et al. convention of
``||x - g(f(x))||^2``). Penalties are per example, averaged over the batch.

* :class:`SparseAE` [§10]: 784-32 ReLU-784 sigmoid [A: the Keras example], loss + lambda
  ||h||_1 with lambda = 1e-4 [C lecture slides: ``l1(10e-5)``, and 10e-5 = 1e-4].
  ``sparsity="kl"``: beta sum_j KL(rho || rho_hat_j) with rho_hat the batch mean of a sigmoid
  code, rho = 0.05, beta = 3 [A]; that beta was stated with a summed squared error (UFLDL's
  1/2 ||x_hat - x||^2), so pair it with ``loss="mse", reduction="sum"``. No sampler: the
  sparse autoencoder is not a generative model and none is invented here.
* :class:`DenoisingAE` [§10]: trained to map a corrupted x~ back to the clean x.
  ``corruption="gaussian"`` (default): x~ = clip(x + 0.5 N(0, 1), 0, 1) [C slides,
  ``noise_factor = 0.5``]; ``"masking"``: a fraction 0.25 of the pixels set to 0 [A, Vincent
  et al. 2008]; ``"salt_pepper"``: each pixel, with probability ``salt_pepper_fraction`` (0.4),
  replaced by 0 or 1 with equal odds [C yaoli/GSN model.py ``salt_and_pepper``, the
  ``input_salt_and_pepper = 0.4`` of its run scripts]. 784-1000 sigmoid-784 [A].
* :class:`ContractiveAE` [§10]: one sigmoid layer h = sigmoid(W x + b), loss + lambda
  ||J_f(x)||_F^2 with the closed form sum_j (h_j (1 - h_j))^2 sum_i W_ji^2, lambda = 1e-4
  [A]. 1000 code units and a tied decoder x_hat = sigmoid(W^T h + c) [R: Rifai et al. 2011].

Samplers, all ``sample(n, *, generator)`` -> ``[n, C, H, W]`` in [0, 1], in eval / no-grad mode.
``chains`` Markov chains run side by side from their start points; after ``burn_in``
transitions, every ``thin``-th state of every chain is kept until ``n`` images are collected
(defaults: 100 chains, burn-in 100, thin 10 [A]). Start points: ``"noise"`` (uniform pixels)
or ``"data"``: a random pick from ``n_chain_starts`` (100) training images that
``on_fit_start`` stores in the buffer ``chain_starts`` (chosen by a fixed seed, saved with the
checkpoint, so a loaded model rebuilds the same starts).

* :meth:`DenoisingAE.sample`: the Markov chain of Bengio, Yao, Alain & Vincent 2013
  ("Generalized denoising auto-encoders as generative models"): x_t -> corrupt with the
  training corruption -> reconstruct -> x_{t+1} ~ Bernoulli(reconstruction) (or the means,
  ``chain_visible="mean"``); the kept images are the reconstruction means. Start: noise [A].
* :meth:`ContractiveAE.sample`: the process of Rifai, Bengio, Dauphin & Vincent 2012 ("A
  generative process for sampling contractive auto-encoders"), as recalled [R]:
  x_{t+1} = g(f(x_t) + eps J J^T n) with n ~ N(0, I) in code space and J = J_f(x_t), so the
  code moves along the Jacobian's leading directions (``sample_noise="jjt"``); or
  ``"j"``: f(x_t) + eps J n with n ~ N(0, I) in pixel space (the code noise has covariance
  eps^2 J J^T). eps = 1 [A: on the 8x8 digits it gives samples whose per-pixel spread matches
  the data's; 0.1 stays near the start images, 10 leaves the digit manifold]. Start: training
  images [A]. On MNIST eps = 1 drives the chains off the digit manifold (Parzen -271 nats)
  while 0.1 gives -52, so the step must be chosen per data set: ``sample_grid`` (e.g.
  ``{"step": [0.03, 0.1, 0.3, 1.0], "burn_in": [100, 1000]}``) names candidate chain settings
  and :meth:`ContractiveAE.choose_on_validation` (:func:`choose_chain_settings`) picks the one
  whose samples give the best Parzen log-likelihood on the VALIDATION split (sigma chosen on
  valid[0:1000], the log-likelihood averaged over valid[1000:2000]; the test split is never
  seen) and records it in the buffers ``sample_choice`` / ``sample_choice_ll``, so the
  checkpoint keeps the choice; ``sample()`` refuses to run before a choice is recorded.

Close kin, not the published models (footnote these in any report): the GAN paper's Parzen
table (docs/models.md §1 [P]) has "Stacked CAE" (121 +- 1.6 on MNIST) and "Deep GSN" (214 +- 1.1)
rows. As recalled [R], the first is a two-layer CAE sampled with the Rifai et al. process in
its top representation (Bengio et al. 2013, "Better mixing via deep representations") and
the second a deep generative stochastic network trained with walkback (Bengio et al. 2014),
whose MNIST chains used salt-and-pepper noise. Here: one-layer CAE, and a one-layer DAE with
the 2013 chain and no walkback. The Deep GSN itself, as in its authors' code, is
:class:`reference_models.gsn.GSN`; the DAE chain stays as its one-layer kin.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import evaluating, mlp
from .chains import (  # noqa: F401  (re-exported: the chain machinery lived here)
    SAMPLE_GRID_KEYS,
    ChainChoiceMixin,
    _expand_grid,
    choose_chain_settings,
    draw_chain_starts,
    fill_chain_starts,
    markov_chain_samples,
    register_chain_starts,
)

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
LOSSES = ("bce", "mse")
REDUCTIONS = ("mean", "sum")


def _hparams(local_vars: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in local_vars.items() if k not in ("self", "__class__")}


def _check(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


# --- Markov-chain sampling shared by the generative models (also used by reference_models.dbn) ---
def salt_and_pepper(x: torch.Tensor, p: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Salt-and-pepper noise as in the GSN code (yaoli/GSN ``model.py``, ``salt_and_pepper``):
    each value independently, with probability ``p``, is replaced by 0 or by 1 (equal odds);
    the others are kept. Every random draw comes from ``generator``."""
    hit = torch.rand(x.shape, device=x.device, generator=generator) < p
    salt = torch.rand(x.shape, device=x.device, generator=generator) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


class _MLPAutoEncoder(nn.Module):
    """Encoder ``D -> hidden -> code_dim`` (``activation`` after each layer), mirrored decoder
    with sigmoid output (or tied to the encoder's transpose when there is a single layer)."""

    def __init__(self, image_shape, code_dim, hidden, activation, tied, loss, reduction, lr, betas):
        super().__init__()
        _check("activation", activation, ACTIVATIONS)
        _check("loss", loss, LOSSES)
        _check("reduction", reduction, REDUCTIONS)
        if tied and len(hidden):
            raise ValueError("tied=True needs a single encoder layer (hidden=[])")
        self.image_shape = tuple(image_shape)
        self.dim = math.prod(self.image_shape)
        self.code_dim, self.tied, self.loss, self.reduction = code_dim, tied, loss, reduction
        act = ACTIVATIONS[activation]
        self.encoder = mlp([self.dim, *hidden, code_dim], activation=act, final_activation=act())
        if tied:
            self.decoder_bias = nn.Parameter(torch.zeros(self.dim))
        else:
            self.decoder = mlp([code_dim, *list(hidden)[::-1], self.dim], activation=act)  # -> logits

    # --- capabilities --------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code ``[N, code_dim]`` of images ``[N, C, H, W]`` (differentiable)."""
        return self.encoder(x.flatten(1))

    def decode_logits(self, h: torch.Tensor) -> torch.Tensor:
        if self.tied:
            return h @ self.encoder[0].weight + self.decoder_bias
        return self.decoder(h)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """The decoder's means ``[N, C, H, W]`` in [0, 1]."""
        return torch.sigmoid(self.decode_logits(h)).view(h.shape[0], *self.image_shape)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """g(f(x)) of clean images, in [0, 1]."""
        return self.decode(self.encode(x))

    # --- training ------------------------------------------------------------------------
    def reconstruction_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per example ``[N]``: BCE or squared error, mean or sum over pixels (``target`` flat)."""
        if self.loss == "bce":
            per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        else:
            per_pixel = (torch.sigmoid(logits) - target).pow(2)
        return per_pixel.mean(1) if self.reduction == "mean" else per_pixel.sum(1)

    def corrupt(self, flat: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return flat  # no corruption but in DenoisingAE

    def penalty(self, flat_in: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return h.new_zeros(())

    def configure_optimizers(self):
        h = self.hparams
        from .training import make_optimizer  # noqa: PLC0415 (FUSED_OPTIMIZERS switch)

        return {"ae": make_optimizer(torch.optim.Adam, self.parameters(), lr=h["lr"], betas=tuple(h["betas"]))}

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        """One Adam step on reconstruction (of the clean x) + penalty. Labels are ignored."""
        flat = x.flatten(1)
        inp = self.corrupt(flat)
        h = self.encoder(inp)
        rec = self.reconstruction_loss(self.decode_logits(h), flat).mean()
        pen = self.penalty(inp, h)
        loss = rec + pen
        opt = optimizers["ae"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out = torch.stack([loss, rec, pen]).detach().tolist()
        return {"loss": out[0], "rec": out[1], "penalty": out[2]}

    # --- chain sampling (DenoisingAE, ContractiveAE) -------------------------------------
    def on_fit_start(self, x: torch.Tensor, y=None) -> None:
        if hasattr(self, "chain_starts"):
            fill_chain_starts(self, x)

    def _chain_samples(self, n, step, *, generator, burn_in, thin, chains, start) -> torch.Tensor:
        h = self.hparams
        start = h["sample_start"] if start is None else start
        _check("start", start, ("noise", "data"))
        device = self.chain_starts.device

        def init(k):
            if start == "data":
                x0 = draw_chain_starts(self, k, generator)
            else:
                x0 = torch.rand(k, self.dim, device=device, generator=generator)
            return x0, x0

        with evaluating(self):
            out = markov_chain_samples(
                n, init, step, lambda s: s[1],
                chains=h["sample_chains"] if chains is None else chains,
                burn_in=h["sample_burn_in"] if burn_in is None else burn_in,
                thin=h["sample_thin"] if thin is None else thin,
            )
        return out.view(n, *self.image_shape)


class SparseAE(_MLPAutoEncoder):
    registry_name = "sparse_ae"
    description = "Sparse autoencoder (L1 activity penalty, or KL sparsity); no sampler"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        code_dim: int = 32,
        hidden: Sequence[int] = (),
        activation: str = "relu",
        sparsity: str = "l1",
        l1: float = 1e-4,
        rho: float = 0.05,
        beta: float = 3.0,
        tied: bool = False,
        loss: str = "bce",
        reduction: str = "mean",
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
    ):
        hp = _hparams(locals())
        super().__init__(image_shape, code_dim, hidden, activation, tied, loss, reduction, lr, betas)
        self.hparams = hp
        _check("sparsity", sparsity, ("l1", "kl"))
        if sparsity == "kl" and activation != "sigmoid":
            raise ValueError("sparsity='kl' needs activation='sigmoid' (code activities in (0, 1))")
        if sparsity == "kl" and not 0 < rho < 1:
            raise ValueError(f"rho must lie in (0, 1), got {rho!r}")
        self.sparsity = sparsity

    def penalty(self, flat_in, h):
        hp = self.hparams
        if self.sparsity == "l1":
            return hp["l1"] * h.abs().sum(1).mean()
        rho, rho_hat = hp["rho"], h.mean(0).clamp(1e-6, 1 - 1e-6)
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        return hp["beta"] * kl.sum()


class DenoisingAE(_MLPAutoEncoder):
    registry_name = "denoising_ae"
    description = "Denoising autoencoder (Gaussian, masking or salt-and-pepper corruption) with the Bengio et al. 2013 generative chain"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        code_dim: int = 1000,
        hidden: Sequence[int] = (),
        activation: str = "sigmoid",
        corruption: str = "gaussian",
        noise_std: float = 0.5,
        mask_fraction: float = 0.25,
        salt_pepper_fraction: float = 0.4,
        tied: bool = False,
        loss: str = "bce",
        reduction: str = "mean",
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        chain_visible: str = "sample",
        sample_start: str = "noise",
        sample_chains: int = 100,
        sample_burn_in: int = 100,
        sample_thin: int = 10,
        n_chain_starts: int = 100,
    ):
        hp = _hparams(locals())
        super().__init__(image_shape, code_dim, hidden, activation, tied, loss, reduction, lr, betas)
        self.hparams = hp
        _check("corruption", corruption, ("gaussian", "masking", "salt_pepper"))
        _check("chain_visible", chain_visible, ("sample", "mean"))
        _check("sample_start", sample_start, ("noise", "data"))
        if not 0 <= mask_fraction < 1 or noise_std < 0:
            raise ValueError(f"need 0 <= mask_fraction < 1 and noise_std >= 0; got {mask_fraction!r}, {noise_std!r}")
        if not 0 <= salt_pepper_fraction <= 1:
            raise ValueError(f"need 0 <= salt_pepper_fraction <= 1; got {salt_pepper_fraction!r}")
        register_chain_starts(self, n_chain_starts, self.dim)

    def corrupt(self, flat, generator=None):
        """x~ ~ C(x~ | x): clip(x + noise_std N(0, 1), 0, 1), x with ``mask_fraction`` of its pixels
        zeroed, or salt-and-pepper noise on ``salt_pepper_fraction`` of them (the chain in
        :meth:`sample` uses the same corruption as training)."""
        hp = self.hparams
        if hp["corruption"] == "gaussian":
            noise = torch.randn(flat.shape, device=flat.device, generator=generator)
            return (flat + hp["noise_std"] * noise).clamp(0.0, 1.0)
        if hp["corruption"] == "salt_pepper":
            return salt_and_pepper(flat, hp["salt_pepper_fraction"], generator)
        keep = torch.rand(flat.shape, device=flat.device, generator=generator) >= hp["mask_fraction"]
        return flat * keep

    @torch.no_grad()
    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        """g(f(x)) of (already corrupted) images: the same map as :meth:`reconstruct`."""
        return self.reconstruct(x)

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: Optional[torch.Generator] = None, burn_in: Optional[int] = None,
        thin: Optional[int] = None, chains: Optional[int] = None, start: Optional[str] = None,
    ) -> torch.Tensor:
        """``n`` images ``[n, C, H, W]`` in [0, 1] from the generalized-DAE chain (Bengio et al.
        2013): x -> corrupt -> reconstruction means m -> x ~ Bernoulli(m) (or m itself with
        ``chain_visible="mean"``); the kept images are the means m. Close kin of the published
        Deep GSN row, not that model (see the module docstring). Keyword arguments override
        the ``sample_*`` hyperparameters."""
        bernoulli = self.hparams["chain_visible"] == "sample"

        def step(state):
            m = torch.sigmoid(self.decode_logits(self.encoder(self.corrupt(state[0], generator))))
            return (torch.bernoulli(m, generator=generator) if bernoulli else m), m

        return self._chain_samples(n, step, generator=generator, burn_in=burn_in, thin=thin, chains=chains, start=start)


class ContractiveAE(ChainChoiceMixin, _MLPAutoEncoder):
    registry_name = "contractive_ae"
    description = "Contractive autoencoder (one sigmoid layer, closed-form Jacobian penalty) with the Rifai et al. 2012 sampler"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        code_dim: int = 1000,
        contraction: float = 1e-4,
        tied: bool = True,
        loss: str = "bce",
        reduction: str = "mean",
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        sample_step: float = 1.0,
        sample_noise: str = "jjt",
        sample_start: str = "data",
        sample_chains: int = 100,
        sample_burn_in: int = 100,
        sample_thin: int = 10,
        n_chain_starts: int = 100,
        sample_grid: Optional[dict] = None,
    ):
        hp = _hparams(locals())
        _expand_grid(sample_grid)  # validates it
        if sample_grid is not None:
            hp["sample_grid"] = {k: list(v) for k, v in sample_grid.items()}
        super().__init__(image_shape, code_dim, (), "sigmoid", tied, loss, reduction, lr, betas)
        self.hparams = hp
        _check("sample_noise", sample_noise, ("jjt", "j"))
        _check("sample_start", sample_start, ("noise", "data"))
        if contraction < 0:
            raise ValueError(f"contraction must be >= 0, got {contraction!r}")
        register_chain_starts(self, n_chain_starts, self.dim)
        self._init_chain_choice(sample_grid)

    @property
    def weight(self) -> torch.Tensor:
        """The encoder's W ``[code_dim, D]`` (h = sigmoid(W x + b))."""
        return self.encoder[0].weight

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """J_f(x) = diag(h (1 - h)) W per example, ``[N, code_dim, D]`` (closed form)."""
        h = self.encode(x)
        return (h * (1 - h)).unsqueeze(2) * self.weight.unsqueeze(0)

    def jacobian_penalty(self, x: torch.Tensor) -> torch.Tensor:
        """||J_f(x)||_F^2 per example ``[N]``: sum_j (h_j (1 - h_j))^2 sum_i W_ji^2."""
        return self._frobenius2(self.encode(x))

    def _frobenius2(self, h: torch.Tensor) -> torch.Tensor:
        return (h * (1 - h)).pow(2) @ self.weight.pow(2).sum(1)

    def penalty(self, flat_in, h):
        return self.hparams["contraction"] * self._frobenius2(h).mean()

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: Optional[torch.Generator] = None, burn_in: Optional[int] = None,
        thin: Optional[int] = None, chains: Optional[int] = None, start: Optional[str] = None,
        step: Optional[float] = None, noise: Optional[str] = None,
    ) -> torch.Tensor:
        """``n`` images ``[n, C, H, W]`` in [0, 1] from the Rifai et al. 2012 process:
        x_{t+1} = g(f(x_t) + eps J J^T n), n ~ N(0, I_code) (``sample_noise="jjt"``), or
        g(f(x_t) + eps J n), n ~ N(0, I_pixels) (``"j"``), with J = J_f(x_t) and eps =
        ``sample_step``; the kept images are the decoder means. A one-layer close kin of the
        published Stacked CAE row (see the module docstring). With ``sample_grid`` the setting
        recorded by :meth:`choose_on_validation` replaces the ``sample_*`` hyperparameters it
        names (RuntimeError before one is recorded); keyword arguments override both."""
        hp = self.hparams
        given = {"step": step, "noise": noise, "burn_in": burn_in, "thin": thin, "chains": chains, "start": start}
        st = self._chain_setting(given, {k: hp[f"sample_{k}"] for k in given})
        eps, w = st["step"], self.weight
        noise_kind = st["noise"]
        _check("noise", noise_kind, ("jjt", "j"))
        burn_in, thin, chains, start = st["burn_in"], st["thin"], st["chains"], st["start"]
        wwt = w @ w.T if noise_kind == "jjt" else None

        def transition(state):
            h = torch.sigmoid(state[0] @ w.T + self.encoder[0].bias)
            s = h * (1 - h)  # J = diag(s) W
            if wwt is not None:  # J J^T n = s * (W W^T (s * n))
                z = torch.randn(h.shape, device=h.device, generator=generator)
                dh = s * ((s * z) @ wwt)
            else:  # J n = s * (W n)
                z = torch.randn(h.shape[0], self.dim, device=h.device, generator=generator)
                dh = s * (z @ w.T)
            m = torch.sigmoid(self.decode_logits(h + eps * dh))
            return m, m

        return self._chain_samples(n, transition, generator=generator, burn_in=burn_in, thin=thin, chains=chains, start=start)
