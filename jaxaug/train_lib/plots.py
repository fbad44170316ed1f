"""Training pictures drawn with PIL (matplotlib is not a dependency): line charts and a log-x scatter.

Each chart is one panel with axes, ticks, labels and a legend; `side_by_side` joins panels into one PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 560, 400
MARGIN = dict(left=64, right=20, top=36, bottom=52)
COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75))
GREY = (200, 200, 200)


def text_font(size: int = 13):
  return ImageFont.load_default(size=size)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
  """About `count` round values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
  if hi <= lo:
    hi = lo + (abs(lo) or 1.0)
  raw = (hi - lo) / count
  power = 10 ** math.floor(math.log10(raw))
  step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
  first = math.floor(lo / step) * step
  return [first + i * step for i in range(int(math.ceil((hi - first) / step)) + 1)]


def _label(value: float) -> str:
  return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.0e}"


def _count_label(value: float) -> str:
  """1, 10, 100, 1k, 10k, 100k, 1M: powers of ten on a log axis, short enough for the frame's edge."""
  for size, suffix in ((1e6, "M"), (1e3, "k")):
    if value >= size:
      return f"{value / size:g}{suffix}"
  return f"{value:g}"


class Panel:
  """Maps data to pixels for one chart and draws its frame, ticks and labels.

  `xticks` may be empty: a chart whose x positions are its own (categories, a dodged log axis) marks them with
  `xtick`. `size` and `box` (the plot frame) default to a training chart's; a wider image leaves room beside the
  frame (the experiment's legend column).
  """

  def __init__(self, title: str, xlabel: str, ylabel: str, xticks: Sequence[float], yticks: Sequence[float],
               log_x: bool = False, *, size: tuple[int, int] = (WIDTH, HEIGHT),
               box: tuple[int, int, int, int] | None = None):
    width, height = size
    self.image = Image.new("RGB", size, "white")
    self.draw = ImageDraw.Draw(self.image)
    self.log_x = log_x
    self.x0, self.x1 = (self._tx(xticks[0]), self._tx(xticks[-1])) if len(xticks) else (0.0, 1.0)
    self.y0, self.y1 = yticks[0], yticks[-1]
    self.box = box or (MARGIN["left"], MARGIN["top"], width - MARGIN["right"], height - MARGIN["bottom"])
    left, top, right, bottom = self.box
    font = text_font()
    for x in xticks:
      self.xtick(self.px(x), (_count_label if log_x else _label)(x))
    for y in yticks:
      py = self.py(y)
      self.draw.line([(left, py), (right, py)], fill=(238, 238, 238))
      self.draw.line([(left - 4, py), (left, py)], fill="black")
      self.draw.text((left - 6, py), _label(y), fill="black", font=font, anchor="rm")
    self.draw.rectangle(self.box, outline="black")
    self.draw.text(((left + right) / 2, 10), title, fill="black", font=text_font(15), anchor="mt")
    self.draw.text(((left + right) / 2, height - 8), xlabel, fill="black", font=font, anchor="md")
    vertical = Image.new("RGBA", (bottom - top, 18), (255, 255, 255, 0))
    ImageDraw.Draw(vertical).text(((bottom - top) / 2, 9), ylabel, fill="black", font=font, anchor="mm")
    rotated = vertical.rotate(90, expand=True)
    self.image.paste(rotated, (4, top), rotated)

  def xtick(self, px: float, label: str, grid: bool = True) -> None:
    """A tick and its label under the frame at pixel `px`, with a vertical grid line unless `grid` is False."""
    _, top, _, bottom = self.box
    if grid:
      self.draw.line([(px, top), (px, bottom)], fill=(238, 238, 238))
    self.draw.line([(px, bottom), (px, bottom + 4)], fill="black")
    self.draw.text((px, bottom + 6), label, fill="black", font=text_font(), anchor="mt")

  def _tx(self, x):
    return math.log10(x) if self.log_x else x

  def px(self, x) -> float:
    left, _, right, _ = self.box
    return left + (self._tx(x) - self.x0) / (self.x1 - self.x0) * (right - left)

  def py(self, y) -> float:
    _, top, _, bottom = self.box
    return bottom - (y - self.y0) / (self.y1 - self.y0) * (bottom - top)

  def legend(self, entries: Sequence[tuple[str, tuple[int, int, int]]], *, lower: bool = False, dots: bool = False):
    """Names and colours in the upper (or lower) right corner, as line segments or dots."""
    font = text_font(12)
    x = self.box[2] - 8 - max(self.draw.textlength(name, font=font) for name, _ in entries) - 20
    y = self.box[3] - 8 - 16 * len(entries) if lower else self.box[1] + 8
    width = self.box[2] - 4 - x
    self.draw.rectangle([x - 6, y - 4, x + width, y + 16 * len(entries)], fill="white", outline=GREY)
    for name, colour in entries:
      if dots:
        self.draw.ellipse([x + 3, y + 2, x + 11, y + 10], fill=colour)
      else:
        self.draw.line([(x, y + 6), (x + 14, y + 6)], fill=colour, width=3)
      self.draw.text((x + 20, y + 6), name, fill="black", font=font, anchor="lm")
      y += 16


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str, xlabel: str,
               ylabel: str, ylim: tuple[float, float] | None = None, legend_lower: bool = False) -> Image.Image:
  """One line (with dots where there are few points) per named series of (xs, ys)."""
  series = {k: (np.asarray(x, float), np.asarray(y, float)) for k, (x, y) in series.items() if len(x)}
  xs = np.concatenate([x for x, _ in series.values()]) if series else np.zeros(1)
  ys = np.concatenate([y for _, y in series.values()]) if series else np.zeros(1)
  ys = ys[np.isfinite(ys)] if np.isfinite(ys).any() else np.zeros(1)
  lo, hi = ylim or (float(ys.min()), float(ys.max()))
  panel = Panel(title, xlabel, ylabel, nice_ticks(float(xs.min()), float(xs.max())), nice_ticks(lo, hi))
  entries = []
  for (name, (x, y)), colour in zip(series.items(), COLOURS):
    points = [(panel.px(a), panel.py(b)) for a, b in zip(x, y) if np.isfinite(b)]
    if len(points) > 1:
      panel.draw.line(points, fill=colour, width=2, joint="curve")
    if len(points) <= 30:
      for px, py in points:
        panel.draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
    entries.append((name, colour))
  if entries:
    panel.legend(entries, lower=legend_lower)
  return panel.image


