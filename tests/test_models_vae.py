"""The VAE reference model (reference_models.vae): construction, training on digits, capabilities, ELBO."""
from __future__ import annotations

import math

import pytest
import torch

import reference_models
from reference_models.training import TrainConfig, fit
from reference_models.vae import ACTIVATIONS, VAE, gaussian_kl

VAE_TINY = {"image_shape": [1, 8, 8], "z_dim": 3, "hidden": [24, 16], "lr": 3e-3}


def _fit(model, x, y=None, epochs=2, bs=20, seed=0):
    return fit(model, x, y, TrainConfig(epochs=epochs, batch_size=bs, seed=seed, progress=False))


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_build_defaults_are_m1_mnist():
    m = reference_models.build("vae", image_shape=[1, 28, 28])
    assert isinstance(m, VAE) and reference_models.model_class("vae") is VAE
    sizes = [(l.in_features, l.out_features) for l in m.encoder if isinstance(l, torch.nn.Linear)]
    assert sizes == [(784, 600), (600, 600), (600, 100)]  # -> (mu, log s^2) of 50 dims each
    sizes = [(l.in_features, l.out_features) for l in m.decoder if isinstance(l, torch.nn.Linear)]
    assert sizes == [(50, 600), (600, 600), (600, 784)]
    assert isinstance(m.encoder[1], torch.nn.Softplus) and isinstance(m.decoder[3], torch.nn.Softplus)
    assert m.hparams["likelihood"] == "bernoulli" and m.hparams["z_dim"] == 50
    opt = m.configure_optimizers()["vae"]
    assert opt.defaults["lr"] == 3e-4 and tuple(opt.defaults["betas"]) == (0.9, 0.999)
    w = m.encoder[0].weight.detach()
    assert float(w.std()) == pytest.approx(0.001, rel=0.05) and float(m.encoder[0].bias.detach().abs().max()) == 0.0
    default_init = VAE(image_shape=[1, 8, 8], z_dim=3, hidden=[24], init_std=0)  # 0: PyTorch's default init
    assert float(default_init.encoder[0].weight.detach().std()) > 0.05
    clone = VAE(**m.hparams)  # hparams rebuild the same architecture
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}


@pytest.mark.parametrize("kwargs, word", [({"activation": "gelu"}, "activation"),
                                          ({"likelihood": "poisson"}, "likelihood"),
                                          ({"likelihood": "gaussian", "sigma": 0.0}, "sigma")])
def test_bad_constructor_args(kwargs, word):
    with pytest.raises(ValueError, match=word):
        reference_models.build("vae", **{**VAE_TINY, **kwargs})


def test_capabilities_after_training(digits200):
    torch.manual_seed(0)
    m = _fit(reference_models.build("vae", **VAE_TINY), digits200)
    assert not m.training
    assert all(math.isfinite(v) for h in m.train_state_.history for v in h.values())
    x = digits200[:9]
    z = m.encode(x)
    assert z.shape == (9, 3) and not z.requires_grad and torch.equal(z, m.encode(x))  # deterministic mean
    mu, logvar = m.encode_dist(x)
    assert torch.equal(mu, z) and logvar.shape == (9, 3)
    assert m.decode(z).requires_grad  # decode keeps the graph (as AAE's); the rest are no-grad
    with torch.no_grad():
        outs = (m.decode(z), m.reconstruct(x))
    for out in outs:
        assert out.shape == (9, 1, 8, 8) and torch.isfinite(out).all()
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    s = m.sample(7, generator=g(0))
    assert s.shape == (7, 1, 8, 8) and float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    assert torch.equal(s, m.sample(7, generator=g(0))) and not torch.equal(s, m.sample(7, generator=g(1)))
    e1 = m.elbo(x, generator=g(0))
    assert e1.shape == (9,) and torch.isfinite(e1).all() and torch.equal(e1, m.elbo(x, generator=g(0)))
    e10 = m.elbo(x, k=10, generator=g(0))
    assert e10.shape == (9,) and (e10 - e1).abs().max() < 0.5 * e1.abs().max()  # same quantity, less noise


