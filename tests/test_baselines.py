"""Degradations and classical restorers (evalkit.baselines): tiny, deterministic, CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evalkit.baselines import (
    DEGRADATIONS,
    RESTORERS,
    Degradation,
    add_gaussian_noise,
    admm_tv,
    bicubic_downsample,
    bicubic_upscale,
    blur_degradation,
    circular_blur,
    gaussian_kernel,
    get_degradation,
    get_restorer,
    median_filter,
    modcrop,
    nearest_upscale,
    nl_means,
    noise_degradation,
    psf2otf,
    sr_degradation,
    wiener,
)
from evalkit.metrics import psnr

torch.set_num_threads(1)


def _resize(a: np.ndarray, n: int) -> torch.Tensor:
    from skimage.transform import resize

    a = resize(a, (n, n) + a.shape[2:], anti_aliasing=True)
    t = torch.from_numpy(a).float().clamp(0, 1)
    return t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def camera() -> torch.Tensor:
    """skimage's cameraman, 48x48 grey, [1, 1, 48, 48] in [0, 1]."""
    from skimage import data

    return _resize(data.camera() / 255.0, 48)


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    """skimage's astronaut, 32x32 RGB, [1, 3, 32, 32] in [0, 1]."""
    from skimage import data

    return _resize(data.astronaut() / 255.0, 32)


def _gain(restored: torch.Tensor, degraded: torch.Tensor, clean: torch.Tensor) -> float:
    return float(psnr(restored, clean).mean() - psnr(degraded.clamp(0, 1), clean).mean())


# =========================================================================== degradations

def test_registry_names_kinds_and_params_are_json():
    assert set(DEGRADATIONS) == {"sr2", "sr4", "noise05", "noise10", "noise20", "blur"}
    assert DEGRADATIONS["sr4"].kind == "sr" and DEGRADATIONS["sr4"].scale == 4
    assert DEGRADATIONS["sr2"].params["antialias"] is True
    assert [DEGRADATIONS[n].noise_sigma for n in ("noise05", "noise10", "noise20")] == [0.05, 0.1, 0.2]
    assert DEGRADATIONS["noise10"].params["clip"] is False
    b = DEGRADATIONS["blur"].to_dict()
    assert b == {"name": "blur", "kind": "blur", "kernel": "gaussian", "kernel_size": 9,
                 "kernel_sigma": 2.0, "boundary": "circular", "noise_sigma": 0.01, "clip": False}
    for d in DEGRADATIONS.values():
        json.dumps(d.to_dict())
        assert d.description
    with pytest.raises(TypeError):
        DEGRADATIONS["sr2"].params["scale"] = 3  # registry entries are read-only
    assert get_degradation("noise20") is DEGRADATIONS["noise20"]
    with pytest.raises(ValueError, match="unknown degradation 'sr3'.*known: blur"):
        get_degradation("sr3")


def test_apply_returns_image_and_recorded_params(camera):
    y, p = DEGRADATIONS["noise10"].apply(camera, seed=7)
    assert y.shape == camera.shape and y.dtype == torch.float32
    assert p["seed"] == 7 and p["noise_sigma"] == 0.1 and p["name"] == "noise10"
    json.dumps(p)
    y, p = DEGRADATIONS["sr2"].apply(camera)
    assert p["seed"] is None and p["scale"] == 2
    g = torch.Generator().manual_seed(3)
    _, p = DEGRADATIONS["blur"].apply(camera, generator=g)
    assert p["seed"] is None and p["generator_initial_seed"] == 3


def test_noise_is_deterministic_under_a_seed(camera):
    d = DEGRADATIONS["noise10"]
    y1, _ = d.apply(camera, seed=0)
    y2, _ = d.apply(camera, seed=0)
    y3, _ = d.apply(camera, seed=1)
    y4, _ = d.apply(camera, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y1, y2) and torch.equal(y1, y4)
    assert not torch.equal(y1, y3)
    b1, _ = DEGRADATIONS["blur"].apply(camera, seed=5)
    b2, _ = DEGRADATIONS["blur"].apply(camera, seed=5)
    assert torch.equal(b1, b2)


