"""Folder-based image sets: restoration test sets (ImageList) and face sets (ImageSet + meta).

Synthetic tests always run; tests marked ``data`` need the real files (EVALKIT_DATA, else
shared/data next to the repository) and skip with the reason when they are absent.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evalkit.data import DataError, ImageList, ImageSet, fetch, load, restoration_split, verify
from evalkit.data import manifests as cksums
from evalkit.data import faces as facemod
from evalkit.data import registry
from evalkit.data import restoration as restmod
from evalkit.data.imagefiles import read_image
from evalkit.data.specs import manifest_digest
from evalkit.data.imagelist import gray_to_rgb, rgb_to_gray

RESTORATION = {"bsd68": ("BSD68", 68, 1), "cbsd68": ("CBSD68", 68, 3), "set5": ("Set5", 5, 3), "set12": ("Set12", 12, 1),
               "set14": ("Set14", 14, None), "kodak24": ("Kodak24", 24, 3), "mcmaster": ("McMaster", 18, 3)}
FACES = ("yale", "ckplus48", "jaffe", "celeba")
_CALLER_DATA = os.environ.get("EVALKIT_DATA")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    monkeypatch.delenv("EVALKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _real(folder: str) -> Path:
    """Data root holding the real ``folder``: the caller's EVALKIT_DATA (captured at import,
    the autouse fixture clears it), else shared/data beside the repository; else skip."""
    cands = [Path(_CALLER_DATA)] if _CALLER_DATA else []
    cands.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for c in cands:
        if (c / folder).is_dir():
            return c
    pytest.skip(f"real {folder}/ not found in {', '.join(map(str, cands))}: set EVALKIT_DATA to a directory holding {folder}/")


# ----------------------------------------------------------------------------- ImageSet meta
def test_imageset_meta_is_sliced_and_optional():
    x = np.arange(5 * 4, dtype=np.uint8).reshape(5, 1, 2, 2)
    old = ImageSet("x", "train", x, np.arange(5), ["a"] * 5, "fp")  # positional use as before
    assert old.meta == {} and "meta" not in repr(old) and len(old.subset([1, 2])) == 2
    ds = ImageSet("x", "train", x, np.arange(5), [], "fp", {"subject": np.array(list("aabbc")), "frame": [0, 1, 2, 3, 4]})
    sub = ds.subset(np.array([4, 0]))
    assert sub.meta["subject"].tolist() == ["c", "a"] and sub.meta["frame"].tolist() == [4, 0]
    assert ds.subset(ds.meta["subject"] == "b").labels.tolist() == [2, 3]
    with pytest.raises(ValueError):
        ds.meta["frame"][0] = 9  # read-only like images
    with pytest.raises(ValueError, match="one entry per image"):
        ImageSet("x", "train", x, np.arange(5), [], "", {"subject": np.arange(4)})


# ----------------------------------------------------------------------------- ImageList
def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8)


def test_luma_and_gray_to_rgb():
    px = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30], [255, 255, 255]], np.uint8)
    x = px.T[:, None, :]  # [3, 1, 5]
    y = rgb_to_gray(x)
    assert y.shape == (1, 1, 5) and y.dtype == np.uint8
    assert y.ravel().tolist() == [76, 150, 29, 18, 255]  # round(.299 R + .587 G + .114 B)
    assert rgb_to_gray(y) is y and np.array_equal(gray_to_rgb(y), np.repeat(y, 3, axis=0))
    assert rgb_to_gray(np.stack([x, x])).shape == (2, 1, 1, 5)  # batched [N, C, H, W]
    with pytest.raises(ValueError):
        rgb_to_gray(x.astype(np.float32))


def test_imagelist_basics():
    lst = ImageList("t", "test", [_rgb(6, 9, 0), _rgb(5, 4, 1)[:1]], ["a.png", "b.png"], "fp")
    assert len(lst) == 2 and lst.channels is None and lst.shapes == [(3, 6, 9), (1, 5, 4)]
    t = lst.tensor(0)
    assert t.shape == (1, 3, 6, 9) and t.dtype == torch.float32
    assert torch.equal(t[0], torch.from_numpy(lst.images[0].astype(np.float32) / 255))
    g, c = lst.as_gray(), lst.as_rgb()
    assert g.channels == 1 and c.channels == 3 and g.files == c.files == ("a.png", "b.png")
    np.testing.assert_array_equal(g.images[0], rgb_to_gray(lst.images[0]))
    np.testing.assert_array_equal(c.images[1], np.repeat(lst.images[1], 3, axis=0))
    assert len({lst.fingerprint, g.fingerprint, c.fingerprint}) == 3 and g.as_gray() is g
    sub = lst.subset([1])
    assert sub.files == ("b.png",) and sub.fingerprint != lst.fingerprint
    both = ImageList.concat("both", "train", [lst, sub])
    assert both.files == ("t/a.png", "t/b.png", "t/b.png") and len(both) == 3
    with pytest.raises(ValueError):
        lst.images[0][0, 0, 0] = 1
    with pytest.raises(ValueError, match="uint8"):
        ImageList("t", "test", [np.zeros((2, 3, 3), np.uint8)], ["x"])
    with pytest.raises(ValueError, match="file names"):
        ImageList("t", "test", [_rgb(2, 2, 0)], [])


def test_crop_patches_seeded_shape_and_content():
    lst = ImageList("t", "test", [_rgb(40, 30, 0), _rgb(20, 50, 1), _rgb(8, 8, 2)], ["a", "b", "tiny"], "fp")
    p = lst.crop_patches(16, 200, seed=3)
    assert isinstance(p, ImageSet) and p.images.shape == (200, 3, 16, 16) and p.images.dtype == np.uint8
    assert p.classes == ["a", "b", "tiny"] and set(p.labels.tolist()) == {0, 1}  # 8x8 image too small
    for k in (0, 57, 199):
        i, y, x = (int(p.meta[m][k]) for m in ("image", "top", "left"))
        np.testing.assert_array_equal(p.images[k], lst.images[i][:, y:y + 16, x:x + 16])
    q = lst.crop_patches(16, 200, seed=3)
    assert np.array_equal(p.images, q.images) and p.fingerprint == q.fingerprint
    r = lst.crop_patches(16, 200, seed=4)
    assert not np.array_equal(p.images, r.images) and r.fingerprint != p.fingerprint
    # positions: a has 25*15 = 375, b 5*35 = 175 -> about 68 % of patches from a
    assert 0.55 < float((lst.crop_patches(16, 2000, seed=0).labels == 0).mean()) < 0.8
    assert lst.crop_patches((4, 12), 5, seed=0).images.shape == (5, 3, 4, 12)
    with pytest.raises(ValueError, match="at least"):
        lst.crop_patches(64, 3, seed=0)
    mixed = ImageList("m", "test", [_rgb(20, 20, 0), _rgb(20, 20, 1)[:1]], ["c", "g"])
    with pytest.raises(ValueError, match="as_rgb"):
        mixed.crop_patches(8, 2, seed=0)
    assert mixed.as_gray().crop_patches(8, 2, seed=0).images.shape == (2, 1, 8, 8)


# ----------------------------------------------------------------------------- decoding
def test_read_image_modes(tmp_path):
    g = np.random.default_rng(0).integers(0, 256, (5, 7), dtype=np.uint8)
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(g).save(tmp_path / "g.png")
    Image.fromarray(rgb).save(tmp_path / "c.bmp")
    Image.fromarray(rgb).save(tmp_path / "c.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), g[None])
    np.testing.assert_array_equal(read_image(tmp_path / "c.bmp"), rgb.transpose(2, 0, 1))
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), rgb.transpose(2, 0, 1))
    # palette files: gray palette -> 1 channel with the palette's values; colour -> RGB
    idx = (np.arange(35).reshape(5, 7) % 4).astype(np.uint8)
    for name, pal, want_c in (("p_gray.tif", [v for i in range(256) for v in (255 - i,) * 3], 1),
                              ("p_col.gif", [v for i in range(256) for v in (i, 0, 255 - i)], 3)):
        im = Image.fromarray(idx, mode="P")
        im.putpalette(pal)
        im.save(tmp_path / name)
        a = read_image(tmp_path / name)
        assert a.shape == (want_c, 5, 7)
        np.testing.assert_array_equal(a[0], np.asarray(pal, np.uint8).reshape(-1, 3)[idx, 0])
    (tmp_path / "noext").write_bytes((tmp_path / "p_gray.tif").read_bytes())  # Yale: no extension
    assert read_image(tmp_path / "noext").shape == (1, 5, 7)
    rgba = np.dstack([rgb, np.full((5, 7), 255, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").shape == (3, 5, 7)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="transparency"):
        read_image(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="cannot read image") as e:
        read_image(tmp_path / "bad.png", dataset="set5")
    assert str(tmp_path / "bad.png") in str(e.value) and "'set5'" in str(e.value)


# ----------------------------------------------------------------------------- synthetic sets via the registry
SET5_NAMES = ("baby_GT.bmp", "bird_GT.bmp", "butterfly_GT.bmp", "head_GT.bmp", "woman_GT.bmp")


@pytest.fixture
def tiny_set5(tmp_path, monkeypatch):
    """Five small RGB BMPs with Set5's names in tmp_path/data/Set5, the registry pinned to their hashes."""
    d = tmp_path / "data" / "Set5"
    d.mkdir(parents=True)
    arrays = {}
    for k, fn in enumerate(SET5_NAMES):
        arrays[fn] = np.random.default_rng(k).integers(0, 256, (6 + k, 9, 3), dtype=np.uint8)
        Image.fromarray(arrays[fn]).save(d / fn)
    spec = registry.DATASETS["set5"]
    files = tuple(registry.FileSpec(fn, (hashlib.sha256((d / fn).read_bytes()).hexdigest(),)) for fn in SET5_NAMES)
    monkeypatch.setitem(registry.DATASETS, "set5", dataclasses.replace(spec, files=files, manifest=None))
    return {"data": tmp_path / "data", "dir": d, "arrays": arrays}


