"""Tests for evalkit.features: the cached feature network and sample_quality.

Everything runs on the embedded 8x8 digits or synthetic ImageSets with a tiny recipe
(well under a second of training); the ``data`` test needs real MNIST (EVALKIT_DATA,
else shared/data beside the repository) and is skipped without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit import features as F
from evalkit.data import ImageSet, load
from evalkit.errors import EvalkitError

TINY = F.FeatureNetSpec(channels=(8, 16), feature_dim=16, epochs=3, batch_size=32, lr=1e-2, seed=0)
_CALLER_DATA = os.environ.get("EVALKIT_DATA")


@pytest.fixture
def counting_train(monkeypatch):
    """Count calls of the training loop (to prove a cached artefact is reused)."""
    calls = []
    real = F._train

    def wrapper(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "_train", wrapper)
    return calls


@pytest.fixture
def built(tmp_path, counting_train):
    net = F.build_feature_net("digits", tmp_path, spec=TINY, progress=False)
    return net, tmp_path


def synthetic_set(n: int, shape=(3, 12, 10), n_classes: int = 3, seed: int = 0, split: str = "train") -> ImageSet:
    """Class c: a bright horizontal band at rows 4c..4c+3 plus noise (uint8 [N, C, H, W])."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    x = rng.integers(0, 60, size=(n, *shape))
    for i, c in enumerate(labels):
        x[i, :, 4 * c : 4 * c + 3] += 180
    return ImageSet("synth", split, x.astype(np.uint8), labels, [str(c) for c in range(n_classes)],
                    fingerprint=f"synthetic-{split}-{seed}-{n}")


def test_build_writes_artefact_and_sidecar(built, counting_train):
    net, cache = built
    assert counting_train == [1]
    pt, side = F.artefact_paths("digits", net.key, cache)
    assert pt.parent == cache / "features" and pt.name == f"digits-{net.key}.pt" and side.suffix == ".json"
    info = json.loads(side.read_text())
    train = load("digits", "train")
    assert info["key"] == net.key and info["recipe"] == TINY.to_dict() and info["arch_version"] == F.ARCH_VERSION
    assert info["train_fingerprint"] == train.fingerprint and info["n_train"] == len(train)
    assert info["eval_fingerprint"] == load("digits", "test").fingerprint
    assert info["weights_sha256"] == F.file_sha256(pt) and info["torch_version"] == torch.__version__
    assert info["train_seconds"] > 0 and info["device"] == "cpu"
    assert 0.8 < info["test_accuracy"] <= 1.0  # 3 tiny epochs on 8x8 digits: 0.94
    assert net.key == F.feature_net_key("digits", TINY, train.fingerprint, (1, 8, 8), 10)
    assert not list((cache / "features").glob(".*tmp"))  # no temp files left behind


def test_reload_by_hash_without_retraining(built, counting_train):
    net, cache = built
    x = load("digits", "test").tensor()[:50]
    mtime = F.artefact_paths("digits", net.key, cache)[0].stat().st_mtime_ns
    again = F.load_feature_net("digits", cache, spec=TINY)
    same = F.build_feature_net("digits", cache, spec=TINY, progress=False)  # reuses the artefact
    assert counting_train == [1]
    assert again.key == same.key == net.key
    assert F.artefact_paths("digits", net.key, cache)[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.features(x), net.features(x))
    np.testing.assert_array_equal(again.class_probs(x), net.class_probs(x))


def test_training_is_deterministic(built, counting_train):
    net, cache = built
    pt, side = F.artefact_paths("digits", net.key, cache)
    sha = json.loads(side.read_text())["weights_sha256"]
    rebuilt = F.build_feature_net("digits", cache, spec=TINY, progress=False, force=True)
    assert counting_train == [1, 1]
    a = torch.load(pt, weights_only=True)["state_dict"]
    for name, t in net.module.state_dict().items():
        assert torch.equal(a[name], t), name
    assert json.loads(side.read_text())["weights_sha256"] == sha and rebuilt.key == net.key


