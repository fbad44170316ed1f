"""Scores of a synthetic set against the real one: overall, per method, per class, per many / medium / few group.

Input: both sets' embeddings and what they are grouped by (`Embeddings`); output: one JSON-able dict, the
content of scores.json. Two kinds of row:

  pooled rows (overall, each method, each group, each method x group): FD-CLIP, KID and PRDC between all
    real and all synthetic images of the row's classes (PRDC on at most `prdc_max` of each, drawn with the
    seed, as Naeem et al. 2020 used 10,000); diversity and Vendi as the mean over the row's classes;
    the share of copies; class consistency (the share whose k nearest real images vote for their own class,
    `consistency.vote` over the whole real set).
  class rows: the same for one class (all methods together), and diversity, Vendi, copies and class
    consistency per method.

Diversity is measured within a class: a set spread over many classes is not diverse for that reason alone.
Groups come from the real images per class (`data.sources.class_groups`: many > 100, medium 20-100,
few < 20) and are reported when the real set spans more than one of them (a long-tail set).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import numpy as np
from absl import logging

from jaxaug.data.sources import class_groups
from jaxaug.score_lib import consistency, metrics

FIDELITY_KEYS = ("fd", "kid", "kid_std", "kid_se", "precision", "recall", "density", "coverage")
HISTOGRAM_EDGES = tuple(round(0.05 * i, 2) for i in range(21))  # cosine similarity to the own source, 0..1


@dataclasses.dataclass(frozen=True)
class MetricSettings:
  """The metrics' settings; defaults and meanings are config_base.score_config's `metrics` fields."""
  k: int
  prdc_max: int
  kid_subset_size: int
  kid_subsets: int
  kid_class_subsets: int
  copy_threshold: float
  block_mb: int
  seed: int
  consistency_k: int

  @classmethod
  def from_config(cls, metrics_config) -> "MetricSettings":
    return cls(**{f.name: metrics_config[f.name] for f in dataclasses.fields(cls)})

  @property
  def budget(self) -> int:
    return self.block_mb * metrics.MIB


@dataclasses.dataclass
class Embeddings:
  """Both sets' embeddings (readable images only) and what the scores group them by."""
  real: np.ndarray  # (n_real, d) float32
  real_labels: np.ndarray  # (n_real,)
  synthetic: np.ndarray  # (n_synthetic, d) float32
  labels: np.ndarray  # (n_synthetic,)
  methods: np.ndarray  # (n_synthetic,) str
  sources: np.ndarray  # (n_synthetic, 2) rows of `real` the image was conditioned on; -1: none / not in the real set
  item_ids: np.ndarray  # (n_synthetic,)
  class_names: tuple[str, ...]
  real_counts: np.ndarray  # real images per class, for the groups

  @property
  def method_names(self) -> list[str]:
    return list(dict.fromkeys(self.methods.tolist()))


class _Rows:
  """x[rows] without the copy: the metrics read it in slices or small gathers (a method's rows of 1.2 M)."""

  def __init__(self, x: np.ndarray, rows: np.ndarray):
    self.x, self.rows = x, rows
    self.shape = (len(rows), x.shape[1])

  def __len__(self) -> int:
    return len(self.rows)

  def __getitem__(self, index):
    return self.x[self.rows[index]]

  def __array__(self, dtype=None, copy=None):
    return np.asarray(self.x[self.rows], dtype)


def _view(x: np.ndarray, rows: np.ndarray):
  return x if len(rows) == len(x) else _Rows(x, rows)


def _sample(x, cap: int, seed: int) -> np.ndarray:
  """At most `cap` rows (all if cap is 0), drawn without replacement, in their original order."""
  if not cap or len(x) <= cap:
    return np.asarray(x, np.float32)
  return np.asarray(x[np.sort(np.random.default_rng(seed).choice(len(x), cap, replace=False))], np.float32)


class _Reference:
  """The real side of a row, computed once and shared by every synthetic set compared with it."""

  def __init__(self, x, settings: MetricSettings):
    self.x = x
    self.stats = metrics.covariance_factor(x) if len(x) >= 2 else None
    self.sample = _sample(x, settings.prdc_max, settings.seed)
    enough = len(self.sample) >= settings.k + 1
    self.radii = metrics.knn_radii(self.sample, settings.k, settings.budget) if enough else None


