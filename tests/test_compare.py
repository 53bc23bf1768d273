"""``evalkit compare A B`` against the metric functions called directly on the same features; the
image / array reader's rules; ``frechet_distance(a, b)``; KID's subset-size warning and refusal; the
FID Inception-v3 architecture on random weights. Everything runs on the embedded 8x8 digits."""
from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from evalkit.cli import main
from evalkit.compare import parzen_split
from evalkit.data import load
from evalkit.errors import EvalkitError
from evalkit.image_files import read_images
from evalkit.metrics import (
    KIDSubsetSizeWarning,
    frechet_distance,
    frechet_distance_from_features,
    kernel_inception_distance,
    parzen_log_likelihood,
    precision_recall,
)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _json_out(r) -> dict:
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def digits_u8():
    test = np.asarray(load("digits", "test").images)
    train = np.asarray(load("digits", "train").images)
    return train[:80], test[:60]  # uint8 [N, 1, 8, 8]


def _write_folder(path, images_u8):
    path.mkdir()
    for i, im in enumerate(images_u8):
        Image.fromarray(im[0]).save(path / f"{i:03d}.png")
    return path


# ---------------------------------------------------------------- frechet_distance(a, b)
def test_frechet_distance_on_two_feature_arrays_equals_the_moment_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(40, 6)) * 1.3 + 0.2
    two = frechet_distance(a, b)
    four = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert two == pytest.approx(four, rel=1e-9) and two > 0.1
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(four, rel=1e-9)
    assert two == pytest.approx(frechet_distance_from_features(a, b), rel=1e-12)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(TypeError, match="two feature matrices"):
        frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0))
    with pytest.raises(ValueError, match="feature matrix"):
        frechet_distance(a.mean(0), b.mean(0))  # two vectors are neither form


# ---------------------------------------------------------------- KID subset size
def test_kid_warns_and_records_a_reduced_subset_size_and_refuses_one():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    with pytest.warns(KIDSubsetSizeWarning, match="reduced from 1000 to 30.*std over subsets is 0"):
        res = kernel_inception_distance(a, b, subsets=5, subset_size=1000)
    assert res.subset_size == 30 and res.requested_subset_size == 1000
    assert "reduced from 1000 to 30" in res.note and res.to_dict()["note"] == res.note
    assert res.to_dict()["requested_subset_size"] == 1000 and res.std < 1e-12  # why the note says so
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when the subset size fits
        ok = kernel_inception_distance(a, b, subsets=5, subset_size=10)
    assert ok.note is None and ok.subset_size == ok.requested_subset_size == 10 and ok.std > 0
    with pytest.raises(ValueError, match="subset_size must be at least 2"):
        kernel_inception_distance(a, b, subset_size=1)
    r = cli("compare", "x.npy", "y.npy", "--kid-subset-size", 1)
    assert r.exit_code == 2 and "kid-subset-size" in (r.output)


