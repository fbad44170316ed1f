"""results.json (every cell) and results.md (the paper's tables, the paper's baselines beside ours).

Everything here is a pure function of the grid and the manifest, so a grid finished after a kill renders the
same files as one run straight through, and a partial grid renders what is finished and marks the rest pending.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxaug import evaluate, fsutil
from jaxaug.evaluate import markdown_table
from jaxaug.experiment_lib import grid as grid_lib
from jaxaug.experiment_lib.manifest import Manifest

# The paper's comparison (method.md, README): top-1 at 1/2/4/8/16 shots, as published by those papers.
PAPER_SHOTS = (1, 2, 4, 8, 16)
PAPER = {
    "coco": {"DA-Fusion": (.625, .700, .733, .750, .775), "Real Guidance": (.517, .633, .700, .741, .767),
             "RandAugment": (.467, .583, .675, .732, .775)},
    "pascal": {"DA-Fusion": (.657, .735, .764, .792, .821), "Real Guidance": (.593, .696, .750, .796, .822),
               "RandAugment": (.536, .657, .714, .778, .821)},
    "caltech101": {"DA-Fusion": (.854, .909, .922, .952, .966), "Real Guidance": (.841, .904, .917, .945, .961),
                   "RandAugment": (.791, .868, .917, .941, .966)},
    "flowers102": {"DA-Fusion": (.644, .755, .833, .866, .900), "Real Guidance": (.500, .650, .761, .844, .883),
                   "RandAugment": (.455, .633, .761, .833, .902)},
}
PAPER_ROWS = ("DA-Fusion", "Real Guidance", "RandAugment")
LT_COLUMNS = ("top1", "many", "medium", "few")


def paper_value(dataset: str, row: str, shots: int) -> float | None:
  values = PAPER.get(dataset, {}).get(row)
  return values[PAPER_SHOTS.index(shots)] if values and shots in PAPER_SHOTS else None


def metric_of(table: str) -> str:
  """Few-shot: each run's best evaluation (the DA-Fusion protocol); ImageNet-LT: the final evaluation."""
  return "best_top1" if table == "fewshot" else "top1"


def _stats(values: list[float]) -> dict:
  a = np.asarray(values, np.float64)
  return {"mean": float(a.mean()) if a.size else None, "std": float(a.std(ddof=1)) if a.size > 1 else None,
          "n": int(a.size)}


def collect(grid: grid_lib.Grid, cells: grid_lib.Cells, manifest: Manifest) -> dict:
  """results.json's content: the grid, every training cell (done or pending), per-cell statistics, the sets."""
  metric = metric_of(grid.table)
  runs = []
  for c in cells.trainings:
    entry = manifest.done(c.key)
    runs.append({"dataset": c.dataset.name, "shots": c.shots, "row": c.row, "seed": c.seed,
                 "status": "done" if entry else "pending", **(entry["result"] if entry else {})})
  summary = []
  for ds in grid.datasets:
    for k in grid.shots:
      for row in grid.rows:
        mine = [r for r in runs if (r["dataset"], r["shots"], r["row"]) == (ds.name, k, row)]
        done = [r for r in mine if r["status"] == "done"]
        stats = {key: _stats([r[key] for r in done if r.get(key) is not None])
                 for key in ((metric,) if grid.table == "fewshot" else LT_COLUMNS)}
        summary.append({"dataset": ds.name, "shots": k, "row": row, "done": len(done), "of": len(mine), **stats})
  sets = []
  for g in cells.generations:
    entry, scored = manifest.done(g.key), manifest.done(f"score/{g.name}")
    sets.append({"name": g.name, "dataset": g.dataset.name, "shots": g.shots, "kind": g.kind,
                 "status": "done" if entry else "pending", **(entry["result"] if entry else {}),
                 "scores": scored["result"] if scored else None})
  paper = {ds.name: PAPER[ds.name] for ds in grid.datasets if grid.table == "fewshot" and ds.name in PAPER}
  return {"table": grid.table, "metric": metric, "datasets": [vars(ds) for ds in grid.datasets],
          "shots": list(grid.shots), "methods": list(grid.methods), "baselines": list(grid.baselines),
          "seeds": list(grid.seeds), "reference_quirks": grid.reference_quirks,
          "runs_done": sum(r["status"] == "done" for r in runs), "runs_total": len(runs),
          "summary": summary, "runs": runs, "synthetic_sets": sets,
          "paper": {name: {row: list(v) for row, v in rows.items()} for name, rows in paper.items()}}


# ---------------------------------------------------------------------------
# results.md


def _cell_text(stats: dict, done: int, of: int, bold: bool = False) -> str:
  if not done:
    return "pending"
  text = f"{stats['mean']:.3f}"
  if stats["std"] is not None:
    text += f" ± {stats['std']:.3f}"
  if bold:
    text = f"**{text}**"
  return text if done == of else f"{text} ({done}/{of})"


def _column_title(dataset: str, shots: int) -> str:
  return f"{dataset} {shots}-shot" if shots else dataset


def _row_title(row: str, baselines) -> str:
  return f"{row} (baseline)" if row in baselines else row