def fidelity(ref: _Reference, synthetic, settings: MetricSettings, kid_subsets: int) -> dict:
  """FD-CLIP, KID (with its subset standard deviation and its standard error) and PRDC of a synthetic set against a
  real reference."""
  k = settings.k
  row = {"n_real": len(ref.x), "n_synthetic": len(synthetic), **dict.fromkeys(FIDELITY_KEYS), "prdc_skipped": None}
  if ref.stats is not None and len(synthetic) >= 2:
    # Against a few real images (a d x n factor), the synthetic side's centred rows are the cheaper factor
    # up to a few times d rows: the SVD is then n x rows, and no d x d eigendecomposition is needed.
    d = synthetic.shape[1]
    small = ref.stats[1].shape[1] < d
    row["fd"] = metrics.frechet_distance(*ref.stats, *metrics.covariance_factor(synthetic, 8 * d if small else None))
  kid = metrics.kid(ref.x, synthetic, settings.kid_subset_size, kid_subsets, settings.seed)
  if kid is not None:
    row["kid"], row["kid_std"], row["kid_se"] = kid
  sample = _sample(synthetic, settings.prdc_max, settings.seed + 1)
  if ref.radii is None or len(sample) < k + 1:
    row["prdc_skipped"] = f"{len(ref.sample)} real, {len(sample)} synthetic: fewer than k+1 = {k + 1}"
  else:
    row.update(metrics.prdc(ref.sample, sample, k, settings.budget, real_radii=ref.radii))
  return row


def _mean(values) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


@dataclasses.dataclass
class _Copies:
  """Per synthetic image: its nearest real image of its class, and how similar it is to its own source."""
  nearest: np.ndarray  # row of `real`, -1 where the class has no real image
  nearest_similarity: np.ndarray
  source_similarity: np.ndarray  # max cosine similarity to its sources; NaN where none is in the real set
  nearest_is_source: np.ndarray
  flagged: np.ndarray
  checked: np.ndarray  # a source is in the real set


def _class_copies(u_syn, u_real, real_rows, sources, threshold, budget):
  """The copy check within one class: is the nearest real image (cosine) the image's own source, and close?

  Returns per synthetic image: nearest real row (-1: the class has no real image), its similarity, the
  similarity to the closest own source (NaN: no source in the real set), nearest-is-source, flagged.
  """
  n = len(u_syn)
  nearest, similarity = np.full(n, -1, np.int64), np.full(n, np.nan, np.float32)
  source_sim, is_source = np.full(n, np.nan, np.float32), np.zeros(n, bool)
  if not len(u_real) or not n:
    return nearest, similarity, source_sim, is_source, is_source.copy()
  index, similarity = metrics.nearest_cosine(u_syn, u_real, budget)
  nearest = real_rows[index]
  at = np.minimum(np.searchsorted(real_rows, sources), len(real_rows) - 1)  # sources -> this class's rows
  valid = (sources >= 0) & (real_rows[at] == sources)
  sims = np.stack([np.einsum("ij,ij->i", u_real[at[:, j]], u_syn) for j in range(sources.shape[1])], axis=1)
  sims = np.where(valid, sims, -np.inf).max(axis=1)
  source_sim = np.where(np.isfinite(sims), sims, np.nan).astype(np.float32)
  is_source = (valid & (at == index[:, None])).any(axis=1)
  return nearest, similarity, source_sim, is_source, is_source & (similarity >= threshold)


def copy_summary(copies: _Copies, emb: Embeddings, settings: MetricSettings, top: int = 10) -> dict:
  """The copy check's distribution: share flagged, similarity to the own source (quantiles, histogram), the closest."""
  checked = copies.checked
  sims = copies.source_similarity[checked]
  edges = np.asarray(HISTOGRAM_EDGES)
  clipped = np.clip(sims, 0.0, 1.0)
  summary = {"threshold": settings.copy_threshold, "checked": int(checked.sum()),
             "sources_not_in_real_set": int((~checked).sum()),
             "share": float(copies.flagged[checked].mean()) if checked.any() else None,
             "nearest_is_source_share": float(copies.nearest_is_source[checked].mean()) if checked.any() else None,
             "source_similarity": None, "most_similar": []}
  if checked.any():
    quantiles = np.quantile(sims, [0.5, 0.9, 0.99, 1.0])
    summary["source_similarity"] = {
        "median": float(quantiles[0]), "p90": float(quantiles[1]), "p99": float(quantiles[2]),
        "max": float(quantiles[3]),
        "histogram": {"edges": list(HISTOGRAM_EDGES),
                      "nearest_is_source": np.histogram(clipped[copies.nearest_is_source[checked]], edges)[0].tolist(),
                      "other": np.histogram(clipped[~copies.nearest_is_source[checked]], edges)[0].tolist()}}
    rows = np.flatnonzero(checked)[np.argsort(-sims, kind="stable")[:top]]
    summary["most_similar"] = [
        {"item_id": int(emb.item_ids[r]), "class": emb.class_names[int(emb.labels[r])], "method": str(emb.methods[r]),
         "similarity_to_source": float(copies.source_similarity[r]),
         "nearest_is_source": bool(copies.nearest_is_source[r])}
        for r in rows]
  return summary


