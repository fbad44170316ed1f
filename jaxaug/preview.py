"""Contact sheet of the pixel-level conditioning augmentations, to look at them.

  python -m jaxaug.preview [--out=preview.png] [--images=a.jpg,b.jpg] [--seed=0]

Rows: image 1 as rand_img_cond uses it, image 2, the random resized crop of
image 1, cutmix and mixup; columns: independent draws, draw j pairing source j
with source j + 1. Without --images the sources are drawn shapes in distinct
colours, so CutMix boxes and MixUp blends are easy to see.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont
from PIL import ImageOps

from jaxaug import augment
from jaxaug import fsutil
from jaxaug.errors import UserError
from jaxaug.errors import exit_on_user_error
from jaxaug.errors import parse_flags

_OUT = flags.DEFINE_string("out", "preview.png", "PNG file to write.")
_IMAGES = flags.DEFINE_list(
    "images", [], "Image files to augment, comma-separated; default: drawn shapes.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the augmentation draws.")

WORKING_SIZE = 256  # Sources are fitted to this square, as the host delivers them.
TILE = augment.CROP_SIZE
DRAWS = 4
LABEL_WIDTH = 170
HEADER = 30
CAPTION = 22
GAP = 8
ROWS = ("image 1\n(rand_img_cond)", "image 2", "random resized\ncrop of image 1",
        "cutmix of the\ncrops of 1 and 2", "mixup of the\ncrops of 1 and 2")
EMBEDDING_NOTE = (
    "embedding-level methods (embed_mixup, embed_cutmix, dropout and the _dropout "
    "variants) have no picture of their own: they act on CLIP image embeddings")


def sheet_size() -> tuple[int, int]:
  """(width, height) of the contact sheet in pixels."""
  return LABEL_WIDTH + DRAWS * (TILE + GAP), HEADER + len(ROWS) * (TILE + CAPTION + GAP)


def drawn_sources() -> dict[str, np.ndarray]:
  """Four uint8 images with distinct patterns and colours."""
  y, x = np.mgrid[:WORKING_SIZE, :WORKING_SIZE] / WORKING_SIZE

  def paint(mask, fg, bg):
    return np.where(mask[..., None], fg, bg).astype(np.uint8)

  return {
      "circles": paint((x * 4 % 1 - 0.5) ** 2 + (y * 4 % 1 - 0.5) ** 2 < 0.12,
                       (220, 40, 40), (245, 235, 205)),
      "stripes": paint((x + y) * 8 % 1 < 0.5, (30, 150, 60), (250, 250, 250)),
      "checkers": paint((np.floor(x * 6) + np.floor(y * 6)) % 2 == 0,
                        (30, 60, 200), (250, 210, 30)),
      "rings": paint(np.hypot(x - 0.5, y - 0.5) * 10 % 1 < 0.5,
                     (240, 130, 20), (90, 30, 120)),
  }


def load_sources(paths: list[str]) -> dict[str, np.ndarray]:
  """Reads image files and fits each to the working square, as uint8 RGB."""
  sources = {}
  for path in paths:
    if not os.path.isfile(path):
      raise UserError(f"--images: no file {path}; pass existing image files, comma-separated")
    try:
      with Image.open(path) as image:
        fitted = ImageOps.fit(image.convert("RGB"), (WORKING_SIZE, WORKING_SIZE))
    except (OSError, ValueError) as e:
      reason = str(e).splitlines()[0] if str(e) else type(e).__name__
      raise UserError(
          f"--images: cannot read {path} as an image ({reason}); pass PNG or JPEG files") from None
    sources[os.path.basename(path)] = np.asarray(fitted)
  return sources


def augment_draws(sources: dict[str, np.ndarray], seed: int):
  """The sheet's rows: per row a list of (uint8 tile, caption), one per draw."""
  names, images = list(sources), list(sources.values())
  first = [j % len(images) for j in range(DRAWS)]
  second = [(j + 1) % len(images) for j in range(DRAWS)]
  x1 = augment.to_float(np.stack([images[i] for i in first]))
  x2 = augment.to_float(np.stack([images[i] for i in second]))
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(DRAWS))
  boxes = np.asarray(jax.vmap(augment.crop_box, (0, None, None))(
      keys, WORKING_SIZE, WORKING_SIZE))
  crops = augment.random_resized_crop(keys, x1)
  cut, cut_lam = augment.apply_pixel(augment.get_method("cutmix"), keys, x1, x2)
  mix, mix_lam = augment.apply_pixel(augment.get_method("mixup"), keys, x1, x2)

  def tiles(x):
    return np.asarray(jnp.round(x * 255)).astype(np.uint8)

  return [
      list(zip(np.stack([images[i] for i in first]), [names[i] for i in first])),
      list(zip(np.stack([images[i] for i in second]), [names[i] for i in second])),
      list(zip(tiles(crops), [f"{w}x{h} at x={left}, y={top}" for top, left, h, w in boxes])),
      list(zip(tiles(cut), [f"lam = {lam:.2f}" for lam in np.asarray(cut_lam)])),
      list(zip(tiles(mix), [f"lam = {lam:.2f}" for lam in np.asarray(mix_lam)])),
  ]


def render(rows) -> Image.Image:
  """Lays the rows out as a labelled grid on white."""
  sheet = Image.new("RGB", sheet_size(), "white")
  draw = ImageDraw.Draw(sheet)
  font = ImageFont.load_default(size=16)
  for j in range(DRAWS):
    x = LABEL_WIDTH + j * (TILE + GAP)
    draw.text((x + TILE // 2, HEADER // 2), f"draw {j + 1}", fill="black", font=font, anchor="mm")
  for r, (label, row) in enumerate(zip(ROWS, rows)):
    y = HEADER + r * (TILE + CAPTION + GAP)
    draw.multiline_text((GAP, y + TILE // 2), label, fill="black", font=font, anchor="lm")
    for j, (tile, caption) in enumerate(row):
      x = LABEL_WIDTH + j * (TILE + GAP)
      sheet.paste(Image.fromarray(tile).resize((TILE, TILE), Image.BILINEAR), (x, y))
      draw.text((x + TILE // 2, y + TILE + CAPTION // 2), caption,
                fill="dimgray", font=font, anchor="mm")
  return sheet


def check_out(out: str):
  """Fails before any work if --out cannot take the PNG."""
  if not out.lower().endswith(".png"):
    raise UserError(f"--out={out}: the preview is a PNG; give a path ending in .png")
  folder = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(folder):
    raise UserError(f"--out={out}: folder {folder} does not exist; create it first")


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass images with --images=a.jpg,b.jpg")
  check_out(_OUT.value)
  sources = load_sources(_IMAGES.value) if _IMAGES.value else drawn_sources()
  sheet = render(augment_draws(sources, _SEED.value))
  fsutil.write_png(_OUT.value, sheet)
  print(f"wrote {_OUT.value} ({sheet.width}x{sheet.height}): {DRAWS} draws, seed {_SEED.value}")
  print(EMBEDDING_NOTE)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
