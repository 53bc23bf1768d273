"""Shared fixtures for the model / training / runner / report tests.

Everything here is tiny (8x8 digits, models with a few hundred parameters) and writes
only under ``tmp_path``: the real checkpoint cache (``~/.cache/evalkit``) is never used.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from helpers import USER_MODULE

torch.set_num_threads(1)

# Tiny constructor arguments: fast on one CPU thread.
GAN_TINY = {"image_shape": [1, 8, 8], "z_dim": 8, "g_hidden": [16], "d_units": 8, "d_pieces": 2}
AAE_TINY = {"image_shape": [1, 8, 8], "z_dim": 2, "hidden": [16], "disc_hidden": [16], "noise_dim": 4}


@pytest.fixture(autouse=True)
def _isolated_checkpoint_cache(monkeypatch, tmp_path):
    """No test may fall back to the real checkpoint cache (a real run lives there)."""
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "evalkit-cache"))
    monkeypatch.delenv("EVALKIT_BENCHMARKS", raising=False)


@pytest.fixture(scope="session")
def digits_train() -> torch.Tensor:
    """The embedded digits' training split as float [N, 1, 8, 8] in [0, 1]."""
    from evalkit.data import load

    return load("digits", "train").tensor()


@pytest.fixture(scope="session")
def digits200(digits_train) -> torch.Tensor:
    return digits_train[:200].clone()


TINY_TOML = """
name = "tiny"
title = "Tiny test benchmark (nats)"
metric = "parzen"
higher_is_better = true
source = "evalkit tests"
pm = "standard error"
default_columns = ["digits"]

[protocol]
n_samples = 500
sigma_grid = [-1.0, 0.0, 5]
valid_split = "valid"
valid_limit = 0
test_split = "test"
train_split = "train"
sample_seed = 1234

[[columns]]
id = "digits"
label = "digits 8x8"
dataset = "digits"
footnote = "Tiny column footnote."

[[rows]]
id = "published"
label = "Published only"
published = { digits = [123.4, 5.6] }

[[rows]]
id = "gan"
label = "GAN (tiny)"
model = "gan"
[rows.train]
epochs = 3
batch_size = 100
[rows.model_kwargs]
z_dim = 8
g_hidden = [16]
d_units = 8
d_pieces = 2
optimizer = "adam"

[[rows]]
id = "aae"
label = "AAE (tiny)"
model = "aae"
[rows.train]
epochs = 3
batch_size = 100
[rows.model_kwargs]
z_dim = 2
hidden = [16]
disc_hidden = [16]
lr_recon = 1e-3
lr_adv = 1e-3
"""


@pytest.fixture
def tiny_toml(tmp_path) -> Path:
    """A benchmark spec on the embedded digits with tiny GAN/AAE rows and one published-only row."""
    p = tmp_path / "specs" / "tiny.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(TINY_TOML)
    return p




@pytest.fixture
def user_pkg(tmp_path, monkeypatch) -> str:
    """A package ``mypkg`` with user model factories in ``mypkg.mod``, importable for this test only."""
    root = tmp_path / "userpkgs"
    (root / "mypkg").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "mod.py").write_text(textwrap.dedent(USER_MODULE))
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(root))
    yield "mypkg.mod"
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def digits16(digits_train) -> torch.Tensor:
    """64 digits, bilinearly upsampled to 16x16, in [0, 1]."""
    import torch.nn.functional as F

    return F.interpolate(digits_train[:64], size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.fixture
def dirs(tmp_path) -> dict:
    """Temporary cache, results and reports folders for ``evalkit run`` (see ``helpers.run_args``)."""
    return {"cache": tmp_path / "cache", "results": tmp_path / "results", "reports": tmp_path / "reports"}
