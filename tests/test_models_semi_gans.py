"""Semi-supervised GANs and the NN baseline: ``sgan``, ``improved_gan``, ``mlp_classifier``.

Tiny models on 200 8x8 digits with 3 labels per class (the rest marked -1).
"""
from __future__ import annotations

import math

import pytest
import torch

import reference_models
from reference_models.classifier import MLPClassifier
from reference_models.improved_gan import ImprovedGAN, MinibatchDiscrimination, WNLinear, semi_supervised_losses
from reference_models.sgan import SGAN
from reference_models.training import TrainConfig, fit

SGAN_TINY = {"image_shape": [1, 8, 8], "z_dim": 8, "d_channels": [4, 8], "g_hidden": 16, "g_channels": [8, 4], "batch_size": 20}
IGAN_TINY = {"image_shape": [1, 8, 8], "z_dim": 8, "g_hidden": [16, 16], "d_hidden": [32, 16, 16], "batch_size": 20}
MD_TINY = {"minibatch_discrimination": True, "md_kernels": 6, "md_dim": 3}
MLP_TINY = {"image_shape": [1, 8, 8], "hidden": [32, 32], "batch_size": 20}
PER_CLASS = 3


@pytest.fixture(scope="module")
def digits_labelled():
    """200 digits [200, 1, 8, 8] and their labels with all but ``PER_CLASS`` per class set to -1."""
    from evalkit.data import load

    ds = load("digits", "train")
    x, y = ds.tensor()[:200].clone(), ds.label_tensor()[:200].clone()
    keep = torch.cat([(y == c).nonzero()[:PER_CLASS, 0] for c in range(10)])
    masked = torch.full_like(y, -1)
    masked[keep] = y[keep]
    return x, masked, y


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before, model, prefix) -> bool:
    after = model.state_dict()
    return any(k.startswith(prefix) and not torch.equal(before[k], after[k]) for k in before)


def _check_logits(model, x, k=10):
    logits = model.predict_logits(x)
    assert logits.shape == (x.shape[0], k)
    assert torch.isfinite(logits).all()
    assert torch.equal(logits, model.predict_logits(x)), "predict_logits must be deterministic (eval mode)"
    return logits


def _check_samples(model, n=5):
    s = model.sample(n, generator=torch.Generator().manual_seed(0))
    assert s.shape == (n, 1, 8, 8) and torch.isfinite(s).all()
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    assert torch.equal(s, model.sample(n, generator=torch.Generator().manual_seed(0)))


def _fit(model, x, y, epochs, batch_size=20):
    return fit(model, x, y, TrainConfig(epochs=epochs, batch_size=batch_size, seed=0, progress=False))


# ----------------------------------------------------------------------------- registry / args
@pytest.mark.parametrize(
    "name, cls, tiny", [("sgan", SGAN, SGAN_TINY), ("improved_gan", ImprovedGAN, IGAN_TINY), ("mlp_classifier", MLPClassifier, MLP_TINY)]
)
def test_build_and_hparams_rebuild(name, cls, tiny):
    m = reference_models.build(name, **tiny)
    assert isinstance(m, cls) and reference_models.model_class(name) is cls
    assert m.hparams["image_shape"] == [1, 8, 8] and cls.registry_name == name and cls.description
    clone = cls(**m.hparams)
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}


