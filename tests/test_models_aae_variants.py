"""AAE variants (Makhzani et al. 2015): semi-supervised, clustering, dimensionality
reduction (``reference_models.aae_semi``) and supervised (``reference_models.aae_supervised``)."""
from __future__ import annotations

import inspect
import math

import pytest
import torch

import reference_models
from reference_models.aae_semi import ClusteringAAE, DimRedAAE, SemiSupervisedAAE
from reference_models.aae_supervised import SupervisedAAE
from reference_models.training import TrainConfig, fit

TINY = {"image_shape": [1, 8, 8], "hidden": [32], "disc_hidden": [16]}
SEMI_TINY = {**TINY, "z_dim": 2}
CLUSTER_TINY = {**TINY, "n_classes": 10, "z_dim": 2}
SUP_TINY = {**TINY, "z_dim": 3}
PER_CLASS = 5  # labelled examples per class in the masked labels


@pytest.fixture(scope="module")
def digits_xy():
    """200 training digits [200, 1, 8, 8] in [0, 1], their labels, and a copy with all but
    ``PER_CLASS`` per class masked to -1."""
    from evalkit.data import load

    ds = load("digits", "train")
    x, y = ds.tensor()[:200].clone(), ds.label_tensor()[:200].clone().long()
    keep = torch.cat([(y == c).nonzero()[:PER_CLASS, 0] for c in range(10)])
    masked = torch.full_like(y, -1)
    masked[keep] = y[keep]
    return x, y, masked


def _cfg(epochs=3, batch_size=20, seed=0):
    return TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, progress=False)


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _moved(before, model, prefix) -> bool:
    after = model.state_dict()
    return any(k.startswith(prefix) and not torch.equal(before[k], after[k]) for k in before)


def _check_images(img, shape):
    assert img.shape == shape and img.dtype == torch.float32
    assert torch.isfinite(img).all() and float(img.min()) >= 0.0 and float(img.max()) <= 1.0


