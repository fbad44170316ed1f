"""python -m jaxaug.score: how faithful and how diverse a synthetic set is, per method, class and group.

    python -m jaxaug.generate && python -m jaxaug.score         # the demo: out/demo against its real images
    python -m jaxaug.score --config.synthetic=/data/synthetic/imagenet_lt \
        --config.real='imagenet_lt:/data/ImageNet_LT?root=/data/imagenet'

Both sets are embedded by each encoder of --config.encoders (default: the CLIP image tower of the checkpoint
that made the set, or --config.model; also `inception`, clean-fid's FID network, and `dinov2`; see
score_lib/encoders.py), in one jitted step sharded over every device and host, and scored in each encoder's
space side by side (FD-CLIP, FD-Inception, FD-DINOv2); the first encoder's scores are the main tables, its class
votes make the keep list. Embeddings are cached per encoder under the output directory, so a
rerun or a new metric does not embed again, and a killed run continues where it stopped; a cached unit that
fails its checksum (damaged on disk) is embedded again with a warning. Writes scores.json,
scores.md (one row per method), fidelity_diversity.png, worst_classes.png and class_consistency.png to
--config.output_dir (default <synthetic>/scores). Metrics, per encoder: FD, KID with its subset standard deviation and
its standard error, precision / recall / density / coverage as published (k = 5), diversity (mean pairwise
cosine distance and Vendi score within each class), class consistency (the k nearest real images vote for
the image's own class) and a copy check against each image's own source (score_lib/).

    python -m jaxaug.score --config.keep=drop_bottom=0.1     # also a keep list for python -m jaxaug.train

--config.keep=RULE writes <synthetic>/keep-<encoder>-<rule>.json (data/keep.py), which
`python -m jaxaug.train --config.synthetic_keep=FILE` trains on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import jax
import numpy as np
from absl import logging

from jaxaug import fsutil, mesh
from jaxaug.data import keep, kshot, open_source
from jaxaug.data.images import read_fit
from jaxaug.data.sources import ImageSource
from jaxaug.data.synthetic import SyntheticSource
from jaxaug.errors import UserError, run_with_config
from jaxaug.score_lib import consistency, embed, encoders, pictures, report, scoring
from jaxaug.score_lib.checks import RANK_NAMES, check_config, keep_rule
from jaxaug.train_lib.data import check_classes

_DEFAULT_CONFIG = "score"  # a shipped config (jaxaug.config_files)


@dataclasses.dataclass(frozen=True)
class Settings:
  """The run's settings, checked (the config's fields are documented in config_base.score_config)."""
  synthetic: Path
  real: str
  split: str
  shots: int
  shots_seed: int
  model: str
  dtype: str
  per_device: int
  unit_size: int
  reader_threads: int
  output: Path
  cache: Path
  metrics: scoring.MetricSettings
  worst_classes: int
  neighbours: int
  rank_by: str
  consistency_classes: int
  keep: consistency.KeepRule | None
  encoders: tuple[str, ...]  # the first one's scores are the report's main rows and its votes the keep list's
  inception_weights: str
  dinov2: str


def settings_from(config, generation: dict) -> Settings:
  """Typed settings; empty fields take the synthetic set's own values from its config.json (`generation`)."""
  m = scoring.MetricSettings.from_config(config.metrics)
  synthetic = Path(os.path.expanduser(config.synthetic))
  output = Path(os.path.expanduser(config.output_dir)) if config.output_dir else synthetic / "scores"
  data = generation.get("data", {})
  return Settings(
      synthetic=synthetic, real=config.real or data.get("source", ""), split=config.split or data.get("split", "train"),
      shots=config.shots, shots_seed=config.shots_seed, model=config.model or generation.get("model", ""),
      dtype=config.dtype, per_device=config.batch.per_device, unit_size=config.unit_size,
      reader_threads=config.reader_threads, output=output,
      cache=Path(os.path.expanduser(config.cache_dir)) if config.cache_dir else output / "embeddings", metrics=m,
      worst_classes=config.pictures.worst_classes, neighbours=config.pictures.neighbours,
      rank_by=config.pictures.rank_by, consistency_classes=config.pictures.consistency_classes,
      keep=keep_rule(config.keep), encoders=encoders.parse(config.encoders),
      inception_weights=os.path.expanduser(config.inception_weights), dinov2=os.path.expanduser(config.dinov2))


@dataclasses.dataclass
class Job:
  """Everything the run needs, checked before anything is written."""
  settings: Settings
  synthetic: SyntheticSource
  real: ImageSource
  encoders: list  # encoders.Encoder, in the order of --config.encoders
  synthetic_units: list  # embed.Unit per generation unit of `synthetic`
  fingerprint: dict  # the set's generation fingerprint (its config.json)
  caches: list = dataclasses.field(default_factory=list)  # (real, synthetic) embed.Cache per encoder, made once