def test_recipe_or_data_change_gives_another_key():
    fp = load("digits", "train").fingerprint
    base = F.feature_net_key("digits", TINY, fp, (1, 8, 8), 10)
    changed = [
        F.feature_net_key("digits", F.FeatureNetSpec(**{**TINY.to_dict(), "epochs": 4}), fp, (1, 8, 8), 10),
        F.feature_net_key("digits", F.FeatureNetSpec(**{**TINY.to_dict(), "seed": 1}), fp, (1, 8, 8), 10),
        F.feature_net_key("digits", F.FeatureNetSpec(**{**TINY.to_dict(), "lr": 1e-3}), fp, (1, 8, 8), 10),
        F.feature_net_key("digits", TINY, "other-fingerprint", (1, 8, 8), 10),
        F.feature_net_key("mnist", TINY, fp, (1, 8, 8), 10),
    ]
    assert len({base, *changed}) == 6
    assert F.feature_net_key("digits", F.FeatureNetSpec(**TINY.to_dict()), fp, (1, 8, 8), 10) == base


def test_missing_artefact_names_the_build_command(tmp_path, counting_train):
    with pytest.raises(EvalkitError, match=r"no feature network for 'digits'.*`evalkit features build digits --cache-dir"):
        F.load_feature_net("digits", tmp_path, spec=TINY)
    assert counting_train == []
    net = F.load_feature_net("digits", tmp_path, spec=TINY, build_if_missing=True, progress=False)
    assert counting_train == [1] and F.load_feature_net("digits", tmp_path, spec=TINY).key == net.key


def test_default_cache_dir_is_evalkit_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "c"))
    assert F.artefact_paths("digits", "abc")[0] == tmp_path / "c" / "features" / "digits-abc.pt"
    with pytest.raises(EvalkitError, match=r"`evalkit features build digits`"):
        F.load_feature_net("digits", spec=TINY)


def test_corrupted_or_missing_weights_are_detected(built):
    net, cache = built
    pt, side = F.artefact_paths("digits", net.key, cache)
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(EvalkitError, match=r"corrupted.*SHA-256.*does not match.*--force"):
        F.load_feature_net("digits", cache, spec=TINY)
    pt.unlink()
    with pytest.raises(EvalkitError, match=r"weights .* are missing"):
        F.load_feature_net("digits", cache, spec=TINY)
    side.write_text("{not json")
    with pytest.raises(EvalkitError, match="unreadable"):
        F.load_feature_net("digits", cache, spec=TINY)


def test_features_and_probs_shapes_and_bad_inputs(built):
    net, _ = built
    x = load("digits", "test").tensor()[:30]
    f, p = net.features(x, batch_size=7), net.class_probs(x.numpy())
    assert f.dtype == np.float64 and f.shape == (30, 16) and (f >= 0).all()
    assert p.dtype == np.float64 and p.shape == (30, 10)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(net.features(x), f, rtol=1e-6, atol=1e-6)  # batching
    bad = x.clone()
    bad[3, 0, 2, 2] = float("nan")
    with pytest.raises(EvalkitError, match="NaN"):
        net.features(bad)
    with pytest.raises(EvalkitError, match=r"outside \[0, 1\].*\(x \+ 1\) / 2"):
        net.features(x * 2 - 1)
    with pytest.raises(EvalkitError, match=r"shape \[N, 1, 8, 8\].*\[30, 1, 28, 28\]"):
        net.features(torch.zeros(30, 1, 28, 28))
    with pytest.raises(EvalkitError, match=r"shape \[N, 1, 8, 8\]"):
        net.features(x[0])
    with pytest.raises(EvalkitError, match="uint8 with x.float"):
        net.features((x * 255).to(torch.uint8))
    with pytest.raises(EvalkitError, match="empty"):
        net.features(x[:0])


