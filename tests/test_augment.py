"""Tests for jaxaug.augment: what each augmentation draws and that draws are per item."""

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaug import augment
from jaxaug.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]

# Jitted once per session: on CPU one compile beats op-by-op dispatch.
cutmix = jax.jit(augment.cutmix, static_argnames="alpha")
mixup = jax.jit(augment.mixup, static_argnames="alpha")
embed_mixup = jax.jit(augment.embed_mixup, static_argnames="alpha")
embed_cutmix = jax.jit(augment.embed_cutmix, static_argnames="alpha")
embed_dropout = jax.jit(augment.embed_dropout)
crop_boxes = jax.jit(jax.vmap(augment.crop_box, (0, None, None)), static_argnums=(1, 2))
cutmix_boxes = jax.jit(jax.vmap(augment.cutmix_box, (0, 0, None, None)), static_argnums=(2, 3))
resize_box = jax.jit(augment.resize_box, static_argnames="size")
random_resized_crop = jax.jit(augment.random_resized_crop, static_argnames="size")
flip = jax.jit(augment.flip)
color_jitter = jax.jit(augment.color_jitter)
train_augment = jax.jit(augment.train_augment, static_argnames="size")
apply_pixel = jax.jit(augment.apply_pixel, static_argnames=("method", "size"))
apply_embed = jax.jit(augment.apply_embed, static_argnames="method")


def item_keys(n, seed=0):
  """Per-item keys as the generator makes them: fold_in(key(seed), item_id)."""
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))


def constant_images(n, value, height=48, width=64):
  return jnp.full((n, height, width, 3), value, jnp.float32)


# Pixel mixing.


def test_cutmix_pastes_one_box_of_image2_with_the_returned_lam():
  height, width = 48, 64
  x, lam = cutmix(
      item_keys(64), constant_images(64, 0.25), constant_images(64, 0.75))
  x, lam = np.asarray(x), np.asarray(lam)
  assert set(np.unique(x)) <= {0.25, 0.75}
  pasted = x[..., 0] == 0.75
  assert (pasted[..., None] == (x == 0.75)).all()  # The box spans all channels.
  for box, item_lam in zip(pasted, lam):
    area = box.sum()
    assert area == round((1 - item_lam) * height * width)
    rows, cols = np.nonzero(box.any(1))[0], np.nonzero(box.any(0))[0]
    if area:  # A filled rectangle: its extent is its area.
      assert len(rows) * len(cols) == area
  assert 0.05 < lam.min() and lam.max() < 1 and lam.std() > 0.1


def test_cutmix_box_area_is_one_minus_lam_unless_clipped():
  height, width = 48, 64
  lams = jnp.tile(jnp.asarray([0.1, 0.3, 0.5, 0.7, 0.9]), 200)
  boxes = np.asarray(cutmix_boxes(item_keys(len(lams)), lams, height, width))
  top, left, bottom, right = boxes.T
  assert (0 <= top).all() and (top <= bottom).all() and (bottom <= height).all()
  assert (0 <= left).all() and (left <= right).all() and (right <= width).all()
  area = (bottom - top) * (right - left)
  wanted = (1 - np.asarray(lams)) * height * width
  rounding = 0.5 * (height + width) + 0.25
  assert (area <= wanted + rounding).all()
  inner = (top > 0) & (left > 0) & (bottom < height) & (right < width)
  assert inner.sum() > 100
  np.testing.assert_array_less(np.abs(area - wanted)[inner], rounding)


@pytest.mark.parametrize("mix,shape", [
    (mixup, (16, 8, 8, 3)), (embed_mixup, (16, 1024))])
def test_mixup_is_the_exact_convex_combination(mix, shape):
  x1 = jax.random.uniform(jax.random.key(1), shape)
  x2 = jax.random.uniform(jax.random.key(2), shape)
  x, lam = mix(item_keys(shape[0]), x1, x2)
  lam_b = np.asarray(lam).reshape((-1,) + (1,) * (len(shape) - 1))
  np.testing.assert_allclose(
      x, lam_b * np.asarray(x1) + (1 - lam_b) * np.asarray(x2), rtol=1e-6, atol=1e-7)
  assert ((0 < lam) & (lam < 1)).all() and np.std(lam) > 0.1