@pytest.mark.parametrize(
    "name, kwargs, word",
    [
        ("sgan", {**SGAN_TINY, "g_loss": "wasserstein"}, "g_loss"),
        ("sgan", {**SGAN_TINY, "image_shape": [1, 10, 10]}, "multiples of 4"),
        ("improved_gan", {**IGAN_TINY, "g_loss": "hinge"}, "g_loss"),
        ("improved_gan", {**IGAN_TINY, "ema_rate": 2.0}, "ema_rate"),
        ("mlp_classifier", {**MLP_TINY, "optimizer": "rmsprop"}, "optimizer"),
        ("mlp_classifier", {**MLP_TINY, "dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments_raise(name, kwargs, word):
    with pytest.raises(ValueError, match=word):
        reference_models.build(name, **kwargs)


@pytest.mark.parametrize("name, tiny", [("sgan", SGAN_TINY), ("improved_gan", IGAN_TINY), ("mlp_classifier", MLP_TINY)])
def test_pool_holds_only_the_labelled_examples(digits_labelled, name, tiny):
    x, y, y_true = digits_labelled
    m = reference_models.build(name, **tiny)
    m.on_fit_start(x, y)
    assert len(m._pool) == 10 * PER_CLASS == int((y >= 0).sum())
    assert (m._pool.y >= 0).all()
    xb, yb = m._pool.batch(7)
    # every drawn example is a labelled one, with its true label
    lab_idx = (y >= 0).nonzero()[:, 0]
    for xi, yi in zip(xb, yb):
        j = lab_idx[(x[lab_idx] == xi).flatten(1).all(1)]
        assert j.numel() >= 1 and int(y_true[j[0]]) == int(yi)


@pytest.mark.parametrize("name, tiny", [("sgan", SGAN_TINY), ("mlp_classifier", MLP_TINY)])
def test_labelled_only_models_ignore_unlabelled_images(digits_labelled, name, tiny):
    """SGAN and the NN baseline train on the labelled pool only: garbage in the unlabelled images changes nothing."""
    x, y, _ = digits_labelled
    garbage = x.clone()
    garbage[y < 0] = torch.rand_like(garbage[y < 0])
    states = []
    for images in (x, garbage):
        torch.manual_seed(0)
        m = reference_models.build(name, **tiny)
        _fit(m, images, y, epochs=1, batch_size=50)
        states.append(m.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


# ----------------------------------------------------------------------------- SGAN
def test_sgan_trains_classifies_and_samples(digits_labelled):
    x, y, y_true = digits_labelled
    torch.manual_seed(0)
    m = reference_models.build("sgan", **SGAN_TINY, lr=2e-3)
    before = _params(m)
    _fit(m, x, y, epochs=4)
    hist = m.train_state_.history
    assert len(hist) == 4 and all(math.isfinite(v) for h in hist for v in h.values())
    assert set(hist[0]) >= {"d_loss", "d_real", "d_fake", "g_loss", "train_acc"}
    assert hist[-1]["d_real"] < hist[0]["d_real"], [h["d_real"] for h in hist]
    assert _changed(before, m, "discriminator.") and _changed(before, m, "generator.")
    logits = _check_logits(m, x[:13])
    assert m.discriminator[-1].out_features == 11  # N + 1 outputs, FAKE last
    assert torch.allclose(logits, m.logits(x[:13])[:, :10])
    _check_samples(m)


def test_sgan_without_generator_updates_keeps_g_fixed(digits_labelled):
    x, y, _ = digits_labelled
    torch.manual_seed(0)
    m = reference_models.build("sgan", **SGAN_TINY, train_generator=False)
    g_before = {k: v.detach().clone() for k, v in m.generator.named_parameters()}
    d_before = {k: v.detach().clone() for k, v in m.discriminator.named_parameters()}
    _fit(m, x, y, epochs=2)
    assert all(torch.equal(g_before[k], v) for k, v in m.generator.named_parameters())
    assert any(not torch.equal(d_before[k], v) for k, v in m.discriminator.named_parameters())
    assert "g_loss" not in m.train_state_.history[-1] and math.isfinite(m.train_state_.history[-1]["d_fake"])
    _check_logits(m, x[:5])


def test_sgan_generator_losses():
    m = reference_models.build("sgan", **SGAN_TINY)
    logits = torch.randn(6, 11, dtype=torch.float64)
    p = torch.softmax(logits, 1)
    assert torch.allclose(m.generator_loss(logits), torch.log(p[:, 10]).mean())  # minimax: min log p_FAKE
    ns = reference_models.build("sgan", **SGAN_TINY, g_loss="nonsaturating")
    assert torch.allclose(ns.generator_loss(logits), -torch.log(1 - p[:, 10]).mean())


def test_sgan_faithful_size_shapes():
    m = reference_models.build("sgan", image_shape=[1, 28, 28])
    assert m.discriminator[0].out_channels == 64 and m.discriminator[2].out_channels == 128
    assert m.generator[0].out_features == 1024 and m.hparams["batch_size"] == 64 and m.hparams["g_loss"] == "minimax"
    s = m.sample(2, generator=torch.Generator().manual_seed(0))
    assert s.shape == (2, 1, 28, 28)
    assert m.predict_logits(s).shape == (2, 10)


# ----------------------------------------------------------------------------- improved GAN
def _slow_semi_losses(l_lab, y, l_unl, l_fake):
    """The formulas of docs/models.md §7 with explicit exp/log, float64, K + 1-th logit 0."""
    l_lab, l_unl, l_fake = (t.double() for t in (l_lab, l_unl, l_fake))
    lse = lambda l: torch.log(torch.exp(l).sum(1))  # noqa: E731
    softplus = lambda a: torch.log(1 + torch.exp(a))  # noqa: E731
    loss_lab = torch.stack([-l_lab[i, y[i]] + lse(l_lab)[i] for i in range(len(y))]).mean()
    # D(x) = Z / (Z + 1): -E_data log D(x) - E_G log(1 - D(G(z))), halved
    z_unl, z_fake = torch.exp(l_unl).sum(1), torch.exp(l_fake).sum(1)
    direct = -0.5 * torch.log(z_unl / (z_unl + 1)).mean() - 0.5 * torch.log(1 / (z_fake + 1)).mean()
    formula = -0.5 * lse(l_unl).mean() + 0.5 * softplus(lse(l_unl)).mean() + 0.5 * softplus(lse(l_fake)).mean()
    assert torch.allclose(direct, formula)
    return loss_lab, formula


def test_improved_gan_semi_supervised_loss_matches_slow_formula():
    g = torch.Generator().manual_seed(0)
    l_lab, l_unl, l_fake = (3 * torch.randn(n, 10, generator=g) for n in (5, 7, 6))
    y = torch.randint(0, 10, (5,), generator=g)
    fast = semi_supervised_losses(l_lab, y, l_unl, l_fake)
    slow = _slow_semi_losses(l_lab, y, l_unl, l_fake)
    for a, b in zip(fast, slow):
        assert a.dtype == torch.float32
        assert abs(float(a) - float(b)) < 1e-5 * max(1.0, abs(float(b)))


@pytest.mark.parametrize("extra", [{}, MD_TINY, {**MD_TINY, "feature_matching": False}])
def test_improved_gan_trains_classifies_and_samples(digits_labelled, extra):
    x, y, _ = digits_labelled
    torch.manual_seed(0)
    m = reference_models.build("improved_gan", **IGAN_TINY, **extra)
    before = _params(m)
    _fit(m, x, y, epochs=4)
    hist = m.train_state_.history
    assert all(math.isfinite(v) for h in hist for v in h.values())
    assert set(hist[0]) >= {"loss_lab", "loss_unl", "g_loss", "train_err"}
    assert hist[-1]["loss_lab"] < hist[0]["loss_lab"], [h["loss_lab"] for h in hist]
    for prefix in ("discriminator.", "generator.", "discriminator_ema."):
        assert _changed(before, m, prefix), prefix
    assert int(m.ema_steps) == m.train_state_.step == 4 * 10
    logits = _check_logits(m, x[:45])  # > batch_size: MD scores in chunks
    live = m.discriminator.eval()(x[:45])[0]
    assert not torch.allclose(logits, live), "predict_logits should use the averaged parameters"
    _check_samples(m)


def test_improved_gan_feature_matching_loss(digits_labelled):
    x, _, _ = digits_labelled
    m = reference_models.build("improved_gan", **IGAN_TINY, input_noise=0.0, hidden_noise=0.0)
    torch.manual_seed(3)
    loss = m.generator_loss(x[:30].flatten(1), 20)
    torch.manual_seed(3)
    fake = m.generate(m.noise(20, "cpu")).flatten(1)
    f_real, f_fake = m.discriminator(x[:30], features_only=True)[1], m.discriminator(fake, features_only=True)[1]
    assert f_real.shape == (30, 16)  # the last hidden layer
    assert torch.allclose(loss, ((f_real.mean(0) - f_fake.mean(0)) ** 2).mean())


def test_improved_gan_ema_off_uses_live_parameters(digits_labelled):
    x, y, _ = digits_labelled
    torch.manual_seed(0)
    m = reference_models.build("improved_gan", **IGAN_TINY, ema_rate=0.0)
    _fit(m, x, y, epochs=1)
    assert not any(k.startswith("discriminator_ema") or k == "ema_steps" for k in m.state_dict())
    assert torch.equal(m.predict_logits(x[:9]), m.discriminator.eval()(x[:9])[0])


@pytest.mark.parametrize("debias", [True, False])
def test_improved_gan_ema_recurrence(debias):
    rate = 0.1
    m = reference_models.build("improved_gan", **IGAN_TINY, ema_rate=rate, ema_debias=debias)
    p = m.discriminator.out.bias
    ref = torch.zeros_like(p)  # the code's zero-started average
    for t in range(1, 6):
        with torch.no_grad():
            p.copy_(torch.full_like(p, float(t)))
        m._update_ema()
        ref = ref + rate * (p.detach() - ref)
        want = ref / (1 - (1 - rate) ** t) if debias else ref
        assert torch.allclose(m.discriminator_ema.out.bias, want, atol=1e-6)
    # buffers (the hidden layers' fixed scales) are copied, not averaged
    assert torch.equal(m.discriminator_ema.hidden[0].scale, m.discriminator.hidden[0].scale)


def test_weight_norm_data_dependent_init_normalises_preactivations(digits_labelled):
    x, _, _ = digits_labelled
    m = reference_models.build("improved_gan", **IGAN_TINY, **MD_TINY)
    assert m.hparams["init_batch"] == 500  # all 200 here
    torch.manual_seed(1)
    m.init_from_data(x)
    pre = []
    hooks = [mod.register_forward_hook(lambda _m, _i, out: pre.append(out)) for mod in m.discriminator.modules() if isinstance(mod, WNLinear)]
    torch.manual_seed(1)  # the same noise as the init pass
    with torch.no_grad():
        m.discriminator.train()(x)
    for h in hooks:
        h.remove()
    assert len(pre) == len(IGAN_TINY["d_hidden"]) + 1
    for a in pre:
        assert a.mean(0).abs().max() < 1e-4
        assert (a.std(0, unbiased=False) - 1).abs().max() < 1e-3
    # the minibatch features are centred too (bias = -mean o on the init batch)
    torch.manual_seed(1)
    with torch.no_grad():
        h = x.flatten(1) + 0.3 * torch.randn(200, 64)
        for layer in m.discriminator.hidden:
            h = torch.relu(layer(h))
            h = h + 0.5 * torch.randn_like(h)
        o = m.discriminator.md(h)[:, h.shape[1]:]
    assert o.mean(0).abs().max() < 1e-4


def test_minibatch_discrimination_shapes_and_self_pairs():
    torch.manual_seed(0)
    md = MinibatchDiscrimination(7, kernels=4, dim=3)
    x = torch.randn(5, 7)
    out = md(x)
    assert out.shape == (5, 7 + 4)
    assert torch.equal(out[:, :7], x)
    o = out[:, 7:]
    assert ((o - md.bias) >= 0).all() and ((o - md.bias) <= 4).all()  # at most N - 1 = 4 other rows
    # a batch of one: no other example, so o = bias exactly (a self-pair would add exp(0) = 1)
    assert torch.equal(md(x[:1])[0, 7:], md.bias.detach())
    # two identical examples: each sees exactly one other at distance 0
    assert torch.allclose(md(x[:1].repeat(2, 1))[:, 7:], md.bias.detach() + 1)
    # groups are separate minibatches: pairs never cross them
    grouped = md(x, groups=[2, 3])
    assert torch.allclose(grouped, torch.cat([md(x[:2]), md(x[2:])]))
    assert not torch.allclose(grouped, out)
    # the slow definition
    w = md.theta * (md.log_scale.exp() / md.theta.norm(dim=0))
    m_ = torch.einsum("na,abc->nbc", x, w)
    slow = torch.stack(
        [sum(torch.exp(-(m_[i] - m_[j]).abs().sum(1)) for j in range(5) if j != i) + md.bias for i in range(5)]
    )
    assert torch.allclose(o, slow, atol=1e-5)


def test_improved_gan_faithful_defaults():
    m = reference_models.build("improved_gan", image_shape=[1, 28, 28])
    d = m.discriminator
    assert [l.theta.shape[0] for l in d.hidden] == [1000, 500, 250, 250, 250] and d.out.theta.shape == (10, 250)
    assert d.md is None and m.hparams["feature_matching"] and m.hparams["ema_rate"] == 1e-4
    assert isinstance(d.out.scale, torch.nn.Parameter) and not isinstance(d.hidden[0].scale, torch.nn.Parameter)
    assert abs(float(d.hidden[0].theta.detach().std()) - 0.1) < 0.005
    opt = m.configure_optimizers()["discriminator"]
    assert opt.param_groups[0]["lr"] == 0.003 and opt.param_groups[0]["betas"] == (0.5, 0.999)
    z = m.noise(1000, "cpu", torch.Generator().manual_seed(0))
    assert z.shape == (1000, 100) and float(z.min()) >= 0 and float(z.max()) <= 1


def test_improved_gan_checkpoint_roundtrip(digits_labelled, tmp_path):
    x, y, _ = digits_labelled
    torch.manual_seed(0)
    m = reference_models.build("improved_gan", **IGAN_TINY, **MD_TINY)
    fit(m, x, y, TrainConfig(epochs=1, batch_size=20, seed=0, progress=False), run_dir=tmp_path)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    clone = reference_models.build(ck["model_name"], **ck["model_kwargs"])
    clone.load_state_dict(ck["state_dict"])
    assert torch.equal(clone.predict_logits(x[:30]), m.predict_logits(x[:30]))


# ----------------------------------------------------------------------------- NN baseline
@pytest.mark.parametrize("kwargs", [{}, {"optimizer": "sgd", "sgd_lr": 0.05}, {"input_noise": 0.3, "dropout": 0.5}])
def test_mlp_classifier_trains(digits_labelled, kwargs):
    x, y, y_true = digits_labelled
    torch.manual_seed(0)
    m = reference_models.build("mlp_classifier", **MLP_TINY, init_std=0.1, **kwargs)
    before = _params(m)
    _fit(m, x, y, epochs=5)
    hist = m.train_state_.history
    assert all(math.isfinite(v) for h in hist for v in h.values())
    assert hist[-1]["loss"] < hist[0]["loss"], [h["loss"] for h in hist]
    assert _changed(before, m, "net.")
    m.train()
    _check_logits(m, x[:11])
    assert m.training, "predict_logits restores the training mode"
    if "dropout" in kwargs:
        assert any(isinstance(mod, torch.nn.Dropout) for mod in m.net)


def test_mlp_classifier_faithful_defaults():
    m = reference_models.build("mlp_classifier", image_shape=[1, 28, 28])
    lin = [mod for mod in m.net if isinstance(mod, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in lin] == [(784, 1000), (1000, 1000), (1000, 10)]
    assert abs(float(lin[1].weight.detach().std()) - 0.01) < 0.001
    opt = m.configure_optimizers()["classifier"]
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["betas"] == (0.5, 0.999)
