"""Class consistency: does a synthetic image still look like its own class, in one encoder's space?

Per synthetic image, its k nearest real images by cosine similarity vote for a class (`vote`). The image is
class-consistent when the vote picks its own class; a mixing method whose images drift to another class shows
here, where FD and diversity do not. The same votes rank images for a keep list (`parse_keep_rule`, `kept`), the
filter peers run as one-off scripts (Diff-Mix drops the bottom 10% of its CLIP scores per class).

Determinism (ties): neighbours are ordered by similarity, higher first, and equal similarities by real row, lower
first (the real source's order); the k nearest are the first k of that order. Classes tied on votes go to the
class holding the nearest of their neighbours (the first in that order). An image's class agreement orders images
(`agreement_order`): own-class votes, then the margin (similarity to the nearest real image of its own class
minus that to the nearest of another class), then item id.

Works on the embeddings of any one encoder: call it once per encoder.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxaug.score_lib import metrics

KEEP_RULES = ("own_class", "own_in_k", "drop_bottom=F")
_NONE = -1.0  # the similarity of "no real image" (cosine similarity is never below it)


@dataclasses.dataclass(frozen=True)
class Votes:
  """Per synthetic image (rows of the embeddings given to `vote`)."""
  k: int
  nearest_class: np.ndarray  # int: the class the k nearest real images vote for
  own_votes: np.ndarray  # int: how many of the k are of the image's own class
  margin: np.ndarray  # float32: nearest own-class similarity minus nearest other-class similarity

  def consistent(self, labels: np.ndarray) -> np.ndarray:
    return self.nearest_class == labels


def top_k(similarity: np.ndarray, k: int) -> np.ndarray:
  """Columns of each row's k largest values, largest first, equal values by column (lower first): (rows, k).

  One argpartition finds the k largest and the next value; only rows where the next value equals the k-th (a tie
  across the boundary, where argpartition's choice is arbitrary) take the exact, slower path."""
  rows, n = similarity.shape
  k = min(k, n)
  if k == n:
    columns = np.broadcast_to(np.arange(n), (rows, n))
  else:
    part = np.argpartition(similarity, (n - k - 1, n - k), axis=1)
    columns = part[:, n - k:]
    kth = np.take_along_axis(similarity, part[:, n - k:n - k + 1], axis=1)[:, 0]
    tied = np.flatnonzero(np.take_along_axis(similarity, part[:, n - k - 1:n - k], axis=1)[:, 0] == kth)
    if len(tied):
      columns = columns.copy()
      columns[tied] = _top_k_with_ties(similarity[tied], kth[tied], k)
  values = np.take_along_axis(similarity, columns, axis=1)
  return np.take_along_axis(columns, np.lexsort((columns, -values), axis=-1), axis=1)


def _top_k_with_ties(similarity: np.ndarray, kth: np.ndarray, k: int) -> np.ndarray:
  """The k largest of each row (any order) when values equal to the k-th lie beyond it: the lower columns win."""
  above = similarity > kth[:, None]
  tie = similarity == kth[:, None]
  tie &= np.cumsum(tie, axis=1, dtype=np.int32) <= (k - above.sum(axis=1))[:, None]
  return np.nonzero(above | tie)[1].reshape(len(similarity), k)


def majority(neighbour_labels: np.ndarray) -> np.ndarray:
  """Per row, the most frequent label; ties go to the label that comes first in the row (the nearer neighbour)."""
  counts = (neighbour_labels[:, :, None] == neighbour_labels[:, None, :]).sum(axis=2)
  return neighbour_labels[np.arange(len(neighbour_labels)), counts.argmax(axis=1)]


def vote(synthetic: np.ndarray, labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray, k: int,
         budget: int, leave_out_self: bool = False) -> Votes:
  """The k-nearest-real-image vote (cosine similarity) of every synthetic image, in blocks of synthetic rows whose
  temporaries stay under `budget` bytes. `leave_out_self`: `synthetic` is `real` itself, each row voted on by the
  others (the real set's own consistency: how well the encoder separates the classes, the ceiling for a method)."""
  n = len(synthetic)
  nearest, own, margin = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.float32)
  voters = min(k, len(real) - int(leave_out_self))  # a row left out is not among the k, even when k covers all
  if voters < 1:
    return Votes(k, np.full(n, -1, np.int64), own, np.full(n, np.nan, np.float32))
  u_real = _unit32(real)
  real_labels = np.asarray(real_labels)
  step = metrics.rows_per_block(len(real), budget // 2)  # twice the distance blocks' temporaries
  for start in range(0, n, step):
    block = _unit32(synthetic[start:start + step]) @ u_real.T
    if leave_out_self:
      rows = np.arange(len(block))
      block[rows, start + rows] = -np.inf  # below every similarity: never a neighbour, never the nearest
    mine = labels[start:start + step]
    neighbours = real_labels[top_k(block, voters)]
    nearest[start:start + step] = majority(neighbours)
    own[start:start + step] = (neighbours == mine[:, None]).sum(axis=1)
    same = real_labels[None, :] == mine[:, None]
    best_own = np.maximum(np.where(same, block, _NONE).max(axis=1), _NONE)  # a row left out is -inf
    block[same] = _NONE  # the block is done with: its other classes' best, without a second copy
    best_other = np.maximum(block.max(axis=1), _NONE)
    margin[start:start + step] = best_own - best_other
  return Votes(k, nearest, own, margin)


def _unit32(x, chunk: int = 65536) -> np.ndarray:
  """Unit rows in float32, normalised (in float64) a chunk at a time: a million rows never sit in float64 whole."""
  out = np.empty(x.shape, np.float32)
  for start in range(0, len(x), chunk):
    out[start:start + chunk] = metrics.unit_rows(x[start:start + chunk])
  return out


def agreement_order(votes: Votes, item_ids: np.ndarray) -> np.ndarray:
  """Rows from least to most class-agreeing: own-class votes, then margin, then item id (all ascending)."""
  return np.lexsort((item_ids, votes.margin, votes.own_votes))


def share(votes: Votes, labels: np.ndarray, rows: np.ndarray) -> float | None:
  """The share of `rows` whose vote picks their own class; None for no rows."""
  return float(votes.consistent(labels)[rows].mean()) if len(rows) else None


# ---------------------------------------------------------------------------
# Keep rules


@dataclasses.dataclass(frozen=True)
class KeepRule:
  """Which synthetic images a keep list keeps (`parse_keep_rule` reads it from --config.keep)."""
  kind: str  # own_class | own_in_k | drop_bottom
  fraction: float = 0.0  # drop_bottom's share dropped per class

  def __str__(self) -> str:
    return f"drop_bottom={self.fraction:g}" if self.kind == "drop_bottom" else self.kind

  @property
  def slug(self) -> str:
    """For the keep list's file name."""
    return str(self).replace("=", "-")


def parse_keep_rule(text: str) -> KeepRule:
  """`own_class` (the vote picks the image's own class), `own_in_k` (its own class is among its k nearest real
  images) or `drop_bottom=F` (per class, the fraction F of least class-agreeing images dropped, 0 < F < 1);
  ValueError saying why otherwise."""
  text = text.strip()
  if text in ("own_class", "own_in_k"):
    return KeepRule(text)
  name, equals, value = text.partition("=")
  if name.strip() == "drop_bottom" and equals:
    try:
      fraction = float(value)
    except ValueError:
      raise ValueError(f"drop_bottom takes a fraction, not {value.strip()!r}") from None
    if not 0 < fraction < 1 or not math.isfinite(fraction):
      raise ValueError(f"drop_bottom's fraction must lie in (0, 1), not {value.strip()}")
    return KeepRule("drop_bottom", fraction)
  raise ValueError(f"unknown rule {text!r}")


def kept(rule: KeepRule, votes: Votes, labels: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
  """Which images the rule keeps (bool per row). drop_bottom drops floor(F x n) images of each class of n, least
  class-agreeing first (`agreement_order`), so it never drops more than asked."""
  if rule.kind == "own_class":
    return votes.consistent(labels)
  if rule.kind == "own_in_k":
    return votes.own_votes > 0
  keep = np.ones(len(labels), bool)
  order = agreement_order(votes, item_ids)
  for c in np.unique(labels):
    rows = order[labels[order] == c]
    keep[rows[:math.floor(rule.fraction * len(rows))]] = False
  return keep
