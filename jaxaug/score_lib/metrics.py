"""Fidelity and diversity of image embeddings: small pure numpy functions, each saying why it has its form.

A set is a float array (n, d) of embeddings. Statistics (means, covariances, spectra, kernel sums) are
float64. Pairwise work (distances, similarities) multiplies float32 blocks whose rows are chosen so that a
block's temporaries stay under `budget` bytes: memory is bounded whatever the set sizes (`rows_per_block`).

  frechet_distance      FD between Gaussians fitted to two sets (FD-CLIP on CLIP embeddings)
  kid                   kernel inception distance (Binkowski et al. 2018): the subsets' standard deviation and
                        a standard error of the whole-set estimate
  prdc                  precision, recall, density, coverage (Naeem et al. 2020), the reference definition
  mean_pairwise_cosine_distance, vendi_score     diversity within a set
  nearest_cosine        each row's most similar row of another set (the copy check)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

MIB = 2**20
# Bytes per element of a (rows x columns) distance block alive at once: the float64 product, the float32
# distances and one float32-sized comparison temporary.
_BLOCK_BYTES = 16


def rows_per_block(columns: int, budget: int) -> int:
  """Rows of a (rows x columns) distance block so that its few temporaries fit in `budget` bytes."""
  return max(1, int(budget) // (_BLOCK_BYTES * max(int(columns), 1)))


# ---------------------------------------------------------------------------
# Frechet distance


def covariance_factor(x, data_rows: int | None = None, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
  """(mean, A) in float64 with A @ A.T the unbiased covariance of the rows of x (n >= 2).

  Up to `data_rows` rows (default: d), A is the centred rows over sqrt(n - 1), a d x n matrix: exact and
  cheap, and the distance then costs work in n, not d^3. More rows: the d x d covariance is summed in
  float64 chunks around a shift (the first chunk's mean), so a large mean does not cancel the small
  spread, and A is its square root from a symmetric eigendecomposition (`gaussian_factor`). `x` may be
  any array-like with a shape that slices and gathers rows (a view of 1.2 M rows is never copied whole).
  """
  n, d = x.shape
  if n < 2:
    raise ValueError(f"a covariance needs at least 2 rows, not {n}")
  if n <= max(d, data_rows or 0):
    x64 = np.asarray(x, np.float64)
    mean = x64.mean(axis=0)
    return mean, (x64 - mean).T / math.sqrt(n - 1)
  shift = np.asarray(x[:chunk], np.float64).mean(axis=0)
  total, outer = np.zeros(d), np.zeros((d, d))
  for start in range(0, n, chunk):
    z = np.asarray(x[start:start + chunk], np.float64) - shift
    total += z.sum(axis=0)
    outer += z.T @ z
  mean = shift + total / n
  return mean, gaussian_factor((outer - np.outer(total, total) / n) / (n - 1))


def gaussian_factor(sigma: np.ndarray) -> np.ndarray:
  """A with A @ A.T = sigma, for a symmetric positive semi-definite sigma (eigh, negatives clipped)."""
  sigma = np.asarray(sigma, np.float64)
  values, vectors = np.linalg.eigh((sigma + sigma.T) / 2)
  return vectors * np.sqrt(np.clip(values, 0.0, None))


def trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
  """tr sqrtm(Sa Sb) for Sa = a a^T and Sb = b b^T: the sum of the singular values of a^T b.

  Sa Sb = a (a^T b b^T) has the nonzero eigenvalues of (a^T b)(a^T b)^T, the squared singular values of
  a^T b. An SVD is backward stable and has no negative or complex eigenvalues to repair, which scipy's
  sqrtm of the non-symmetric product Sa Sb produces under rounding.
  """
  return float(np.linalg.svd(np.asarray(a, np.float64).T @ np.asarray(b, np.float64), compute_uv=False).sum())


def frechet_distance(mean1, factor1, mean2, factor2) -> float:
  """||m1 - m2||^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2), with Si = factor_i factor_i^T (Dowson & Landau 1982).

  tr Si is the squared Frobenius norm of its factor. For identical sets the terms cancel, and what is left
  is rounding of either sign (a few eps x d x the terms' size, which differs between numpy/BLAS builds):
  anything within that floor is reported as 0, so that identical sets score 0 on every build.
  """
  diff = np.asarray(mean1, np.float64) - np.asarray(mean2, np.float64)
  terms = diff @ diff + np.sum(np.square(factor1)) + np.sum(np.square(factor2))
  value = float(terms - 2.0 * trace_sqrt_product(factor1, factor2))
  floor = 16 * len(diff) * np.finfo(np.float64).eps * float(terms)
  return value if value > floor else 0.0


def frechet_distance_gaussians(mean1, sigma1, mean2, sigma2) -> float:
  """The Frechet distance between N(mean1, sigma1) and N(mean2, sigma2)."""
  return frechet_distance(mean1, gaussian_factor(sigma1), mean2, gaussian_factor(sigma2))


def fd(x: np.ndarray, y: np.ndarray) -> float | None:
  """FD between Gaussians fitted to the rows of x and of y; None if either has fewer than 2 rows."""
  if len(x) < 2 or len(y) < 2:
    return None
  return frechet_distance(*covariance_factor(x), *covariance_factor(y))


# ---------------------------------------------------------------------------
# Kernel inception distance


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """k(a, b) = (a.b / d + 1)^3, the kernel KID is defined with (Binkowski et al. 2018), in float64.

  The products are float32 (the embeddings' own precision, at twice float64's speed); the cube and every
  later sum are float64. The cube is two multiplications: `** 3` on a float array calls pow per element.
  """
  k = (np.asarray(a, np.float32) @ np.asarray(b, np.float32).T).astype(np.float64)
  k /= a.shape[1]
  k += 1.0
  cube = k * k
  cube *= k
  return cube


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
  """The unbiased estimate of MMD^2 with the polynomial kernel: the within-set means leave out i == j."""
  m, n = len(x), len(y)
  kxx, kyy = polynomial_kernel(x, x), polynomial_kernel(y, y)
  within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
  within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
  return float(within_x + within_y - 2.0 * polynomial_kernel(x, y).mean())


class KID(NamedTuple):
  """KID and its two spreads, each named: papers' tools print `subset_std`, and `standard_error` is ours."""
  value: float  # the mean of the unbiased MMD^2 over the subsets
  subset_std: float  # the standard deviation over the subsets (ddof 0), the ± torch-fidelity and torchmetrics print
  standard_error: float  # of `value` as an estimate from the whole sets


def kid(x: np.ndarray, y: np.ndarray, subset_size: int, subsets: int, seed: int = 0) -> KID | None:
  """KID of two sets with its subset standard deviation and standard error; None if either has fewer than 4 rows.

  KID is the mean of the unbiased MMD^2 over `subsets` random subset pairs of m rows each, as clean-fid and
  torch-fidelity compute it, with m = min(subset_size, n // 2) for n the smaller set, so that subsets
  differ. `subset_std` is the subsets' spread as torch-fidelity (np.std) and torchmetrics (std(unbiased=False))
  report it: the spread of one m-row subset's value, which does not shrink with more data. The standard error
  is for the whole set: the subsets' spread (ddof 1) scaled by sqrt(m / n), because the U-statistic's variance
  falls as 1/n (Binkowski et al. 2018, sec. 4). It approximates the spread of KID between independent draws of
  the data (tests/test_score_metrics.py checks it within a factor of 0.6-1.6).
  """
  n = min(len(x), len(y))
  if n < 4:
    return None
  m = min(int(subset_size), n // 2)
  rng = np.random.default_rng(seed)
  values = np.array([mmd2_unbiased(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)])
                     for _ in range(max(int(subsets), 2))])
  return KID(float(values.mean()), float(values.std()), float(values.std(ddof=1) * math.sqrt(m / n)))


