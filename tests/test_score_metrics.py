"""The score metrics against known answers: closed forms, hand-worked examples, brute force."""

import re

import numpy as np
import pytest

from jaxaug.score_lib import consistency, metrics

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
  value, _, se = metrics.kid(x, y, subset_size=100, subsets=50)
  assert abs(value) < 3 * se and se > 0
  shifted, _, se_shifted = metrics.kid(x, y + 0.5, subset_size=100, subsets=50)
  assert shifted > 5 * se_shifted


def test_kid_standard_error_matches_the_spread_over_independent_draws():
  """The reported standard error is about the standard deviation of KID between independent data sets."""
  rng = np.random.default_rng(6)
  values, errors = [], []
  for _ in range(30):
    x, y = rng.normal(size=(300, 6)), rng.normal(size=(300, 6)) + 0.3
    value, _, se = metrics.kid(x, y, subset_size=1000, subsets=40, seed=int(rng.integers(1 << 30)))
    values.append(value)
    errors.append(se)
  ratio = np.mean(errors) / np.std(values, ddof=1)
  assert 0.6 < ratio < 1.6, ratio


def test_kid_reports_the_subsets_standard_deviation_as_torch_fidelity_and_its_standard_error():
  """subset_std is np.std (ddof 0) of the subsets' MMD^2, as torch-fidelity and torchmetrics print; the standard error
  is the ddof-1 spread scaled by sqrt(m / n), so it shrinks with more data while the subsets' spread does not."""
  rng = np.random.default_rng(13)
  x, y = rng.normal(size=(400, 6)), rng.normal(size=(400, 6)) + 0.2
  result = metrics.kid(x, y, subset_size=50, subsets=30, seed=3)
  draw = np.random.default_rng(3)
  subsets = [metrics.mmd2_unbiased(x[draw.choice(400, 50, replace=False)], y[draw.choice(400, 50, replace=False)])
             for _ in range(30)]
  assert result.value == pytest.approx(np.mean(subsets), rel=1e-12)
  assert result.subset_std == pytest.approx(np.std(subsets), rel=1e-12)
  assert result.standard_error == pytest.approx(np.std(subsets, ddof=1) * np.sqrt(50 / 400), rel=1e-12)
  assert result.standard_error < result.subset_std / 2


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


def test_identical_sets_have_precision_recall_coverage_and_density_one():
  """Open balls: each ball holds its centre and k - 1 neighbours, not the k-th, so density is exactly 1 (closed
  balls gave (k + 1) / k = 1.2)."""
  rng = np.random.default_rng(7)
  x = rng.normal(size=(300, 16)).astype(np.float32)
  for budget in (BIG, TINY):
    assert metrics.prdc(x, x.copy(), k=5, budget=budget) == {"precision": 1.0, "recall": 1.0, "density": 1.0,
                                                               "coverage": 1.0}


LINE_REAL = np.array([[0, 0], [2, 0], [4, 0], [6, 0], [12, 0]], np.float32)  # on a line: every distance exact
LINE_FAKE = np.array([[1, 0], [6, 0], [9, 0]], np.float32)


def test_prdc_ties_on_a_hand_made_line():
  """k = 1, distances are whole numbers, so ties are exact. Real radii: 0, 2, 4, 6 -> 2; 12 -> 6.
  Fake radii: 1 -> 5 (to 6), 6 -> 3 (to 9), 9 -> 3 (to 6).

  precision: fake 1 in the balls of 0 and 2 (1 < 2); fake 6 in 6's (0 < 2) but not 4's (2, a tie) nor 12's (6, a
    tie); fake 9 in 12's (3 < 6): 3/3, density (2 + 1 + 1) / 3.
  recall: real 0, 2, 4 in fake 1's ball (1, 1, 3 < 5), 6 in fake 6's (0 < 3); 12 is at 3 from fake 9, whose radius is
    3 (a tie): 4/5.
  coverage: real 4's nearest fake is at 2, its radius (a tie); the others' are inside: 4/5.
  Closed balls (the old <=) gave 1, 1, 2, 1.
  """
  for budget in (BIG, TINY):
    result = metrics.prdc(LINE_REAL, LINE_FAKE, k=1, budget=budget)
    assert result == pytest.approx({"precision": 1.0, "recall": 0.8, "density": 4 / 3, "coverage": 0.8}, abs=1e-12)


def test_prdc_of_duplicated_rows_by_hand():
  """Three copies each of A = (0, 0) and B = (10, 0) against three copies of A and C = (7, 0), k = 2: every real ball
  has radius 0 (two copies at distance 0) and holds nothing, so precision, density and coverage are 0; the fake A
  balls (radius 0) hold nothing, C's (radius 7, to the A copies) holds the B copies (3 < 7) but not the A copies
  (7, a tie): recall 1/2. Closed balls gave 3/4, 1, 1.125, 1/2."""
  a, b, c = [0, 0], [10, 0], [7, 0]
  real = np.array([a, a, a, b, b, b], np.float32)
  fake = np.array([a, a, a, c], np.float32)
  for budget in (BIG, TINY):
    assert metrics.prdc(real, fake, k=2, budget=budget) == {"precision": 0.0, "recall": 0.5, "density": 0.0,
                                                            "coverage": 0.0}