def test_synthetic_restoration_set_loads(tiny_set5):
    lst = load("set5", "test", data_dir=tiny_set5["data"])
    assert isinstance(lst, ImageList) and lst.files == SET5_NAMES and lst.channels == 3
    for fn, a in zip(lst.files, lst.images):
        np.testing.assert_array_equal(a, tiny_set5["arrays"][fn].transpose(2, 0, 1))
    assert load("set5", "test", data_dir=tiny_set5["data"]).fingerprint == lst.fingerprint
    with pytest.raises(DataError, match="no split 'train'. Valid splits: test"):
        load("set5", "train", data_dir=tiny_set5["data"])


def test_missing_file_message_folder_set(tiny_set5, monkeypatch):
    data = tiny_set5["data"]
    (tiny_set5["dir"] / "bird_GT.bmp").unlink()
    monkeypatch.setenv("EVALKIT_DATA", str(data))
    with pytest.raises(DataError) as e:
        load("set5", "test")
    msg = str(e.value)
    first = msg.splitlines()[0]
    assert "'set5'" in first and "bird_GT.bmp" in first and "baby_GT.bmp" not in first
    assert f"Looked in: {data / 'Set5'}" in msg and "EVALKIT_DATA" in msg
    assert "no canonical download URL" in msg and "Bevilacqua" in msg  # what the set is and why no fetch
    assert f"into {data / 'Set5'}/" in msg and "evalkit data fetch" not in msg
    # no folder at all: says so, lists a few names, not hundreds
    with pytest.raises(DataError) as e:
        load("ckplus48", "test", data_dir=data)
    first = str(e.value).splitlines()[0]
    assert f"folder {data / 'ckplus48'} does not exist" in first and "981 files" in first and "(976 more)" in first
    assert "contempt" in str(e.value) and str(data / "ckplus48" / "anger" / "S010_004_00000017.png") in str(e.value)
    with pytest.raises(DataError, match="no download URL") as e:
        fetch("jaffe", data_dir=data, progress=False)
    assert "JAFFE" in str(e.value) and str(data / "jaffe") in str(e.value)


