"""Facial-emotion classifiers of the GASA paper's per-emotion table (Ruiz-Garcia et al. ~2020,
docs/models.md §5): a small CNN, optionally initialised from a GASA encoder ("CNN + GASA
pre-training"), and a ResNet-34 trained from scratch.

The classifier protocol and both architectures were NOT FOUND (docs/models.md §5, §12.7): all of
the following is [A]. docs/models.md's [A] protocol: subject-independent split, classifier
trained on frontal images, evaluated on GASA-normalised images, per-class accuracy.

Shared training [A]: cross-entropy on the labelled images of each minibatch (``y == -1``
marks an unlabelled image and is ignored; a minibatch without labels makes no step and
logs nothing), Adam lr 1e-3, beta1 0.9, ``weight_decay`` 0 (Adam's coupled L2 when set),
constant learning rate, no data augmentation. Images ``[N, C, H, W]`` in [0, 1]; ``predict_logits(x) -> [N, n_classes]``
in eval mode. ``n_classes`` = 7 (KDEF's and CK+'s seven emotions).

* :class:`EmotionCNN` (``emotion_cnn``): trunk = ``reference_models.gasa.ConvEncoder``
  with the same arguments as the autoencoders there (``2 x - 1``, then per entry of
  ``channels`` (32, 64, 128) conv ``kernel`` 4 stride 2 -> [BN] -> LeakyReLU 0.2, then
  the dense ``code_dim`` layer if > 0), so a GASA / ConvAutoencoder / GANAutoencoder
  encoder with the same ``image_shape``, ``channels``, ``kernel``, ``batch_norm``,
  ``slope`` and ``code_dim`` loads 1:1 (:meth:`EmotionCNN.load_encoder`). Head
  (``head="flatten"``, default): flatten -> dropout ``dropout`` (0.5) -> linear ``fc``
  (256) -> ReLU -> dropout -> linear ``n_classes``; ``head="gap"``: global average pooling
  -> linear ``n_classes`` (any input size). ``encoder_checkpoint``: path to an evalkit
  checkpoint (``fit``'s ``last.pt``) of one of those autoencoders, whose encoder
  initialises the trunk when training starts (``init_from_data``: a fresh ``fit`` only, so
  rebuilding a trained classifier from its own checkpoint never reads that file).
  ``freeze_trunk_epochs`` (0: fine-tune everything from the start, default) trains only
  the head for that many epochs (the trunk without gradient, in eval mode) [A]. 1,346,279
  parameters at the defaults (48x48, 7 classes).
* :class:`ResNet34Classifier` (``resnet34``): ResNet-34 (He et al. 2016; BasicBlock,
  ``layers`` (3, 4, 6, 3), widths ``width`` x (1, 2, 4, 8) = 64-128-256-512, shortcut
  1x1 conv + BN where the shape changes, global average pooling, linear ``n_classes``).
  ``stem="small"`` (default) [A, the CIFAR variant for small grayscale faces]: conv 3x3
  stride 1 -> BN -> ReLU, no max-pool, so a 48x48 face reaches layer 4 at 6x6;
  ``stem="imagenet"``: conv 7x7 stride 2 -> BN -> ReLU -> max-pool 3x3 stride 2 (with 3
  input channels and 1000 classes: torchvision's resnet34, 21,797,672 parameters).
  Kaiming-normal (fan_out, ReLU) conv weights, BN weight 1 / bias 0 [A, torchvision].
  Images enter in [0, 1] as they are (the stem's BatchNorm normalises) [A]. Trained from
  scratch. 21,279,431 parameters at the defaults (1 input channel, 7 classes). ``width`` and ``layers`` exist so tests can build tiny networks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .aae_semi import constructor_kwargs
from .gasa import ConvEncoder, adam

HEADS = ("flatten", "gap")
STEMS = ("small", "imagenet")
ENCODER_PREFIX = "encoder."


# ----------------------------------------------------------------------------- shared training
class _CrossEntropyTraining:
    """``predict_logits``, ``configure_optimizers`` and ``train_step`` of both classifiers.
    Subclasses define ``forward`` (logits) and ``hparams`` with ``lr``, ``beta1``, ``weight_decay``."""

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[N, n_classes]`` (eval mode, on the model's device)."""
        was = self.training
        self.eval()
        try:
            return self(x.to(next(self.parameters()).device, torch.float32))
        finally:
            self.train(was)

    def configure_optimizers(self):
        h = self.hparams
        opt = adam(self.parameters(), h["lr"], h["beta1"])
        for g in opt.param_groups:
            g["weight_decay"] = h["weight_decay"]
        return {"classifier": opt}

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        if y is None:
            raise ValueError(f"{type(self).__name__} needs labels: fit(model, images, labels, ...)")
        keep = y >= 0
        if not bool(keep.any()):
            return {}
        x, y = x[keep], y[keep].long()
        logits = self.train_logits(x, epoch)
        loss = F.cross_entropy(logits, y)
        opt = optimizers["classifier"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "train_err": (logits.argmax(1) != y).float().mean().item()}

    def train_logits(self, x: torch.Tensor, epoch: int) -> torch.Tensor:
        return self(x)