def scatter_log_x(groups: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str, xlabel: str,
                  ylabel: str, ylim: tuple[float, float], vlines: Sequence[float] = ()) -> Image.Image:
  """Dots per named group on a log10 x axis (x > 0), with dashed vertical guides at `vlines`."""
  xs = np.concatenate([np.asarray(x, float) for x, _ in groups.values()])
  lo, hi = math.floor(math.log10(max(xs.min(), 1))), math.ceil(math.log10(max(xs.max(), 1)))
  hi = max(hi, lo + 1)
  panel = Panel(title, xlabel, ylabel, [10.0**p for p in range(lo, hi + 1)], nice_ticks(*ylim), log_x=True)
  _, top, _, bottom = panel.box
  for v in vlines:
    if 10**lo <= v <= 10**hi:
      px = panel.px(v)
      for y in range(top, bottom, 8):
        panel.draw.line([(px, y), (px, min(y + 4, bottom))], fill=(120, 120, 120))
  entries = []
  for (name, (x, y)), colour in zip(groups.items(), COLOURS):
    for a, b in zip(x, y):
      if np.isfinite(b):
        px, py = panel.px(max(a, 1)), panel.py(b)
        panel.draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour, outline="white")
    entries.append((f"{name} ({len(x)})", colour))
  panel.legend(entries, lower=True, dots=True)
  return panel.image


def side_by_side(panels: Sequence[Image.Image]) -> Image.Image:
  out = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), "white")
  x = 0
  for p in panels:
    out.paste(p, (x, 0))
    x += p.width
  return out