def test_corrupt_file_message_folder_set(tiny_set5):
    data, d = tiny_set5["data"], tiny_set5["dir"]
    load("set5", "test", data_dir=data)  # warm the hash cache; then change one byte (and the mtime)
    p = d / "head_GT.bmp"
    b = bytearray(p.read_bytes())
    b[-1] ^= 0xFF
    p.write_bytes(bytes(b))
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    with pytest.raises(DataError) as e:
        load("set5", "test", data_dir=data)
    msg = str(e.value)
    assert f"file {p} is corrupt" in msg and "SHA-256 mismatch" in msg
    assert registry.DATASETS["set5"].file("head_GT.bmp").sha256[0] in msg and hashlib.sha256(bytes(b)).hexdigest() in msg
    assert f"good copy of head_GT.bmp in {d}/" in msg
    st = {s.file: s.status for s in verify(data_dir=data, names=["set5"])}
    assert st["head_GT.bmp"] == "corrupt" and st["baby_GT.bmp"] == "ok"
    assert {r["name"]: r["status"] for r in registry.describe(data_dir=data)}["set5"] == "corrupt"


def test_manifest_pinned_set_refuses_a_changed_file(tiny_set5, monkeypatch):
    """A set pinned only by its manifest digest (as the real folder sets are) loads when every
    file matches and refuses a one-byte change, naming the set's folder and both digests."""
    data, d = tiny_set5["data"], tiny_set5["dir"]
    hashes = {fn: hashlib.sha256((d / fn).read_bytes()).hexdigest() for fn in SET5_NAMES}
    spec = dataclasses.replace(registry.DATASETS["set5"], files=tuple(registry.FileSpec(fn, ()) for fn in SET5_NAMES),
                               manifest=manifest_digest(hashes))
    monkeypatch.setitem(registry.DATASETS, "set5", spec)
    assert len(load("set5", "test", data_dir=data)) == 5
    p = d / "woman_GT.bmp"
    b = bytearray(p.read_bytes())
    b[-1] ^= 0xFF
    p.write_bytes(bytes(b))
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    with pytest.raises(DataError) as e:
        load("set5", "test", data_dir=data)
    msg = str(e.value)
    assert "SHA-256 mismatch of the set's manifest" in msg and str(d) in msg and spec.manifest in msg
    assert manifest_digest({**hashes, "woman_GT.bmp": hashlib.sha256(bytes(b)).hexdigest()}) in msg
    assert verify(data_dir=data, names=["set5"])[-1].status == "corrupt"
    assert {r["name"]: r["status"] for r in registry.describe(data_dir=data)}["set5"] == "corrupt"


