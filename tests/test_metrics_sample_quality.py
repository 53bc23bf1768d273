"""Tests for evalkit.metrics.sample_quality against independent slow references on small inputs."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from evalkit.metrics import (
    KIDResult,
    ModeCoverage,
    PrecisionRecall,
    frechet_distance,
    frechet_distance_from_features,
    kernel_inception_distance,
    mode_coverage,
    precision_recall,
)

# ---------------------------------------------------------------- references


def fd_sqrtm_reference(mu1, s1, mu2, s2):
    """The classical formula with scipy.linalg.sqrtm of S1 S2 (as in the original FID code)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def mmd2_unbiased_loops(x, y, degree=3, coef0=1.0):
    """Unbiased MMD^2 with the polynomial kernel, written as explicit double loops."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + coef0) ** degree

    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def pr_brute_force(real, fake, k):
    """Precision/recall by loops over pairs: radius = k-th smallest distance to the *other* points."""

    def sq(a, b):
        return float(np.sum((a - b) ** 2))

    def radii2(x):
        return np.array([sorted(sq(x[i], x[j]) for j in range(len(x)) if j != i)[k - 1] for i in range(len(x))])

    rr, fr = radii2(real), radii2(fake)
    prec = np.mean([any(sq(f, real[j]) <= rr[j] for j in range(len(real))) for f in fake])
    rec = np.mean([any(sq(r, fake[j]) <= fr[j] for j in range(len(fake))) for r in real])
    return float(prec), float(rec), np.sqrt(rr), np.sqrt(fr)


def random_cov(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d


# ---------------------------------------------------------------- Fréchet distance


@pytest.mark.parametrize("d,rank1,rank2", [(5, None, None), (16, None, None), (12, 4, None), (12, 5, 3), (8, 8, 2)])
def test_fd_matches_sqrtm_reference(d, rank1, rank2):
    rng = np.random.default_rng(d * 100 + (rank1 or 0) + 7 * (rank2 or 0))
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_cov(rng, d, rank1), random_cov(rng, d, rank2)
    ours = frechet_distance(mu1, s1, mu2, s2)
    ref = fd_sqrtm_reference(mu1, s1, mu2, s2)
    # singular products: sqrt of rounding-level (1e-17) eigenvalues adds ~1e-8 per zero
    # eigenvalue to any method's trace, so agreement is only ~1e-7 there
    tol = 1e-9 if rank1 is None and rank2 is None else 1e-6
    assert ours == pytest.approx(ref, rel=tol, abs=tol)
    # symmetric in its arguments
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ours, rel=tol, abs=tol)


def test_fd_identical_and_shifted_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 32)) @ rng.normal(size=(32, 32))
    assert abs(frechet_distance_from_features(x, x)) < 1e-8
    c = rng.normal(size=32) * 3
    assert frechet_distance_from_features(x, x + c) == pytest.approx(float(c @ c), rel=1e-9)
    # rank-deficient features (more dimensions than samples, dead units)
    y = np.zeros((20, 64))
    y[:, :10] = rng.random((20, 10))
    assert abs(frechet_distance_from_features(y, y)) < 1e-8
    assert frechet_distance_from_features(y, y + 1.0) == pytest.approx(64.0, rel=1e-9)


def test_fd_from_features_uses_mean_and_ddof1_cov():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 6)), rng.normal(size=(70, 6)) * 2 + 1
    ref = fd_sqrtm_reference(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert frechet_distance_from_features(torch.from_numpy(x).float(), y) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance_from_features(x, y) == pytest.approx(ref, rel=1e-10)


def test_fd_errors():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 4))
    with pytest.raises(ValueError, match="D=4.*D=3"):
        frechet_distance_from_features(x, x[:, :3])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="f2 contains NaN.*row: 3"):
        frechet_distance_from_features(x, bad)
    with pytest.raises(ValueError, match="f1 has 1 samples.*at least 2"):
        frechet_distance_from_features(x[:1], x)
    with pytest.raises(ValueError, match=r"shape \[N, D\]"):
        frechet_distance_from_features(x[0], x)
    s = np.eye(4)
    with pytest.raises(ValueError, match="sigma2 must have shape"):
        frechet_distance(np.zeros(4), s, np.zeros(4), np.eye(3))
    with pytest.raises(ValueError, match="same length"):
        frechet_distance(np.zeros(4), s, np.zeros(3), s)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        frechet_distance(np.zeros(4), s, np.zeros(4), -s)
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_distance(np.zeros(4), s + np.triu(np.ones((4, 4)), 1), np.zeros(4), s)
    with pytest.raises(ValueError, match="sigma1 contains NaN"):
        frechet_distance(np.zeros(4), s * np.nan, np.zeros(4), s)


def test_fd_tiny_negative_eigenvalues_are_clipped():
    rng = np.random.default_rng(3)
    s = random_cov(rng, 10, 3)
    w, v = np.linalg.eigh(s)
    w[w < 1e-8] = -1e-13  # rounding-level negative eigenvalues
    s_neg = (v * w) @ v.T
    mu = rng.normal(size=10)
    fd = frechet_distance(mu, s_neg, mu, s_neg)
    assert math.isfinite(fd) and abs(fd) < 1e-8


# ---------------------------------------------------------------- KID


def test_kid_matches_double_loop_reference():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.3
    # one subset holding every point: a permutation, so the estimate is the full-sample one
    res = kernel_inception_distance(x, y, subsets=1, subset_size=7)
    assert isinstance(res, KIDResult)
    assert res.mean == pytest.approx(mmd2_unbiased_loops(x, y), rel=1e-10, abs=1e-12)
    assert res.std == 0.0 and res.subset_size == 7 and res.gamma == pytest.approx(1 / 3)
    # subset_size larger than the sets is capped at min(N1, N2)
    with pytest.warns(UserWarning, match="reduced from 1000 to 7"):
        assert kernel_inception_distance(x, y, subsets=2, subset_size=1000).subset_size == 7
    # other kernel parameters
    res2 = kernel_inception_distance(x, y, subsets=1, subset_size=7, degree=2, coef0=0.5)
    assert res2.mean == pytest.approx(mmd2_unbiased_loops(x, y, degree=2, coef0=0.5), rel=1e-10, abs=1e-12)


def test_kid_unbiased_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    same = kernel_inception_distance(a, b, subsets=50, subset_size=200, seed=0)
    shifted = kernel_inception_distance(a, b + 0.5, subsets=50, subset_size=200, seed=0)
    assert same.std > 0
    assert abs(same.mean) < same.std  # unbiased: centred on 0 (a biased V-statistic would be >> std)
    assert (same.values < 0).any()  # the unbiased estimate takes negative values
    assert shifted.mean > 5 * shifted.std and shifted.mean > 50 * abs(same.mean)


def test_kid_seeded():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(100, 8)), rng.normal(size=(90, 8))
    # exact comparisons are fine here: the same code path on the same inputs, same process and
    # thread count (a seeded Generator draws the same subsets as the int seed)
    r1 = kernel_inception_distance(a, b, subsets=5, subset_size=30, seed=3)
    r2 = kernel_inception_distance(a, b, subsets=5, subset_size=30, seed=3)
    r3 = kernel_inception_distance(a, b, subsets=5, subset_size=30, seed=4)
    np.testing.assert_array_equal(r1.values, r2.values)
    assert not np.array_equal(r1.values, r3.values)
    r4 = kernel_inception_distance(a, b, subsets=5, subset_size=30, seed=np.random.default_rng(3))
    np.testing.assert_array_equal(r1.values, r4.values)
    assert r1.std == pytest.approx(np.std(r1.values)) and json.dumps(r1.to_dict())


def test_kid_errors():
    x = np.random.default_rng(7).normal(size=(10, 4))
    with pytest.raises(ValueError, match="dimension mismatch"):
        kernel_inception_distance(x, x[:, :2])
    with pytest.raises(ValueError, match="subsets must be a positive integer"):
        kernel_inception_distance(x, x, subsets=0)
    with pytest.raises(ValueError, match="seed"):
        kernel_inception_distance(x, x, seed="a")
    with pytest.raises(ValueError, match="NaN"):
        kernel_inception_distance(x, np.full((5, 4), np.inf))


# ---------------------------------------------------------------- precision / recall


@pytest.mark.parametrize("k", [1, 3, 5])
def test_pr_matches_brute_force(k):
    rng = np.random.default_rng(10 + k)
    real = rng.normal(size=(45, 4))
    fake = rng.normal(size=(38, 4)) * 1.3 + 0.4
    res = precision_recall(real, fake, k=k)
    prec, rec, rr, fr = pr_brute_force(real, fake, k)
    assert isinstance(res, PrecisionRecall)
    assert (res.precision, res.recall) == (prec, rec)
    assert 0 < res.precision < 1 and 0 < res.recall  # not a trivial case
    np.testing.assert_allclose(res.real_radii, rr, rtol=1e-12)
    np.testing.assert_allclose(res.fake_radii, fr, rtol=1e-12)


def test_pr_chunking_gives_identical_results():
    rng = np.random.default_rng(20)
    real, fake = rng.normal(size=(70, 6)), rng.normal(size=(53, 6)) + 0.3
    base = precision_recall(real, fake, k=3)
    for chunk in (5, 17, 64):
        r = precision_recall(real, fake, k=3, chunk_size=chunk)
        # the decisions (counts) are exact; the radii come through different block shapes, so they
        # are compared to 1e-13 (float64 rounding is ~1e-16; a wrong neighbour differs by > 1e-3)
        assert (r.precision, r.recall) == (base.precision, base.recall)
        np.testing.assert_allclose(r.real_radii, base.real_radii, rtol=1e-13, atol=0)
        np.testing.assert_allclose(r.fake_radii, base.fake_radii, rtol=1e-13, atol=0)


def test_pr_ties_on_a_lattice_count_as_inside():
    """Integer points: squared distances are integers, many equal the radius exactly (<= counts).

    Radii are compared as integer-valued squared radii (exact on any machine) and as distances
    with rtol=1e-12: a sqrt or a sum of squares may differ by an ulp between BLAS/torch builds
    and CPUs, so the float radii are never compared bit-exactly."""
    rng = np.random.default_rng(21)
    real = rng.integers(0, 6, size=(40, 3)).astype(np.float64)
    fake = rng.integers(0, 6, size=(30, 3)).astype(np.float64) + np.array([2.0, 0.0, 0.0])
    res = precision_recall(real, fake, k=2, chunk_size=8)
    prec, rec, rr, fr = pr_brute_force(real, fake, 2)
    assert (res.precision, res.recall) == (prec, rec)
    for ours, ref in ((res.real_radii, rr), (res.fake_radii, fr)):
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(np.rint(ours ** 2).astype(np.int64), np.rint(ref ** 2).astype(np.int64))
    assert (rr > 0).any() and len(np.unique(np.rint(rr ** 2))) > 1  # not a degenerate lattice


def test_pr_tie_tolerance_only_resolves_rounding():
    """A point on a k-NN sphere is inside, also when rounding puts it an ulp outside (TIE_RTOL);
    a point 1e-8 (relative, squared) outside is outside."""
    from evalkit.metrics.sample_quality import TIE_RTOL

    assert 1e-12 <= TIE_RTOL <= 1e-8
    real = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0]])  # k=1 radii: all exactly 1
    ulp_out = -np.nextafter(1.0, 2.0)  # squared distance 1 + 2^-51 > 1: outside for an exact <=
    fake = np.array([[0.0, -1.0], [0.0, ulp_out], [0.0, -(1.0 + 1e-8)], [5.0, 5.0]])
    res = precision_recall(real, fake, k=1)
    np.testing.assert_allclose(res.real_radii, 1.0, rtol=1e-15)
    assert res.precision == 0.5  # the exact tie and the ulp-outside point; not 1e-8 out, not the far one
    assert pr_brute_force(real, fake, 1)[0] == 0.25  # the exact-<= reference has only the tie


def test_pr_of_a_set_against_itself_is_exactly_one():
    """Every point is at distance exactly 0 from itself in the other set, and radii are >= 0."""
    rng = np.random.default_rng(22)
    x = rng.normal(size=(50, 8)) * 100 + 1e4
    for other in (x, x[::-1].copy(), torch.from_numpy(x)):
        res = precision_recall(x, other, k=3, chunk_size=16)
        assert (res.precision, res.recall) == (1.0, 1.0)
    # duplicates: radius 0 for points with >= k copies, still inside their own manifold. With large
    # norms the matmul expansion ||x||^2 + ||y||^2 - 2 x.y is off by ~1e-7 for identical points
    # (fails this test without the direct recomputation of undecided pairs)
    dup = np.repeat(rng.normal(size=(6, 5)) + 1e4, 4, axis=0)
    res = precision_recall(dup, dup[rng.permutation(len(dup))], k=3, chunk_size=5)
    assert (res.precision, res.recall) == (1.0, 1.0)
    assert (res.real_radii == 0).all()


def test_pr_far_disjoint_sets_are_zero():
    rng = np.random.default_rng(23)
    real = rng.normal(size=(30, 4))
    res = precision_recall(real, rng.normal(size=(25, 4)) + 100.0, k=3)
    assert (res.precision, res.recall) == (0.0, 0.0)
    assert json.dumps(res.to_dict())


def test_pr_errors():
    x = np.random.default_rng(24).normal(size=(10, 4))
    with pytest.raises(ValueError, match="fake_features has 3 samples.*at least 4"):
        precision_recall(x, x[:3], k=3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        precision_recall(x, x, k=0)
    with pytest.raises(ValueError, match="dimension mismatch"):
        precision_recall(x, x[:, :3])


# ---------------------------------------------------------------- mode coverage


def test_mode_coverage_histograms():
    uniform = mode_coverage(np.repeat(np.arange(10), 7), 10)
    assert isinstance(uniform, ModeCoverage)
    assert uniform.n_covered == 10 and uniform.kl == pytest.approx(0.0, abs=1e-15)
    assert uniform.counts.tolist() == [7] * 10 and uniform.n_samples == 70
    one = mode_coverage(np.full(50, 3), 10)
    assert one.n_covered == 1 and one.kl == pytest.approx(math.log(10), rel=1e-12)
    assert one.counts.tolist() == [0, 0, 0, 50, 0, 0, 0, 0, 0, 0]
    # two of four classes, 3:1 -> KL = sum p log(4 p)
    two = mode_coverage(torch.tensor([0, 0, 0, 2]), 4)
    assert two.n_covered == 2
    assert two.kl == pytest.approx(0.75 * math.log(3.0) + 0.25 * math.log(1.0), rel=1e-12)
    # min_count: class 2 has a single sample
    assert mode_coverage([0, 0, 0, 2], 4, min_count=2).n_covered == 1
    assert json.dumps(two.to_dict())


def test_mode_coverage_from_probabilities():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.4, 0.4, 0.2]])
    res = mode_coverage(probs, 3)  # argmax; the tie in the last row goes to class 0
    assert res.counts.tolist() == [3, 1, 0] and res.n_covered == 2


def test_mode_coverage_errors():
    with pytest.raises(ValueError, match=r"0\.\.9"):
        mode_coverage([0, 10], 10)
    with pytest.raises(ValueError, match="columns"):
        mode_coverage(np.ones((4, 3)) / 3, 10)
    with pytest.raises(ValueError, match="integers"):
        mode_coverage([0.5, 1.0], 10)
    with pytest.raises(ValueError, match="at least one"):
        mode_coverage(np.zeros(0, dtype=int), 10)
    with pytest.raises(ValueError, match="n_classes"):
        mode_coverage([0], 0)