def _check_samples(model, n=7):
    s = model.sample(n, generator=torch.Generator().manual_seed(0))
    _check_images(s, (n, 1, 8, 8))
    assert torch.equal(s, model.sample(n, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(s, model.sample(n, generator=torch.Generator().manual_seed(1)))


def _check_categorical_capabilities(model, x, k, z_dim):
    n = x.shape[0]
    logits = model.predict_logits(x)
    assert logits.shape == (n, k) and torch.isfinite(logits).all() and not logits.requires_grad
    probs = model.cluster_probs(x)
    assert probs.shape == (n, k) and float(probs.min()) >= 0
    assert torch.allclose(probs.sum(1), torch.ones(n), atol=1e-5)
    assert torch.allclose(probs, logits.softmax(1))
    c = model.encode(x)
    assert c.shape == (n, k + z_dim)
    assert torch.allclose(c[:, :k], probs, atol=1e-6)
    assert torch.equal(model.encode(x), c), "encode is deterministic (no input noise outside training)"
    _check_images(model.decode(c).detach(), (n, 1, 8, 8))
    _check_images(model.reconstruct(x), tuple(x.shape))
    _check_samples(model)


def _check_history(model, keys, epochs):
    hist = model.train_state_.history
    assert [h["epoch"] for h in hist] == list(range(1, epochs + 1))
    for h in hist:
        assert set(h) - {"epoch"} == set(keys), h
        assert all(math.isfinite(v) for v in h.values())
    return hist


# ----------------------------------------------------------------------------- registry, defaults
@pytest.mark.parametrize(
    "name, cls, kwargs",
    [
        ("aae_semi", SemiSupervisedAAE, SEMI_TINY),
        ("aae_cluster", ClusteringAAE, CLUSTER_TINY),
        ("aae_dimred", DimRedAAE, TINY),
        ("aae_supervised", SupervisedAAE, SUP_TINY),
    ],
)
def test_build_and_hparams_rebuild(name, cls, kwargs):
    torch.manual_seed(0)
    m = reference_models.build(name, **kwargs)
    assert type(m) is cls and m.registry_name == name and m.description
    assert m.hparams["image_shape"] == [1, 8, 8] and m.hparams["hidden"] == [32]
    clone = cls(**m.hparams)  # a checkpoint's model_kwargs rebuild the same architecture
    assert clone.hparams == m.hparams
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    caps = {d["name"]: d["capabilities"] for d in reference_models.describe()}[name]
    assert {"sample", "encode", "decode"} <= set(caps)
    if name != "aae_supervised":
        assert {"predict_logits", "cluster_probs"} <= set(caps)


def test_defaults_are_the_papers_mnist_values():
    semi = inspect.signature(SemiSupervisedAAE).parameters
    assert semi["n_classes"].default == 10 and semi["z_dim"].default == 10
    assert tuple(semi["hidden"].default) == (1000, 1000) and tuple(semi["disc_hidden"].default) == (1000, 1000)
    assert semi["input_noise"].default == 0.3 and semi["init_std"].default == 0.01 and semi["optimizer"].default == "sgd"
    assert tuple(semi["sgd_recon"].default) == (0.01, 0.9) and tuple(semi["sgd_adv"].default) == (0.1, 0.1)
    assert tuple(semi["sgd_semi"].default) == (0.1, 0.9) and semi["sgd_decay_epoch"].default == 50
    clu = inspect.signature(ClusteringAAE).parameters
    assert clu["n_classes"].default == 16 and clu["z_dim"].default == 5
    assert tuple(clu["hidden"].default) == (3000, 3000) and tuple(clu["disc_hidden"].default) == (3000, 3000)
    dr = inspect.signature(DimRedAAE).parameters
    assert dr["code_dim"].default == 2 and dr["n_classes"].default == 10
    m = DimRedAAE(**TINY)
    assert "z_dim" not in m.hparams and m.hparams["code_dim"] == 2 and m.z_dim == 2
    assert m.decoder[0].in_features == 2, "the DimRed decoder sees only the 2-d code"


@pytest.mark.parametrize("name, kwargs", [("aae_semi", {"optimizer": "rmsprop"}), ("aae_supervised", {"optimizer": "x"})])
def test_bad_optimizer_raises(name, kwargs):
    with pytest.raises(ValueError, match="optimizer"):
        reference_models.build(name, **TINY, **kwargs)


# ----------------------------------------------------------------------------- SemiSupervisedAAE
def test_semi_aae_trains_and_offers_capabilities(digits_xy):
    x, _, masked = digits_xy
    torch.manual_seed(0)
    m = reference_models.build("aae_semi", **SEMI_TINY, optimizer="adam", init_std=0.1, adam_lr_recon=3e-3, adam_lr_semi=1e-2)
    before = _params(m)
    fit(m, x, masked, _cfg(epochs=4))
    hist = _check_history(m, {"rec_loss", "d_cat_loss", "d_gauss_loss", "g_loss", "semi_loss"}, 4)
    assert hist[-1]["rec_loss"] < 0.8 * hist[0]["rec_loss"], [h["rec_loss"] for h in hist]
    assert hist[-1]["semi_loss"] < hist[0]["semi_loss"], [h["semi_loss"] for h in hist]
    for prefix in ("encoder.", "decoder.", "d_cat.", "d_gauss."):
        assert _moved(before, m, prefix), prefix
    _check_categorical_capabilities(m, x[:9], 10, 2)


def test_semi_aae_pool_holds_only_labelled_examples(digits_xy):
    x, y, masked = digits_xy
    m = reference_models.build("aae_semi", **SEMI_TINY)
    m.on_fit_start(x, masked)
    assert len(m._pool) == 10 * PER_CLASS
    assert bool((m._pool.y >= 0).all())
    keep = masked >= 0
    assert torch.equal(m._pool.x, x[keep]) and torch.equal(m._pool.y, y[keep])
    xb, yb = m._pool.batch(20)
    assert xb.shape == (20, 1, 8, 8) and set(yb.tolist()) <= set(range(10))


def test_semi_aae_sgd_schedule_and_training(digits_xy):
    x, _, masked = digits_xy
    torch.manual_seed(0)
    m = reference_models.build("aae_semi", **SEMI_TINY, sgd_decay_epoch=1)
    fit(m, x, masked, _cfg(epochs=2, batch_size=50))
    _check_history(m, {"rec_loss", "d_cat_loss", "d_gauss_loss", "g_loss", "semi_loss"}, 2)
    opts = m.configure_optimizers()
    assert set(opts) == {"recon", "disc", "gen", "semi"}
    assert opts["recon"].param_groups[0]["momentum"] == 0.9 and opts["disc"].param_groups[0]["momentum"] == 0.1
    m.on_epoch_start(0, opts)
    assert [opts[k].param_groups[0]["lr"] for k in ("recon", "disc", "gen", "semi")] == pytest.approx([0.01, 0.1, 0.1, 0.1])
    m.on_epoch_start(1, opts)  # from sgd_decay_epoch on: / 10
    assert [opts[k].param_groups[0]["lr"] for k in ("recon", "disc", "gen", "semi")] == pytest.approx([0.001, 0.01, 0.01, 0.01])


def test_semi_aae_without_labels_skips_the_supervised_phase(digits_xy):
    x, _, _ = digits_xy
    torch.manual_seed(0)
    m = reference_models.build("aae_semi", **SEMI_TINY, optimizer="adam")
    fit(m, x, None, _cfg(epochs=1))
    _check_history(m, {"rec_loss", "d_cat_loss", "d_gauss_loss", "g_loss"}, 1)
    assert len(m._pool) == 0


def test_input_noise_only_in_training(digits_xy):
    x, _, _ = digits_xy
    m = reference_models.build("aae_semi", **SEMI_TINY, input_noise=0.5)
    flat = x[:4].flatten(1)
    torch.manual_seed(0)
    assert not torch.equal(m._noisy(flat), flat)
    assert torch.equal(reference_models.build("aae_semi", **SEMI_TINY, input_noise=0.0)._noisy(flat), flat)
    m.train()
    assert torch.equal(m.predict_logits(x[:4]), m.predict_logits(x[:4]))


# ----------------------------------------------------------------------------- ClusteringAAE
def test_clustering_aae_ignores_labels(digits_xy):
    x, y, _ = digits_xy
    states = []
    for labels in (y, torch.full_like(y, -1)):
        torch.manual_seed(0)
        m = reference_models.build("aae_cluster", **CLUSTER_TINY, optimizer="adam")
        fit(m, x, labels, _cfg(epochs=2))
        assert m._pool is None and "semi" not in m.configure_optimizers()
        _check_history(m, {"rec_loss", "d_cat_loss", "d_gauss_loss", "g_loss"}, 2)
        states.append(m.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_clustering_aae_trains_and_clusters(digits_xy):
    x, _, _ = digits_xy
    torch.manual_seed(0)
    m = reference_models.build("aae_cluster", **{**CLUSTER_TINY, "n_classes": 16}, init_std=0.1)
    before = _params(m)
    fit(m, x, None, _cfg(epochs=5))
    hist = m.train_state_.history
    assert hist[-1]["rec_loss"] < 0.8 * hist[0]["rec_loss"], [h["rec_loss"] for h in hist]
    assert _moved(before, m, "d_cat.") and _moved(before, m, "encoder.")
    _check_categorical_capabilities(m, x[:9], 16, 2)


# ----------------------------------------------------------------------------- DimRedAAE
def test_dimred_head_penalty():
    m = reference_models.build("aae_dimred", **TINY, n_classes=4, eta=2.0)
    with torch.no_grad():
        m.cluster_heads.copy_(torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]]))
    assert float(m.head_penalty().detach()) == 0.0
    with torch.no_grad():
        m.cluster_heads[1] = m.cluster_heads[0]
    assert float(m.head_penalty().detach()) == pytest.approx(4.0, rel=1e-4)  # one pair at distance 0: eta^2
    m.head_penalty().backward()
    assert torch.isfinite(m.cluster_heads.grad).all()