def test_lam_follows_beta_alpha():
  keys = item_keys(2000)
  x = jnp.zeros((2000, 4))
  _, lam_uniform = embed_mixup(keys, x, x)
  _, lam_peaked = embed_mixup(keys, x, x, alpha=50.0)
  assert abs(np.var(lam_uniform) - 1 / 12) < 0.01  # Beta(1, 1) is uniform.
  assert np.std(lam_peaked) < 0.1 and abs(np.mean(lam_peaked) - 0.5) < 0.01


# Embedding augmentations.


def test_embed_cutmix_takes_the_first_round_dims_from_e2():
  n, d = 64, 1024
  e, lam = embed_cutmix(item_keys(n), jnp.ones((n, d)), jnp.full((n, d), 2.0))
  e, lam = np.asarray(e), np.asarray(lam)
  from_e2 = (e == 2).sum(1)
  np.testing.assert_array_equal(from_e2, np.round((1 - lam) * d))
  np.testing.assert_array_equal(e, np.where(np.arange(d) < from_e2[:, None], 2.0, 1.0))
  assert from_e2.min() < d // 4 and from_e2.max() > 3 * d // 4


def test_embed_cutmix_rounds_the_cut():
  # lam is 0.5 to within 1e-3, so 5 of 10 dims: a floor or ceil would give 4 or 6.
  n, d = 256, 10
  e, _ = embed_cutmix(
      item_keys(n), jnp.ones((n, d)), jnp.full((n, d), 2.0), alpha=1e6)
  np.testing.assert_array_equal((np.asarray(e) == 2).sum(1), 5)


def test_embed_dropout_zeroes_forty_percent_without_rescaling():
  n, d = 64, 1024
  e = jax.random.uniform(jax.random.key(3), (n, d), minval=1.0, maxval=2.0)
  out = np.asarray(embed_dropout(item_keys(n), e))
  zeroed = out == 0
  count, p = n * d, 0.4
  assert abs(zeroed.sum() - p * count) < 4 * np.sqrt(count * p * (1 - p))
  np.testing.assert_array_equal(out[~zeroed], np.asarray(e)[~zeroed])
  assert 0.3 < zeroed.mean(1).min() and zeroed.mean(1).max() < 0.5  # Per item too.


# Crops, flips, colour jitter.


def check_boxes_in_bounds(boxes, height, width):
  top, left, h, w = np.asarray(boxes, np.float64).T
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + h <= height).all() and (left + w <= width).all()
  # Area fraction and aspect within range, up to rounding the sides to pixels.
  assert ((h + 0.5) * (w + 0.5) >= 0.08 * height * width).all()
  assert ((h - 0.5) * (w - 0.5) <= height * width).all()
  assert ((w + 0.5) / (h - 0.5) >= 3 / 4).all()
  assert ((w - 0.5) / (h + 0.5) <= 4 / 3).all()


@pytest.mark.parametrize("height,width", [(64, 64), (48, 60)])
def test_crop_box_draws_area_and_ratio_within_range(height, width):
  boxes = np.asarray(crop_boxes(item_keys(2000), height, width))
  check_boxes_in_bounds(boxes, height, width)
  top, left, h, w = boxes.T
  fraction, aspect = h * w / (height * width), w / h
  assert fraction.min() < 0.12 and fraction.max() > 0.9
  assert aspect.min() < 0.8 and aspect.max() > 1.25
  assert len(np.unique(top)) > 10 and len(np.unique(left)) > 10


