"""The experiment's pictures (PIL; matplotlib is not a dependency).

Few-shot: per dataset, top-1 against shots (log axis), one line per method with ± std bars, baselines
dashed (ours coloured, the paper's grey). ImageNet-LT: per dataset, overall / many / medium / few bars per
method. A partial grid draws what is finished; the title counts the runs and the legend names what is pending.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from jaxaug import fsutil
from jaxaug.experiment_lib.results import LT_COLUMNS, PAPER_ROWS, paper_value
from jaxaug.train_lib import plots

WIDTH, HEIGHT, PLOT_RIGHT = 980, 460, 640
LEFT, TOP, BOTTOM = 64, 40, 52
PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (23, 190, 207), (188, 189, 34), (127, 127, 127), (57, 59, 121), (173, 73, 74),
           (99, 121, 57))
PAPER_GREYS = ((90, 90, 90), (150, 150, 150), (190, 160, 120))


def _chart(title: str, xlabel: str, ylim: tuple[float, float]) -> plots.Panel:
  """A top-1 panel whose x positions the chart sets itself (`xtick`), with room on the right for `_Legend`."""
  return plots.Panel(title, xlabel, "top-1", (), plots.nice_ticks(*ylim), size=(WIDTH, HEIGHT),
                     box=(LEFT, TOP, PLOT_RIGHT, HEIGHT - BOTTOM))


class _Legend:
  """The column right of the frame: one entry per line (solid or dashed) or bar colour."""

  def __init__(self, panel: plots.Panel):
    self.draw, self.y = panel.draw, TOP

  def add(self, name: str, colour, dashed: bool = False, bar: bool = False):
    x, y = PLOT_RIGHT + 16, self.y
    if bar:
      self.draw.rectangle([x, y + 1, x + 18, y + 11], fill=colour)
    else:
      dashed_line(self.draw, [(x, y + 6), (x + 22, y + 6)], colour, 2, dashed)
    self.draw.text((x + 28, y + 6), name, fill="black", font=plots.text_font(12), anchor="lm")
    self.y += 17


def dashed_line(draw: ImageDraw.ImageDraw, points, colour, width: int, dashed: bool, dash: float = 7.0):
  """A polyline, solid or dashed (PIL draws no dashes itself)."""
  if not dashed:
    if len(points) > 1:
      draw.line(points, fill=colour, width=width)
    return
  for (x0, y0), (x1, y1) in zip(points, points[1:]):
    length = math.hypot(x1 - x0, y1 - y0)
    for start in np.arange(0.0, length, 2 * dash):
      end = min(start + dash, length)
      a, b = start / length, end / length
      draw.line([(x0 + a * (x1 - x0), y0 + a * (y1 - y0)), (x0 + b * (x1 - x0), y0 + b * (y1 - y0))], fill=colour,
                width=width)


def _ylim(values: list[float]) -> tuple[float, float]:
  values = [v for v in values if v is not None]
  if not values:
    return 0.0, 1.0
  lo, hi = min(values), max(values)
  pad = max(0.02, 0.1 * (hi - lo))
  return max(0.0, lo - pad), min(1.0, hi + pad)


def fewshot_chart(results: dict, dataset: str) -> Image.Image:
  """Top-1 against shots for one dataset: ours (methods solid, baselines dashed) and the paper's baselines (grey)."""
  metric, shots = results["metric"], results["shots"]
  summary = {(s["shots"], s["row"]): s for s in results["summary"] if s["dataset"] == dataset}
  rows = results["methods"] + results["baselines"]
  paper = {r: [paper_value(dataset, r, k) for k in shots] for r in PAPER_ROWS}
  paper = {r: v for r, v in paper.items() if any(x is not None for x in v)}
  values = [summary[(k, r)][metric]["mean"] for k in shots for r in rows]
  values += [summary[(k, r)][metric]["mean"] + sign * (summary[(k, r)][metric]["std"] or 0) for k in shots
             for r in rows for sign in (-1, 1) if summary[(k, r)][metric]["mean"] is not None]
  values += [v for vs in paper.values() for v in vs]
  done = sum(summary[(k, r)]["done"] for k in shots for r in rows)
  total = sum(summary[(k, r)]["of"] for k in shots for r in rows)
  title = f"{dataset}: {'best ' if metric == 'best_top1' else ''}top-1 against shots"
  if done < total:
    title += f" (partial: {done} of {total} runs)"
  chart = _chart(title, "real images per class (shots)", _ylim(values))
  legend = _Legend(chart)
  left, _, right, _ = chart.box
  logs = [math.log2(k) for k in shots]
  lo, hi = min(logs), max(logs)
  px = {k: (left + right) / 2 if hi == lo else left + 30 + (math.log2(k) - lo) / (hi - lo) * (right - left - 60)
        for k in shots}
  for k in shots:
    chart.xtick(px[k], str(k), grid=False)
  for (name, series), grey in zip(paper.items(), PAPER_GREYS):
    points = [(px[k], chart.py(v)) for k, v in zip(shots, series) if v is not None]
    dashed_line(chart.draw, points, grey, 1, True, dash=4)
    for x, y in points:
      chart.draw.rectangle([x - 2, y - 2, x + 2, y + 2], outline=grey)
    legend.add(f"{name} (paper)", grey, dashed=True)
  for i, row in enumerate(rows):
    colour = PALETTE[i % len(PALETTE)]
    dashed = row in results["baselines"]
    dodge = (i - (len(rows) - 1) / 2) * 4  # equal values stay visible side by side
    points = []
    for k in shots:
      s = summary[(k, row)][metric]
      if s["mean"] is None:
        continue
      x, y = px[k] + dodge, chart.py(s["mean"])
      points.append((x, y))
      if s["std"]:
        low, high = max(s["mean"] - s["std"], chart.y0), min(s["mean"] + s["std"], chart.y1)
        chart.draw.line([(x, chart.py(low)), (x, chart.py(high))], fill=colour)
    dashed_line(chart.draw, points, colour, 2, dashed)
    for x, y in points:
      chart.draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    pending = [k for k in shots if summary[(k, row)]["done"] < summary[(k, row)]["of"]]
    label = row + (" (baseline)" if dashed else "")
    if pending:
      label += f", pending at {','.join(map(str, pending))}"
    legend.add(label, colour, dashed=dashed)
  return chart.image


