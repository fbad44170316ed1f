"""The score metrics against known answers: closed forms, hand-worked examples, brute force."""

import numpy as np
import pytest

from jaxaug.score_lib import metrics

BIG = 256 * metrics.MIB  # one block
TINY = 1  # one row per block: the blocked loops must give the same answers


def _spd(rng, d):
  a = rng.normal(size=(d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


# ---------------------------------------------------------------------------
# Frechet distance


def test_fd_of_diagonal_gaussians_by_hand():
  # sqrt(diag(1, 4) diag(4, 9)) = diag(2, 6): FD = |(3, 4)|^2 + (1 + 4) + (4 + 9) - 2 (2 + 6) = 25 + 2
  fd = metrics.frechet_distance_gaussians(np.zeros(2), np.diag([1.0, 4.0]), np.array([3.0, 4.0]), np.diag([4.0, 9.0]))
  assert fd == pytest.approx(27.0, rel=1e-12)


def test_fd_of_gaussians_matches_scipy_sqrtm():
  linalg = pytest.importorskip("scipy.linalg")
  rng = np.random.default_rng(0)
  for d in (3, 16, 64):
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _spd(rng, d), _spd(rng, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert metrics.frechet_distance_gaussians(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fd_from_samples_uses_the_sample_gaussians_on_both_paths():
  """n <= d takes the centred-data factor, n > d the covariance's square root: both are the same FD."""
  linalg = pytest.importorskip("scipy.linalg")
  rng = np.random.default_rng(1)
  d = 12
  for n in (5, 12, 300):  # few rows (rank-deficient covariance) and many
    x = rng.normal(size=(n, d)).astype(np.float32) * 3 + 100  # a large mean must not cancel the spread
    y = rng.normal(size=(n + 3, d)).astype(np.float32) * 2 + 101
    sx, sy = np.cov(x.astype(np.float64), rowvar=False), np.cov(y.astype(np.float64), rowvar=False)
    diff = x.mean(0, dtype=np.float64) - y.mean(0, dtype=np.float64)
    expected = diff @ diff + np.trace(sx + sy - 2 * linalg.sqrtm(sx @ sy).real)
    assert metrics.fd(x, y) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    data_factor = metrics.frechet_distance(*metrics.covariance_factor(x, data_rows=1000), *metrics.covariance_factor(y))
    assert data_factor == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_identical_sets_have_zero_fd():
  rng = np.random.default_rng(2)
  for n in (6, 500):
    x = rng.normal(size=(n, 32)).astype(np.float32)
    assert metrics.fd(x, x) == 0.0  # exactly: cancellation's rounding is below the floor
    assert metrics.fd(x, x + 1) == pytest.approx(32.0, rel=1e-5)  # a shift of 1 in every dimension
  assert metrics.fd(x[:1], x) is None


def test_fd_of_large_samples_approaches_the_population_value():
  rng = np.random.default_rng(3)
  d = 4
  mu1, mu2, s1, s2 = np.zeros(d), np.full(d, 0.5), _spd(rng, d), _spd(rng, d)
  x = rng.multivariate_normal(mu1, s1, size=200_000)
  y = rng.multivariate_normal(mu2, s2, size=200_000)
  assert metrics.fd(x, y) == pytest.approx(metrics.frechet_distance_gaussians(mu1, s1, mu2, s2), rel=0.02)


# ---------------------------------------------------------------------------
# KID


def test_mmd2_matches_a_direct_computation_with_sklearns_kernel():
  pairwise = pytest.importorskip("sklearn.metrics.pairwise")
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(7, 5)), rng.normal(size=(9, 5)) + 0.3
  k = lambda a, b: pairwise.polynomial_kernel(a, b, degree=3, gamma=1 / 5, coef0=1)
  kxx, kyy = k(x, x), k(y, y)
  expected = ((kxx.sum() - np.trace(kxx)) / (7 * 6) + (kyy.sum() - np.trace(kyy)) / (9 * 8) - 2 * k(x, y).mean())
  assert metrics.mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-5)  # float32 products


def test_kid_is_zero_for_one_distribution_and_positive_for_two():
  rng = np.random.default_rng(5)
  x, y = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
  value, se = metrics.kid(x, y, subset_size=100, subsets=50)
  assert abs(value) < 3 * se and se > 0
  shifted, se_shifted = metrics.kid(x, y + 0.5, subset_size=100, subsets=50)
  assert shifted > 5 * se_shifted


def test_kid_standard_error_matches_the_spread_over_independent_draws():
  """The reported standard error is about the standard deviation of KID between independent data sets."""
  rng = np.random.default_rng(6)
  values, errors = [], []
  for _ in range(30):
    x, y = rng.normal(size=(300, 6)), rng.normal(size=(300, 6)) + 0.3
    value, se = metrics.kid(x, y, subset_size=1000, subsets=40, seed=int(rng.integers(1 << 30)))
    values.append(value)
    errors.append(se)
  ratio = np.mean(errors) / np.std(values, ddof=1)
  assert 0.6 < ratio < 1.6, ratio


def test_kid_needs_four_rows():
  assert metrics.kid(np.zeros((3, 2)), np.zeros((10, 2)), 100, 10) is None


# ---------------------------------------------------------------------------
# PRDC


REAL_2D = np.array([[0, 0], [0, 2], [10, 0], [10, 4]], np.float32)  # A B C D
FAKE_2D = np.array([[0, 1.2], [1, 1.2], [13, 0], [13, 1], [5, 20]], np.float32)  # P P2 Q Q2 S


def test_prdc_on_a_hand_made_2d_example():
  """k = 1. Real radii (nearest other real): A 2, B 2, C 4, D 4. Fake radii: P 1, P2 1, Q 1, Q2 1, S 19.22 (to P2).

  Real balls holding each fake: P {A 1.2, B 0.8}, P2 {A 1.56, B 1.28}, Q {C 3}, Q2 {C 3.16}, S {} (D 16.8 > 4):
    precision = 4/5 (S is in none), density = (2 + 2 + 1 + 1 + 0) / (1 * 5) = 1.2.
  Fake balls holding each real: A none (P 1.2 > 1, S 20.6 > 19.22), B in P's (0.8), C none (Q 3 > 1, S 20.6),
    D in S's (16.76 <= 19.22): recall = 2/4.
  Nearest fake within the real's own radius: A P 1.2 <= 2, B P 0.8 <= 2, C Q 3 <= 4, D Q2 4.24 > 4:
    coverage = 3/4.
  """
  for budget in (BIG, TINY):
    result = metrics.prdc(REAL_2D, FAKE_2D, k=1, budget=budget)
    assert result == pytest.approx({"precision": 0.8, "recall": 0.5, "density": 1.2, "coverage": 0.75})
  assert metrics.knn_radii(REAL_2D, 1, BIG) == pytest.approx([2, 2, 4, 4])
  assert metrics.knn_radii(FAKE_2D, 1, TINY) == pytest.approx([1, 1, 1, 1, np.sqrt(16 + 18.8**2)], rel=1e-6)


def test_identical_sets_have_precision_recall_and_coverage_one():
  rng = np.random.default_rng(7)
  x = rng.normal(size=(300, 16)).astype(np.float32)
  result = metrics.prdc(x, x.copy(), k=5, budget=BIG)
  assert result["precision"] == result["recall"] == result["coverage"] == 1.0
  assert 0.8 < result["density"] < 1.3


def test_a_collapsed_set_has_no_diversity_low_recall_and_low_coverage():
  rng = np.random.default_rng(8)
  real = rng.normal(size=(400, 16)).astype(np.float32)
  collapsed = np.repeat(rng.normal(size=(1, 16)).astype(np.float32), 400, axis=0)
  fresh = rng.normal(size=(400, 16)).astype(np.float32)
  bad, good = metrics.prdc(real, collapsed, 5, BIG), metrics.prdc(real, fresh, 5, BIG)
  assert bad["recall"] <= 1 / 400 and bad["coverage"] < 0.05
  assert good["recall"] > 0.8 and good["coverage"] > 0.8
  u = metrics.unit_rows(collapsed)
  assert metrics.mean_pairwise_cosine_distance(u) == pytest.approx(0.0, abs=1e-6)
  assert metrics.vendi_score(u) == pytest.approx(1.0, abs=1e-6)
  assert metrics.vendi_score(metrics.unit_rows(fresh)) > 10


def test_knn_radii_need_k_plus_one_rows():
  with pytest.raises(ValueError, match="at least 6 rows"):
    metrics.knn_radii(np.zeros((5, 2), np.float32), 5, BIG)


# ---------------------------------------------------------------------------
# Diversity


def test_vendi_of_n_orthogonal_items_is_n():
  rng = np.random.default_rng(9)
  q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
  for n in (1, 5, 16):
    assert metrics.vendi_score(q[:n]) == pytest.approx(n, rel=1e-9)  # n <= d: the n x n side


def test_vendi_uses_either_gram_side_with_the_same_answer():
  rng = np.random.default_rng(10)
  u = metrics.unit_rows(rng.normal(size=(40, 6)))  # n > d: the d x d side
  values = np.linalg.eigvalsh(u @ u.T / 40)
  values = values[values > 1e-12]
  assert metrics.vendi_score(u) == pytest.approx(np.exp(-np.sum(values * np.log(values))), rel=1e-9)


def test_mean_pairwise_cosine_distance_matches_brute_force():
  rng = np.random.default_rng(11)
  u = metrics.unit_rows(rng.normal(size=(9, 4)))
  brute = np.mean([1 - u[i] @ u[j] for i in range(9) for j in range(9) if i != j])
  assert metrics.mean_pairwise_cosine_distance(u) == pytest.approx(brute, rel=1e-12)
  assert metrics.mean_pairwise_cosine_distance(u[:1]) is None


def test_nearest_cosine_blocks_agree():
  rng = np.random.default_rng(12)
  a, b = metrics.unit_rows(rng.normal(size=(13, 5))), metrics.unit_rows(rng.normal(size=(7, 5)))
  index, sim = metrics.nearest_cosine(a, b, TINY)
  assert index.tolist() == np.argmax(a @ b.T, axis=1).tolist()
  assert sim == pytest.approx(np.max(a @ b.T, axis=1), rel=1e-5)
