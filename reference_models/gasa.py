"""Generative adversarial stacked convolutional autoencoders (GASA; Ruiz-Garcia, Palade,
Elshaw, Awad ~2020, arXiv 2007.09790, "... for Facial Pose Normalization and Emotion
Recognition") and the two baselines built from the same network: a plain convolutional
autoencoder and the same autoencoder trained end to end with an adversarial term.

docs/models.md §5. Only the abstract was available, so almost everything here is [A]. What the
abstract says [P, abstract]: faces at up to ±60° are mapped to a frontal, illumination-
invariant face; the stack is built by a "generative adversarial gradual greedy layer-wise"
algorithm from shallow convolutional-AE blocks, each paired with a shallow CNN
discriminator (the pairing is from a third-party summary, emergentmind.com); data CK+, Yale
(illumination), KDEF (poses, 7 emotions). NOT implemented: the paper's "novel" convolution
combining local and global spatial information and its reduced-parameter convolution
exploiting facial symmetry (no description available); plain convolutions stand in.

Training data: pairs through the shared loop [A, evalkit convention]. ``fit`` takes
``[N, C', H, W]`` tensors only, so a pair (input, target) -- side-lit -> evenly lit, posed
-> frontal -- is stacked along channels: ``x = torch.cat([input, target], dim=1)``,
``[N, 2C, H, W]``, with ``image_shape = (C, H, W)`` the shape of ONE image
(:func:`make_pairs` builds it, :func:`split_pairs` undoes it). An ``x`` with ``C``
channels is its own target (plain autoencoding); any other channel count is an error.
``restore(y)`` / ``reconstruct(y)`` take the input images alone, ``[N, C, H, W]``.

Network, shared by all three models [A]:

* Encoder: the image is rescaled to ``2 x - 1``, then ``L = len(channels)`` layers
  (default ``channels`` = (32, 64, 128)), layer l: conv ``kernel`` x ``kernel`` (4;
  3 allowed) stride 2 padding 1 -> [BatchNorm] -> LeakyReLU(``slope`` = 0.2). H and W must
  be multiples of 2^L; the bottleneck is ``[N, channels[-1], H / 2^L, W / 2^L]``
  (``encode``; ``flatten=True`` gives ``[N, D]``). The same encoder (:class:`ConvEncoder`)
  is the trunk of ``reference_models.emotion.EmotionCNN``, so weights transfer 1:1.
* Decoder, mirrored: layer l maps ``channels[l]`` back to ``channels[l-1]`` with a
  transposed conv of the same kernel (stride 2, padding 1; output padding 1 for kernel 3)
  -> [BatchNorm] -> LeakyReLU(``slope``), the same activation as the encoder so that each
  decoder layer's output lives in the space of the encoder representation it rebuilds
  (needed by the layer-wise targets below). Decoder layer 1 maps to C channels with a
  sigmoid: output in [0, 1].
* ``code_dim`` (0: off, default) adds a dense layer after the last conv (flatten -> linear
  ``code_dim`` -> LeakyReLU; decoder: linear -> LeakyReLU -> reshape) as one more block
  [A]: a fully convolutional stack only moves content as far as its receptive field
  (the encoder's is 22 pixels with 3 layers), while pose normalisation moves it across
  the face; the dense layer is our stand-in for the paper's layer "combining local and
  global spatial information". It fixes the image size to ``image_shape``; without it the
  networks are fully convolutional and ``restore`` takes any H, W that are multiples of
  2^depth. Evidence (evalkit trial, 16x16, channels (8, 16), 64 Adam steps): mirroring a
  digit from the left half of the image to the right half, the convolutional AE collapsed
  to a blank output (MSE 0.058, that of an all-zero image), with ``code_dim`` = 32 it
  reached MSE 0.014.
* ``batch_norm`` False by default [A]: without it a network's output for an image does not
  depend on its minibatch, and GASA's frozen layers have no running statistics to drift.
  With it, conv biases are dropped and frozen layers run in eval mode.
* PyTorch default initialisation [A].
* Reconstruction loss ``loss`` = ``"mse"`` (default; the mean squared error per pixel, the
  quantity PSNR measures) or ``"l1"`` (mean absolute error per pixel) [A], between the
  output and the TARGET.

Models:

* :class:`ConvAutoencoder` (``conv_ae``): reconstruction loss only; Adam lr 1e-3, beta1 0.9
  [A, Adam's defaults].
* :class:`GANAutoencoder` (``gan_ae``): G = the autoencoder, trained end to end on
  ``loss + adv_weight * BCE(D(G(x)), 1)`` (non-saturating); D minimises
  ``1/2 [BCE(D(target), 1) + BCE(D(G(x)), 0)]``. D [A, DCGAN]: conv 4x4 stride 2 per entry
  of ``d_channels`` (64, 128, 256), BatchNorm on all but the first (``d_batch_norm``),
  LeakyReLU 0.2, flatten -> linear -> 1 logit. Per minibatch one D step, then one G step
  scored by the updated D (as ``restoration_gan``). Adam lr 2e-4, beta1 0.5 for both [A].
  ``adv_weight`` = 1e-3 [A]: the weight SRGAN puts on the same non-saturating term beside a
  per-pixel mean MSE. The pixel loss is a per-pixel *mean* (~0.005-0.02 for a fair face
  reconstruction) while the BCE is ~0.7, so a weight of 0.01 or more would let the
  adversarial term dominate the reconstruction (the restoration GAN's experience with a
  mean L1 and weight 0.1: the L1 doubled); 1e-3 keeps it a correction towards sharper
  output. ``adv_weight=0`` gives the plain autoencoder at the GAN's optimiser settings.
* :class:`GASA` (``gasa``), the [A] algorithm of docs/models.md §5 made concrete. Block l =
  encoder layer l + decoder layer l (L = ``len(channels)`` blocks, one more with
  ``code_dim``), with its own discriminator D_l on the space that block rebuilds (D_1:
  images; D_l, l > 1: the (l-1)-th encoder representation, a ``channels[l-2]``-channel
  map). D_l as GANAutoencoder's D with ``d_channels`` = (64,): one conv layer [A: "shallow
  CNN discriminator"]. Order: outermost block first, as greedy layer-wise training does:

  1. block stage l (``block_epochs`` epochs): block 1 learns input image -> target image
     with D_1 on images; block l > 1 learns, from the representation h_{l-1} of the input
     under the trained (frozen, eval-mode, no gradient) encoder layers 1..l-1, to rebuild
     h_{l-1} of the TARGET, with D_l judging real = h_{l-1}(target) against its output.
     Only block l's and D_l's parameters are stepped.
  2. fine-tune stage l (``finetune_epochs``): the stack of blocks 1..l as one autoencoder,
     image -> target image, with D_1 on images; blocks 1..l and D_1 are stepped. For l = 1
     this is the same objective as block stage 1 (block 1 trains ``block_epochs +
     finetune_epochs`` epochs in all).
  3. after fine-tune stage L (the complete stack) the loop keeps fine-tuning the whole
     stack for every further epoch: the final fine-tune.

  Losses as GANAutoencoder's (``loss`` + ``adv_weight`` x non-saturating BCE; D loss
  1/2 [real, fake]); in block stages l > 1 the reconstruction loss is the mean squared (or
  absolute) error between feature maps, which are not in [0, 1], so ``adv_weight`` weighs
  it on another scale [A]. One Adam optimiser per block and per discriminator (lr 2e-4,
  beta1 0.5 [A]); a block's Adam state carries over from its block stage into the
  fine-tune stages. Stages depend on the epoch counter alone (:meth:`GASA.stage`), never
  on the total number of epochs; ``block_epochs = 0`` skips the layer-wise stages (the
  stack grows every ``finetune_epochs``), both 0 trains the full stack from the start.
  The stack depth of the current stage is kept in the buffer ``depth_`` (L for a fresh
  model), so ``encode`` / ``reconstruct`` / ``restore`` of a checkpoint taken mid-schedule
  use the blocks trained so far; :meth:`encoder_module` is always the full L-layer
  encoder (for classifier pre-training). The train-step log reports ``stage`` (0-based
  index: block 1 = 0, fine-tune 1 = 1, block 2 = 2, ...), ``depth`` and ``finetune``.
  Alternative reading, NOT implemented: each new block inserted in the middle of the
  current stack and trained on image-space targets with the outer layers frozen.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .aae_semi import constructor_kwargs
from .blocks import evaluating
from .gasa_blocks import (  # make_pairs is re-exported: the paired-data convention belongs to these models
    KERNELS,
    LOSSES,
    ConvDecoder,
    ConvEncoder,
    Discriminator,
    adam,
    adversarial_step,
    make_pairs,
    pixel_loss,
    psnr,
    split_pairs,
)

__all__ = ["ConvAutoencoder", "GANAutoencoder", "GASA", "ConvEncoder", "ConvDecoder", "make_pairs", "split_pairs"]


# ----------------------------------------------------------------------------- models
class ConvAutoencoder(nn.Module):
    registry_name = "conv_ae"
    description = "convolutional encoder-decoder (stride-2 convs, mirrored transposed convs, sigmoid), image -> target image"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 48, 48),
        channels: Sequence[int] = (32, 64, 128),
        kernel: int = 4,
        batch_norm: bool = False,
        slope: float = 0.2,
        code_dim: int = 0,
        loss: str = "mse",
        lr: float = 1e-3,
        beta1: float = 0.9,
    ):
        super().__init__()
        self.hparams = constructor_kwargs(locals())
        self._build_autoencoder(image_shape, channels, kernel, batch_norm, slope, code_dim, loss)

    def _build_autoencoder(self, image_shape, channels, kernel, batch_norm, slope, code_dim, loss) -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if len(image_shape) != 3 or not channels:
            raise ValueError(f"image_shape must be (C, H, W) and channels non-empty; got {image_shape!r}, {channels!r}")
        c, h, w = (int(v) for v in image_shape)
        f = 2 ** len(channels)
        if h % f or w % f:
            raise ValueError(
                f"image_shape {tuple(image_shape)}: H and W must be multiples of 2^{len(channels)} = {f} (one halving per layer)"
            )
        self.image_shape = (c, h, w)
        self.loss_kind = loss
        if code_dim < 0:
            raise ValueError(f"code_dim must be >= 0 (0: no dense layer), got {code_dim}")
        self.encoder = ConvEncoder(c, channels, kernel, batch_norm, slope, code_dim, (h, w))
        self.decoder = ConvDecoder(c, channels, kernel, batch_norm, slope, code_dim, (h, w))
        self.n_conv = len(channels)

    @property
    def n_blocks(self) -> int:
        return len(self.encoder.layers)

    @property
    def depth(self) -> int:
        """Encoder layers used by encode / decode / reconstruct (all of them here)."""
        return self.n_blocks

    def split_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A training minibatch -> (inputs, targets); see :func:`split_pairs`."""
        return split_pairs(x, self.image_shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Input images -> output images in [0, 1] (with gradients; current depth)."""
        return self.decoder(self.encoder(x, self.depth), self.depth)

    # --- capabilities ------------------------------------------------------------
    def _check_images(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = self.image_shape
        if self.depth > self.n_conv:  # the dense code layer fixes the size
            if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
                raise ValueError(f"expected input images [N, {c}, {h}, {w}] (the dense code layer fixes the size); got {tuple(x.shape)}")
        else:
            f = 2**self.depth
            if x.ndim != 4 or x.shape[1] != c or x.shape[2] % f or x.shape[3] % f:
                raise ValueError(f"expected input images [N, {c}, H, W] with H, W multiples of {f}; got {tuple(x.shape)}")
        return x.to(next(self.parameters()).device, torch.float32)

    def _no_grad_eval(self, fn, x):
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                return fn(self._check_images(x))
        finally:
            self.train(was)

    def encode(self, x: torch.Tensor, flatten: bool = False) -> torch.Tensor:
        """Bottleneck features ``[N, channels[depth-1], H / 2^depth, W / 2^depth]`` (``flatten``: ``[N, D]``;
        with ``code_dim`` and the full depth: ``[N, code_dim]``)."""
        z = self._no_grad_eval(lambda v: self.encoder(v, self.depth), x)
        return z.flatten(1) if flatten else z

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bottleneck feature maps -> images in [0, 1]."""
        was = self.training
        self.eval()
        out = self.decoder(z.to(next(self.parameters()).device), self.depth)
        self.train(was)
        return out

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Input images ``[N, C, H, W]`` -> output images in [0, 1] (eval mode, no gradient)."""
        return self._no_grad_eval(self.forward, x)

    def restore(self, y: torch.Tensor) -> torch.Tensor:
        """Restorer capability: degraded (side-lit, posed) images -> restored images in [0, 1]."""
        return self.reconstruct(y).clamp(0, 1)

    def encoder_module(self) -> ConvEncoder:
        """The full encoder (images -> bottleneck), e.g. to initialise an ``EmotionCNN`` trunk."""
        return self.encoder

    # --- training --------------------------------------------------------------
    def on_fit_start(self, x: torch.Tensor, y=None) -> None:
        self.split_pair(x[:1])  # a wrong channel count fails here, before any step

    def configure_optimizers(self):
        h = self.hparams
        return {"autoencoder": adam(list(self.encoder.parameters()) + list(self.decoder.parameters()), h["lr"], h["beta1"])}

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        """One minibatch of images or stacked (input, target) pairs; labels ignored."""
        inp, tgt = self.split_pair(x)
        out = self(inp)
        rec = pixel_loss(out, tgt, self.loss_kind)
        opt = optimizers["autoencoder"]
        opt.zero_grad(set_to_none=True)
        rec.backward()
        opt.step()
        return {"rec": rec.item(), "psnr": psnr(out, tgt).item()}


class GANAutoencoder(ConvAutoencoder):
    registry_name = "gan_ae"
    description = "convolutional autoencoder trained end to end on reconstruction + adversarial loss (conv discriminator on images)"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 48, 48),
        channels: Sequence[int] = (32, 64, 128),
        kernel: int = 4,
        batch_norm: bool = False,
        slope: float = 0.2,
        code_dim: int = 0,
        loss: str = "mse",
        adv_weight: float = 1e-3,
        d_channels: Sequence[int] = (64, 128, 256),
        d_batch_norm: bool = True,
        lr: float = 2e-4,
        beta1: float = 0.5,
    ):
        nn.Module.__init__(self)
        self.hparams = constructor_kwargs(locals())
        self._build_autoencoder(image_shape, channels, kernel, batch_norm, slope, code_dim, loss)
        c, h, w = self.image_shape
        self.discriminator = Discriminator(c, (h, w), d_channels, 0.2, d_batch_norm)

    def configure_optimizers(self):
        h = self.hparams
        return {
            "discriminator": adam(self.discriminator.parameters(), h["lr"], h["beta1"]),
            **super().configure_optimizers(),
        }

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        inp, tgt = self.split_pair(x)
        out = self(inp)
        rec = pixel_loss(out, tgt, self.loss_kind)
        g_params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        logs = adversarial_step(self.discriminator, tgt, out, rec, adv_weight=self.hparams["adv_weight"],
                                d_opt=optimizers["discriminator"], g_params=g_params, g_opts=[optimizers["autoencoder"]])
        return {"rec": rec.item(), "psnr": psnr(out, tgt).item(), **logs}


class GASA(ConvAutoencoder):
    registry_name = "gasa"
    description = ("generative adversarial stacked conv autoencoder: blocks trained greedily, "
                   "each with its own discriminator, then fine-tuned")

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 48, 48),
        channels: Sequence[int] = (32, 64, 128),
        kernel: int = 4,
        batch_norm: bool = False,
        slope: float = 0.2,
        code_dim: int = 0,
        loss: str = "mse",
        block_epochs: int = 10,
        finetune_epochs: int = 5,
        adv_weight: float = 1e-3,
        d_channels: Sequence[int] = (64,),
        d_batch_norm: bool = True,
        lr: float = 2e-4,
        beta1: float = 0.5,
    ):
        nn.Module.__init__(self)
        self.hparams = constructor_kwargs(locals())
        if block_epochs < 0 or finetune_epochs < 0:
            raise ValueError(f"block_epochs and finetune_epochs must be >= 0; got {block_epochs}, {finetune_epochs}")
        self._build_autoencoder(image_shape, channels, kernel, batch_norm, slope, code_dim, loss)
        c, h, w = self.image_shape
        # D_l judges what block l rebuilds: the image (l = 1) or encoder representation l-1.
        rebuilt = channels if code_dim else channels[:-1]  # representations 1..n_blocks-1
        spaces = [(c, h, w)] + [(ch, h >> i, w >> i) for i, ch in enumerate(rebuilt, start=1)]
        self.discriminators = nn.ModuleList(Discriminator(s[0], s[1:], d_channels, 0.2, d_batch_norm) for s in spaces)
        self.register_buffer("depth_", torch.tensor(self.n_blocks))

    @property
    def depth(self) -> int:
        """The stack depth of the stage last trained (L for a fresh model)."""
        return int(self.depth_)

    # --- schedule ----------------------------------------------------------------
    def stage(self, epoch: int) -> tuple[str, int]:
        """(``"block"`` or ``"finetune"``, l) for 0-based ``epoch``; depends on the epoch alone."""
        return self._stage(epoch)[:2]

    def stage_index(self, epoch: int) -> int:
        """0-based position in the sequence block 1, fine-tune 1, block 2, ..., fine-tune L (last)."""
        return self._stage(epoch)[2]

    def _stage(self, epoch: int) -> tuple[str, int, int]:
        b, f, n = self.hparams["block_epochs"], self.hparams["finetune_epochs"], self.n_blocks
        period = b + f
        k = epoch // period if period else n
        if k >= n:
            return "finetune", n, 2 * n - 1
        kind = "block" if epoch % period < b else "finetune"
        return kind, k + 1, 2 * k + (kind == "finetune")

    # --- training --------------------------------------------------------------
    def block_parameters(self, l: int) -> list[nn.Parameter]:
        """Encoder layer l and decoder layer l (1-based)."""
        return list(self.encoder.layers[l - 1].parameters()) + list(self.decoder.layers[l - 1].parameters())

    def configure_optimizers(self):
        h = self.hparams
        opts = {}
        for l in range(1, self.n_blocks + 1):
            opts[f"block{l}"] = adam(self.block_parameters(l), h["lr"], h["beta1"])
            opts[f"disc{l}"] = adam(self.discriminators[l - 1].parameters(), h["lr"], h["beta1"])
        return opts

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        """One minibatch of the stage that ``epoch`` falls in (see the module docstring)."""
        kind, l, index = self._stage(epoch)
        self.depth_.fill_(l)
        inp, tgt = self.split_pair(x)
        logs: dict = {"stage": float(index), "depth": float(l), "finetune": float(kind == "finetune")}
        if kind == "block" and l > 1:
            with torch.no_grad(), evaluating(self.encoder):  # trained lower layers: frozen
                h_in, h_tgt = self.encoder(inp, l - 1), self.encoder(tgt, l - 1)
            real, fake = h_tgt, self.decoder.layers[l - 1](self.encoder.layers[l - 1](h_in))
            g_params, g_opts = self.block_parameters(l), [optimizers[f"block{l}"]]
            disc, d_opt, key = self.discriminators[l - 1], optimizers[f"disc{l}"], "rec_feat"
        else:  # block 1, or the stack of blocks 1..l on images
            real, fake = tgt, self.decoder(self.encoder(inp, l), l)
            blocks = range(1, l + 1)
            g_params = [p for i in blocks for p in self.block_parameters(i)]
            g_opts = [optimizers[f"block{i}"] for i in blocks]
            disc, d_opt, key = self.discriminators[0], optimizers["disc1"], "rec"
        rec = pixel_loss(fake, real, self.loss_kind)
        logs.update(adversarial_step(disc, real, fake, rec, adv_weight=self.hparams["adv_weight"],
                                     d_opt=d_opt, g_params=g_params, g_opts=g_opts))
        logs[key] = rec.item()
        if key == "rec":
            logs["psnr"] = psnr(fake, real).item()
        return logs
