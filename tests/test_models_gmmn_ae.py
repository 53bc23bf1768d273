"""GMMN+AE (reference_models.gmmn_ae, Li, Swersky, Zemel 2015): construction, the MMD estimate
against a double-loop reference, the two training stages, capabilities, checkpoints."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

import reference_models
from reference_models.gmmn_ae import GMMNAE, mmd2
from reference_models.training import TrainConfig, fit
from helpers import state_snapshot as _params, moved_networks as _moved, linear_sizes as _linear_sizes, gen as _g  # noqa: E402

TINY = {
    "image_shape": [1, 8, 8], "ae_hidden": [32], "code_dim": 6, "gen_hidden": [16, 16], "mmd_batch": 100,
    "ae_epochs": 2, "optimizer": "adam", "adam_lr_ae": 1e-2, "adam_lr_mmd": 1e-2,
}


def _build(**kw) -> GMMNAE:
    torch.manual_seed(0)
    return reference_models.build("gmmn_ae", **{**TINY, **kw})


def _fit(model, x, epochs, run_dir=None):
    return fit(model, x, None, TrainConfig(epochs=epochs, batch_size=20, seed=0, progress=False), run_dir=run_dir)


# ----------------------------------------------------------------------------- construction
def test_defaults_are_the_authors_mnist_code_space_model():
    torch.manual_seed(0)
    m = reference_models.build("gmmn_ae")
    assert type(m) is GMMNAE and reference_models.model_class("gmmn_ae") is GMMNAE
    assert _linear_sizes(m.encoder) == [(784, 1024), (1024, 32)] and m.dropout == [0.2, 0.5]
    assert _linear_sizes(m.decoder) == [(32, 1024), (1024, 784)] and isinstance(m.decoder[1], torch.nn.Sigmoid)
    assert _linear_sizes(m.generator) == [(10, 64), (64, 256), (256, 256), (256, 1024), (1024, 32)]
    assert isinstance(m.generator[1], torch.nn.ReLU)
    h = m.hparams
    assert h["kernel_scales"] == [1.0] and h["mmd_batch"] == 1000 and not h["unbiased_mmd"] and h["ae_epochs"] == 12
    assert float(m.encoder[0].weight.detach().std()) == pytest.approx(0.1, rel=0.05)
    opts = m.configure_optimizers()
    assert isinstance(opts["ae"], torch.optim.SGD) and opts["ae"].defaults["lr"] == 0.1
    assert isinstance(opts["gmmn"], torch.optim.SGD) and opts["gmmn"].defaults["lr"] == 2.0
    assert [m.ae_momentum(s) for s in (0, 49, 50, 199, 200, 10**6)] == [0.0, 0.0, 0.5, 0.5, 0.9, 0.9]
    clone = GMMNAE(**m.hparams)  # a checkpoint's model_kwargs rebuild the same architecture
    assert clone.hparams == m.hparams
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    caps = {d["name"]: d["capabilities"] for d in reference_models.describe()}["gmmn_ae"]
    assert {"sample", "encode", "decode"} <= set(caps)


@pytest.mark.parametrize("kwargs, word", [
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"ae_dropout": [0.2]}, "ae_dropout"),
    ({"kernel_scales": [1.0, 0.0]}, "kernel_scales"),
])
def test_bad_constructor_args(kwargs, word):
    with pytest.raises(ValueError, match=word):
        _build(**kwargs)


def test_sgd_decay_depends_on_the_epoch_alone():
    m = _build(optimizer="sgd", ae_epochs=3, mmd_decay_epoch=5)
    opts = m.configure_optimizers()
    group = opts["gmmn"].param_groups[0]
    for epoch, (lr, mom) in {0: (2.0, 0.9), 7: (2.0, 0.9), 8: (0.2, 0.99), 30: (0.2, 0.99), 4: (2.0, 0.9)}.items():
        m.on_epoch_start(epoch, opts)
        assert group["lr"] == pytest.approx(lr) and group["momentum"] == pytest.approx(mom), epoch


# ----------------------------------------------------------------------------- MMD
def _mmd2_loops(x, y, scales, unbiased):
    """Explicit double loops over pairs, float64."""
    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * s)) for s in scales)

    def within(a):
        n = len(a)
        pairs = [(i, j) for i, j in itertools.product(range(n), repeat=2) if not (unbiased and i == j)]
        return sum(k(a[i], a[j]) for i, j in pairs) / len(pairs)

    cross = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    return within(x) + within(y) - 2 * cross


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("scales", [[1.0], [0.5, 2.0, 10.0]])
def test_mmd2_matches_double_loop_reference(unbiased, scales):
    g = _g(0)
    x, y = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64) + 0.5
    got = mmd2(x, y, scales, unbiased=unbiased)
    assert got.dtype == torch.float64 and got.shape == ()
    assert float(got) == pytest.approx(_mmd2_loops(x, y, scales, unbiased), rel=1e-10, abs=1e-12)
    assert float(mmd2(x.float(), y.float(), scales, unbiased=unbiased)) == pytest.approx(float(got), abs=1e-5)


def test_mmd2_near_zero_for_one_distribution_and_positive_when_shifted():
    g = _g(1)
    scales = [1.0, 4.0]
    a, b = torch.randn(800, 4, generator=g), torch.randn(800, 4, generator=g)
    shifted = torch.randn(800, 4, generator=g) + torch.tensor([1.0, 0.0, 0.0, 0.0])
    same_b, same_u = float(mmd2(a, b, scales)), float(mmd2(a, b, scales, unbiased=True))
    diff_b, diff_u = float(mmd2(a, shifted, scales)), float(mmd2(a, shifted, scales, unbiased=True))
    assert 0.0 <= same_b < 0.01 and abs(same_u) < 0.005
    assert diff_b > 0.1 and diff_u > 0.1 and diff_b > 20 * same_b
    assert same_b > same_u  # the biased estimate adds the diagonal's positive bias
    assert float(mmd2(a, a, scales)) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="unbiased"):
        mmd2(a[:1], b, scales, unbiased=True)
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        mmd2(a, b[:, :3], scales)


def test_sqrt_objective_has_finite_gradient_at_zero_discrepancy(digits200):
    m = _build(mmd_batch=20)
    opts = m.configure_optimizers()
    with torch.no_grad():  # make the generator's codes equal the targets: MMD = 0
        for p in m.generator.parameters():
            p.zero_()
    m.encode = lambda x: torch.full((x.shape[0], 6), 0.5)  # sigmoid(0) = 0.5, the generator's constant
    out = m.gmmn_step(digits200[:20], opts["gmmn"])
    assert out["mmd2"] == pytest.approx(0.0, abs=1e-6)
    assert all(torch.isfinite(p).all() for p in m.generator.parameters())


# ----------------------------------------------------------------------------- stages
def test_autoencoder_stage_reduces_reconstruction_loss(digits200):
    m = _build(ae_epochs=4)
    _fit(m, digits200, epochs=4)
    hist = m.train_state_.history
    assert [set(h) for h in hist] == [{"epoch", "rec_loss"}] * 4
    assert hist[-1]["rec_loss"] < 0.9 * hist[0]["rec_loss"], [h["rec_loss"] for h in hist]


def test_stages_update_only_their_networks(digits200):
    ae_only = _fit(_build(), digits200, epochs=2)  # epochs 0, 1: autoencoder stage
    both = _build()
    init_gen = {k: v.clone() for k, v in both.generator.state_dict().items()}
    mmd_before = float(both.code_mmd2(digits200, generator=_g(0)))
    _fit(both, digits200, epochs=4)  # epochs 2, 3: GMMN stage, the same first two epochs
    hist = both.train_state_.history
    assert [set(h) - {"epoch"} for h in hist] == [{"rec_loss"}] * 2 + [{"mmd2"}] * 2
    assert all(math.isfinite(v) for h in hist for v in h.values())
    for name in ("encoder", "decoder"):  # frozen in the GMMN stage: as after the autoencoder stage alone
        for k, v in getattr(ae_only, name).state_dict().items():
            assert torch.equal(v, getattr(both, name).state_dict()[k]), (name, k)
    assert all(torch.equal(v, ae_only.generator.state_dict()[k]) for k, v in init_gen.items())  # untouched in the AE stage
    assert any(not torch.equal(v, both.generator.state_dict()[k]) for k, v in init_gen.items())
    mmd_after = float(both.code_mmd2(digits200, generator=_g(0)))
    assert mmd_after < 0.3 * float(ae_only.code_mmd2(digits200, generator=_g(0))), (mmd_before, mmd_after)


def test_train_step_by_epoch(digits200):
    m = _build(ae_epochs=1)
    opts = m.configure_optimizers()
    before = _params(m)
    assert set(m.train_step(digits200[:20], None, step=0, epoch=0, optimizers=opts)) == {"rec_loss"}
    assert _moved(before, m) == {"encoder", "decoder"}
    before = _params(m)  # no on_fit_start: the GMMN matches the minibatch's own codes
    assert set(m.train_step(digits200[:20], None, step=1, epoch=1, optimizers=opts)) == {"mmd2"}
    assert _moved(before, m) == {"generator"}
    assert m.stage(0) == "ae" and m.stage(1) == "gmmn" and m.stage(50) == "gmmn"


def test_encode_is_deterministic_but_training_drops_out(digits200):
    m = _build(ae_dropout=[0.5, 0.5])
    x = digits200[:10]
    z = m.encode(x).detach()
    assert z.shape == (10, 6) and float(z.min()) > 0.0 and float(z.max()) < 1.0
    m.train()
    assert torch.equal(z, m.encode(x))
    assert not torch.equal(z, m._encode(x, dropout=True))


# ----------------------------------------------------------------------------- capabilities, checkpoints
def test_samples_and_reconstructions(digits200):
    m = _fit(_build(), digits200, epochs=3)
    s = m.sample(7, generator=_g(0))
    assert s.shape == (7, 1, 8, 8) and s.dtype == torch.float32 and torch.isfinite(s).all()
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    assert torch.equal(s, m.sample(7, generator=_g(0))) and not torch.equal(s, m.sample(7, generator=_g(1)))
    h = m.noise(2000, "cpu", _g(0))  # U[-1, 1]^noise_dim
    assert h.shape == (2000, 10) and float(h.min()) >= -1.0 and float(h.max()) <= 1.0
    assert abs(float(h.mean())) < 0.02 and float(h.var()) == pytest.approx(1 / 3, rel=0.05)
    assert torch.equal(s, m.decode(m.generate(m.noise(7, "cpu", _g(0)))))
    r = m.reconstruct(digits200[:5])
    assert r.shape == (5, 1, 8, 8) and float(r.min()) >= 0.0 and float(r.max()) <= 1.0


def test_resumed_run_equals_uninterrupted_run(digits200, tmp_path):
    """100 images / batch 20 = 5 steps per epoch: the resume at epoch 2 (step 10) falls
    inside the GMMN stage (ae_epochs = 1)."""
    x = digits200[:100]
    _fit(_build(ae_epochs=1), x, epochs=2, run_dir=tmp_path / "a")
    resumed = _fit(_build(ae_epochs=1), x, epochs=3, run_dir=tmp_path / "a")
    straight = _fit(_build(ae_epochs=1), x, epochs=3, run_dir=tmp_path / "b")
    assert resumed.train_state_.step == straight.train_state_.step == 15
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_checkpoint_round_trip(digits200, tmp_path):
    m = _fit(_build(ae_epochs=1), digits200[:100], epochs=2, run_dir=tmp_path)
    ck = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert ck["model_name"] == "gmmn_ae" and ck["model_kwargs"] == m.hparams and set(ck["optimizers"]) == {"ae", "gmmn"}
    clone = GMMNAE(**ck["model_kwargs"])
    clone.load_state_dict(ck["state_dict"])
    x = digits200[:5]
    assert torch.equal(clone.encode(x), m.encode(x))
    assert torch.equal(clone.sample(4, generator=_g(2)), m.sample(4, generator=_g(2)))
