"""Paired face tasks (evalkit.data.face_tasks): yaw warp, preprocessing, pair builders.

Synthetic tests always run; tests marked ``data`` need the real face sets (EVALKIT_DATA, else
shared/data next to the repository) and skip with the reason when they are absent.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit.data import DataError, ImageSet, load
from evalkit.data import face_tasks as ft
from evalkit.data.face_tasks import PairSet, homography_warp, pose_pairs, task_pairs, yaw_homography, yaw_warp

_CALLER_DATA = os.environ.get("EVALKIT_DATA")
SPLITS = ("train", "valid", "test", "train-full")


def _real(folder: str) -> Path:
    """Data root holding the real ``folder``: the caller's EVALKIT_DATA, else shared/data beside
    the repository; else skip."""
    cands = [Path(_CALLER_DATA)] if _CALLER_DATA else []
    cands.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for c in cands:
        if (c / folder).is_dir():
            return c
    pytest.skip(f"real {folder}/ not found in {', '.join(map(str, cands))}: set EVALKIT_DATA to a directory holding {folder}/")


def _smooth(n=2, h=40, w=40, seed=0):
    """Smooth random images in [0.1, 0.9] (sums of a few low-frequency cosines)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    out = []
    for _ in range(n):
        img = np.zeros((h, w))
        for _ in range(4):
            fx, fy, ph = rng.uniform(0, 2, 3)
            img += np.cos(2 * np.pi * (fx * xx + fy * yy) + 3 * ph)
        out.append(0.5 + 0.1 * img)
    return torch.tensor(np.stack(out)[:, None], dtype=torch.float32)


def _bar(h=32, w=64, lo=28, hi=36):
    x = torch.zeros(1, 1, h, w)
    x[..., lo:hi] = 1.0
    return x


def _centroid_x(x):
    cols = torch.arange(x.shape[-1], dtype=torch.float64) + 0.5 - x.shape[-1] / 2
    m = x.double().sum(dim=(0, 1, 2))
    return float((m * cols).sum() / m.sum())


def _faces(n_subj=4, per=3, h=20, w=24, seed=0):
    rng = np.random.default_rng(seed)
    n = n_subj * per
    imgs = rng.integers(0, 256, (n, 1, h, w), dtype=np.uint8)
    subj = np.repeat([f"S{i:03d}" for i in range(n_subj)], per)
    files = np.array([f"{s}_{k}.png" for k, s in enumerate(subj)])
    return ImageSet("ckplus48", "test", imgs, np.arange(n) % 7, list("abcdefg"), "src-fp", {"subject": subj, "file": files})


# ----------------------------------------------------------------------------- yaw warp
def test_yaw_warp_zero_is_identity():
    x = torch.rand(3, 1, 17, 24, generator=torch.Generator().manual_seed(0))
    y = yaw_warp(x, 0.0)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float((y - x).abs().max()) <= 1e-6
    assert float((yaw_warp(x, [0, 0, 0], padding="border") - x).abs().max()) <= 1e-6
    u8 = (x * 255).round().to(torch.uint8)
    assert float((yaw_warp(u8, 0) - u8.float() / 255).abs().max()) <= 1e-6  # uint8 is read as x / 255


