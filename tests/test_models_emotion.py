"""Emotion classifiers (``reference_models.emotion``): the small CNN whose trunk takes a GASA
encoder 1:1, and ResNet-34.

Tiny networks on 16x16 grayscale images; the default ResNet-34 is built once (never trained)
to check its layout and size. Classes are built directly, not through the registry.
"""
from __future__ import annotations

import math

import pytest
import torch

from evalkit.checkpoints import load_evalkit_checkpoint
from helpers import changed_params, param_snapshot
from reference_models.emotion import BasicBlock, EmotionCNN, ResNet34Classifier
from reference_models.gasa import GASA, ConvAutoencoder, make_pairs
from reference_models.training import TrainConfig, fit

SHAPE = [1, 16, 16]
CNN_TINY = {"image_shape": SHAPE, "n_classes": 3, "channels": [8, 16], "fc": 16}
RESNET_TINY = {"image_shape": SHAPE, "n_classes": 3, "width": 4, "layers": [1, 1, 1, 1]}


def _cnn(seed=0, **kw) -> EmotionCNN:
    torch.manual_seed(seed)
    return EmotionCNN(**{**CNN_TINY, **kw})


def _resnet(seed=0, **kw) -> ResNet34Classifier:
    torch.manual_seed(seed)
    return ResNet34Classifier(**{**RESNET_TINY, **kw})


