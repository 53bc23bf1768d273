"""Tests for evalkit.data. Real-data tests are marked ``data`` and skip when files are absent."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import evalkit.data as ed
from evalkit.data import DataError, ImageSet, fetch, load, resolve_data_dir, to_float, verify
from evalkit.data import idx as idxmod
from evalkit.data import olivetti as olimod
from evalkit.data import registry


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test depends on the caller's EVALKIT_DATA / cache dir unless it asks for it."""
    monkeypatch.delenv("EVALKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


# ----------------------------------------------------------------------------- digits
def test_digits_splits_deterministic_disjoint():
    from evalkit.data import digits as dm

    sets = {s: load("digits", s) for s in ("train", "valid", "test", "train-full")}
    assert {s: len(v) for s, v in sets.items()} == {"train": 1197, "valid": 300, "test": 300, "train-full": 1497}
    tr, va, te = (set(dm.split_indices(s).tolist()) for s in ("train", "valid", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va | te == set(range(1797))
    assert set(dm.split_indices("train-full").tolist()) == tr | va
    # pinned: permutation of np.random.RandomState(0)
    assert dm.split_indices("train")[:6].tolist() == [1081, 1707, 927, 713, 262, 182]
    # deterministic
    again = load("digits", "train")
    assert np.array_equal(again.images, sets["train"].images)
    assert again.fingerprint == sets["train"].fingerprint
    assert len({v.fingerprint for v in sets.values()}) == 4
    np.testing.assert_array_equal(sets["train-full"].images[:1197], sets["train"].images)


def test_digits_values_and_tensor():
    from sklearn.datasets import load_digits

    ds = load("digits", "test")
    assert ds.images.dtype == np.uint8 and ds.images.shape == (300, 1, 8, 8)
    assert ds.labels.dtype == np.int64 and set(np.unique(ds.labels)) <= set(range(10))
    assert ds.image_shape == (1, 8, 8) and ds.classes == [str(i) for i in range(10)]
    assert ds.images.max() == 255 and ds.images.min() == 0
    raw = load_digits()
    from evalkit.data import digits as dm

    i = dm.split_indices("test")
    np.testing.assert_array_equal(ds.images[:, 0], np.floor(raw.images[i] * 255 / 16 + 0.5).astype(np.uint8))
    np.testing.assert_array_equal(ds.labels, raw.target[i])
    t = ds.tensor()
    assert t.dtype == torch.float32 and t.shape == (300, 1, 8, 8)
    assert float(t.min()) >= 0.0 and float(t.max()) == 1.0
    assert torch.equal(t, torch.from_numpy(ds.images.astype(np.float32) / 255))
    assert torch.equal(to_float(ds.images), t) and torch.equal(to_float(torch.tensor(ds.images)), t)
    with pytest.raises(TypeError):
        to_float(t)
    with pytest.raises(ValueError):  # read-only: shared arrays cannot be corrupted in place
        ds.images[0, 0, 0, 0] = 1


def test_subset_and_imageset_contract():
    ds = load("digits", "valid")
    a = ds.subset(slice(0, 10))
    b = ds.subset(np.arange(10))
    assert len(a) == len(b) == 10 and np.array_equal(a.images, b.images)
    assert a.fingerprint != ds.fingerprint and a.fingerprint != ds.subset(slice(0, 11)).fingerprint
    assert a.fingerprint == ds.subset(slice(0, 10)).fingerprint
    assert ds.subset(ds.labels == 3).labels.tolist() == [3] * int((ds.labels == 3).sum())
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "x"
    with pytest.raises(ValueError):
        ImageSet("x", "train", np.zeros((2, 8, 8), np.uint8), np.zeros(2, np.int64), [], "")


# ----------------------------------------------------------------------------- data dir
def test_resolve_data_dir(monkeypatch, tmp_path):
    assert resolve_data_dir() == tmp_path / "xdg-cache" / "evalkit" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir() == Path.home() / ".cache" / "evalkit" / "data"
    monkeypatch.setenv("EVALKIT_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_unknown_name_and_split():
    with pytest.raises(DataError) as e:
        load("cifar10", "train")
    assert "cifar10" in str(e.value) and "mnist" in str(e.value) and "digits" in str(e.value)
    with pytest.raises(DataError) as e:
        load("digits", "validation")
    msg = str(e.value)
    assert "validation" in msg and all(s in msg for s in ("train", "valid", "test", "train-full"))


# ----------------------------------------------------------------------------- synthetic idx
def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.astype(np.uint8).tobytes()


def _write_gz(path: Path, payload: bytes) -> str:
    with gzip.open(path, "wb") as f:
        f.write(payload)
    return hashlib.sha256(path.read_bytes()).hexdigest()


N_TRAIN, N_TEST = 12, 5


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """Synthetic MNIST-layout set in tmp_path/data/mnist with its own hash table."""
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    src.mkdir()
    arrays = {
        "train-images-idx3-ubyte.gz": (rng.integers(0, 256, (N_TRAIN, 28, 28)), idxmod.IMAGES_MAGIC),
        "train-labels-idx1-ubyte.gz": (np.arange(N_TRAIN) % 10, idxmod.LABELS_MAGIC),
        "t10k-images-idx3-ubyte.gz": (rng.integers(0, 256, (N_TEST, 28, 28)), idxmod.IMAGES_MAGIC),
        "t10k-labels-idx1-ubyte.gz": (np.arange(N_TEST)[::-1] % 10, idxmod.LABELS_MAGIC),
    }
    hashes = {fn: _write_gz(src / fn, _idx_bytes(a, m)) for fn, (a, m) in arrays.items()}
    spec = registry.DATASETS["mnist"]
    files = tuple(dataclasses.replace(f, sha256=(hashes[f.filename],), size=None,
                                      urls=((src / f.filename).as_uri(),)) for f in spec.files)
    monkeypatch.setitem(registry.DATASETS, "mnist", dataclasses.replace(spec, files=files))
    monkeypatch.setattr(idxmod, "SPLITS", {"train": ("train", 0, 9), "valid": ("train", 9, 12),
                                           "train-full": ("train", 0, 12), "test": ("test", 0, 5)})
    monkeypatch.setattr(idxmod, "EXPECTED_COUNTS", {"train": N_TRAIN, "test": N_TEST})
    data = tmp_path / "data"
    (data / "mnist").mkdir(parents=True)
    for fn in arrays:
        (data / "mnist" / fn).write_bytes((src / fn).read_bytes())
    return {"data": data, "src": src, "arrays": arrays, "hashes": hashes}


def test_idx_load_synthetic(tiny_mnist):
    data, arrays = tiny_mnist["data"], tiny_mnist["arrays"]
    tr = load("mnist", "train", data_dir=data)
    va = load("mnist", "valid", data_dir=data)
    te = load("mnist", "test", data_dir=data)
    full = load("mnist", "train-full", data_dir=data)
    assert (len(tr), len(va), len(te), len(full)) == (9, 3, 5, 12)
    assert tr.images.shape == (9, 1, 28, 28) and tr.images.dtype == np.uint8 and tr.labels.dtype == np.int64
    np.testing.assert_array_equal(full.images[:, 0], arrays["train-images-idx3-ubyte.gz"][0])
    np.testing.assert_array_equal(va.images, full.images[9:])
    np.testing.assert_array_equal(te.labels, arrays["t10k-labels-idx1-ubyte.gz"][0])
    assert tr.classes == [str(i) for i in range(10)]
    assert len({tr.fingerprint, va.fingerprint, te.fingerprint, full.fingerprint}) == 4
    assert load("mnist", "train", data_dir=data).fingerprint == tr.fingerprint


def test_parse_idx_errors(tmp_path):
    p = tmp_path / "x.gz"
    _write_gz(p, _idx_bytes(np.zeros(3), idxmod.LABELS_MAGIC))
    assert idxmod.parse_idx(p, idxmod.LABELS_MAGIC).shape == (3,)
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        idxmod.parse_idx(p, idxmod.IMAGES_MAGIC)
    _write_gz(p, _idx_bytes(np.zeros((2, 4, 4)), idxmod.IMAGES_MAGIC)[:-3])
    with pytest.raises(DataError, match="header says"):
        idxmod.parse_idx(p, idxmod.IMAGES_MAGIC)
    raw = tmp_path / "x.idx"  # uncompressed idx also accepted
    raw.write_bytes(_idx_bytes(np.ones((2, 4, 4)), idxmod.IMAGES_MAGIC))
    assert idxmod.parse_idx(raw, idxmod.IMAGES_MAGIC).sum() == 32


def test_idx_count_mismatch(tiny_mnist, monkeypatch):
    monkeypatch.setattr(idxmod, "EXPECTED_COUNTS", {"train": 60000, "test": 10000})
    with pytest.raises(DataError, match="expected 60000"):
        load("mnist", "train", data_dir=tiny_mnist["data"])


def test_missing_file_message(tiny_mnist, monkeypatch):
    data = tiny_mnist["data"]
    (data / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("EVALKIT_DATA", str(data))
    with pytest.raises(DataError) as e:
        load("mnist", "test")
    msg = str(e.value)
    assert "'mnist'" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert str(data / "mnist") in msg and "EVALKIT_DATA" in msg
    assert "evalkit data fetch mnist" in msg and "--data-dir" in msg
    assert "train-images" not in msg.split("\n")[0]  # only the missing file is named as missing
    # explicit argument: says so and the fetch command carries --data-dir
    with pytest.raises(DataError) as e:
        load("mnist", "test", data_dir=data)
    assert "given explicitly" in str(e.value) and f"evalkit data fetch mnist --data-dir {data}" in str(e.value)
    # default cache dir
    monkeypatch.delenv("EVALKIT_DATA")
    with pytest.raises(DataError) as e:
        load("mnist", "test")
    assert "default user cache" in str(e.value) and str(resolve_data_dir() / "mnist") in str(e.value)


def test_corrupt_file_message(tiny_mnist):
    data = tiny_mnist["data"]
    p = data / "mnist" / "train-images-idx3-ubyte.gz"
    load("mnist", "train", data_dir=data)  # warm the hash cache; then change size + mtime
    with open(p, "ab") as f:
        f.write(b"garbage")
    actual = hashlib.sha256(p.read_bytes()).hexdigest()
    with pytest.raises(DataError) as e:
        load("mnist", "train", data_dir=data)
    msg = str(e.value)
    assert str(p) in msg and "SHA-256 mismatch" in msg
    assert tiny_mnist["hashes"]["train-images-idx3-ubyte.gz"] in msg and actual in msg
    assert "evalkit data fetch mnist" in msg


def test_verify_and_describe(tiny_mnist):
    data = tiny_mnist["data"]
    (data / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    (data / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(b"bad")
    st = {s.file: s for s in verify(data_dir=data, names=["mnist"])}
    assert st["train-images-idx3-ubyte.gz"].status == "ok"
    assert st["t10k-labels-idx1-ubyte.gz"].status == "missing" and st["t10k-labels-idx1-ubyte.gz"].actual is None
    bad = st["t10k-images-idx3-ubyte.gz"]
    assert bad.status == "corrupt" and bad.actual == hashlib.sha256(b"bad").hexdigest()
    assert bad.expected == tiny_mnist["hashes"]["t10k-images-idx3-ubyte.gz"] and bad.path.parent == data / "mnist"
    allst = verify(data_dir=data)
    assert {s.dataset for s in allst} == {"mnist", "fashion-mnist", "olivetti", "svhn", "svhn-extra", "bsd68", "cbsd68", "set5", "set12", "set14", "kodak24", "mcmaster", "yale", "ckplus48", "jaffe", "celeba"}
    rows = {r["name"]: r for r in ed.describe(data_dir=data)}
    assert set(rows) >= {"digits", "mnist", "fashion-mnist", "olivetti"}
    assert rows["digits"]["present"] and rows["digits"]["status"] == "embedded"
    assert rows["mnist"]["status"] == "missing" and not rows["mnist"]["present"]  # missing wins over corrupt
    (data / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes((tiny_mnist["src"] / "t10k-labels-idx1-ubyte.gz").read_bytes())
    rows = {r["name"]: r for r in ed.describe(data_dir=data)}
    assert rows["mnist"]["status"] == "corrupt" and not rows["mnist"]["present"]
    assert rows["mnist"]["directory"] == str(data / "mnist")
    assert rows["fashion-mnist"]["status"] == "missing"
    for r in rows.values():
        assert r["description"] and r["licence"] and r["source"] and len(r["shape"]) == 3
        assert r["splits"] in (["train", "valid", "test", "train-full"], ["test"])  # ["test"]: restoration test sets


def test_registry_contents():
    m = registry.DATASETS["mnist"]
    assert [f.urls[0] for f in m.files][0] == "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz"
    assert all(f.urls[1].startswith("http://yann.lecun.com/exdb/mnist/") for f in m.files)
    assert registry.DATASETS["fashion-mnist"].classes[0] == "T-shirt/top"
    mat = registry.DATASETS["olivetti"].file("olivettifaces.mat")
    assert mat.urls == ("https://ndownloader.figshare.com/files/5976027",)
    assert mat.accepts("b612fb967f2dc77c9c62d3e1266e0c73d5fca46a4b8906c18e454d41af987794")
    assert mat.accepts("b1988d02c72fe5b8ee82b5ef3bb7982eafc74f1e1ff0ae0ade35061ad0af534d")
    assert all(len(h) == 64 for s in registry.DATASETS.values() for f in s.files for h in f.sha256)


# ----------------------------------------------------------------------------- fetch
def test_fetch_file_url_and_mirror_fallback(tiny_mnist, tmp_path):
    spec = registry.DATASETS["mnist"]
    dead = (tmp_path / "nowhere" / "x.gz").as_uri()
    files = tuple(dataclasses.replace(f, urls=(dead,) + f.urls) for f in spec.files)
    registry.DATASETS["mnist"] = dataclasses.replace(spec, files=files)  # restored by monkeypatch
    dest = tmp_path / "fetched"
    paths = fetch("mnist", data_dir=dest, progress=False)
    assert sorted(p.name for p in paths) == sorted(f.filename for f in spec.files)
    assert all(p.parent == dest / "mnist" for p in paths)
    assert sorted(os.listdir(dest / "mnist")) == sorted(f.filename for f in spec.files)  # no temp files left
    assert len(load("mnist", "test", data_dir=dest)) == N_TEST

    def refuse(url):
        raise AssertionError("should not download verified files")

    assert len(fetch("mnist", data_dir=dest, progress=False, opener=refuse)) == 4
    calls = []

    def counting(url):
        calls.append(url)
        return open(url.replace("file://", ""), "rb")

    fetch("mnist", data_dir=dest, force=True, progress=False, opener=counting)
    assert len(calls) == 4 + 4 and calls.count(dead) == 4  # dead mirror then good one, for each file


def test_fetch_failing_opener(tiny_mnist, tmp_path):
    def failing(url):
        raise OSError("Network is unreachable")

    dest = tmp_path / "fetched"
    with pytest.raises(DataError) as e:
        fetch("mnist", data_dir=dest, progress=False, opener=failing)
    msg = str(e.value)
    assert "Network is unreachable" in msg and registry.DATASETS["mnist"].files[0].urls[0] in msg
    assert "by hand" in msg and str(dest / "mnist") in msg
    assert list((dest / "mnist").iterdir()) == []


def test_fetch_hash_mismatch_leaves_nothing(tiny_mnist, tmp_path):
    import io

    dest = tmp_path / "fetched"
    with pytest.raises(DataError) as e:
        fetch("mnist", data_dir=dest, progress=False, opener=lambda url: io.BytesIO(b"not the file"))
    assert "SHA-256 mismatch" in str(e.value)
    assert list((dest / "mnist").iterdir()) == []


def test_fetch_digits_is_noop(tmp_path):
    assert fetch("digits", data_dir=tmp_path, progress=False) == []


# ----------------------------------------------------------------------------- olivetti (synthetic)
def test_olivetti_sources_orientation(tmp_path, monkeypatch):
    """All three accepted sources give the same upright uint8 faces."""
    import joblib
    import scipy.io

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 243, (400, 64, 64)).astype(np.uint8)
    faces[:, :8, :] = 242  # bright band at the TOP rows of every face: an orientation marker
    faces[:, :, :4] = 0  # dark band at the LEFT
    d = tmp_path / "olivetti"
    d.mkdir()
    cols = faces.reshape(400, -1, order="F").T  # MATLAB column-major: each column = one face
    scipy.io.savemat(d / olimod.MAT, {"faces": cols})
    joblib.dump(cols.T.copy(), d / olimod.PKZ, compress=3)  # scikit-learn's cache layout
    sk = cols.T.astype(np.float32) / 242.0  # scikit-learn's loader output
    np.save(d / olimod.NPY, sk.reshape(400, 64, 64).transpose(0, 2, 1))
    np.save(d / olimod.NPY_TARGET, np.repeat(np.arange(40), 10))
    expect = np.rint(faces.astype(np.float32) / 242 * 255).astype(np.uint8)
    for src in olimod.SOURCES:
        imgs, labels = olimod._read(d, src)
        np.testing.assert_array_equal(imgs, expect)
        assert labels.tolist() == np.repeat(np.arange(40), 10).tolist()
        assert (imgs[:, :8, 4:] == 255).all() and (imgs[:, :, :4] == 0).all()
    hashes = {fs.filename: (hashlib.sha256((d / fs.filename).read_bytes()).hexdigest(),)
              for fs in registry.DATASETS["olivetti"].files}
    spec = registry.DATASETS["olivetti"]
    monkeypatch.setitem(registry.DATASETS, "olivetti", dataclasses.replace(
        spec, files=tuple(dataclasses.replace(f, sha256=hashes[f.filename]) for f in spec.files)))
    _check_olivetti_splits(tmp_path)
    (d / olimod.MAT).unlink()  # falls back to the next source; same content fingerprint
    fp = load("olivetti", "test", data_dir=tmp_path).fingerprint
    for f in d.iterdir():
        f.unlink()
    with pytest.raises(DataError) as e:
        load("olivetti", "test", data_dir=tmp_path)
    assert "olivettifaces.mat" in str(e.value) and "olivetti_py3.pkz" in str(e.value)
    assert "evalkit data fetch olivetti" in str(e.value) and fp


def _check_olivetti_splits(root):
    sets = {s: load("olivetti", s, data_dir=root) for s in ("train", "valid", "test", "train-full")}
    assert {s: len(v) for s, v in sets.items()} == {"train": 280, "valid": 60, "test": 60, "train-full": 340}
    subj = {s: set(v.labels.tolist()) for s, v in sets.items()}
    assert (len(subj["train"]), len(subj["valid"]), len(subj["test"])) == (28, 6, 6)
    assert not (subj["train"] & subj["valid"]) and not (subj["train"] & subj["test"]) and not (subj["valid"] & subj["test"])
    assert subj["train-full"] == subj["train"] | subj["valid"]
    assert subj["test"] == {3, 0, 9, 19, 21, 38}  # RandomState(0).permutation(40)[34:]
    for v in sets.values():
        assert v.images.shape[1:] == (1, 64, 64) and v.images.dtype == np.uint8
    return sets


# ----------------------------------------------------------------------------- real data
def _real_root(name: str) -> Path:
    cands = [Path(os.environ["EVALKIT_DATA"])] if os.environ.get("EVALKIT_DATA") else []
    cands.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for c in cands:
        if (c / name).is_dir():
            return c
    pytest.skip(f"real {name} data not found in {', '.join(map(str, cands))}: set EVALKIT_DATA to a directory holding {name}/")


_CALLER_DATA = os.environ.get("EVALKIT_DATA")


def _real(name):
    """Root holding real ``name`` data: the caller's EVALKIT_DATA (captured at import, since the
    autouse fixture clears it), else shared/data next to the repository."""
    if _CALLER_DATA:
        os.environ["EVALKIT_DATA"] = _CALLER_DATA
    try:
        return _real_root(name)
    finally:
        os.environ.pop("EVALKIT_DATA", None)


@pytest.mark.data
def test_real_mnist():
    root = _real("mnist")
    sizes = {s: len(load("mnist", s, data_dir=root)) for s in ("train", "valid", "train-full", "test")}
    assert sizes == {"train": 50000, "valid": 10000, "train-full": 60000, "test": 10000}
    te = load("mnist", "test", data_dir=root)
    assert np.bincount(te.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    full = load("mnist", "train-full", data_dir=root)
    assert np.bincount(full.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert te.images.shape == (10000, 1, 28, 28) and te.images.max() == 255 and te.images.min() == 0
    assert all(s.status == "ok" for s in verify(data_dir=root, names=["mnist"]))


@pytest.mark.data
def test_real_fashion_mnist():
    root = _real("fashion-mnist")
    tr, te = load("fashion-mnist", "train", data_dir=root), load("fashion-mnist", "test", data_dir=root)
    assert tr.images.shape == (50000, 1, 28, 28) and te.images.shape == (10000, 1, 28, 28)
    assert np.bincount(te.labels).tolist() == [1000] * 10
    assert te.classes[9] == "Ankle boot" and len(te.classes) == 10
    assert all(s.status == "ok" for s in verify(data_dir=root, names=["fashion-mnist"]))


@pytest.mark.data
def test_real_olivetti():
    root = _real("olivetti")
    sets = _check_olivetti_splits(root)
    full = np.concatenate([sets["train-full"].images, sets["test"].images])
    assert len(full) == 400 and len({x.tobytes() for x in full}) == 400
    d = root / "olivetti"
    if (d / olimod.NPY).is_file():  # scikit-learn's upright output: orientation + values agree
        ref = np.load(d / olimod.NPY)
        tgt = np.load(d / olimod.NPY_TARGET)
        te = sets["test"]
        idx = np.flatnonzero(np.isin(tgt, list(set(te.labels.tolist()))))
        np.testing.assert_array_equal(te.labels, tgt[idx])
        assert np.abs(te.images[:, 0] / 255.0 - ref[idx]).max() <= 0.5 / 255 + 1e-6
    srcs = [s for s in olimod.SOURCES if all((d / f).is_file() for f in s)]
    arrays = [olimod._read(d, s)[0] for s in srcs]
    for a in arrays[1:]:
        np.testing.assert_array_equal(a, arrays[0])