def lt_chart(results: dict, dataset: str, shots: int) -> Image.Image:
  """Overall / many / medium / few top-1 per method (mean over seeds, ± std bars); pending methods say so."""
  summary = {s["row"]: s for s in results["summary"] if (s["dataset"], s["shots"]) == (dataset, shots)}
  rows = results["methods"] + results["baselines"]
  values = [summary[r][g]["mean"] for r in rows for g in LT_COLUMNS]
  done = sum(summary[r]["done"] for r in rows)
  total = sum(summary[r]["of"] for r in rows)
  title = f"{dataset}: top-1 by class group" + (f" (partial: {done} of {total} runs)" if done < total else "")
  lo, hi = _ylim(values)
  chart = _chart(title, "class group (by real training images)", (0.0, hi))
  legend = _Legend(chart)
  left, _, right, bottom = chart.box
  slot = (right - left) / len(LT_COLUMNS)
  width = slot * 0.8 / max(len(rows), 1)
  for g, group in enumerate(LT_COLUMNS):
    chart.xtick(left + (g + 0.5) * slot, {"top1": "overall"}.get(group, group), grid=False)
    for i, row in enumerate(rows):
      s = summary[row][group]
      if s["mean"] is None:
        continue
      x0 = left + g * slot + slot * 0.1 + i * width
      chart.draw.rectangle([x0, chart.py(s["mean"]), x0 + width - 2, bottom], fill=PALETTE[i % len(PALETTE)])
      if s["std"]:
        xc = x0 + width / 2
        chart.draw.line([(xc, chart.py(s["mean"] - s["std"])), (xc, chart.py(s["mean"] + s["std"]))], fill="black")
  for i, row in enumerate(rows):
    pending = summary[row]["done"] < summary[row]["of"]
    legend.add(row + (" (baseline)" if row in results["baselines"] else "") + (", pending" if pending else ""),
               PALETTE[i % len(PALETTE)], bar=True)
  return chart.image


def draw(out: Path, results: dict) -> list[Path]:
  """One picture per dataset (few-shot) or per dataset and shot count (ImageNet-LT)."""
  written = []
  for d in results["datasets"]:
    name = d["name"]
    if results["table"] == "fewshot":
      path = out / f"accuracy_{name}.png"
      fsutil.write_png(path, fewshot_chart(results, name))
      written.append(path)
    else:
      for k in results["shots"]:
        path = out / (f"accuracy_{name}.png" if len(results["shots"]) == 1 else f"accuracy_{name}_{k}shot.png")
        fsutil.write_png(path, lt_chart(results, name, k))
        written.append(path)
  return written
