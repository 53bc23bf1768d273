"""Sparse, denoising and contractive autoencoders (reference_models.autoencoders): construction,
training on digits, penalties, the closed-form contractive Jacobian, the chain samplers, checkpoints."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import reference_models
from evalkit.checkpoints import load_evalkit_checkpoint
from reference_models.autoencoders import ContractiveAE, DenoisingAE, SparseAE, markov_chain_samples
from reference_models.training import TrainConfig, fit

TINY = {
    "sparse_ae": {"image_shape": [1, 8, 8], "code_dim": 12, "lr": 3e-3},
    "denoising_ae": {"image_shape": [1, 8, 8], "code_dim": 24, "lr": 3e-3, "sample_chains": 10, "sample_burn_in": 5,
                     "sample_thin": 2, "n_chain_starts": 20},
    "contractive_ae": {"image_shape": [1, 8, 8], "code_dim": 24, "lr": 3e-3, "sample_chains": 10, "sample_burn_in": 5,
                       "sample_thin": 2, "n_chain_starts": 20},
}
SAMPLERS = ("denoising_ae", "contractive_ae")


def _build(name, **kw):
    torch.manual_seed(0)
    return reference_models.build(name, **{**TINY[name], **kw})


def _fit(model, x, epochs=2, bs=20, run_dir=None):
    return fit(model, x, None, TrainConfig(epochs=epochs, batch_size=bs, progress=False), run_dir=run_dir)


def _rec(model, x):
    with torch.no_grad():
        flat = x.flatten(1)
        return float(model.reconstruction_loss(model.decode_logits(model.encode(x)), flat).mean())


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _linear_sizes(seq):
    return [(l.in_features, l.out_features) for l in seq if isinstance(l, torch.nn.Linear)]


# ----------------------------------------------------------------------------- construction
def test_build_defaults():
    classes = {"sparse_ae": SparseAE, "denoising_ae": DenoisingAE, "contractive_ae": ContractiveAE}
    for name, cls in classes.items():
        assert reference_models.model_class(name) is cls
    s = reference_models.build("sparse_ae")
    assert _linear_sizes(s.encoder) == [(784, 32)] and _linear_sizes(s.decoder) == [(32, 784)]
    assert isinstance(s.encoder[-1], torch.nn.ReLU)
    assert s.hparams["l1"] == 1e-4 and s.hparams["sparsity"] == "l1" and s.hparams["loss"] == "bce"
    assert not hasattr(s, "sample")  # no sampler is invented for the sparse autoencoder
    d = reference_models.build("denoising_ae")
    assert _linear_sizes(d.encoder) == [(784, 1000)] and isinstance(d.encoder[-1], torch.nn.Sigmoid)
    assert d.hparams["corruption"] == "gaussian" and d.hparams["noise_std"] == 0.5 and d.hparams["mask_fraction"] == 0.25
    c = reference_models.build("contractive_ae")
    assert _linear_sizes(c.encoder) == [(784, 1000)] and isinstance(c.encoder[-1], torch.nn.Sigmoid)
    assert c.tied and not hasattr(c, "decoder") and c.decoder_bias.shape == (784,)
    assert c.hparams["contraction"] == 1e-4
    assert c.chain_starts.shape == (100, 784) and not bool(c.chain_starts_filled)
    for m in (s, d, c):
        opt = m.configure_optimizers()["ae"]
        assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 1e-3
        clone = type(m)(**m.hparams)  # hparams rebuild the same architecture
        assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    deep = SparseAE(image_shape=[1, 8, 8], hidden=[20, 10], code_dim=4)
    assert _linear_sizes(deep.encoder) == [(64, 20), (20, 10), (10, 4)]
    assert _linear_sizes(deep.decoder) == [(4, 10), (10, 20), (20, 64)]


@pytest.mark.parametrize("name, kwargs, word", [
    ("sparse_ae", {"sparsity": "kl"}, "sigmoid"),  # KL sparsity needs a code in (0, 1)
    ("sparse_ae", {"sparsity": "l2"}, "sparsity"),
    ("sparse_ae", {"activation": "gelu"}, "activation"),
    ("sparse_ae", {"tied": True, "hidden": [8]}, "tied"),
    ("denoising_ae", {"corruption": "salt"}, "corruption"),
    ("denoising_ae", {"loss": "l1"}, "loss"),
    ("denoising_ae", {"mask_fraction": 1.0}, "mask_fraction"),
    ("contractive_ae", {"sample_noise": "iso"}, "sample_noise"),
    ("contractive_ae", {"reduction": "max"}, "reduction"),
    ("contractive_ae", {"n_chain_starts": 0}, "n_chain_starts"),
])
def test_bad_constructor_args(name, kwargs, word):
    with pytest.raises(ValueError, match=word):
        _build(name, **kwargs)


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("name, kwargs", [
    ("sparse_ae", {}),
    ("sparse_ae", {"sparsity": "kl", "activation": "sigmoid", "loss": "mse", "reduction": "sum"}),
    ("denoising_ae", {}),
    ("denoising_ae", {"corruption": "masking", "tied": True}),
    ("contractive_ae", {}),
    ("contractive_ae", {"tied": False, "contraction": 1e-2}),
])
def test_training_reduces_reconstruction_loss(digits200, name, kwargs):
    m = _build(name, **kwargs)
    before = _rec(m, digits200)
    _fit(m, digits200, epochs=3)
    after = _rec(m, digits200)
    hist = m.train_state_.history
    assert all(math.isfinite(v) for h in hist for v in h.values()) and set(hist[-1]) == {"epoch", "loss", "rec", "penalty"}
    assert after < 0.9 * before, (before, after)
    assert hist[-1]["loss"] < hist[0]["loss"]
    if name != "denoising_ae":
        assert hist[-1]["penalty"] > 0
    x = digits200[:7]
    assert m.encode(x).shape == (7, m.code_dim)
    assert m.decode(m.encode(x)).requires_grad  # encode / decode keep the graph; reconstruct and sample do not
    with torch.no_grad():
        outs = (m.reconstruct(x), m.decode(m.encode(x)))
    for out in outs:
        assert out.shape == (7, 1, 8, 8) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_sparse_penalties(digits200):
    m = _build("sparse_ae")
    h = torch.rand(10, 12) * 3
    assert float(m.penalty(None, h)) == pytest.approx(1e-4 * float(h.abs().sum(1).mean()), rel=1e-6)
    k = _build("sparse_ae", sparsity="kl", activation="sigmoid")
    assert float(k.penalty(None, torch.full((10, 12), 0.05))) == pytest.approx(0.0, abs=1e-6)  # rho_hat = rho
    h = torch.rand(10, 12)
    rho_hat = h.mean(0)
    want = 3.0 * sum(0.05 * math.log(0.05 / r) + 0.95 * math.log(0.95 / (1 - r)) for r in rho_hat.tolist())
    assert float(k.penalty(None, h)) == pytest.approx(want, rel=1e-5)


def test_denoising_corruptions_and_clean_target(digits200):
    x = digits200[:50].flatten(1)
    m = _build("denoising_ae")
    noisy = m.corrupt(x, _gen(0))
    assert float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0 and not torch.equal(noisy, x)
    assert torch.equal(noisy, m.corrupt(x, _gen(0)))
    assert 0.2 < float((noisy - x).abs().mean()) < 0.45  # 0.5 N(0, 1), clipped
    mask = _build("denoising_ae", corruption="masking").corrupt(torch.ones(100, 64), _gen(0))
    assert set(mask.unique().tolist()) == {0.0, 1.0} and float((mask == 0).float().mean()) == pytest.approx(0.25, abs=0.03)
    # the loss compares the reconstruction of the corrupted input with the clean x
    m.corrupt = lambda flat, generator=None: torch.zeros_like(flat)
    out = m.train_step(digits200[:20], None, step=0, epoch=0, optimizers={"ae": torch.optim.SGD(m.parameters(), lr=0.0)})
    with torch.no_grad():
        want = F.binary_cross_entropy_with_logits(m.decode_logits(m.encoder(torch.zeros(1, 64))).expand(20, 64),
                                                  digits200[:20].flatten(1))
    assert out["rec"] == pytest.approx(float(want), rel=1e-5)


# ----------------------------------------------------------------------------- contractive Jacobian
@pytest.mark.parametrize("tied", [True, False])
def test_contractive_closed_form_matches_autograd(tied):
    torch.manual_seed(0)
    m = ContractiveAE(image_shape=[1, 3, 4], code_dim=5, tied=tied).double()
    with torch.no_grad():
        m.encoder[0].weight.mul_(4.0)  # away from the linear regime of the sigmoid
        m.encoder[0].bias.normal_()
    x = torch.rand(3, 1, 3, 4, dtype=torch.float64)
    closed_j = m.jacobian(x)
    closed = m.jacobian_penalty(x)
    assert closed_j.shape == (3, 5, 12) and closed.shape == (3,)
    for i in range(3):
        auto = torch.autograd.functional.jacobian(lambda v: m.encode(v.view(1, 1, 3, 4)).squeeze(0), x[i].flatten())
        torch.testing.assert_close(closed_j[i], auto)
        torch.testing.assert_close(closed[i], auto.pow(2).sum())
    with torch.no_grad():
        assert float(m.penalty(x.flatten(1), m.encode(x))) == pytest.approx(1e-4 * float(closed.mean()))


# ----------------------------------------------------------------------------- sampling
def test_markov_chain_bookkeeping():
    # a counter chain: the kept values say after how many transitions each record was taken
    out = markov_chain_samples(7, lambda k: torch.zeros(k, 1), lambda s: s + 1, lambda s: s.clone(), chains=3, burn_in=4, thin=5)
    assert out.squeeze(1).tolist() == [9, 9, 9, 14, 14, 14, 19]
    with pytest.raises(ValueError):
        markov_chain_samples(5, lambda k: torch.zeros(k, 1), lambda s: s, lambda s: s, chains=2, burn_in=0, thin=0)


@pytest.mark.parametrize("name", SAMPLERS)
def test_samples(digits200, name):
    m = _build(name)
    with pytest.raises(RuntimeError, match="on_fit_start"):
        m.sample(4, start="data")  # no training images stored yet
    _fit(m, digits200, epochs=1)
    assert bool(m.chain_starts_filled)
    flat = digits200.flatten(1)
    assert all(bool((flat == row).all(1).any()) for row in m.chain_starts)  # starts are training images
    m.train()
    for kw in ({}, {"start": "noise"}, {"start": "data", "burn_in": 0, "thin": 1, "chains": 4}):
        s = m.sample(23, generator=_gen(0), **kw)
        assert s.shape == (23, 1, 8, 8) and not s.requires_grad and torch.isfinite(s).all()
        assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
        assert torch.equal(s, m.sample(23, generator=_gen(0), **kw))
        assert not torch.equal(s, m.sample(23, generator=_gen(1), **kw))
    assert m.training  # sample() restores the mode it found
    assert float(m.sample(40, generator=_gen(0)).flatten(1).std(0).mean()) > 1e-3  # chains do not all coincide
    with pytest.raises(ValueError, match="start"):
        m.sample(3, start="prior")


def test_denoising_chain_mean_mode_and_contractive_noise_modes(digits200):
    d = _fit(_build("denoising_ae", chain_visible="mean"), digits200, epochs=1)
    s = d.sample(12, generator=_gen(3))
    assert s.shape == (12, 1, 8, 8) and torch.equal(s, d.sample(12, generator=_gen(3)))
    c = _fit(_build("contractive_ae", sample_noise="j"), digits200, epochs=1)
    s = c.sample(12, generator=_gen(3))
    assert s.shape == (12, 1, 8, 8) and float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    c.hparams["sample_step"] = 0.0  # no noise: a deterministic map iterated from the same starts
    a, b = c.sample(12, generator=_gen(3)), c.sample(12, generator=_gen(4), start="noise")
    assert torch.isfinite(a).all() and torch.isfinite(b).all()


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("name", ["sparse_ae", *SAMPLERS])
def test_checkpoint_round_trip(digits200, tmp_path, name):
    m = _fit(_build(name), digits200[:100], epochs=1, run_dir=tmp_path)
    ck = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert ck["model_name"] == name and ck["model_kwargs"] == m.hparams
    clone = load_evalkit_checkpoint(tmp_path / "last.pt").model  # strict: every key and shape must fit
    x = digits200[:5]
    assert torch.equal(clone.reconstruct(x), m.reconstruct(x))
    if name in SAMPLERS:
        assert torch.equal(clone.chain_starts, m.chain_starts) and bool(clone.chain_starts_filled)
        assert torch.equal(clone.sample(9, generator=_gen(0), start="data"), m.sample(9, generator=_gen(0), start="data"))


# ----------------------------------------------------------------------------- salt-and-pepper DAE (the GSN code's corruption)
def test_denoising_salt_and_pepper_in_training_and_in_the_chain(digits200):
    m = _build("denoising_ae", corruption="salt_pepper", chain_visible="mean")
    assert m.hparams["salt_pepper_fraction"] == 0.4
    x = torch.full((300, 64), 0.5)
    noisy = m.corrupt(x, _gen(0))
    hit = noisy != x
    assert float(hit.float().mean()) == pytest.approx(0.4, abs=0.015)
    assert set(noisy[hit].unique().tolist()) == {0.0, 1.0} and float((noisy[hit] == 1).float().mean()) == pytest.approx(0.5, abs=0.03)
    assert torch.equal(noisy, m.corrupt(x, _gen(0))) and not torch.equal(noisy, m.corrupt(x, _gen(1)))
    assert float((_build("denoising_ae", corruption="salt_pepper", salt_pepper_fraction=0.1).corrupt(x, _gen(0)) != x).float().mean()) \
        == pytest.approx(0.1, abs=0.015)
    _fit(m, digits200, epochs=1)
    seen = []  # the chain corrupts its states with the training corruption
    real = m.corrupt
    m.corrupt = lambda flat, generator=None: seen.append((flat, real(flat, generator))) or seen[-1][1]
    m.sample(20, generator=_gen(0), burn_in=2, thin=1, chains=10, start="noise")
    assert len(seen) == 4
    before, after = torch.cat([a for a, _ in seen[1:]]), torch.cat([b for _, b in seen[1:]])  # states are means in (0, 1)
    changed = before != after
    assert float(changed.float().mean()) == pytest.approx(0.4, abs=0.05)
    assert set(after[changed].unique().tolist()) == {0.0, 1.0}
    with pytest.raises(ValueError, match="salt_pepper_fraction"):
        _build("denoising_ae", salt_pepper_fraction=1.5)


# ----------------------------------------------------------------------------- CAE chain settings chosen on validation
GRID = {"step": [0.0, 0.3, 3.0]}


def test_cae_grid_expansion_and_errors():
    m = _build("contractive_ae", sample_grid={"burn_in": [1, 2], "step": [0.1, 1.0]})
    assert m.sample_settings == [{"step": 0.1, "burn_in": 1}, {"step": 0.1, "burn_in": 2}, {"step": 1.0, "burn_in": 1}, {"step": 1.0, "burn_in": 2}]
    assert int(m.sample_choice) == -1 and m.sample_choice_ll.shape == (4,) and m.chosen_sample_settings is None
    assert "sample_choice" not in _build("contractive_ae").state_dict()  # no grid: the checkpoint keys of before
    for bad, word in (({"eps": [1.0]}, "keys"), ({"step": []}, "non-empty"), ({}, "non-empty"), ({"step": 0.1}, "list")):
        with pytest.raises(ValueError, match=word):
            _build("contractive_ae", sample_grid=bad)


def test_cae_choice_uses_validation_only_and_is_recorded(digits200, tmp_path, monkeypatch):
    import evalkit.metrics
    from evalkit.metrics import parzen_log_likelihood as real_parzen

    m = _fit(_build("contractive_ae", sample_grid=GRID), digits200[:100], epochs=1, run_dir=tmp_path)
    with pytest.raises(RuntimeError, match="choose_on_validation"):
        m.sample(5, generator=_gen(0))  # nothing chosen yet: never silently the default step
    valid, test = torch.rand(60, 1, 8, 8), torch.rand(40, 1, 8, 8)
    calls = []
    fake = iter([-5.0, 7.0, 1.0])  # the middle setting scores best on validation

    def spy(samples, x, validation=None, sigmas=None, **kw):
        calls.append((samples, x, validation))
        import dataclasses

        return dataclasses.replace(real_parzen(samples, x, validation=validation, sigmas=sigmas, **kw), mean=next(fake))

    monkeypatch.setattr(evalkit.metrics, "parzen_log_likelihood", spy)
    out = m.choose_on_validation(valid, n_samples=30, seed=3, checkpoint=tmp_path / "epoch_1.pt", log=None)
    assert len(calls) == 3
    for samples, x, v in calls:  # sigma on valid[0:30], scored on valid[30:60]; the test images never appear
        assert samples.shape == (30, 1, 8, 8)
        assert torch.equal(v.flatten(1), valid[:30].flatten(1)) and torch.equal(x.flatten(1), valid[30:].flatten(1))
        assert not any(bool((t.flatten() == x.flatten(1)).all(1).any()) for t in test)
    assert out["chosen"] == {"step": 0.3} and out["chosen_index"] == 1 and out["valid_choose"] == "valid[0:30]"
    assert [r["valid_ll"] for r in out["results"]] == [-5.0, 7.0, 1.0]
    assert int(m.sample_choice) == 1 and m.chosen_sample_settings == {"step": 0.3}
    assert torch.equal(m.sample(12, generator=_gen(0)), m.sample(12, generator=_gen(0), step=0.3))
    assert not torch.equal(m.sample(12, generator=_gen(0)), m.sample(12, generator=_gen(0), step=3.0))
    # the checkpoint keeps the choice; a loaded model does not choose again
    clone = load_evalkit_checkpoint(tmp_path / "epoch_1.pt").model
    assert int(clone.sample_choice) == 1 and clone.sample_choice_ll.tolist() == [-5.0, 7.0, 1.0]
    assert clone.choose_on_validation(valid, n_samples=30, log=None)["chosen"] == {"step": 0.3} and len(calls) == 3
    assert torch.equal(clone.sample(12, generator=_gen(0)), m.sample(12, generator=_gen(0)))


def test_cae_choice_end_to_end_on_random_validation(digits200):
    from reference_models.autoencoders import choose_chain_settings

    m = _fit(_build("contractive_ae", sample_grid={"step": [0.1, 30.0]}), digits200, epochs=2)
    valid = digits200[100:160]  # images of the same kind the model was not trained on ... (only the first 100 trained)
    out = choose_chain_settings(m, valid, m.sample_settings, n_samples=40, seed=0)
    lls = [r["valid_ll"] for r in out["results"]]
    assert all(math.isfinite(v) for v in lls) and out["chosen_index"] == max(range(2), key=lambda i: lls[i])
    assert out["valid_score"] == "valid[30:60]"
    with pytest.raises(ValueError, match="validation"):
        choose_chain_settings(m, valid[:1], m.sample_settings, n_samples=5)
