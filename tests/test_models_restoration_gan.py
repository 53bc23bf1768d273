"""Restoration GAN (``reference_models.restoration_gan``): degradations, restore, training, checkpoints.

Tiny models (8 channels, 2 residual blocks) on 16x16 RGB images. The model is built from its
class: its registry name is added to ``reference_models.REGISTRY`` separately, and the
checkpoint loader rebuilds a model from the class path stored in the checkpoint.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from evalkit.checkpoints import load_evalkit_checkpoint
from reference_models.restoration_gan import (
    RestorationGAN,
    degrade,
    gaussian_blur,
    gaussian_kernel,
    normalise_degradation,
)
from reference_models.training import TrainConfig, fit

TINY = {"image_shape": [3, 16, 16], "channels": 8, "n_blocks": 2, "d_channels": [8, 16], "d_fc": 16}
KINDS = [
    {"kind": "noise", "sigma": 0.1},
    {"kind": "sr", "scale": 2},
    {"kind": "sr", "scale": 4},
    {"kind": "blur", "size": 5, "sigma": 1.0, "noise": 0.01},
]


def smooth_images(n: int, seed: int = 0, size: int = 16) -> torch.Tensor:
    """Smooth random RGB images [n, 3, size, size] in [0, 1]: 4x4 noise, bilinearly upsampled."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(size, size), mode="bilinear", align_corners=False)


def _build(seed=0, **kw) -> RestorationGAN:
    torch.manual_seed(seed)
    return RestorationGAN(**{**TINY, **kw})


def _steps(model, x, n, seed=1):
    torch.manual_seed(seed)
    opt = model.configure_optimizers()
    model.train()
    return [model.train_step(x, None, step=s, epoch=0, optimizers=opt) for s in range(n)]


def _psnr(a, b) -> float:
    return float((-10 * torch.log10((a - b).pow(2).flatten(1).mean(1))).mean())


def _params(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- build / arguments
def test_build_defaults_and_hparams_rebuild():
    m = RestorationGAN(image_shape=[3, 64, 64])
    assert RestorationGAN.registry_name == "restoration_gan" and RestorationGAN.description
    h = m.hparams
    assert h["degradation"] == {"kind": "noise", "sigma": 0.1, "clip": False}  # defaults filled in
    assert (h["channels"], h["n_blocks"], h["l1_weight"], h["adv_weight"], h["pretrain_l1_steps"]) == (64, 16, 0.9, 0.1, 0)
    assert len(m.generator.blocks) == 16 and m.generator.head[0].kernel_size == (9, 9) and m.generator.tail.kernel_size == (9, 9)
    assert m.generator.tail.out_channels == 3
    opt = m.configure_optimizers()
    for o in opt.values():
        assert isinstance(o, torch.optim.Adam) and o.param_groups[0]["lr"] == 1e-4 and o.param_groups[0]["betas"] == (0.5, 0.999)
    small = RestorationGAN(**TINY, degradation={"kind": "blur"})
    assert small.hparams["degradation"] == {
        "kind": "blur", "size": 9, "sigma": 2.0, "noise": 0.01, "boundary": "circular", "clip": False
    }
    clone = RestorationGAN(**small.hparams)
    assert clone.hparams == small.hparams
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in small.state_dict().items()}


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"degradation": {"kind": "jpeg"}}, "kind"),
        ({"degradation": {"kind": "noise", "scale": 2}}, "unknown"),
        ({"degradation": {"kind": "sr", "scale": 3}}, "multiples"),
        ({"degradation": {"kind": "sr", "scale": 1.5}}, "scale"),
        ({"degradation": {"kind": "blur", "size": 4}}, "odd"),
        ({"degradation": {"kind": "blur", "boundary": "zeros"}}, "boundary"),
        ({"degradation": {"kind": "noise", "sigma": -0.1}}, "sigma"),
        ({"degradation": {"kind": "noise", "clip": 1}}, "clip"),
        ({"output": "tanh"}, "output"),
        ({"pretrain_l1_steps": -1}, "pretrain"),
    ],
)
def test_bad_arguments_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        RestorationGAN(**{**TINY, **kwargs})


# ----------------------------------------------------------------------------- degradations
def test_noise_degradation_statistics_and_generator():
    x = torch.full((2, 3, 16, 16), 0.5)
    y = degrade(x, {"kind": "noise", "sigma": 0.1}, torch.Generator().manual_seed(0))
    assert abs(float((y - x).std()) - 0.1) < 0.01 and abs(float((y - x).mean())) < 0.01
    assert torch.equal(y, degrade(x, {"kind": "noise", "sigma": 0.1}, torch.Generator().manual_seed(0)))
    ones = torch.ones(1, 1, 8, 8)
    assert float(degrade(ones, {"kind": "noise", "sigma": 0.5}).max()) > 1.0  # not clipped by default
    assert float(degrade(ones, {"kind": "noise", "sigma": 0.5, "clip": True}).max()) <= 1.0
    # without a generator: the global RNG, fresh noise every call
    torch.manual_seed(3)
    a, b = degrade(x, {"kind": "noise"}), degrade(x, {"kind": "noise"})
    torch.manual_seed(3)
    assert not torch.equal(a, b) and torch.equal(a, degrade(x, {"kind": "noise"}))


