"""The Inception-v3 network of FID (pool3, 2048-d features), for a user who has the standard FID
weights file: ``pt_inception-2015-12-05-6726825d.pth`` of pytorch-fid (the 2015-12-05 TensorFlow
Inception graph ported to PyTorch; torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``
has the same hash prefix). Nothing is downloaded: the user passes the file
(``evalkit compare --features inception --feature-weights FILE``).

Architecture (written here in plain torch; torchvision is not used): torchvision's Inception-v3
layout with the FID patches: the average pools of the A, C and first E blocks exclude the padding
from the mean (``count_include_pad=False``, as TensorFlow's), the last E block's pool branch is a
3x3 max pool, every convolution is followed by batch norm (eps 1e-3) and ReLU, and the classifier
has 1008 outputs (kept only so the weights file loads whole; it is not used).

Preprocessing (pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)``): images
in [0, 1] are resized to 299x299 with ``F.interpolate(mode="bilinear", align_corners=False)``,
gray images are repeated to three channels, and the input is mapped to [-1, 1]. The features
are the global average of the last block's output (pool3), in float64 on return.

Weights check: the file's SHA-256 must equal ``--feature-weights-sha256`` when given; else it
must start with :data:`FID_WEIGHTS_SHA256_PREFIX`, the 8 hex digits in the published file name
(torch.hub names files ``<name>-<first 8 hex digits of SHA-256>``). The full 64-digit digest is not
stated in pytorch-fid's or torch-fidelity's source, so evalkit does not claim one; pass it with
``--feature-weights-sha256`` to check every digit. The file is read with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import file_sha256
from .errors import EvalkitError

#: First 8 hex digits of the SHA-256 of the published FID weights (from the file name
#: ``pt_inception-2015-12-05-6726825d.pth`` in pytorch-fid and torch-fidelity).
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
FEATURE_DIM = 2048
INPUT_SIZE = 299
NAME = "inception-v3-fid"


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kw: Any):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """``max_pool=False``: FID's first E block (average pool without padding); True: the second (3x3 max pool)."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pool)], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 with FID's blocks; ``forward(x)``: images [N, 1 or 3, H, W] in [0, 1] -> pool3 [N, 2048]."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)  # in the weights file; not used for features

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise EvalkitError(f"Inception features need images [N, 1 or 3, H, W], got shape {list(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[2:]) != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                     "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class InceptionFeatures:
    """A loaded :class:`FIDInceptionV3` with the same ``features(x)`` call as evalkit's LeNet :class:`FeatureNet`."""

    feature_dim = FEATURE_DIM
    name = NAME

    def __init__(self, module: FIDInceptionV3, *, weights: Optional[str], sha256: Optional[str], device: Any = None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.module = module.eval().to(self.device)
        self.weights, self.sha256 = weights, sha256

    def describe(self) -> str:
        w = f"weights {Path(self.weights).name} (sha256 {self.sha256})" if self.weights else "random weights"
        return (f"Inception-v3 pool3 (2048-d, FID architecture, pytorch-fid preprocessing: bilinear resize to 299x299, "
                f"[-1, 1]), {w}")

    def features(self, x: Any, *, batch_size: int = 50) -> np.ndarray:
        """pool3 features of images ``x`` [N, 1 or 3, H, W] in [0, 1] -> float64 numpy [N, 2048]."""
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        out = []
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                out.append(self.module(x[i : i + batch_size].to(self.device, torch.float32)).double().cpu())
        return torch.cat(out).numpy()


def load_fid_inception(path: Any, *, sha256: Optional[str] = None, device: Any = None) -> InceptionFeatures:
    """Load the FID Inception weights from ``path`` after checking the file's SHA-256 (see the module docstring)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise EvalkitError(f"--feature-weights {p}: no such file (the FID Inception weights, "
                           f"pt_inception-2015-12-05-{FID_WEIGHTS_SHA256_PREFIX}.pth; evalkit downloads nothing)")
    digest = file_sha256(p)
    if sha256 is not None:
        want = sha256.strip().lower()
        if digest != want:
            raise EvalkitError(f"{p}: SHA-256 is {digest}, not the {want} given with --feature-weights-sha256")
    elif not digest.startswith(FID_WEIGHTS_SHA256_PREFIX):
        raise EvalkitError(f"{p}: SHA-256 {digest} does not start with {FID_WEIGHTS_SHA256_PREFIX}, the prefix of the "
                           f"published FID weights (pt_inception-2015-12-05-{FID_WEIGHTS_SHA256_PREFIX}.pth); for another "
                           f"file you trust, pass its full digest with --feature-weights-sha256")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EvalkitError(f"{p}: cannot read as a weights-only torch file ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EvalkitError(f"{p}: not a state dict of tensors")
    module = FIDInceptionV3()
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape
        raise EvalkitError(f"{p}: not the FID Inception-v3 weights ({str(exc).splitlines()[-1].strip()})") from exc
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise EvalkitError(f"{p}: not the FID Inception-v3 weights ({len(missing)} missing keys, e.g. {missing[:3]}; "
                           f"{len(unexpected)} unexpected, e.g. {unexpected[:3]})")
    return InceptionFeatures(module, weights=str(p), sha256=digest, device=device)
