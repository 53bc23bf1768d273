"""The deep belief net (reference_models.dbn): construction, the greedy layer-wise schedule, CD / PCD
against exact quantities on a tiny RBM, sampling, checkpoints."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

import reference_models
from evalkit.checkpoints import load_evalkit_checkpoint
from reference_models.dbn import DBN, RBM
from reference_models.training import TrainConfig, fit

TINY = {"image_shape": [1, 8, 8], "hidden": [16, 12, 20], "epochs_per_layer": 1,
        "sample_chains": 5, "sample_burn_in": 10, "sample_thin": 2, "n_chain_starts": 20}


def _build(**kw):
    torch.manual_seed(0)
    return reference_models.build("dbn", **{**TINY, **kw})


def _cfg(epochs, bs=20):
    return TrainConfig(epochs=epochs, batch_size=bs, progress=False)


def _rbm_state(m, l):
    return {k: v.detach().clone() for k, v in m.rbms[l].state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _all_binary(d):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)))


def _exact_log_likelihood(rbm: RBM, v: torch.Tensor) -> float:
    """Mean log p(v) with the partition function summed over every visible configuration."""
    with torch.no_grad():
        log_z = torch.logsumexp(-rbm.free_energy(_all_binary(rbm.visible_bias.shape[0])), 0)
        return float((-rbm.free_energy(v) - log_z).mean())


# ----------------------------------------------------------------------------- construction
def test_build_defaults():
    m = reference_models.build("dbn")
    assert isinstance(m, DBN) and reference_models.model_class("dbn") is DBN
    assert m.sizes == [784, 500, 500, 2000] and m.n_layers == 3
    assert [tuple(r.weight.shape) for r in m.rbms] == [(500, 784), (500, 500), (2000, 500)]
    assert float(m.rbms[0].weight.detach().std()) == pytest.approx(0.01, rel=0.05) and float(m.rbms[0].hidden_bias.detach().abs().max()) == 0
    h = m.hparams
    assert h["epochs_per_layer"] == 30 and h["method"] == "cd" and h["cd_k"] == 1 and h["sample_burn_in"] == 1000
    opts = m.configure_optimizers()
    assert set(opts) == {"rbm0", "rbm1", "rbm2"}
    o = opts["rbm0"]
    assert isinstance(o, torch.optim.SGD) and o.defaults["lr"] == 0.1 and o.defaults["momentum"] == 0.5
    assert [g["weight_decay"] for g in o.param_groups] == [2e-4, 0.0]  # decay on the weights only
    assert o.param_groups[0]["params"][0] is m.rbms[0].weight
    clone = DBN(**m.hparams)  # hparams rebuild the same architecture
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    pcd = DBN(image_shape=[1, 8, 8], hidden=[6, 5], method="pcd", pcd_chains=7)
    assert pcd.pcd_visible0.shape == (7, 64) and pcd.pcd_visible1.shape == (7, 6) and pcd.pcd_started.tolist() == [False, False]


@pytest.mark.parametrize("kwargs, word", [({"method": "gibbs"}, "method"), ({"input_mode": "gauss"}, "input_mode"),
                                          ({"sample_start": "noise"}, "sample_start"), ({"down_pass": "max"}, "down_pass"),
                                          ({"hidden": []}, "hidden"), ({"epochs_per_layer": 0}, "epochs_per_layer")])
def test_bad_constructor_args(kwargs, word):
    with pytest.raises(ValueError, match=word):
        _build(**kwargs)


# ----------------------------------------------------------------------------- greedy schedule
def test_schedule_from_epoch_counter():
    m = _build(epochs_per_layer=3, momentum_switch_epoch=2)
    assert [m.active_layer(e) for e in range(12)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2]  # the top RBM keeps training
    opts = m.configure_optimizers()
    seen = []
    for e in range(8):
        m.on_epoch_start(e, opts)
        seen.append(opts[f"rbm{m.active_layer(e)}"].param_groups[0]["momentum"])
    assert seen == [0.5, 0.5, 0.9, 0.5, 0.5, 0.9, 0.5, 0.5]  # each layer restarts at the initial momentum


def test_greedy_training_touches_only_the_active_layer(digits200, tmp_path):
    m = _build()
    init = [_rbm_state(m, l) for l in range(3)]
    fit(m, digits200, None, _cfg(1), run_dir=tmp_path)
    after1 = [_rbm_state(m, l) for l in range(3)]
    assert not _same(init[0], after1[0]) and _same(init[1], after1[1]) and _same(init[2], after1[2])
    ck = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert ck["optimizers"]["rbm0"]["state"] and not ck["optimizers"]["rbm1"]["state"]  # only rbm0 stepped

    m2 = fit(_build(), digits200, None, _cfg(2), run_dir=tmp_path)  # resumes at epoch 1: layer 1's epoch
    after2 = [_rbm_state(m2, l) for l in range(3)]
    assert _same(after1[0], after2[0]) and not _same(after1[1], after2[1]) and _same(after1[2], after2[2])

    m4 = fit(_build(), digits200, None, _cfg(4), run_dir=tmp_path)  # epochs 2 and 3: the top RBM
    after4 = [_rbm_state(m4, l) for l in range(3)]
    assert _same(after2[0], after4[0]) and _same(after2[1], after4[1]) and not _same(after2[2], after4[2])
    assert [h["layer"] for h in m4.train_state_.history] == [0.0, 1.0, 2.0, 2.0]
    assert all(math.isfinite(v) for h in m4.train_state_.history for v in h.values())


@pytest.mark.parametrize("method", ["cd", "pcd"])
def test_training_reduces_reconstruction_error(digits200, method):
    m = _build(hidden=[24], method=method, epochs_per_layer=10, lr=0.05)
    before = float(m.reconstruction_error(digits200).mean())
    fit(m, digits200, None, _cfg(5))
    after = float(m.reconstruction_error(digits200).mean())
    assert after < 0.8 * before, (before, after)
    if method == "pcd":
        assert bool(m.pcd_started[0]) and set(m.pcd_visible0.unique().tolist()) <= {0.0, 1.0}


# ----------------------------------------------------------------------------- exact checks on a tiny RBM
def test_free_energy_matches_enumeration():
    torch.manual_seed(0)
    rbm = RBM(5, 3, init_std=1.0)
    with torch.no_grad():
        rbm.visible_bias.normal_(), rbm.hidden_bias.normal_()
        v = torch.rand(4, 5)
        hs = _all_binary(3)  # [8, 3]
        energy = -(v @ rbm.visible_bias)[:, None] - (hs @ rbm.hidden_bias)[None, :] - (v @ rbm.weight.T) @ hs.T
        torch.testing.assert_close(rbm.free_energy(v), -torch.logsumexp(-energy, 1))


def test_cd_gradient_is_the_free_energy_difference(digits200):
    m = _build(hidden=[10], lr=0.0, weight_decay=0.0, cd_k=2)
    captured = {}
    negative = m._negative_phase

    def spy(l, h0, v0):
        captured["vk"] = negative(l, h0, v0)[0]
        return captured["vk"], m.rbms[l].hidden_probs(captured["vk"])

    m._negative_phase = spy
    x = digits200[:20]
    m.train_step(x, None, step=0, epoch=0, optimizers=m.configure_optimizers())
    rbm = m.rbms[0]
    got = [p.grad.clone() for p in (rbm.weight, rbm.visible_bias, rbm.hidden_bias)]
    # d/dtheta of mean F(data) - mean F(negative samples) (samples held fixed) is minus the CD estimate
    loss = rbm.free_energy(x.flatten(1)).mean() - rbm.free_energy(captured["vk"]).mean()
    want = torch.autograd.grad(loss, [rbm.weight, rbm.visible_bias, rbm.hidden_bias])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("method", ["cd", "pcd"])
def test_exact_log_likelihood_increases(method):
    # data: two 6-pixel prototypes with 5% flips; 1-layer DBN = one RBM, log Z by enumeration
    g = _gen(0)
    protos = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.float32)
    v = protos[torch.randint(2, (300,), generator=g)]
    v = (v + (torch.rand(v.shape, generator=g) < 0.05).float()) % 2
    torch.manual_seed(0)
    # PCD's fantasy particles lag behind lr 0.1 with momentum 0.9 (the likelihood then oscillates): momentum 0.5 for PCD
    momentum = [0.5, 0.5] if method == "pcd" else [0.5, 0.9]
    m = DBN(image_shape=[1, 2, 3], hidden=[4], method=method, pcd_chains=50, init_std=0.1, momentum=momentum)
    before = _exact_log_likelihood(m.rbms[0], v)
    fit(m, v.view(-1, 1, 2, 3), None, _cfg(8))
    after = _exact_log_likelihood(m.rbms[0], v)
    assert before == pytest.approx(-6 * math.log(2), abs=0.05)  # small init: nearly uniform over the 2^6 images
    assert after > before + 1.2, (before, after)  # about -2.0 (CD) and -2.5 (PCD) here


# ----------------------------------------------------------------------------- sampling and capabilities
def test_samples(digits200):
    m = _build()
    fit(m, digits200, None, _cfg(3))
    m.train()
    for kw in ({}, {"start": "data"}, {"start": "data", "burn_in": 0, "thin": 1, "chains": 3}):
        s = m.sample(11, generator=_gen(0), **kw)
        assert s.shape == (11, 1, 8, 8) and not s.requires_grad and torch.isfinite(s).all()
        assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
        assert torch.equal(s, m.sample(11, generator=_gen(0), **kw))
        assert not torch.equal(s, m.sample(11, generator=_gen(1), **kw))
    assert m.training  # sample() restores the mode it found
    m.hparams["down_pass"] = "sample"
    s = m.sample(11, generator=_gen(0))
    assert s.shape == (11, 1, 8, 8) and float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    x = digits200[:6]
    assert m.encode(x).shape == (6, 20)
    for out in (m.reconstruct(x), m.decode(torch.rand(6, 20))):
        assert out.shape == (6, 1, 8, 8) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert m.free_energy(x).shape == (6,) and m.free_energy(m.up(x, 1), layer=1).shape == (6,)


def test_single_layer_dbn_samples_from_its_rbm(digits200):
    m = _build(hidden=[16])
    with pytest.raises(RuntimeError, match="on_fit_start"):
        m.sample(3, start="data")  # no training images stored yet
    fit(m, digits200, None, _cfg(1))
    s = m.sample(7, generator=_gen(2), start="data")
    assert s.shape == (7, 1, 8, 8) and float(s.min()) >= 0.0 and float(s.max()) <= 1.0


@pytest.mark.parametrize("method", ["cd", "pcd"])
def test_checkpoint_round_trip(digits200, tmp_path, method):
    m = fit(_build(method=method), digits200[:100], None, _cfg(2), run_dir=tmp_path)
    ck = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert ck["model_name"] == "dbn" and ck["model_kwargs"] == m.hparams
    clone = load_evalkit_checkpoint(tmp_path / "last.pt").model  # strict: every key and shape must fit
    x = digits200[:5]
    assert torch.equal(clone.reconstruct(x), m.reconstruct(x))
    assert torch.equal(clone.sample(8, generator=_gen(0), start="data"), m.sample(8, generator=_gen(0), start="data"))
    if method == "pcd":
        assert torch.equal(clone.pcd_visible0, m.pcd_visible0) and clone.pcd_started.tolist() == [True, True, False]


def test_dbn_chain_settings_chosen_on_validation_only(digits_train):
    """sample_grid: sample() refuses before a choice; the choice sees only the images passed as
    validation, is recorded in buffers (so the checkpoint keeps it) and then drives sample()."""
    import pytest

    from reference_models.dbn import DBN
    from reference_models.training import TrainConfig, fit

    torch.manual_seed(0)
    m = DBN(image_shape=[1, 8, 8], hidden=[16, 8], epochs_per_layer=1, sample_chains=5, sample_thin=1,
            sample_grid={"start": ["random", "data"], "burn_in": [2, 5]})
    fit(m, digits_train[:100], None, TrainConfig(epochs=2, batch_size=20, progress=False))
    with pytest.raises(RuntimeError, match="choose_on_validation"):
        m.sample(10, generator=torch.Generator().manual_seed(0))
    valid = digits_train[100:160]
    out = m.choose_on_validation(valid, n_samples=50, seed=0, log=lambda s: None)
    assert out["valid_choose"] == "valid[0:30]" and out["valid_score"] == "valid[30:60]"
    assert len(out["results"]) == 4 and int(m.sample_choice) == out["chosen_index"]
    assert m.chosen_sample_settings == out["chosen"]
    s = m.sample(10, generator=torch.Generator().manual_seed(0))
    assert s.shape == (10, 1, 8, 8) and 0 <= float(s.min()) and float(s.max()) <= 1
    state = m.state_dict()
    assert "sample_choice" in state and "sample_choice_ll" in state
    with pytest.raises(ValueError, match="may vary"):
        DBN(image_shape=[1, 8, 8], hidden=[4], sample_grid={"step": [0.1]})


def test_dbn_without_grid_keeps_its_arguments_and_keys():
    from reference_models.dbn import DBN

    m = DBN(image_shape=[1, 8, 8], hidden=[4])
    assert "sample_grid" not in m.hparams and "sample_choice" not in m.state_dict()


# ----------------------------------------------------------------------------- up-down fine-tuning
def test_updown_hparams_absent_unless_used_and_validated():
    m = _build()
    assert "updown_from_epoch" not in m.hparams and not hasattr(m, "gen_weights") and not m.untied
    assert "updown" not in m.configure_optimizers()
    m = _build(updown_from_epoch=3)
    assert m.hparams["updown_from_epoch"] == 3 and m.hparams["updown_cd_k"] == 3 and len(m.gen_weights) == 2
    assert [m.in_updown(e) for e in range(5)] == [False, False, False, True, True]
    for bad in ({"updown_from_epoch": 0}, {"updown_from_epoch": 2, "updown_cd_k": 0}, {"updown_from_epoch": 2, "updown_lr": 0.0}):
        with pytest.raises(ValueError, match="updown"):
            _build(**bad)


def test_delta_rule_is_the_bernoulli_log_likelihood_gradient():
    g = _gen(0)
    for transposed in (False, True):
        inputs = torch.bernoulli(torch.full((7, 5), 0.5), generator=g)
        targets = torch.rand(7, 4, generator=g)
        w = torch.nn.Parameter(torch.randn(4, 5, generator=g) if transposed else torch.randn(5, 4, generator=g))
        b = torch.nn.Parameter(torch.randn(4, generator=g))
        from reference_models.dbn import _delta_rule

        with torch.no_grad():
            _delta_rule(inputs, targets, w, b, transposed=transposed)
        gw, gb = w.grad.clone(), b.grad.clone()
        w.grad = b.grad = None
        logits = (inputs @ w.T if transposed else inputs @ w) + b
        torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum").div(7).backward()
        assert torch.allclose(gw, w.grad, atol=1e-6) and torch.allclose(gb, b.grad, atol=1e-6)


def test_updown_fine_tuning_after_an_unchanged_greedy_stage(digits200, tmp_path):
    """Before updown_from_epoch the net trains exactly as without fine-tuning (a paired run's arms
    share their greedy stage); from it on every parameter moves, the lower layers' generative
    weights are untied and drive the down pass, and the checkpoint round-trips."""
    plain = fit(_build(), digits200[:100], None, _cfg(3))
    tuned = fit(_build(updown_from_epoch=3), digits200[:100], None, _cfg(3), run_dir=tmp_path)
    assert all(_same(_rbm_state(plain, l), _rbm_state(tuned, l)) for l in range(3)) and not tuned.untied
    x = digits200[:5]
    assert torch.equal(plain.reconstruct(x), tuned.reconstruct(x))
    before = {k: v.detach().clone() for k, v in tuned.named_parameters()}
    tuned = fit(_build(updown_from_epoch=3), digits200[:100], None, _cfg(5), run_dir=tmp_path)
    assert tuned.untied and [h["layer"] for h in tuned.train_state_.history] == [0.0, 1.0, 2.0, 3.0, 3.0]
    after = dict(tuned.named_parameters())
    assert all(not torch.equal(before[k], after[k]) for k in before if not k.startswith("gen_weights")), "a parameter did not move"
    for l in range(2):
        assert not torch.equal(tuned.gen_weights[l], tuned.rbms[l].weight)
    h = torch.rand(4, 16, generator=_gen(1))
    assert torch.allclose(tuned.down(h, from_layer=1).flatten(1), torch.sigmoid(h @ tuned.gen_weights[0] + tuned.rbms[0].visible_bias))
    clone = load_evalkit_checkpoint(tmp_path / "last.pt").model
    assert clone.untied and torch.equal(clone.reconstruct(x), tuned.reconstruct(x))
    assert torch.equal(clone.sample(6, generator=_gen(0), start="data"), tuned.sample(6, generator=_gen(0), start="data"))


def test_a_chain_choice_is_forgotten_when_training_continues(digits_train, tmp_path):
    """A checkpoint holding the chain setting chosen for its weights, trained further: the longer
    run must be chosen for anew, not inherit the shorter run's choice."""
    from reference_models.training import load_checkpoint

    def build():
        torch.manual_seed(0)
        return DBN(image_shape=[1, 8, 8], hidden=[16, 8], epochs_per_layer=1, sample_chains=5, sample_thin=1,
                   sample_grid={"start": ["random", "data"], "burn_in": [2, 5]})

    m = fit(build(), digits_train[:100], None, TrainConfig(epochs=2, batch_size=20, progress=False), run_dir=tmp_path)
    m.choose_on_validation(digits_train[100:160], n_samples=50, seed=0, checkpoint=tmp_path / "epoch_2.pt", log=lambda s: None)
    (tmp_path / "last.pt").unlink()  # the run resumes from the snapshot that holds the choice
    assert int(load_checkpoint(tmp_path / "epoch_2.pt")["state_dict"]["sample_choice"]) >= 0
    again = fit(build(), digits_train[:100], None, TrainConfig(epochs=2, batch_size=20, progress=False), run_dir=tmp_path)
    assert again.chosen_sample_settings == m.chosen_sample_settings  # nothing trained: the choice stands
    longer = fit(build(), digits_train[:100], None, TrainConfig(epochs=3, batch_size=20, progress=False), run_dir=tmp_path)
    assert longer.chosen_sample_settings is None and int(load_checkpoint(tmp_path / "epoch_3.pt")["state_dict"]["sample_choice"]) == -1
