"""Real images -> the unCLIP conditioning vector, on the device, for a batch of items with mixed methods.

The host delivers each real image as uint8 at a fixed working size (shorter side to `source_size`, then a
centre crop: `jaxaug.data.images.fit_square`). Everything after that runs inside the jitted step:

  pixel aug (cutmix / mixup on random resized crops; other methods keep image 1 whole)
  -> CLIP preprocessing (bicubic resize to the vision tower's size, normalise)
  -> CLIP vision tower on both images
  -> embedding aug (embed_cutmix / embed_mixup, then dropout on the image embedding only)
  -> noise-level augmentation and its sinusoidal embedding (`models.sd.image_condition`)
  -> (methods with reference_quirks only) dropout on the whole 2048-d vector, as the released code did

A batch may mix methods (the demo runs all ten): each distinct pixel and embedding behaviour is computed
for the whole batch and the item's own is selected, so one compiled step serves every method. The extra
work is two small CLIP passes per image, well under 1% of sampling.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxaug import augment
from jaxaug.models import sd
from jaxaug.models.pipeline import Pipeline
from jaxaug.sampler import deinterleave, interleave


@dataclasses.dataclass
class Condition:
  vector: jax.Array  # (B, 2d) the unCLIP conditioning vector
  image: jax.Array  # (B, S, S, 3) float [0, 1]: what the CLIP tower saw (after pixel augmentation)
  lam: jax.Array  # (B,) the mixing weight drawn (1 for methods that do not mix)


jax.tree_util.register_dataclass(Condition, data_fields=["vector", "image", "lam"], meta_fields=[])


def item_keys(seed: int, item_ids):
  """Per-item keys: fold_in(key(seed), item_id); independent of batch, device and host."""
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(item_ids)


def item_streams(seed: int, item_ids):
  """The item's independent random streams: (conditioning, initial latents, VAE posterior) keys."""
  keys = item_keys(seed, item_ids)
  return tuple(jax.vmap(lambda k, i=i: jax.random.fold_in(k, 100 + i))(keys) for i in range(3))


def clip_resize(pipe: Pipeline, images):
  """Square float images -> the vision tower's input size (bicubic, antialiased, as CLIPImageProcessor)."""
  size = pipe.clip_image.size
  if images.shape[1:3] == (size, size):
    return images
  return jnp.clip(jax.image.resize(images, (images.shape[0], size, size, 3), "bicubic", antialias=True), 0.0, 1.0)


def clip_normalize(pipe: Pipeline, images):
  mean = jnp.asarray(pipe.clip_image.mean, jnp.float32)
  std = jnp.asarray(pipe.clip_image.std, jnp.float32)
  return (images - mean) / std


def _select(index, options):
  """options[index[b]][b] for every item b (options: a list of equally shaped batch arrays)."""
  stacked = jnp.stack(options)
  return jnp.take_along_axis(stacked, index.reshape((1, -1) + (1,) * (stacked.ndim - 2)), axis=0)[0]


def pixel_condition(pipe: Pipeline, methods: tuple[augment.Method, ...], method_index, keys, image1, image2):
  """The pixel half of `condition`: the image the CLIP tower sees (B, S, S, 3) in [0, 1] and its pixel lambda.
  The contact sheet shows it without tracing the tower."""
  k_pixel = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
  x1, x2 = augment.to_float(image1), augment.to_float(image2)
  pixel_kinds = sorted({m.pixel for m in methods}, key=str)
  pixel_out = {}
  for kind in pixel_kinds:
    if kind is None:
      pixel_out[kind] = (clip_resize(pipe, x1), jnp.ones(x1.shape[:1], jnp.float32))
    else:
      method = next(m for m in methods if m.pixel == kind)
      pixel_out[kind] = augment.apply_pixel(method, k_pixel, x1, x2, size=pipe.clip_image.size)
  pick = jnp.asarray([pixel_kinds.index(m.pixel) for m in methods])[method_index]
  return _select(pick, [pixel_out[k][0] for k in pixel_kinds]), _select(pick, [pixel_out[k][1] for k in pixel_kinds])


def condition(pipe: Pipeline, params, methods: tuple[augment.Method, ...], method_index, keys, image1, image2,
              noise_level: int):
  """Per-item conditioning for a batch. image1/image2: uint8 (B, H, W, 3), same class; keys: (B,) item keys."""
  k_embed, k_noise = (jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys) for i in (1, 2))
  image, lam_pixel = pixel_condition(pipe, methods, method_index, keys, image1, image2)
  x2 = augment.to_float(image2)

  both = clip_normalize(pipe, interleave(image, clip_resize(pipe, x2)))
  e1, e2 = deinterleave(sd.encode_image(pipe, params, both))
  embed_out = [augment.apply_embed(m, k_embed, e1, e2) for m in methods]
  embeds = _select(method_index, [e for e, _ in embed_out])
  lam_embed = _select(method_index, [lam for _, lam in embed_out])

  noise = jax.vmap(lambda k: jax.random.normal(k, e1.shape[1:]))(k_noise)
  vector = sd.image_condition(pipe, params, embeds, noise_level, noise)
  if any(m.vector_dropout for m in methods):  # reference_quirks: the released code's dropout, noise level included
    quirky = jnp.asarray([m.vector_dropout for m in methods])[method_index]
    vector = jnp.where(quirky[:, None], augment.vector_dropout(k_embed, vector), vector)
  return Condition(vector=vector, image=image, lam=lam_pixel * lam_embed)
