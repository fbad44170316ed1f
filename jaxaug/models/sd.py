"""The model-level functions of Stable Diffusion and its unCLIP variant, as pure functions of params.

The sampler composes these inside one jit; nothing here leaves the device. Layouts: latents NCHW (the
checkpoint's), images NHWC float in [0, 1].
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxaug.models.pipeline import Pipeline


def tokenize(pipe: Pipeline, prompts: list[str]) -> np.ndarray:
  """Prompts -> int32 token ids (B, max_length), padded and truncated as diffusers does."""
  return pipe.tokenizer(prompts)


def encode_text(pipe: Pipeline, params, input_ids):
  """Token ids -> the UNet's cross-attention context (last hidden state of the CLIP text tower)."""
  return pipe.text_encoder.apply({"params": params["text_encoder"]}, input_ids)


def encode_image(pipe: Pipeline, params, pixel_values):
  """CLIP-preprocessed pixels (B, H, W, 3) -> image embeddings (B, d), computed in fp32 at the output."""
  return pipe.image_encoder.apply({"params": params["image_encoder"]}, pixel_values).astype(jnp.float32)


def noise_level_embedding(noise_level, dim: int):
  """Sinusoidal embedding of the image noise level: cos half first, no frequency shift (as SD unCLIP)."""
  half = dim // 2
  freqs = jnp.exp(-jnp.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = jnp.asarray(noise_level, jnp.float32).reshape(-1, 1) * freqs[None]
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


def image_condition(pipe: Pipeline, params, image_embeds, noise_level, noise):
  """The unCLIP conditioning vector (B, 2d) from image embeddings (B, d).

  Normalise with the checkpoint's per-dimension mean/std, noise at `noise_level` with the image-noising
  DDPM schedule, un-normalise, and append the noise level's sinusoidal embedding. All in fp32.
  `noise_level` is an int array (B,) or scalar; `noise` has the shape of `image_embeds`.
  """
  mean, std = params["image_normalizer"]["mean"], params["image_normalizer"]["std"]
  x = (image_embeds.astype(jnp.float32) - mean) / std
  level = jnp.broadcast_to(jnp.asarray(noise_level, jnp.int32), x.shape[:1])
  alpha = jnp.asarray(pipe.noising_alphas_cumprod)[level][:, None]
  x = jnp.sqrt(alpha) * x + jnp.sqrt(1.0 - alpha) * noise.astype(jnp.float32)
  x = x * std + mean
  return jnp.concatenate([x, noise_level_embedding(level, x.shape[-1])], axis=-1)


def predict(pipe: Pipeline, params, latents, timesteps, context, image_vector=None):
  """One UNet evaluation: noise (or v) prediction for latents (B, C, h, w) at `timesteps` (B,)."""
  out = pipe.unet.apply({"params": params["unet"]}, latents.astype(pipe.dtype), timesteps, context, image_vector)
  return out.astype(jnp.float32)


def decode(pipe: Pipeline, params, latents):
  """Latents (B, C, h, w) -> the VAE decoder's raw output (B, 3, H, W), about [-1, 1]."""
  out = pipe.vae.apply({"params": params["vae"]}, latents / pipe.vae_scale, method="decode")
  return out.astype(jnp.float32)


def encode(pipe: Pipeline, params, images, key):
  """Images (B, 3, H, W) in [-1, 1] -> scaled latents sampled from the VAE posterior (img2img start)."""
  posterior = pipe.vae.apply({"params": params["vae"]}, images, method="encode")
  latents = jnp.transpose(posterior.sample(key), (0, 3, 1, 2))  # the posterior is over NHWC latents
  return (latents * pipe.vae_scale).astype(jnp.float32)


def to_pixels(decoded):
  """The decoder's NCHW output -> NHWC float images in [0, 1]."""
  return jnp.clip(jnp.transpose(decoded, (0, 2, 3, 1)) / 2 + 0.5, 0.0, 1.0)


def unconditional_image_vector(batch: int, dim: int):
  """The classifier-free-guidance branch's image vector: all zeros, noise-level half included."""
  return jnp.zeros((batch, dim), jnp.float32)


__all__ = ["tokenize", "encode_text", "encode_image", "noise_level_embedding", "image_condition", "predict",
           "decode", "encode", "to_pixels", "unconditional_image_vector"]
