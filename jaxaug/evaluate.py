"""Classifier evaluation: top-1 overall and for the many / medium / few groups, per-class accuracy, pictures.

Groups come from the *real training* counts of each class (sources.class_groups: many > 100,
medium 20-100, few < 20 images), and a group's accuracy is the mean of its classes' accuracies
(method.md). Overall top-1 is over test images. A class without test images has no accuracy (null)
and does not enter any mean.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import jax
import numpy as np

from jaxaug import fsutil
from jaxaug.data.sources import class_groups
from jaxaug.train_lib import plots

GROUPS = ("many", "medium", "few")


def _mean_or_none(values: np.ndarray) -> float | None:
  values = values[np.isfinite(values)]
  return float(values.mean()) if values.size else None


def summarize(correct, count, train_counts, class_names: Sequence[str]) -> dict:
  """Per-class correct / total test counts -> {'top1', 'many', 'medium', 'few', 'per_class': [...]}."""
  correct = np.asarray(correct, np.float64)
  count = np.asarray(count, np.float64)
  train_counts = np.asarray(train_counts)
  per_class = np.full(len(count), np.nan)
  np.divide(correct, count, out=per_class, where=count > 0)
  summary = {"top1": float(correct.sum() / count.sum()) if count.sum() else None}
  for name, members in class_groups(train_counts).items():
    summary[name] = _mean_or_none(per_class[members])
  summary["classes"] = {name: int(members.size) for name, members in class_groups(train_counts).items()}
  summary["per_class"] = [
      {"class": i, "name": class_names[i], "train_images": int(train_counts[i]), "test_images": int(count[i]),
       "accuracy": None if np.isnan(per_class[i]) else float(per_class[i])}
      for i in range(len(count))]
  return summary


def run(eval_step, state, batches: Iterable[dict], to_device) -> tuple[np.ndarray, np.ndarray]:
  """Sums the jitted eval step's per-class (correct, count) over all batches of all hosts."""
  totals = None
  for batch in batches:
    out = eval_step(state, to_device(batch))
    totals = out if totals is None else jax.tree.map(lambda a, b: a + b, totals, out)
  totals = jax.device_get(totals)
  return np.asarray(totals["correct"]), np.asarray(totals["count"])


def write_json(path: str, data) -> None:
  """Atomically: a reader (or a rerun after a kill) never sees half a file."""
  fsutil.atomic_write_text(path, json.dumps(data, indent=2))


def curves_png(history: Sequence[dict], path: str) -> None:
  """Training loss and train / eval top-1 against step, from metrics.jsonl records."""
  train = [h for h in history if "loss" in h]
  evals = [h for h in history if "top1" in h]
  loss = plots.line_chart({"train loss": ([h["step"] for h in train], [h["loss"] for h in train])},
                          title="Training loss", xlabel="step", ylabel="loss")
  series = {"train (batch)": ([h["step"] for h in train], [h["accuracy"] for h in train])}
  groups = [g for g in GROUPS if any(h.get(g) is not None for h in evals)]
  for key in ("top1",) + (tuple(groups) if len(groups) > 1 else ()):  # one group would repeat "eval"
    points = [(h["step"], h[key]) for h in evals if h.get(key) is not None]
    if points:
      series["eval" if key == "top1" else f"eval {key}"] = tuple(zip(*points))
  top1 = plots.line_chart(series, title="Top-1 accuracy", xlabel="step", ylabel="top-1", ylim=(0.0, 1.0),
                          legend_lower=True)
  fsutil.write_png(path, plots.side_by_side([loss, top1]))


def per_class_png(summary: dict, path: str) -> None:
  """Each class's test accuracy against its real training images (log axis), coloured by group."""
  rows = [r for r in summary["per_class"] if r["accuracy"] is not None]
  counts = np.asarray([r["train_images"] for r in rows])
  accuracy = np.asarray([r["accuracy"] for r in rows])
  groups = class_groups(counts)
  data = {g: (counts[groups[g]], accuracy[groups[g]]) for g in GROUPS if groups[g].size}
  fsutil.write_png(path, plots.scatter_log_x(data, title="Per-class top-1 against class size",
                                             xlabel="real training images", ylabel="top-1", ylim=(0.0, 1.0),
                                             vlines=(20, 100)))


def markdown_table(head, rows: list[list[str]], text_columns: int = 1) -> list[str]:
  """A Markdown table's lines: the first `text_columns` left-aligned, the numbers right-aligned (the score report
  and the experiment's results.md both write them)."""
  align = ["---"] * text_columns + ["---:"] * (len(head) - text_columns)
  return ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"] + ["| " + " | ".join(r) + " |" for r in rows]