def _progress(total: int):
  import sys

  from tqdm import tqdm

  return tqdm(total=total, disable=total < 20, unit="class", desc="scoring classes", file=sys.stderr,
              dynamic_ncols=True, smoothing=0.1)


def _class_row(emb: Embeddings, c: int, real_rows: np.ndarray, syn_rows: np.ndarray, copies: _Copies,
               votes: consistency.Votes, settings: MetricSettings) -> dict:
  """One class's row (fidelity, diversity, copies, consistency, and those but fidelity per method); fills `copies`
  for it."""
  ref = _Reference(emb.real[real_rows], settings)
  row = {"class": c, "name": emb.class_names[c], "real_images": int(emb.real_counts[c]),
         **fidelity(ref, emb.synthetic[syn_rows], settings, settings.kid_class_subsets)}
  u_real, u_syn = metrics.unit_rows(emb.real[real_rows]), metrics.unit_rows(emb.synthetic[syn_rows])
  row["diversity"] = metrics.mean_pairwise_cosine_distance(u_syn)
  row["vendi"] = metrics.vendi_score(u_syn)
  row["real_diversity"] = metrics.mean_pairwise_cosine_distance(u_real)
  row["real_vendi"] = metrics.vendi_score(u_real)
  found = _class_copies(u_syn, u_real, real_rows, emb.sources[syn_rows], settings.copy_threshold, settings.budget)
  (copies.nearest[syn_rows], copies.nearest_similarity[syn_rows], copies.source_similarity[syn_rows],
   copies.nearest_is_source[syn_rows], copies.flagged[syn_rows]) = found
  copies.checked[syn_rows] = ~np.isnan(copies.source_similarity[syn_rows])
  row["copy_share"] = _share(copies, syn_rows)
  row["consistency"] = consistency.share(votes, emb.labels, syn_rows)
  row["methods"] = {}
  for m in emb.method_names:
    mine = emb.methods[syn_rows] == m
    same = mine.all()  # one method in the class: its figures are the class's
    diversity = row["diversity"] if same else metrics.mean_pairwise_cosine_distance(u_syn[mine])
    row["methods"][m] = {"n_synthetic": int(mine.sum()), "copy_share": _share(copies, syn_rows[mine]),
                         "diversity": diversity, "vendi": row["vendi"] if same else metrics.vendi_score(u_syn[mine]),
                         "consistency": consistency.share(votes, emb.labels, syn_rows[mine])}
  return row


class _Pooled:
  """Pooled rows: fidelity over all images of a set of classes (one method or all), the class rows' mean
  diversity, the copy share. A row over the same images against the same reference is computed once."""

  def __init__(self, emb: Embeddings, classes: list[dict], syn_by_class: list[np.ndarray], copies: _Copies,
               votes: consistency.Votes, settings: MetricSettings):
    self.emb, self.classes, self.syn_by_class, self.copies, self.settings = emb, classes, syn_by_class, copies, settings
    self.votes = votes
    self.done = {}

  def row(self, class_set: np.ndarray, method: str | None, ref: _Reference) -> dict:
    rows = np.concatenate([self.syn_by_class[c] for c in class_set]) if len(class_set) else np.zeros(0, np.int64)
    if method is not None:
      rows = rows[self.emb.methods[rows] == method]
    rows.sort()
    key = (id(ref), hashlib.blake2b(rows.tobytes(), digest_size=16).digest())
    if key not in self.done:  # a set's only method, or a group of every class: the same images, the same row
      out = fidelity(ref, _view(self.emb.synthetic, rows), self.settings, self.settings.kid_subsets)
      per_class = [self.classes[c] if method is None else self.classes[c]["methods"][method] for c in class_set]
      out["diversity"] = _mean(r["diversity"] for r in per_class)
      out["vendi"] = _mean(r["vendi"] for r in per_class)
      out["copy_share"] = _share(self.copies, rows)
      out["consistency"] = consistency.share(self.votes, self.emb.labels, rows)
      self.done[key] = out
    return dict(self.done[key])