# ----------------------------------------------------------------------------- small CNN
class EmotionCNN(_CrossEntropyTraining, nn.Module):
    registry_name = "emotion_cnn"
    description = "small CNN for grayscale faces; trunk = the GASA / conv-AE encoder (optionally initialised from one)"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 48, 48),
        n_classes: int = 7,
        channels: Sequence[int] = (32, 64, 128),
        kernel: int = 4,
        batch_norm: bool = False,
        slope: float = 0.2,
        code_dim: int = 0,
        head: str = "flatten",
        fc: int = 256,
        dropout: float = 0.5,
        freeze_trunk_epochs: int = 0,
        encoder_checkpoint: Optional[str] = None,
        lr: float = 1e-3,
        beta1: float = 0.9,
        weight_decay: float = 0.0,
    ):
        super().__init__()
        self.hparams = constructor_kwargs(locals())
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if kernel not in (3, 4):
            raise ValueError(f"kernel must be 3 or 4 (as the autoencoders'), got {kernel!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        c, h, w = (int(v) for v in image_shape)
        self.image_shape, self.n_classes = (c, h, w), n_classes
        if head == "gap" and code_dim:
            raise ValueError("head='gap' pools feature maps: it cannot follow a dense code layer (code_dim > 0)")
        self.trunk = ConvEncoder(c, channels, kernel, batch_norm, slope, code_dim, (h, w))
        if head == "gap":
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels[-1], n_classes))
        else:
            with torch.no_grad():
                d = self.trunk(torch.zeros(1, c, h, w)).numel()
            self.head = nn.Sequential(
                nn.Flatten(), nn.Dropout(dropout), nn.Linear(d, fc), nn.ReLU(), nn.Dropout(dropout), nn.Linear(fc, n_classes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def load_encoder(self, source: Union[nn.Module, dict]) -> "EmotionCNN":
        """Copy an autoencoder's encoder into the trunk. ``source``: a model with
        ``encoder_module()`` (GASA, ConvAutoencoder, GANAutoencoder), a ``ConvEncoder``, or a
        state dict of either (a model's keys ``encoder.*`` are picked out). The architectures
        must match exactly (``ValueError`` otherwise)."""
        if isinstance(source, nn.Module):
            source = (source.encoder_module() if hasattr(source, "encoder_module") else source).state_dict()
        state = dict(source)
        if any(k.startswith(ENCODER_PREFIX) for k in state):
            state = {k[len(ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
        mine = self.trunk.state_dict()
        if state.keys() != mine.keys() or any(state[k].shape != mine[k].shape for k in mine):
            shapes = lambda s: {k: tuple(v.shape) for k, v in s.items()}  # noqa: E731
            raise ValueError(
                "encoder does not match the EmotionCNN trunk (same channels, kernel, batch_norm needed): "
                f"trunk {shapes(mine)}, encoder {shapes(state)}"
            )
        self.trunk.load_state_dict(state)
        return self

    def init_from_data(self, x: torch.Tensor) -> None:
        """Fresh ``fit`` only: load ``encoder_checkpoint`` (if any) into the trunk."""
        path = self.hparams["encoder_checkpoint"]
        if path:
            from .training import load_checkpoint

            ck = load_checkpoint(Path(path))
            if not (isinstance(ck, dict) and "state_dict" in ck):
                raise ValueError(f"{path} is not an evalkit checkpoint (no 'state_dict')")
            self.load_encoder(ck["state_dict"])

    def train_logits(self, x: torch.Tensor, epoch: int) -> torch.Tensor:
        if epoch < self.hparams["freeze_trunk_epochs"]:
            was = self.trunk.training
            self.trunk.eval()
            with torch.no_grad():
                h = self.trunk(x)
            self.trunk.train(was)
            return self.head(h)
        return self(x)


# ----------------------------------------------------------------------------- ResNet-34
class BasicBlock(nn.Module):
    """conv3x3(stride) - BN - ReLU - conv3x3 - BN, plus the (projected) input, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet34Classifier(_CrossEntropyTraining, nn.Module):
    registry_name = "resnet34"
    description = "ResNet-34 (BasicBlock 3-4-6-3, 64-512 channels) from scratch; 3x3 stride-1 stem for small faces"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 48, 48),
        n_classes: int = 7,
        width: int = 64,
        layers: Sequence[int] = (3, 4, 6, 3),
        stem: str = "small",
        lr: float = 1e-3,
        beta1: float = 0.9,
        weight_decay: float = 0.0,
    ):
        super().__init__()
        self.hparams = constructor_kwargs(locals())
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if len(layers) != 4 or width < 1:
            raise ValueError(f"layers must list 4 stage depths and width be >= 1; got {list(layers)}, {width}")
        c = int(image_shape[0])
        self.image_shape, self.n_classes = tuple(int(v) for v in image_shape), n_classes
        if stem == "small":
            self.stem = nn.Sequential(nn.Conv2d(c, width, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(c, width, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        stages, c_in = [], width
        for i, n in enumerate(layers):
            c_out = width * 2**i
            blocks = [BasicBlock(c_in if j == 0 else c_out, c_out, (1 if i == 0 else 2) if j == 0 else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(x))
        return self.fc(h.mean(dim=(2, 3)))