# ---------------------------------------------------------------------------
# Precision, recall, density, coverage


def squared_norms(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return np.einsum("ij,ij->i", x, x)


def equal_row_ids(*sets) -> list[np.ndarray] | None:
  """Per set, an id per row that two rows (of any of `sets`) share exactly when they are equal; None when all differ.

  The matrix-product distance of two equal rows is rounding noise (about 1e-3 of their norm in float32) whose
  value depends on the BLAS and on where the rows sit in a block, so PRDC's strict inequality would decide
  duplicates (copies, a collapsed generator) by that noise. With these ids equal rows are at distance exactly 0,
  as a row and itself are. -0.0 and 0.0 count as equal.
  """
  arrays = [np.asarray(s, np.float32) for s in sets]
  stacked = np.ascontiguousarray(np.concatenate(arrays) + np.float32(0))  # + 0: -0.0 becomes 0.0
  rows = stacked.view(np.dtype((np.void, stacked.dtype.itemsize * stacked.shape[1]))).ravel()
  unique, inverse = np.unique(rows, return_inverse=True)
  if len(unique) == len(rows):
    return None
  return np.split(inverse.ravel(), np.cumsum([len(a) for a in arrays])[:-1])


def distances(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray | None = None, a_ids: np.ndarray | None = None,
              b_ids: np.ndarray | None = None) -> np.ndarray:
  """Euclidean distances (len(a), len(b)) from |a|^2 + |b|^2 - 2 a.b (one matrix product), returned in float32;
  rows with the same `equal_row_ids` id (when given) are at distance exactly 0.

  The product and sums run in float64 and are rounded once to float32, so d(x, y) and d(y, x) agree bit for bit
  whatever the BLAS and wherever the rows sit in a block (float32 products differed by the last bits on one
  CPU, and PRDC's strict inequalities decided identical sets' k-th neighbours by that: density 1.004, not 1).
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  b_sq = squared_norms(b) if b_sq is None else b_sq
  d2 = a @ b.T
  d2 *= -2.0
  d2 += squared_norms(a)[:, None]
  d2 += b_sq[None, :]
  if a_ids is not None:
    d2[a_ids[:, None] == b_ids[None, :]] = 0.0
  return np.sqrt(np.maximum(d2, 0.0, out=d2), out=d2).astype(np.float32)


def knn_radii(x: np.ndarray, k: int, budget: int, ids: np.ndarray | None = None) -> np.ndarray:
  """Each row's distance to its k-th nearest other row: the radius of its k-NN ball (Naeem et al. 2020).

  A row's distance to itself is set to exactly 0, so it is the smallest and the k-th other neighbour is
  the (k+1)-th smallest; an exact duplicate counts as a neighbour at distance exactly 0 (`ids`: the rows'
  `equal_row_ids`, found here when not given), as in the reference code.
  """
  n = len(x)
  if n < k + 1:
    raise ValueError(f"k-NN radii with k={k} need at least {k + 1} rows, not {n}")
  if ids is None:
    ids = (equal_row_ids(x) or [None])[0]
  x_sq, out = squared_norms(x), np.empty(n, np.float32)
  step = rows_per_block(n, budget)
  for start in range(0, n, step):
    block_ids = None if ids is None else ids[start:start + step]
    block = distances(x[start:start + step], x, x_sq, block_ids, ids)
    rows = np.arange(len(block))
    block[rows, start + rows] = 0.0
    out[start:start + step] = np.partition(block, k, axis=1)[:, k]
  return out


def prdc(real: np.ndarray, fake: np.ndarray, k: int, budget: int, real_radii: np.ndarray | None = None) -> dict:
  """Precision, recall, density and coverage of `fake` against `real` as published (Naeem et al. 2020) and as the
  reference `prdc` package computes them: the reference definition, k-NN balls open (inside: distance < radius).

  precision: share of fake rows inside at least one real row's ball (fidelity);
  recall: share of real rows inside at least one fake row's ball (diversity, with the fake balls);
  density: fake rows' count of real balls holding them, over k times the fake rows (1 when the sets are the
    same; robust to real outliers, which inflate precision);
  coverage: share of real rows whose own ball holds a fake row (diversity, with the real balls only).
  Open balls matter on ties: a ball holds its centre and k - 1 neighbours, not its k-th, so identical sets have
  density 1, and a row repeated more than k times has a ball of radius 0 that holds nothing (duplicated sets,
  a collapsed generator score 0, not 1). Equal rows are at distance exactly 0 (`equal_row_ids`). One pass over
  fake row blocks against all real rows; `real_radii` lets callers reuse the real side.
  """
  ids = equal_row_ids(real, fake)
  real_ids, fake_ids = (None, None) if ids is None else ids
  real_radii = knn_radii(real, k, budget, real_ids) if real_radii is None else real_radii
  fake_radii = knn_radii(fake, k, budget, fake_ids)
  real_sq = squared_norms(real)
  inside_count = np.zeros(len(fake), np.int64)
  nearest_fake = np.full(len(real), np.inf, np.float32)
  recalled = np.zeros(len(real), bool)
  step = rows_per_block(len(real), budget)
  for start in range(0, len(fake), step):
    block_ids = None if fake_ids is None else fake_ids[start:start + step]
    block = distances(fake[start:start + step], real, real_sq, block_ids, real_ids)  # (fake rows, real rows)
    inside_count[start:start + step] = (block < real_radii[None, :]).sum(axis=1)
    recalled |= (block < fake_radii[start:start + step, None]).any(axis=0)
    np.minimum(nearest_fake, block.min(axis=0), out=nearest_fake)
  return {"precision": float(np.mean(inside_count > 0)), "recall": float(np.mean(recalled)),
          "density": float(inside_count.sum() / (k * len(fake))),
          "coverage": float(np.mean(nearest_fake < real_radii))}


# ---------------------------------------------------------------------------
# Diversity and nearest neighbours by cosine similarity


def unit_rows(x: np.ndarray) -> np.ndarray:
  """Rows scaled to length 1 (float64); a zero row stays zero rather than becoming NaN."""
  x = np.asarray(x, np.float64)
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.where(norms > 0, norms, 1.0)


def mean_pairwise_cosine_distance(u: np.ndarray) -> float | None:
  """Mean of 1 - cos over all pairs i != j of unit rows u; None for fewer than 2 rows.

  sum_{i != j} u_i.u_j = |sum_i u_i|^2 - n, so the mean needs one pass over the rows, not n^2 products.
  """
  n = len(u)
  if n < 2:
    return None
  total = np.asarray(u, np.float64).sum(axis=0)
  return float(1.0 - (total @ total - n) / (n * (n - 1)))


def vendi_score(u: np.ndarray) -> float | None:
  """The Vendi score (Friedman & Dieng 2023) of unit rows u with the cosine kernel; None for no rows.

  exp of the entropy of the eigenvalues of K / n, K = u u^T (K_ii = 1): the effective number of distinct
  items, from 1 (all alike) to n (all orthogonal). u u^T / n and u^T u / n have the same nonzero
  eigenvalues, so the smaller of the two (n x n or d x d) is decomposed. It grows with n: compare sets
  of equal size.
  """
  n, d = u.shape
  if n == 0:
    return None
  u = np.asarray(u, np.float64)
  gram = (u @ u.T if n <= d else u.T @ u) / n
  values = np.linalg.eigvalsh(gram)
  values = values[values > 1e-12]
  return float(np.exp(-np.sum(values * np.log(values))))


def nearest_cosine(a: np.ndarray, b: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
  """For each row of a: the index of its most cosine-similar row of b and that similarity (unit rows)."""
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  index, similarity = np.empty(len(a), np.int64), np.empty(len(a), np.float32)
  step = rows_per_block(len(b), budget)
  for start in range(0, len(a), step):
    block = a[start:start + step] @ b.T
    index[start:start + step] = block.argmax(axis=1)
    similarity[start:start + step] = block[np.arange(len(block)), index[start:start + step]]
  return index, similarity