def test_synthetic_face_set_subject_split(tmp_path, monkeypatch):
    """A JAFFE-layout folder (10 subjects x 7 expressions, 4x4 images) through the public API."""
    d = tmp_path / "jaffe"
    subjects = ["KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM"]
    files = []
    for s_i, s in enumerate(subjects):
        for code, cls in facemod.JAFFE_CODES.items():
            fn = f"{cls}/{s}.{code}1.{s_i * 10 + len(files)}.tiff"
            (d / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4), len(files), np.uint8)).save(d / fn)
            files.append(fn)
    spec = registry.DATASETS["jaffe"]
    fs = tuple(registry.FileSpec(fn, (hashlib.sha256((d / fn).read_bytes()).hexdigest(),)) for fn in sorted(files))
    monkeypatch.setitem(registry.DATASETS, "jaffe", dataclasses.replace(spec, files=fs, manifest=None))
    monkeypatch.setitem(facemod._LAYOUT, "jaffe", ("jaffe", "", 70, (1, 4, 4), (6, 2, 2)))
    sets = {s: load("jaffe", s, data_dir=tmp_path) for s in ("train", "valid", "test", "train-full")}
    assert {s: len(v) for s, v in sets.items()} == {"train": 42, "valid": 14, "test": 14, "train-full": 56}
    subj = {s: set(v.meta["subject"].tolist()) for s, v in sets.items()}
    assert not (subj["train"] & subj["valid"]) and not (subj["train"] & subj["test"]) and not (subj["valid"] & subj["test"])
    assert subj["train-full"] == subj["train"] | subj["valid"]
    te = sets["test"]
    for k in range(len(te)):  # label from the folder, pixels from the file named in meta
        fn = te.meta["file"][k]
        assert te.classes[te.labels[k]] == fn.split("/")[0]
        assert te.images[k, 0, 0, 0] == files.index(fn)


def test_face_name_parsing_and_split_rules():
    y = facemod.parse_yale(["subject01.glasses", "subject15.centerlight"])
    assert y["subject"].tolist() == ["subject01", "subject15"] and y["condition"].tolist() == ["glasses", "centerlight"]
    with pytest.raises(DataError, match="subject01.gif"):
        facemod.parse_yale(["subject01.gif"])
    c = facemod.parse_ckplus(["anger/S010_004_00000017.png", "contempt/S138_008_00000007.png"])
    assert c["subject"].tolist() == ["S010", "S138"] and c["sequence"].tolist() == ["S010_004", "S138_008"]
    assert c["frame"].tolist() == [17, 7] and c["label"].tolist() == [0, 1]
    with pytest.raises(DataError, match="neutral/x.png"):
        facemod.parse_ckplus(["neutral/x.png"])
    j = facemod.parse_jaffe(["angry/KA.AN1.39.tiff", "surprise/NM.SU3.101.tiff"])
    assert j["subject"].tolist() == ["KA", "NM"] and j["label"].tolist() == [0, 6]
    with pytest.raises(DataError, match="must|matching"):
        facemod.parse_jaffe(["happy/KA.AN1.39.tiff"])  # code disagrees with the folder
    subjects = np.repeat([f"s{i:02d}" for i in range(12)], 3)
    labels = np.tile([0, 1, 2], 12)
    parts = {s: set(facemod.stratified_subject_split(subjects, labels, s).tolist()) for s in ("train", "valid", "test", "train-full")}
    assert parts["train"] | parts["valid"] | parts["test"] == set(subjects.tolist())
    assert not (parts["train"] & parts["test"]) and not (parts["valid"] & parts["test"]) and parts["test"]
    assert parts["train-full"] == parts["train"] | parts["valid"]
    with pytest.raises(DataError, match="add up"):
        facemod.subject_split(subjects, "train", (5, 5, 5))


