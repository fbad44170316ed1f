"""A small built-in labelled image set, drawn procedurally, so the demo needs no download.

Four visually distinct classes (so CutMix boxes and MixUp blends are easy to see on a contact sheet):
red circles, blue stripes, green checkers, yellow triangles. Each image varies position, size, phase
and background from (split, index) alone, so the set is identical everywhere. Spec: `demo:` or
`demo:N` (N images per class per split, default 6; test split uses other draws).
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image, ImageDraw

from jaxaug.data.sources import ImageSource, _check_index, register_kind
from jaxaug.errors import UserError

CLASSES = ("red circle", "blue stripes", "green checker", "yellow triangle")
SIZE = 96


def draw(label: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
  """One image of class `label` as uint8 (size, size, 3)."""
  bg = tuple(int(v) for v in rng.integers(150, 240, 3))
  img = Image.new("RGB", (size, size), bg)
  d = ImageDraw.Draw(img)
  s = size
  if label == 0:
    r = rng.uniform(0.2, 0.35) * s
    cx, cy = rng.uniform(r, s - r, 2)
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(int(rng.integers(190, 255)), 30, 30))
  elif label == 1:
    width = int(rng.integers(6, 14))
    phase = int(rng.integers(0, 2 * width))
    for x in range(-phase, s, 2 * width):
      d.rectangle([x, 0, x + width - 1, s], fill=(30, 60, int(rng.integers(170, 255))))
  elif label == 2:
    cell = int(rng.integers(10, 20))
    green = (30, int(rng.integers(140, 200)), 40)
    for i in range(0, s, cell):
      for j in range(0, s, cell):
        if (i // cell + j // cell) % 2 == 0:
          d.rectangle([i, j, i + cell - 1, j + cell - 1], fill=green)
  else:
    h = rng.uniform(0.4, 0.7) * s
    cx, cy = rng.uniform(0.35 * s, 0.65 * s, 2)
    d.polygon([(cx, cy - h / 2), (cx - h / 2, cy + h / 2), (cx + h / 2, cy + h / 2)],
              fill=(int(rng.integers(210, 255)), int(rng.integers(190, 230)), 20))
  return np.asarray(img)


class DemoSource(ImageSource):
  """The demo set as an ImageSource; `read` gives pixels (drawn on demand, cheap)."""
  SPLITS = ("train", "test")

  def __init__(self, split: str = "train", per_class: int = 6):
    self.class_names = CLASSES
    self.split = split
    self.labels = np.repeat(np.arange(len(CLASSES), dtype=np.int32), per_class)
    self._salt = zlib.crc32(split.encode())

  def read(self, index: int) -> np.ndarray:
    index = _check_index(index, len(self))
    return draw(int(self.labels[index]), np.random.default_rng([self._salt, index]))

  def id(self, index: int) -> str:
    return f"demo/{self.split}/{_check_index(index, len(self))}"


def open_demo(target: str, split: str, options: dict[str, str], spec: str) -> DemoSource:
  """`demo:N` (module docstring)."""
  if not target.isdigit() or int(target) < 1:
    raise UserError(f"data source {spec!r}: write demo:N with N images per class (e.g. demo:6)")
  if split not in DemoSource.SPLITS:
    raise UserError(f"data source {spec!r} has no split {split!r}: the demo set has {' and '.join(DemoSource.SPLITS)}")
  return DemoSource(split, int(target))


register_kind("demo", open_demo)
