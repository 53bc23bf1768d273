"""Learning priors for adversarial autoencoders (H.-P. Wang, W.-H. Peng, W.-J. Ko; APSIPA
Trans. 2020, arXiv 1909.04443): an AAE whose prior is a learned code generator.

docs/models.md §3. Only the abstract and the README were available; Algorithm 1 is known from
a verbatim quote in a third-party re-implementation [P-quote]; that re-implementation's
own choices are [C, not the paper's]; networks and optimiser were not retrieved, so
everything else is [A]. For MNIST-sized data every network here is an MLP.

Networks (sizes are constructor arguments):

* Encoder E: D -> 1000 ReLU -> 1000 ReLU -> ``code_dim`` (linear, deterministic) and
  decoder G: ``code_dim`` -> 1000 ReLU -> 1000 ReLU -> D sigmoid, as the MNIST AAE of
  :mod:`reference_models.aae` (docs/models.md §2A [R]). ``code_dim`` = ``noise_dim`` = 8 [C,
  the re-implementation's MNIST sizes; also the AAE's z = 8].
* Code generator CG: z ~ N(0, ``noise_std``^2 I), ``noise_std`` = 1 [P: "a simple prior,
  e.g. N(0, I)"], -> 1000 ReLU -> 1000 ReLU -> ``code_dim`` linear [A: §3's "MLP CG,
  2 x 1000 ReLU"]. With ``cg_residual`` (default) the code is z + MLP(z) and the MLP's
  last layer starts at zero, so training starts from the plain AAE's N(0, I) prior and the
  prior-improvement phase moves it from there [A: ours; the paper's CG form is unknown].
* Code discriminator D_C: ``code_dim`` -> 1000 ReLU -> 1000 ReLU -> 1 [A, §3].
* Image discriminator D_I: D -> 1000 ReLU -> 1000 ReLU -> 1 [A: an MLP where §3 assumes a
  DCGAN-style conv net at 32 x 32; conv networks for CIFAR-size data are not
  implemented]. Its feature layer F (for the learned reconstruction loss) is the last
  hidden layer, after its ReLU [A: "an intermediate feature layer of D_I"].
* Init: weights N(0, 0.01^2), biases 0, as the AAE [R]; the residual CG's last layer 0.

Algorithm 1 [P-quote], per the phase it updates (BCE losses [C]; the generators use the
non-saturating form, i.e. each "descends -L_GAN" by fooling its discriminator):

* AAE phase, CG fixed: D_C step on BCE(D_C(z_c), 1) + BCE(D_C(E(x)), 0) (halved), with
  z_c = CG(z) the current prior's codes; then one step of E on BCE(D_C(E(x)), 1) + L_rec
  and of G on ``rec_weight`` * L_rec, ``rec_weight`` = lambda = 20 [C].
  L_rec = (1/N) ||F(x) - F(G(E(x)))||^2 with F(x) detached [P-quote / C] (D_I's weights
  are not updated in this phase).
* Prior-improvement phase, E fixed: D_I step on BCE(D_I(x), 1) + BCE(D_I(G(z_c)), 0) +
  BCE(D_I(G(E(x))), 0) (the three terms of L_GAN^I, summed); then one step of CG and G
  together on BCE(D_I(G(z_c)), 1) + BCE(D_I(G(E(x))), 1).
* Schedule: every training step runs the AAE phase on its minibatch; steps with
  ``step % prior_every == 0`` then also run the prior-improvement phase on the same
  minibatch. ``prior_every`` = 4 [C: three extra AAE-phase updates per
  prior-improvement update]. The schedule depends on the step counter alone. The
  reported ``d_image`` / ``g_image`` are those of the most recent prior-improvement
  update (held between them, so epoch means are not diluted); a run resumed between two
  prior updates evaluates them once without updating, drawing its noise from a private
  generator, so that it stays identical to an uninterrupted run.

Optimiser [A, §3]: Adam lr 2e-4, beta1 0.5, one optimiser per network ("encoder",
"decoder", "d_code", "code_gen", "d_image"); the decoder's is stepped in both phases, so
lambda weighs its reconstruction against its adversarial gradient. §3 assumes batch 64
(a ``TrainConfig`` setting, not the model's).

``learn_prior=False`` turns the learned prior off: no CG and no D_I are built, the AAE
phase alone runs, its D_C takes N(0, ``noise_std``^2 I) codes as real, and ``sample``
decodes N(0, ``noise_std``^2 I) codes -- a plain AAE with a fixed Gaussian prior and the
same encoder, decoder, D_C, optimisers and steps. ``rec_loss="auto"`` (default) is the
feature loss with the learned prior and the pixel loss without it (an untrained D_I has no
useful features); ``"pixel"`` (squared error summed over pixels, mean over the batch, as
the AAE) or ``"feature"`` force one. The report's comparison of the AAE with the
learned-prior AAE on the same budget is ``lpaae`` against ``lpaae`` with
``learn_prior=False`` under the same ``TrainConfig`` (add ``rec_loss="pixel"`` to both to
isolate the prior from the reconstruction loss).

Capabilities: ``encode`` (codes ``[N, code_dim]``), ``decode``, ``reconstruct``,
``prior_codes(n)`` (z_c), ``sample(n)`` = decode(prior_codes(n)) in [0, 1].
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .aae_semi import constructor_kwargs, draw_normal
from .blocks import init_normal_, mlp
from .training import make_optimizer

REC_LOSSES = ("auto", "feature", "pixel")


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _step(optimizers: list, loss: torch.Tensor) -> None:
    for o in optimizers:
        o.zero_grad(set_to_none=True)
    loss.backward()
    for o in optimizers:
        o.step()


@contextlib.contextmanager
def _frozen(*modules: Optional[nn.Module]):
    """No weight gradients for ``modules`` inside the block (gradients still flow through them)."""
    mods = [m for m in modules if m is not None]
    for m in mods:
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m in mods:
            m.requires_grad_(True)


class LearnedPriorAAE(nn.Module):
    registry_name = "lpaae"
    description = "Wang, Peng, Ko 2020 AAE with a learned prior (code generator, code and image discriminators)"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        code_dim: int = 8,
        noise_dim: int = 8,
        hidden: Sequence[int] = (1000, 1000),
        cg_hidden: Sequence[int] = (1000, 1000),
        code_disc_hidden: Sequence[int] = (1000, 1000),
        image_disc_hidden: Sequence[int] = (1000, 1000),
        noise_std: float = 1.0,
        learn_prior: bool = True,
        cg_residual: bool = True,
        rec_loss: str = "auto",
        rec_weight: float = 20.0,
        prior_every: int = 4,
        init_std: float = 0.01,
        lr: float = 2e-4,
        beta1: float = 0.5,
    ):
        super().__init__()
        self.hparams = constructor_kwargs(locals())
        if rec_loss not in REC_LOSSES:
            raise ValueError(f"rec_loss must be one of {REC_LOSSES}, got {rec_loss!r}")
        if rec_loss == "feature" and not learn_prior:
            raise ValueError("rec_loss='feature' needs the image discriminator, which learn_prior=False does not train")
        if learn_prior and cg_residual and noise_dim != code_dim:
            raise ValueError(
                f"cg_residual adds the noise to the code: noise_dim ({noise_dim}) must equal code_dim ({code_dim})"
            )
        if prior_every < 1:
            raise ValueError(f"prior_every must be >= 1, got {prior_every}")
        self.image_shape = tuple(image_shape)
        dim = math.prod(self.image_shape)
        self.code_dim, self.noise_dim, self.noise_std = code_dim, noise_dim, noise_std
        self.learn_prior, self.prior_every, self.rec_weight = learn_prior, prior_every, rec_weight
        self.rec_kind = ("feature" if learn_prior else "pixel") if rec_loss == "auto" else rec_loss
        self.encoder = mlp([dim, *hidden, code_dim])
        self.decoder = mlp([code_dim, *list(hidden)[::-1], dim])  # logits; sigmoid in decode
        self.d_code = mlp([code_dim, *code_disc_hidden, 1])
        if learn_prior:
            self.code_gen = mlp([noise_dim, *cg_hidden, code_dim])
            self.d_image = mlp([dim, *image_disc_hidden, 1])
        init_normal_(self, init_std)
        if learn_prior and cg_residual:
            nn.init.zeros_(self.code_gen[-1].weight)
        self._held: Optional[dict] = None  # latest prior-improvement losses (not state)

    # --- capabilities ------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z)).view(z.shape[0], *self.image_shape)

    def noise(self, n: int, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """z ~ N(0, noise_std^2 I): CG's input, or the codes themselves without a learned prior."""
        dim = self.noise_dim if self.learn_prior else self.code_dim
        return draw_normal((n, dim), self.noise_std, device, generator)

    def generate_codes(self, z: torch.Tensor) -> torch.Tensor:
        """The prior's map: CG(z) (z + MLP(z) when residual); the identity without a learned prior."""
        if not self.learn_prior:
            return z
        out = self.code_gen(z)
        return z + out if self.hparams["cg_residual"] else out

    def prior_codes(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` codes z_c from the (learned) prior; keeps the graph to CG."""
        device = next(self.parameters()).device
        return self.generate_codes(self.noise(n, device, generator))

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` samples ``[n, C, H, W]`` in [0, 1]: z ~ N(0, noise_std^2 I) -> CG -> decoder."""
        return self.decode(self.prior_codes(n, generator=generator))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # --- losses ----------------------------------------------------------------
    def image_features(self, flat: torch.Tensor) -> torch.Tensor:
        """F(x): D_I's last hidden layer (after its activation)."""
        return self.d_image[:-1](flat)

    def reconstruction_loss(self, flat: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """L_rec per image, mean over the batch: D_I features (F(x) detached) or pixels."""
        x_rec = torch.sigmoid(logits)
        if self.rec_kind == "pixel":
            return (x_rec - flat).pow(2).sum(1).mean()
        return (self.image_features(flat).detach() - self.image_features(x_rec)).pow(2).sum(1).mean()

    # --- training --------------------------------------------------------------
    def configure_optimizers(self):
        betas = (self.hparams["beta1"], 0.999)
        nets = ["encoder", "decoder", "d_code"] + (["code_gen", "d_image"] if self.learn_prior else [])
        return {k: make_optimizer(torch.optim.Adam, getattr(self, k).parameters(), lr=self.hparams["lr"], betas=betas) for k in nets}

    def on_fit_start(self, x, y=None) -> None:
        self._held = None

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        flat = x.flatten(1)
        out = self.aae_phase(flat, optimizers)
        if self.learn_prior:
            if step % self.prior_every == 0:
                self._held = self.prior_phase(flat, optimizers)
            elif self._held is None:  # resumed between two prior updates: evaluate, do not update, with
                # a private generator so that the global RNG stream stays that of an uninterrupted run
                private = torch.Generator().manual_seed(step)
                self._held = self.prior_phase(flat, optimizers, update=False, generator=private)
            out.update(self._held)
        return out

    def aae_phase(self, flat: torch.Tensor, optimizers) -> dict:
        """D_C step (prior codes real, encoder codes fake), then the encoder step (fool D_C +
        L_rec) and the decoder step (``rec_weight`` * L_rec). CG and D_I are not updated."""
        n = flat.shape[0]
        with torch.no_grad():
            z_c = self.prior_codes(n)
        z_e = self.encoder(flat)
        d_loss = 0.5 * (_bce(self.d_code(z_c), 1.0) + _bce(self.d_code(z_e.detach()), 0.0))
        _step([optimizers["d_code"]], d_loss)

        logits = self.decoder(z_e)
        for k in ("encoder", "decoder"):
            optimizers[k].zero_grad(set_to_none=True)
        with _frozen(self.d_code, getattr(self, "d_image", None)):
            g_loss = _bce(self.d_code(z_e), 1.0)
            rec = self.reconstruction_loss(flat, logits)
            (g_loss + rec).backward()  # the decoder's gradient comes from rec alone: scale it to lambda * rec
        for p in self.decoder.parameters():
            if p.grad is not None:
                p.grad.mul_(self.rec_weight)
        optimizers["encoder"].step()
        optimizers["decoder"].step()
        with torch.no_grad():
            mse = (torch.sigmoid(logits) - flat).pow(2).sum(1).mean()
        return {"rec_loss": rec.item(), "rec_mse": mse.item(), "d_code": d_loss.item(), "g_code": g_loss.item()}

    def prior_phase(
        self, flat: torch.Tensor, optimizers, *, update: bool = True, generator: Optional[torch.Generator] = None
    ) -> dict:
        """D_I step (real images vs decoded prior codes and reconstructions), then one step
        of CG and the decoder fooling D_I. The encoder and D_C are not updated. With
        ``update=False`` the same losses are only evaluated (noise from ``generator``)."""
        n = flat.shape[0]
        with torch.set_grad_enabled(update):
            x_p = torch.sigmoid(self.decoder(self.prior_codes(n, generator=generator)))  # G(z_c): graph to CG, G
            with torch.no_grad():
                z_e = self.encoder(flat)  # E is fixed in this phase
            x_r = torch.sigmoid(self.decoder(z_e))  # G(E(x)): graph to G
            real, fake_p, fake_r = self.d_image(torch.cat([flat, x_p.detach(), x_r.detach()])).squeeze(1).split(n)
            d_loss = _bce(real, 1.0) + _bce(fake_p, 0.0) + _bce(fake_r, 0.0)
            if update:
                _step([optimizers["d_image"]], d_loss)
            with _frozen(self.d_image):
                # = BCE(D_I(G(z_c)), 1) + BCE(D_I(G(E(x))), 1): both halves have n images
                g_loss = 2.0 * _bce(self.d_image(torch.cat([x_p, x_r])).squeeze(1), 1.0)
                if update:
                    _step([optimizers["code_gen"], optimizers["decoder"]], g_loss)
        return {"d_image": d_loss.item(), "g_image": g_loss.item()}
