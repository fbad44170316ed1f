"""The demo world: ten procedural shape classes in a broad style and a narrow target domain.

It mirrors the paper's setting at laptop scale. The generator (jaxaug/models/demo_world.py) is trained on
the *broad* world: every class on plain, light, dark and gradient backgrounds in any colour, captioned
like "a photo of a red star on a dark background". The downstream task lives in a narrow *target*
domain that broad training rarely shows (`TARGET_SHARE` of its images): pale shapes with a dark outline
on a purple-to-orange "sunset" gradient. A class prompt alone ("a photo of a star") gives the broad
style; conditioning on real target images pulls generations into the target domain, as SD's natural
image prior is pulled toward a dataset in the paper.

Every image is a pure function of (domain, split, index): the same set on every machine. Sources:

  world:N            the target domain, N images per class per split (train / test)
  world:lt           the target domain, long-tailed: class c has round(200 * 0.025 ** (c / 9)) train
                     images (200 down to 5: many / medium / few groups), 20 per class in test
  world:lt?max=40&min=1  another tail, geometric from max train images per class down to min
  world:N?domain=broad   the broad world instead (what the generator was trained on)
"""

from __future__ import annotations

import colorsys
import functools
import math
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from jaxaug.data.sources import ImageSource, _check_index, register_kind
from jaxaug.errors import UserError

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring", "crescent", "diamond", "heart", "arrow")
SIZE = 32  # pixels; the generator's resolution
_SUPER = 4  # drawn at 4x and box-filtered down, for clean anti-aliased edges
DOMAINS = ("target", "broad")
SPLITS = ("train", "test")
TARGET_SHARE = 0.04  # of broad training images drawn in the target style
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
LT_MAX, LT_MIN, LT_TEST = 200, 5, 20


def _polygon(points, angle, cx, cy, r):
  c, s = math.cos(angle), math.sin(angle)
  return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in points]


def _star(n=5, inner=0.45):
  return [((1 if i % 2 == 0 else inner) * math.sin(i * math.pi / n), -(1 if i % 2 == 0 else inner) * math.cos(i * math.pi / n))
          for i in range(2 * n)]


_POLYGONS = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(0, -1), (0.95, 0.75), (-0.95, 0.75)],
    "star": _star(),
    "diamond": [(0, -1.05), (0.75, 0), (0, 1.05), (-0.75, 0)],
    "arrow": [(1, 0), (0.15, -0.8), (0.15, -0.32), (-1, -0.32), (-1, 0.32), (0.15, 0.32), (0.15, 0.8)],
}


def shape_mask(label: int, rng: np.random.Generator, size: int = SIZE) -> Image.Image:
  """The class's shape as an 'L' mask at `_SUPER` x size, with random position, size and rotation."""
  s = size * _SUPER
  r = rng.uniform(0.26, 0.4) * s
  cx, cy = rng.uniform(r * 1.05, s - r * 1.05, 2)
  angle = math.radians(rng.uniform(-20, 20))
  mask = Image.new("L", (s, s), 0)
  d = ImageDraw.Draw(mask)
  name = CLASSES[label]
  if name in _POLYGONS:
    d.polygon(_polygon(_POLYGONS[name], angle, cx, cy, r), fill=255)
  elif name == "circle":
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
  elif name == "ring":
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    d.ellipse([cx - 0.55 * r, cy - 0.55 * r, cx + 0.55 * r, cy + 0.55 * r], fill=0)
  elif name == "crescent":
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    ox, oy = _polygon([(0.45, -0.3)], angle, cx, cy, r)[0]
    d.ellipse([ox - 0.85 * r, oy - 0.85 * r, ox + 0.85 * r, oy + 0.85 * r], fill=0)
  elif name == "cross":
    for arm in ([(-1, -0.3), (1, -0.3), (1, 0.3), (-1, 0.3)], [(-0.3, -1), (0.3, -1), (0.3, 1), (-0.3, 1)]):
      d.polygon(_polygon(arm, angle, cx, cy, r), fill=255)
  elif name == "heart":
    lobes = _polygon([(-0.45, -0.35), (0.45, -0.35)], angle, cx, cy, r)
    for x, y in lobes:
      d.ellipse([x - 0.5 * r, y - 0.5 * r, x + 0.5 * r, y + 0.5 * r], fill=255)
    d.polygon(_polygon([(-0.93, -0.2), (0.93, -0.2), (0, 0.95)], angle, cx, cy, r), fill=255)
  return mask