def _issue_19_duplicates():
  rng = np.random.default_rng(0)
  base = rng.standard_normal((20, 64))
  return base[rng.integers(0, 20, 500)], base[rng.integers(0, 20, 500)]


def test_prdc_of_the_issues_duplicated_sets_is_zero_as_prdc_0_2_computes():
  """Issue 19's repro: 20 points, each repeated about 25 times in both sets, k = 5. prdc 0.2's compute_prdc gives
  0 / 0 / 0 / 0 (every ball has radius 0); the old closed balls gave 1 / 1 / 5.0 / 1. Equal rows are at distance
  exactly 0 here (`equal_row_ids`), where the matrix product leaves ~3e-3 of rounding noise."""
  x, y = _issue_19_duplicates()
  for budget in (BIG, TINY):
    assert metrics.prdc(x, y, 5, budget) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
  ids = metrics.equal_row_ids(x, y)
  assert len(np.unique(np.concatenate(ids))) == 20 and metrics.equal_row_ids(x[:1], y[:0]) is None
  assert metrics.equal_row_ids(np.array([[0.0, 1.0]]), np.array([[-0.0, 1.0]])) is not None  # -0.0 == 0.0


def test_prdc_agrees_with_the_reference_prdc_package():
  """Where prdc (the authors' package, 0.2) is installed: random sets, a collapsed generator, the line. (Not random
  sets sharing rows: a fake row equal to real row i ties with the ball of the real row whose k-th neighbour is i,
  and the reference decides such a tie by float rounding; the line decides it exactly. Nor the issue's duplicates:
  the reference's radius of a duplicated row is sklearn's rounding noise, 0 on one CPU and 1.19e-7 on another, an
  AMD EPYC of 2026-12-04, where its recall came out 0.002 instead of 0; the exact answer is tested above.)"""
  reference = pytest.importorskip("prdc")
  rng = np.random.default_rng(14)
  real = rng.normal(size=(200, 8))
  collapsed = rng.normal(size=(3, 8))[rng.integers(0, 3, 100)]
  cases = [(real, rng.normal(size=(150, 8)) + 0.3, 5), (real, collapsed, 3), (LINE_REAL, LINE_FAKE, 1)]
  for x, y, k in cases:
    expected = reference.compute_prdc(np.asarray(x, np.float32), np.asarray(y, np.float32), k)
    assert metrics.prdc(x, y, k, BIG) == pytest.approx({key: float(v) for key, v in expected.items()}, abs=1e-12)


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


# ---------------------------------------------------------------------------
# Class consistency


def test_top_k_breaks_equal_similarities_by_the_lower_real_row():
  sims = np.array([[0.5, 0.9, 0.5, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]], np.float32)
  assert consistency.top_k(sims, 3).tolist() == [[1, 0, 2], [0, 1, 2]]
  assert consistency.top_k(sims, 1).tolist() == [[1], [0]]
  assert consistency.top_k(sims, 9).tolist() == [[1, 0, 2, 3, 4], [0, 1, 2, 3, 4]]  # k beyond the real set: all


def test_top_k_is_the_sorted_order_on_random_rows_full_of_ties():
  """Against the definition (sort by value, higher first, then column): values of quarters, so ties fall across the
  k-th place (argpartition's arbitrary choice must not show), k below, at and above the row length."""
  rng = np.random.default_rng(15)
  for _ in range(200):
    rows, n, k = int(rng.integers(1, 6)), int(rng.integers(1, 30)), int(rng.integers(1, 35))
    sims = rng.integers(0, 4, (rows, n)).astype(np.float32) / 4
    expected = [sorted(range(n), key=lambda j: (-sims[r, j], j))[:k] for r in range(rows)]
    assert consistency.top_k(sims, k).tolist() == expected


def test_a_tied_class_vote_goes_to_the_class_of_the_nearer_neighbour():
  assert consistency.majority(np.array([[3, 1, 1, 3], [2, 5, 5, 1], [4, 4, 0, 0]])).tolist() == [3, 5, 4]


REAL_VOTERS = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], np.float32)  # classes 0, 1, 1, 2
VOTER_LABELS = np.array([0, 1, 1, 2])


