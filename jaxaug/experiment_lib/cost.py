"""--dry_run: what a grid will do and what it costs, before anything runs.

Counts come from the grid and the data (or, where the data is not on this machine, from the datasets'
documented sizes, said so). Device-hours come from FLOP counts: XLA's count of the lowered generation step
(`bench flops`' count, on the model's architecture with no weights read: `flops.generation_flops`) and of the
lowered train and eval steps (`flops.training_flops`), at 40% of the device's dense bf16 peak as `bench flops`
assumes (flops.UTILISATION); or, for generation, from a `python -m jaxaug.bench sampler|flops --json=FILE` the
user passes.
"""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import numpy as np

from jaxaug import flops as flops_lib, plan as plan_lib
from jaxaug.errors import UserError
from jaxaug.experiment_lib import grid as grid_lib
from jaxaug.train_lib import loop


@dataclasses.dataclass
class GenerationGroup:
  """Generation cells of one kind (methods, txt2img, sdedit): the same program, so the same FLOPs per image."""
  label: str
  runs: int = 0
  images: int = 0
  config: object = None
  tflop_per_image: float | None = None
  images_per_s: float | None = None  # measured, from a bench JSON


def facts_for(grid: grid_lib.Grid) -> tuple[dict, list[str]]:
  """Each dataset's facts, opened and checked where the data is here, else documented; notes say which."""
  facts, notes = {}, []
  for ds in grid.datasets:
    try:
      splits = grid_lib.open_splits(ds)
    except UserError as e:
      documented = grid_lib.documented_facts(ds)
      if documented is None:
        raise UserError(f"dataset {ds.name} is not readable here and has no documented size for a dry run "
                        f"({e}); run the dry run where its data is") from None
      facts[ds.name] = documented
      notes.append(f"{ds.name}: data not on this machine, sizes as documented ({documented.num_classes} classes, "
                   f"{documented.train_images:,} train / {documented.eval_images:,} eval images)")
      continue
    facts[ds.name] = grid_lib.open_facts(ds, grid.shots, splits)
  return facts, notes


def _class_counts(facts: grid_lib.DataFacts, shots: int) -> np.ndarray:
  """Real training images per class after the k-shot subset."""
  if facts.train_counts is not None:
    counts = np.asarray(facts.train_counts)
    return np.minimum(counts, shots) if shots else counts
  if shots:
    return np.full(facts.num_classes, shots)
  mean = facts.train_images / facts.num_classes  # documented: only the total is known
  return np.full(facts.num_classes, mean)


def images_of(config, facts: grid_lib.DataFacts, shots: int) -> int:
  """Images a generation config makes: its plan policy over the classes, for each of its methods."""
  counts = _class_counts(facts, shots)
  methods = len([m for m in config.methods.split(",") if m.strip()])
  if config.plan.policy == "fill_to" and facts.train_counts is None and not shots:
    per_method = max(config.plan.amount * facts.num_classes - facts.train_images, 0)  # no class exceeds the amount
  else:
    per_method = int(plan_lib.per_class_amounts(counts.astype(np.int64), config.plan.policy, config.plan.amount).sum())
  return int(per_method * methods)


def _steps_per_epoch(config, real_images: int, synthetic_images: int) -> int:
  data = types.SimpleNamespace(train=range(real_images), synthetic=range(synthetic_images) if config.synthetic else None)
  return loop.steps_per_epoch(config, data)


def _evaluations(config, total_steps: int) -> int:
  every = config.eval_every
  return (len([s for s in range(every, total_steps, every)]) if every else 0) + 1


def _bench(path: str) -> dict:
  try:
    record = json.loads(Path(path).read_text())
    bench, _ = record["bench"], record["result"]  # both must be there
  except (OSError, ValueError, KeyError, TypeError):
    raise UserError(f"--bench_json={path} is not a JSON written by `python -m jaxaug.bench sampler|flops "
                    "--json=FILE`") from None
  if bench not in ("sampler", "flops"):
    raise UserError(f"--bench_json={path} holds a `bench {bench}` result; pass one of `bench sampler` (measured "
                    "images/s) or `bench flops` (FLOPs per image)")
  return record


