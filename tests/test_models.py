"""Reference models (``reference_models``): construction, training on digits, sampling, posteriors."""
from __future__ import annotations

import math

import pytest
import torch

import reference_models
from reference_models.aae import AAE, POSTERIORS
from reference_models.gan import GAN
from reference_models.training import TrainConfig, fit

from conftest import AAE_TINY, GAN_TINY


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _check_samples(model, n=7):
    s = model.sample(n, generator=torch.Generator().manual_seed(0))
    assert s.shape == (n, 1, 8, 8)
    assert s.dtype == torch.float32
    assert torch.isfinite(s).all()
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    again = model.sample(n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, again), "same generator seed must give the same samples"
    other = model.sample(n, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(s, other), "different generator seeds should give different samples"
    return s


# ----------------------------------------------------------------------------- registry
def test_build_returns_registered_classes():
    assert isinstance(reference_models.build("gan", **GAN_TINY), GAN)
    assert isinstance(reference_models.build("aae", **AAE_TINY), AAE)
    assert reference_models.model_class("gan") is GAN
    assert reference_models.model_class("aae") is AAE


def test_model_class_unknown_lists_known_names():
    with pytest.raises(KeyError) as ei:
        reference_models.model_class("nope")
    msg = str(ei.value)
    assert "nope" in msg and "gan" in msg and "aae" in msg


def test_describe_lists_capabilities():
    d = {m["name"]: m for m in reference_models.describe()}
    assert set(d) >= {"gan", "aae"}
    assert "sample" in d["gan"]["capabilities"]
    assert {"sample", "encode", "decode"} <= set(d["aae"]["capabilities"])
    assert d["gan"]["class"] == "reference_models.gan:GAN"
    assert d["gan"]["description"] and d["aae"]["description"]


@pytest.mark.parametrize(
    "name, kwargs, word",
    [
        ("gan", {"optimizer": "rmsprop"}, "optimizer"),
        ("gan", {"noise": "cauchy"}, "noise"),
        ("aae", {"posterior": "flow"}, "posterior"),
        ("aae", {"optimizer": "rmsprop"}, "optimizer"),
    ],
)
def test_bad_constructor_args_raise_value_error(name, kwargs, word):
    tiny = GAN_TINY if name == "gan" else AAE_TINY
    with pytest.raises(ValueError, match=word):
        reference_models.build(name, **{**tiny, **kwargs})


def test_hparams_record_constructor_arguments():
    m = reference_models.build("gan", **GAN_TINY, optimizer="adam")
    assert m.hparams["g_hidden"] == [16] and m.hparams["d_units"] == 8 and m.hparams["optimizer"] == "adam"
    assert m.hparams["image_shape"] == [1, 8, 8]
    # hparams rebuild the same architecture
    clone = GAN(**m.hparams)
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}


