"""The Flax side against PyTorch diffusers 0.39.0 on the tiny unCLIP checkpoint (fp32).

Reference outputs come from tests/make_golden.py (the only torch user); see the README's developer section.
"""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaug.models import load, sd, tiny
from jaxaug.sampler import SamplerSpec, denoise

GOLDEN = np.load(Path(__file__).parent / "golden" / "unclip.npz")


@pytest.fixture(scope="module")
def unclip(tmp_path_factory):
  root = tiny.write_tiny(tmp_path_factory.mktemp("ckpt") / "tiny-unclip", "unclip", seed=0)
  assert tiny.checkpoint_digest(root) == str(GOLDEN["checkpoint_sha256"]), (
      "the tiny checkpoint differs from the one the golden file was made with; rerun tests/make_golden.py")
  return load(str(root), jnp.float32)


def _err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _nhwc(x):
  return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


def test_tokenizer_matches(unclip):
  pipe, _ = unclip
  assert np.array_equal(sd.tokenize(pipe, ["a photo of a red circle", "blue stripes"]), GOLDEN["input_ids"])
  assert np.array_equal(sd.tokenize(pipe, ["", ""]), GOLDEN["empty_ids"])


def test_text_and_image_encoders(unclip):
  pipe, params = unclip
  assert _err(sd.encode_text(pipe, params, GOLDEN["input_ids"].astype(np.int32)), GOLDEN["text_hidden"]) < 1e-5
  assert _err(sd.encode_text(pipe, params, GOLDEN["empty_ids"].astype(np.int32)), GOLDEN["uncond_text_hidden"]) < 1e-5
  assert _err(sd.encode_image(pipe, params, _nhwc(GOLDEN["pixel_values"])), GOLDEN["image_embeds"]) < 1e-5


@pytest.mark.parametrize("level", [0, 100])
def test_noise_augmented_image_vector(unclip, level):
  pipe, params = unclip
  vec = sd.image_condition(pipe, params, jnp.asarray(GOLDEN["image_embeds"]), level, jnp.asarray(GOLDEN["embed_noise"]))
  assert vec.shape == (2, 2 * pipe.image_embed_dim)
  assert _err(vec, GOLDEN[f"image_vector_{level}"]) < 1e-5


@pytest.mark.parametrize("attention", ["xla", "einsum"])
def test_guided_unet_output(unclip, attention):
  pipe, params = unclip
  pipe = dataclasses.replace(pipe, attention=attention)  # jax.nn.dot_product_attention, or diffusers' own
  lat = jnp.asarray(GOLDEN["latents"])
  vec = jnp.asarray(GOLDEN["image_vector_0"])
  x = jnp.concatenate([lat, lat])
  ctx = jnp.concatenate([GOLDEN["uncond_text_hidden"], GOLDEN["text_hidden"]])
  vecs = jnp.concatenate([sd.unconditional_image_vector(2, vec.shape[-1]), vec])
  out = sd.predict(pipe, params, x, jnp.full((4,), int(GOLDEN["unet_t"])), ctx, vecs)
  uncond, cond = jnp.split(out, 2)
  guided = uncond + float(GOLDEN["guidance"]) * (cond - uncond)
  assert _err(guided, GOLDEN["unet_guided"]) < 2e-5
  # The image vector matters: a zero vector in the conditional branch gives a different output.
  assert _err(cond, uncond) > 1e-3


def test_vae_decode(unclip):
  pipe, params = unclip
  assert _err(sd.decode(pipe, params, jnp.asarray(GOLDEN["latents"])), GOLDEN["vae_decoded"]) < 2e-5


@pytest.mark.parametrize("scheduler", ["pndm", "ddim", "dpm++"])
def test_three_step_sample(unclip, scheduler):
  pipe, params = unclip
  spec = SamplerSpec(mode="unclip", scheduler=scheduler, steps=3, guidance=float(GOLDEN["guidance"])).check(pipe)
  state = pipe.make_scheduler(scheduler)
  state = state.set_timesteps(state.create_state(), 3, GOLDEN["latents"].shape)
  assert np.array_equal(np.asarray(state.timesteps), GOLDEN[f"{scheduler}_timesteps"])

  @jax.jit
  def run(params, ids, empty_ids, pixels, noise, latents):
    embeds = sd.encode_image(pipe, params, pixels)
    vec = sd.image_condition(pipe, params, embeds, 0, noise)
    lat = denoise(pipe, params, spec, latents, sd.encode_text(pipe, params, ids),
                  sd.encode_text(pipe, params, empty_ids), vec)
    return sd.to_pixels(sd.decode(pipe, params, lat))

  images = run(params, GOLDEN["input_ids"].astype(np.int32), GOLDEN["empty_ids"].astype(np.int32),
               _nhwc(GOLDEN["pixel_values"]), jnp.asarray(GOLDEN[f"{scheduler}_embed_noise"]),
               jnp.asarray(GOLDEN["latents"]))
  assert images.shape == GOLDEN[f"{scheduler}_images"].shape
  assert _err(images, GOLDEN[f"{scheduler}_images"]) < 1e-4  # the issue asks < 1e-3; we measure ~3e-6