def test_crop_box_falls_back_to_a_centre_crop():
  # A 16x256 strip: few draws fit, so many items take the fallback.
  height, width = 16, 256
  boxes = np.asarray(crop_boxes(item_keys(500), height, width))
  fallback = (boxes == [0, (256 - 21) // 2, 16, 21]).all(1)  # h=16, w=round(16*4/3).
  assert 0.5 < fallback.mean() < 1
  check_boxes_in_bounds(boxes[~fallback], height, width)


def ramp_image(height, width):
  """Channel 0 = column index, 1 = row index: bilinear sampling reproduces it exactly."""
  rows, cols = np.mgrid[:height, :width].astype(np.float32)
  return jnp.asarray(np.stack([cols, rows, np.zeros_like(rows)], -1))


@pytest.mark.parametrize("box", [(10, 20, 16, 24), (8, 12, 48, 40)])
def test_resize_box_samples_the_box(box):
  size = 16 if box[2] > 16 else 32  # Down- and upsampling.
  out = np.asarray(resize_box(ramp_image(64, 64), jnp.asarray(box), size))
  top, left, h, w = box
  centres = np.arange(size) + 0.5
  # Antialiasing weights are not symmetric about every sample: allow 0.02 px.
  np.testing.assert_allclose(out[0, :, 0], left + centres * w / size - 0.5, atol=0.02)
  np.testing.assert_allclose(out[:, 0, 1], top + centres * h / size - 0.5, atol=0.02)


def test_resize_box_antialiases():
  # Point sampling a one-pixel checkerboard at a third of the size keeps 0/1 values.
  checker = (np.indices((48, 48)).sum(0) % 2).astype(np.float32)
  image = jnp.asarray(np.repeat(checker[..., None], 3, -1))
  out = np.asarray(resize_box(image, jnp.asarray([0, 0, 48, 48]), 16))
  assert np.abs(out - 0.5).max() < 0.15


def test_random_resized_crop_resamples_the_drawn_box():
  keys, images = item_keys(4), jax.random.uniform(jax.random.key(4), (4, 48, 64, 3))
  boxes = crop_boxes(keys, 48, 64)
  want = jax.jit(jax.vmap(augment.resize_box, (0, 0, None)), static_argnums=2)(images, boxes, 32)
  got = random_resized_crop(keys, images, size=32)
  assert got.shape == (4, 32, 32, 3)
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_flip_mirrors_about_half_the_items():
  images = jnp.broadcast_to(ramp_image(8, 8), (200, 8, 8, 3))
  out = np.asarray(flip(item_keys(200), images))
  flipped = (out == np.asarray(images)[:, :, ::-1]).all((1, 2, 3))
  kept = (out == np.asarray(images)).all((1, 2, 3))
  assert (flipped ^ kept).all()
  assert 0.35 < flipped.mean() < 0.65


def test_color_jitter_factors_and_range():
  n = 500
  # On a flat grey image contrast and saturation are no-ops: the value is 0.5 * brightness.
  flat = np.asarray(color_jitter(item_keys(n), constant_images(n, 0.5, 4, 4)))
  assert (flat == flat[:, :1, :1, :1]).all()
  assert 0.3 - 1e-6 <= flat.min() < 0.33 and 0.67 < flat.max() <= 0.7 + 1e-6
  images = jax.random.uniform(jax.random.key(5), (16, 8, 8, 3))
  out = np.asarray(color_jitter(item_keys(16), images))
  assert out.min() >= 0 and out.max() <= 1
  assert not np.allclose(out, images, atol=0.02)
  grey = jnp.repeat(images[..., :1], 3, -1)  # No jitter puts colour into a grey image.
  out = np.asarray(color_jitter(item_keys(16), grey))
  np.testing.assert_allclose(out, np.repeat(out[..., :1], 3, -1), atol=1e-6)


def test_train_augment_crops_flips_and_jitters():
  images = jax.random.uniform(jax.random.key(6), (8, 48, 64, 3))
  out = np.asarray(train_augment(item_keys(8), images, size=32))
  assert out.shape == (8, 32, 32, 3) and out.min() >= 0 and out.max() <= 1
  same = train_augment(item_keys(8), images, size=32)
  np.testing.assert_array_equal(out, same)


def test_to_float():
  images = np.array([[[[0, 128, 255]]]], np.uint8)
  np.testing.assert_allclose(augment.to_float(images), [[[[0, 128 / 255, 1]]]])


# Methods.


def test_registry_has_the_ten_methods():
  assert set(augment.METHODS) == {
      "rand_img_cond", "dropout", "cutmix", "mixup", "embed_cutmix", "embed_mixup",
      "cutmix_dropout", "mixup_dropout", "embed_cutmix_dropout", "embed_mixup_dropout"}
  for name, m in augment.METHODS.items():
    assert m.name == name
    base = name.removesuffix("_dropout")
    assert m.dropout == (name != base or name == "dropout")
    assert m.pixel == (base if base in ("cutmix", "mixup") else None)
    assert m.embed == (base if base.startswith("embed_") else None)


def test_unknown_method_is_a_user_error_listing_the_valid_ones():
  with pytest.raises(UserError) as error:
    augment.get_method("cut_mix")
  message = str(error.value)
  assert "cut_mix" in message and "\n" not in message
  for name in augment.METHODS:
    assert name in message
  with pytest.raises(UserError, match="alpha"):
    augment.get_method("mixup", alpha=0)
  assert augment.get_method("mixup", alpha=0.4).alpha == 0.4


def test_unmixed_methods_pass_image_one_through_uncropped():
  keys = item_keys(4)
  x1, x2 = constant_images(4, 0.25), constant_images(4, 0.75)
  e1, e2 = jnp.ones((4, 32)), jnp.full((4, 32), 2.0)
  for name in ("rand_img_cond", "dropout", "embed_cutmix", "embed_mixup_dropout"):
    x, lam = augment.apply_pixel(augment.get_method(name), keys, x1, x2)
    assert x is x1 and (np.asarray(lam) == 1).all()
  e, lam = apply_embed(augment.get_method("rand_img_cond"), keys, e1, e2)
  np.testing.assert_array_equal(e, e1)
  assert (np.asarray(lam) == 1).all()
  e, lam = apply_embed(augment.get_method("dropout"), keys, e1, e2)
  assert set(np.unique(e)) == {0.0, 1.0} and (np.asarray(lam) == 1).all()


def test_pixel_methods_crop_then_mix():
  keys = item_keys(8)
  x1, x2 = constant_images(8, 0.25), constant_images(8, 0.75)
  for name in ("cutmix", "mixup"):
    x, lam = apply_pixel(augment.get_method(name), keys, x1, x2, 32)
    assert x.shape == (8, 32, 32, 3) and (np.asarray(lam) < 1).all()
    share_of_x1 = (0.75 - np.asarray(x)) / 0.5  # Crops of flat images stay flat.
    np.testing.assert_allclose(share_of_x1.mean((1, 2, 3)), lam, atol=1e-5)
    if name == "mixup":
      np.testing.assert_allclose(share_of_x1, np.broadcast_to(
          np.asarray(lam)[:, None, None, None], x.shape), atol=1e-5)


def test_dropout_variants_share_lam_with_their_base_method():
  keys, e1, e2 = item_keys(8), jnp.ones((8, 64)), jnp.full((8, 64), 2.0)
  e, lam = apply_embed(augment.get_method("embed_cutmix"), keys, e1, e2)
  e_drop, lam_drop = apply_embed(augment.get_method("embed_cutmix_dropout"), keys, e1, e2)
  np.testing.assert_array_equal(lam, lam_drop)
  kept = np.asarray(e_drop) != 0
  np.testing.assert_array_equal(np.asarray(e)[kept], np.asarray(e_drop)[kept])
  assert 0.2 < 1 - kept.mean() < 0.6


# Keys: reproducible, per item, independent of batch and devices.


def test_same_key_same_output_and_items_draw_independently():
  method = augment.get_method("cutmix")
  x1 = constant_images(8, 0.25)
  x2 = jnp.broadcast_to(ramp_image(48, 64) / 64, (8, 48, 64, 3))
  x, lam = apply_pixel(method, item_keys(8), x1, x2, 32)
  again, lam_again = apply_pixel(method, item_keys(8), x1, x2, 32)
  np.testing.assert_array_equal(x, again)
  np.testing.assert_array_equal(lam, lam_again)
  assert len(np.unique(lam)) == 8
  flat = np.asarray(x).reshape(8, -1)
  assert all(not np.array_equal(flat[i], flat[j]) for i in range(8) for j in range(i))
  # An item's result does not depend on the rest of the batch.
  alone, lam_alone = apply_pixel(method, item_keys(8)[5:6], x1[:1], x2[:1], 32)
  np.testing.assert_allclose(alone[0], x[5], atol=1e-6)
  assert lam_alone[0] == lam[5]
  other_seed, _ = apply_pixel(method, item_keys(8, seed=1), x1, x2, 32)
  assert not np.array_equal(x, other_seed)


def batch_outputs(put):
  """Outputs of jitted augmentations on a fixed batch of 8 placed by `put`.

  Shapes match the tests above so this process reuses their compilations.
  """
  rng = np.random.default_rng(0)
  keys = put(item_keys(8))
  x1 = put(jnp.asarray(rng.uniform(size=(8, 48, 64, 3)), jnp.float32))
  x2 = put(jnp.asarray(rng.uniform(size=(8, 48, 64, 3)), jnp.float32))
  e1 = put(jnp.asarray(rng.normal(size=(8, 64)), jnp.float32))
  e2 = put(jnp.asarray(rng.normal(size=(8, 64)), jnp.float32))
  out = {}
  out["pixel"], out["pixel_lam"] = apply_pixel(augment.get_method("cutmix"), keys, x1, x2, 32)
  out["embed"], out["embed_lam"] = apply_embed(
      augment.get_method("embed_cutmix_dropout"), keys, e1, e2)
  out["train"] = train_augment(keys, x1, size=32)
  return out


SHARDED = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    sys.path.insert(0, sys.argv[1])
    from test_augment import batch_outputs
    assert jax.device_count() == 4, jax.devices()

    def sharded_outputs(mesh):
      sharding = NamedSharding(mesh, P("data"))
      out = batch_outputs(lambda x: jax.device_put(x, sharding))
      for value in out.values():  # Each device really holds its own quarter.
        assert len({str(s.index) for s in value.addressable_shards}) == 4, value.sharding
      return {k: np.asarray(v) for k, v in out.items()}

    # jaxaug.mesh uses Auto axes; make_mesh's default is Explicit, traced under set_mesh.
    auto = sharded_outputs(jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,)))
    explicit = jax.make_mesh((4,), ("data",))
    with jax.set_mesh(explicit):
      out = sharded_outputs(explicit)
    for name in out:
      np.testing.assert_array_equal(auto[name], out[name], err_msg=name)
    np.savez(sys.argv[2], **out)