def test_yaw_homography_is_the_rotated_plane_seen_by_a_pinhole():
    """Independent derivation: points of the frontal plane at depth f, rotated about the
    vertical axis through (0, 0, f), projected with focal length f."""
    w, focal = 64, 1.0
    f = focal * w
    rng = np.random.default_rng(0)
    pts = rng.uniform(-w / 2, w / 2, (50, 2))
    for deg in (-40.0, -15.0, 10.0, 30.0):
        t = math.radians(deg)
        rot = np.array([[math.cos(t), 0, math.sin(t)], [0, 1, 0], [-math.sin(t), 0, math.cos(t)]])  # about camera y
        cam = np.c_[pts, np.zeros(len(pts))] @ rot.T + np.array([0.0, 0.0, f])  # +x side: depth f - x sin t
        want = f * cam[:, :2] / cam[:, 2:3]
        H = yaw_homography(deg, w, focal=focal)
        hom = np.c_[pts, np.ones(len(pts))] @ H.T
        np.testing.assert_allclose(hom[:, :2] / hom[:, 2:3], want, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(yaw_homography(0, w), np.eye(3) * f)


def test_yaw_warp_is_undone_by_the_inverse_homography():
    x = _smooth(2, 48, 48)
    ones = torch.ones_like(x)
    for deg in (30.0, -15.0):
        H = yaw_homography(deg, 48)
        back = homography_warp(yaw_warp(x, deg), np.linalg.inv(H))
        valid = homography_warp(yaw_warp(ones, deg), np.linalg.inv(H)) > 1 - 1e-5  # every tap inside, both ways
        assert valid.float().mean() > 0.6
        err = (back - x).abs()[valid]
        assert float(err.max()) < 0.02 and float(err.mean()) < 0.004
        # the rotation by -theta is NOT the inverse (a different camera configuration) ...
        Hm = yaw_homography(-deg, 48)
        Hi = np.linalg.inv(H)
        assert not np.allclose(Hm / Hm[2, 2], Hi / Hi[2, 2], atol=1e-3)
        # ... and does not restore the image as well
        wrong = (yaw_warp(yaw_warp(x, deg), -deg) - x).abs()[valid]
        assert float(wrong.mean()) > 2 * float(err.mean())


def test_yaw_warp_moves_mass_horizontally_and_flips_with_the_sign():
    bar = _bar()
    c0 = _centroid_x(bar)
    assert abs(c0) < 1e-9
    for deg in (15.0, 30.0):
        pos, neg = yaw_warp(bar, deg), yaw_warp(bar, -deg)
        assert _centroid_x(pos) > c0 + 0.02 and _centroid_x(neg) < c0 - 0.02  # +theta: right side comes closer
        assert math.isclose(_centroid_x(pos), -_centroid_x(neg), rel_tol=1e-4)
        mass = float(pos.sum() / bar.sum())
        assert 0.9 * math.cos(math.radians(deg)) < mass < 1.0  # foreshortened width
    # a bar near the right edge (x = +26): +theta brings it closer (magnified, pushed out to
    # 64 cos t x / (64 - x sin t) = 28.3), -theta moves it away (compressed, 19.4)
    right = _bar(lo=56, hi=60)
    pos, neg = yaw_warp(right, 30.0), yaw_warp(right, -30.0)
    assert _centroid_x(pos) > _centroid_x(right) + 1.5 and _centroid_x(neg) < _centroid_x(right) - 5
    assert float(pos.sum()) > float(right.sum()) > float(neg.sum())
    c = math.cos(math.radians(30))
    assert abs(_centroid_x(pos) - 64 * c * 26 / (64 - 26 * 0.5)) < 0.3
    assert abs(_centroid_x(neg) - 64 * c * 26 / (64 + 26 * 0.5)) < 0.3
    # mirror symmetry: warp(x, -t) = flip(warp(flip(x), t))
    x = torch.rand(2, 1, 21, 30, generator=torch.Generator().manual_seed(1))
    flip = lambda t: torch.flip(t, dims=[-1])  # noqa: E731
    assert torch.allclose(yaw_warp(x, -25.0), flip(yaw_warp(flip(x), 25.0)), atol=1e-5)
    # the frame the turned face no longer covers is zero (padding="zeros"); "border" fills it
    full = torch.ones(1, 1, 32, 32)
    z, b = yaw_warp(full, 30.0), yaw_warp(full, 30.0, padding="border")
    assert float(z[..., :3].max()) == 0.0 and float(z[..., -3:].min()) > 1 - 1e-6 and float(b.min()) > 1 - 1e-6


def test_yaw_warp_arguments():
    x = torch.rand(3, 1, 8, 8)
    per_image = yaw_warp(x, [10.0, -20.0, 0.0])
    for i, a in enumerate((10.0, -20.0, 0.0)):
        assert torch.allclose(per_image[i:i + 1], yaw_warp(x[i:i + 1], a), atol=1e-6)
    assert torch.equal(yaw_warp(x, 20.0), yaw_warp(x, 20.0))  # deterministic
    with pytest.raises(ValueError, match="one angle per image"):
        yaw_warp(x, [1.0, 2.0])
    with pytest.raises(ValueError, match="vanishing line"):
        yaw_warp(x, 70.0)  # focal 1: tan 70 / 2 > 1
    yaw_warp(x, 70.0, focal=2.0)
    with pytest.raises(ValueError, match=r"\(-90, 90\)"):
        yaw_warp(x, 90.0, focal=100.0)
    with pytest.raises(ValueError, match="padding"):
        yaw_warp(x, 10.0, padding="wrap")
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        yaw_warp(x[0], 10.0)
    with pytest.raises(ValueError, match="vanishing line"):
        homography_warp(x, np.array([[1.0, 0, 0], [0, 1, 0], [1.0, 0, 0.1]]))


# ----------------------------------------------------------------------------- preprocessing
def test_preprocess_crop_and_area_resize():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 1, 256, 256), dtype=np.uint8)
    out = ft.preprocess(a, 64)
    want = a.astype(np.float64).reshape(2, 1, 64, 4, 64, 4).mean((3, 5)) / 255  # 4x4 means
    assert out.shape == (2, 1, 64, 64) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), want, atol=1e-6)
    wide = np.zeros((1, 1, 243, 320), np.uint8)
    wide[..., 38:281] = 255  # exactly the centre crop
    y = ft.preprocess(wide, 64)
    assert float(y.min()) == 1.0 and y.shape == (1, 1, 64, 64)
    same = ft.preprocess(a[:, :, :48, :48], 48)
    assert torch.equal(same, torch.tensor(a[:, :, :48, :48]).float() / 255)  # native size: untouched
    up = ft.preprocess(a[:, :, :48, :48], 64)
    assert up.shape == (2, 1, 64, 64) and 0 <= float(up.min()) and float(up.max()) <= 1
    with pytest.raises(ValueError, match="positive"):
        ft.preprocess(a, 0)


