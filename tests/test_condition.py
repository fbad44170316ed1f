"""Conditioning: the rand_img_cond vector is the reference image-embedding path; mixed methods select right."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaug import augment, condition
from jaxaug.models import load, sd, tiny

# Jitted (pipeline, methods and noise level static): eager dispatch of the image tower takes seconds per call.
_conditioned = jax.jit(condition.condition, static_argnums=(0, 2, 7))


@pytest.fixture(scope="module")
def unclip(tmp_path_factory):
  return load(str(tiny.write_tiny(tmp_path_factory.mktemp("ckpt") / "unclip", "unclip")))


def _images(n, size, seed):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_rand_img_cond_equals_reference_path(unclip):
  pipe, params = unclip
  size = pipe.clip_image.size
  x1, x2 = _images(3, size, 0), _images(3, size, 1)
  keys = condition.item_keys(0, jnp.arange(3))
  methods = (augment.get_method("rand_img_cond"),)
  cond = _conditioned(pipe, params, methods, jnp.zeros(3, jnp.int32), keys, x1, x2, noise_level=0)
  # The reference: CLIP-normalise image 1, encode, noise-augment with the same per-item noise draw.
  pixels = (x1 / 255.0 - np.array(pipe.clip_image.mean)) / np.array(pipe.clip_image.std)
  embeds = sd.encode_image(pipe, params, jnp.asarray(pixels, jnp.float32))
  k_noise = jax.vmap(lambda k: jax.random.fold_in(k, 2))(keys)
  noise = jax.vmap(lambda k: jax.random.normal(k, embeds.shape[1:]))(k_noise)
  want = sd.image_condition(pipe, params, embeds, 0, noise)
  np.testing.assert_allclose(cond.vector, want, atol=1e-5)
  np.testing.assert_array_equal(cond.lam, np.ones(3))
  # The image half is the (noised) embedding, the other half the noise-level embedding of level 0.
  np.testing.assert_allclose(cond.vector[:, pipe.image_embed_dim:], sd.noise_level_embedding(jnp.zeros(3), 32),
                             atol=1e-6)


def test_mixed_methods_select_each_items_own(unclip):
  pipe, params = unclip
  names = ("rand_img_cond", "cutmix", "embed_mixup_dropout", "mixup")
  methods = tuple(augment.get_method(n) for n in names)
  x1, x2 = _images(4, 48, 2), _images(4, 48, 3)
  keys = condition.item_keys(5, jnp.arange(4))
  mixed = _conditioned(pipe, params, methods, jnp.arange(4, dtype=jnp.int32), keys, x1, x2, 0)
  for i, m in enumerate(methods):
    alone = _conditioned(pipe, params, (m,), jnp.zeros(1, jnp.int32), keys[i:i + 1], x1[i:i + 1],
                                x2[i:i + 1], 0)
    np.testing.assert_allclose(mixed.vector[i], alone.vector[0], atol=1e-5)
    np.testing.assert_allclose(mixed.image[i], alone.image[0], atol=1e-6)
    assert float(mixed.lam[i]) == pytest.approx(float(alone.lam[0]))
  assert float(mixed.lam[0]) == 1.0 and 0 < float(mixed.lam[1]) < 1 and 0 < float(mixed.lam[2]) < 1
  # embed_mixup_dropout zeroes about 40% of the image embedding before noising, so it differs from rand_img_cond.
  assert float(jnp.max(jnp.abs(mixed.vector[2] - mixed.vector[0]))) > 1e-3


def test_noise_level_changes_the_vector(unclip):
  pipe, params = unclip
  x = _images(2, 32, 4)
  keys = condition.item_keys(0, jnp.arange(2))
  methods = (augment.get_method("rand_img_cond"),)
  a = _conditioned(pipe, params, methods, jnp.zeros(2, jnp.int32), keys, x, x, 0).vector
  b = _conditioned(pipe, params, methods, jnp.zeros(2, jnp.int32), keys, x, x, 500).vector
  assert float(jnp.max(jnp.abs(a - b))) > 0.1
