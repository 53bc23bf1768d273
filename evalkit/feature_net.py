"""The feature network of :mod:`evalkit.features`: its recipe (:class:`FeatureNetSpec`), its
architecture (:class:`LeNet`, version :data:`ARCH_VERSION`), the loaded network that embeds
images (:class:`FeatureNet`) and the key that names a trained one (:func:`feature_net_key`).
Where trained networks are cached and how they are built is :mod:`evalkit.features`'."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import EvalkitError

ARCH_VERSION = 1
_FORMAT = "evalkit-feature-net"


@dataclass(frozen=True)
class FeatureNetSpec:
    """Training recipe of a feature network (every field is part of the artefact key)."""

    train_split: str = "train"
    eval_split: str = "test"
    channels: tuple = (32, 64)
    kernel_size: int = 5
    feature_dim: int = 128
    epochs: int = 2
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise EvalkitError(f"FeatureNetSpec.channels must be two positive widths, got {self.channels}")
        for name in ("kernel_size", "feature_dim", "epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise EvalkitError(f"FeatureNetSpec.{name} must be a positive integer, got {v!r}")
        if self.kernel_size % 2 == 0:
            raise EvalkitError(f"FeatureNetSpec.kernel_size must be odd ('same' padding), got {self.kernel_size}")
        if not float(self.lr) > 0:
            raise EvalkitError(f"FeatureNetSpec.lr must be > 0, got {self.lr!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        d["lr"] = float(self.lr)
        return d


DEFAULT_SPEC = FeatureNetSpec()


class LeNet(nn.Module):
    """LeNet-style classifier; ``embed(x)`` is the penultimate (post-ReLU) layer."""

    def __init__(self, image_shape, n_classes: int, channels=(32, 64), kernel_size: int = 5, feature_dim: int = 128):
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        if h < 4 or w < 4:
            raise EvalkitError(f"feature network needs images of at least 4x4 pixels, got [C, H, W] = {[c, h, w]}")
        self.image_shape, self.n_classes = (c, h, w), int(n_classes)
        c1, c2 = channels
        p = kernel_size // 2
        self.conv = nn.Sequential(
            nn.Conv2d(c, c1, kernel_size, padding=p), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size, padding=p), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c2 * (h // 4) * (w // 4), feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, self.n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def _check_images(x: Any, image_shape: tuple, name: str) -> torch.Tensor:
    """Validate images [N, C, H, W] (float, finite, in [0, 1]) -> CPU/device float tensor (no copy if possible)."""
    if hasattr(x, "images") and callable(getattr(x, "tensor", None)):  # an evalkit ImageSet
        x = x.tensor()
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f":
            raise EvalkitError(f"{name} must be float images in [0, 1], got dtype {x.dtype}; convert uint8 with x / 255")
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise EvalkitError(f"{name} must be a torch tensor or numpy array of images [N, C, H, W], got {type(x).__name__}")
    x = x.detach()
    if not x.is_floating_point():
        raise EvalkitError(f"{name} must be float images in [0, 1], got dtype {x.dtype}; convert uint8 with x.float() / 255")
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(image_shape):
        raise EvalkitError(f"{name} must have shape [N, {', '.join(map(str, image_shape))}] (the feature network's "
                           f"data set), got {list(x.shape)}")
    if x.shape[0] == 0:
        raise EvalkitError(f"{name} is empty; pass at least one image")
    lo, hi = torch.aminmax(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x)
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise EvalkitError(f"{name} contains NaN or Inf values")
    if lo < 0.0 or hi > 1.0:
        raise EvalkitError(f"{name} has values outside [0, 1] (min {lo:.4g}, max {hi:.4g}); images must be scaled to "
                           f"[0, 1] (e.g. (x + 1) / 2 for tanh outputs, x / 255 for uint8 pixels)")
    return x


class FeatureNet:
    """A trained :class:`LeNet` with its artefact metadata.

    Attributes: ``module`` (eval mode), ``dataset``, ``key`` (artefact hash), ``info``
    (the JSON sidecar), ``image_shape``, ``n_classes``, ``feature_dim``, ``device``.
    """

    def __init__(self, module: LeNet, *, dataset: str, key: str, info: dict, device: Any = None):
        self.module = module.eval()
        self.dataset, self.key, self.info = dataset, key, info
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.module.to(self.device)

    @property
    def image_shape(self) -> tuple:
        return self.module.image_shape

    @property
    def n_classes(self) -> int:
        return self.module.n_classes

    @property
    def feature_dim(self) -> int:
        return self.module.head.in_features

    #: What outputs call this kind of feature network.
    name = "evalkit-lenet"

    def describe(self) -> str:
        """One line naming the network, for every FD / KID output."""
        acc = self.info.get("test_accuracy")
        acc_s = f", test accuracy {acc:.4f}" if isinstance(acc, (int, float)) else ""
        return (f"evalkit LeNet feature network of {self.dataset} (key {self.key}, {self.feature_dim}-d penultimate "
                f"layer{acc_s}; not Inception-v3)")

    def __repr__(self) -> str:
        acc = self.info.get("test_accuracy")
        return (f"FeatureNet(dataset={self.dataset!r}, key={self.key!r}, image_shape={self.image_shape}, "
                f"feature_dim={self.feature_dim}, test_accuracy={acc})")

    def _run(self, x: Any, batch_size: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        x = _check_images(x, self.image_shape, name)
        feats, probs = [], []
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                xb = x[i : i + batch_size].to(self.device, torch.float32)
                f = self.module.embed(xb)
                feats.append(f.double().cpu())
                probs.append(torch.softmax(self.module.head(f).double(), 1).cpu())
        return torch.cat(feats).numpy(), torch.cat(probs).numpy()

    def features(self, x: Any, *, batch_size: int = 500) -> np.ndarray:
        """Penultimate-layer features of images ``x`` [N, C, H, W] in [0, 1] -> float64 numpy [N, feature_dim]."""
        return self._run(x, batch_size, "images")[0]

    def class_probs(self, x: Any, *, batch_size: int = 500) -> np.ndarray:
        """Softmax class probabilities of images ``x`` -> float64 numpy [N, n_classes]."""
        return self._run(x, batch_size, "images")[1]


# --------------------------------------------------------------------------- artefacts
def feature_net_key(dataset: str, spec: FeatureNetSpec, train_fingerprint: str, image_shape, n_classes: int) -> str:
    """Artefact key: 16 hex digits of the SHA-256 of everything that determines the weights."""
    ident = {"arch_version": ARCH_VERSION, "dataset": dataset, "recipe": spec.to_dict(),
             "train_fingerprint": train_fingerprint, "image_shape": [int(s) for s in image_shape],
             "n_classes": int(n_classes)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
