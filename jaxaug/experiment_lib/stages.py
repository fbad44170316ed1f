"""The stages of a grid, each calling a library function (generate.run, score.run, multirun.train_group).

Every stage skips cells the manifest lists and records a cell only once its outputs are complete; a cell
that was in flight when the experiment was killed is resumed by its own stage's resume (generation units,
training checkpoints), so a rerun loses and repeats nothing.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
from pathlib import Path

import jax
from absl import logging

from jaxaug import evaluate
from jaxaug.experiment_lib import grid as grid_lib
from jaxaug.experiment_lib.manifest import Manifest
from jaxaug.generate_lib import config as generate_config
from jaxaug.score_lib import report
from jaxaug.train_lib import loop, multirun

# What a training cell's result keeps from metrics.json (per_class stays in the run's own directory).
RESULT_KEYS = ("best_top1", "top1", "many", "medium", "few", "train_loss", "step")
# What a set's result keeps of each method's scores (score_lib's rows).
SCORE_KEYS = ("n_synthetic", "fd", "kid", "kid_std", "kid_se", "precision", "recall", "density", "coverage",
              "diversity", "vendi", "copy_share", "consistency")


class CompileCounter:
  """XLA programs built in this process (jax.monitoring), by name; `loaded` of them came from the persistent cache."""

  def __init__(self):
    self.built: collections.Counter = collections.Counter()
    self.loaded = 0
    jax.monitoring.register_event_duration_secs_listener(self._duration)
    jax.monitoring.register_event_listener(self._event)

  def _duration(self, event: str, duration: float, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      self.built[str(kwargs.get("fun_name", "?"))] += 1

  def _event(self, event: str, **kwargs):
    if event == "/jax/compilation_cache/cache_hits":
      self.loaded += 1

  def close(self):
    jax.monitoring.unregister_event_duration_listener(self._duration)
    jax.monitoring.unregister_event_listener(self._event)


@dataclasses.dataclass
class Context:
  config: object
  grid: grid_lib.Grid
  manifest: Manifest
  programs: multirun.Programs
  primary: bool

  def relative(self, path) -> str:
    return str(Path(path).relative_to(self.grid.out))


# ---------------------------------------------------------------------------
# Fingerprints: what decides a cell's output


def subset_fingerprint(cell: grid_lib.SubsetCell) -> dict:
  return {"source": cell.dataset.spec, "split": cell.dataset.train_split, "shots": cell.shots, "seed": cell.seed}


def generation_fingerprint(ctx: Context, cell: grid_lib.GenerationCell) -> dict:
  return generate_config.fingerprint(grid_lib.generation_config(ctx.config, ctx.grid, cell))


def score_fingerprint(ctx: Context, cell: grid_lib.GenerationCell) -> dict:
  config = json.loads(grid_lib.score_config(ctx.config, ctx.grid, cell).to_json())
  return {k: v for k, v in config.items() if k not in ("mesh", "synthetic", "output_dir", "cache_dir")}


def training_fingerprint(ctx: Context, cell: grid_lib.TrainCell) -> dict:
  return loop.fingerprint(grid_lib.training_config(ctx.config, ctx.grid, cell))


def check_finished(ctx: Context, cells: grid_lib.Cells) -> None:
  """Every finished cell still has its config (one line naming the first that changed), before any stage runs."""
  for c in cells.subsets:
    ctx.manifest.check(c.key, subset_fingerprint(c))
  for c in cells.generations:
    ctx.manifest.check(c.key, generation_fingerprint(ctx, c))
    if ctx.grid.score:
      ctx.manifest.check(score_key(c), score_fingerprint(ctx, c))
  for c in cells.trainings:
    ctx.manifest.check(c.key, training_fingerprint(ctx, c))


# ---------------------------------------------------------------------------
# Stages


def run_subset(ctx: Context, cell: grid_lib.SubsetCell) -> None:
  """Records the k-shot subset by image id: what generation and every training run of the column draw."""
  from jaxaug.data import kshot, open_source

  if ctx.manifest.done(cell.key):
    return
  source = kshot(open_source(cell.dataset.spec, cell.dataset.train_split), cell.shots, cell.seed)
  path = ctx.grid.out / "subsets" / f"{cell.dataset.name}_{cell.shots}shot_seed{cell.seed}.json"
  if ctx.primary:
    path.parent.mkdir(parents=True, exist_ok=True)
    evaluate.write_json(str(path), {"source": cell.dataset.spec, "split": cell.dataset.train_split,
                                    "shots": cell.shots, "seed": cell.seed, "class_names": list(source.class_names),
                                    "counts": source.counts().tolist(), "ids": source.ids()})
    ctx.manifest.record([{"key": cell.key, "stage": "subset", "fingerprint": subset_fingerprint(cell),
                          "result": {"images": len(source), "file": ctx.relative(path)}}])


def run_generation(ctx: Context, cell: grid_lib.GenerationCell) -> None:
  """One generation run (its own resume continues a killed one); recorded once every unit is committed."""
  from jaxaug import generate
  from jaxaug.data import synthetic

  if ctx.manifest.done(cell.key):
    return
  config = grid_lib.generation_config(ctx.config, ctx.grid, cell)
  logging.info("experiment: generating %s", cell.name)
  generate.run(config)
  info = synthetic.read_info(config.output.dir)
  if info.get("units_done") != info.get("units"):
    raise RuntimeError(f"generation of {cell.name} returned with {info.get('units_done')} of {info.get('units')} "
                       "units done")
  if ctx.primary:
    ctx.manifest.record([{"key": cell.key, "stage": "generate", "fingerprint": generation_fingerprint(ctx, cell),
                          "result": {"images": int(sum(info["synthetic_counts"])), "units": info["units"],
                                     "methods": info["methods"], "dir": ctx.relative(config.output.dir)}}])


def score_key(cell: grid_lib.GenerationCell) -> str:
  return f"score/{cell.name}"


def run_score(ctx: Context, cell: grid_lib.GenerationCell) -> None:
  """`jaxaug.score` on one generated set (its embedding cache resumes a killed run); recorded with each method's row."""
  from jaxaug import score

  key = score_key(cell)
  if ctx.manifest.done(key):
    return
  scores = score.run(grid_lib.score_config(ctx.config, ctx.grid, cell))
  if ctx.primary:
    rows = {name: {k: row.get(k) for k in SCORE_KEYS} for name, row in scores["methods"].items()}
    ctx.manifest.record([{"key": key, "stage": "score", "fingerprint": score_fingerprint(ctx, cell),
                          "result": {"methods": rows, "real_diversity": scores["real"].get("diversity"),
                                     "encoder": report.label(scores),
                                     "file": ctx.relative(Path(scores["about"]["synthetic"]) / "scores" /
                                                          "scores.json")}}])