def test_sr_degradation_is_antialiased_bicubic():
    x = smooth_images(2)
    y = degrade(x, {"kind": "sr", "scale": 4})
    assert y.shape == (2, 3, 4, 4)
    want = F.interpolate(x, size=(4, 4), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    assert torch.equal(y, want)
    assert torch.allclose(degrade(torch.full((1, 3, 16, 16), 0.3), {"kind": "sr", "scale": 2}), torch.full((1, 3, 8, 8), 0.3))
    with pytest.raises(ValueError, match="multiple"):
        degrade(torch.rand(1, 1, 10, 10), {"kind": "sr", "scale": 4})


def test_gaussian_kernel_is_fspecial():
    k = gaussian_kernel(5, 1.0, dtype=torch.float64)
    r = torch.arange(5, dtype=torch.float64) - 2
    ref = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 2)
    assert torch.allclose(k, ref / ref.sum()) and abs(float(k.sum()) - 1) < 1e-12


def test_blur_is_circular_convolution():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 12, 12, generator=g, dtype=torch.float64)
    size, sigma = 5, 1.5
    out = gaussian_blur(x, size, sigma, "circular")
    # reference: circular convolution by FFT with the kernel centred at the origin (psf2otf)
    k = gaussian_kernel(size, sigma, dtype=torch.float64)
    psf = torch.zeros(12, 12, dtype=torch.float64)
    psf[:size, :size] = k
    psf = torch.roll(psf, shifts=(-(size // 2), -(size // 2)), dims=(0, 1))
    ref = torch.fft.ifft2(torch.fft.fft2(x) * torch.fft.fft2(psf)).real
    assert torch.allclose(out, ref, atol=1e-12)
    # a constant image stays constant (normalised kernel), with either padding
    c = torch.full((1, 3, 16, 16), 0.7)
    for pad in ("circular", "reflect"):
        assert torch.allclose(gaussian_blur(c, 9, 2.0, pad), c, atol=1e-6)
    # the model's blur adds noise of std `noise`
    spec = {"kind": "blur", "size": 5, "sigma": 1.5, "noise": 0.05}
    y = degrade(x.float().repeat(1, 1, 4, 4) * 0.5 + 0.25, spec, torch.Generator().manual_seed(1))
    clean = degrade(x.float().repeat(1, 1, 4, 4) * 0.5 + 0.25, {**spec, "noise": 0.0})
    assert abs(float((y - clean).std()) - 0.05) < 0.005


def test_normalise_degradation_fills_defaults():
    assert normalise_degradation({"kind": "sr"}) == {"kind": "sr", "scale": 4}
    assert normalise_degradation({"kind": "noise", "sigma": 0.2}) == {"kind": "noise", "sigma": 0.2, "clip": False}


# ----------------------------------------------------------------------------- restore
@pytest.mark.parametrize("deg", KINDS, ids=lambda d: f"{d['kind']}{d.get('scale', '')}")
@pytest.mark.parametrize("output", ["residual", "sigmoid"])
def test_restore_shape_and_range(deg, output):
    m = _build(degradation=deg, output=output)
    x = smooth_images(3)
    y = m.degrade(x, generator=torch.Generator().manual_seed(0))
    scale = deg.get("scale", 1)
    assert y.shape == (3, 3, 16 // scale, 16 // scale)
    m.train()
    out = m.restore(y)
    assert m.training, "restore puts the training mode back"
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out, m.restore(y)), "restore is deterministic (eval mode)"
    if output == "residual":  # the zero-initialised last conv: G starts as the identity on its input
        assert torch.allclose(out, m.generator_input(y).clamp(0, 1))
    if deg["kind"] == "sr":
        up = F.interpolate(y, size=(16, 16), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        assert torch.equal(m.generator_input(y), up)


# ----------------------------------------------------------------------------- training
def test_training_improves_psnr_and_updates_both_networks():
    x = smooth_images(8)
    m = _build(degradation={"kind": "noise", "sigma": 0.1}, lr=1e-3)
    y = m.degrade(x, generator=torch.Generator().manual_seed(5))
    psnr0 = _psnr(m.restore(y), x)
    g0, d0 = _params(m.generator), _params(m.discriminator)
    logs = _steps(m, x, 30)
    assert all(math.isfinite(v) for lg in logs for v in lg.values())
    assert set(logs[0]) == {"g_loss", "l1", "psnr", "d_loss", "d_real", "d_fake", "g_adv"}
    assert not _same(g0, _params(m.generator)) and not _same(d0, _params(m.discriminator))
    psnr1 = _psnr(m.restore(y), x)
    assert psnr1 > psnr0 + 0.5, (psnr0, psnr1)  # about +1 dB in practice
    first, last = sum(lg["l1"] for lg in logs[:5]), sum(lg["l1"] for lg in logs[-5:])
    assert last < first, (first, last)


def test_loss_weights_are_honoured():
    x = smooth_images(8)
    m = _build(l1_weight=0.3, adv_weight=2.0)
    for lg in _steps(m, x, 2):
        assert math.isclose(lg["g_loss"], 0.3 * lg["l1"] + 2.0 * lg["g_adv"], rel_tol=1e-5)


def test_l1_is_the_norm_of_each_image_error_or_the_pixel_mean():
    x = smooth_images(4)
    logs = {}
    for red in ("sum", "mean"):
        m = _build(l1_reduction=red, pretrain_l1_steps=1)
        torch.manual_seed(3)
        y_in = m.generator_input(m.degrade(x))
        with torch.no_grad():
            err = (m.generator(y_in) - x).abs()
        torch.manual_seed(3)
        logs[red] = m.train_step(x, None, step=0, epoch=0, optimizers=m.configure_optimizers())["l1"]
        want = err.flatten(1).sum(1).mean() if red == "sum" else err.mean()
        assert math.isclose(logs[red], float(want), rel_tol=1e-5)
    assert math.isclose(logs["sum"], logs["mean"] * x[0].numel(), rel_tol=1e-5)
    with pytest.raises(ValueError, match="l1_reduction"):
        _build(l1_reduction="max")


@pytest.mark.parametrize("adv_weight, same", [(0.0, True), (0.1, False)])
def test_generator_update_ignores_d_without_adversarial_weight(adv_weight, same):
    """adv_weight = 0: G's trajectory is the same whatever D's initialisation."""
    x = smooth_images(8)
    g_states = []
    for d_seed in (10, 11):
        m = _build(adv_weight=adv_weight, lr=1e-3)
        torch.manual_seed(d_seed)
        for mod in m.discriminator.modules():
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
        _steps(m, x, 3)
        g_states.append(_params(m.generator))
    assert _same(*g_states) is same


def test_pretrain_l1_steps_train_g_only():
    x = smooth_images(8)
    m = _build(pretrain_l1_steps=2)
    d0 = _params(m.discriminator)
    torch.manual_seed(1)
    opt = m.configure_optimizers()
    g0 = _params(m.generator)
    for s in range(2):
        lg = m.train_step(x, None, step=s, epoch=0, optimizers=opt)
        assert set(lg) == {"g_loss", "l1", "psnr"} and lg["g_loss"] == lg["l1"]
    assert _same(d0, _params(m.discriminator)) and not _same(g0, _params(m.generator))
    lg = m.train_step(x, None, step=2, epoch=0, optimizers=opt)
    assert "d_loss" in lg and not _same(d0, _params(m.discriminator))


def test_train_step_degrades_with_the_global_rng():
    """Same global seed -> same noise -> same update; another seed -> different noise."""
    x = smooth_images(4)
    states = []
    for seed in (1, 1, 2):
        m = _build()
        _steps(m, x, 2, seed=seed)
        states.append(_params(m))
    assert _same(states[0], states[1]) and not _same(states[0], states[2])


# ----------------------------------------------------------------------------- fit / checkpoints
def test_fit_checkpoint_roundtrip(tmp_path):
    x = smooth_images(16)
    m = _build(degradation={"kind": "sr", "scale": 2})
    fit(m, x, None, TrainConfig(epochs=1, batch_size=8, seed=0, progress=False), run_dir=tmp_path)
    lm = load_evalkit_checkpoint(tmp_path / "last.pt")
    assert isinstance(lm.model, RestorationGAN) and lm.model.hparams == m.hparams
    assert _same(_params(lm.model), _params(m)) and not lm.model.training
    assert lm.info["model_name"] == "restoration_gan"
    y = m.degrade(x[:4])
    assert torch.equal(lm.model.restore(y), m.restore(y))
    assert set(lm.info["train_config"]) >= {"epochs", "batch_size"}


def test_fit_resume_is_reproducible(tmp_path):
    """1 epoch + resume to 2 equals 2 epochs straight: the fresh noise comes from the checkpointed RNG."""
    x = smooth_images(16)
    cfg = lambda e: TrainConfig(epochs=e, batch_size=8, seed=0, progress=False)  # noqa: E731
    fit(_build(), x, None, cfg(1), run_dir=tmp_path / "a")
    resumed = fit(_build(seed=99), x, None, cfg(2), run_dir=tmp_path / "a", log=lambda s: None)
    straight = fit(_build(), x, None, cfg(2), run_dir=tmp_path / "b")
    assert _same(_params(resumed), _params(straight))
    assert resumed.train_state_.history == straight.train_state_.history