def test_class_votes_by_hand():
  """k = 2. (1, 0), class 0: nearest (1, 0) and (1, 1), one vote each: the nearer, class 0, wins; margin 1 - cos 45.
  (1, 1), class 0: (1, 1) then (1, 0) and (0, 1) tie at cos 45, the lower row (1, 0) is taken: class 1 wins the tied
  vote by the nearer (1, 1); margin cos 45 - 1. (0, 1), class 2: two votes for class 1; margin 0 (to (-1, 0)) - 1.
  k = 3 adds (0, 1) to (1, 0)'s neighbours: class 1 then outvotes class 0."""
  synthetic = np.array([[1, 0], [1, 1], [0, 1]], np.float32)
  labels = np.array([0, 0, 2])
  for budget in (BIG, TINY):
    votes = consistency.vote(synthetic, labels, REAL_VOTERS, VOTER_LABELS, 2, budget)
    assert votes.nearest_class.tolist() == [0, 1, 1] and votes.own_votes.tolist() == [1, 1, 0]
    assert votes.margin == pytest.approx([1 - np.sqrt(0.5), np.sqrt(0.5) - 1, -1.0], abs=1e-6)
    assert votes.consistent(labels).tolist() == [True, False, False]
    assert consistency.share(votes, labels, np.arange(3)) == pytest.approx(1 / 3)
  assert consistency.vote(synthetic, labels, REAL_VOTERS, VOTER_LABELS, 3, BIG).nearest_class.tolist()[0] == 1


def test_keep_rules_parse_or_say_why():
  assert consistency.parse_keep_rule(" own_in_k ") == consistency.KeepRule("own_in_k")
  rule = consistency.parse_keep_rule("drop_bottom=0.1")
  assert rule == consistency.KeepRule("drop_bottom", 0.1) and str(rule) == "drop_bottom=0.1"
  assert consistency.parse_keep_rule(str(rule)) == rule
  for bad, says in (("drop_bottom=1", "must lie in (0, 1)"), ("drop_bottom=0", "must lie in (0, 1)"),
                    ("drop_bottom=nan", "must lie in (0, 1)"), ("drop_bottom=x", "takes a fraction"),
                    ("drop_bottom", "unknown rule"), ("own", "unknown rule")):
    with pytest.raises(ValueError, match=re.escape(says)):
      consistency.parse_keep_rule(bad)


def test_keep_rules_by_hand():
  """Class 0 ranks (own votes, margin, item id) 11 (0, -.2), 13 (3, .02), 12 (3, .05), 10 (5, .1); class 1 ranks
  16 (0), 14 (1), 15 (2). drop_bottom=0.5 drops floor(0.5 n) of each: 11 and 13, then 16."""
  votes = consistency.Votes(k=5, nearest_class=np.array([0, 1, 0, 0, 1, 2, 2]),
                            own_votes=np.array([5, 0, 3, 3, 1, 2, 0]),
                            margin=np.array([0.1, -0.2, 0.05, 0.02, 0.0, 0.0, 0.0], np.float32))
  labels, items = np.array([0, 0, 0, 0, 1, 1, 1]), np.arange(10, 17)
  kept = lambda rule: consistency.kept(consistency.parse_keep_rule(rule), votes, labels, items).tolist()
  assert kept("own_class") == [True, False, True, True, True, False, False]
  assert kept("own_in_k") == [True, False, True, True, True, True, False]
  assert kept("drop_bottom=0.5") == [True, False, True, False, True, True, False]
  assert kept("drop_bottom=0.2") == [True] * 7  # floor(0.2 x 4) = floor(0.2 x 3) = 0: never more than asked
  assert consistency.agreement_order(votes, items).tolist() == [1, 6, 4, 5, 3, 2, 0]  # over all classes


def test_the_real_sets_own_consistency_leaves_each_image_out():
  """Each real image voted on by the others (k = 2). (1, 0): (1, 1) and (0, 1), class 1, not its own. (0, 1): (1, 1),
  then (1, 0) and (-1, 0) tie at cos 90 and the lower row (1, 0) is taken; the 1-1 vote goes to the nearer (1, 1),
  class 1, its own. (1, 1): (1, 0) and (0, 1) at cos 45, the vote tied, (1, 0) first: class 0, not its own.
  (-1, 0): (0, 1) and (1, 1), class 1, not its own 2. k = 9 asks for more voters than the others: all of them
  vote, never the image itself."""
  for k in (2, 9):
    votes = consistency.vote(REAL_VOTERS, VOTER_LABELS, REAL_VOTERS, VOTER_LABELS, k, BIG, leave_out_self=True)
    assert np.isfinite(votes.margin).all()
  votes = consistency.vote(REAL_VOTERS, VOTER_LABELS, REAL_VOTERS, VOTER_LABELS, 2, TINY, leave_out_self=True)
  assert votes.nearest_class.tolist() == [1, 1, 0, 1]
  assert votes.consistent(VOTER_LABELS).tolist() == [False, True, False, False]
  one = consistency.vote(REAL_VOTERS[:1], VOTER_LABELS[:1], REAL_VOTERS[:1], VOTER_LABELS[:1], 2, BIG, True)
  assert one.nearest_class.tolist() == [-1] and consistency.share(one, VOTER_LABELS[:1], np.arange(1)) == 0.0