def test_negative_elbo_decreases(digits200):
    torch.manual_seed(0)
    m = reference_models.build("vae", **VAE_TINY)
    before = -float(m.elbo(digits200, k=4, generator=torch.Generator().manual_seed(0)).mean())
    opt = m.configure_optimizers()
    m.train()
    losses = [m.train_step(digits200[i % 10 * 20:(i % 10 + 1) * 20], None, step=i, epoch=0, optimizers=opt)["loss"]
              for i in range(40)]
    m.eval()
    after = -float(m.elbo(digits200, k=4, generator=torch.Generator().manual_seed(0)).mean())
    assert all(math.isfinite(v) for v in losses)
    assert before == pytest.approx(64 * math.log(2), rel=0.02)  # tiny init: p(x|z) = 1/2 per pixel, KL ~ 0
    assert after < before - 5.0, (before, after)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10


def test_elbo_nonpositive_for_bernoulli_data(digits200):
    torch.manual_seed(0)
    m = _fit(reference_models.build("vae", **VAE_TINY), digits200)
    g = torch.Generator().manual_seed(0)
    for x in (digits200, torch.rand(50, 1, 8, 8, generator=g), (torch.rand(50, 1, 8, 8, generator=g) > 0.5).float()):
        e = m.elbo(x, k=3, generator=g)
        assert (e <= 0).all() and torch.isfinite(e).all()
    # importance-weighted log p(x) >= the ELBO (in expectation; loose margin for MC noise)
    ll = m.log_likelihood(digits200[:50], k=64, generator=torch.Generator().manual_seed(1))
    el = m.elbo(digits200[:50], k=64, generator=torch.Generator().manual_seed(1))
    assert ll.shape == (50,) and float(ll.mean()) >= float(el.mean()) - 0.05 and (ll <= 0).all()


def test_kl_closed_form_matches_monte_carlo(digits200):
    torch.manual_seed(0)
    m = _fit(reference_models.build("vae", **VAE_TINY), digits200, epochs=1)
    with torch.no_grad():
        mu, logvar = m.encode_dist(digits200[:3])
        mu, logvar = mu + torch.tensor([0.5, -1.0, 0.2]), logvar + torch.tensor([0.3, -0.7, 0.0])  # away from the prior
        closed = gaussian_kl(mu, logvar)
        g = torch.Generator().manual_seed(0)
        eps = torch.randn(200_000, *mu.shape, generator=g)
        z = mu + torch.exp(0.5 * logvar) * eps
        log_q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
        log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        mc = (log_q - log_p).mean(0)
    assert closed.shape == (3,) and (closed > 0).all()
    torch.testing.assert_close(mc, closed, atol=0.02, rtol=0.02)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_variants_train(digits200, activation):
    torch.manual_seed(0)
    kw = {**VAE_TINY, "activation": activation, "likelihood": "gaussian" if activation == "relu" else "bernoulli"}
    m = reference_models.build("vae", **kw)
    before = _params(m)
    _fit(m, digits200[:100], epochs=1)
    assert any(not torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert all(math.isfinite(v) for v in m.train_state_.history[-1].values())
    e = m.elbo(digits200[:10], generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(e).all()
    if kw["likelihood"] == "gaussian":  # fixed sigma: log N(x; mean, 0.1^2) per pixel is at most -log(0.1 sqrt(2 pi))
        assert float(e.max()) <= 64 * (-math.log(0.1) - 0.5 * math.log(2 * math.pi))


def test_labels_are_ignored(digits200):
    y = torch.arange(200) % 10
    a = _fit(reference_models.build("vae", **VAE_TINY), digits200[:100], y[:100], epochs=1)
    b = _fit(reference_models.build("vae", **VAE_TINY), digits200[:100], None, epochs=1)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_checkpoint_round_trip(digits200, tmp_path):
    m = fit(reference_models.build("vae", **VAE_TINY), digits200[:100], None,
            TrainConfig(epochs=1, batch_size=20, progress=False), run_dir=tmp_path)
    ck = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert ck["model_name"] == "vae" and ck["model_kwargs"] == m.hparams
    clone = VAE(**ck["model_kwargs"])
    clone.load_state_dict(ck["state_dict"])
    clone.eval()
    x = digits200[:5]
    assert torch.equal(clone.encode(x), m.encode(x))
