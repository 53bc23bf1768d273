"""The shared training loop (``reference_models.training.fit``): checkpoints, resume, interrupts."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
import re

import pytest
import torch

import reference_models
from reference_models.training import CHECKPOINT_FORMAT, TrainConfig, fit, latest_resumable

from conftest import AAE_TINY, GAN_TINY

BS = 50  # 200 images -> 4 steps per epoch


def _build(name: str, **kw):
    torch.manual_seed(1234)  # the initial weights; fit re-seeds for training itself
    tiny = GAN_TINY if name == "gan" else AAE_TINY
    return reference_models.build(name, **{**tiny, **kw})


def _cfg(epochs, seed=3, **kw):
    return TrainConfig(epochs=epochs, batch_size=BS, seed=seed, progress=False, **kw)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k], sb[k], rtol=0, atol=1e-7), f"{k} differs by {(sa[k] - sb[k]).abs().max():.3g}"


# ----------------------------------------------------------------------------- checkpoint files
def test_checkpoints_written_with_metadata(digits200, tmp_path):
    run = tmp_path / "run"
    model = _build("gan", optimizer="adam")
    fit(model, digits200, None, _cfg(3, snapshot_epochs=[1]), run, extra={"dataset": {"name": "digits", "split": "train"}})
    names = sorted(p.name for p in run.iterdir())
    assert names == ["epoch_1.pt", "epoch_3.pt", "last.pt"], names  # epoch_2 not requested; final epoch always kept

    ck = _load(run / "last.pt")
    assert ck["format"] == CHECKPOINT_FORMAT
    assert ck["class"] == "reference_models.gan:GAN"
    assert ck["model_name"] == "gan"
    assert ck["model_kwargs"] == model.hparams
    assert ck["model_kwargs"]["g_hidden"] == [16]
    assert ck["epoch"] == 3 and ck["step"] == 3 * (200 // BS)
    assert [h["epoch"] for h in ck["history"]] == [1, 2, 3]
    assert ck["history"] == model.train_state_.history
    assert ck["train_config"]["epochs"] == 3 and ck["train_config"]["seed"] == 3
    assert ck["train_config"]["batch_size"] == BS and ck["train_config"]["snapshot_epochs"] == [1]
    assert set(ck["optimizers"]) == {"generator", "discriminator"}
    assert ck["dataset"] == {"name": "digits", "split": "train"}  # extra
    prov = ck["provenance"]
    for key in ("git_commit", "device", "seed", "date", "torch", "python", "wall_time_s"):
        assert key in prov, key
    assert prov["seed"] == 3
    assert prov["device"].startswith("cpu")
    assert prov["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", prov["git_commit"])
    assert dt.datetime.fromisoformat(prov["date"]).tzinfo is not None
    assert prov["wall_time_s"] > 0
    # the state dict is the trained model's, on CPU
    for k, v in model.state_dict().items():
        assert torch.equal(ck["state_dict"][k], v.cpu())

    first = _load(run / "epoch_1.pt")
    assert first["epoch"] == 1 and len(first["history"]) == 1
    assert not any(p.name.startswith(".") for p in run.iterdir()), "temporary files left behind"


def test_snapshot_every(digits200, tmp_path):
    fit(_build("aae"), digits200, None, _cfg(4, snapshot_every=2), tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["epoch_2.pt", "epoch_4.pt", "last.pt"]


def test_fit_rejects_non_image_tensor(digits200):
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        fit(_build("gan"), digits200.flatten(1), None, _cfg(1))


def test_divergence_raises(digits200):
    bad = digits200.clone()
    bad[:] = float("nan")
    with pytest.raises(FloatingPointError, match="diverged"):
        fit(_build("aae"), bad, None, _cfg(1))


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize(
    "name, kw",
    [("gan", {"optimizer": "adam"}), ("gan", {"optimizer": "sgd"}), ("aae", {"posterior": "universal"}), ("aae", {"optimizer": "sgd", "sgd_decay_epoch": 3})],
    ids=["gan-adam", "gan-sgd", "aae-universal", "aae-sgd-decay"],
)
def test_resume_equals_uninterrupted_run(digits200, tmp_path, name, kw):
    """2 epochs, then fit(epochs=4) on a fresh model resumes at epoch 2 and ends where a straight 4-epoch run ends."""
    straight = fit(_build(name, **kw), digits200, None, _cfg(4), tmp_path / "straight")

    fit(_build(name, **kw), digits200, None, _cfg(2), tmp_path / "resumed")
    logs: list[str] = []
    fresh = _build(name, **kw)
    resumed = fit(fresh, digits200, None, _cfg(4), tmp_path / "resumed", log=logs.append)

    assert any("resumed from" in line and "at epoch 2" in line for line in logs), logs
    hist = resumed.train_state_.history
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert resumed.train_state_.step == straight.train_state_.step == 4 * (200 // BS)
    assert hist == straight.train_state_.history
    _assert_same_state(straight, resumed)
    # and the snapshots of both runs agree
    assert _load(tmp_path / "resumed" / "epoch_4.pt")["epoch"] == 4
    a = _load(tmp_path / "straight" / "epoch_4.pt")["state_dict"]
    b = _load(tmp_path / "resumed" / "epoch_4.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_never_passes_requested_epochs(digits200, tmp_path):
    run = tmp_path / "run"
    fit(_build("gan"), digits200, None, _cfg(4, snapshot_every=1), run)
    assert latest_resumable(run, 4).name in ("last.pt", "epoch_4.pt")
    assert latest_resumable(run, 2).name == "epoch_2.pt"
    assert latest_resumable(run, 0) is None
    short = fit(_build("gan"), digits200, None, _cfg(2), run)
    assert len(short.train_state_.history) == 2  # loaded epoch 2, trained nothing more
    ref = fit(_build("gan"), digits200, None, _cfg(2), tmp_path / "ref")
    _assert_same_state(ref, short)


def test_latest_resumable_skips_temporary_and_broken_files(digits200, tmp_path):
    run = tmp_path / "run"
    fit(_build("gan"), digits200, None, _cfg(1), run)
    (run / ".epoch_9.pt.tmp123").write_bytes(b"partial")
    (run / "epoch_7.pt.bak").write_bytes(b"x")
    (run / "garbage.pt").write_bytes(b"not a checkpoint")
    assert latest_resumable(run, 10).name in ("last.pt", "epoch_1.pt")


def test_shorter_run_keeps_longer_runs_last_checkpoint(digits200, tmp_path):
    """The runner shares one run directory across epoch counts. A shorter run in it must not
    set a longer (unfinished) run's last.pt back to an earlier epoch."""
    run = tmp_path / "run"
    fit(_build("gan"), digits200, None, _cfg(4, snapshot_every=2), run)
    (run / "epoch_4.pt").unlink()  # as if the 4-epoch run were still going
    short = fit(_build("gan"), digits200, None, _cfg(3), run)
    assert len(short.train_state_.history) == 3
    assert _load(run / "epoch_3.pt")["epoch"] == 3
    assert _load(run / "last.pt")["epoch"] == 4, "a 3-epoch run overwrote the 4-epoch run's last.pt"
    # and the longer run still resumes from its own progress
    logs: list[str] = []
    fit(_build("gan"), digits200, None, _cfg(4), run, log=logs.append)
    assert any("at epoch 4" in line for line in logs), logs