def test_condition_pairs():
    subj = np.array(["subject01", "subject01", "subject02", "subject02", "subject02"])
    cond = np.array(["leftlight", "normal", "rightlight", "centerlight", "leftlight"])
    ds = ImageSet("yale", "test", np.zeros((5, 1, 2, 2), np.uint8), np.zeros(5), [], "", {"subject": subj, "condition": cond})
    src, dst = facemod.condition_pairs(ds, ("leftlight", "rightlight"), "centerlight")
    assert src.tolist() == [2, 4] and dst.tolist() == [3, 3]  # subject01 has no centerlight: no pair
    src, dst = facemod.condition_pairs(ds, "leftlight", "normal")
    assert src.tolist() == [0] and dst.tolist() == [1]
    with pytest.raises(ValueError, match="unknown"):
        facemod.condition_pairs(ds, "sidelight", "normal")


def test_registry_entries_pinned():
    for name, (folder, n, c) in RESTORATION.items():
        spec = registry.DATASETS[name]
        assert spec.dirname == folder and len(spec.files) == n and spec.splits == ("test",) and spec.split_sizes == {"test": n}
        assert spec.shape == (c, None, None) and not any(f.urls for f in spec.files)
    counts = {"yale": 164, "ckplus48": 981, "jaffe": 213, "celeba": 500}
    for name in FACES:
        spec = registry.DATASETS[name]
        assert len(spec.files) == counts[name] and spec.splits == registry.SPLITS
        sz = spec.split_sizes
        assert sz["train"] + sz["valid"] + sz["test"] == counts[name] and sz["train-full"] == sz["train"] + sz["valid"]
    assert registry.DATASETS["ckplus48"].classes == facemod.CK_CLASSES and "neutral" not in facemod.CK_CLASSES
    # folder sets are pinned by one manifest digest each (no per-file checksum list in the repository)
    for s in list(RESTORATION) + list(FACES):
        spec = registry.DATASETS[s]
        assert len(spec.manifest) == 64 and int(spec.manifest, 16) >= 0 and not any(f.sha256 for f in spec.files)
    assert registry.DATASETS["celeba"].manifest.startswith("8157b0e4")
    assert registry.DATASETS["bsd68"].manifest.startswith("7db47364")


# ----------------------------------------------------------------------------- real data
@pytest.mark.data
def test_real_checksums_match_sha256sums():
    sums = _real("Set5") / "SHA256SUMS"
    if not sums.is_file():
        pytest.skip(f"{sums} not found")
    listed = {}
    for line in sums.read_text().splitlines():
        digest, path = line.split("  ", 1)
        listed[path] = digest
    n = 0
    for folder, under in cksums.pinned():  # each pin = the manifest of the files SHA256SUMS lists
        names = cksums.files(folder, under)
        n += len(names)
        assert cksums.manifest(folder, under) == manifest_digest({fn: listed[f"{folder}/{fn}"] for fn in names})
    assert n == 2067