def _luminance(rgb) -> float:
  r, g, b = (np.asarray(rgb, np.float64) / 255.0)
  return 0.299 * r + 0.587 * g + 0.114 * b


def _hsv(h, s, v) -> tuple[int, int, int]:
  return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _gradient(size: int, a, b, angle: float) -> np.ndarray:
  """A linear gradient from colour a to b along direction `angle`, float (size, size, 3)."""
  t = np.linspace(-1, 1, size)
  x, y = np.meshgrid(t, t)
  w = np.clip(0.5 + 0.5 * (x * math.cos(angle) + y * math.sin(angle)) / math.sqrt(2) * 1.4, 0, 1)[..., None]
  return (1 - w) * np.asarray(a, np.float64) + w * np.asarray(b, np.float64)


def colour_name(hue: float) -> str:
  return COLOURS[int(((hue % 1.0) * 8 + 0.5) % 8)]


def draw(label: int, rng: np.random.Generator, style: str = "target", size: int = SIZE) -> tuple[np.ndarray, str, str]:
  """One image of class `label` in `style` ('target' or 'broad'): uint8 (size, size, 3), its caption (the
  class, and sometimes the colour and background) and its full description (all three)."""
  s = size * _SUPER
  hue = rng.uniform()
  if style == "target":
    # Sunset: purple (bottom left) to orange (top right), pale shapes with a dark outline.
    bg = _gradient(s, _hsv(0.75 + rng.uniform(-0.03, 0.03), 0.75, 0.45), _hsv(0.07 + rng.uniform(-0.02, 0.02), 0.85, 0.95),
                   -math.pi / 4 + rng.uniform(-0.3, 0.3))
    fg = _hsv(hue, rng.uniform(0.15, 0.35), rng.uniform(0.9, 1.0))
    where = " at sunset"
  else:
    kind = rng.integers(3)
    fg = _hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))
    while True:
      a = _hsv(rng.uniform(), rng.uniform(0, 0.8), rng.uniform(0.05, 1.0))
      b = _hsv(rng.uniform(), rng.uniform(0, 0.8), rng.uniform(0.05, 1.0)) if kind == 2 else a
      if min(abs(_luminance(a) - _luminance(fg)), abs(_luminance(b) - _luminance(fg))) > 0.2 or rng.uniform() < 0.05:
        break
    bg = _gradient(s, a, b, rng.uniform(0, 2 * math.pi))
    lum = (_luminance(a) + _luminance(b)) / 2
    where = " on a gradient" if kind == 2 else (" on a dark background" if lum < 0.4 else
                                                 " on a light background" if lum > 0.6 else "")
  mask = shape_mask(label, rng, size)
  img = bg
  if style == "target":
    outline = np.asarray(mask.filter(ImageFilter.MaxFilter(2 * _SUPER + 1)), np.float64)[..., None] / 255
    img = img * (1 - outline) + outline * np.asarray((25, 15, 35), np.float64)
  m = np.asarray(mask, np.float64)[..., None] / 255
  img = img * (1 - m) + m * np.asarray(fg, np.float64)
  small = Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8)).resize((size, size), Image.BOX)
  colour = f"{colour_name(hue)} " if rng.uniform() < 0.5 else ""
  caption = f"a photo of a {colour}{CLASSES[label]}{where if rng.uniform() < 0.6 else ''}"
  return np.asarray(small), caption, f"a photo of a {colour_name(hue)} {CLASSES[label]}{where}"


BACKGROUNDS = ("sunset", "gradient", "dark", "light")


def attributes(caption: str) -> tuple[int, int, int]:
  """(class, colour, background) indices named by a caption; -1 where it names none."""
  words = caption.split()
  pick = lambda names: next((i for i, n in enumerate(names) if n in words), -1)  # noqa: E731
  return pick(CLASSES), pick(COLOURS), pick(BACKGROUNDS)


def prompt_words() -> list[str]:
  """Every word a world caption or prompt uses (the demo tokenizer gives each one token)."""
  words = "a photo of on at sunset gradient dark light background".split()
  return sorted(set(words) | set(COLOURS) | set(CLASSES))


