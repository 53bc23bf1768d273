"""VAE/GAN (``reference_models.vaegan``): the authors' CelebA networks, the layer-l reconstruction
loss, the gradient routing, the balancing rule, the learning-rate schedule, capabilities, fit and
checkpoints.

Training tests use tiny networks on the embedded 8x8 digits upsampled to 16x16.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import reference_models
from evalkit.checkpoints import load_evalkit_checkpoint
from reference_models.training import TrainConfig, fit
from reference_models.vaegan import VAEGAN
from helpers import param_snapshot as _params, changed_params as _changed  # noqa: E402

TINY = {"image_shape": [1, 16, 16], "z_dim": 4, "enc_channels": [4, 8], "enc_fc": 16, "dec_channels": [8, 4],
        "dis_channels": [4, 8, 8], "dis_fc": 8, "llike_layer": 3}
LOG_KEYS = {"kl", "llike", "dec_gan", "real_cost", "fake_cost", "dis_updated", "dec_updated"}


def _build(seed=0, **kw) -> VAEGAN:
    torch.manual_seed(seed)
    return VAEGAN(**{**TINY, **kw})


def _nets(m: VAEGAN) -> dict[str, nn.Module]:
    return {"encoder": m.encoder, "decoder": m.decoder, "discriminator": m.discriminator}


def _one_step(m: VAEGAN, x, step=0, seed=1):
    """One train_step; returns (log, names of the networks whose every parameter changed, networks unchanged)."""
    opt = m.configure_optimizers()
    m.train()
    before = {k: _params(n) for k, n in _nets(m).items()}
    torch.manual_seed(seed)
    log = m.train_step(x, None, step=step, epoch=0, optimizers=opt)
    moved = {k for k, n in _nets(m).items() if _changed(before[k], n) == set(before[k])}
    still = {k for k, n in _nets(m).items() if not _changed(before[k], n)}
    return log, moved, still


def _cfg(epochs, **kw):
    return TrainConfig(epochs=epochs, batch_size=16, seed=0, progress=False, **kw)


# ----------------------------------------------------------------------------- architecture
def test_default_is_the_authors_celeba_network():
    m = reference_models.build("vaegan")
    assert isinstance(m, VAEGAN) and reference_models.model_class("vaegan") is VAEGAN and VAEGAN.description
    enc, dec, dis = m.encoder, m.decoder, m.discriminator
    convs = [l for l in enc.body if isinstance(l, nn.Conv2d)]
    assert [(l.in_channels, l.out_channels, l.stride) for l in convs] == [(3, 64, (2, 2)), (64, 128, (2, 2)), (128, 256, (2, 2))]
    assert all(l.kernel_size == (5, 5) for l in convs)
    fc = [l for l in enc.body if isinstance(l, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in fc] == [(256 * 8 * 8, 1024)]  # the code's 1024 (paper: 2048)
    assert (enc.mu.in_features, enc.mu.out_features, enc.logvar.out_features) == (1024, 128, 128)
    assert (dec.fc[0].in_features, dec.fc[0].out_features) == (128, 8 * 8 * 256) and dec.base == (8, 8)
    deconvs = [l for l in dec.body if isinstance(l, nn.ConvTranspose2d)]
    assert [(l.in_channels, l.out_channels) for l in deconvs] == [(256, 256), (256, 128), (128, 32)]
    assert all(l.kernel_size == (5, 5) and l.stride == (2, 2) for l in deconvs)
    last = dec.body[-1]
    assert isinstance(last, nn.Conv2d) and (last.in_channels, last.out_channels, last.stride) == (32, 3, (1, 1))
    assert [(l.in_channels, l.out_channels, l.stride) for l in dis.convs] == [
        (3, 32, (1, 1)), (32, 128, (2, 2)), (128, 256, (2, 2)), (256, 256, (2, 2))]
    assert isinstance(dis.post[0], nn.ReLU) and all(isinstance(p[0], nn.BatchNorm2d) for p in dis.post[1:])
    head = [l for l in dis.head if isinstance(l, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in head] == [(256 * 8 * 8, 512), (512, 1)]
    assert all(b.eps == 1e-6 and b.momentum == 0.1 for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm))
    # layer l: the 4th conv's output (256 x 8 x 8, before its BatchNorm)
    x = torch.rand(2, 3, 64, 64)
    assert m.llike_features(2 * x - 1).shape == (2, 256 * 8 * 8)
    h = m.hparams
    assert (h["z_dim"], h["enc_fc"], h["llike_layer"], h["gamma"], h["gan_on_reconstructions"]) == (128, 1024, 4, 1e-6, False)
    assert (h["balance"], h["equilibrium"], h["margin"], h["dec_gan_loss"], h["real_weight"]) == (True, 0.68, 0.35, "saturating", 0.5)
    opts = m.configure_optimizers()
    assert set(opts) == {"encoder", "decoder", "discriminator"}
    for o in opts.values():
        assert isinstance(o, torch.optim.RMSprop) and o.defaults["alpha"] == 0.9 and o.defaults["eps"] == 1e-8
        assert o.param_groups[0]["lr"] == pytest.approx(0.025 / 64)
        assert [g["weight_decay"] for g in o.param_groups] == [1e-5, 0.0]
    no_decay = {id(p) for p in opts["encoder"].param_groups[1]["params"]}
    assert all(id(p) in no_decay for p in [*enc.mu.parameters(), *enc.logvar.parameters()])
    assert all(id(l.weight) not in no_decay for l in convs)
    s = m.sample(2, generator=torch.Generator().manual_seed(0))
    assert s.shape == (2, 3, 64, 64) and float(s.min()) >= 0 and float(s.max()) <= 1
    with torch.device("meta"):  # the same architecture from the hyperparameters (no memory, no init cost)
        clone = VAEGAN(**h)
    assert clone.hparams == h
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}


@pytest.mark.parametrize(
    "kwargs, word",
    [({"llike_layer": 0}, "llike_layer"), ({"llike_layer": 4}, "llike_layer"), ({"kernel_size": 4}, "odd"),
     ({"dec_gan_loss": "minimax"}, "dec_gan_loss"), ({"gamma": 2.0}, "gamma"), ({"image_shape": [1, 18, 18]}, "divisible")],
)
def test_bad_arguments_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        VAEGAN(**{**TINY, **kwargs})


def test_learning_rate_schedule_is_the_codes_gamma_annealer():
    m = _build()
    lr0, lr1 = 0.025 / 64, 1e-5 / 64
    assert m.lr_at(0) == pytest.approx(lr0) and m.lr_at(249) == pytest.approx(lr0)  # one code epoch = 250 minibatches
    assert m.lr_at(250 * 125) == pytest.approx(lr0 - 0.5**0.75 * (lr0 - lr1))
    assert m.lr_at(250 * 250) == pytest.approx(lr1) and m.lr_at(10**8) == pytest.approx(lr1)
    assert all(m.lr_at(s) >= m.lr_at(s + 250) for s in range(0, 250 * 260, 250 * 7))
    assert _build(lr_anneal_epochs=0, lr=3e-4).lr_at(10**6) == 3e-4
    opt = m.configure_optimizers()
    m.train_step(torch.rand(4, 1, 16, 16), None, step=250 * 125, epoch=0, optimizers=opt)
    assert all(g["lr"] == pytest.approx(m.lr_at(250 * 125)) for o in opt.values() for g in o.param_groups)


# ----------------------------------------------------------------------------- training
def test_fit_trains_every_network(digits16):
    m = _build()
    before = {k: _params(n) for k, n in _nets(m).items()}
    fit(m, digits16, None, _cfg(2))
    assert not m.training
    hist = m.train_state_.history
    assert set(hist[-1]) == LOG_KEYS | {"epoch"}
    assert all(math.isfinite(v) for h in hist for v in h.values())
    for k, n in _nets(m).items():
        assert _changed(before[k], n) == set(before[k]), k


def test_llike_uses_the_configured_layer(digits16):
    x = 2 * digits16[:6] - 1
    x_tilde = 2 * torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0)) - 1
    units = {1: 4 * 16 * 16, 2: 8 * 8 * 8, 3: 8 * 4 * 4}  # conv 1 has stride 1, then one halving per conv
    for layer, n_units in units.items():
        m = _build(llike_layer=layer)
        m.train()
        seen = []
        hook = m.discriminator.convs[layer - 1].register_forward_hook(lambda mod, inp, out: seen.append(out))
        with torch.no_grad():
            f = m.llike_features(torch.cat([x_tilde, x]))
            assert f.shape == (12, n_units) and torch.equal(f, seen[-1].flatten(1))
            m.discriminator(torch.cat([x_tilde, x]))  # the full D on the same minibatch: same layer output
            assert torch.allclose(seen[-1].flatten(1), f)
            ref = 0.5 * (f[:6] - f[6:]).pow(2).sum()
            assert torch.allclose(m.llike_loss(x_tilde, x), ref)
        hook.remove()
        # and train_step's reported L_llike is that of the configured layer, at its own z ~ q(z|x)
        twin = copy.deepcopy(m)
        log, _, _ = _one_step(m, digits16[:6])
        twin.train()
        torch.manual_seed(1)
        with torch.no_grad():
            mu, logvar = twin.encoder(x)
            x_rec = twin.decoder(mu + torch.exp(0.5 * logvar) * torch.randn_like(mu))
            seen.clear()
            hook = twin.discriminator.convs[layer - 1].register_forward_hook(lambda mod, inp, out: seen.append(out))
            twin.discriminator(torch.cat([x_rec, x]))
            hook.remove()
            f = seen[0].flatten(1)
        assert log["llike"] == pytest.approx(float(0.5 * (f[:6] - f[6:]).pow(2).sum()) / 6, rel=1e-4)


def test_encoder_gets_no_gan_gradient(digits16):
    """D's layers after l only enter the GAN loss: re-drawing them changes the decoder's step, not the encoder's."""
    a = _build(balance=False)
    b = copy.deepcopy(a)
    torch.manual_seed(5)
    for mod in b.discriminator.head:
        if hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
    x = digits16[:16]
    _one_step(a, x)
    _one_step(b, x)
    assert all(torch.equal(v, dict(b.encoder.named_parameters())[k]) for k, v in a.encoder.named_parameters())
    assert not all(torch.equal(v, dict(b.decoder.named_parameters())[k]) for k, v in a.decoder.named_parameters())


