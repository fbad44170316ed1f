"""The contact sheet: per class and method, the real source, the augmented condition and the generated image.

Conditions are recomputed from (seed, item_id) for the few items shown, so the sheet is the same after
a resumed run and costs one small jitted call, not a copy of every condition image.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
from PIL import Image, ImageDraw

from jaxaug import condition
from jaxaug.data import synthetic
from jaxaug.data.images import decode_image, fit_square, load_fit

TILE = 96
LABEL_W = 130
HEAD_H = 34


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


def condition_images(job, items: np.ndarray) -> np.ndarray:
  """What the CLIP tower saw for these items (uint8), recomputed exactly as in the generation step."""
  plan, size = job.plan, job.config.data.source_size
  if job.spec.mode != "unclip":
    return np.stack([fit_square(job.source[int(plan.source[i, 0])].image, TILE) for i in items])
  first = np.stack([load_fit(job.source.read(int(plan.source[i, 0])), size) for i in items])
  second = np.stack([load_fit(job.source.read(int(plan.source[i, 1])), size) for i in items])

  @jax.jit
  def run(params, item_ids, method, image1, image2):
    keys, _, _ = condition.item_streams(job.config.seed, item_ids)
    return condition.condition(job.pipe, params, job.methods, method, keys, image1, image2,
                               job.config.sampler.noise_level).image

  out = run(job.params, items.astype(np.int32), plan.method[items].astype(np.int32), first, second)
  return np.asarray(np.round(np.asarray(out) * 255), np.uint8)


def write_contact_sheet(job, max_classes: int = 16) -> Path | None:
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
  for r, label in enumerate(classes):
    y = HEAD_H + r * TILE
    draw.text((4, y + TILE // 2 - 6), source.class_names[label][:20], fill="black")
    for m in range(len(methods)):
      pos = chosen.get((label, m))
      if pos is None:
        continue
      item = int(source.item_ids[pos])
      real = fit_square(job.source[int(job.plan.source[item, 0])].image, TILE)
      tiles = [real, fit_square(conds[pos], TILE), fit_square(decode_image(source.read(pos)), TILE)]
      for t, tile in enumerate(tiles):
        sheet.paste(Image.fromarray(tile), (LABEL_W + m * cell + t * TILE, y))
  path = job.out / "contact_sheet.png"
  tmp = path.with_name(f".contact_sheet.png.tmp-{os.getpid()}")
  sheet.save(tmp, format="PNG")
  os.replace(tmp, path)
  return path