def train_groups(ctx: Context, trainings: list[grid_lib.TrainCell]) -> list[list[grid_lib.TrainCell]]:
  """The pending runs in groups that share one program: equal program settings, at most runs_per_program each."""
  by_key: dict = {}
  for cell in trainings:
    if ctx.manifest.done(cell.key):
      continue
    config = grid_lib.training_config(ctx.config, ctx.grid, cell)
    key = (config.model, config.linear_probe, config.batch_size, config.load_size, config.crop_size, config.epochs,
           config.steps_per_epoch, config.real, config.eval_split)  # refined by multirun.group_key when opened
    by_key.setdefault(key, []).append(cell)
  size = ctx.grid.runs_per_program
  groups = []
  for cells in by_key.values():
    n = size or len(cells)
    groups += [cells[i:i + n] for i in range(0, len(cells), n)]
  return groups


def run_training_group(ctx: Context, cells: list[grid_lib.TrainCell], opened: loop.Opened) -> None:
  """One batched program for the group's runs; every run recorded together once all metrics.json are written.

  `opened`: the column's sources, opened once for all its groups (loop.open_data)."""
  configs = [grid_lib.training_config(ctx.config, ctx.grid, c) for c in cells]
  runs = [multirun.Run(c, loop.open_data(c, opened)) for c in configs]
  keys = {multirun.group_key(r.config, r.data, loop.steps_per_epoch(r.config, r.data)) for r in runs}
  if len(keys) > 1:  # e.g. steps_per_epoch 0 over synthetic sets of different sizes: one program per kind
    for sub in _split_by_key(cells, runs):
      run_training_group(ctx, sub, opened)
    return
  name = hashlib.sha256("\n".join(c.key for c in cells).encode()).hexdigest()[:12]
  group_dir = ctx.grid.out / "train" / cells[0].column / "_programs" / name
  logging.info("experiment: training %d run(s) of %s as one program", len(cells), cells[0].column)
  results = multirun.train_group(runs, ctx.programs, group_dir)
  if ctx.primary:
    ctx.manifest.record([{"key": c.key, "stage": "train", "fingerprint": training_fingerprint(ctx, c),
                          "result": {**{k: r.get(k) for k in RESULT_KEYS}, "workdir": ctx.relative(config.workdir)}}
                         for c, r, config in zip(cells, results, configs)])


def _split_by_key(cells, runs):
  groups: dict = {}
  for cell, run in zip(cells, runs):
    key = multirun.group_key(run.config, run.data, loop.steps_per_epoch(run.config, run.data))
    groups.setdefault(key, []).append(cell)
  return list(groups.values())