@pytest.fixture(scope="module")
def bars() -> tuple[torch.Tensor, torch.Tensor]:
    """A trivially separable 3-class task: a bright bar at the top, middle or bottom, plus noise."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 3
    x = 0.2 * torch.rand(96, 1, 16, 16, generator=g)
    for i, c in enumerate(y.tolist()):
        x[i, 0, 2 + 5 * c : 5 + 5 * c, :] += 0.7
    return x.clamp(0, 1), y


def _accuracy(model, x, y) -> float:
    return float((model.predict_logits(x).argmax(1) == y).float().mean())


# ----------------------------------------------------------------------------- build / shapes
@pytest.mark.parametrize("build", [_cnn, _resnet, lambda: _cnn(head="gap")], ids=["cnn", "resnet", "cnn-gap"])
def test_logits_shape_and_hparams_rebuild(build, bars):
    m = build()
    m.train()
    logits = m.predict_logits(bars[0][:5])
    assert logits.shape == (5, 3) and torch.isfinite(logits).all() and m.training
    assert torch.equal(logits, m.predict_logits(bars[0][:5]))  # eval mode: dropout off
    clone = type(m)(**m.hparams)
    assert clone.hparams == m.hparams
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}


def test_emotion_cnn_defaults():
    m = EmotionCNN()
    assert m.n_classes == 7 and m.image_shape == (1, 48, 48) and m.hparams["freeze_trunk_epochs"] == 0
    assert m.predict_logits(torch.rand(2, 1, 48, 48)).shape == (2, 7)
    ae = ConvAutoencoder()  # same defaults: the trunk is the autoencoders' encoder
    assert {k: v.shape for k, v in m.trunk.state_dict().items()} == {k: v.shape for k, v in ae.encoder.state_dict().items()}
    with pytest.raises(ValueError, match="head"):
        EmotionCNN(head="attention")
    with pytest.raises(ValueError, match="gap"):
        EmotionCNN(head="gap", code_dim=8)


def test_resnet34_default_layout_and_size():
    m = ResNet34Classifier()
    assert [len(s) for s in m.stages] == [3, 4, 6, 3]
    assert [s[0].conv1.out_channels for s in m.stages] == [64, 128, 256, 512]
    assert all(isinstance(b, BasicBlock) for s in m.stages for b in s)
    stem = m.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.in_channels == 1
    assert not any(isinstance(mod, torch.nn.MaxPool2d) for mod in m.modules())
    assert m.fc.out_features == 7 and m.fc.in_features == 512

    def block(c_in, c_out, stride):  # conv3x3 + BN + conv3x3 + BN (+ 1x1 projection + BN)
        n = 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out
        return n + (c_in * c_out + 2 * c_out if stride != 1 or c_in != c_out else 0)

    n, c_in = 9 * 1 * 64 + 2 * 64, 64
    for i, depth in enumerate([3, 4, 6, 3]):
        c = 64 * 2**i
        for j in range(depth):
            n += block(c_in if j == 0 else c, c, 2 if (i > 0 and j == 0) else 1)
        c_in = c
    n += 512 * 7 + 7
    assert sum(p.numel() for p in m.parameters()) == n == 21_279_431  # ~21.3M
    # the ImageNet stem with 3 channels and 1000 classes is torchvision's resnet34 (21,797,672)
    tv = ResNet34Classifier(image_shape=[3, 224, 224], n_classes=1000, stem="imagenet")
    assert sum(p.numel() for p in tv.parameters()) == 21_797_672


def test_resnet_width_and_strides(bars):
    m = _resnet(width=4, layers=[3, 4, 6, 3])
    assert [s[0].conv1.out_channels for s in m.stages] == [4, 8, 16, 32]
    h = m.stages(m.stem(bars[0][:2]))
    assert h.shape == (2, 32, 2, 2)  # 16 -> 16 (stem, stage 1) -> 8 -> 4 -> 2
    with pytest.raises(ValueError, match="stem"):
        ResNet34Classifier(stem="cifar")


# ----------------------------------------------------------------------------- encoder transfer
def test_gasa_encoder_transfers_one_to_one(bars):
    torch.manual_seed(3)
    gasa = GASA(image_shape=SHAPE, channels=[8, 16], d_channels=[8])
    x = bars[0][:6]
    cnn = _cnn()
    assert not torch.equal(cnn.trunk(x), gasa.encoder_module()(x))
    cnn.load_encoder(gasa)
    assert torch.equal(cnn.trunk(x), gasa.encoder_module()(x))
    assert torch.equal(cnn.trunk(x), gasa.encode(x))
    # from a whole-model state dict (keys encoder.*) and from the encoder's own state dict
    for source in (gasa.state_dict(), gasa.encoder_module().state_dict()):
        other = _cnn(seed=5).load_encoder(source)
        assert torch.equal(other.trunk(x), gasa.encode(x))
    with pytest.raises(ValueError, match="does not match"):
        _cnn(channels=[8, 32]).load_encoder(gasa)


def test_encoder_checkpoint_initialises_the_trunk_and_frozen_epochs_keep_it(tmp_path, bars):
    x, y = bars
    torch.manual_seed(1)
    ae = ConvAutoencoder(image_shape=SHAPE, channels=[8, 16])
    fit(ae, make_pairs(x, x), None, TrainConfig(epochs=1, batch_size=32, progress=False), run_dir=tmp_path / "ae")
    cnn = _cnn(encoder_checkpoint=str(tmp_path / "ae" / "last.pt"), freeze_trunk_epochs=1)
    fit(cnn, x, y, TrainConfig(epochs=1, batch_size=32, progress=False), run_dir=tmp_path / "cnn")
    assert torch.equal(cnn.trunk(x[:4]), ae.encode(x[:4])), "trunk = the autoencoder's encoder, untouched while frozen"
    assert cnn.train_state_.history[0]["loss"] > 0
    # the trained classifier's checkpoint rebuilds without reading the encoder file again
    (tmp_path / "ae" / "last.pt").unlink()
    lm = load_evalkit_checkpoint(tmp_path / "cnn" / "last.pt")
    assert torch.equal(lm.model.predict_logits(x[:4]), cnn.predict_logits(x[:4]))


def test_freeze_trunk_epochs(bars):
    x, y = bars[0][:16], bars[1][:16]
    m = _cnn(freeze_trunk_epochs=2)
    opt = m.configure_optimizers()
    before = param_snapshot(m)
    m.train_step(x, y, step=0, epoch=1, optimizers=opt)
    moved = changed_params(before, m)
    assert moved and all(n.startswith("head.") for n in moved)
    m.train_step(x, y, step=1, epoch=2, optimizers=opt)
    assert {n for n, _ in m.named_parameters()} == changed_params(before, m)


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("build", [_cnn, lambda: _resnet(width=4, layers=[3, 4, 6, 3])], ids=["cnn", "resnet34-w4"])
def test_classifiers_learn_a_separable_task(build, bars):
    x, y = bars
    m = build()
    acc0 = _accuracy(m, x, y)
    fit(m, x, y, TrainConfig(epochs=12, batch_size=32, seed=0, progress=False))  # 36 steps
    acc = _accuracy(m, x, y)
    assert acc >= 0.95 and acc > acc0 + 0.3, (acc0, acc)  # ResNet's BN running averages need the later epochs
    hist = m.train_state_.history
    assert hist[-1]["loss"] < hist[0]["loss"] and set(hist[0]) == {"epoch", "loss", "train_err"}


def test_unlabelled_images_are_ignored(bars):
    x, y = bars[0][:12], bars[1][:12].clone()
    masked = y.clone()
    masked[::2] = -1
    a, b = _cnn(dropout=0.0), _cnn(dropout=0.0)
    la = a.train_step(x, masked, step=0, epoch=0, optimizers=a.configure_optimizers())
    lb = b.train_step(x[1::2], y[1::2], step=0, epoch=0, optimizers=b.configure_optimizers())
    assert math.isclose(la["loss"], lb["loss"], rel_tol=1e-6)
    assert all(torch.allclose(p, q) for p, q in zip(a.parameters(), b.parameters()))
    before = param_snapshot(a)
    assert a.train_step(x, torch.full_like(y, -1), step=1, epoch=0, optimizers=a.configure_optimizers()) == {}
    assert not changed_params(before, a)
    with pytest.raises(ValueError, match="labels"):
        a.train_step(x, None, step=0, epoch=0, optimizers=a.configure_optimizers())


@pytest.mark.parametrize("build", [_cnn, _resnet], ids=["cnn", "resnet"])
def test_fit_checkpoint_roundtrip(build, tmp_path, bars):
    x, y = bars
    m = build()
    fit(m, x, y, TrainConfig(epochs=1, batch_size=32, seed=0, progress=False), run_dir=tmp_path)
    lm = load_evalkit_checkpoint(tmp_path / "last.pt")
    assert isinstance(lm.model, type(m)) and lm.model.hparams == m.hparams
    assert lm.info["model_name"] == type(m).registry_name
    assert torch.equal(lm.model.predict_logits(x[:8]), m.predict_logits(x[:8]))