# ---------------------------------------------------------------- reading images
def test_reader_folders_and_arrays(tmp_path, digits_u8):
    fake, real = digits_u8
    folder = _write_folder(tmp_path / "real", real)
    im = read_images(str(folder))
    assert im.images.dtype == np.float32 and im.images.shape == (60, 1, 8, 8)
    np.testing.assert_allclose(im.images, real / 255.0, atol=1e-7)
    # an RGB folder gives 3 channels
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    for i in range(3):
        Image.fromarray(np.full((5, 4, 3), 10 * i, np.uint8)).save(rgb / f"{i}.png")
    assert read_images(str(rgb)).images.shape == (3, 3, 5, 4)
    # channels-last uint8, channels-first float, [N, H, W], npz with one array or a named one
    np.save(tmp_path / "hwc.npy", fake.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(read_images(str(tmp_path / "hwc.npy")).images, fake / 255.0, atol=1e-7)
    np.save(tmp_path / "nhw.npy", (fake[:, 0] / 255.0).astype(np.float64))
    assert read_images(str(tmp_path / "nhw.npy")).images.shape == (80, 1, 8, 8)
    np.savez(tmp_path / "two.npz", x=fake, y=real)
    assert read_images(f"{tmp_path / 'two.npz'}:y").images.shape == (60, 1, 8, 8)
    with pytest.raises(EvalkitError, match="holds 2 arrays"):
        read_images(str(tmp_path / "two.npz"))


@pytest.mark.parametrize("case", ["empty", "mixed_sizes", "mixed_gray_rgb", "nan", "range", "pickle", "alpha", "dtype"])
def test_reader_refuses_bad_inputs(tmp_path, case):
    d = tmp_path / "d"
    d.mkdir()
    if case == "empty":
        (d / "readme.txt").write_text("no images")
        target, msg = d, "no PNG or JPEG images"
    elif case == "mixed_sizes":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "a.png")
        Image.fromarray(np.zeros((9, 8), np.uint8)).save(d / "b.png")
        target, msg = d, "different sizes"
    elif case == "mixed_gray_rgb":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "a.png")
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "b.png")
        target, msg = d, "mixes gray and colour"
    elif case == "alpha":
        Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(d / "a.png")
        target, msg = d, "alpha channel"
    elif case == "nan":
        a = np.full((4, 1, 8, 8), 0.5)
        a[2, 0, 1, 1] = np.nan
        np.save(d / "x.npy", a)
        target, msg = d / "x.npy", "NaN or infinite"
    elif case == "range":
        np.save(d / "x.npy", np.full((4, 1, 8, 8), 200.0))
        target, msg = d / "x.npy", r"outside \[0, 1\]"
    elif case == "pickle":
        np.save(d / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        target, msg = d / "x.npy", "never unpickles"
    else:
        np.save(d / "x.npy", np.zeros((4, 1, 8, 8), np.int64))
        target, msg = d / "x.npy", "not an image array"
    with pytest.raises(EvalkitError, match=msg):
        read_images(str(target))
    r = cli("compare", target, target, "--no-progress")
    assert r.exit_code != 0 and "Traceback" not in r.output


# ---------------------------------------------------------------- compare == direct metric calls
def test_compare_folder_and_array_equals_direct_metric_calls(tmp_path, digits_u8):
    from evalkit.features import load_feature_net

    fake, real = digits_u8
    folder = _write_folder(tmp_path / "real", real)
    np.save(tmp_path / "fake.npy", fake)
    cache = tmp_path / "cache"
    r = cli("compare", tmp_path / "fake.npy", folder, "--kid-subsets", 7, "--kid-subset-size", 40, "--seed", 3,
            "--cache-dir", cache, "--no-progress", "--json")
    assert r.exit_code == 0, r.output
    out = _json_out(r)
    net = load_feature_net("digits", cache)  # built by the command, read back from the cache
    fa = net.features(torch.from_numpy(fake / np.float32(255.0)))
    fb = net.features(torch.from_numpy(real / np.float32(255.0)))
    assert out["feature_network"]["name"] == "evalkit-lenet" and out["feature_network"]["key"] == net.key
    assert "not Inception" in out["feature_network"]["description"] and out["comparable_with_inception_fid"] is False
    assert any("not comparable with Inception-based FID" in n for n in out["notes"])
    assert out["fd"] == pytest.approx(frechet_distance_from_features(fb, fa), rel=1e-6)
    kid = kernel_inception_distance(fb, fa, subsets=7, subset_size=40, seed=3)
    assert out["kid"]["mean"] == pytest.approx(kid.mean, rel=1e-6, abs=1e-12)
    assert out["kid"]["std"] == pytest.approx(kid.std, rel=1e-6, abs=1e-12) and out["kid"]["subset_size"] == 40
    pr = precision_recall(fb, fa, k=3)
    assert (out["precision"], out["recall"]) == (pytest.approx(pr.precision), pytest.approx(pr.recall))
    vi, ti = parzen_split(60, 3)
    assert vi.size == 30 and ti.size == 30 and not set(vi) & set(ti)
    p = parzen_log_likelihood(fake / 255.0, real[ti] / 255.0, real[vi] / 255.0, sigmas=np.logspace(-1, 0, 10))
    assert out["parzen"]["mean"] == pytest.approx(p.mean, rel=1e-5) and out["parzen"]["sigma"] == pytest.approx(p.sigma)
    assert "30 images choose sigma" in out["parzen"]["sigma_selection"]
    # the text output names the network and the sigma selection; a too-large KID subset warns and says so
    r = cli("compare", tmp_path / "fake.npy", folder, "--cache-dir", cache, "--no-progress")
    assert r.exit_code == 0, r.output
    assert "feature network: evalkit LeNet feature network of digits" in r.output
    assert "sigma selection: B split by a permutation seeded 0" in r.output
    assert "KID subset size reduced from 1000 to 60" in r.output and "not comparable with Inception-based" in r.output


def test_compare_different_shapes_skips_parzen_and_inception_needs_weights(tmp_path, digits_u8):
    fake, real = digits_u8
    np.save(tmp_path / "a.npy", fake)
    np.save(tmp_path / "b.npy", real)
    r = cli("compare", tmp_path / "a.npy", tmp_path / "b.npy", "--features", "inception", "--no-progress")
    assert r.exit_code == 2 and "--feature-weights" in (r.output)
    np.save(tmp_path / "c.npy", np.zeros((5, 3, 16, 16), np.uint8))
    r = cli("compare", tmp_path / "c.npy", tmp_path / "c.npy", "--no-progress")
    assert r.exit_code != 0 and "--dataset" in r.output


# ---------------------------------------------------------------- FID Inception-v3
def test_fid_inception_architecture_on_random_weights(tmp_path):
    from evalkit.fid_inception import FIDInceptionV3, InceptionFeatures, load_fid_inception

    torch.manual_seed(0)
    module = FIDInceptionV3()
    n_params = sum(p.numel() for p in module.parameters())
    assert 23_000_000 < n_params < 24_500_000  # Inception-v3 without aux logits, 1008 classes: ~23.9M
    net = InceptionFeatures(module, weights=None, sha256=None)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    f_all = net.features(x, batch_size=3)
    assert f_all.shape == (3, 2048) and f_all.dtype == np.float64 and np.isfinite(f_all).all()
    np.testing.assert_array_equal(f_all, net.features(x, batch_size=3))  # deterministic (same call twice)
    f_one = net.features(x, batch_size=1)  # batch-size invariance up to float rounding
    np.testing.assert_allclose(f_one, f_all, rtol=1e-4, atol=1e-5 * float(np.abs(f_all).max()))
    gray = net.features(x[:1, :1], batch_size=1)  # gray is repeated to three channels
    np.testing.assert_allclose(gray, net.features(x[:1, :1].expand(-1, 3, -1, -1), batch_size=1), rtol=1e-6, atol=1e-6)
    # a weights file round trip, with the SHA-256 check
    path = tmp_path / "w.pth"
    torch.save(module.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(EvalkitError, match="does not start with 6726825d"):
        load_fid_inception(path)
    with pytest.raises(EvalkitError, match="not the 0+ given"):
        load_fid_inception(path, sha256="0" * 64)
    loaded = load_fid_inception(path, sha256=digest)
    assert loaded.sha256 == digest and "Inception-v3 pool3" in loaded.describe()
    np.testing.assert_allclose(loaded.features(x[:1], batch_size=1), f_one[:1], rtol=1e-5, atol=1e-6)
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3)}, bad)
    with pytest.raises(EvalkitError, match="not the FID Inception-v3 weights"):
        load_fid_inception(bad, sha256=hashlib.sha256(bad.read_bytes()).hexdigest())
