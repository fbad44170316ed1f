"""The score pictures: fidelity against diversity per method, strips of the worst classes' images, and each
method's most and least class-consistent images.

fidelity_diversity.png: one dot per method (the ring: all methods together), coverage and FD against
diversity in one encoder's space (named in the titles), with the real images' own diversity as a dashed
line: good methods sit high on coverage, low on FD and near or right of the line. worst_classes.png: per
worst class, a real source image, the synthetic images closest to it and those farthest from it (cosine
similarity of embeddings under each). class_consistency.png: per class and method, the images whose nearest
real images agree most with their class, then those that agree least (own-class votes of k and the margin
under each, `consistency.agreement_order`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from jaxaug import fsutil
from jaxaug.score_lib import consistency, metrics
from jaxaug.score_lib.encoders import LABELS as ENCODER_NAMES  # as figures name them
from jaxaug.score_lib.scoring import Embeddings
from jaxaug.train_lib import plots

# Ten distinguishable colours (matplotlib's tab10): one per conditioning method.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
TILE = 96
CAPTION = 16


def _colour(i: int) -> tuple[int, int, int]:
  return PALETTE[i % len(PALETTE)]


def _range(values: list[float], lo: float | None = None, hi: float | None = None) -> list[float]:
  values = [v for v in values if v is not None]
  a, b = min(values), max(values)
  pad = 0.1 * (b - a) or 0.05 * (abs(a) or 1.0)
  return plots.nice_ticks(a - pad if lo is None else max(a - pad, lo), b + pad if hi is None else min(b + pad, hi))


def _scatter(points: list[tuple[str, float, float, tuple]], reference: float | None, *, title: str, ylabel: str,
             yrange: list[float]) -> Image.Image:
  xs = [x for _, x, _, _ in points] + ([reference] if reference is not None else [])
  panel = plots.Panel(title, "diversity (mean pairwise cosine distance within a class)", ylabel, _range(xs, lo=0.0),
                       yrange)
  _, top, _, bottom = panel.box
  if reference is not None:
    px = panel.px(reference)
    for y in range(top, bottom, 8):
      panel.draw.line([(px, y), (px, min(y + 4, bottom))], fill=(90, 90, 90), width=2)
    panel.draw.text((px + 4, top + 4), "real images", fill=(90, 90, 90), font=plots.text_font(12))
  for name, x, y, colour in points:
    px, py = panel.px(x), panel.py(y)
    if name == "all methods":
      panel.draw.ellipse([px - 7, py - 7, px + 7, py + 7], outline="black", width=2)
    else:
      panel.draw.ellipse([px - 5, py - 5, px + 5, py + 5], fill=colour, outline="white")
  return panel.image


def _legend(entries: list[tuple[str, tuple]], height: int) -> Image.Image:
  image = Image.new("RGB", (230, height), "white")
  draw = ImageDraw.Draw(image)
  y = plots.MARGIN["top"]
  for name, colour in entries:
    if colour is None:
      draw.ellipse([12, y + 1, 24, y + 13], outline="black", width=2)
    else:
      draw.ellipse([13, y + 2, 23, y + 12], fill=colour)
    draw.text((32, y + 7), name, fill="black", font=plots.text_font(12), anchor="lm")
    y += 20
  return image


def fidelity_diversity_png(scores: dict, path: Path, encoder: str = "clip") -> Path | None:
  """Coverage and FD against diversity, one dot per method, from `scores` computed on `encoder`'s embeddings (its
  name is in the titles); None when no method has a diversity."""
  name = ENCODER_NAMES.get(encoder, encoder)
  rows = [("all methods", scores["overall"], None)]
  rows += [(m, r, _colour(i)) for i, (m, r) in enumerate(scores["methods"].items())]
  rows = [(name, r, c) for name, r, c in rows if r.get("diversity") is not None]
  if not rows:
    return None
  reference = scores["real"]["diversity"]
  coverage = [(n, r["diversity"], r["coverage"], c) for n, r, c in rows if r.get("coverage") is not None]
  fd = [(n, r["diversity"], r["fd"], c) for n, r, c in rows if r.get("fd") is not None]
  panels = []
  if coverage:
    panels.append(_scatter(coverage, reference, title=f"Coverage against diversity ({name})",
                           ylabel="coverage (higher: more of the real set)", yrange=plots.nice_ticks(0.0, 1.0)))
  if fd:
    panels.append(_scatter(fd, reference, title=f"FD-{name} against diversity", ylabel=f"FD-{name} (lower: closer to real)",
                           yrange=_range([v for _, _, v, _ in fd], lo=0.0)))
  if not panels:
    return None
  panels.append(_legend([(n, c) for n, _, c in rows], plots.HEIGHT))
  return _save(plots.side_by_side(panels), path)


@dataclasses.dataclass
class Strip:
  """One worst class: a real source image and its nearest / farthest synthetic images (rows and similarities)."""
  label: int
  title: str
  source: int  # row of the real set
  nearest: list[tuple[int, float]]  # (synthetic row, cosine similarity)
  farthest: list[tuple[int, float]]


def pick_strip(emb: Embeddings, label: int, count: int, title: str) -> Strip | None:
  """The class's most used source image (its first real image if no source is known) and its neighbours."""
  rows = np.flatnonzero(emb.labels == label)
  real_rows = np.flatnonzero(emb.real_labels == label)
  if not len(rows) or not len(real_rows):
    return None
  used = emb.sources[rows][:, 0]
  used = used[np.isin(used, real_rows)]
  source = int(np.bincount(used).argmax()) if len(used) else int(real_rows[0])
  u_source = metrics.unit_rows(emb.real[source][None])[0]
  sims = metrics.unit_rows(emb.synthetic[rows]) @ u_source
  order = np.argsort(-sims, kind="stable")
  count = min(count, len(rows))
  nearest = [(int(rows[i]), float(sims[i])) for i in order[:count]]
  far = [i for i in order[::-1][:count] if int(rows[i]) not in {r for r, _ in nearest}]
  return Strip(label, title, source, nearest, [(int(rows[i]), float(sims[i])) for i in far])