# ----------------------------------------------------------------------------- pair sets
def test_pose_pairs_shapes_meta_and_targets():
    ds = _faces()
    p = pose_pairs(ds, seed=3)
    assert isinstance(p, PairSet) and len(p) == len(ds) and p.image_shape == (1, 20, 20)
    assert p.inputs.dtype == p.targets.dtype == torch.float32
    for t in (p.inputs, p.targets):
        assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0
    assert set(p.meta["angle"].tolist()) <= set(ft.DEFAULT_ANGLES) and p.meta["angle"].dtype == np.float32
    np.testing.assert_array_equal(p.subject, ds.meta["subject"])
    np.testing.assert_array_equal(p.meta["file"], ds.meta["file"])
    np.testing.assert_array_equal(p.meta["label"], ds.labels)
    assert torch.equal(p.targets, ft.preprocess(ds.images, 20))
    assert torch.allclose(p.inputs, yaw_warp(p.targets, p.meta["angle"]), atol=1e-6)  # same size: warp of the target
    x = p.stacked()
    assert x.shape == (len(ds), 2, 20, 20) and torch.equal(x[:, :1], p.inputs) and torch.equal(x[:, 1:], p.targets)
    assert "PairSet" in repr(p) and p.name == "pose-ckplus48" and p.split == "test"
    # angles drawn from default_rng(seed), one per image in order
    want = np.random.default_rng(3).choice(np.array(ft.DEFAULT_ANGLES), size=len(ds))
    np.testing.assert_array_equal(p.meta["angle"], want.astype(np.float32))
    # every angle per image
    q = pose_pairs(ds, angles=(-10, 20), all_angles=True)
    assert len(q) == 2 * len(ds) and q.meta["angle"].tolist() == [-10.0, 20.0] * len(ds)
    assert q.subject.tolist() == np.repeat(ds.meta["subject"], 2).tolist()
    # resized: the warp happens at source size, then both are area-resized
    r = pose_pairs(ds, seed=3, size=10)
    assert r.image_shape == (1, 10, 10) and torch.allclose(r.inputs, ft._resize(p.inputs, 10), atol=1e-6)


