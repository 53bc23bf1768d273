"""DCGAN (``reference_models.dcgan``): the paper's 64x64 network, other sizes, update order,
minibatch discrimination, sampling, fit and checkpoints.

Training tests use tiny networks (width multiplier 4) on the embedded 8x8 digits upsampled to
16x16, so each runs in well under a second on one CPU thread.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import reference_models
from evalkit.checkpoints import load_evalkit_checkpoint
from reference_models.dcgan import DCGAN, layer_plan, stride2_padding
from reference_models.improved_gan import MinibatchDiscrimination
from reference_models.training import TrainConfig, fit
from helpers import param_snapshot as _params, changed_params as _changed  # noqa: E402

TINY = {"image_shape": [1, 16, 16], "z_dim": 8, "g_channels": 4, "d_channels": 4}
MD = {"minibatch_discrimination": True, "md_kernels": 6, "md_dim": 3}


def _build(seed=0, **kw) -> DCGAN:
    torch.manual_seed(seed)
    return DCGAN(**{**TINY, **kw})


def _cfg(epochs, **kw):
    return TrainConfig(epochs=epochs, batch_size=16, seed=0, progress=False, **kw)


# ----------------------------------------------------------------------------- architecture
def test_default_is_the_papers_64x64_network():
    m = reference_models.build("dcgan")
    assert isinstance(m, DCGAN) and reference_models.model_class("dcgan") is DCGAN and DCGAN.description
    g, d = m.generator, m.discriminator
    # G: z (100) -> FC 4*4*1024 (BatchNorm over its units) -> 512 -> 256 -> 128 -> 3, tanh
    assert (g.project.in_features, g.project.out_features, g.project_bn.num_features) == (100, 4 * 4 * 1024, 4 * 4 * 1024)
    deconvs = [l for l in g.deconvs if isinstance(l, nn.ConvTranspose2d)]
    assert [(l.in_channels, l.out_channels) for l in deconvs] == [(1024, 512), (512, 256), (256, 128), (128, 3)]
    assert all(l.kernel_size == (4, 4) and l.stride == (2, 2) for l in deconvs)
    assert [type(l).__name__ for l in g.deconvs].count("BatchNorm2d") == 3 and isinstance(g.deconvs[-1], nn.ConvTranspose2d)
    assert all(isinstance(l, (nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU)) for l in g.deconvs)
    # D: 3 -> 128 -> 256 -> 512 -> 1024 strided convs, BatchNorm except the first, LeakyReLU 0.2, no pooling
    convs = [l for l in d.convs if isinstance(l, nn.Conv2d)]
    assert [(l.in_channels, l.out_channels) for l in convs] == [(3, 128), (128, 256), (256, 512), (512, 1024)]
    assert all(l.kernel_size == (4, 4) and l.stride == (2, 2) for l in convs)
    assert isinstance(d.convs[1], nn.LeakyReLU) and [type(l).__name__ for l in d.convs].count("BatchNorm2d") == 3
    assert all(l.negative_slope == 0.2 for l in d.convs if isinstance(l, nn.LeakyReLU))
    assert all(isinstance(l, (nn.Conv2d, nn.BatchNorm2d, nn.LeakyReLU)) for l in d.convs)
    assert d.md is None and (d.out.in_features, d.out.out_features) == (4 * 4 * 1024, 1)
    assert all(mod.bias is None for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)))
    # init N(0, 0.02), BatchNorm gains N(1, 0.02)
    assert float(deconvs[0].weight.detach().std()) == pytest.approx(0.02, rel=0.02)
    assert float(convs[-1].weight.detach().std()) == pytest.approx(0.02, rel=0.02)
    gain = g.project_bn.weight.detach()
    assert float(gain.mean()) == pytest.approx(1.0, abs=0.002) and float(gain.std()) == pytest.approx(0.02, rel=0.1)
    opts = m.configure_optimizers()
    for o in opts.values():
        assert isinstance(o, torch.optim.Adam)
        assert o.defaults["lr"] == 2e-4 and o.defaults["betas"] == (0.5, 0.999) and o.defaults["weight_decay"] == 1e-5
    h = m.hparams
    assert (h["z_dim"], h["noise"], h["updates"], h["minibatch_discrimination"]) == (100, "uniform", "alternate", False)
    s = m.sample(2, generator=torch.Generator().manual_seed(0))
    assert s.shape == (2, 3, 64, 64) and 0.0 <= float(s.min()) and float(s.max()) <= 1.0
    with torch.device("meta"):  # the same architecture from the hyperparameters (no memory, no init cost)
        clone = DCGAN(**h)
    assert clone.hparams == h
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}


@pytest.mark.parametrize("size, plan", [(64, (4, 4)), (32, (3, 4)), (28, (2, 7)), (16, (2, 4)), (8, (1, 4)), (12, (1, 6))])
def test_layer_plan(size, plan):
    assert layer_plan(size) == plan


@pytest.mark.parametrize("kernel_size", [4, 5])
@pytest.mark.parametrize("shape", [[1, 28, 28], [3, 32, 32]])
def test_smaller_images(shape, kernel_size):
    m = DCGAN(image_shape=shape, z_dim=8, g_channels=4, d_channels=2, kernel_size=kernel_size)
    n, base = layer_plan(shape[1])
    deconvs = [l for l in m.generator.deconvs if isinstance(l, nn.ConvTranspose2d)]
    widths = [4 * 2 ** (n - 1 - i) for i in range(n)]  # 28: 7x7x8 -> 14x14x4 -> 28x28xC
    assert [l.in_channels for l in deconvs] == widths and deconvs[-1].out_channels == shape[0]
    assert m.generator.project.out_features == widths[0] * base * base
    assert [l.out_channels for l in m.discriminator.convs if isinstance(l, nn.Conv2d)] == [2 * 2**i for i in range(n)]
    assert stride2_padding(kernel_size) == ((kernel_size - 1) // 2, kernel_size % 2)
    s = m.sample(3, generator=torch.Generator().manual_seed(0))
    assert s.shape == (3, *shape)
    assert m.discriminator_logits(s).shape == (3,)


@pytest.mark.parametrize(
    "kwargs, word",
    [({"image_shape": [1, 16, 8]}, "square"), ({"image_shape": [1, 7, 7]}, "size"), ({"image_shape": [1, 6, 6]}, "size"),
     ({"noise": "normal"}, "noise"), ({"updates": "simultaneous"}, "updates"), ({"kernel_size": 1}, "kernel_size")],
)
def test_bad_arguments_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        DCGAN(**{**TINY, **kwargs})


# ----------------------------------------------------------------------------- training
def test_alternate_updates_g_on_even_steps_and_d_on_odd_steps(digits16):
    m = _build()
    opt = m.configure_optimizers()
    m.train()
    x = digits16[:16]
    g0, d0 = _params(m.generator), _params(m.discriminator)
    log = m.train_step(x, None, step=0, epoch=0, optimizers=opt)
    assert set(log) == {"d_loss", "g_loss", "d_real", "d_fake"} and all(math.isfinite(v) for v in log.values())
    assert _changed(g0, m.generator) == set(g0) and not _changed(d0, m.discriminator)
    g1, d1 = _params(m.generator), _params(m.discriminator)
    log = m.train_step(x, None, step=1, epoch=0, optimizers=opt)
    assert all(math.isfinite(v) for v in log.values())
    assert not _changed(g1, m.generator) and _changed(d1, m.discriminator) == set(d1)
    # the non-saturating G loss and the summed D loss, roughly at the logged mean probabilities
    assert log["g_loss"] == pytest.approx(-math.log(log["d_fake"]), rel=0.3)
    assert log["d_loss"] == pytest.approx(-math.log(log["d_real"]) - math.log(1 - log["d_fake"]), rel=0.3)


def test_both_updates_every_step(digits16):
    m = _build(updates="both")
    opt = m.configure_optimizers()
    m.train()
    g0, d0 = _params(m.generator), _params(m.discriminator)
    log = m.train_step(digits16[:16], None, step=0, epoch=0, optimizers=opt)
    assert all(math.isfinite(v) for v in log.values())
    assert _changed(g0, m.generator) == set(g0) and _changed(d0, m.discriminator) == set(d0)


def test_fit_trains_both_networks_and_samples(digits16):
    m = _build()
    g0, d0 = _params(m.generator), _params(m.discriminator)
    fit(m, digits16, None, _cfg(2))
    assert not m.training
    assert all(math.isfinite(v) for h in m.train_state_.history for v in h.values())
    assert _changed(g0, m.generator) == set(g0) and _changed(d0, m.discriminator) == set(d0)
    gen = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    m.train()
    s = m.sample(10, generator=gen(0))
    assert m.training and m.generator.training, "sample puts the training mode back"
    assert s.shape == (10, 1, 16, 16) and s.dtype == torch.float32 and torch.isfinite(s).all()
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    assert torch.equal(s, m.sample(10, generator=gen(0))) and not torch.equal(s, m.sample(10, generator=gen(1)))
    z = m.noise(5, "cpu", gen(2))
    assert float(z.min()) >= -1 and float(z.max()) <= 1
    m.eval()  # eval-mode BatchNorm: an image depends on its own z only
    assert torch.allclose(m.generate(z[:2]), m.generate(z)[:2], atol=1e-6)


def test_gaussian_noise_option():
    m = _build(noise="gaussian")
    z = m.noise(2000, "cpu", torch.Generator().manual_seed(0))
    assert float(z.min()) < -2 and abs(float(z.std()) - 1) < 0.05


# ----------------------------------------------------------------------------- minibatch discrimination
def test_minibatch_discrimination_changes_d_and_trains(digits16):
    plain, md = _build(), _build(**MD)
    a = 4 * 2 * 4 * 4  # D's last conv features at 16x16: 8 channels x 4 x 4
    assert plain.discriminator.out.in_features == a and plain.discriminator.md is None
    layer = md.discriminator.md
    assert isinstance(layer, MinibatchDiscrimination) and layer.theta.shape == (a, 6, 3)
    assert md.discriminator.out.in_features == a + 6
    # D's output for one image now depends on the other images of its minibatch (checked in eval mode)
    x = digits16[:8].clone()
    y = x.clone()
    y[1:] = digits16[8:15]
    for m, depends in ((plain, False), (md, True)):
        m.eval()
        with torch.no_grad():
            out_x, out_y = m.discriminator_logits(x)[0], m.discriminator_logits(y)[0]
        assert (not torch.allclose(out_x, out_y)) is depends
    # the data-dependent init (improved-gan's) runs at the start of fit and changes the layer's scale and bias
    scale0, bias0 = layer.log_scale.detach().clone(), layer.bias.detach().clone()
    before = _params(md)
    fit(md, digits16, None, _cfg(2))
    assert all(math.isfinite(v) for h in md.train_state_.history for v in h.values())
    assert _changed(before, md) == set(before)  # every parameter moved, T included
    md2 = _build(**MD)
    md2.init_from_data(digits16)
    assert not torch.equal(md2.discriminator.md.log_scale, scale0) and not torch.equal(md2.discriminator.md.bias, bias0)
    s = md.sample(4, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, 1, 16, 16) and float(s.min()) >= 0 and float(s.max()) <= 1
    # md_init_batch=0 skips the data-dependent init
    md3 = _build(**MD, md_init_batch=0)
    md3.init_from_data(digits16)
    assert torch.equal(md3.discriminator.md.log_scale, scale0) and torch.equal(md3.discriminator.md.bias, bias0)


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(digits16, tmp_path):
    m = fit(_build(**MD), digits16, None, _cfg(1), run_dir=tmp_path)
    lm = load_evalkit_checkpoint(tmp_path / "last.pt")
    assert isinstance(lm.model, DCGAN) and lm.model.hparams == m.hparams and lm.info["model_name"] == "dcgan"
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in lm.model.state_dict().items())
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(lm.model.sample(5, generator=g()), m.sample(5, generator=g()))


def test_resume_equals_straight_run(digits16, tmp_path):
    """The update order depends on the global step, so 1 epoch + resume to 2 equals 2 epochs straight."""
    fit(_build(), digits16, None, _cfg(1), run_dir=tmp_path / "a")
    resumed = fit(_build(seed=9), digits16, None, _cfg(2), run_dir=tmp_path / "a", log=lambda s: None)
    straight = fit(_build(), digits16, None, _cfg(2), run_dir=tmp_path / "b")
    assert resumed.train_state_.history == straight.train_state_.history
    assert all(torch.equal(v, straight.state_dict()[k]) for k, v in resumed.state_dict().items())
