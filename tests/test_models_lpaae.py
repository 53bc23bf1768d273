"""The learned-prior AAE (reference_models.lpaae, Wang, Peng, Ko 2020): construction, the two
phases and their schedule, the learned-prior switch, capabilities, checkpoints."""
from __future__ import annotations

import math

import pytest
import torch

import reference_models
from reference_models.lpaae import LearnedPriorAAE
from reference_models.training import TrainConfig, fit
from helpers import state_snapshot as _params, moved_networks as _moved, linear_sizes as _linear_sizes, gen as _g  # noqa: E402

TINY = {
    "image_shape": [1, 8, 8], "code_dim": 2, "noise_dim": 2, "hidden": [32], "cg_hidden": [16],
    "code_disc_hidden": [16], "image_disc_hidden": [32], "init_std": 0.1, "lr": 3e-3,
}
NETS = ("encoder", "decoder", "d_code", "code_gen", "d_image")


def _build(**kw) -> LearnedPriorAAE:
    torch.manual_seed(0)
    return reference_models.build("lpaae", **{**TINY, **kw})


def _fit(model, x, epochs=4, run_dir=None):
    return fit(model, x, None, TrainConfig(epochs=epochs, batch_size=20, seed=0, progress=False), run_dir=run_dir)


# ----------------------------------------------------------------------------- construction
def test_defaults_build_the_documented_mnist_model():
    torch.manual_seed(0)
    m = reference_models.build("lpaae")
    assert type(m) is LearnedPriorAAE and reference_models.model_class("lpaae") is LearnedPriorAAE
    assert _linear_sizes(m.encoder) == [(784, 1000), (1000, 1000), (1000, 8)]
    assert _linear_sizes(m.decoder) == [(8, 1000), (1000, 1000), (1000, 784)]
    assert _linear_sizes(m.code_gen) == [(8, 1000), (1000, 1000), (1000, 8)]
    assert _linear_sizes(m.d_code) == [(8, 1000), (1000, 1000), (1000, 1)]
    assert _linear_sizes(m.d_image) == [(784, 1000), (1000, 1000), (1000, 1)]
    h = m.hparams
    assert h["learn_prior"] and h["cg_residual"] and h["rec_loss"] == "auto" and m.rec_kind == "feature"
    assert h["rec_weight"] == 20.0 and h["prior_every"] == 4 and h["noise_std"] == 1.0 and h["init_std"] == 0.01
    opts = m.configure_optimizers()
    assert set(opts) == set(NETS)
    for o in opts.values():
        assert isinstance(o, torch.optim.Adam) and o.defaults["lr"] == 2e-4 and tuple(o.defaults["betas"]) == (0.5, 0.999)
    assert float(m.encoder[0].weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    assert float(m.code_gen[-1].weight.detach().abs().max()) == 0.0  # residual CG starts at the identity
    clone = LearnedPriorAAE(**m.hparams)  # a checkpoint's model_kwargs rebuild the same architecture
    assert clone.hparams == m.hparams
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    caps = {d["name"]: d["capabilities"] for d in reference_models.describe()}["lpaae"]
    assert {"sample", "encode", "decode"} <= set(caps)


def test_learn_prior_off_is_a_plain_aae():
    m = _build(learn_prior=False)
    assert not hasattr(m, "code_gen") and not hasattr(m, "d_image") and m.rec_kind == "pixel"
    assert {k.split(".", 1)[0] for k in m.state_dict()} == {"encoder", "decoder", "d_code"}
    assert set(m.configure_optimizers()) == {"encoder", "decoder", "d_code"}
    assert LearnedPriorAAE(**m.hparams).state_dict().keys() == m.state_dict().keys()


@pytest.mark.parametrize("kwargs, word", [
    ({"rec_loss": "l1"}, "rec_loss"),
    ({"rec_loss": "feature", "learn_prior": False}, "image discriminator"),
    ({"noise_dim": 3}, "noise_dim"),
    ({"prior_every": 0}, "prior_every"),
])
def test_bad_constructor_args(kwargs, word):
    with pytest.raises(ValueError, match=word):
        _build(**kwargs)


def test_mismatched_noise_dim_allowed_without_residual():
    m = _build(noise_dim=3, cg_residual=False)
    assert m.prior_codes(5, generator=_g(0)).shape == (5, 2)


# ----------------------------------------------------------------------------- priors
def test_residual_prior_starts_as_the_gaussian():
    m = _build(noise_std=1.5)
    torch.testing.assert_close(m.prior_codes(6, generator=_g(3)), 1.5 * torch.randn(6, 2, generator=_g(3)))


def test_learn_prior_off_samples_gaussian_codes(digits200):
    m = _fit(_build(learn_prior=False), digits200[:100], epochs=1)
    z = torch.randn(7, 2, generator=_g(5))
    assert torch.equal(m.prior_codes(7, generator=_g(5)), z)  # N(0, I) codes, no generator network
    assert torch.equal(m.sample(7, generator=_g(5)), m.decode(z).detach())


# ----------------------------------------------------------------------------- phases and schedule
def test_aae_phase_updates_encoder_decoder_and_code_discriminator_only(digits200):
    m = _build()
    opts, before = m.configure_optimizers(), _params(m)
    out = m.aae_phase(digits200[:20].flatten(1), opts)
    assert _moved(before, m) == {"encoder", "decoder", "d_code"}
    assert set(out) == {"rec_loss", "rec_mse", "d_code", "g_code"} and all(math.isfinite(v) for v in out.values())


def test_prior_phase_keeps_the_encoder_fixed(digits200):
    m = _build()
    opts, before = m.configure_optimizers(), _params(m)
    out = m.prior_phase(digits200[:20].flatten(1), opts)
    assert _moved(before, m) == {"code_gen", "decoder", "d_image"}
    assert set(out) == {"d_image", "g_image"} and all(math.isfinite(v) for v in out.values())
    before = _params(m)
    assert m.prior_phase(digits200[:20].flatten(1), opts, update=False).keys() == out.keys()
    assert not _moved(before, m)


def test_prior_improvement_every_prior_every_steps(digits200):
    m = _build(prior_every=3)
    opts = m.configure_optimizers()
    x = digits200[:20]
    moved, reported = [], []
    for step in (1, 2, 3, 4, 5, 6):  # starts mid-cycle, as a resumed run may
        before = _params(m)
        out = m.train_step(x, None, step=step, epoch=0, optimizers=opts)
        moved.append(_moved(before, m))
        reported.append((out["d_image"], out["g_image"]))
    aae, both = {"encoder", "decoder", "d_code"}, set(NETS)
    assert moved == [aae, aae, both, aae, aae, both]
    assert reported[0] == reported[1] and reported[3] == reported[4] != reported[0]  # held between prior updates


@pytest.mark.parametrize("kw", [{}, {"learn_prior": False}, {"rec_loss": "pixel"}], ids=["feature", "off", "pixel"])
def test_fit_reduces_reconstruction_error(digits200, kw):
    m = _build(**kw)
    before = _params(m)
    _fit(m, digits200)
    hist = m.train_state_.history
    keys = {"rec_loss", "rec_mse", "d_code", "g_code"} | (set() if kw.get("learn_prior") is False else {"d_image", "g_image"})
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    for h in hist:
        assert set(h) - {"epoch"} == keys and all(math.isfinite(v) for v in h.values())
    factor = 0.95 if not kw else 0.7  # the feature loss improves pixels more slowly
    assert hist[-1]["rec_mse"] < factor * hist[0]["rec_mse"], [h["rec_mse"] for h in hist]
    assert _moved(before, m) == set(NETS) - ({"code_gen", "d_image"} if kw.get("learn_prior") is False else set())


# ----------------------------------------------------------------------------- capabilities, checkpoints
def test_capabilities(digits200):
    m = _fit(_build(), digits200[:100], epochs=1)
    x = digits200[:9]
    z = m.encode(x)
    assert z.shape == (9, 2) and torch.equal(z, m.encode(x))
    for out in (m.decode(z).detach(), m.reconstruct(x)):
        assert out.shape == (9, 1, 8, 8) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    s = m.sample(7, generator=_g(0))
    assert s.shape == (7, 1, 8, 8) and s.dtype == torch.float32 and torch.isfinite(s).all()
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    assert torch.equal(s, m.sample(7, generator=_g(0))) and not torch.equal(s, m.sample(7, generator=_g(1)))
    assert torch.equal(s, m.decode(m.prior_codes(7, generator=_g(0))).detach())


def test_resumed_run_equals_uninterrupted_run(digits200, tmp_path):
    """100 images / batch 20 = 5 steps per epoch: the resume at epoch 2 (step 10) falls
    mid-cycle of the prior updates (prior_every = 4)."""
    x = digits200[:100]
    _fit(_build(prior_every=4), x, epochs=2, run_dir=tmp_path / "a")
    resumed = _fit(_build(prior_every=4), x, epochs=3, run_dir=tmp_path / "a")
    straight = _fit(_build(prior_every=4), x, epochs=3, run_dir=tmp_path / "b")
    assert resumed.train_state_.step == straight.train_state_.step == 15
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_checkpoint_round_trip(digits200, tmp_path):
    m = _fit(_build(), digits200[:100], epochs=1, run_dir=tmp_path)
    ck = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert ck["model_name"] == "lpaae" and ck["model_kwargs"] == m.hparams
    assert set(ck["optimizers"]) == set(NETS)
    clone = LearnedPriorAAE(**ck["model_kwargs"])
    clone.load_state_dict(ck["state_dict"])
    clone.eval()
    x = digits200[:5]
    assert torch.equal(clone.encode(x), m.encode(x))
    assert torch.equal(clone.sample(4, generator=_g(2)), m.sample(4, generator=_g(2)))