def test_any_image_shape_with_in_memory_sets(tmp_path, counting_train):
    train, test = synthetic_set(300), synthetic_set(90, seed=1, split="test")
    spec = F.FeatureNetSpec(channels=(4, 8), feature_dim=8, epochs=3, batch_size=32, lr=3e-3)
    net = F.build_feature_net("synth", tmp_path, spec=spec, train_set=train, eval_set=test, progress=False)
    assert net.image_shape == (3, 12, 10) and net.n_classes == 3 and net.feature_dim == 8
    assert net.info["test_accuracy"] > 0.9
    assert net.features(test).shape == (90, 8)  # an ImageSet is accepted too
    assert F.load_feature_net("synth", tmp_path, spec=spec, train_set=train).key == net.key
    assert counting_train == [1]
    with pytest.raises(EvalkitError, match="at least 4x4"):
        F.LeNet((1, 3, 8), 2)
    with pytest.raises(EvalkitError, match="kernel_size must be odd"):
        F.FeatureNetSpec(kernel_size=4)


def test_sample_quality_dict(built):
    net, _ = built
    test = load("digits", "test").tensor()
    real, fake_good = test[:150], test[150:]
    res = F.sample_quality(fake_good, real, net, seed=0, kid_subsets=10, kid_subset_size=100)
    assert json.loads(json.dumps(res)) == res
    assert res["n_samples"] == 150 and res["n_real"] == 150 and res["feature_net"] == net.key
    assert res["kid_subset_size"] == 100 and res["kid_subsets"] == 10 and res["k"] == 3
    assert res["modes_covered"] == 10 and sum(res["mode_counts"]) == 150 and res["mode_kl"] < 0.1
    assert res["precision"] > 0.8 and res["recall"] > 0.8
    # degenerate samples: one repeated image -> one mode, low recall, large FD / KID
    collapsed = test[:1].repeat(150, 1, 1, 1)
    bad = F.sample_quality(collapsed, real, net, seed=0, kid_subsets=10, kid_subset_size=100)
    assert bad["modes_covered"] == 1 and bad["mode_kl"] == pytest.approx(np.log(10))
    assert bad["recall"] < 0.1 and bad["fd"] > 5 * res["fd"] and bad["kid_mean"] > 5 * res["kid_mean"]
    # same seed -> same numbers (timings aside)
    again = F.sample_quality(fake_good, real, net, seed=0, kid_subsets=10, kid_subset_size=100)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in res.items() if k != "seconds"}
    with pytest.raises(EvalkitError, match="samples has 3 images"):
        F.sample_quality(test[:3], real, net)
    with pytest.raises(EvalkitError, match="samples has values outside"):
        F.sample_quality(fake_good * 2, real, net)


# ---------------------------------------------------------------- real data


def _real_root(name: str) -> Path:
    cands = [Path(_CALLER_DATA)] if _CALLER_DATA else []
    cands.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for c in cands:
        if (c / name).is_dir():
            return c
    pytest.skip(f"real {name} data not found in {', '.join(map(str, cands))}: set EVALKIT_DATA to a directory holding {name}/")


@pytest.mark.data
def test_real_mnist_small_recipe(tmp_path):
    """The pipeline on real MNIST: a small net on 3000 training images separates real from noise."""
    root = _real_root("mnist")
    train = load("mnist", "train", data_dir=root).subset(slice(0, 3000))
    test = load("mnist", "test", data_dir=root).subset(slice(0, 1000))
    spec = F.FeatureNetSpec(channels=(8, 16), feature_dim=32, epochs=2, batch_size=64, lr=2e-3)
    net = F.build_feature_net("mnist", tmp_path, root, spec=spec, train_set=train, eval_set=test, progress=False)
    assert net.info["test_accuracy"] > 0.85 and net.image_shape == (1, 28, 28)
    x = test.tensor()
    real_vs_real = F.sample_quality(x[:500], x[500:], net, kid_subsets=10, kid_subset_size=200)
    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    real_vs_noise = F.sample_quality(noise, x[500:], net, kid_subsets=10, kid_subset_size=200)
    assert real_vs_real["modes_covered"] == 10 and real_vs_real["precision"] > 0.8
    # noise maps to a tight clump of features: far in FD / KID, and it covers none of the real manifold
    # (its precision may still be high: a few outlying real digits have large k-NN radii)
    assert real_vs_noise["fd"] > 10 * real_vs_real["fd"] and real_vs_noise["kid_mean"] > 10 * real_vs_real["kid_mean"]
    assert real_vs_noise["recall"] < 0.05 and real_vs_real["recall"] > 0.8