def markdown(results: dict) -> str:
  """The paper's table layout: rows = method and baseline, columns = dataset x shots (or LT's groups)."""
  table, metric, seeds = results["table"], results["metric"], results["seeds"]
  summary = {(s["dataset"], s["shots"], s["row"]): s for s in results["summary"]}
  rows = results["methods"] + results["baselines"]
  datasets = [d["name"] for d in results["datasets"]]
  splits = ", ".join(f"{d['name']} {d['eval_split']}" for d in results["datasets"])
  lines = [f"# Results: {'few-shot' if table == 'fewshot' else 'ImageNet-LT'} top-1", ""]
  done, total = results["runs_done"], results["runs_total"]
  status = "all runs finished" if done == total else f"{done} of {total} runs finished; the rest are pending"
  if table == "fewshot":
    what = "each run's best top-1 over its evaluations (`best_top1`, the DA-Fusion protocol)"
  else:
    what = "top-1 of each run's final evaluation, overall and per many / medium / few class group"
  lines += [f"Metric: {what} on the evaluation split ({splits}); mean ± std (n − 1) over seeds "
            f"{', '.join(map(str, seeds))}, `(i/n)` where only i of n seeds are done. {status.capitalize()}."
            + (" Generated with `reference_quirks` (the released code's embed_cutmix and dropout)."
               if results["reference_quirks"] else ""), ""]
  if table == "fewshot":
    columns = [(d, k) for d in datasets for k in results["shots"]]
    best = {}
    for col in columns:
      finished = [(summary[col + (r,)][metric]["mean"], r) for r in rows
                  if summary[col + (r,)]["done"] == summary[col + (r,)]["of"] and summary[col + (r,)]["done"]]
      top = max(finished, default=(None, None))
      unique = len(finished) > 1 and sum(m == top[0] for m, _ in finished) == 1
      best[col] = top[1] if unique else None
    body = [[_row_title(r, results["baselines"])] + [
        _cell_text(summary[col + (r,)][metric], summary[col + (r,)]["done"], summary[col + (r,)]["of"],
                   best[col] == r) for col in columns] for r in rows]
    for paper_row in PAPER_ROWS:
      values = [paper_value(d, paper_row, k) for d, k in columns]
      if any(v is not None for v in values):
        body.append([f"*{paper_row} (paper)*"] + [f"*{v:.3f}*" if v is not None else "–" for v in values])
    lines += markdown_table(["method"] + [_column_title(d, k) for d, k in columns], body)
    if results["paper"]:
      lines += ["", "Bold: the best of ours where every seed is done (no ties). Italic rows: the numbers published by DA-Fusion "
                "(Trabucco et al. 2023) for DA-Fusion, Real Guidance and RandAugment, at the paper's shot counts."]
  else:
    columns = [(d, k, g) for d in datasets for k in results["shots"] for g in LT_COLUMNS]
    body = [[_row_title(r, results["baselines"])] + [
        _cell_text(summary[(d, k, r)][g], summary[(d, k, r)]["done"], summary[(d, k, r)]["of"])
        for d, k, g in columns] for r in rows]
    names = {"top1": "overall", "many": "many", "medium": "medium", "few": "few"}
    lines += markdown_table(["method"] + [f"{_column_title(d, k)} {names[g]}" for d, k, g in columns], body)
  lines += _sets_markdown(results["synthetic_sets"])
  return "\n".join(lines) + "\n"


def _sets_markdown(sets: list[dict]) -> list[str]:
  lines = ["", "## Synthetic sets", ""]
  # Each set's FD is in its first score encoder's space (CLIP for sets scored before there was a choice).
  labels = {s["scores"].get("encoder", "CLIP") for s in sets if s["status"] == "done" and s.get("scores")}
  shared = next(iter(labels)) if len(labels) == 1 else None if labels else "CLIP"  # None: spaces differ per set
  rows = []
  for s in sets:
    scores = s.get("scores") or {}
    methods = scores.get("methods") or {}
    if s["status"] != "done":
      rows.append([s["name"], "pending", "", "", "", ""])
      continue
    if not methods:
      rows.append([s["name"], f"{s['images']:,}", "–", "–", "–", "–"])
    for name, m in methods.items():
      fmt = lambda v, f="{:.3g}": "–" if v is None else f.format(v)
      fd = fmt(m.get("fd"))
      if not shared and m.get("fd") is not None:
        fd += f" ({scores.get('encoder', 'CLIP')})"
      rows.append([f"{s['name']} {name}" if name != s["name"] else s["name"], f"{m.get('n_synthetic') or 0:,}",
                   fd, fmt(m.get("coverage"), "{:.3f}"), fmt(m.get("diversity"), "{:.3f}"),
                   fmt(m.get("copy_share"), "{:.1%}")])
  head = ["set / method", "images", f"FD-{shared} ↓" if shared else "FD ↓ (space)",
          "coverage ↑", "diversity ↑", "copies ↓"]
  lines += markdown_table(head, rows)
  lines += ["", "Scores from `python -m jaxaug.score` (each set's `scores/scores.md` has them all); `–` where the "
            "set was not scored."]
  return lines


def write(out: Path, results: dict) -> list[Path]:
  """results.json and results.md (experiment_lib/pictures.py draws the pictures from the same results)."""
  paths = [out / "results.json", out / "results.md"]
  evaluate.write_json(str(paths[0]), results)
  fsutil.atomic_write_text(paths[1], markdown(results))
  return paths
