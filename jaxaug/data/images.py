"""Host-side image decoding and the fixed-size rule every real image goes through.

The rule (`fit_square`): take the centred square of side min(height, width) and
resize it to `size` x `size` with PIL bicubic, which antialiases when it shrinks.
This is "shorter side to `size`, then centre crop", done in one resample.

`load_fit` is the fast path the pipelines use: for JPEG bytes it first lets
libjpeg decode at a reduced scale (1/2, 1/4, 1/8; PIL's `draft`) while keeping
the shorter side >= `size`, so big photos are never fully decoded. Its output
can differ from `fit_square(decode_image(data), size)` by a few grey levels.

Every mode becomes 8-bit RGB the way it is meant to look: 16-bit and float images are scaled
(`scale_to_uint8`), transparent pixels are white, and EXIF orientation is applied (as PIL's
`ImageOps.exif_transpose` does) before the square is taken.

A file that cannot be read or decoded raises `BadImage`; pipelines catch it,
count it and move on (design.md contract 5).
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image

# PIL errors on truncated files (we want that) and only warns on big images.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class BadImage(Exception):
  """One image that cannot be read or decoded; skipped and counted, never fatal."""


# EXIF orientation tag values -> the transpose that shows the picture upright (as ImageOps.exif_transpose).
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}
_EXIF_ORIENTATION = 0x0112


def scale_to_uint8(pixels: np.ndarray) -> np.ndarray:
  """High-bit-depth pixels -> uint8 by their range, never by clipping.

  Integers within 0..65535 (16-bit PNG and TIFF, PIL modes I;16 and I) are divided by 257, so 65535 maps
  to 255 and mid-grey stays mid-grey. Floats within [0, 1] are multiplied by 255, within [0, 255] kept.
  Anything else (negative or wider values) is stretched from its minimum to its maximum.
  """
  values = np.nan_to_num(pixels.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
  lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
  if pixels.dtype.kind in "ui" and lo >= 0 and hi <= 65535:
    values = values / 257
  elif pixels.dtype.kind == "f" and lo >= 0 and hi <= 1:
    values = values * 255
  elif not (pixels.dtype.kind == "f" and lo >= 0 and hi <= 255):
    values = (values - lo) * (255 / (hi - lo)) if hi > lo else np.zeros_like(values)
  return np.clip(np.round(values), 0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
  """Any PIL mode -> 8-bit RGB, upright (EXIF orientation applied)."""
  transpose = _ORIENTATION.get(image.getexif().get(_EXIF_ORIENTATION))
  if image.mode == "RGB":
    rgb = image
  elif image.mode.startswith(("I", "F")):  # I;16*, I (32-bit int), F (32-bit float): scale, do not clip
    rgb = Image.fromarray(scale_to_uint8(np.asarray(image))).convert("RGB")
  elif image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (image.mode == "P" and "transparency" in image.info):
    # Composite on white so transparent pixels do not turn black.
    rgba = image.convert("RGBA") if image.mode != "La" else image.convert("LA").convert("RGBA")
    rgb = Image.new("RGB", rgba.size, (255, 255, 255))
    rgb.paste(rgba, mask=rgba.getchannel("A"))
  else:
    rgb = image.convert("RGB")
  return rgb.transpose(transpose) if transpose is not None else rgb


def _open(data: bytes) -> Image.Image:
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      return Image.open(io.BytesIO(data))
  except Image.UnidentifiedImageError as e:
    raise BadImage("not an image (unknown format)") from e
  except _DECODE_ERRORS as e:
    raise BadImage(f"not an image ({type(e).__name__}: {e})") from e


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
  """Already-decoded pixels (e.g. from a data source that decodes) -> uint8 HWC RGB."""
  if array.dtype == np.uint16:
    array = scale_to_uint8(array)
  if array.dtype != np.uint8:
    raise BadImage(f"decoded image has dtype {array.dtype}, expected uint8 or uint16")
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
    raise BadImage(f"decoded image has shape {array.shape}, expected HxWx(1|3|4)")
  if array.shape[-1] == 1:
    return np.repeat(array, 3, axis=-1)
  return np.ascontiguousarray(array[..., :3])


def decode_image(data: bytes | np.ndarray) -> np.ndarray:
  """Encoded bytes (or already-decoded pixels) -> uint8 HxWx3 RGB at full size."""
  if isinstance(data, np.ndarray):
    return _array_to_rgb(data)
  image = _open(data)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      image.load()
      return np.asarray(_to_rgb(image))
  except _DECODE_ERRORS as e:
    raise BadImage(f"corrupt image ({type(e).__name__}: {e})") from e


def _centre_square(width: int, height: int) -> tuple[float, float, float, float]:
  side = min(width, height)
  left = (width - side) / 2
  top = (height - side) / 2
  return (left, top, left + side, top + side)


def _fit_pil(image: Image.Image, size: int) -> np.ndarray:
  box = _centre_square(*image.size)
  return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC, box=box))


def fit_square(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 HxWx3 -> uint8 size x size x 3: centred square, bicubic (antialiased) resize."""
  image = _array_to_rgb(np.asarray(image))
  if image.shape[0] == size and image.shape[1] == size:
    return image
  return _fit_pil(Image.fromarray(image), size)


def read_fit(source, position: int, size: int) -> np.ndarray | None:
  """Image `position` of an ImageSource fitted to `size`, or None where it cannot be read (pictures mark the
  gap and go on)."""
  try:
    return load_fit(source.read(int(position)), size)
  except BadImage:
    return None


def load_fit(data: bytes | np.ndarray, size: int) -> np.ndarray:
  """Encoded bytes -> uint8 size x size x 3 by the `fit_square` rule, decoding JPEGs at reduced scale."""
  if isinstance(data, np.ndarray):
    return fit_square(data, size)
  image = _open(data)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      if image.format == "JPEG":
        width, height = image.size
        scale = size / min(width, height)
        # draft keeps both sides >= the request, so the shorter side stays >= size.
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
      image.load()
      return _fit_pil(_to_rgb(image), size)
  except _DECODE_ERRORS as e:
    raise BadImage(f"corrupt image ({type(e).__name__}: {e})") from e