""")


def test_sharded_over_four_devices_matches_one_device(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
             JAX_COMPILATION_CACHE_DIR=os.path.expanduser("~/.cache/jaxaug-tests/jax"))
  result = subprocess.run(
      [sys.executable, "-c", SHARDED, str(REPO / "tests"), str(tmp_path / "sharded.npz")],
      env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  sharded = np.load(tmp_path / "sharded.npz")
  single = batch_outputs(lambda x: x)
  assert set(sharded) == set(single)
  for name, value in single.items():
    if name in ("pixel", "train"):
      # Same draws; resampling sums may round differently for another batch split.
      np.testing.assert_allclose(sharded[name], value, atol=1e-6, err_msg=name)
    else:  # Draws and embedding mixes are exact.
      np.testing.assert_array_equal(sharded[name], value, err_msg=name)


def test_fewshot_rotation_bounds_and_flip():
  # A single bright pixel right of centre: rotation by theta moves it on a circle, by at most 15 degrees.
  size = 33
  image = jnp.zeros((1, size, size, 3)).at[0, 16, 28, :].set(1.0)
  keys = jax.random.split(jax.random.key(0), 64)
  out = augment.fewshot_augment(keys, jnp.repeat(image, 64, axis=0))
  assert out.shape == (64, size, size, 3)
  angles = []
  for img in np.asarray(out):
    y, x = np.unravel_index(np.argmax(img[..., 0]), img.shape[:2])
    angles.append(np.degrees(np.arctan2(-(y - 16), abs(x - 16))))  # flips mirror x; the angle keeps its size
  angles = np.asarray(angles)
  assert np.all(np.abs(angles) <= 15 + 5)  # +-15 degrees, one pixel of rounding at radius 12
  assert np.abs(angles).max() > 8  # and it does rotate
  flipped = np.asarray(out)[..., 0].reshape(64, -1).argmax(1) % size < 16
  assert 10 < flipped.sum() < 54  # about half are mirrored
  np.testing.assert_allclose(augment.fewshot_augment(keys[:1], image), out[:1])  # same key, same output
