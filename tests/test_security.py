"""A file never decides what code evalkit runs (checkpoints, model files)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from evalkit.checkpoints import load_evalkit_checkpoint, load_model
from evalkit.errors import EvalkitError
from helpers import cli, failed_cleanly


class _TouchOnLoad:
    """Unpickling this object opens (creates) ``marker`` for writing: code run by a pickle."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil_pickle(tmp_path) -> tuple[Path, Path]:
    """A checkpoint whose pickle runs code when a full (not weights-only) torch.load reads it."""
    marker = tmp_path / "pwned-by-pickle"
    path = tmp_path / "evil.pt"
    lin = torch.nn.Linear(2, 2)
    torch.save({"state_dict": lin.state_dict(), "payload": _TouchOnLoad(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_pickled_checkpoint_for_a_user_factory_runs_nothing(evil_pickle, user_pkg):
    path, marker = evil_pickle
    r = cli("eval", "parzen", "--model", f"{user_pkg}:build", "--checkpoint", path, "--dataset", "digits", "--n-samples", 10)
    failed_cleanly(r, str(path), "refusing to load", "weights-only")
    assert not marker.exists(), "unpickling the checkpoint ran code"


def test_pickled_checkpoint_as_model_file_runs_nothing(evil_pickle):
    path, marker = evil_pickle
    r = cli("eval", "parzen", "--model", path, "--dataset", "digits", "--n-samples", 10)
    failed_cleanly(r, str(path), "refusing to load")
    assert not marker.exists()
    with pytest.raises(EvalkitError, match="refusing to load"):
        load_model("gan", checkpoint=str(path))
    assert not marker.exists()


def test_class_path_in_a_data_only_checkpoint_is_never_imported(tmp_path):
    """{"class": "os:system", ...} given as --model must not run the command."""
    marker = tmp_path / "pwned-by-class"
    path = tmp_path / "evil.pt"
    torch.save({"class": "os:system", "model_kwargs": {"command": f"touch {marker}"}, "state_dict": {}}, path)
    r = cli("eval", "parzen", "--model", path, "--dataset", "digits", "--n-samples", 10)
    failed_cleanly(r, str(path), "not a registered reference model", "never imports a class path")
    assert not marker.exists()
    # The same with a registered model's name but a foreign class path: refused too.
    torch.save({"class": "builtins:open", "model_name": "gan", "model_kwargs": {"file": str(marker), "mode": "w"}, "state_dict": {}}, path)
    with pytest.raises(EvalkitError, match="not that model's registered class"):
        load_evalkit_checkpoint(path)
    assert not marker.exists()


def test_registered_checkpoint_still_loads(tmp_path):
    """The safe path works: a reference model's checkpoint written by evalkit's training loop."""
    from reference_models import build
    from reference_models.training import TrainConfig, fit

    m = build("gan", image_shape=[1, 8, 8], g_hidden=[8], d_units=4, d_pieces=2)
    fit(m, torch.rand(20, 1, 8, 8), None, TrainConfig(epochs=1, batch_size=10, progress=False), tmp_path / "run")
    loaded = load_model(str(tmp_path / "run" / "epoch_1.pt"))
    assert type(loaded.model).__name__ == "GAN" and loaded.info["epoch"] == 1


def test_no_torch_load_without_weights_only_in_the_repository():
    """Every torch.load in the repository (package, benchmarks and tests) reads weights only."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for pkg in ("evalkit", "reference_models", "benchmarks", "tests"):
        for p in (root / pkg).rglob("*.py"):
            for i, line in enumerate(p.read_text().splitlines(), 1):
                if "torch.load(" in line and "weights_only=True" not in line:
                    offenders.append(f"{p.relative_to(root)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX only")
def test_torchscript_model_file_still_loads(tmp_path):
    """TorchScript stays allowed: it is code the user chose to run (README, Safety)."""

    class S(torch.nn.Module):
        def forward(self, x):
            return x * 2

    p = tmp_path / "s.pt"
    torch.jit.script(S()).save(str(p))
    loaded = load_model(str(p))
    assert loaded.info == {"torchscript": True}
