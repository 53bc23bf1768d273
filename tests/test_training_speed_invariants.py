"""What the training loop's speed work must never change (no timing assertions here).

* ``fit`` trains exactly like a plain reference loop over the documented batch order (a
  per-epoch permutation seeded by ``(seed, epoch)``, minibatches taken in order, the global
  RNG left to the model): the final weights are *equal* (``torch.equal``), whatever the
  progress bar and checkpoint settings, so records made with an earlier loop reproduce.
* The per-epoch history holds the same means as the reference's (losses returned as Python
  floats or as tensors).
* The fused-optimizer switch: off by default (each model keeps the optimizer kind its
  records were made with), on: fused kernels wherever torch offers them.
"""
from __future__ import annotations

import pytest
import torch

import reference_models
from reference_models import training
from reference_models.training import TrainConfig, fit, make_optimizer, seed_everything

from conftest import AAE_TINY, GAN_TINY

SEMI = {"image_shape": [1, 8, 8], "hidden": [32], "disc_hidden": [16], "z_dim": 2}
CASES = {
    "gan-sgd": ("gan", {**GAN_TINY, "optimizer": "sgd"}),
    "gan-adam": ("gan", {**GAN_TINY, "optimizer": "adam"}),
    "aae": ("aae", AAE_TINY),
    "aae-sgd": ("aae", {**AAE_TINY, "optimizer": "sgd", "sgd_decay_epoch": 1}),
    "aae_semi": ("aae_semi", {**SEMI, "optimizer": "adam"}),
    "aae_cluster": ("aae_cluster", {**SEMI, "n_classes": 10, "optimizer": "adam"}),
    "vae": ("vae", {"image_shape": [1, 8, 8], "z_dim": 3, "hidden": [24, 16], "lr": 3e-3}),
    "denoising_ae": ("denoising_ae", {"image_shape": [1, 8, 8], "code_dim": 24, "lr": 3e-3}),
    "contractive_ae": ("contractive_ae", {"image_shape": [1, 8, 8], "code_dim": 24, "lr": 3e-3}),
    "gsn": ("gsn", {"image_shape": [1, 8, 8], "hidden_sizes": [16, 12], "n_chain_starts": 10}),
    "dbn": ("dbn", {"image_shape": [1, 8, 8], "hidden": [16, 12], "epochs_per_layer": 1}),
    "gmmn_ae": ("gmmn_ae", {"image_shape": [1, 8, 8], "ae_hidden": [32], "code_dim": 6, "gen_hidden": [16, 16], "mmd_batch": 50, "ae_epochs": 1}),
    "sgan": ("sgan", {"image_shape": [1, 8, 8], "z_dim": 8, "d_channels": [4, 8], "g_hidden": 16, "g_channels": [8, 4], "batch_size": 20}),
    "improved_gan": ("improved_gan", {"image_shape": [1, 8, 8], "z_dim": 8, "g_hidden": [16, 16], "d_hidden": [32, 16, 16], "batch_size": 20}),
}
LABELLED = {"aae_semi", "sgan", "improved_gan"}  # semi-supervised: 3 labels per class, the rest -1
BS, EPOCHS, SEED = 50, 2, 3


@pytest.fixture(scope="module")
def data():
    from evalkit.data import load

    ds = load("digits", "train")
    x, y = ds.tensor()[:200].clone(), ds.label_tensor()[:200].clone()
    keep = torch.cat([(y == c).nonzero()[:3, 0] for c in range(10)])
    masked = torch.full_like(y, -1)
    masked[keep] = y[keep]
    return x, y, masked


def _build(case: str):
    name, kw = CASES[case]
    torch.manual_seed(1234)
    return reference_models.build(name, **kw)


def _labels(case, data):
    x, y, masked = data
    return masked if case in LABELLED else y