def _generation_record(synthetic: Path) -> dict:
  """The set's config.json ({"config", "fingerprint", ...}); UserError where the directory is not a finished-unit
  set."""
  if not synthetic.is_dir():
    state = "is not a directory" if synthetic.exists() else "does not exist"
    raise UserError(f"synthetic set {synthetic} {state}: run `python -m jaxaug.generate` first, or point "
                    "--config.synthetic at a generated set")
  path = synthetic / "config.json"
  try:
    record = json.loads(path.read_text())
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
      raise ValueError("no generation config in it")
    return record
  except (OSError, ValueError):
    raise UserError(f"{synthetic} is not a jaxaug synthetic set ({path.name} missing or unreadable): point "
                    "--config.synthetic at a `python -m jaxaug.generate` output directory") from None


def prepare(config) -> Job:
  """Validates the config, the two sets and the model; raises UserError before any output exists."""
  check_config(config)
  generation = _generation_record(Path(os.path.expanduser(config.synthetic)))
  s = settings_from(config, generation["config"])
  synthetic = SyntheticSource(s.synthetic)
  if len(synthetic) == 0:
    raise UserError(f"synthetic set {s.synthetic} has no finished units yet: let `python -m jaxaug.generate` "
                    "commit some, then score it")
  if not s.real:
    raise UserError(f"{s.synthetic}/config.json names no real source: pass --config.real=SPEC")
  real = open_source(s.real, s.split)
  if s.shots:
    real = kshot(real, s.shots, s.shots_seed)
  if len(real) == 0:
    raise UserError(f"real source {s.real!r} has no images in split {s.split!r}: pass --config.real / --config.split "
                    "of the images the set should resemble")
  check_classes(real, synthetic, str(s.synthetic))
  if s.keep is not None and not os.access(s.synthetic, os.W_OK):
    raise UserError(f"cannot write the keep list into {s.synthetic} (not writable): make the set's directory "
                    "writable, or score without --config.keep")
  chosen = [encoders.build(name, clip_encoder=lambda: _clip_encoder(s), inception_weights=s.inception_weights,
                           dinov2_weights=s.dinov2) for name in s.encoders]
  job = Job(settings=s, synthetic=synthetic, real=real, encoders=chosen,
            synthetic_units=embed.synthetic_units(synthetic), fingerprint=generation.get("fingerprint", {}))
  job.caches = [_caches(job, encoder) for encoder in chosen]
  return job


def _clip_encoder(s: Settings) -> encoders.Encoder:
  """The image tower of the checkpoint that made the set (or --config.model)."""
  if not s.model:
    raise UserError(f"{s.synthetic}/config.json names no model: pass --config.model=<unCLIP checkpoint>")
  return encoders.clip_checkpoint(s.model, s.dtype)


def _caches(job: Job, encoder: encoders.Encoder) -> tuple[embed.Cache, embed.Cache]:
  """The encoder's caches of both sets (CLIP's named real-* / synthetic-* as before there were other encoders)."""
  s = job.settings
  model, prefix = encoder.identity, "" if encoder.name == "clip" else f"{encoder.name}-"
  real = embed.Cache(s.cache, f"{prefix}real", {**model, "real": s.real, "split": s.split, "shots": s.shots,
                                                "shots_seed": s.shots_seed, "unit_size": s.unit_size,
                                                "images": len(job.real)})
  return real, embed.Cache(s.cache, f"{prefix}synthetic", {**model, "synthetic": str(s.synthetic.resolve()),
                                                           "generation": job.fingerprint})


def _make_output(out: Path):
  fsutil.make_dirs(out, "output directory", "--config.output_dir")


def embed_sets(job: Job) -> dict:
  """Embeds whatever each encoder's caches lack, on every host; returns this host's counts and time."""
  s = job.settings
  if jax.process_index() == 0:
    _make_output(s.output)
    for cache in (c for pair in job.caches for c in pair):
      cache.prepare()
  mesh.barrier("score-caches")
  mesh_ = mesh.data_mesh()
  stats = []
  for encoder, (real_cache, syn_cache) in zip(job.encoders, job.caches):
    embedder = embed.embedder_for(encoder, mesh_, s.per_device, s.reader_threads)
    tag = "" if len(job.encoders) == 1 else f" ({encoder.name})"
    stats.append(embed.embed_units(embedder, job.real, embed.real_units(len(job.real), s.unit_size), real_cache,
                                   desc=f"embedding real{tag}"))
    synthetic = _ReadOnce(job.synthetic)
    stats.append(embed.embed_units(embedder, synthetic, job.synthetic_units, syn_cache,
                                   desc=f"embedding synthetic{tag}", extra=synthetic.sources))
  mesh.barrier("score-embedded")
  return {"embedded_images": sum(st["images"] for st in stats),
          "unreadable_images": sum(st["skipped"] for st in stats),
          "embed_s": round(sum(st["seconds"] for st in stats), 3)}


