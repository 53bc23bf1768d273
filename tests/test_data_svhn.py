"""SVHN loader (evalkit.data.svhn) on tiny fake .mat files; the real files are not on this machine."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from evalkit.cli import main
from evalkit.data import DataError, fetch, load, verify
from evalkit.data import registry
from evalkit.data import svhn as svhnmod

N = {svhnmod.TRAIN: 14, svhnmod.TEST: 6, svhnmod.EXTRA: 5}
N_VALID = 4


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    monkeypatch.delenv("EVALKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _write_mat(path, n: int, seed: int) -> dict:
    """A file in the SVHN layout: X uint8 [32, 32, 3, n], y [n, 1] in 1..10 (10 = digit 0)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).astype(np.uint8)[:, None]  # 1..10, so 10 appears
    scipy.io.savemat(str(path), {"X": x, "y": y})
    return {"X": x, "y": y, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


@pytest.fixture
def fake_files(tmp_path):
    """Fake train/test/extra .mat files in tmp_path/src (the real registry hashes do not match them)."""
    src = tmp_path / "src"
    src.mkdir()
    return {"src": src, **{fn: _write_mat(src / fn, n, seed) for seed, (fn, n) in enumerate(N.items())}}


@pytest.fixture
def tiny_svhn(fake_files, tmp_path, monkeypatch):
    """The fake files installed in tmp_path/data/svhn, with the registry pinned to their hashes
    (and file:// URLs), the expected counts and the validation size shrunk to match."""
    for name in ("svhn", "svhn-extra"):
        spec = registry.DATASETS[name]
        files = tuple(dataclasses.replace(f, sha256=(fake_files[f.filename]["sha256"],), size=None,
                                          urls=((fake_files["src"] / f.filename).as_uri(),)) for f in spec.files)
        monkeypatch.setitem(registry.DATASETS, name, dataclasses.replace(spec, files=files))
    monkeypatch.setattr(svhnmod, "EXPECTED_COUNTS", dict(N))
    monkeypatch.setattr(svhnmod, "N_VALID", N_VALID)
    data = tmp_path / "data"
    (data / "svhn").mkdir(parents=True)
    for fn in N:
        (data / "svhn" / fn).write_bytes((fake_files["src"] / fn).read_bytes())
    return {**fake_files, "data": data}


def _nchw(x):  # the loader's documented layout, written out index by index for one image
    return np.stack([x[:, :, c] for c in range(3)])


# ----------------------------------------------------------------------------- parsing + splits
def test_read_mat_layout_and_labels(fake_files):
    images, labels = svhnmod.read_mat(fake_files["src"] / svhnmod.TRAIN)
    x, y = fake_files[svhnmod.TRAIN]["X"], fake_files[svhnmod.TRAIN]["y"]
    assert images.shape == (14, 3, 32, 32) and images.dtype == np.uint8 and images.flags.c_contiguous
    for i in (0, 5, 13):
        np.testing.assert_array_equal(images[i], _nchw(x[..., i]))
    assert images[2, 1, 3, 7] == x[3, 7, 1, 2]  # [n, channel, row, col] <- X[row, col, channel, n]
    assert labels.dtype == np.int64 and labels.tolist() == [(v % 10) for v in y[:, 0].tolist()]
    assert 0 in labels and labels.max() <= 9 and 10 not in labels


def test_load_splits_through_public_api(tiny_svhn):
    data = tiny_svhn["data"]
    sets = {s: load("svhn", s, data_dir=data) for s in ("train", "valid", "test", "train-full")}
    assert {s: len(v) for s, v in sets.items()} == {"train": 10, "valid": 4, "test": 6, "train-full": 14}
    full, x = sets["train-full"], tiny_svhn[svhnmod.TRAIN]["X"]
    assert full.images.shape == (14, 3, 32, 32) and full.image_shape == (3, 32, 32) and full.classes == [str(i) for i in range(10)]
    np.testing.assert_array_equal(full.images[13], _nchw(x[..., 13]))
    np.testing.assert_array_equal(sets["train"].images, full.images[:10])
    np.testing.assert_array_equal(sets["valid"].images, full.images[10:])  # the last N_VALID of train_32x32
    np.testing.assert_array_equal(sets["valid"].labels, full.labels[10:])
    test_x = tiny_svhn[svhnmod.TEST]["X"]
    np.testing.assert_array_equal(sets["test"].images, np.stack([_nchw(test_x[..., i]) for i in range(6)]))
    assert sets["test"].labels.tolist() == [1, 2, 3, 4, 5, 6]
    assert len({v.fingerprint for v in sets.values()}) == 4
    assert load("svhn", "valid", data_dir=data).fingerprint == sets["valid"].fingerprint
    t = sets["test"].tensor()
    assert t.shape == (6, 3, 32, 32) and 0.0 <= float(t.min()) and float(t.max()) <= 1.0


def test_svhn_extra_appends_extra_to_training_splits_only(tiny_svhn):
    data = tiny_svhn["data"]
    plain = {s: load("svhn", s, data_dir=data) for s in ("train", "valid", "test", "train-full")}
    ext = {s: load("svhn-extra", s, data_dir=data) for s in ("train", "valid", "test", "train-full")}
    assert {s: len(v) for s, v in ext.items()} == {"train": 15, "valid": 4, "test": 6, "train-full": 19}
    extra_x = tiny_svhn[svhnmod.EXTRA]["X"]
    np.testing.assert_array_equal(ext["train"].images[:10], plain["train"].images)
    np.testing.assert_array_equal(ext["train"].images[10:], np.stack([_nchw(extra_x[..., i]) for i in range(5)]))
    np.testing.assert_array_equal(ext["train-full"].images[:14], plain["train-full"].images)
    for s in ("valid", "test"):
        np.testing.assert_array_equal(ext[s].images, plain[s].images)
        np.testing.assert_array_equal(ext[s].labels, plain[s].labels)
    assert ext["train"].fingerprint != plain["train"].fingerprint


def test_parse_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.mat"
    scipy.io.savemat(str(p), {"Z": np.zeros(3)})
    with pytest.raises(DataError, match="has no X / y array") as e:
        svhnmod.read_mat(p)
    assert str(p) in str(e.value)
    scipy.io.savemat(str(p), {"X": np.zeros((28, 28, 1, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(DataError, match=r"expected \(32, 32, 3, N\)"):
        svhnmod.read_mat(p)
    scipy.io.savemat(str(p), {"X": np.zeros((32, 32, 3, 2)), "y": np.ones((2, 1))})
    with pytest.raises(DataError, match="expected uint8"):
        svhnmod.read_mat(p)
    scipy.io.savemat(str(p), {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))})
    with pytest.raises(DataError, match="y has shape"):
        svhnmod.read_mat(p)
    scipy.io.savemat(str(p), {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[3], [11]])})
    with pytest.raises(DataError, match="1..10"):
        svhnmod.read_mat(p)
    p.write_bytes(b"not a mat file at all")
    with pytest.raises(DataError, match="cannot read"):
        svhnmod.read_mat(p)


def test_count_mismatch(tiny_svhn, monkeypatch):
    monkeypatch.setattr(svhnmod, "EXPECTED_COUNTS", {**N, svhnmod.TRAIN: 73257})
    with pytest.raises(DataError, match="holds 14 images, expected 73257"):
        load("svhn", "train", data_dir=tiny_svhn["data"])


# ----------------------------------------------------------------------------- hashes, messages
def test_fake_file_rejected_by_real_checksums(fake_files, tmp_path):
    """With the registry's real SHA-256s, a file that is not the official one is refused."""
    data = tmp_path / "data"
    (data / "svhn").mkdir(parents=True)
    for fn in (svhnmod.TRAIN, svhnmod.TEST):
        (data / "svhn" / fn).write_bytes((fake_files["src"] / fn).read_bytes())
    with pytest.raises(DataError) as e:
        load("svhn", "test", data_dir=data)
    msg = str(e.value)
    assert "SHA-256 mismatch" in msg and str(data / "svhn" / svhnmod.TRAIN) in msg
    assert registry.DATASETS["svhn"].file(svhnmod.TRAIN).sha256[0] in msg and fake_files[svhnmod.TRAIN]["sha256"] in msg
    assert f"evalkit data fetch svhn --data-dir {data}" in msg
    st = {s.file: s.status for s in verify(data_dir=data, names=["svhn"])}
    assert st == {svhnmod.TRAIN: "corrupt", svhnmod.TEST: "corrupt"}


def test_missing_files_message(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("EVALKIT_DATA", str(data))
    with pytest.raises(DataError) as e:
        load("svhn", "train")
    msg = str(e.value)
    assert "'svhn'" in msg and svhnmod.TRAIN in msg and svhnmod.TEST in msg and svhnmod.EXTRA not in msg
    assert str(data / "svhn") in msg and "EVALKIT_DATA" in msg and "evalkit data fetch svhn" in msg


def test_svhn_extra_missing_only_extra(tiny_svhn):
    data = tiny_svhn["data"]
    (data / "svhn" / svhnmod.EXTRA).unlink()
    assert len(load("svhn", "train", data_dir=data)) == 10  # svhn does not need the extra file
    with pytest.raises(DataError) as e:
        load("svhn-extra", "train", data_dir=data)
    msg = str(e.value)
    assert f"missing file {svhnmod.EXTRA}." in msg and "evalkit data fetch svhn-extra" in msg


def test_registry_entries():
    s, x = registry.DATASETS["svhn"], registry.DATASETS["svhn-extra"]
    assert [f.filename for f in s.files] == [svhnmod.TRAIN, svhnmod.TEST]
    assert [f.filename for f in x.files] == [svhnmod.TRAIN, svhnmod.TEST, svhnmod.EXTRA]
    assert s.dirname == x.dirname == "svhn" and s.shape == (3, 32, 32) and len(s.classes) == 10
    for f in x.files:
        assert f.urls == (f"http://ufldl.stanford.edu/housenumbers/{f.filename}",)
        assert len(f.sha256) == 1 and len(f.sha256[0]) == 64 and f.size
    assert s.file(svhnmod.TEST).accepts("CDCE80DFB2A2C4C6160906D0BD7C68EC5A99D7CA4831AFA54F09182025B6A75B")
    assert s.split_sizes == {"train": 63257, "valid": 10000, "train-full": 73257, "test": 26032}
    assert x.split_sizes["train-full"] == 73257 + 531131 and x.split_sizes["test"] == 26032
    assert svhnmod.EXPECTED_COUNTS[svhnmod.TRAIN] - svhnmod.N_VALID == s.split_sizes["train"]


# ----------------------------------------------------------------------------- fetch, CLI
def test_fetch_svhn_skips_extra_then_svhn_extra_adds_it(tiny_svhn, tmp_path):
    dest = tmp_path / "fetched"
    paths = fetch("svhn", data_dir=dest, progress=False)
    assert sorted(p.name for p in paths) == [svhnmod.TEST, svhnmod.TRAIN]
    assert sorted(os.listdir(dest / "svhn")) == [svhnmod.TEST, svhnmod.TRAIN]  # no extra, no temp files
    assert len(load("svhn", "valid", data_dir=dest)) == N_VALID
    calls = []

    def opener(url):
        calls.append(url)
        return open(url.replace("file://", ""), "rb")

    fetch("svhn-extra", data_dir=dest, progress=False, opener=opener)
    assert [u.rsplit("/", 1)[1] for u in calls] == [svhnmod.EXTRA]  # train/test present and verified
    assert len(load("svhn-extra", "train", data_dir=dest)) == 15
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        fetch("svhn", data_dir=tmp_path / "other", progress=False, opener=lambda url: io.BytesIO(b"html error page"))


def test_cli_verify_and_list_show_svhn_missing(tmp_path):
    res = CliRunner().invoke(main, ["data", "verify", "svhn", "svhn-extra", "--data-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output  # missing is not an error; corrupt is
    lines = [ln.split() for ln in res.output.splitlines()[1:]]
    assert ["missing", "svhn", "0/2", "files", "ok"] in lines and ["missing", "svhn-extra", "0/3", "files", "ok"] in lines
    assert ["missing:", svhnmod.TRAIN] in lines and ["missing:", svhnmod.EXTRA] in lines
    # each missing set says how to get it
    assert f"get it with: evalkit data fetch svhn --data-dir {tmp_path}" in res.output
    assert f"get it with: evalkit data fetch svhn-extra --data-dir {tmp_path}" in res.output
    res = CliRunner().invoke(main, ["data", "verify", "bsd68", "--data-dir", str(tmp_path)])
    assert "no download URL" in res.output and str(tmp_path / "BSD68") in res.output
    rows = {r["name"]: r for r in registry.describe(data_dir=tmp_path)}
    assert rows["svhn"]["status"] == rows["svhn-extra"]["status"] == "missing"
    assert rows["svhn"]["directory"] == str(tmp_path / "svhn") and rows["svhn"]["shape"] == (3, 32, 32)
