"""The experiment as a library function: check everything, then run the grid column by column, resumably."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jax
from absl import logging

from jaxaug import fsutil, locks, mesh
from jaxaug.errors import UserError
from jaxaug.experiment_lib import cost, grid as grid_lib, pictures, results as results_lib, stages
from jaxaug.experiment_lib.manifest import Manifest
from jaxaug.generate_lib import config as generate_config
from jaxaug.score_lib import checks as score_checks
from jaxaug.train_lib import loop, multirun


def _as_template_error(e: UserError, prefix: str) -> UserError:
  """A template's own check names `--config.x`; in the experiment that field is `--config.<prefix>.x`."""
  return UserError(str(e).replace("--config.", f"--config.{prefix}."))


def preflight(config, grid: grid_lib.Grid, cells: grid_lib.Cells) -> dict:
  """Every user error visible before any stage: the data (classes, shots) and every cell's config."""
  facts = {}
  for ds in grid.datasets:
    splits = grid_lib.open_splits(ds)
    facts[ds.name] = grid_lib.open_facts(ds, grid.shots, splits)
    sample = next(c for c in cells.trainings if c.dataset == ds)
    config_t = grid_lib.training_config(config, grid, sample)
    try:
      loop.check_config(config_t)
      loop.check(config_t, loop.Data(train=loop.training_split(config_t, splits[0]), eval=splits[1], synthetic=None))
    except UserError as e:
      raise _as_template_error(e, "training") from None
    if config_t.pretrained and not Path(os.path.expanduser(config_t.pretrained)).is_file():
      raise UserError(f"--config.training.pretrained={config_t.pretrained!r} is not a file: pass the backbone's "
                      "torchvision/timm .safetensors weights")
  for cell in cells.generations:
    try:
      generate_config.check_config(grid_lib.generation_config(config, grid, cell))
    except UserError as e:
      raise _as_template_error(e, "generation") from None
  if grid.score and cells.generations:  # the score stage's values, checked before generation runs for hours
    try:
      score_checks.check_config(grid_lib.score_config(config, grid, cells.generations[0]))
    except UserError as e:
      raise _as_template_error(e, "score.settings") from None
  return facts


def _prepare_output(out: Path) -> None:
  fsutil.make_dirs(out, "the experiment directory", "--config.output.dir")


def run(config, *, dry_run: bool = False, device: str = "H100", bench_json: str = "") -> dict:
  """Runs (or continues) the grid; returns results.json's content (the plan's numbers with dry_run)."""
  mesh.initialize(config.mesh.coordinator, config.mesh.num_processes, config.mesh.process_id)
  grid = grid_lib.settings(config)
  cells = grid_lib.cells(grid)
  if dry_run:
    p = cost.plan(config, grid, cells, device=device, bench_json=bench_json)
    print(cost.text(grid, p), flush=True)
    return p
  facts = preflight(config, grid, cells)
  _say(cost.text(grid, cost.plan(config, grid, cells, flops=False, facts=facts)).replace("\n", "\n  "))
  _prepare_output(grid.out)
  process = jax.process_index()
  with locks.hold_run(grid.out, process, jax.process_count(), "experiment", "--config.output.dir"):
    return _run(config, grid, cells, primary=process == 0)


def _run(config, grid: grid_lib.Grid, cells: grid_lib.Cells, primary: bool) -> dict:
  started = time.perf_counter()
  if primary:
    fsutil.atomic_write_text(grid.out / "experiment.json", json.dumps(json.loads(config.to_json()), indent=2))
  ctx = stages.Context(config=config, grid=grid, manifest=Manifest(grid.out), programs=multirun.Programs(),
                       primary=primary)
  stages.check_finished(ctx, cells)
  counter = stages.CompileCounter()
  columns = cells.columns()
  try:
    for i, (ds, k) in enumerate(columns):
      column = f"{ds.name} {k}-shot" if k else ds.name
      _say(f"[{i + 1}/{len(columns)}] {column}")
      for cell in (c for c in cells.subsets if (c.dataset, c.shots) == (ds, k)):
        stages.run_subset(ctx, cell)
      for cell in (c for c in cells.generations if (c.dataset, c.shots) == (ds, k)):
        stages.run_generation(ctx, cell)
        if grid.score:
          stages.run_score(ctx, cell)
      trainings = [c for c in cells.trainings if (c.dataset, c.shots) == (ds, k)]
      opened = loop.Opened()  # the column's real splits, subsets and synthetic sets, opened once for its runs
      for group in stages.train_groups(ctx, trainings):
        stages.run_training_group(ctx, group, opened)
      if primary and i < len(columns) - 1:  # a partial grid's tables; the last column's are written below
        write_results(grid.out, results_lib.collect(grid, cells, ctx.manifest))
  finally:
    counter.close()
  results = results_lib.collect(grid, cells, ctx.manifest)
  paths = write_results(grid.out, results) if primary else []
  log = {"wall_s": round(time.perf_counter() - started, 2), "training_programs_traced": dict(ctx.programs.traces),
         "xla_programs_built": sum(counter.built.values()), "xla_programs_from_persistent_cache": counter.loaded,
         "xla_programs_by_name": dict(counter.built.most_common())}
  if primary:
    _append_log(grid.out, log)
    print(_summary(results, paths, log), flush=True)
  return results


def write_results(out: Path, results: dict) -> list[Path]:
  """results.json, results.md and the pictures (a picture never fails the experiment)."""
  paths = results_lib.write(out, results)
  try:
    paths += pictures.draw(out, results)
  except Exception as e:  # noqa: BLE001
    logging.warning("results pictures not drawn: %s", e)
  return paths


def _say(text: str) -> None:
  print(f"experiment: {text}", file=sys.stderr, flush=True)


def _append_log(out: Path, log: dict) -> None:
  """runs.jsonl: one line per invocation (wall time, compiles); results.json stays free of timings."""
  fsutil.append_line(out / "runs.jsonl", json.dumps({"finished": time.strftime("%Y-%m-%d %H:%M:%S"), **log}))


def _summary(results: dict, paths: list[Path], log: dict) -> str:
  table = [line for line in results_lib.markdown(results).splitlines() if line.startswith("|")]
  traced = log["training_programs_traced"]
  lines = table[: 2 + len(results["methods"]) + len(results["baselines"])]
  lines += [f"{results['runs_done']} of {results['runs_total']} training runs done in {log['wall_s']:.1f}s; "
            f"training compiled {sum(traced.values())} program(s) ({', '.join(f'{k} {v}' for k, v in traced.items())})"
            f"; {log['xla_programs_built']} XLA programs built in all "
            f"({log['xla_programs_from_persistent_cache']} from the persistent cache)",
            f"results: {paths[1]}  ({', '.join(p.name for p in paths if p != paths[1])})" if paths else ""]
  return "\n".join(lines)