# ----------------------------------------------------------------------------- GAN
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_gan_trains_and_samples(digits200, optimizer):
    torch.manual_seed(0)
    model = reference_models.build("gan", **GAN_TINY, optimizer=optimizer)
    before = _params(model)
    fit(model, digits200, None, TrainConfig(epochs=3, batch_size=50, seed=0, progress=False))

    hist = model.train_state_.history
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    for h in hist:
        assert set(h) >= {"d_loss", "g_loss", "d_acc"}
        assert all(math.isfinite(h[k]) for k in ("d_loss", "g_loss", "d_acc"))
        assert 0.0 <= h["d_acc"] <= 1.0
    assert model.train_state_.step == 3 * (200 // 50)
    assert not model.training, "fit returns the model in eval mode"

    after = _params(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("generator.") for k in changed), "generator did not move"
    assert any(k.startswith("d_hidden.") for k in changed), "discriminator did not move"
    assert "d_out.weight" in changed
    _check_samples(model)


def test_gan_sgd_schedule_depends_only_on_counters():
    m = reference_models.build("gan", **GAN_TINY)
    assert m.lr_at(0) == pytest.approx(0.1)
    assert m.lr_at(1000) == pytest.approx(0.1 / 1.000004**1000)
    assert m.lr_at(10**9) == pytest.approx(1e-6)  # floor
    assert m.momentum_at(0) == pytest.approx(0.5)
    assert m.momentum_at(249) == pytest.approx(0.7)
    assert m.momentum_at(1000) == pytest.approx(0.7)
    assert 0.5 < m.momentum_at(100) < 0.7


def test_gan_init_from_data_sets_output_bias_to_pixel_logits(digits200):
    m = reference_models.build("gan", **GAN_TINY)
    m.init_from_data(digits200)
    p = digits200.flatten(1).mean(0).clamp(1e-3, 1 - 1e-3)
    assert torch.allclose(torch.sigmoid(m.generator[-1].bias), p, atol=1e-5)


def test_gan_gaussian_noise_samples(digits200):
    m = reference_models.build("gan", **GAN_TINY, noise="gaussian")
    _check_samples(m)
    z = m.noise_like(5000, "cpu", torch.Generator().manual_seed(0))
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05
    u = reference_models.build("gan", **GAN_TINY).noise_like(5000, "cpu", torch.Generator().manual_seed(0))
    assert float(u.abs().max()) <= math.sqrt(3) + 1e-6 and abs(float(u.std()) - 1) < 0.05


def test_gan_sample_restores_training_mode():
    m = reference_models.build("gan", **GAN_TINY)
    m.train()
    m.sample(3)
    assert m.training


# ----------------------------------------------------------------------------- AAE
def test_aae_reconstruction_loss_decreases(digits200):
    torch.manual_seed(0)
    model = reference_models.build("aae", **AAE_TINY, lr_recon=1e-3, lr_adv=1e-3)
    before = _params(model)
    fit(model, digits200, None, TrainConfig(epochs=6, batch_size=20, seed=0, progress=False))
    hist = model.train_state_.history
    assert len(hist) == 6
    for h in hist:
        assert set(h) >= {"rec_loss", "d_loss", "g_loss"}
        assert all(math.isfinite(v) for v in h.values())
    assert hist[-1]["rec_loss"] < 0.9 * hist[0]["rec_loss"], [h["rec_loss"] for h in hist]
    after = _params(model)
    for prefix in ("encoder.", "decoder.", "discriminator."):
        assert any(k.startswith(prefix) and not torch.equal(before[k], after[k]) for k in before), prefix
    _check_samples(model)


def test_aae_sgd_optimizer_trains(digits200):
    torch.manual_seed(0)
    model = reference_models.build("aae", **AAE_TINY, optimizer="sgd", sgd_decay_epoch=1)
    fit(model, digits200, None, TrainConfig(epochs=2, batch_size=50, seed=0, progress=False))
    assert all(math.isfinite(v) for h in model.train_state_.history for v in h.values())
    opts = model.configure_optimizers()
    model.on_epoch_start(1, opts)  # past sgd_decay_epoch: lr / 10
    assert opts["recon"].param_groups[0]["lr"] == pytest.approx(0.001)
    assert opts["disc"].param_groups[0]["lr"] == pytest.approx(0.01)


@pytest.mark.parametrize("posterior", POSTERIORS)
def test_aae_posteriors_encode_decode(digits200, posterior):
    torch.manual_seed(0)
    model = reference_models.build("aae", **AAE_TINY, posterior=posterior)
    x = digits200[:9]
    z = model.encode(x, generator=torch.Generator().manual_seed(0))
    assert z.shape == (9, AAE_TINY["z_dim"])
    assert torch.isfinite(z).all()
    # seeded draws repeat
    z2 = model.encode(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, z2)
    z3 = model.encode(x, generator=torch.Generator().manual_seed(1))
    if posterior == "deterministic":
        assert torch.equal(z, z3)
    else:
        assert not torch.equal(z, z3), f"{posterior} posterior should be stochastic"
    xr = model.decode(z).detach()
    assert xr.shape == (9, 1, 8, 8)
    assert float(xr.min()) >= 0 and float(xr.max()) <= 1
    assert model.reconstruct(x).shape == x.shape
    # encoder input / output widths follow the posterior
    first = model.encoder[0]
    assert first.in_features == 64 + (AAE_TINY["noise_dim"] if posterior == "universal" else 0)
    assert model.encoder[-1].out_features == (2 if posterior == "gaussian" else 1) * AAE_TINY["z_dim"]
    # and it trains
    fit(model, digits200, None, TrainConfig(epochs=1, batch_size=50, seed=0, progress=False))
    assert all(math.isfinite(v) for v in model.train_state_.history[-1].values())
    _check_samples(model)


def test_aae_prior_scale():
    m = reference_models.build("aae", **AAE_TINY, prior_std=5.0)
    z = m.prior(4000, "cpu", torch.Generator().manual_seed(0))
    assert z.shape == (4000, AAE_TINY["z_dim"])
    assert abs(float(z.std()) - 5.0) < 0.25


def test_every_registered_model_imports_and_says_what_it_is():
    d = {m["name"]: m for m in reference_models.describe()}
    assert set(d) == set(reference_models.REGISTRY)
    broken = {n: m["description"] for n, m in d.items() if m["description"].startswith("unavailable")}
    assert not broken, broken
    assert all(m["description"] for m in d.values())