def worst_classes_png(strips: list[Strip], real_image, synthetic_image, path: Path, count: int) -> Path | None:
  """One strip per class; `real_image(row)` / `synthetic_image(row)` give uint8 images (None if unreadable)."""
  if not strips:
    return None
  groups = (("source (real)", 1), ("nearest synthetic (cosine similarity)", count), ("farthest synthetic", count))
  rows = [(strip.title, [[(real_image(strip.source), None)],
                         [(synthetic_image(r), f"{sim:.3f}") for r, sim in strip.nearest],
                         [(synthetic_image(r), f"{sim:.3f}") for r, sim in strip.farthest]]) for strip in strips]
  return _save(_tile_sheet(groups, rows), path)


@dataclasses.dataclass
class ConsistencyRow:
  """One class and method: its most and least class-consistent synthetic images (rows, captions)."""
  title: str
  most: list[tuple[int, str]]
  least: list[tuple[int, str]]


def pick_consistency_rows(emb: Embeddings, votes: consistency.Votes, classes: list[int], count: int
                          ) -> list[ConsistencyRow]:
  """Per class of `classes` and per method, the `count` images that agree most with their class (most first) and
  the `count` that agree least (least first), none twice."""
  order = consistency.agreement_order(votes, emb.item_ids)
  rows = []
  for c in classes:
    for m in emb.method_names:
      mine = order[(emb.labels[order] == c) & (emb.methods[order] == m)]
      if not len(mine):
        continue
      most = mine[::-1][:count].tolist()
      least = [r for r in mine[:count].tolist() if r not in most]
      share = consistency.share(votes, emb.labels, mine)
      caption = lambda r: f"{votes.own_votes[r]}/{votes.k}  {votes.margin[r]:+.2f}"
      rows.append(ConsistencyRow(f"{emb.class_names[c]}\n{m}\n{share:.0%} own class", [(r, caption(r)) for r in most],
                                 [(r, caption(r)) for r in least]))
  return rows


def consistency_png(rows: list[ConsistencyRow], synthetic_image, path: Path, count: int, encoder: str = "clip"
                    ) -> Path | None:
  """One strip per class and method; `synthetic_image(row)` gives a uint8 image (None if unreadable)."""
  if not rows:
    return None
  name = ENCODER_NAMES.get(encoder, encoder)
  groups = ((f"most class-consistent ({name}: own-class votes, margin)", count), ("least class-consistent", count))
  strips = [(row.title, [[(synthetic_image(r), text) for r, text in part] for part in (row.most, row.least)])
            for row in rows]
  return _save(_tile_sheet(groups, strips), path)


def _tile_sheet(groups, strips) -> Image.Image:
  """A title column, then per group (header, tiles wide) a run of captioned tiles: one strip per (title, per group
  a list of (uint8 image or None, caption or None))."""
  label_w, gap, head = 190, 16, 26
  starts, x = [], label_w
  for _, tiles in groups:
    starts.append(x)
    x += tiles * TILE + gap
  sheet = Image.new("RGB", (x, head + len(strips) * (TILE + CAPTION + 8)), "white")
  draw = ImageDraw.Draw(sheet)
  font = plots.text_font(12)
  for (header, _), start in zip(groups, starts):
    draw.text((start, 6), header, fill="black", font=font)
  for s, (title, parts) in enumerate(strips):
    y = head + s * (TILE + CAPTION + 8)
    for line, text in enumerate(title.split("\n")):
      draw.text((6, y + 4 + 16 * line), text[:28], fill="black", font=font)
    for start, tiles in zip(starts, parts):
      for i, (image, caption) in enumerate(tiles):
        _tile(sheet, draw, image, start + i * TILE, y, caption)
  return sheet


def _tile(sheet, draw, image, x: int, y: int, caption: str | None):
  if image is None:
    draw.rectangle([x + 2, y + 2, x + TILE - 3, y + TILE - 3], outline=(200, 0, 0))
    draw.text((x + TILE // 2, y + TILE // 2), "unreadable", fill=(200, 0, 0), font=plots.text_font(11), anchor="mm")
  else:
    sheet.paste(Image.fromarray(image).resize((TILE - 4, TILE - 4), Image.Resampling.BICUBIC), (x + 2, y + 2))
  if caption is not None:
    draw.text((x + TILE // 2, y + TILE + 2), caption, fill="black", font=plots.text_font(11), anchor="mt")


def _save(image: Image.Image, path: Path) -> Path:
  fsutil.write_png(path, image)
  return path