def test_interrupted_run_resumes_to_the_same_model(digits200, tmp_path):
    """KeyboardInterrupt mid-epoch: last.pt holds the last finished epoch, and resuming
    gives the model an uninterrupted run gives."""
    run = tmp_path / "run"
    model = _build("gan", optimizer="adam")
    orig = model.train_step

    def step(*a, **kw):
        if kw["epoch"] == 2 and kw["step"] == 2 * (200 // BS) + 1:
            raise KeyboardInterrupt
        return orig(*a, **kw)

    model.train_step = step
    with pytest.raises(KeyboardInterrupt):
        fit(model, digits200, None, _cfg(4, checkpoint_every_s=0), run, log=lambda s: None)
    assert _load(run / "last.pt")["epoch"] == 2
    assert not (run / "epoch_4.pt").exists()

    resumed = fit(_build("gan", optimizer="adam"), digits200, None, _cfg(4), run, log=lambda s: None)
    straight = fit(_build("gan", optimizer="adam"), digits200, None, _cfg(4), tmp_path / "straight")
    assert [h["epoch"] for h in resumed.train_state_.history] == [1, 2, 3, 4]
    _assert_same_state(straight, resumed)


def test_seed_changes_training(digits200, tmp_path):
    a = fit(_build("gan"), digits200, None, _cfg(1, seed=0))
    b = fit(_build("gan"), digits200, None, _cfg(1, seed=1))
    c = fit(_build("gan"), digits200, None, _cfg(1, seed=0))
    assert not torch.equal(a.generator[0].weight, b.generator[0].weight)
    _assert_same_state(a, c)


def test_last_checkpoint_is_time_based(digits200, tmp_path):
    """With a long checkpoint interval, last.pt is written only after the final epoch."""
    saved = []
    import reference_models.training as tr

    orig = tr.atomic_save
    try:
        tr.atomic_save = lambda obj, path: (saved.append(Path(path).name), orig(obj, path))
        fit(_build("gan", optimizer="adam"), digits200, None, _cfg(3, checkpoint_every_s=3600), tmp_path / "r", log=lambda s: None)
    finally:
        tr.atomic_save = orig
    assert saved.count("last.pt") == 1 and _load(tmp_path / "r" / "last.pt")["epoch"] == 3


def test_epoch_wall_times_are_cumulative_and_survive_resume(digits200, tmp_path):
    import reference_models

    m = reference_models.build("gan", image_shape=[1, 8, 8], g_hidden=[16], d_units=8, d_pieces=2)
    fit(m, digits200, None, TrainConfig(epochs=2, batch_size=50, progress=False), tmp_path)
    first = list(m.train_state_.epoch_wall_s)
    assert len(first) == 2 and 0 < first[0] <= first[1]
    m2 = reference_models.build("gan", image_shape=[1, 8, 8], g_hidden=[16], d_units=8, d_pieces=2)
    fit(m2, digits200, None, TrainConfig(epochs=3, batch_size=50, progress=False), tmp_path)  # resumes at epoch 2
    assert m2.train_state_.epoch_wall_s[:2] == first and len(m2.train_state_.epoch_wall_s) == 3
    assert m2.train_state_.epoch_wall_s[2] >= first[1]
    cpu = m2.train_state_.epoch_cpu_s
    assert len(cpu) == 3 and 0 < cpu[0] <= cpu[1] <= cpu[2]


def test_checkpoints_name_every_training_segment(digits200, tmp_path):
    """A run folder trained in two fit() calls (the second resumes the first) lists both segments
    with the commit and device that trained them; a record's reproduce note names them."""
    from evalkit.reproduce import training_segments_note
    from reference_models.training import TrainConfig, fit, load_checkpoint

    import reference_models

    def build():
        torch.manual_seed(0)
        return reference_models.build("dbn", image_shape=[1, 8, 8], hidden=[8], epochs_per_layer=1)

    fit(build(), digits200[:40], None, TrainConfig(epochs=1, batch_size=20, progress=False), run_dir=tmp_path)
    one = load_checkpoint(tmp_path / "epoch_1.pt")["provenance"]["segments"]
    assert [(g["from_epoch"], g["to_epoch"]) for g in one] == [(0, 1)]
    assert training_segments_note({"checkpoint": {"provenance": {"segments": one}}}) is None
    fit(build(), digits200[:40], None, TrainConfig(epochs=3, batch_size=20, progress=False), run_dir=tmp_path)
    fit(build(), digits200[:40], None, TrainConfig(epochs=3, batch_size=20, progress=False), run_dir=tmp_path)  # nothing to train
    segs = load_checkpoint(tmp_path / "epoch_3.pt")["provenance"]["segments"]
    assert [(g["from_epoch"], g["to_epoch"]) for g in segs] == [(0, 1), (1, 3)]
    assert all("commit" in g and g["device"] for g in segs)
    note = training_segments_note({"checkpoint": {"provenance": {"segments": segs}}})
    assert "2 resumed segment(s)" in note and "epochs 0-1" in note and "epochs 1-3" in note