@pytest.mark.parametrize("labelled", [True, False])
def test_dimred_trains_and_embeds(digits_xy, labelled):
    x, _, masked = digits_xy
    torch.manual_seed(0)
    k = 10 if labelled else 20
    m = reference_models.build("aae_dimred", **TINY, n_classes=k, optimizer="sgd", init_std=0.1)
    before = _params(m)
    fit(m, x, masked if labelled else None, _cfg(epochs=5))
    keys = {"rec_loss", "head_penalty", "d_cat_loss", "d_gauss_loss", "g_loss"} | ({"semi_loss"} if labelled else set())
    hist = _check_history(m, keys, 5)
    assert hist[-1]["rec_loss"] < 0.8 * hist[0]["rec_loss"], [h["rec_loss"] for h in hist]
    assert _moved(before, m, "cluster_heads") and _moved(before, m, "encoder.")
    e = m.embed(x[:9])
    assert e.shape == (9, 2) and torch.isfinite(e).all()
    c = m.encode(x[:9])
    assert torch.allclose(e, c[:, :k] @ m.cluster_heads + c[:, k:], atol=1e-5)
    _check_categorical_capabilities(m, x[:9], k, 2)


# ----------------------------------------------------------------------------- SupervisedAAE
def test_supervised_aae_trains_and_renders_style_grid(digits_xy):
    x, y, _ = digits_xy
    torch.manual_seed(0)
    m = reference_models.build("aae_supervised", **SUP_TINY, init_std=0.1)
    before = _params(m)
    fit(m, x, y, _cfg(epochs=4))
    hist = _check_history(m, {"rec_loss", "d_loss", "g_loss"}, 4)
    assert hist[-1]["rec_loss"] < 0.8 * hist[0]["rec_loss"], [h["rec_loss"] for h in hist]
    for prefix in ("encoder.", "decoder.", "d_gauss."):
        assert _moved(before, m, prefix), prefix
    assert len(m._pool) == 200
    z = m.encode(x[:9])
    assert z.shape == (9, 3)
    _check_images(m.decode(z, y[:9]).detach(), (9, 1, 8, 8))
    one_hot = torch.nn.functional.one_hot(y[:9], 10).float()
    assert torch.allclose(m.decode(z, one_hot), m.decode(z, y[:9]))
    _check_images(m.reconstruct(x[:9], y[:9]), (9, 1, 8, 8))
    _check_samples(m)
    g = m.style_grid(3, generator=torch.Generator().manual_seed(0))
    _check_images(g, (3, 10, 1, 8, 8))
    assert not torch.equal(g[0, 0], g[0, 1]), "columns differ by label"
    assert torch.equal(g, m.style_grid(3, generator=torch.Generator().manual_seed(0)))


def test_supervised_aae_draws_labelled_batches_when_labels_are_missing(digits_xy):
    x, _, masked = digits_xy
    torch.manual_seed(0)
    m = reference_models.build("aae_supervised", **SUP_TINY, optimizer="sgd")
    fit(m, x, masked, _cfg(epochs=1))
    assert len(m._pool) == 10 * PER_CLASS and bool((m._pool.y >= 0).all())
    _check_history(m, {"rec_loss", "d_loss", "g_loss"}, 1)
    with pytest.raises(ValueError, match="labels"):
        fit(reference_models.build("aae_supervised", **SUP_TINY), x, None, _cfg(epochs=1))