def test_pose_pairs_seeded_and_independent_of_global_rngs():
    ds = _faces()
    torch.manual_seed(1)
    np.random.seed(1)
    a = pose_pairs(ds, seed=(0, 2))
    torch.manual_seed(99)
    np.random.seed(99)
    torch.rand(5)
    np.random.rand(5)
    b = pose_pairs(ds, seed=(0, 2))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert a.fingerprint == b.fingerprint and np.array_equal(a.meta["angle"], b.meta["angle"])
    c = pose_pairs(ds, seed=(1, 2))
    assert not np.array_equal(a.meta["angle"], c.meta["angle"]) and c.fingerprint != a.fingerprint
    fps = {pose_pairs(ds, **kw).fingerprint for kw in
           ({}, {"size": 10}, {"focal": 2.0}, {"padding": "border"}, {"angles": (15, 30)}, {"all_angles": True})}
    assert len(fps) == 6
    with pytest.raises(ValueError, match="empty"):
        pose_pairs(ds, angles=())


def test_illumination_pairs_synthetic():
    subj = np.array(["subject01", "subject01", "subject02", "subject02", "subject02", "subject03"])
    cond = np.array(["leftlight", "normal", "rightlight", "centerlight", "leftlight", "centerlight"])
    imgs = np.random.default_rng(0).integers(0, 256, (6, 1, 12, 16), dtype=np.uint8)
    files = np.array([f"{s}.{c}" for s, c in zip(subj, cond)])
    ds = ImageSet("yale", "test", imgs, [0, 0, 1, 1, 1, 2], [], "fp", {"subject": subj, "condition": cond, "file": files})
    p = ft.illumination_pairs(ds, size=6)
    assert len(p) == 2 and p.image_shape == (1, 6, 6)  # subject01 has no centerlight
    assert p.subject.tolist() == ["subject02", "subject02"] and p.meta["condition"].tolist() == ["rightlight", "leftlight"]
    assert p.meta["target_file"].tolist() == ["subject02.centerlight"] * 2
    full = ft.preprocess(imgs, 6)
    assert torch.equal(p.inputs, full[[2, 4]]) and torch.equal(p.targets, full[[3, 3]])
    assert p.fingerprint != ft.illumination_pairs(ds, size=8).fingerprint
    with pytest.raises(DataError, match="condition"):
        ft.illumination_pairs(ImageSet("yale", "test", imgs, np.zeros(6), [], "", {"subject": subj}))


def test_pairset_validation():
    x = torch.zeros(3, 1, 4, 4)
    with pytest.raises(ValueError, match="same shape"):
        PairSet("t", "test", x, torch.zeros(3, 1, 4, 5), np.array(["a"] * 3))
    with pytest.raises(ValueError, match="subject"):
        PairSet("t", "test", x, x, np.array(["a"] * 2))
    with pytest.raises(ValueError, match="one entry per pair"):
        PairSet("t", "test", x, x, np.array(["a"] * 3), {"angle": np.zeros(2)})


def test_unknown_task_and_split():
    with pytest.raises(DataError) as e:
        task_pairs("pose-kdef", "test")
    assert all(t in str(e.value) for t in ft.TASKS)
    with pytest.raises(DataError, match="train-full"):
        task_pairs("pose-jaffe", "dev")