@pytest.mark.data
def test_real_restoration_sets():
    root = _real("Set5")
    for name, (folder, n, c) in RESTORATION.items():
        lst = load(name, "test", data_dir=root)
        assert isinstance(lst, ImageList) and len(lst) == n and lst.channels == c, name
        assert list(lst.files) == sorted(lst.files) and all(s.status == "ok" for s in verify(data_dir=root, names=[name]))
    shapes = lambda n: {s[1:] for s in load(n, "test", data_dir=root).shapes}  # noqa: E731
    assert shapes("bsd68") == shapes("cbsd68") == {(321, 481), (481, 321)}
    assert shapes("mcmaster") == {(500, 500)} and shapes("kodak24") == {(512, 768), (768, 512)}
    assert shapes("set12") == {(256, 256), (512, 512)}
    s14 = load("set14", "test", data_dir=root)
    assert [f for f, a in zip(s14.files, s14.images) if a.shape[0] == 1] == ["bridge.bmp"]
    man = s14.images[s14.files.index("man.bmp")]
    assert man.shape[0] == 3 and (man[0] == man[1]).all() and (man[1] == man[2]).all()  # RGB file, gray content
    t = s14.tensor(0)
    assert t.shape == (1,) + s14.images[0].shape and 0 <= float(t.min()) and float(t.max()) <= 1


@pytest.mark.data
def test_real_bsd68_is_luma_of_cbsd68():
    root = _real("CBSD68")
    gray, colour = load("bsd68", "test", data_dir=root), load("cbsd68", "test", data_dir=root).as_gray()
    diff = np.concatenate([np.abs(a.astype(int) - b.astype(int)).ravel() for a, b in zip(gray.images, colour.images)])
    assert diff.max() <= 1 and (diff == 0).mean() > 0.9999  # BT.601 luma, sorted order pairs them