def reference_loop(model, x, y, *, epochs=EPOCHS, bs=BS, seed=SEED):
    """The loop as documented, nothing else: returns the per-epoch loss means."""
    seed_everything(seed)
    optimizers = model.configure_optimizers()
    if hasattr(model, "on_fit_start"):
        model.on_fit_start(x, y)
    if hasattr(model, "init_from_data"):
        model.init_from_data(x)
    n, step, history = x.shape[0], 0, []
    for epoch in range(epochs):
        model.train()
        if hasattr(model, "on_epoch_start"):
            model.on_epoch_start(epoch, optimizers)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        sums: dict = {}
        for b in range(n // bs):
            idx = perm[b * bs:(b + 1) * bs]
            losses = model.train_step(x[idx], y[idx], step=step, epoch=epoch, optimizers=optimizers)
            step += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        history.append({"epoch": epoch + 1, **{k: v / (n // bs) for k, v in sums.items()}})
    model.eval()
    return history


def _assert_equal_states(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs by {(sa[k].double() - sb[k].double()).abs().max():.3g}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_fit_equals_reference_loop(case, data, tmp_path):
    x = data[0]
    y = _labels(case, data)
    ref = _build(case)
    ref_history = reference_loop(ref, x, y)
    model = fit(_build(case), x, y, TrainConfig(epochs=EPOCHS, batch_size=BS, seed=SEED, progress=False, checkpoint_every_s=0.0), tmp_path / "run")
    _assert_equal_states(ref, model)
    assert model.train_state_.history == ref_history  # the same float sums in the same order
    assert model.train_state_.step == EPOCHS * (x.shape[0] // BS)


@pytest.mark.parametrize("case", ["gan-sgd", "aae", "sgan"])
def test_progress_bar_and_checkpoints_do_not_change_training(case, data, tmp_path, capsys):
    x, y = data[0], _labels(case, data)
    quiet = fit(_build(case), x, y, TrainConfig(epochs=EPOCHS, batch_size=BS, seed=SEED, progress=False))
    loud = fit(_build(case), x, y, TrainConfig(epochs=EPOCHS, batch_size=BS, seed=SEED, progress=True, checkpoint_every_s=0.0, snapshot_every=1), tmp_path / "run")
    _assert_equal_states(quiet, loud)
    assert quiet.train_state_.history == loud.train_state_.history
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["epoch_1.pt", "epoch_2.pt", "last.pt"]


def test_final_snapshot_and_last_checkpoint_hold_the_same_model(data, tmp_path):
    x, y = data[0], data[1]
    run = tmp_path / "run"
    model = fit(_build("aae"), x, y, TrainConfig(epochs=EPOCHS, batch_size=BS, seed=SEED, progress=False), run)
    last = training.load_checkpoint(run / "last.pt")
    snap = training.load_checkpoint(run / f"epoch_{EPOCHS}.pt")
    assert last["epoch"] == snap["epoch"] == EPOCHS
    for k, v in model.state_dict().items():
        assert torch.equal(last["state_dict"][k], v) and torch.equal(snap["state_dict"][k], v)
    assert last["history"] == snap["history"] == model.train_state_.history
    # a later run rewriting last.pt must not touch the snapshot
    fit(_build("aae"), x, y, TrainConfig(epochs=EPOCHS + 1, batch_size=BS, seed=SEED, progress=False), run)
    assert training.load_checkpoint(run / f"epoch_{EPOCHS}.pt")["epoch"] == EPOCHS
    assert training.load_checkpoint(run / "last.pt")["epoch"] == EPOCHS + 1


class _TensorLosses(torch.nn.Module):
    """A model whose train_step returns tensors (one of them on the autograd graph)."""

    def __init__(self, as_tensors: bool):
        super().__init__()
        self.lin = torch.nn.Linear(64, 1)
        self.as_tensors = as_tensors
        self.hparams = {}

    def configure_optimizers(self):
        return {"sgd": torch.optim.SGD(self.parameters(), lr=0.1)}

    def train_step(self, x, y=None, *, step, epoch, optimizers):
        loss = (self.lin(x.flatten(1)) - 0.5).pow(2).mean()
        optimizers["sgd"].zero_grad()
        loss.backward()
        optimizers["sgd"].step()
        aux = torch.randn(()) * 0.0 + step
        out = {"loss": loss, "aux": aux}
        return out if self.as_tensors else {k: v.item() for k, v in out.items()}


def test_tensor_and_float_losses_give_the_same_history(data):
    x = data[0]
    runs = []
    for as_tensors in (False, True):
        torch.manual_seed(0)
        runs.append(fit(_TensorLosses(as_tensors), x, None, TrainConfig(epochs=EPOCHS, batch_size=BS, seed=SEED, progress=False)))
    floats, tensors = runs
    assert floats.train_state_.history == tensors.train_state_.history
    assert all(isinstance(v, float) for h in tensors.train_state_.history for v in h.values() if not isinstance(v, int))
    _assert_equal_states(floats, tensors)


def test_nan_tensor_loss_still_raises(data):
    class Bad(_TensorLosses):
        def train_step(self, x, y=None, **kw):
            return {"loss": torch.tensor(float("nan"))}

    with pytest.raises(FloatingPointError, match="diverged"):
        fit(Bad(True), data[0], None, TrainConfig(epochs=1, batch_size=BS, progress=False))


# ----------------------------------------------------------------------------- fused optimizers
def _fused_flags(model) -> dict:
    return {k: bool(o.defaults.get("fused")) for k, o in model.configure_optimizers().items()}


# The optimizer kinds the recorded runs were made with (FUSED_OPTIMIZERS None, the default).
RECORDED_FUSED = {"sgan": True, "improved_gan": True, "aae_semi": True, "aae_cluster": True}
NO_FUSED_KERNEL = {"gsn"}  # its own optimizer (the GSN code's EMA momentum): no fused kernel to switch to


@pytest.mark.parametrize("case", sorted(CASES))
def test_default_keeps_each_models_recorded_optimizer_kind(case, monkeypatch):
    monkeypatch.setattr(training, "FUSED_OPTIMIZERS", None)
    flags = _fused_flags(_build(case))
    want = RECORDED_FUSED.get(CASES[case][0], False)
    assert set(flags.values()) == {want}, flags


@pytest.mark.parametrize("case", sorted(c for c in CASES if CASES[c][0] not in NO_FUSED_KERNEL))
def test_switch_turns_fused_kernels_on_and_off(case, monkeypatch):
    monkeypatch.setattr(training, "FUSED_OPTIMIZERS", True)
    on = _fused_flags(_build(case))
    monkeypatch.setattr(training, "FUSED_OPTIMIZERS", False)
    off = _fused_flags(_build(case))
    assert set(on.values()) == {True}, on
    assert set(off.values()) == {False}, off


def test_make_optimizer_passes_fused_only_where_supported(monkeypatch):
    monkeypatch.setattr(training, "FUSED_OPTIMIZERS", True)
    p = [torch.nn.Parameter(torch.zeros(3))]
    assert make_optimizer(torch.optim.Adam, p, lr=1e-3).defaults["fused"]
    assert make_optimizer(torch.optim.SGD, p, lr=1e-3, momentum=0.5).defaults["fused"]
    assert not make_optimizer(torch.optim.RMSprop, p, lr=1e-3).defaults.get("fused")  # no fused RMSprop: plain one
    monkeypatch.setattr(training, "FUSED_OPTIMIZERS", None)
    assert not make_optimizer(torch.optim.Adam, p, lr=1e-3).defaults["fused"]
    assert make_optimizer(torch.optim.Adam, p, lr=1e-3, fused_default=True).defaults["fused"]


def test_resumed_run_keeps_its_checkpoints_optimizer_kind(data, tmp_path, monkeypatch):
    """Switching FUSED_OPTIMIZERS does not change a run resumed from a checkpoint: the optimizer
    state restores each group's ``fused`` flag, so the resumed run equals the uninterrupted one."""
    x, y = data[0], data[1]
    cfg = lambda e: TrainConfig(epochs=e, batch_size=BS, seed=SEED, progress=False)  # noqa: E731
    monkeypatch.setattr(training, "FUSED_OPTIMIZERS", True)
    straight = fit(_build("aae"), x, y, cfg(2), tmp_path / "straight")
    fit(_build("aae"), x, y, cfg(1), tmp_path / "resumed")
    monkeypatch.setattr(training, "FUSED_OPTIMIZERS", False)
    resumed = fit(_build("aae"), x, y, cfg(2), tmp_path / "resumed")
    _assert_equal_states(straight, resumed)
    ck = training.load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert all(g["fused"] for o in ck["optimizers"].values() for g in o["param_groups"])
