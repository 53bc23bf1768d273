"""The deep generative stochastic network (reference_models.gsn): the authors' defaults, the
salt-and-pepper corruption, the noisy layer updates, walkback, the optimiser, sampling and
checkpoints. Tiny networks on the 8x8 digits."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import reference_models
from evalkit.checkpoints import load_model
from reference_models.autoencoders import salt_and_pepper
from reference_models.gsn import GSN, EMAMomentumSGD
from reference_models.training import TrainConfig, fit

TINY = {"image_shape": [1, 8, 8], "hidden_sizes": [16, 12], "n_chain_starts": 10}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _tiny(**kw):
    torch.manual_seed(0)
    return GSN(**{**TINY, **kw})


def _fit(model, x, epochs=1, run_dir=None):
    return fit(model, x, None, TrainConfig(epochs=epochs, batch_size=20, progress=False), run_dir=run_dir)


# ----------------------------------------------------------------------------- construction
def test_defaults_are_the_authors_run_gsn_settings():
    assert reference_models.model_class("gsn") is GSN
    m = reference_models.build("gsn")
    assert [tuple(w.shape) for w in m.weights] == [(784, 1500), (1500, 1500)]  # one tied matrix per layer pair
    assert [tuple(b.shape) for b in m.biases] == [(784,), (1500,), (1500,)]
    h = m.hparams
    assert (h["walkback"], h["input_salt_pepper"], h["hidden_noise_std"], h["activation"]) == (4, 0.4, 2.0, "tanh")
    assert (h["lr"], h["momentum"], h["annealing"], h["noiseless_h1"], h["input_sampling"]) == (0.25, 0.5, 0.995, True, True)
    assert (h["sample_chains"], h["sample_burn_in"], h["sample_thin"], h["sample_start"]) == (1, 0, 1, "data")
    r = math.sqrt(6.0 / (784 + 1500))
    w0 = m.weights[0].detach().abs().max()
    assert 0.99 * r < float(w0) <= r * (1 + 1e-6)
    assert all(float(b.detach().abs().max()) == 0.0 for b in m.biases)
    opt = m.configure_optimizers()["gsn"]
    assert isinstance(opt, EMAMomentumSGD) and opt.defaults == {"lr": 0.25, "momentum": 0.5}
    clone = GSN(**m.hparams)
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}


@pytest.mark.parametrize("kwargs, word", [
    ({"activation": "gelu"}, "activation"),
    ({"walkback": 0}, "walkback"),
    ({"hidden_sizes": []}, "hidden_sizes"),
    ({"input_salt_pepper": 1.5}, "input_salt_pepper"),
    ({"sample_start": "prior"}, "sample_start"),
    ({"momentum": 1.0}, "momentum"),
])
def test_bad_constructor_args(kwargs, word):
    with pytest.raises(ValueError, match=word):
        _tiny(**kwargs)


# ----------------------------------------------------------------------------- corruption
def test_salt_and_pepper_statistics():
    x = torch.full((400, 500), 0.5)
    out = salt_and_pepper(x, 0.4, _gen(0))
    changed = out != x
    assert float(changed.float().mean()) == pytest.approx(0.4, abs=0.01)
    assert set(out[changed].unique().tolist()) == {0.0, 1.0}
    assert float((out[changed] == 1).float().mean()) == pytest.approx(0.5, abs=0.01)  # half salt, half pepper
    assert torch.equal(out, salt_and_pepper(x, 0.4, _gen(0)))
    assert not torch.equal(out, salt_and_pepper(x, 0.4, _gen(1)))
    assert torch.equal(salt_and_pepper(x, 0.0, _gen(0)), x)
    assert set(salt_and_pepper(x, 1.0, _gen(0)).unique().tolist()) == {0.0, 1.0}


# ----------------------------------------------------------------------------- the network update
def test_update_noise_only_where_the_authors_put_it():
    m = _tiny(hidden_noise_std=2.0)
    x, top = torch.rand(5, 64), torch.rand(5, 12)
    with torch.no_grad():
        states = []
        for seed in (0, 1):
            h = m.initial_state(x, _gen(100))  # same corrupted start
            h[2] = top.clone()
            logits = m.update(h, noisy=True, generator=_gen(seed))
            states.append((h, logits))
    (h_a, l_a), (h_b, l_b) = states
    assert len(l_a) == 1 and l_a[0].shape == (5, 64)
    assert torch.equal(h_a[1], h_b[1])  # noiseless_h1: h1 is a function of (h0, h2)
    assert torch.equal(l_a[0], l_b[0])  # p(x | h1) too
    assert not torch.equal(h_a[2], h_b[2])  # the top layer gets Gaussian noise
    with torch.no_grad():
        assert float((h_a[2] - torch.tanh(h_a[1] @ m.weights[1] + m.biases[2])).abs().mean()) > 0.5  # std 2, before and after
    assert set(h_a[0].unique().tolist()) <= {0.0, 1.0}  # the new visible state: Bernoulli sample + salt and pepper
    # h1 = tanh(h2 W1^T + h0 W0 + b1), with the h0 and h2 it saw (odd layers first)
    g = m.initial_state(x, _gen(100))
    h2 = torch.rand(5, 12)
    with torch.no_grad():
        want = torch.tanh(h2 @ m.weights[1].T + g[0] @ m.weights[0] + m.biases[1])
        g[2] = h2
        m.update(g, noisy=True, generator=_gen(0))
    torch.testing.assert_close(g[1], want)
    noisy_h1 = _tiny(noiseless_h1=False)
    with torch.no_grad():
        a, b = noisy_h1.initial_state(x, _gen(100)), noisy_h1.initial_state(x, _gen(100))
        noisy_h1.update(a, generator=_gen(0))
        noisy_h1.update(b, generator=_gen(1))
    assert not torch.equal(a[1], b[1])


@pytest.mark.parametrize("walkback", [1, 3])
def test_walkback_cost_sums_one_term_per_update(digits200, walkback):
    m = _tiny(walkback=walkback)
    x = digits200[:20]
    logits = m.walkback_logits(x, generator=_gen(0))
    assert len(logits) == walkback and all(lg.shape == (20, 64) for lg in logits)
    torch.manual_seed(7)
    with torch.no_grad():
        want = sum(float(F.binary_cross_entropy_with_logits(lg, x.flatten(1))) for lg in m.walkback_logits(x))
        torch.manual_seed(7)
        last = float(F.binary_cross_entropy_with_logits(m.walkback_logits(x)[-1], x.flatten(1)))
    torch.manual_seed(7)
    out = m.train_step(x, None, step=0, epoch=0, optimizers={"gsn": EMAMomentumSGD(m.parameters(), lr=0.0, momentum=0.5)})
    assert out["loss"] == pytest.approx(want, rel=1e-5)
    assert out["rec_last"] == pytest.approx(last, rel=1e-5)


def test_optimiser_and_annealing_follow_the_authors_update():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = EMAMomentumSGD([p], lr=0.25, momentum=0.5)
    g1, g2 = torch.tensor([1.0, -2.0, 4.0]), torch.tensor([3.0, 0.0, -1.0])
    p.grad = g1.clone()
    opt.step()
    torch.testing.assert_close(p.detach(), -0.25 * 0.5 * g1)  # v starts at 0: v1 = 0.5 g1
    p.grad = g2.clone()
    opt.step()
    v2 = 0.5 * (0.5 * g1) + 0.5 * g2
    torch.testing.assert_close(p.detach(), -0.25 * 0.5 * g1 - 0.25 * v2)
    m = _tiny()
    opts = m.configure_optimizers()
    m.on_epoch_start(3, opts)
    assert opts["gsn"].param_groups[0]["lr"] == pytest.approx(0.25 * 0.995**3)


def test_training_lowers_the_walkback_cost(digits200):
    m = _fit(_tiny(hidden_sizes=[32, 32]), digits200, epochs=6)
    hist = m.train_state_.history
    assert set(hist[-1]) == {"epoch", "loss", "rec_first", "rec_last"}
    assert hist[-1]["loss"] < 0.85 * hist[0]["loss"], hist
    assert all(math.isfinite(v) for h in hist for v in h.values())


# ----------------------------------------------------------------------------- sampling and checkpoints
def test_sample_chain(digits200):
    m = _tiny()
    with pytest.raises(RuntimeError, match="on_fit_start"):
        m.sample(4)  # start="data" needs stored training images
    _fit(m, digits200)
    m.train()
    for kw in ({}, {"start": "noise"}, {"chains": 3, "burn_in": 2, "thin": 2}):
        s = m.sample(17, generator=_gen(0), **kw)
        assert s.shape == (17, 1, 8, 8) and s.dtype == torch.float32 and not s.requires_grad
        assert torch.isfinite(s).all() and float(s.min()) >= 0.0 and float(s.max()) <= 1.0
        assert torch.equal(s, m.sample(17, generator=_gen(0), **kw))
        assert not torch.equal(s, m.sample(17, generator=_gen(1), **kw))
    assert m.training  # sample() restores the mode it found
    flat = digits200.flatten(1)
    s = m.sample(5, generator=_gen(0)).flatten(1)
    assert not any(bool((flat == row).all(1).any()) for row in s)  # expectations, not the start images
    with pytest.raises(ValueError, match="start"):
        m.sample(3, start="prior")


def test_checkpoint_round_trip(digits200, tmp_path):
    m = _fit(_tiny(), digits200[:100], run_dir=tmp_path)
    ck = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert ck["model_name"] == "gsn" and ck["model_kwargs"] == m.hparams
    assert "velocity" in next(iter(ck["optimizers"]["gsn"]["state"].values()))
    clone = load_model("gsn", str(tmp_path / "last.pt")).model  # strict: every key and shape must fit
    assert torch.equal(clone.chain_starts, m.chain_starts) and bool(clone.chain_starts_filled)
    assert torch.equal(clone.sample(9, generator=_gen(0)), m.sample(9, generator=_gen(0)))


def test_resumed_fit_equals_an_uninterrupted_one(digits200, tmp_path):
    x = digits200[:100]
    straight = _fit(_tiny(), x, epochs=2)
    _fit(_tiny(), x, epochs=1, run_dir=tmp_path)
    resumed = _fit(_tiny(), x, epochs=2, run_dir=tmp_path)  # from epoch_1.pt: weights, velocities, RNG
    assert resumed.train_state_.epoch == 2
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
