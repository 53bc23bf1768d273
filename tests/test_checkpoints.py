"""Model specs and checkpoints (``evalkit.checkpoints``)."""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Optional

import pytest
import torch
from torch import nn

import reference_models
from evalkit.checkpoints import (
    config_hash,
    default_cache_dir,
    file_sha256,
    load_evalkit_checkpoint,
    load_model,
    load_state_strict,
    run_dir,
)
from evalkit.errors import EvalkitError
from evalkit.evaluation import draw_samples
from reference_models.gan import GAN
from reference_models.training import TrainConfig, fit

from conftest import GAN_TINY

# torch 2.13 deprecates TorchScript, which evalkit still accepts as a model file.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")


@pytest.fixture
def gan_ckpt(digits200, tmp_path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = reference_models.build("gan", **GAN_TINY, optimizer="adam")
    fit(model, digits200, None, TrainConfig(epochs=1, batch_size=50, seed=0, progress=False), tmp_path / "run",
        extra={"dataset": {"name": "digits"}})
    return tmp_path / "run" / "epoch_1.pt", model


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


# ----------------------------------------------------------------------------- evalkit checkpoints
def test_load_evalkit_checkpoint_rebuilds_model(gan_ckpt):
    path, trained = gan_ckpt
    lm = load_evalkit_checkpoint(path)
    assert isinstance(lm.model, GAN)
    assert lm.model.hparams == trained.hparams
    assert _same(lm.model, trained)
    assert not lm.model.training
    assert lm.checkpoint_sha256 == _sha(path) == file_sha256(path)
    assert lm.info["epoch"] == 1 and lm.info["model_name"] == "gan"
    assert lm.info["dataset"] == {"name": "digits"}
    assert lm.info["provenance"]["seed"] == 0
    s = lm.model.sample(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, trained.sample(4, generator=torch.Generator().manual_seed(0)))


def test_load_model_registry_name_with_checkpoint(gan_ckpt):
    path, trained = gan_ckpt
    lm = load_model("gan", checkpoint=str(path))
    assert isinstance(lm.model, GAN)
    assert lm.model.hparams["g_hidden"] == [16]  # stored constructor arguments were used
    assert _same(lm.model, trained)
    assert lm.checkpoint == str(path) and lm.checkpoint_sha256 == _sha(path)
    assert lm.info["epoch"] == 1


def test_load_model_checkpoint_file_as_spec(gan_ckpt):
    path, trained = gan_ckpt
    lm = load_model(str(path))  # not TorchScript: falls back to the evalkit checkpoint
    assert isinstance(lm.model, GAN) and _same(lm.model, trained)
    assert lm.checkpoint_sha256 == _sha(path)


def test_mismatched_state_dict_names_key_and_shapes(gan_ckpt, tmp_path):
    path, _ = gan_ckpt
    ck = torch.load(path, weights_only=True)
    ck["state_dict"]["d_out.weight"] = torch.zeros(1, 9)
    del ck["state_dict"]["generator.0.bias"]
    ck["state_dict"]["extra.weight"] = torch.zeros(2)
    bad = tmp_path / "bad.pt"
    torch.save(ck, bad)
    with pytest.raises(EvalkitError) as ei:
        load_model("gan", checkpoint=str(bad))
    msg = str(ei.value)
    assert "d_out.weight" in msg and "(1, 9)" in msg and "(1, 8)" in msg
    assert "missing keys" in msg and "generator.0.bias" in msg
    assert "unexpected keys" in msg and "extra.weight" in msg
    assert str(bad) in msg
    with pytest.raises(EvalkitError, match="d_out.weight"):
        load_evalkit_checkpoint(bad)


def test_load_state_strict_single_shape_mismatch():
    m = reference_models.build("gan", **GAN_TINY)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    state["generator.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(EvalkitError) as ei:
        load_state_strict(m, state, "somewhere.pt")
    msg = str(ei.value)
    assert "generator.0.weight: checkpoint (3, 3) vs model (16, 8)" in msg
    assert "missing" not in msg and "unexpected" not in msg
    # a matching state loads
    good = reference_models.build("gan", **GAN_TINY)
    load_state_strict(good, m.state_dict(), "ok.pt")
    assert _same(good, m)


def test_unknown_model_lists_known_models():
    with pytest.raises(EvalkitError) as ei:
        load_model("no_such_model")
    msg = str(ei.value)
    assert "no_such_model" in msg and "gan" in msg and "aae" in msg
    assert "package.module:factory" in msg


def test_missing_files():
    with pytest.raises(EvalkitError, match="not found"):
        load_model("does/not/exist.pt")
    with pytest.raises(EvalkitError, match="not found"):
        load_model("gan", checkpoint="does/not/exist.pt")


def test_non_checkpoint_files(tmp_path):
    p = tmp_path / "list.pt"
    torch.save([1, 2, 3], p)
    with pytest.raises(EvalkitError, match="not an evalkit checkpoint"):
        load_model(str(p))
    with pytest.raises(EvalkitError, match="not a state dict"):
        load_model("gan", checkpoint=str(p))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not torch")
    with pytest.raises(EvalkitError, match="cannot read"):
        load_model("gan", checkpoint=str(junk))


# ----------------------------------------------------------------------------- user factories
def test_user_factory(user_pkg):
    lm = load_model(f"{user_pkg}:build")
    assert type(lm.model).__name__ == "Good"
    assert lm.checkpoint is None and lm.checkpoint_sha256 is None
    assert not lm.model.training
    s = lm.model.sample(3)
    assert s.shape == (3, 1, 8, 8)


def test_user_factory_with_bare_state_dict(user_pkg, tmp_path):
    src = load_model(f"{user_pkg}:build").model
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    sd = tmp_path / "weights.pt"
    torch.save(src.state_dict(), sd)
    lm = load_model(f"{user_pkg}:build", checkpoint=str(sd))
    assert _same(lm.model, src)
    assert lm.checkpoint_sha256 == _sha(sd)
    # a class works as the factory too
    lm2 = load_model(f"{user_pkg}:Good", checkpoint=str(sd))
    assert _same(lm2.model, src)


def test_user_factory_errors(user_pkg):
    with pytest.raises(EvalkitError, match="no attribute"):
        load_model(f"{user_pkg}:nothere")
    with pytest.raises(EvalkitError, match="cannot import module 'no_such_pkg.x'"):
        load_model("no_such_pkg.x:build")
    with pytest.raises(EvalkitError, match="not a torch.nn.Module"):
        load_model(f"{user_pkg}:build_not_a_module")


# ----------------------------------------------------------------------------- TorchScript
class _Scripted(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 64)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.lin(z)).view(-1, 1, 8, 8)

    @torch.jit.export
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.forward(torch.randn(n, 4, generator=generator))


class _ScriptedNoGenerator(_Scripted):
    @torch.jit.export
    def sample(self, n: int) -> torch.Tensor:
        return self.forward(torch.randn(n, 4))


def test_torchscript_file_loads(tmp_path):
    torch.manual_seed(0)
    src = _Scripted()
    p = tmp_path / "model.pt"
    torch.jit.script(src).save(str(p))
    lm = load_model(str(p))
    assert isinstance(lm.model, torch.jit.ScriptModule)
    assert lm.info == {"torchscript": True}
    assert lm.checkpoint_sha256 == _sha(p)
    s = lm.model.sample(5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(s, src.sample(5, generator=torch.Generator().manual_seed(0)))
    out = draw_samples(lm.model, 12, seed=0, device=torch.device("cpu"), batch=5)
    assert out.shape == (12, 1, 8, 8)
    assert torch.equal(out, draw_samples(lm.model, 12, seed=0, device=torch.device("cpu"), batch=5))


def test_torchscript_sample_without_generator_keyword(tmp_path):
    """A scripted ``sample(n)`` rejects the generator keyword with a RuntimeError (not a TypeError)."""
    p = tmp_path / "nogen.pt"
    torch.jit.script(_ScriptedNoGenerator()).save(str(p))
    lm = load_model(str(p))
    out = draw_samples(lm.model, 6, seed=0, device=torch.device("cpu"))
    assert out.shape == (6, 1, 8, 8)


class _Traced(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 64)

    def forward(self, z):
        return torch.sigmoid(self.lin(z)).view(-1, 1, 8, 8)


def test_traced_torchscript_loads(tmp_path):
    torch.manual_seed(0)
    src = _Traced()
    z = torch.randn(3, 4)
    p = tmp_path / "traced.ts"
    torch.jit.save(torch.jit.trace(src, z), str(p))
    lm = load_model(str(p))
    assert lm.info["torchscript"]
    assert torch.allclose(lm.model(z), src(z))


# ----------------------------------------------------------------------------- run directories
def test_run_dir_does_not_depend_on_epochs(tmp_path):
    assert "epochs" not in inspect.signature(run_dir).parameters
    base = dict(model="gan", model_kwargs={"g_hidden": [16]}, dataset="digits", split="train", batch_size=100, seed=0)
    a = run_dir(tmp_path, **base)
    assert a == run_dir(tmp_path, **base)
    assert a.parent.parent == tmp_path / "runs" and a.name == "seed0"
    assert a.parent.name.startswith("gan-digits-")
    assert run_dir(tmp_path, **{**base, "seed": 1}) == a.parent / "seed1"
    for change in ({"model_kwargs": {"g_hidden": [32]}}, {"dataset": "mnist"}, {"split": "train-full"}, {"batch_size": 50}):
        assert run_dir(tmp_path, **{**base, **change}).parent != a.parent, change


def test_config_hash_is_order_independent():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert len(config_hash({})) == 12


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("EVALKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "evalkit"