class _ReadOnce(ImageSource):
  """The synthetic set as embedding reads it, each record decoded once: its image for the tower, and its source
  ids held until its unit is committed (`sources`, the cache's record of what each image was conditioned on)."""

  def __init__(self, synthetic: SyntheticSource):
    self.synthetic, self.labels, self.class_names = synthetic, synthetic.labels, synthetic.class_names
    self.source_ids = {}  # position -> source ids; filled by reader threads, emptied by the unit's commit

  def read(self, index: int) -> bytes:
    record = self.synthetic.record(index)
    self.source_ids[int(index)] = record["provenance"].get("source_ids", [])
    return record["image"]

  def id(self, index: int) -> str:
    return self.synthetic.id(index)

  def sources(self, unit: embed.Unit) -> dict:
    return {"sources": [self.source_ids.pop(int(p)) for p in unit.positions]}


@dataclasses.dataclass
class Loaded:
  """The embeddings of both sets (readable rows) and the source positions of those rows."""
  embeddings: scoring.Embeddings
  real_positions: np.ndarray
  synthetic_positions: np.ndarray


def load_embeddings(job: Job, encoder: int = 0) -> Loaded:
  """Both sets from the cache of the `encoder`-th encoder, unreadable rows dropped, each synthetic image's sources as
  real rows."""
  s = job.settings
  real_cache, syn_cache = job.caches[encoder]
  real, _ = real_cache.load(embed.real_units(len(job.real), s.unit_size))
  syn_units = job.synthetic_units
  syn, done = syn_cache.load(syn_units)
  real_ok, syn_ok = np.isfinite(real).all(axis=1), np.isfinite(syn).all(axis=1)
  real_row = np.cumsum(real_ok) - 1  # source position -> row among the readable real images
  where = {image_id: int(real_row[p]) for p, image_id in enumerate(job.real.ids()) if real_ok[p]}
  ids = [list(ids) for u in syn_units for ids in done[u.number].get("sources", [[]] * len(u.positions))]
  sources = np.full((len(ids), 2), -1, np.int64)
  for row, image_ids in enumerate(ids):
    found = [where[i] for i in image_ids if i in where][:2]
    sources[row, :len(found)] = found
  real_positions, syn_positions = np.flatnonzero(real_ok), np.flatnonzero(syn_ok)
  emb = scoring.Embeddings(
      real=real[real_ok], real_labels=job.real.labels[real_positions], synthetic=syn[syn_ok],
      labels=job.synthetic.labels[syn_positions], methods=job.synthetic.methods[syn_positions],
      sources=sources[syn_ok], item_ids=job.synthetic.item_ids[syn_positions],
      class_names=tuple(job.real.class_names), real_counts=training_counts(job))
  return Loaded(emb, real_positions, syn_positions)


def training_counts(job: Job) -> np.ndarray:
  """Real images per class for the many / medium / few groups: the training images the set was generated from
  (dataset_info.json), so that scoring against a validation split keeps the long tail's groups."""
  counts = job.synthetic.info.get("real_counts")
  if counts is not None and len(counts) == job.real.num_classes:
    return np.asarray(counts)
  return job.real.counts()


def draw_pictures(job: Job, loaded: Loaded, scores: dict, votes: consistency.Votes) -> list[Path]:
  s, emb = job.settings, loaded.embeddings
  encoder = job.encoders[0]
  written = [pictures.fidelity_diversity_png(scores, s.output / "fidelity_diversity.png", encoder.name)]
  strips = []
  for row in scoring.worst_classes(scores, s.worst_classes, s.rank_by):
    rank_name = f"FD-{encoder.label}" if s.rank_by == "fd" else RANK_NAMES[s.rank_by]
    title = (f"{row['name']}\n{rank_name} {row[s.rank_by]:.3g}\n"
             f"{row['n_real']} real, {row['n_synthetic']} synthetic")
    strip = pictures.pick_strip(emb, row["class"], s.neighbours, title)
    if strip:
      strips.append(strip)
  synthetic_image = lambda r: read_fit(job.synthetic, loaded.synthetic_positions[r], pictures.TILE)
  written.append(pictures.worst_classes_png(
      strips, lambda r: read_fit(job.real, loaded.real_positions[r], pictures.TILE), synthetic_image,
      s.output / "worst_classes.png", s.neighbours))
  least = [r["class"] for r in scoring.worst_classes(scores, s.consistency_classes, "consistency")]
  written.append(pictures.consistency_png(pictures.pick_consistency_rows(emb, votes, least, s.neighbours),
                                          synthetic_image, s.output / "class_consistency.png", s.neighbours, encoder.name))
  return [p for p in written if p]