def test_random_degradation_needs_a_seed(camera):
    with pytest.raises(ValueError, match="random: pass seed="):
        DEGRADATIONS["noise05"].apply(camera)
    with pytest.raises(ValueError, match="not both"):
        DEGRADATIONS["noise05"].apply(camera, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        DEGRADATIONS["blur"].apply(camera, seed=-1)


@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.2])
def test_noise_std_matches_sigma_and_is_not_clipped(sigma):
    x = torch.full((2, 3, 32, 32), 0.5)
    y = add_gaussian_noise(x, sigma, seed=0)
    e = (y - x).double()
    assert abs(float(e.std()) / sigma - 1.0) < 0.05  # 6144 samples: std error ~0.9 %
    assert abs(float(e.mean())) < 4 * sigma / np.sqrt(e.numel())
    dark = torch.zeros(1, 1, 16, 16)
    assert float(add_gaussian_noise(dark, sigma, seed=0).min()) < 0  # not clipped by default
    clipped = add_gaussian_noise(dark, sigma, seed=0, clip=True)
    assert float(clipped.min()) >= 0 and float(clipped.max()) <= 1
    assert noise_degradation(sigma, clip=True).params["clip"] is True


def test_sr_output_size_modcrop_and_target():
    x = torch.rand(2, 3, 50, 47, generator=torch.Generator().manual_seed(0))
    for s, (h, w) in ((2, (50, 46)), (4, (48, 44))):
        d = DEGRADATIONS[f"sr{s}"]
        y, _ = d.apply(x)
        assert y.shape == (2, 3, h // s, w // s)
        assert d.target(x).shape == (2, 3, h, w)
        assert torch.equal(d.target(x), x[..., :h, :w])  # top-left kept
        assert float(y.min()) >= 0 and float(y.max()) <= 1  # clamped bicubic overshoot
        assert torch.equal(modcrop(x, s), x[..., :h, :w])
    assert DEGRADATIONS["noise10"].target(x) is not None and DEGRADATIONS["noise10"].target(x).shape == x.shape
    with pytest.raises(ValueError, match="smaller than the scale factor 4"):
        modcrop(torch.zeros(1, 1, 3, 8), 4)
    with pytest.raises(ValueError, match="at least 2"):
        sr_degradation(1)


def test_sr_downsampling_is_antialiased_bicubic_like_pil():
    pil = pytest.importorskip("PIL.Image")
    a = np.random.RandomState(0).rand(24, 20).astype(np.float32)
    ref = np.asarray(pil.fromarray(a, mode="F").resize((5, 6), pil.BICUBIC))
    ours = bicubic_downsample(torch.from_numpy(a)[None, None], 4, clamp=False)[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_bicubic_upscale_is_pil_bicubic():
    pil = pytest.importorskip("PIL.Image")
    a = np.random.RandomState(0).rand(6, 5).astype(np.float32) * 0.5 + 0.25  # no overshoot -> no clamp
    ref = np.asarray(pil.fromarray(a, mode="F").resize((20, 24), pil.BICUBIC))
    np.testing.assert_allclose(bicubic_upscale(torch.from_numpy(a)[None, None], 4)[0, 0].numpy(), ref, atol=1e-5)


def test_gaussian_kernel():
    k = gaussian_kernel(9, 2.0)
    assert k.shape == (9, 9) and k.dtype == torch.float64
    assert abs(float(k.sum()) - 1) < 1e-12
    assert torch.equal(k, k.T) and torch.equal(k, k.flip(0))
    assert int(k.argmax()) == 4 * 9 + 4
    np.testing.assert_allclose(float(k[4, 6] / k[4, 4]), np.exp(-4 / 8), rtol=1e-12)
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(8, 2.0)
    with pytest.raises(ValueError, match="sigma must be a finite positive"):
        gaussian_kernel(9, 0.0)


def _slow_circular_conv(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Reference: y[i, j] = sum_{a,b} k[a, b] x[(i - a + rh) % H, (j - b + rw) % W]."""
    h, w = x.shape
    rh, rw = k.shape[0] // 2, k.shape[1] // 2
    y = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            for a in range(k.shape[0]):
                for b in range(k.shape[1]):
                    y[i, j] += k[a, b] * x[(i - a + rh) % h, (j - b + rw) % w]
    return y


def test_circular_blur_equals_slow_convolution():
    rng = np.random.RandomState(1)
    x = rng.rand(2, 2, 11, 13)
    k = rng.rand(3, 5)  # asymmetric: checks orientation (convolution, not correlation) and centring
    ours = circular_blur(torch.from_numpy(x), torch.from_numpy(k)).numpy()
    for n in range(2):
        for c in range(2):
            np.testing.assert_allclose(ours[n, c], _slow_circular_conv(x[n, c], k), atol=1e-12)
    # the blur task without noise is exactly this convolution with the 9x9 sigma=2 Gaussian
    xg = rng.rand(1, 1, 12, 12)
    y, p = blur_degradation(9, 2.0, noise_sigma=0.0).apply(torch.from_numpy(xg))
    np.testing.assert_allclose(y[0, 0].numpy(), _slow_circular_conv(xg[0, 0], gaussian_kernel(9, 2.0).numpy()),
                               atol=1e-12)
    assert p["boundary"] == "circular"


def test_psf2otf_of_a_centred_delta_is_one():
    d = torch.zeros(5, 5, dtype=torch.float64)
    d[2, 2] = 1
    otf = psf2otf(d, (8, 10))
    assert otf.shape == (8, 6)
    assert torch.allclose(otf, torch.ones_like(otf), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="larger than"):
        psf2otf(d, (4, 10))


# =========================================================================== restorers

def test_upscalers_shapes_and_bicubic_beats_nearest(camera):
    for s in (2, 4):
        d = DEGRADATIONS[f"sr{s}"]
        y, _ = d.apply(camera)
        gt = d.target(camera)
        near, bic = nearest_upscale(y, s), bicubic_upscale(y, s)
        assert near.shape == bic.shape == gt.shape
        assert torch.equal(near, y.repeat_interleave(s, -1).repeat_interleave(s, -2))
        assert float(bic.min()) >= 0 and float(bic.max()) <= 1
        gain = float(psnr(bic, gt) - psnr(near, gt))
        assert gain > 1.0, f"sr{s}: bicubic only {gain:.2f} dB over nearest"


def test_median_filter_equals_slow_reference_and_denoises(camera):
    rng = np.random.RandomState(2)
    x = rng.rand(1, 2, 7, 6)
    pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="symmetric")  # == scipy mode="reflect"
    ref = np.empty_like(x)
    for c in range(2):
        for i in range(7):
            for j in range(6):
                ref[0, c, i, j] = np.median(pad[0, c, i:i + 3, j:j + 3])
    np.testing.assert_allclose(median_filter(torch.from_numpy(x), 3).numpy(), ref, atol=1e-12)
    y, _ = DEGRADATIONS["noise10"].apply(camera, seed=0)
    assert _gain(median_filter(y), y, camera) > 2.0


def test_nl_means_denoises_grey_and_rgb(camera, astronaut):
    for x in (camera, astronaut):
        y, _ = DEGRADATIONS["noise10"].apply(x, seed=0)
        out = nl_means(y, 0.1)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert _gain(out, y, x) > 2.5


def test_wiener_matches_skimage_and_deblurs(camera):
    from skimage.restoration import wiener as sk_wiener

    d = DEGRADATIONS["blur"]
    y, _ = d.apply(camera, seed=0)
    k = d.kernel()
    ours = wiener(y, k, nsr=0.005)
    ref = sk_wiener(y[0, 0].double().numpy(), k.numpy(), balance=0.005, reg=np.ones((1, 1)), clip=False)
    np.testing.assert_allclose(ours[0, 0].numpy(), np.clip(ref, 0, 1), atol=1e-5)
    assert _gain(ours, y, camera) > 2.0


def test_admm_objective_decreases_and_deblurs(camera):
    d = DEGRADATIONS["blur"]
    y, _ = d.apply(camera, seed=0)
    out, hist = admm_tv(y, d.kernel(), lam=0.01, rho=1.0, iters=60, return_history=True)
    assert hist.shape == (61, 1) and hist.dtype == torch.float64
    h = hist[:, 0]
    assert float(h[-1]) < float(h[0])
    steps = h[6:] - h[5:-1]
    assert float(steps.max()) <= 1e-9 * float(h[0]), "objective increased after the first iterations"
    assert _gain(out, y, camera) > 2.0


def test_admm_without_noise_and_small_lambda_approaches_sharp_image(camera):
    d = blur_degradation(9, 2.0, noise_sigma=0.0)
    y, _ = d.apply(camera)
    # with lam -> 0 the solution is least squares; a small rho reaches it faster (rho only sets speed)
    out = admm_tv(y, d.kernel(), lam=1e-5, rho=0.01, iters=100)
    assert _gain(out, y, camera) > 5.0


def test_admm_is_vectorised_over_batch_and_channels(astronaut):
    d = DEGRADATIONS["blur"]
    y, _ = d.apply(torch.cat([astronaut, astronaut.flip(-1)]), seed=0)
    both = admm_tv(y, d.kernel(), iters=10)
    one = admm_tv(y[1:, 2:], d.kernel(), iters=10)
    assert torch.allclose(both[1:, 2:], one, atol=1e-6, rtol=0)


# =========================================================================== registry

def test_every_restorer_on_every_task(camera):
    seen = set()
    for dname, d in DEGRADATIONS.items():
        y, _ = d.apply(camera, seed=0)
        gt = d.target(camera)
        for rname, r in RESTORERS.items():
            if d.kind not in r.kinds:
                with pytest.raises(ValueError, match="restores"):
                    r(y, d)
                continue
            if rname in ("admm_tv",):
                out = r(y, d, iters=5)
            else:
                out = r(y, d)
            seen.add(rname)
            assert out.shape == gt.shape and out.dtype == torch.float32, (dname, rname)
            assert float(out.min()) >= 0 and float(out.max()) <= 1
            json.dumps(r.params(d))
    assert seen == set(RESTORERS)


def test_registry_params_overrides_and_bind(camera):
    from evalkit.capabilities import Restorer

    d = DEGRADATIONS["noise10"]
    assert RESTORERS["nl_means"].params(d) == {"sigma": 0.1, "patch_size": 5, "patch_distance": 6,
                                               "h_factor": 0.8, "fast_mode": True}
    assert RESTORERS["wiener"].params(DEGRADATIONS["blur"])["nsr"] == pytest.approx(0.005)
    assert RESTORERS["admm_tv"].params(DEGRADATIONS["blur"], lam=0.02)["lam"] == 0.02
    with pytest.raises(ValueError, match="has no parameter"):
        RESTORERS["median3"].params(d, lam=1)
    y, _ = d.apply(camera, seed=0)
    bound = get_restorer("median3").bind(d)
    assert isinstance(bound, Restorer)
    assert torch.equal(bound.restore(y), median_filter(y, 3))
    with pytest.raises(ValueError, match="unknown baseline"):
        get_restorer("bm3d")
    with pytest.raises(ValueError, match="must be an evalkit.baselines.Degradation"):
        RESTORERS["median3"](y, "noise10")


# =========================================================================== bad input

def test_bad_input_gives_clear_errors(camera):
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        DEGRADATIONS["sr2"].apply(camera[0])
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        DEGRADATIONS["noise10"].apply(camera * 2, seed=0)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        nearest_upscale(camera - 0.5, 2)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        bicubic_upscale(camera + 0.5, 2)
    with pytest.raises(ValueError, match="floating point"):
        median_filter((camera * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="divide 0..255"):
        median_filter(camera * 255)
    with pytest.raises(ValueError, match="NaN or Inf"):
        wiener(torch.full((1, 1, 8, 8), float("nan")), gaussian_kernel(3, 1.0))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        admm_tv(camera[0, 0], gaussian_kernel(9, 2.0))
    with pytest.raises(ValueError, match="odd sides"):
        wiener(camera, torch.ones(4, 4) / 16)
    with pytest.raises(ValueError, match="nsr must be a finite positive"):
        wiener(camera, gaussian_kernel(3, 1.0), nsr=0)
    with pytest.raises(ValueError, match="sums to"):
        admm_tv(camera, torch.tensor([[1.0, -2.0, 1.0]]).T @ torch.tensor([[1.0, 0.0, -1.0]]))
    with pytest.raises(ValueError, match="sigma must be a finite positive"):
        nl_means(camera, 0.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        Degradation("x", "inpaint", {})
