"""Tests for evalkit.metrics.image_quality against scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from evalkit.metrics import psnr, rgb_to_y, ssim


def sk_ssim_ref(a, b, channel_axis=None, data_range=1.0):
    return sk_ssim(a, b, data_range=data_range, gaussian_weights=True, sigma=1.5,
                   use_sample_covariance=False, channel_axis=channel_axis)


def y_numpy(img):
    """Reference BT.601 luma for a [3, H, W] image in [0, 1]."""
    r, g, b = img
    return (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def make_pair(kind, shape, seed):
    rng = np.random.default_rng(seed)
    if kind == "random":
        x = rng.random(shape)
    else:  # smooth
        x = gaussian_filter(rng.random(shape), sigma=[0] * (len(shape) - 2) + [3, 3])
        x = (x - x.min()) / (x.max() - x.min())
    y = np.clip(x + rng.normal(0, 0.05, shape), 0, 1)
    return x, y


@pytest.mark.parametrize("kind", ["random", "smooth"])
@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("crop", [0, 4])
def test_psnr_ssim_match_skimage(kind, c, crop):
    x, y = make_pair(kind, (3, c, 40, 36), seed=c + crop)
    p = psnr(x, y, crop_border=crop)
    s = ssim(torch.from_numpy(x).float(), torch.from_numpy(y).float(), crop_border=crop)
    assert p.shape == (3,) and s.shape == (3,)
    for i in range(3):
        a = x[i][:, crop:40 - crop, crop:36 - crop]
        b = y[i][:, crop:40 - crop, crop:36 - crop]
        assert p[i].item() == pytest.approx(sk_psnr(a, b, data_range=1.0), abs=1e-6)
        # float32 inputs vs float64 skimage: agreement to ~1e-4 required
        if c == 1:
            ref = sk_ssim_ref(a[0].astype(np.float32).astype(np.float64),
                              b[0].astype(np.float32).astype(np.float64))
        else:
            ref = sk_ssim_ref(a.astype(np.float32).astype(np.float64),
                              b.astype(np.float32).astype(np.float64), channel_axis=0)
        assert abs(s[i].item() - ref) < 1e-4


def test_single_image_shapes_and_data_range():
    x, y = make_pair("smooth", (1, 3, 32, 32), seed=0)
    assert psnr(x[0], y[0]).shape == (1,)
    assert ssim(x[0, 0], y[0, 0]).item() == pytest.approx(sk_ssim_ref(x[0, 0], y[0, 0]), abs=1e-10)
    x255, y255 = x * 255, y * 255
    assert psnr(x255, y255, data_range=255).item() == pytest.approx(psnr(x, y).item(), abs=1e-9)
    assert ssim(x255, y255, data_range=255).item() == pytest.approx(
        sk_ssim_ref(x255[0], y255[0], channel_axis=0, data_range=255), abs=1e-8)


def test_y_channel_against_numpy_reference():
    x, y = make_pair("smooth", (2, 3, 30, 30), seed=5)
    p = psnr(x, y, channel="y", crop_border=2)
    s = ssim(x, y, channel="y", crop_border=2)
    for i in range(2):
        a, b = y_numpy(x[i])[2:-2, 2:-2], y_numpy(y[i])[2:-2, 2:-2]
        assert p[i].item() == pytest.approx(sk_psnr(a, b, data_range=1.0), abs=1e-6)
        assert s[i].item() == pytest.approx(sk_ssim_ref(a, b), abs=1e-8)
    np.testing.assert_allclose(rgb_to_y(torch.from_numpy(x))[:, 0].numpy(),
                               np.stack([y_numpy(im) for im in x]), atol=1e-12)


def test_identical_images():
    x, _ = make_pair("random", (2, 1, 16, 16), seed=1)
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))


def test_bad_inputs():
    x = np.random.default_rng(0).random((2, 3, 16, 16))
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, x[:1])
    with pytest.raises(ValueError, match="NaN"):
        bad = x.copy()
        bad[0, 0, 0, 0] = np.nan
        psnr(bad, x)
    with pytest.raises(ValueError, match=r"outside \[0, data_range"):
        ssim(x * 255, x * 255)
    with pytest.raises(ValueError, match="crop_border"):
        psnr(x, x, crop_border=8)
    with pytest.raises(ValueError, match="channel"):
        psnr(x, x, channel="ycbcr")
    with pytest.raises(ValueError, match="C=3"):
        psnr(x[:, :1], x[:, :1], channel="y")
    with pytest.raises(ValueError, match="11x11"):
        ssim(x, x, crop_border=3)
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((1, 1, 1, 4, 4)), np.zeros((1, 1, 1, 4, 4)))
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, data_range=0)