# ----------------------------------------------------------------------------- real data
@pytest.mark.data
def test_real_illumination_yale():
    root = _real("yalefaces")
    pairs = {s: task_pairs("illumination-yale", s, data_dir=root) for s in SPLITS}
    want = {"train": 18, "valid": 6, "test": 4, "train-full": 24}
    assert {s: len(p) for s, p in pairs.items()} == want
    for s, p in pairs.items():
        ds = load("yale", s, data_dir=root)
        conds = {(a, c) for a, c in zip(ds.meta["subject"].tolist(), ds.meta["condition"].tolist())}
        lit = sorted(a for a in set(ds.meta["subject"].tolist()) if (a, "centerlight") in conds)
        n_expected = sum((a, c) in conds for a in lit for c in ("leftlight", "rightlight"))
        assert len(p) == n_expected and p.image_shape == (1, 64, 64) and p.name == "illumination-yale"
        assert [f.split(".")[0] for f in p.meta["file"]] == p.subject.tolist() == [f.split(".")[0] for f in p.meta["target_file"]]
        assert set(p.meta["condition"].tolist()) == {"leftlight", "rightlight"}
        assert all(f.endswith(".centerlight") for f in p.meta["target_file"])
        assert 0 <= float(p.inputs.min()) and float(p.targets.max()) <= 1 and p.stacked().shape == (len(p), 2, 64, 64)
    subj = {s: set(p.subject.tolist()) for s, p in pairs.items()}
    assert not (subj["train"] & subj["valid"]) and not (subj["train"] & subj["test"]) and not (subj["valid"] & subj["test"])
    assert subj["test"] == {"subject06", "subject13"} and subj["train-full"] == subj["train"] | subj["valid"]
    assert len({p.fingerprint for p in pairs.values()}) == 4
    assert task_pairs("illumination-yale", "test", size=32, data_dir=root).image_shape == (1, 32, 32)


@pytest.mark.data
@pytest.mark.parametrize("name,folder,size,counts", [
    ("ckplus48", "ckplus48", 48, {"train": 681, "valid": 153, "test": 147, "train-full": 834}),
    ("jaffe", "jaffe", 64, {"train": 128, "valid": 41, "test": 44, "train-full": 169}),
])
def test_real_pose_pairs(name, folder, size, counts):
    root = _real(folder)
    task = f"pose-{name}"
    pairs = {s: task_pairs(task, s, data_dir=root) for s in SPLITS}
    assert {s: len(p) for s, p in pairs.items()} == counts
    for s, p in pairs.items():
        assert p.image_shape == (1, size, size) and p.name == task and p.split == s
        assert set(p.meta["angle"].tolist()) <= set(ft.DEFAULT_ANGLES)
        assert 0 <= float(p.inputs.min()) and float(p.inputs.max()) <= 1
    subj = {s: set(p.subject.tolist()) for s, p in pairs.items()}
    assert not (subj["train"] & subj["valid"]) and not (subj["train"] & subj["test"]) and not (subj["valid"] & subj["test"])
    test = pairs["test"]
    ds = load(name, "test", data_dir=root)
    assert torch.equal(test.targets, ft.preprocess(ds.images, size))
    np.testing.assert_array_equal(test.meta["file"], ds.meta["file"])
    # the test split is fixed by the data seed: identical on every call, whatever the global RNGs
    torch.manual_seed(123)
    np.random.seed(123)
    ft._PAIRS.clear()  # recomputed, not taken from the in-process cache
    again = task_pairs(task, "test", data_dir=root)
    assert torch.equal(again.inputs, test.inputs) and again.fingerprint == test.fingerprint
    # a cached call gives equal pairs in tensors of its own: editing one leaves the next call's alone
    cached = task_pairs(task, "test", data_dir=root)
    assert torch.equal(cached.inputs, again.inputs) and cached.inputs.data_ptr() != again.inputs.data_ptr()
    cached.inputs.zero_()
    cached.meta["angle"][:] = 99
    third = task_pairs(task, "test", data_dir=root)
    assert torch.equal(third.inputs, test.inputs) and np.array_equal(third.meta["angle"], test.meta["angle"])
    assert task_pairs(task, "test", seed=1, data_dir=root).fingerprint != test.fingerprint
    assert len({p.fingerprint for p in pairs.values()}) == 4
    every = task_pairs(task, "test", all_angles=True, data_dir=root)
    assert len(every) == 4 * counts["test"]
