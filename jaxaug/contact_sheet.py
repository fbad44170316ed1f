"""The contact sheet: per class and method, the real source, the augmented condition and the generated image.

Conditions are recomputed from (seed, item_id) for the few items shown, so the sheet is the same after
a resumed run and costs one small jitted call, not a copy of every condition image.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from absl import logging
from PIL import Image, ImageDraw

from jaxaug import condition, fsutil
from jaxaug.data import synthetic
from jaxaug.data.images import BadImage, decode_image, fit_square, read_fit

TILE = 96
LABEL_W = 130
HEAD_H = 34
MARK_GREY = (222, 222, 222)


def pick_items(source: synthetic.SyntheticSource, methods: tuple[str, ...], max_classes: int) -> dict:
  """{(class, method index): position in `source`} for the first generated item of each pair.

  Reads the done record's index (labels, methods), never a shard.
  """
  classes = set(sorted(set(source.labels.tolist()))[:max_classes])
  chosen = {}
  for pos, (label, method) in enumerate(zip(source.labels.tolist(), source.methods)):
    if label in classes:
      chosen.setdefault((label, methods.index(method)), pos)
  return chosen


def condition_images(job, items: np.ndarray) -> list[np.ndarray | None]:
  """What the CLIP tower saw for these items (uint8), recomputed exactly as in the generation step.

  None for an item whose needed source image cannot be read (now; it may have been readable then).
  """
  plan, size = job.plan, job.config.data.source_size
  if job.spec.mode != "unclip":
    return [None if (image := read_fit(job.source, plan.source[i, 0], size)) is None else fit_square(image, TILE)
            for i in items]
  blank = np.zeros((size, size, 3), np.uint8)
  first = [read_fit(job.source, plan.source[i, 0], size) for i in items]
  second = [read_fit(job.source, plan.source[i, 1], size) for i in items]
  needs_second = [job.methods[plan.method[i]].pairs for i in items]
  ok = [a is not None and (b is not None or not pair) for a, b, pair in zip(first, second, needs_second)]

  @jax.jit
  def run(item_ids, method, image1, image2):
    keys, _, _ = condition.item_streams(job.config.seed, item_ids)
    return condition.pixel_condition(job.pipe, job.methods, method, keys, image1, image2)[0]

  # An unused second image does not change the condition; an unreadable needed one marks the tile.
  image1 = np.stack([blank if a is None else a for a in first])
  image2 = np.stack([a if b is None else b for a, b in zip(image1, second)])
  out = run(items.astype(np.int32), plan.method[items].astype(np.int32), image1, image2)
  out = np.asarray(np.round(np.asarray(out) * 255), np.uint8)
  return [image if good else None for image, good in zip(out, ok)]


def unreadable_tile() -> np.ndarray:
  """The mark for a tile whose image cannot be read: light grey, a red cross, the word."""
  tile = Image.new("RGB", (TILE, TILE), MARK_GREY)
  draw = ImageDraw.Draw(tile)
  draw.line((8, 8, TILE - 9, TILE - 9), fill=(200, 0, 0), width=3)
  draw.line((8, TILE - 9, TILE - 9, 8), fill=(200, 0, 0), width=3)
  draw.rectangle((14, TILE // 2 - 9, TILE - 15, TILE // 2 + 8), fill=MARK_GREY)
  draw.text((18, TILE // 2 - 6), "unreadable", fill="black")
  return np.asarray(tile)


def _tile(make) -> np.ndarray | None:
  """make() fitted to a tile, or None where its image cannot be read."""
  try:
    image = make()
  except (BadImage, RuntimeError):  # RuntimeError: a damaged shard
    return None
  return None if image is None else fit_square(image, TILE)


def write_contact_sheet(job, max_classes: int = 16) -> Path | None:
  """contact_sheet.png: a row per class, a cell per method; an unreadable image is marked, not fatal."""
  source = synthetic.SyntheticSource(job.out)
  if len(source) == 0:
    return None
  methods = job.plan.methods
  chosen = pick_items(source, methods, max_classes)
  positions = sorted(chosen.values())
  items = source.item_ids[positions]
  conds = dict(zip(positions, condition_images(job, items)))
  classes = sorted({c for c, _ in chosen})
  cell = 3 * TILE + 8
  sheet = Image.new("RGB", (LABEL_W + cell * len(methods), HEAD_H + TILE * len(classes)), "white")
  draw = ImageDraw.Draw(sheet)
  for m, name in enumerate(methods):
    x = LABEL_W + m * cell
    draw.text((x + 4, 4), name, fill="black")
    draw.text((x + 4, 18), "real | condition | generated", fill=(110, 110, 110))
  marked = []
  for r, label in enumerate(classes):
    y = HEAD_H + r * TILE
    draw.text((4, y + TILE // 2 - 6), source.class_names[label][:20], fill="black")
    for m in range(len(methods)):
      pos = chosen.get((label, m))
      if pos is None:
        continue
      item = int(source.item_ids[pos])
      tiles = [_tile(lambda: job.source[int(job.plan.source[item, 0])].image), _tile(lambda: conds[pos]),
               _tile(lambda: decode_image(source.read(pos)))]
      for t, tile in enumerate(tiles):
        if tile is None:
          marked.append(f"{source.class_names[label]}/{methods[m]} {('real', 'condition', 'generated')[t]}")
          tile = unreadable_tile()
        sheet.paste(Image.fromarray(tile), (LABEL_W + m * cell + t * TILE, y))
  if marked:
    logging.warning("contact sheet: %d tile(s) marked unreadable, their image could not be read: %s", len(marked),
                    ", ".join(marked[:10]) + (", ..." if len(marked) > 10 else ""))
  path = job.out / "contact_sheet.png"
  fsutil.write_png(path, sheet)
  return path