def write_keep_list(job: Job, loaded: Loaded, votes: consistency.Votes) -> dict:
  """The keep rule's list of the set's images beside the set (data/keep.py); what scores.json records of it."""
  s, emb, encoder = job.settings, loaded.embeddings, job.encoders[0].name
  path = s.synthetic / keep.file_name(encoder, str(s.keep))
  try:
    counts = keep.write(path, synthetic_dir=s.synthetic, fingerprint=job.fingerprint,
                        class_names=job.synthetic.class_names, item_ids=job.synthetic.item_ids,
                        labels=job.synthetic.labels, scored=emb.item_ids,
                        keep=consistency.kept(s.keep, votes, emb.labels, emb.item_ids), rule=str(s.keep),
                        encoder=encoder, k=votes.k)
  except OSError as e:
    raise UserError(f"cannot write the keep list {path} ({e.strerror or e}): make {s.synthetic} writable and rerun "
                    "(the embeddings are cached)") from None
  return {"file": str(path), "rule": str(s.keep), "encoder": encoder, "k": votes.k,
          **{k: counts[k] for k in ("images", "kept", "dropped", "unreadable")}}


def run(config) -> dict:
  """Embeds what the cache lacks, then (process 0) scores and writes the report; returns scores.json's content."""
  check_config(config)  # before jax.distributed starts
  mesh.initialize(config.mesh.coordinator, config.mesh.num_processes, config.mesh.process_id)
  started = time.perf_counter()
  job = prepare(config)
  s = job.settings
  units, done = job.synthetic.info.get("units"), job.synthetic.info.get("units_done")
  if units and done is not None and done < units:
    logging.warning("scoring %d of %d units of %s: the set is not finished", done, units, s.synthetic)
  embedded = embed_sets(job)
  if jax.process_index() != 0:
    return {}
  loaded = load_embeddings(job)
  emb = loaded.embeddings
  votes = scoring.class_votes(emb, s.metrics)
  scores = scoring.compute_scores(emb, s.metrics, votes)
  units_done = len(job.synthetic_units)
  scores["about"] = {
      "synthetic": str(s.synthetic), "synthetic_images": len(emb.synthetic), "units_done": units_done,
      "units": units or units_done,
      "real": s.real, "split": s.split, "shots": s.shots, "real_images": len(emb.real), "model": s.model,
      "dtype": s.dtype, "dim": int(emb.real.shape[1]), "class_names": list(emb.class_names),
      "methods": emb.method_names, "encoder": job.encoders[0].name,
      "encoders": [{"name": e.name, "label": e.label, "dim": e.dim} for e in job.encoders]}
  by_encoder = {e.name: _encoder_scores(job, i, s.metrics) for i, e in enumerate(job.encoders) if i}
  scores["settings"] = dataclasses.asdict(s.metrics)
  scores["timing"] = {**embedded, **scores["timing"]}
  if s.keep is not None:
    scores["keep"] = write_keep_list(job, loaded, votes)
  scores = {key: scores[key] for key in ("about", "settings", "overall", "methods", "groups", "real", "copies",
                                         "prdc_skipped_classes", "classes", "keep", "timing") if key in scores}
  if by_encoder:
    scores["by_encoder"] = by_encoder
    scores["timing"]["metrics_s"] = round(scores["timing"]["metrics_s"] + sum(
        b.pop("metrics_s") for b in by_encoder.values()), 3)
  drawn = []
  try:
    drawn = draw_pictures(job, loaded, scores, votes)
  except Exception as e:  # noqa: BLE001 (a picture must never cost the scores)
    logging.warning("pictures not drawn: %s", e)
  scores["timing"]["total_s"] = round(time.perf_counter() - started, 3)
  json_path, md_path = report.write(s.output, scores)
  print(report.summary(scores, [json_path, md_path] + drawn), flush=True)
  return scores


def _encoder_scores(job: Job, index: int, settings: scoring.MetricSettings) -> dict:
  """Every row of the scores in a further encoder's space (its own class votes too), as scores.json's `by_encoder`
  holds them."""
  encoder, emb = job.encoders[index], load_embeddings(job, index).embeddings
  scores = scoring.compute_scores(emb, settings, scoring.class_votes(emb, settings))
  rows = {key: scores[key] for key in ("overall", "methods", "groups", "real", "copies", "prdc_skipped_classes",
                                       "classes")}
  return {"label": encoder.label, "dim": encoder.dim, **rows, "metrics_s": scores["timing"]["metrics_s"]}


def main():
  run_with_config(run, _DEFAULT_CONFIG, "score config: a shipped name (score) or a path to a .py file")


if __name__ == "__main__":
  main()