def test_gamma_weights_llike_in_the_decoder_update(digits16):
    """gamma = 1: the decoder ignores the GAN term, so D's head no longer matters to it either."""
    a = _build(balance=False, gamma=1.0)
    b = copy.deepcopy(a)
    torch.manual_seed(5)
    for mod in b.discriminator.head:
        if hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
    _one_step(a, digits16[:16])
    _one_step(b, digits16[:16])
    assert all(torch.equal(v, dict(b.decoder.named_parameters())[k]) for k, v in a.decoder.named_parameters())


@pytest.mark.parametrize(
    "kwargs, updated, frozen, flags",
    [
        ({"equilibrium": 10.0, "margin": 1.0}, {"encoder", "decoder"}, {"discriminator"}, (0.0, 1.0)),  # D "too good"
        ({"equilibrium": -10.0, "margin": 1.0}, {"encoder", "discriminator"}, {"decoder"}, (1.0, 0.0)),  # D "too bad"
        ({"equilibrium": 0.68, "margin": -5.0}, {"encoder", "decoder", "discriminator"}, set(), (1.0, 1.0)),  # both: update both
        ({"equilibrium": 10.0, "margin": 1.0, "balance": False}, {"encoder", "decoder", "discriminator"}, set(), (1.0, 1.0)),
    ],
    ids=["skip-d", "skip-decoder", "both-skipped-update-both", "balance-off"],
)
def test_balancing_rule_skips_updates(digits16, kwargs, updated, frozen, flags):
    log, moved, still = _one_step(_build(**kwargs), digits16[:16])
    assert (log["dis_updated"], log["dec_updated"]) == flags
    assert moved == updated and still == frozen
    assert all(math.isfinite(v) for v in log.values())