def plan(config, grid: grid_lib.Grid, cells: grid_lib.Cells, *, device: str = "H100", bench_json: str = "",
         flops: bool = True, facts: dict | None = None) -> dict:
  """The plan as numbers: images, runs, steps, FLOPs and device-hours (`facts`: the datasets, if already opened)."""
  peak = flops_lib.bf16_peak(device)
  if peak is None:
    raise UserError(f"--device={device!r} is not one of {', '.join(flops_lib.BF16_PEAK_TFLOPS)}")
  facts, notes = (facts, []) if facts is not None else facts_for(grid)
  measured = _bench(bench_json) if bench_json else None
  generations: dict[str, GenerationGroup] = {}
  for cell in cells.generations:
    config_g = grid_lib.generation_config(config, grid, cell)
    label = ("all methods mixed" if cell.kind == "methods" else cell.kind if cell.kind in grid_lib.GENERATED_BASELINES
             else "one method each")
    g = generations.setdefault(label, GenerationGroup(label, config=config_g))
    g.runs += 1
    g.images += images_of(config_g, facts[cell.dataset.name], cell.shots)
  for g in generations.values():
    c = g.config
    if measured and measured["bench"] == "sampler" and g.label != "sdedit":
      r = measured["result"]
      if (r["resolution"], r["steps"]) == (c.resolution, c.sampler.steps):
        g.images_per_s = r["best"]["images_per_s"]
    elif measured and measured["bench"] == "flops" and g.label != "sdedit":
      r = measured["result"]
      if (r["resolution"], r["steps"]) == (c.resolution, c.sampler.steps):
        g.tflop_per_image = r["tflop_per_image"]
    if g.tflop_per_image is None and g.images_per_s is None and flops:
      g.tflop_per_image = flops_lib.generation_flops(c)["tflop_per_image"]

  trainings = {}
  for cell in cells.trainings:
    config_t = grid_lib.training_config(config, grid, cell)
    f = facts[cell.dataset.name]
    real = int(_class_counts(f, cell.shots).sum())
    synthetic = 0
    if cell.generation is not None:
      config_g = grid_lib.generation_config(config, grid, cell.generation)
      synthetic = images_of(config_g, f, cell.shots)
      if cell.generation.kind == "methods":
        synthetic //= max(len(grid.methods), 1)
    steps = config_t.epochs * _steps_per_epoch(config_t, real, synthetic)
    key = (config_t.model, f.num_classes, config_t.batch_size, config_t.load_size, config_t.crop_size,
           config_t.linear_probe, config_t.eval_batch_size)
    t = trainings.setdefault(key, {"config": config_t, "classes": f.num_classes, "runs": 0, "steps": 0,
                                   "eval_images": 0, "steps_each": set()})
    t["runs"] += 1
    t["steps"] += steps
    t["steps_each"].add(steps)
    t["eval_images"] += _evaluations(config_t, steps) * f.eval_images
  for t in trainings.values():
    if flops:
      t.update(flops_lib.training_flops(t["config"], t["classes"]))

  hours_of = lambda tflop: flops_lib.device_hours(tflop, peak)
  hours = {"generation": 0.0, "training": 0.0, "evaluation": 0.0}
  for g in generations.values():
    if g.images_per_s:
      hours["generation"] += g.images / g.images_per_s / 3600
    elif g.tflop_per_image is not None:
      hours["generation"] += hours_of(g.images * g.tflop_per_image)
  for t in trainings.values():
    if "tflop_per_step" in t:
      hours["training"] += hours_of(t["steps"] * t["tflop_per_step"])
      hours["evaluation"] += hours_of(t["eval_images"] * t["tflop_per_eval_image"])
  n_runs = sum(t["runs"] for t in trainings.values())
  per_program = grid.runs_per_program or None
  return {"device": device, "peak_tflops": peak, "utilisation": flops_lib.UTILISATION, "notes": notes,
          "datasets": {n: f.num_classes for n, f in facts.items()}, "subsets": len(cells.subsets),
          "generation": [dataclasses.asdict(g) | {"config": None} for g in generations.values()],
          "images": sum(g.images for g in generations.values()), "generation_runs": len(cells.generations),
          "scored_sets": len(cells.generations) if grid.score else 0,
          "training_runs": n_runs, "training": [
              {k: (sorted(v) if isinstance(v, set) else v) for k, v in t.items() if k != "config"}
              | {"model": t["config"].model, "batch_size": t["config"].batch_size}
              for t in trainings.values()],
          "runs_per_program": per_program, "columns": len(cells.columns()),
          "device_hours": hours if flops else None,
          "measured_generation": bool(measured)}


def text(grid: grid_lib.Grid, p: dict) -> str:
  """The plan as the lines --dry_run prints."""
  rows = [f"plan for {grid.table} grid -> {grid.out}",
          f"  datasets: {', '.join(f'{n} ({c} classes)' for n, c in p['datasets'].items())}",
          f"  shots: {', '.join(map(str, grid.shots))}; methods: {len(grid.methods)} "
          f"({', '.join(grid.methods) or 'none'}); baselines: {', '.join(grid.baselines) or 'none'}; "
          f"seeds: {', '.join(map(str, grid.seeds))}" + ("; reference_quirks" if grid.reference_quirks else "")]
  rows += [f"  note: {n}" for n in p["notes"]]
  rows.append(f"  k-shot subsets: {p['subsets']}")
  rows.append(f"  images to generate: {p['images']:,} in {p['generation_runs']} generation runs")
  for g in p["generation"]:
    rate = (f", {g['tflop_per_image']:.4g} TFLOP per image" if g["tflop_per_image"] is not None else "")
    rate += f", measured {g['images_per_s']:.3g} images/s" if g["images_per_s"] else ""
    rows.append(f"    {g['label']}: {g['runs']} runs, {g['images']:,} images{rate}")
  if p["scored_sets"]:
    rows.append(f"  sets to score: {p['scored_sets']}")
  per = p["runs_per_program"]
  rows.append(f"  training runs: {p['training_runs']:,}, batched "
              + (f"{per} per program" if per else "as one program per shape (the runs of a column)"))
  for t in p["training"]:
    steps = "/".join(f"{s:,}" for s in t["steps_each"])
    rows.append(f"    {t['model']} on {t['classes']} classes: {t['runs']:,} runs x {steps} steps of batch "
                f"{t['batch_size']} ({t['steps']:,} steps, {t['eval_images']:,} evaluated images)"
                + (f"; {t['tflop_per_step']:.3g} TFLOP per step" if "tflop_per_step" in t else ""))
  hours = p["device_hours"]
  if hours:
    basis = "FLOP counts (matrix FLOPs of the traced programs)"
    if p["measured_generation"]:
      basis += "; generation at the bench JSON's rate where it matches"
    rows.append(f"  device-hours on one {p['device']} at {p['utilisation']:.0%} of its {p['peak_tflops']:g} "
                f"TFLOP/s bf16 peak, from {basis}:")
    for k, v in list(hours.items()) + [("total", sum(hours.values()))]:
      rows.append(f"    {k:11s} " + (f"{v:10.2f} h" if v >= 0.01 else f"{v * 3600:10.3g} s"))
  return "\n".join(rows)