def class_votes(emb: Embeddings, settings: MetricSettings) -> consistency.Votes:
  """Each synthetic image's k-nearest-real-image class vote (class consistency and keep lists)."""
  return consistency.vote(emb.synthetic, emb.labels, emb.real, emb.real_labels, settings.consistency_k,
                          settings.budget)


def compute_scores(emb: Embeddings, settings: MetricSettings, votes: consistency.Votes | None = None) -> dict:
  """Every row of scores.json (module docstring) from the two sets' embeddings (`votes`: `class_votes(emb)`, when
  the caller has them already)."""
  started = time.perf_counter()
  votes = class_votes(emb, settings) if votes is None else votes
  num_classes = len(emb.class_names)
  real_by_class = [np.flatnonzero(emb.real_labels == c) for c in range(num_classes)]
  syn_by_class = [np.flatnonzero(emb.labels == c) for c in range(num_classes)]
  n = len(emb.synthetic)
  copies = _Copies(np.full(n, -1, np.int64), np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32),
                   np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool))
  classes, bar = [], _progress(num_classes)
  for c in range(num_classes):
    classes.append(_class_row(emb, c, real_by_class[c], syn_by_class[c], copies, votes, settings))
    bar.update()
  bar.close()
  class_seconds = time.perf_counter() - started
  skipped = [r for r in classes if r["prdc_skipped"] and r["n_synthetic"]]
  if skipped:
    logging.warning("PRDC skipped for %d class(es) with fewer than k+1 = %d real or synthetic images: %s",
                    len(skipped), settings.k + 1, ", ".join(f"{r['name']} ({r['prdc_skipped'].split(':')[0]})"
                                                           for r in skipped[:10]))

  pooled = _Pooled(emb, classes, syn_by_class, copies, votes, settings)
  everything, overall_ref = np.arange(num_classes), _Reference(emb.real, settings)
  result = {"overall": pooled.row(everything, None, overall_ref),
            "methods": {m: pooled.row(everything, m, overall_ref) for m in emb.method_names}, "groups": {}}
  groups = {g: members for g, members in class_groups(emb.real_counts).items() if members.size}
  if len(groups) > 1:  # a long tail
    for g, members in groups.items():
      ref = _Reference(_view(emb.real, np.sort(np.concatenate([real_by_class[c] for c in members]))), settings)
      result["groups"][g] = {"classes": int(members.size), **pooled.row(members, None, ref)}
      for m in emb.method_names:
        result["methods"][m].setdefault("groups", {})[g] = pooled.row(members, m, ref)
  real_votes = consistency.vote(emb.real, emb.real_labels, emb.real, emb.real_labels, settings.consistency_k,
                                settings.budget, leave_out_self=True)
  result["real"] = {"n_real": len(emb.real), "diversity": _mean(r["real_diversity"] for r in classes),
                    "vendi": _mean(r["real_vendi"] for r in classes),
                    "consistency": consistency.share(real_votes, emb.real_labels, np.arange(len(emb.real)))}
  result["classes"] = classes
  result["copies"] = copy_summary(copies, emb, settings)
  result["prdc_skipped_classes"] = [r["name"] for r in skipped]
  result["timing"] = {"metrics_s": round(time.perf_counter() - started, 3), "classes_s": round(class_seconds, 3),
                      "per_class_s": round(class_seconds / max(num_classes, 1), 5)}
  return result


def _share(copies: _Copies, rows: np.ndarray) -> float | None:
  checked = rows[copies.checked[rows]]
  return float(copies.flagged[checked].mean()) if len(checked) else None


def worst_classes(scores: dict, count: int, rank_by: str = "fd") -> list[dict]:
  """The `count` class rows that score worst by `rank_by` (fd and kid: highest; the others: lowest)."""
  rows = [r for r in scores["classes"] if r.get(rank_by) is not None and r["n_synthetic"]]
  higher_is_worse = rank_by in ("fd", "kid", "copy_share")
  return sorted(rows, key=lambda r: -r[rank_by] if higher_is_worse else r[rank_by])[:count]
