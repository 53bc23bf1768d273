"""GASA and its baselines (``reference_models.gasa``): pair convention, shapes, training toward
a target that differs from the input, the stage schedule, checkpoints.

Tiny networks (channels 8-16) on 16x16 grayscale images; the classes are built directly
(their registry names are added to ``reference_models.REGISTRY`` separately).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from evalkit.checkpoints import load_evalkit_checkpoint
from helpers import param_snapshot, changed_params
from reference_models.gasa import GASA, ConvAutoencoder, ConvEncoder, GANAutoencoder, make_pairs, split_pairs
from reference_models.training import TrainConfig, fit

SHAPE = [1, 16, 16]
TINY = {"image_shape": SHAPE, "channels": [8, 16]}
D_TINY = {"GANAutoencoder": {"d_channels": [8, 16]}, "GASA": {"d_channels": [8]}, "ConvAutoencoder": {}}
CLASSES = [ConvAutoencoder, GANAutoencoder, GASA]


def _build(cls, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(**{**TINY, **D_TINY[cls.__name__], **kw})


def _steps(model, x, n, epoch=0, seed=1):
    torch.manual_seed(seed)
    opt = model.configure_optimizers()
    model.train()
    return [model.train_step(x, None, step=s, epoch=epoch, optimizers=opt) for s in range(n)]


@pytest.fixture(scope="module")
def shifted(digits16):
    """(input, target) pairs: the digits and the same digits moved 3 pixels right (a pose-like shift)."""
    return digits16, torch.roll(digits16, 3, dims=-1)


# ----------------------------------------------------------------------------- pairs / build
def test_pair_convention(digits16):
    inp, tgt = digits16[:4], digits16[:4].flip(-1)
    x = make_pairs(inp, tgt)
    assert x.shape == (4, 2, 16, 16)
    a, b = split_pairs(x, 1)
    assert torch.equal(a, inp) and torch.equal(b, tgt)
    a, b = split_pairs(inp, 1)  # C channels: the target is the input
    assert a is inp and b is inp
    m = _build(ConvAutoencoder)
    with pytest.raises(ValueError, match=r"\[N, 2, H, W\]"):
        m.train_step(torch.rand(4, 3, 16, 16), None, step=0, epoch=0, optimizers=m.configure_optimizers())
    with pytest.raises(ValueError, match="make_pairs"):
        m.on_fit_start(torch.rand(4, 3, 16, 16))
    with pytest.raises(ValueError, match="shape"):
        make_pairs(inp, tgt[:, :, :8])
    rgb = ConvAutoencoder(image_shape=[3, 16, 16], channels=[8, 16])
    assert [t.shape[1] for t in rgb.split_pair(torch.rand(2, 6, 16, 16))] == [3, 3]


@pytest.mark.parametrize("cls", CLASSES)
def test_shapes_ranges_and_hparams_rebuild(cls, digits16):
    m = _build(cls)
    x = digits16[:5]
    assert m.encode(x).shape == (5, 16, 4, 4) and m.encode(x, flatten=True).shape == (5, 256)
    m.train()
    out = m.restore(x)
    assert m.training, "restore puts the training mode back"
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, m.reconstruct(x)) and torch.allclose(m.decode(m.encode(x)), out)
    assert torch.equal(m.encoder_module()(x), m.encode(x))
    assert m.restore(torch.rand(2, 1, 32, 24)).shape == (2, 1, 32, 24)  # fully convolutional
    with pytest.raises(ValueError, match="multiples of 4"):
        m.restore(torch.rand(2, 1, 18, 16))
    clone = cls(**m.hparams)
    assert clone.hparams == m.hparams
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}


def test_defaults():
    ae, gan, gasa = ConvAutoencoder(), GANAutoencoder(), GASA()
    for m in (ae, gan, gasa):
        assert m.image_shape == (1, 48, 48) and m.hparams["channels"] == [32, 64, 128] and m.hparams["loss"] == "mse"
        assert [layer[0].stride for layer in m.encoder.layers] == [(2, 2)] * 3 and m.encoder.layers[0][0].kernel_size == (4, 4)
        assert m.encode(torch.rand(1, 1, 48, 48)).shape == (1, 128, 6, 6)
        assert isinstance(m.decoder.layers[0][-1], torch.nn.Sigmoid)
    assert ae.hparams["lr"] == 1e-3
    for m in (gan, gasa):
        assert m.hparams["adv_weight"] == 1e-3
        for o in m.configure_optimizers().values():
            assert isinstance(o, torch.optim.Adam) and o.param_groups[0]["lr"] == 2e-4 and o.param_groups[0]["betas"] == (0.5, 0.999)
    assert (gasa.hparams["block_epochs"], gasa.hparams["finetune_epochs"]) == (10, 5)
    assert set(gasa.configure_optimizers()) == {"block1", "block2", "block3", "disc1", "disc2", "disc3"}


@pytest.mark.parametrize(
    "kw, word",
    [({"image_shape": [1, 18, 16]}, "multiples"), ({"loss": "bce"}, "loss"), ({"kernel": 5}, "kernel"),
     ({"code_dim": -1}, "code_dim"), ({"block_epochs": -1}, "block_epochs")],
)
def test_bad_arguments(kw, word):
    with pytest.raises(ValueError, match=word):
        GASA(**{**TINY, **kw})


def test_kernel3_and_batch_norm_variants(digits16):
    m = _build(GASA, kernel=3, batch_norm=True)
    assert m.reconstruct(digits16[:3]).shape == (3, 1, 16, 16)
    assert any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.encoder.modules())
    logs = _steps(m, make_pairs(digits16[:8], digits16[:8].flip(-1)), 2, epoch=m.hparams["block_epochs"] * 10)
    assert all(math.isfinite(v) for lg in logs for v in lg.values())


# ----------------------------------------------------------------------------- training toward the target
@pytest.mark.parametrize("cls", CLASSES)
def test_fit_learns_a_target_different_from_the_input(cls, shifted):
    inp, tgt = shifted
    kw = {"block_epochs": 1, "finetune_epochs": 1} if cls is GASA else {}
    m = _build(cls, lr=3e-3, **kw)
    before = F.mse_loss(m.reconstruct(inp), tgt).item()
    fit(m, make_pairs(inp, tgt), None, TrainConfig(epochs=12, batch_size=16, seed=0, progress=False))  # 48 steps
    out = m.reconstruct(inp)
    after, to_input = F.mse_loss(out, tgt).item(), F.mse_loss(out, inp).item()
    assert after < 0.5 * before, (before, after)
    assert after < 0.5 * to_input, (after, to_input)  # it learned the shift, not the identity
    hist = m.train_state_.history
    assert hist[-1]["psnr"] > hist[0]["psnr"]


@pytest.mark.parametrize("cls", [GANAutoencoder, GASA])
def test_adversarial_weight_is_honoured(cls, shifted):
    m = _build(cls, adv_weight=0.25)
    for lg in _steps(m, make_pairs(*shifted)[:16], 2, epoch=0):
        assert math.isclose(lg["g_loss"], lg["rec"] + 0.25 * lg["g_adv"], rel_tol=1e-5)
        assert 0 < lg["d_real"] < 1 and 0 < lg["d_fake"] < 1 and lg["d_loss"] > 0


def test_dense_code_layer(digits16):
    m = _build(GASA, code_dim=12, block_epochs=1, finetune_epochs=0)
    assert m.n_blocks == 3 and m.encode(digits16[:2]).shape == (2, 12)
    assert m.discriminators[2].features[0].in_channels == 16  # D_3 judges the last conv map
    assert m.reconstruct(digits16[:2]).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="fixes the size"):
        m.restore(torch.rand(1, 1, 32, 32))
    assert m.stage(2) == ("block", 3)
    before = param_snapshot(m)
    logs = _steps(m, make_pairs(digits16[:8], digits16[:8]), 1, epoch=2)
    assert logs[0]["depth"] == 3.0 and "rec_feat" in logs[0]
    moved = {n.rsplit(".", 1)[0] for n in changed_params(before, m)}
    assert moved == {"encoder.layers.2.1", "decoder.layers.2.0", "discriminators.2.features.0", "discriminators.2.head"}


# ----------------------------------------------------------------------------- GASA schedule
def test_stage_schedule_depends_on_the_epoch_only():
    m = GASA(image_shape=SHAPE, channels=[4, 8, 16], block_epochs=2, finetune_epochs=1)
    want = ["b1", "b1", "f1", "b2", "b2", "f2", "b3", "b3"] + ["f3"] * 5
    got = [f"{m.stage(e)[0][0]}{m.stage(e)[1]}" for e in range(len(want))]
    assert got == want
    assert [m.stage_index(e) for e in range(9)] == [0, 0, 1, 2, 2, 3, 4, 4, 5]
    assert m.stage(10_000) == ("finetune", 3) and m.stage_index(10_000) == 5  # final fine-tune forever
    assert GASA(**TINY, block_epochs=3, finetune_epochs=0).stage(3) == ("block", 2)
    assert [GASA(**TINY, block_epochs=0, finetune_epochs=2).stage(e) for e in (0, 1, 2, 9)] == [
        ("finetune", 1), ("finetune", 1), ("finetune", 2), ("finetune", 2)]
    assert GASA(**TINY, block_epochs=0, finetune_epochs=0).stage(0) == ("finetune", 2)


def test_discriminator_per_block():
    m = _build(GASA, channels=[4, 8, 16])
    assert len(m.discriminators) == 3
    shapes = [(1, 16, 16), (4, 8, 8), (8, 4, 4)]  # image, representation 1, representation 2
    for d, s in zip(m.discriminators, shapes):
        assert d.features[0].in_channels == s[0] and d(torch.rand(2, *s)).shape == (2,)


def _names(l, stage_kind):
    """Parameter-name prefixes that may move: block l (block stage) or blocks 1..l (fine-tune)."""
    blocks = [l] if stage_kind == "block" else range(1, l + 1)
    return {f"{part}.layers.{i - 1}." for part in ("encoder", "decoder") for i in blocks}


@pytest.mark.parametrize(
    "epoch, kind, l",
    [(0, "block", 1), (2, "finetune", 1), (3, "block", 2), (5, "finetune", 2), (6, "block", 3), (8, "finetune", 3)],
)
def test_only_the_active_stage_is_trained(epoch, kind, l, digits16):
    m = _build(GASA, channels=[4, 8, 16], block_epochs=2, finetune_epochs=1, lr=1e-2)
    assert m.stage(epoch) == (kind, l)
    x = make_pairs(digits16[:8], digits16[:8].flip(-1))
    before = param_snapshot(m)
    logs = _steps(m, x, 2, epoch=epoch)
    moved = changed_params(before, m)
    ae_moved = {n for n in moved if not n.startswith("discriminators")}
    d_moved = {n.split(".")[1] for n in moved if n.startswith("discriminators")}
    allowed = _names(l, kind)
    assert ae_moved and all(any(n.startswith(p) for p in allowed) for n in ae_moved), ae_moved
    assert all(any(n.startswith(p) for n in ae_moved) for p in allowed), "every active block moves"
    assert d_moved == {str(l - 1) if kind == "block" else "0"}  # D_l in block stages, D_1 (images) in fine-tuning
    assert logs[-1]["depth"] == l and logs[-1]["finetune"] == float(kind == "finetune")
    assert logs[-1]["stage"] == m.stage_index(epoch) and m.depth == l
    assert ("rec_feat" in logs[0]) == (kind == "block" and l > 1)


def test_final_finetune_moves_every_autoencoder_parameter(digits16):
    m = _build(GASA, block_epochs=1, finetune_epochs=1)
    before = param_snapshot(m)
    _steps(m, make_pairs(digits16[:8], digits16[:8]), 2, epoch=50)
    moved = changed_params(before, m)
    ae = {n for n, _ in m.named_parameters() if not n.startswith("discriminators")}
    assert ae <= moved


def test_block_stage_targets_are_the_target_representation(digits16):
    """In block stage 2 the rebuilt features are those of the TARGET under the frozen layer 1."""
    m = _build(GASA, block_epochs=1, finetune_epochs=1, adv_weight=0.0)
    inp, tgt = digits16[:8], digits16[:8].flip(-1)
    with torch.no_grad():
        h_in, h_tgt = m.encoder(inp, 1), m.encoder(tgt, 1)
        want = F.mse_loss(m.decoder.layers[1](m.encoder.layers[1](h_in)), h_tgt).item()
    log = _steps(m, make_pairs(inp, tgt), 1, epoch=2)[0]
    assert math.isclose(log["rec_feat"], want, rel_tol=1e-5) and math.isclose(log["g_loss"], want, rel_tol=1e-5)


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("cls", [GANAutoencoder, GASA])
def test_fit_checkpoint_roundtrip(cls, tmp_path, shifted):
    inp, tgt = shifted
    kw = {"block_epochs": 1, "finetune_epochs": 0} if cls is GASA else {}
    m = _build(cls, **kw)
    fit(m, make_pairs(inp, tgt), None, TrainConfig(epochs=1, batch_size=16, seed=0, progress=False), run_dir=tmp_path)
    lm = load_evalkit_checkpoint(tmp_path / "last.pt")
    assert isinstance(lm.model, cls) and lm.model.hparams == m.hparams and lm.info["model_name"] == cls.registry_name
    assert lm.model.depth == m.depth
    assert torch.equal(lm.model.restore(inp[:4]), m.restore(inp[:4]))
    if cls is GASA:
        assert m.depth == 1  # checkpoint after block stage 1: restore uses the trained block only


def test_gasa_resume_equals_straight_run(tmp_path, shifted):
    """Stages follow the epoch counter: 2 epochs + resume to 3 equals 3 epochs straight."""
    x = make_pairs(*shifted)[:32]
    cfg = lambda e: TrainConfig(epochs=e, batch_size=16, seed=0, progress=False)  # noqa: E731
    kw = {"block_epochs": 1, "finetune_epochs": 1}
    fit(_build(GASA, **kw), x, None, cfg(2), run_dir=tmp_path / "a")
    resumed = fit(_build(GASA, seed=7, **kw), x, None, cfg(3), run_dir=tmp_path / "a", log=lambda s: None)
    straight = fit(_build(GASA, **kw), x, None, cfg(3), run_dir=tmp_path / "b")
    a, b = resumed.state_dict(), straight.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["stage"] for h in straight.train_state_.history] == [0.0, 1.0, 2.0]


def test_encoder_is_a_standalone_module(digits16):
    m = _build(GASA)
    enc = m.encoder_module()
    assert isinstance(enc, ConvEncoder)
    assert torch.equal(enc(digits16[:3]), m.encoder(digits16[:3]))