def test_balancing_rule_thresholds():
    m = _build()  # equilibrium 0.68, margin 0.35: band [0.33, 1.03]
    assert m.balance_updates(0.7, 0.7) == (True, True)
    assert m.balance_updates(0.2, 0.7) == (False, True) and m.balance_updates(0.7, 0.3) == (False, True)
    assert m.balance_updates(1.2, 0.7) == (True, False) and m.balance_updates(0.7, 1.1) == (True, False)
    assert m.balance_updates(0.2, 1.2) == (True, True)  # both would be skipped: update both


@pytest.mark.parametrize("on, d_batch", [(False, 2), (True, 3)])
def test_gan_on_reconstructions(digits16, on, d_batch):
    """D's GAN minibatch is [x; Dec(z_p)] (2B) by default, [x; Dec(z); Dec(z_p)] (3B) with the paper's L_GAN."""
    m = _build(gan_on_reconstructions=on, balance=False)
    sizes = []
    m.discriminator.convs[0].register_forward_hook(lambda mod, inp, out: sizes.append(inp[0].shape[0]))
    log, moved, _ = _one_step(m, digits16[:8])
    assert sizes == [16, 8 * d_batch]  # the layer-l pass on [x~; x], then the GAN pass
    assert moved == {"encoder", "decoder", "discriminator"} and all(math.isfinite(v) for v in log.values())