def _luma_small(a, f=4):
    g = a[0].astype(np.float64) if a.shape[0] == 1 else 0.299 * a[0] + 0.587 * a[1] + 0.114 * a[2]
    h, w = g.shape[0] // f * f, g.shape[1] // f * f
    return g[:h, :w].reshape(h // f, f, w // f, f).mean((1, 3))


def _thumbs(lst):
    out = []
    for a in lst.images:
        g = a[0] if a.shape[0] == 1 else rgb_to_gray(a)[0]
        t = np.asarray(Image.fromarray(g).resize((16, 16), Image.BOX), np.float64).ravel()
        out.append((t - t.mean()) / (t.std() + 1e-9))
    return np.stack(out)


def _max_ncc(templates, image):
    """Max normalised cross-correlation of each [K, h, w] template over every position of image (FFT)."""
    k, h, w = templates.shape
    H, W = image.shape
    t = templates - templates.mean((1, 2), keepdims=True)
    t /= np.linalg.norm(t, axis=(1, 2), keepdims=True) + 1e-12
    pad = np.zeros((k, H, W))
    pad[:, :h, :w] = t
    corr = np.fft.irfft2(np.fft.rfft2(image)[None] * np.conj(np.fft.rfft2(pad)), s=(H, W))[:, :H - h + 1, :W - w + 1]
    s1, s2 = (np.pad(v.cumsum(0).cumsum(1), ((1, 0), (1, 0))) for v in (image, image ** 2))
    box = lambda s: s[h:, w:] - s[:-h, w:] - s[h:, :-w] + s[:-h, :-w]  # noqa: E731
    energy = box(s2) - box(s1) ** 2 / (h * w)
    ncc = np.where(energy > 1e-3 * h * w, corr / np.sqrt(np.maximum(energy, 1e-9)), 0.0)
    return ncc.reshape(k, -1).max(1)


def _crop_score(a_list, b_list, k=32):
    """Max NCC of the central k x k block (at 1/4 scale) of any image of a_list found anywhere in
    any image of b_list: close to 1 when one is a crop of the other."""
    def centre(g):
        y, x = (g.shape[0] - k) // 2, (g.shape[1] - k) // 2
        return g[y:y + k, x:x + k]

    temps = np.stack([centre(_luma_small(a)) for a in a_list])
    return max(float(_max_ncc(temps, _luma_small(b)).max()) for b in b_list)


@pytest.mark.data
def test_real_natural_split_has_no_leakage():
    root = _real("Kodak24")
    _real("Set14")
    train, test, desc = restoration_split("natural", data_dir=root)
    assert (len(train), len(test)) == (39, 20) and train.channels == test.channels == 3
    assert "Kodak24" in desc and "Set14" in desc and "butterfly" in desc and "kodim23.png" in desc
    assert {f.split("/")[0] for f in train.files} == {"kodak24", "mcmaster"}
    held = {f"kodak24/{f}" for f in restmod.KODAK_HELD_OUT}
    assert held == set(test.files[:3]) and not held & set(train.files)
    assert not set(train.files) & set(test.files)
    assert set(restmod.SET5_IN_SET14) == {"butterfly_GT.bmp", "head_GT.bmp"}
    assert not {f"set5/{f}" for f in restmod.SET5_IN_SET14} & set(test.files) and "set14/monarch.bmp" in test.files
    # 1. no identical image where sizes match
    for a in test.images:
        assert not any(a.shape == b.shape and np.array_equal(a, b) for b in train.images)
    # 2. no near-identical (also resized) whole image: 16x16 gray thumbnails, correlation
    extra = [load(n, "test", data_dir=root) for n in ("bsd68", "set12")]
    for t in [test] + extra:
        assert (_thumbs(t) @ _thumbs(train).T / 256).max() < 0.9
    # 3. no test image is a crop of a training image, nor the reverse (NCC at 1/4 scale)
    assert _crop_score(test.images, train.images) < 0.95 and _crop_score(train.images, test.images) < 0.95
    # ... and the same checks do see the overlaps that made us drop two Set5 images
    s5, s14 = load("set5", "test", data_dir=root), load("set14", "test", data_dir=root)
    im = lambda lst, f: lst.images[lst.files.index(f)]  # noqa: E731
    assert _crop_score([im(s5, "butterfly_GT.bmp")], [im(s14, "monarch.bmp")]) > 0.95
    assert _crop_score([im(s14, "face.bmp")], [im(s5, "head_GT.bmp")]) > 0.95
    np.testing.assert_array_equal(im(s5, "head_GT.bmp")[:, 2:-2, 2:-2], im(s14, "face.bmp"))
    np.testing.assert_array_equal(im(s14, "monarch.bmp")[:, 144:400, 271:527], im(s5, "butterfly_GT.bmp"))
    gray_train, gray_test, _ = restoration_split("natural", gray=True, data_dir=root)
    assert gray_train.channels == gray_test.channels == 1 and len(gray_test) == 20
    p = train.crop_patches(48, 8, seed=0)
    assert p.images.shape == (8, 3, 48, 48) and np.array_equal(p.images, train.crop_patches(48, 8, seed=0).images)


def _check_subject_disjoint(name, root):
    sets = {s: load(name, s, data_dir=root) for s in ("train", "valid", "test", "train-full")}
    assert {s: len(v) for s, v in sets.items()} == registry.DATASETS[name].split_sizes
    subj = {s: set(v.meta["subject"].tolist()) for s, v in sets.items()}
    assert not (subj["train"] & subj["valid"]) and not (subj["train"] & subj["test"]) and not (subj["valid"] & subj["test"])
    assert subj["train-full"] == subj["train"] | subj["valid"]
    np.testing.assert_array_equal(np.sort(sets["train-full"].meta["file"]),
                                  np.sort(np.concatenate([sets["train"].meta["file"], sets["valid"].meta["file"]])))
    return sets, subj


@pytest.mark.data
def test_real_yale():
    root = _real("yalefaces")
    sets, subj = _check_subject_disjoint("yale", root)
    full = np.concatenate([sets["train-full"].meta["condition"], sets["test"].meta["condition"]])
    counts = dict(zip(*np.unique(full, return_counts=True)))
    assert counts == {**{c: 15 for c in facemod.YALE_CONDITIONS}, "centerlight": 14}
    assert subj["test"] == {"subject01", "subject06", "subject13"} and subj["valid"] == {"subject04", "subject08", "subject12"}
    te = sets["test"]
    assert te.images.shape == (32, 1, 243, 320) and te.classes[0] == "subject01" and len(te.classes) == 15
    assert all(te.classes[lb] == s for lb, s in zip(te.labels, te.meta["subject"]))
    src, dst = facemod.condition_pairs(te, ("leftlight", "rightlight"), "centerlight")
    assert len(src) == 4 and (te.meta["subject"][src] == te.meta["subject"][dst]).all()
    tr = sets["train-full"]
    f = tr.meta["file"].tolist()
    np.testing.assert_array_equal(tr.images[f.index("subject04.sad")], tr.images[f.index("subject04.normal")])  # Readme quirk
    assert all(s.status == "ok" for s in verify(data_dir=root, names=["yale"]))


@pytest.mark.data
def test_real_ckplus48():
    root = _real("ckplus48")
    sets, subj = _check_subject_disjoint("ckplus48", root)
    full = ImageSet("x", "x", np.concatenate([sets["train-full"].images, sets["test"].images]),
                    np.concatenate([sets["train-full"].labels, sets["test"].labels]))
    assert full.images.shape == (981, 1, 48, 48)
    assert dict(zip(sets["test"].classes, np.bincount(full.labels).tolist())) == {
        "anger": 135, "contempt": 54, "disgust": 177, "fear": 75, "happy": 207, "sadness": 84, "surprise": 249}
    assert len(subj["train-full"] | subj["test"]) == 118
    assert np.bincount(sets["test"].labels, minlength=7).tolist() == [21, 9, 27, 12, 30, 12, 36]  # every emotion in test
    te = sets["test"]
    assert all(f.split("/")[1].startswith(q) for f, q in zip(te.meta["file"], te.meta["sequence"]))
    seqs = {}
    for s, lb in zip(te.meta["sequence"].tolist(), te.labels.tolist()):
        seqs.setdefault(s, set()).add(lb)
    assert all(len(v) == 1 for v in seqs.values())  # one emotion per sequence


@pytest.mark.data
def test_real_jaffe():
    root = _real("jaffe")
    sets, subj = _check_subject_disjoint("jaffe", root)
    assert subj["test"] == {"KA", "NA"} and subj["valid"] == {"KR", "TM"} and len(subj["train"]) == 6
    tf, te = sets["train-full"], sets["test"]
    counts = np.bincount(np.concatenate([tf.labels, te.labels])).tolist()
    assert dict(zip(te.classes, counts)) == {"angry": 30, "disgust": 29, "fear": 32, "happy": 31, "neutral": 30, "sad": 31, "surprise": 30}
    assert te.images.shape[1:] == (1, 256, 256)
    allimg = np.concatenate([tf.images, te.images])
    assert len({a.tobytes() for a in allimg}) == 213  # all distinct
    k = te.meta["file"].tolist().index("angry/KA.AN1.39.tiff")  # a palette TIFF: decoded to its gray values
    with Image.open(root / "jaffe" / "angry" / "KA.AN1.39.tiff") as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(te.images[k, 0], np.asarray(im.convert("L")))


@pytest.mark.data
def test_real_celeba():
    root = _real("celeba")
    sets = {s: load("celeba", s, data_dir=root) for s in ("train", "valid", "test", "train-full")}
    assert {s: len(v) for s, v in sets.items()} == {"train": 350, "valid": 50, "test": 100, "train-full": 400}
    te = sets["test"]
    assert te.images.shape == (100, 3, 109, 89) and te.classes == ["face"] and (te.labels == 0).all()
    assert te.meta["file"][0] == "img_89x109/000401.jpg" and sets["train"].meta["file"][-1] == "img_89x109/000350.jpg"
    assert all(s.status == "ok" for s in verify(data_dir=root, names=["celeba"]))


@pytest.mark.data
def test_real_corrupt_copy_is_refused(tmp_path):
    """A tmp copy of the real Set5 with one byte changed in one file."""
    root = _real("Set5")
    d = tmp_path / "Set5"
    d.mkdir()
    for fn in SET5_NAMES:
        (d / fn).write_bytes((root / "Set5" / fn).read_bytes())
    assert len(load("set5", "test", data_dir=tmp_path)) == 5
    b = bytearray((d / "bird_GT.bmp").read_bytes())
    b[1000] ^= 1
    (d / "bird_GT.bmp").write_bytes(bytes(b))
    os.utime(d / "bird_GT.bmp", ns=(0, 10**9))
    with pytest.raises(DataError, match="SHA-256 mismatch of the set's manifest") as e:
        load("set5", "test", data_dir=tmp_path)
    assert str(d) in str(e.value) and registry.DATASETS["set5"].manifest in str(e.value)
    st = verify(data_dir=tmp_path, names=["set5"])
    assert [x.status for x in st] == ["ok"] * 5 + ["corrupt"] and st[-1].expected == registry.DATASETS["set5"].manifest


def test_manifests_are_package_data_read_through_importlib_resources():
    """The pins are a JSON file shipped inside the package (pyproject's package-data), not code."""
    import json
    import tomllib
    from importlib import resources
    from pathlib import Path

    text = resources.files("evalkit.data").joinpath("manifests.json").read_text(encoding="utf-8")
    pins = json.loads(text)["manifests"]
    assert len(pins) == len(cksums.pinned()) and all(len(p["digest"]) == 64 and p["files"] == sorted(p["files"]) for p in pins)
    assert cksums.files("Set5")[0].endswith(".bmp") and len(cksums.manifest("Set5")) == 64
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "manifests.json" in pyproject["tool"]["setuptools"]["package-data"]["evalkit.data"]
