"""Bad input gets one clear error line (exit 2), and no silently wrong number is recorded."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from evalkit.results import ResultStore
from reference_models import build
from reference_models.training import TrainConfig, fit
from helpers import cli, failed_cleanly, run_args


# --------------------------------------------------------------------------- numeric options
@pytest.mark.parametrize(
    "args, needle",
    [
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "-3"], "--epochs"),
        (["--threads", "-2"], "--threads"),
        (["--seeds", "0"], "--seeds"),
        (["--seed", "-1"], "--seed"),
        (["--device", "nosuchdev"], "not a device"),
    ],
)
def test_run_rejects_bad_numbers_before_anything_runs(tiny_toml, dirs, args, needle):
    r = cli(*run_args(tiny_toml, dirs, *args))
    failed_cleanly(r, needle)
    assert not dirs["cache"].exists() and not dirs["results"].exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error(tiny_toml, dirs):
    failed_cleanly(cli(*run_args(tiny_toml, dirs, "--device", "cuda")), "no CUDA device")
    failed_cleanly(cli("eval", "parzen", "--model", "gan", "--dataset", "digits", "--device", "cuda:0"), "no CUDA device")


@pytest.mark.parametrize("args", [["--n-samples", "0"], ["--n-samples", "-5"], ["--valid-limit", "-1"], ["--sigma", "0"]])
def test_eval_parzen_rejects_bad_numbers(args):
    failed_cleanly(cli("eval", "parzen", "--model", "gan", "--dataset", "digits", *args), args[0])


def test_runoptions_reject_zero_epochs():
    from evalkit.errors import EvalkitError
    from evalkit.runner import RunOptions

    with pytest.raises(EvalkitError, match="epochs must be a positive integer"):
        RunOptions(epochs=0)
    with pytest.raises(EvalkitError, match="seeds"):
        RunOptions(seeds=[-1])


# --------------------------------------------------------------------------- user code that fails
BROKEN = '''
import torch
from torch import nn


class Fine(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 64)

    def sample(self, n, *, generator=None):
        return torch.sigmoid(self.lin(torch.randn(n, 4, generator=generator))).view(n, 1, 8, 8)


class SampleRaises(Fine):
    def sample(self, n, *, generator=None):
        raise ValueError("sampler exploded")


class SampleNone(Fine):
    def sample(self, n, *, generator=None):
        return None


class SampleEmpty(Fine):
    def sample(self, n, *, generator=None):
        return torch.zeros(0, 1, 8, 8)


class SampleShort(Fine):
    def sample(self, n, *, generator=None):
        return super().sample(max(n - 1, 1), generator=generator)


def raises():
    raise RuntimeError("no GPU weights here")


def sample_raises():
    return SampleRaises()


def sample_none():
    return SampleNone()


def sample_empty():
    return SampleEmpty()


def sample_short():
    return SampleShort()


def returns_none():
    return None


def fine():
    return Fine()
'''


@pytest.fixture
def broken_pkg(tmp_path, monkeypatch) -> str:
    import sys

    root = tmp_path / "brokenpkgs"
    (root / "brk").mkdir(parents=True)
    (root / "brk" / "__init__.py").write_text("")
    (root / "brk" / "mod.py").write_text(textwrap.dedent(BROKEN))
    (root / "brk" / "syntax.py").write_text("def build(:\n    pass\n")
    for name in [m for m in sys.modules if m == "brk" or m.startswith("brk.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(root))
    yield "brk"
    for name in [m for m in sys.modules if m == "brk" or m.startswith("brk.")]:
        sys.modules.pop(name, None)


def test_factory_that_raises(broken_pkg):
    failed_cleanly(cli("eval", "parzen", "--model", "brk.mod:raises", "--random-init", "--dataset", "digits"), "brk.mod:raises", "RuntimeError", "no GPU weights here")


@pytest.mark.parametrize(
    "factory, needle",
    [("sample_raises", "sampler exploded"), ("sample_none", "sample"), ("sample_empty", "0 samples"), ("sample_short", "expected")],
)
def test_sampler_that_fails_or_returns_the_wrong_count(broken_pkg, factory, needle):
    """A user sample() that raises, returns None, no rows or fewer rows than asked: one clear line, nothing recorded."""
    r = cli("eval", "parzen", "--model", f"brk.mod:{factory}", "--random-init", "--dataset", "digits", "--n-samples", 50)
    failed_cleanly(r, needle)


def test_factory_that_returns_none(broken_pkg):
    failed_cleanly(cli("eval", "parzen", "--model", "brk.mod:returns_none", "--random-init", "--dataset", "digits"), "nothing (None)")


def test_plugin_module_with_a_syntax_error(broken_pkg):
    failed_cleanly(cli("eval", "parzen", "--model", "brk.syntax:build", "--random-init", "--dataset", "digits"), "syntax error", "syntax.py")


def test_evalkit_checkpoint_for_a_no_argument_factory(broken_pkg, tmp_path):
    m = build("gan", image_shape=[1, 8, 8], g_hidden=[8], d_units=4, d_pieces=2)
    fit(m, torch.rand(20, 1, 8, 8), None, TrainConfig(epochs=1, batch_size=10, progress=False), tmp_path / "run")
    ck = tmp_path / "run" / "epoch_1.pt"
    failed_cleanly(
        cli("eval", "parzen", "--model", "brk.mod:fine", "--checkpoint", ck, "--dataset", "digits"),
        "does not take the constructor arguments", str(ck),
    )


def test_checkpoint_of_another_reference_model(tmp_path):
    m = build("gan", image_shape=[1, 8, 8], g_hidden=[8], d_units=4, d_pieces=2)
    fit(m, torch.rand(20, 1, 8, 8), None, TrainConfig(epochs=1, batch_size=10, progress=False), tmp_path / "run")
    failed_cleanly(cli("eval", "parzen", "--model", "aae", "--checkpoint", tmp_path / "run" / "epoch_1.pt", "--dataset", "digits"), "holds a 'gan' model")


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    m = build("gan", image_shape=[1, 8, 8], g_hidden=[8], d_units=4, d_pieces=2)
    fit(m, torch.rand(20, 1, 8, 8), None, TrainConfig(epochs=1, batch_size=10, progress=False), tmp_path / "run")
    p = tmp_path / "run" / "epoch_1.pt"
    p.write_bytes(p.read_bytes()[:300])
    failed_cleanly(cli("eval", "parzen", "--model", p, "--dataset", "digits"), "cannot read checkpoint", str(p))


# --------------------------------------------------------------------------- the run cache
def _only_run_dir(cache: Path, model: str) -> Path:
    found = sorted(cache.glob(f"runs/{model}-digits-*/seed0"))
    assert len(found) == 1, found
    return found[0]


def test_foreign_checkpoint_in_a_run_folder_is_moved_aside_and_retrained(tiny_toml, dirs):
    """An AAE's epoch_1.pt in the GAN's run folder is never evaluated under the GAN row."""
    r = cli(*run_args(tiny_toml, dirs, "--epochs", 1))
    assert r.exit_code == 0, r.output
    gan_dir, aae_dir = _only_run_dir(dirs["cache"], "gan"), _only_run_dir(dirs["cache"], "aae")
    for name in ("epoch_1.pt", "last.pt"):
        shutil.copyfile(aae_dir / name, gan_dir / name)
    r = cli(*run_args(tiny_toml, dirs, "--epochs", 1, "--rows", "gan", "--redo"))
    assert r.exit_code == 0, r.output
    assert "not reusable for row 'gan'" in r.output and "holds a 'aae' model" in r.output
    assert list(gan_dir.glob("epoch_1.pt.bad-*")), "the foreign checkpoint must be kept aside, not deleted"
    rec = ResultStore(dirs["results"]).records("tiny")[-1]
    assert rec["row"] == "gan" and rec["train"]["trained_now"] is True
    ck = torch.load(rec["checkpoint"]["path"], weights_only=True)
    assert ck["model_name"] == "gan"


def test_changed_default_is_not_reused(tiny_toml, dirs):
    """Same run folder (the key holds the spec's arguments only), other constructor defaults: retrained."""
    r = cli(*run_args(tiny_toml, dirs, "--epochs", 1, "--rows", "gan"))
    assert r.exit_code == 0, r.output
    gan_dir = _only_run_dir(dirs["cache"], "gan")
    ck = torch.load(gan_dir / "epoch_1.pt", weights_only=True)
    ck["model_kwargs"]["max_col_norm"] = 1.9365  # as an older evalkit's default would have written it
    torch.save(ck, gan_dir / "epoch_1.pt")
    torch.save(ck, gan_dir / "last.pt")
    r = cli(*run_args(tiny_toml, dirs, "--epochs", 1, "--rows", "gan", "--redo"))
    assert r.exit_code == 0, r.output
    assert "constructor arguments differ: max_col_norm=1.9365 (now None)" in r.output


def test_truncated_cached_checkpoint_is_moved_aside_and_retrained(tiny_toml, dirs):
    r = cli(*run_args(tiny_toml, dirs, "--epochs", 2, "--rows", "gan"))
    assert r.exit_code == 0, r.output
    gan_dir = _only_run_dir(dirs["cache"], "gan")
    for name in ("epoch_2.pt", "last.pt"):
        p = gan_dir / name
        p.write_bytes(p.read_bytes()[:500])
    r = cli(*run_args(tiny_toml, dirs, "--epochs", 2, "--rows", "gan", "--redo"))
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    assert len(list(gan_dir.glob("*.bad-*"))) >= 1
    assert torch.load(gan_dir / "epoch_2.pt", weights_only=True)["epoch"] == 2


# --------------------------------------------------------------------------- the training loop
class _StopAt:
    """Raises KeyboardInterrupt at a given step of a tiny GAN's training."""

    def __init__(self, model, step):
        self.model, self.step, self.orig = model, step, model.train_step

    def __call__(self, *a, step, **k):
        if step == self.step:
            raise KeyboardInterrupt
        return self.orig(*a, step=step, **k)


def _tiny_gan():
    torch.manual_seed(0)
    return build("gan", image_shape=[1, 8, 8], g_hidden=[8], d_units=4, d_pieces=2)


def test_interrupt_before_any_save_says_so(tmp_path):
    m = _tiny_gan()
    m.train_step = _StopAt(m, 1)
    said = []
    with pytest.raises(KeyboardInterrupt):
        fit(m, torch.rand(40, 1, 8, 8), None, TrainConfig(epochs=3, batch_size=10, progress=False), tmp_path / "run", log=said.append)
    assert any("before any epoch was saved" in s for s in said), said
    assert not any("last.pt holds" in s for s in said)


def test_interrupt_after_a_save_names_the_epoch(tmp_path):
    m = _tiny_gan()
    m.train_step = _StopAt(m, 9)  # 4 steps per epoch: epochs 1 and 2 are done
    said = []
    cfg = TrainConfig(epochs=3, batch_size=10, progress=False, checkpoint_every_s=0.0)
    with pytest.raises(KeyboardInterrupt):
        fit(m, torch.rand(40, 1, 8, 8), None, cfg, tmp_path / "run", log=said.append)
    assert any("epoch 2 is saved" in s for s in said), said


def test_partial_files_of_a_killed_writer_are_removed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    dead = run / ".epoch_3.pt.tmp999999999"  # no such process
    dead.write_bytes(b"partial")
    said = []
    fit(_tiny_gan(), torch.rand(20, 1, 8, 8), None, TrainConfig(epochs=1, batch_size=10, progress=False), run, log=said.append)
    assert not dead.exists()
    assert any("no longer runs" in s for s in said), said


# --------------------------------------------------------------------------- sampler settings chosen on validation
CAE_TOML = """
name = "cae-choice"
title = "CAE sampler choice"
metric = "parzen"
higher_is_better = true
default_columns = ["digits"]
[protocol]
n_samples = 200
sigma_grid = [-1.0, 0.0, 5]
valid_split = "valid"
valid_limit = 0
test_split = "test"
train_split = "train"
sample_seed = 1234
[[columns]]
id = "digits"
label = "digits"
dataset = "digits"
[[rows]]
id = "scae"
label = "CAE"
model = "contractive_ae"
[rows.train]
epochs = 1
batch_size = 100
[rows.model_kwargs]
code_dim = 16
sample_chains = 10
sample_thin = 1
sample_grid = { step = [0.1, 1.0], burn_in = [5] }
"""


def test_runner_chooses_the_cae_sampler_on_validation_and_keeps_it(tmp_path, dirs):
    from evalkit.checkpoints import file_sha256

    spec = tmp_path / "cae-choice.toml"
    spec.write_text(CAE_TOML)
    r = cli(*run_args(spec, dirs, "--no-report"))
    assert r.exit_code == 0, r.output
    rec = ResultStore(dirs["results"]).records("cae-choice")[0]
    choice = rec["train"]["sample_choice"]
    assert choice and choice["chosen"]["step"] in (0.1, 1.0) and len(choice["results"]) == 2, choice
    assert rec["checkpoint"]["sha256"] == file_sha256(rec["checkpoint"]["path"])  # the file holds the choice
    ck = torch.load(rec["checkpoint"]["path"], weights_only=True)
    assert int(ck["state_dict"]["sample_choice"]) >= 0
    # A second run (redo) reuses the trained model and its recorded choice: same value.
    r = cli(*run_args(spec, dirs, "--no-report", "--redo"))
    assert r.exit_code == 0, r.output
    again = ResultStore(dirs["results"]).records("cae-choice")[-1]
    assert again["train"]["sample_choice"] == choice and again["value"] == rec["value"]


def test_diverged_training_is_one_clear_error(tiny_toml, dirs, monkeypatch):
    import evalkit.training as training

    def diverge(*a, **k):
        raise FloatingPointError("training diverged at epoch 3: losses {'d_loss': nan}")

    monkeypatch.setattr(training, "fit", diverge)
    r = cli(*run_args(tiny_toml, dirs, "--epochs", 1, "--rows", "gan"))
    failed_cleanly(r, "training diverged at epoch 3", "Nothing was recorded")
    assert ResultStore(dirs["results"]).records("tiny") == []


def test_records_name_the_commit_of_the_code_in_memory(monkeypatch):
    """provenance() names the commit taken when the code was imported, not a later checkout's."""
    import reference_models.training as tr

    first = tr.code_commit()
    monkeypatch.setattr(tr, "git_commit", lambda path=None: "0000000+moved-on")
    assert tr.provenance(torch.device("cpu"), 0)["git_commit"] == first