def test_nonsaturating_option(digits16):
    log, moved, _ = _one_step(_build(dec_gan_loss="nonsaturating", balance=False), digits16[:8])
    assert log["dec_gan"] > 0 and moved == {"encoder", "decoder", "discriminator"}
    log, _, _ = _one_step(_build(balance=False), digits16[:8])
    assert log["dec_gan"] == pytest.approx(-log["fake_cost"])  # saturating: sum log(1 - D + eps) per image


# ----------------------------------------------------------------------------- capabilities / checkpoints
def test_capabilities(digits16):
    m = fit(_build(), digits16, None, _cfg(1))
    m.train()
    x = digits16[:5]
    z = m.encode(x)
    assert m.training and m.encoder.training, "capabilities put the training mode back"
    assert z.shape == (5, 4) and not z.requires_grad and torch.equal(z, m.encode(x))
    mu, logvar = m.encode_dist(x)
    assert torch.equal(mu, z) and logvar.shape == (5, 4)
    assert torch.allclose(m.encode(x[:2]), z[:2], atol=1e-6)  # eval mode: no batch statistics
    assert m.decode(z).requires_grad  # decode keeps the graph (as VAE's); the rest are no-grad
    out = m.decode(z).detach()
    for img in (out, m.reconstruct(x)):
        assert img.shape == (5, 1, 16, 16) and torch.isfinite(img).all()
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    s = m.sample(7, generator=g(0))
    assert s.shape == (7, 1, 16, 16) and float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    assert torch.equal(s, m.sample(7, generator=g(0))) and not torch.equal(s, m.sample(7, generator=g(1)))
    assert torch.equal(s, m.decode(torch.randn(7, 4, generator=g(0))).detach())


def test_checkpoint_round_trip(digits16, tmp_path):
    m = fit(_build(gan_on_reconstructions=True), digits16, None, _cfg(1), run_dir=tmp_path)
    lm = load_evalkit_checkpoint(tmp_path / "last.pt")
    assert isinstance(lm.model, VAEGAN) and lm.model.hparams == m.hparams and lm.info["model_name"] == "vaegan"
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in lm.model.state_dict().items())
    x = digits16[:4]
    assert torch.equal(lm.model.encode(x), m.encode(x)) and torch.equal(lm.model.reconstruct(x), m.reconstruct(x))


def test_resume_equals_straight_run(digits16, tmp_path):
    fit(_build(), digits16, None, _cfg(1), run_dir=tmp_path / "a")
    resumed = fit(_build(seed=9), digits16, None, _cfg(2), run_dir=tmp_path / "a", log=lambda s: None)
    straight = fit(_build(), digits16, None, _cfg(2), run_dir=tmp_path / "b")
    assert resumed.train_state_.history == straight.train_state_.history
    assert all(torch.equal(v, straight.state_dict()[k]) for k, v in resumed.state_dict().items())
