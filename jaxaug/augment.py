"""On-device augmentations: pure jnp functions of (keys, batch).

Every public function takes one PRNG key per item (`keys` of shape (B,)) and a
batch whose leading axis is the item axis; the per-item work is vmapped, so an
item's result depends only on its own key and inputs. That keeps outputs
independent of batch size, batch position and device count (design.md,
contract 1), and the functions run unchanged under jit, vmap and a batch
sharded with NamedSharding(mesh, P('data')). On a mesh with Explicit axes
(jax.make_mesh's default) trace them under `jax.set_mesh(mesh)`: vmapped
jax.random.beta fails there without the mesh in context.

Images are float32 in [0, 1], NHWC. Embeddings are (B, d). Functions that draw
a mixing weight return it as `lam`: the share of the first input in the output
(1 - pasted fraction for the cutmix kinds), so it can be recorded per output.

Conditioning methods (method.md, "Conditioning augmentations") are `Method`
values from `get_method`. The condition step splits each item's key into a
pixel key and an embedding key, calls `apply_pixel` on the image pair,
CLIP-embeds the result (and image 2), then calls `apply_embed` on the pair of
embeddings. At most one of the two returns lam != 1.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from jaxaug.errors import UserError

CROP_SIZE = 224  # CLIP ViT-H/14 input size.
CROP_SCALE = (0.08, 1.0)  # Area fraction of the random resized crop.
CROP_RATIO = (3 / 4, 4 / 3)  # Width / height of the random resized crop.
CROP_ATTEMPTS = 10  # torchvision's draws before the centre-crop fallback.
DROPOUT_RATE = 0.4
JITTER = 0.4  # Brightness, contrast and saturation strength (ColorJitter).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale.


def _per_item(item_fn, keys, *batches, **static):
  """Maps item_fn(key, *arrays, **static) over the item axis, one key per item."""
  return jax.vmap(functools.partial(item_fn, **static))(keys, *batches)


def to_float(images):
  """uint8 images from the host -> float32 in [0, 1]."""
  return jnp.asarray(images, jnp.float32) / 255.0


def _draw_lam(key, alpha):
  return jax.random.beta(key, alpha, alpha)


def _draw_index(key, n):
  """Uniform integer in [0, n) for a traced n; compiles faster than random.randint."""
  return jnp.minimum(jnp.floor(jax.random.uniform(key) * n), n - 1).astype(jnp.int32)


# Random resized crop (torchvision RandomResizedCrop semantics).


def _centre_fallback(height, width):
  """The box torchvision uses when no draw fits: the largest in-ratio centre crop."""
  in_ratio = width / height
  if in_ratio < CROP_RATIO[0]:
    w, h = width, round(width / CROP_RATIO[0])
  elif in_ratio > CROP_RATIO[1]:
    w, h = round(height * CROP_RATIO[1]), height
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def crop_box(key, height: int, width: int):
  """Draws one crop box (top, left, h, w), int32, for an image of a static size.

  All CROP_ATTEMPTS draws of (area fraction, log-uniform ratio) are made at
  once and the first that fits is kept, which is torchvision's loop with a
  fixed trip count; if none fits, the box is `_centre_fallback`. Sides are
  rounded to whole pixels as in torchvision, so area and ratio can leave
  their ranges by that rounding.
  """
  k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
  area = height * width * jax.random.uniform(
      k_area, (CROP_ATTEMPTS,), minval=CROP_SCALE[0], maxval=CROP_SCALE[1])
  ratio = jnp.exp(jax.random.uniform(
      k_ratio, (CROP_ATTEMPTS,),
      minval=math.log(CROP_RATIO[0]), maxval=math.log(CROP_RATIO[1])))
  ws = jnp.round(jnp.sqrt(area * ratio)).astype(jnp.int32)
  hs = jnp.round(jnp.sqrt(area / ratio)).astype(jnp.int32)
  fits = (ws > 0) & (ws <= width) & (hs > 0) & (hs <= height)
  first = jnp.argmax(fits)
  found = fits[first]
  f_top, f_left, f_h, f_w = _centre_fallback(height, width)
  h = jnp.where(found, hs[first], f_h)
  w = jnp.where(found, ws[first], f_w)
  top = jnp.where(found, _draw_index(k_top, height - h + 1), f_top)
  left = jnp.where(found, _draw_index(k_left, width - w + 1), f_left)
  return jnp.stack([top, left, h, w]).astype(jnp.int32)


def resize_box(image, box, size: int = CROP_SIZE):
  """Resamples the (top, left, h, w) box of one HWC image to size x size.

  Bilinear with antialiasing, via scale_and_translate so the box may be traced.
  Unlike torchvision (crop, then resize) the triangle filter at the box edge
  also sees the pixels just outside the box; away from the edge it is the same.
  """
  top, left, h, w = box.astype(jnp.float32)
  scale = jnp.stack([size / h, size / w])
  translation = -jnp.stack([top, left]) * scale
  return jax.image.scale_and_translate(
      image, (size, size, image.shape[-1]), (0, 1), scale, translation,
      method="linear", antialias=True)


def _random_resized_crop(key, image, *, size=CROP_SIZE):
  height, width = image.shape[:2]
  return resize_box(image, crop_box(key, height, width), size)


def random_resized_crop(keys, images, size: int = CROP_SIZE):
  """Random resized crop of each image to size x size (see crop_box)."""
  return _per_item(_random_resized_crop, keys, images, size=size)


def _flip(key, image):
  return jnp.where(jax.random.bernoulli(key), image[:, ::-1], image)


def flip(keys, images):
  """Mirrors each image left-right with probability 1/2."""
  return _per_item(_flip, keys, images)


# Pixel mixing.


def cutmix_box(key, lam, height: int, width: int):
  """Box (top, left, bottom, right) of area about (1 - lam) * H * W, int32.

  Sides are sqrt(1 - lam) times the image sides, rounded; the centre is a
  uniform pixel and the box is clipped to the image as in the standard CutMix,
  so near the border it is smaller than asked.
  """
  k_y, k_x = jax.random.split(key)
  cut = jnp.sqrt(1.0 - lam)
  cut_h = jnp.round(cut * height).astype(jnp.int32)
  cut_w = jnp.round(cut * width).astype(jnp.int32)
  top = _draw_index(k_y, height) - cut_h // 2
  left = _draw_index(k_x, width) - cut_w // 2
  return jnp.stack([
      jnp.clip(top, 0, height), jnp.clip(left, 0, width),
      jnp.clip(top + cut_h, 0, height), jnp.clip(left + cut_w, 0, width)])


def _cutmix(key, x1, x2, *, alpha=1.0):
  k_lam, k_box = jax.random.split(key)
  height, width = x1.shape[:2]
  top, left, bottom, right = cutmix_box(k_box, _draw_lam(k_lam, alpha), height, width)
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  lam = 1.0 - (bottom - top) * (right - left) / (height * width)
  return jnp.where(inside[..., None], x2, x1), lam.astype(jnp.float32)


def cutmix(keys, x1, x2, alpha: float = 1.0):
  """CutMix: pastes a cutmix_box of x2 into x1 -> (x, lam).

  lam ~ Beta(alpha, alpha) sets the box; the returned lam is the share of x1
  actually left after clipping, 1 - box_area / (H * W).
  """
  return _per_item(_cutmix, keys, x1, x2, alpha=alpha)


def _mixup(key, x1, x2, *, alpha=1.0):
  lam = _draw_lam(key, alpha)
  return lam * x1 + (1.0 - lam) * x2, lam


def mixup(keys, x1, x2, alpha: float = 1.0):
  """MixUp: lam * x1 + (1 - lam) * x2 with lam ~ Beta(alpha, alpha) -> (x, lam)."""
  return _per_item(_mixup, keys, x1, x2, alpha=alpha)


# Embedding mixing and dropout.


def embed_mixup(keys, e1, e2, alpha: float = 1.0):
  """lam * e1 + (1 - lam) * e2 with lam ~ Beta(alpha, alpha) -> (e, lam)."""
  return _per_item(_mixup, keys, e1, e2, alpha=alpha)


def _embed_cutmix(key, e1, e2, *, alpha=1.0):
  d = e1.shape[-1]
  n_from_e2 = jnp.round((1.0 - _draw_lam(key, alpha)) * d).astype(jnp.int32)
  e = jnp.where(jnp.arange(d) < n_from_e2, e2, e1)
  return e, (1.0 - n_from_e2 / d).astype(jnp.float32)


def embed_cutmix(keys, e1, e2, alpha: float = 1.0):
  """CutMix along the feature axis -> (e, lam).

  With lam ~ Beta(alpha, alpha), the first round((1 - lam) * d) features come
  from e2 and the rest from e1; the returned lam is the share kept from e1,
  1 - round((1 - lam) * d) / d. (The reference code cut along the batch axis
  instead; see method.md.)
  """
  return _per_item(_embed_cutmix, keys, e1, e2, alpha=alpha)


def _embed_dropout(key, e):
  keep = jax.random.bernoulli(key, 1.0 - DROPOUT_RATE, e.shape)
  return jnp.where(keep, e, jnp.zeros_like(e))


def embed_dropout(keys, e):
  """Zeroes each entry with probability DROPOUT_RATE, without rescaling.

  Meant for the 1024-d CLIP image embedding only; the noise-level half of the
  2048-d conditioning vector is the caller's and must not be passed here.
  """
  return _per_item(_embed_dropout, keys, e)


# The released code's behaviour (method.md), for reproducing the published numbers: `reference_quirks`.

GUIDED_ROWS = 2  # the reference cut along the batch of the guided pair: (unconditional zeros, conditional)


def reference_cut_rows(lam) -> jax.Array:
  """Rows of image 2's guided pair the reference code's embed_cutmix took: int((1 - lam) * 2).

  Its cut size came from the tensor's first dimension, the 2 rows under guidance, truncated as
  CutMix code does; row 0 is the unconditional all-zero row, so for any lam > 0 the conditional row is
  still image 1's.
  """
  return jnp.floor((1.0 - lam) * GUIDED_ROWS).astype(jnp.int32)


def _reference_embed_cutmix(key, e1, e2, *, alpha=1.0):
  """embed_cutmix as released: the guided pairs (0, e1) and (0, e2) cut along their row axis; the
  conditional row is kept, with lam = 1 where it is image 1's (always, unless lam is exactly 0)."""
  take = reference_cut_rows(_draw_lam(key, alpha))
  zero = jnp.zeros_like(e1)
  rows = jnp.where((jnp.arange(GUIDED_ROWS) < take)[:, None], jnp.stack([zero, e2]), jnp.stack([zero, e1]))
  from_e1 = take < GUIDED_ROWS
  return rows[1], from_e1.astype(jnp.float32)


