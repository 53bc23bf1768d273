"""Small helpers shared by the reference-model tests (imported as ``helpers``)."""
from __future__ import annotations

import torch
from torch import nn


def state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every state-dict entry (parameters and buffers)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def moved_networks(before: dict, model: nn.Module) -> set[str]:
    """The networks (first state-dict name component) whose state changed since ``before``."""
    after = model.state_dict()
    return {k.split(".", 1)[0] for k in before if not torch.equal(before[k], after[k])}


def param_snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters only (BatchNorm running averages move on every forward in train mode)."""
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed_params(before: dict, module: nn.Module) -> set[str]:
    return {k for k, v in module.named_parameters() if not torch.equal(before[k], v)}


def linear_sizes(mods) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in mods if isinstance(m, nn.Linear)]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def real_data_dir(folder: str, what: str) -> str:
    """The data root holding ``folder`` (``EVALKIT_DATA``, else ``shared/data`` beside the
    repository); the calling test is skipped, naming ``what`` and the variable to set, otherwise."""
    import os
    from pathlib import Path

    import pytest

    for cand in (os.environ.get("EVALKIT_DATA"), str(Path(__file__).resolve().parents[2] / "shared" / "data")):
        if cand and (Path(cand) / folder).is_dir():
            return cand
    pytest.skip(f"{what} ({folder}/) is not available: set EVALKIT_DATA to a directory holding it")


def cli(*args):
    """``evalkit ARGS...`` through click's test runner (arguments turned into strings)."""
    from click.testing import CliRunner

    from evalkit.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def failed_cleanly(result, *needles):
    """Exit code 2 from a handled error (no traceback), its output naming every needle."""
    assert result.exit_code == 2, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    for n in needles:
        assert n in result.output, (n, result.output)


def run_args(spec, dirs, *extra):
    """``run SPEC`` with the cache, results and reports folders of the ``dirs`` fixture."""
    return ["run", spec, "--cache-dir", dirs["cache"], "--results-dir", dirs["results"], "--reports-dir", dirs["reports"], "--no-progress", *extra]


# Source of a user model module (factories build, build_nogen, build_nan, ...): the user_pkg
# fixture writes it as mypkg/mod.py; tests of the import path write it under other names.
USER_MODULE = '''
"""User models for the evalkit tests (written by conftest.user_pkg)."""
import torch
from torch import nn


class Good(nn.Module):
    """A sampler with values in [0, 1]."""

    def __init__(self, z_dim=4, shape=(1, 8, 8)):
        super().__init__()
        self.z_dim, self.shape = z_dim, tuple(shape)
        self.lin = nn.Linear(z_dim, 64)

    def sample(self, n, *, generator=None):
        z = torch.randn(n, self.z_dim, generator=generator)
        return torch.sigmoid(self.lin(z)).view(n, *self.shape)


class NoGenerator(Good):
    def sample(self, n):  # no generator keyword: evalkit must still call it
        return torch.sigmoid(self.lin(torch.randn(n, self.z_dim))).view(n, *self.shape)


class NaNs(Good):
    def sample(self, n, *, generator=None):
        out = super().sample(n, generator=generator)
        out[0, 0, 0, 0] = float("nan")
        return out


class OutOfRange(Good):
    def sample(self, n, *, generator=None):
        return 2 * super().sample(n, generator=generator) - 1  # tanh range


class NoSample(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)


def build():
    torch.manual_seed(0)
    return Good()


def build_nogen():
    torch.manual_seed(0)
    return NoGenerator()


def build_nan():
    return NaNs()


def build_range():
    return OutOfRange()


def build_shape():
    return _WrongShape()


class _WrongShape(Good):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 16)

    def sample(self, n, *, generator=None):
        return torch.sigmoid(self.lin(torch.randn(n, 4, generator=generator))).view(n, 1, 4, 4)


def build_nosample():
    return NoSample()


def build_not_a_module():
    return object()
'''