def lt_counts(num_classes: int = len(CLASSES), most: int = LT_MAX, fewest: int = LT_MIN) -> np.ndarray:
  """Train images per class of world:lt: `most` down to `fewest` (LT_MAX, LT_MIN by default), geometric."""
  c = np.arange(num_classes)
  return np.round(most * (fewest / most) ** (c / (num_classes - 1))).astype(np.int64)


@functools.lru_cache(maxsize=4096)  # about 12 MB of 32 px images
def _drawn(salt: int, label: int, within: int, style: str) -> tuple[np.ndarray, str, str]:
  """One image of a split, remembered: drawing takes about 4 ms, and a few-shot run reads its few real images
  thousands of times (the demo grid's 15 runs per column read 19,200 images, half of them real)."""
  return draw(label, np.random.default_rng([salt, label, within]), style)


class WorldSource(ImageSource):
  """A split of the world as an ImageSource; images are drawn on demand from (domain, split, index)."""

  def __init__(self, split: str = "train", per_class: int | None = 10, domain: str = "target",
               long_tail: bool = False, tail: tuple[int, int] = (LT_MAX, LT_MIN)):
    if domain not in DOMAINS:
      raise UserError(f"world domain {domain!r} is unknown: use one of {', '.join(DOMAINS)}")
    if split not in SPLITS:
      raise UserError(f"the world has no split {split!r}: it has {' and '.join(SPLITS)}")
    self.class_names, self.split, self.domain = CLASSES, split, domain
    if long_tail:
      counts = lt_counts(len(CLASSES), *tail) if split == "train" else np.full(len(CLASSES), LT_TEST)
    else:
      counts = np.full(len(CLASSES), per_class)
    self.labels = np.repeat(np.arange(len(CLASSES), dtype=np.int32), counts)
    # Index within the class, so world:4 is a prefix of world:8 per class and world:lt's draws are world:N's.
    self._within = np.concatenate([np.arange(n) for n in counts]).astype(np.int64)
    self._salt = zlib.crc32(f"{domain}/{split}".encode())

  def style(self, index: int) -> str:
    if self.domain == "target":
      return "target"
    rng = np.random.default_rng([self._salt, int(self.labels[index]), int(self._within[index]), 1])
    return "target" if rng.uniform() < TARGET_SHARE else "broad"

  def draw(self, index: int) -> tuple[np.ndarray, str, str]:
    index = _check_index(index, len(self))
    image, caption, description = _drawn(self._salt, int(self.labels[index]), int(self._within[index]),
                                         self.style(index))
    return image.copy(), caption, description

  def read(self, index: int) -> np.ndarray:
    return self.draw(index)[0]

  def caption(self, index: int) -> str:
    return self.draw(index)[1]

  def id(self, index: int) -> str:
    index = _check_index(index, len(self))
    return f"world/{self.domain}/{self.split}/{CLASSES[self.labels[index]]}/{self._within[index]}"


def open_world(target: str, split: str, options: dict[str, str], spec: str = "world:") -> WorldSource:
  """`world:N` / `world:lt` with option domain=target|broad, and max / min for world:lt (module docstring)."""
  domain = options.get("domain", "target")
  if split not in SPLITS:
    raise UserError(f"data source {spec!r} has no split {split!r}: the world has {' and '.join(SPLITS)}")
  if target == "lt":
    return WorldSource(split, None, domain, long_tail=True, tail=_tail(options, spec))
  if "max" in options or "min" in options:
    raise UserError(f"data source {spec!r}: max= and min= shape world:lt's tail; world:N has N images per class")
  if not target.isdigit() or int(target) < 1:
    raise UserError(f"data source {spec!r}: write world:N with N images per class (e.g. world:10) or world:lt")
  return WorldSource(split, int(target), domain)


def _tail(options: dict[str, str], spec: str) -> tuple[int, int]:
  """world:lt's (max, min) train images per class."""
  try:
    most, fewest = int(options.get("max", LT_MAX)), int(options.get("min", LT_MIN))
  except ValueError:
    most = fewest = 0
  if not 1 <= fewest <= most:
    raise UserError(f"data source {spec!r}: world:lt takes max=M and min=N with 1 <= N <= M train images per class "
                    f"(default max={LT_MAX}, min={LT_MIN})")
  return most, fewest


register_kind("world", open_world, ("domain", "max", "min"))