def drop_keys(keys):
  """The per-item dropout keys `apply_embed` uses (its key's second half), for dropout done elsewhere."""
  return jax.vmap(lambda k: jax.random.split(k)[1])(keys)


def vector_dropout(keys, vectors):
  """The released code's dropout: `F.dropout(p=0.4) * 0.6` on the whole conditioning vector (image and
  noise-level halves alike), i.e. entries zeroed with probability 0.4 and the rest left unscaled.
  `keys` are the items' embedding keys, as given to `apply_embed`."""
  return _per_item(_embed_dropout, drop_keys(keys), vectors)


# Colour jitter and the classifier's training transform.


def _gray(image):
  return image @ jnp.asarray(GRAY_WEIGHTS, image.dtype)


def _blend(image, other, factor):
  return jnp.clip(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def _brightness(image, factor):
  return _blend(image, 0.0, factor)


def _contrast(image, factor):
  return _blend(image, jnp.mean(_gray(image)), factor)


def _saturation(image, factor):
  return _blend(image, _gray(image)[..., None], factor)


def _color_jitter(key, image):
  k_order, k_factor = jax.random.split(key)
  ops = (_brightness, _contrast, _saturation)
  factors = jax.random.uniform(
      k_factor, (len(ops),), minval=1.0 - JITTER, maxval=1.0 + JITTER)
  # All three candidates then a select: what vmap makes of lax.switch anyway,
  # and unlike switch it also traces under an Explicit mesh.
  for op in jax.random.permutation(k_order, len(ops)):
    image = jax.lax.select_n(op, *(fn(image, f) for fn, f in zip(ops, factors)))
  return image


def color_jitter(keys, images):
  """torchvision ColorJitter(0.4, 0.4, 0.4): brightness, contrast, saturation.

  Each factor is uniform in [0.6, 1.4] and, as in torchvision, the three are
  applied in a random order per item, each clipping to [0, 1].
  """
  return _per_item(_color_jitter, keys, images)


def _train_augment(key, image, *, size=CROP_SIZE):
  k_crop, k_flip, k_jitter = jax.random.split(key, 3)
  image = _random_resized_crop(k_crop, image, size=size)
  return _color_jitter(k_jitter, _flip(k_flip, image))


def train_augment(keys, images, size: int = CROP_SIZE):
  """Classifier training transform: random resized crop, flip, colour jitter."""
  return _per_item(_train_augment, keys, images, size=size)


def _rotate(key, image, *, max_degrees):
  """torchvision RandomRotation: angle ~ U(-max, max) about the centre, bilinear, zero fill."""
  angle = jnp.deg2rad(jax.random.uniform(key, (), minval=-max_degrees, maxval=max_degrees))
  h, w = image.shape[:2]
  y, x = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
  cy, cx = (h - 1) / 2, (w - 1) / 2
  # Each output pixel samples the input at its position rotated back by the angle.
  src_y = cy + (y - cy) * jnp.cos(angle) - (x - cx) * jnp.sin(angle)
  src_x = cx + (y - cy) * jnp.sin(angle) + (x - cx) * jnp.cos(angle)
  sample = lambda channel: jax.scipy.ndimage.map_coordinates(channel, [src_y, src_x], order=1, mode="constant")
  return jnp.stack([sample(image[..., c]) for c in range(image.shape[-1])], axis=-1)


def _fewshot_augment(key, image, *, max_degrees):
  k_flip, k_rotate = jax.random.split(key)
  return _rotate(k_rotate, _flip(k_flip, image), max_degrees=max_degrees)


def fewshot_augment(keys, images, max_degrees: float = 15.0):
  """The DA-Fusion few-shot transform on resized images: horizontal flip, rotation within +-max_degrees."""
  return _per_item(_fewshot_augment, keys, images, max_degrees=max_degrees)


# Conditioning methods.


@dataclasses.dataclass(frozen=True)
class Method:
  """A conditioning augmentation; hashable, so it can be a static jit argument.

  pixel: None, 'cutmix' or 'mixup' (on the two images, after cropping them);
  embed: None, 'embed_cutmix' or 'embed_mixup' (on the two CLIP embeddings);
  dropout: whether the final image embedding goes through embed_dropout;
  alpha: the Beta(alpha, alpha) parameter of the mixing weight;
  reference_quirks: behave as the paper's released code did (method.md): embed_cutmix cuts the guided
    pair's rows, keeping image 1's embedding, and dropout hits the whole 2048-d conditioning vector
    (`condition` applies it there, so `apply_embed` then skips it).
  """
  name: str
  pixel: str | None = None
  embed: str | None = None
  dropout: bool = False
  alpha: float = 1.0
  reference_quirks: bool = False

  @property
  def vector_dropout(self) -> bool:
    """Whether dropout goes on the whole conditioning vector (the released code) instead of the embedding."""
    return self.dropout and self.reference_quirks

  def __post_init__(self):
    if self.pixel not in (None, "cutmix", "mixup"):
      raise ValueError(f"Method.pixel must be None, 'cutmix' or 'mixup', got {self.pixel!r}")
    if self.embed not in (None, "embed_cutmix", "embed_mixup"):
      raise ValueError(
          f"Method.embed must be None, 'embed_cutmix' or 'embed_mixup', got {self.embed!r}")

  @property
  def pairs(self) -> bool:
    """Whether it mixes two images (in pixels or embeddings), so it reads a second source image."""
    return self.pixel is not None or self.embed is not None


METHODS = {m.name: m for m in (
    Method("rand_img_cond"),
    Method("dropout", dropout=True),
    Method("cutmix", pixel="cutmix"),
    Method("mixup", pixel="mixup"),
    Method("embed_cutmix", embed="embed_cutmix"),
    Method("embed_mixup", embed="embed_mixup"),
    Method("cutmix_dropout", pixel="cutmix", dropout=True),
    Method("mixup_dropout", pixel="mixup", dropout=True),
    Method("embed_cutmix_dropout", embed="embed_cutmix", dropout=True),
    Method("embed_mixup_dropout", embed="embed_mixup", dropout=True),
)}


def get_method(name: str, alpha: float = 1.0, reference_quirks: bool = False) -> Method:
  """The registered method `name` with mixing weight lam ~ Beta(alpha, alpha) (as released, with quirks)."""
  if name not in METHODS:
    raise UserError(
        f"unknown augmentation method {name!r}; use one of: {', '.join(METHODS)}")
  if not alpha > 0:
    raise UserError(f"Beta alpha for method {name!r} must be > 0, got {alpha}")
  return dataclasses.replace(METHODS[name], alpha=float(alpha), reference_quirks=bool(reference_quirks))


def parse_methods(names: str, alpha: float = 1.0, reference_quirks: bool = False) -> tuple[Method, ...]:
  """The methods a comma-separated list names (a generation config's `methods`), in order; empty names skipped."""
  return tuple(get_method(m.strip(), alpha, reference_quirks) for m in names.split(",") if m.strip())


_PIXEL_MIX = {"cutmix": _cutmix, "mixup": _mixup}
_EMBED_MIX = {"embed_cutmix": _embed_cutmix, "embed_mixup": _mixup}


def _apply_pixel(key, x1, x2, *, method, size):
  k_crop1, k_crop2, k_mix = jax.random.split(key, 3)
  x1 = _random_resized_crop(k_crop1, x1, size=size)
  x2 = _random_resized_crop(k_crop2, x2, size=size)
  return _PIXEL_MIX[method.pixel](k_mix, x1, x2, alpha=method.alpha)


def apply_pixel(method: Method, keys, x1, x2, size: int = CROP_SIZE):
  """The pixel part of `method` on a batch of image pairs -> (images, lam).

  Only the pixel-mixing methods (cutmix, mixup and their _dropout forms) crop:
  both images get a random resized crop to size x size, then are mixed. All
  other methods, rand_img_cond and the embedding-level ones, use image 1 as
  it is ("no augmentation"): it comes back unchanged, at its own size, for
  CLIP preprocessing, with lam = 1. `method` and `size` are static under jit.
  """
  if method.pixel is None:
    return x1, jnp.ones(x1.shape[:1], jnp.float32)
  return _per_item(_apply_pixel, keys, x1, x2, method=method, size=size)


def _apply_embed(key, e1, e2, *, method):
  k_mix, k_drop = jax.random.split(key)
  lam = jnp.float32(1.0)
  e = e1
  if method.embed is not None:
    mix = _reference_embed_cutmix if method.reference_quirks and method.embed == "embed_cutmix" else \
        _EMBED_MIX[method.embed]
    e, lam = mix(k_mix, e1, e2, alpha=method.alpha)
  if method.dropout and not method.vector_dropout:
    e = _embed_dropout(k_drop, e)
  return e, lam


def apply_embed(method: Method, keys, e1, e2):
  """The embedding part of `method` on a batch of CLIP image-embedding pairs -> (e, lam).

  Mixes e1 with e2 if the method is embedding-level (else keeps e1, lam = 1),
  then applies embed_dropout if method.dropout. The mix and the dropout use
  separate halves of each key, so X and X_dropout share lam for the same key.
  Pass only the 1024-d image embedding, never the noise-level half. With
  method.reference_quirks, dropout is left to `vector_dropout` on the whole vector.
  """
  return _per_item(_apply_embed, keys, e1, e2, method=method)
