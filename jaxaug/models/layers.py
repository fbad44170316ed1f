"""Building blocks the UNet and the VAE share, NHWC, with the checkpoints' parameter names.

Numerics follow PyTorch diffusers (the reference the parity tests hold us to): GroupNorm statistics in
fp32, exact SiLU, nearest-neighbour 2x upsampling.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


class GroupNorm(nn.Module):
  """GroupNorm over NHWC (or (B, T, C)) with fp32 statistics; params `scale` and `bias` as flax's."""
  groups: int = 32
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    per_group = (1, 1, self.groups, c // self.groups)
    g = x.astype(jnp.float32).reshape(x.shape[0], -1, *per_group[2:])
    # One pass over the activations (sum and sum of squares together, in fp32): GroupNorm is memory-bound
    # on a GPU, and a second pass for the centred variance would read every activation twice.
    mean = g.mean(axis=(1, 3), keepdims=True)
    var = jnp.maximum(jnp.square(g).mean(axis=(1, 3), keepdims=True) - jnp.square(mean), 0.0)
    mul = jax.lax.rsqrt(var + self.epsilon) * scale.astype(jnp.float32).reshape(per_group)  # per (row, channel)
    y = (g - mean) * mul + bias.astype(jnp.float32).reshape(per_group)
    return y.reshape(x.shape).astype(x.dtype)


def conv(features: int, kernel: int, dtype, name: str, stride: int = 1, padding=1):
  """A PyTorch-style Conv2d: symmetric `padding` on both sides (or 'VALID')."""
  pad = padding if isinstance(padding, str) else ((padding, padding), (padding, padding))
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=pad, dtype=dtype, name=name)


class ResnetBlock(nn.Module):
  """ResnetBlock2D: norm -> SiLU -> conv, (+ projected time embedding), norm -> SiLU -> conv, + shortcut.

  The VAE's blocks have no time embedding (temb None) and eps 1e-6; the UNet's take the config's norm_eps.
  """
  out_channels: int
  groups: int = 32
  epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, temb=None):
    h = nn.silu(GroupNorm(self.groups, self.epsilon, name="norm1")(x))
    h = conv(self.out_channels, 3, self.dtype, "conv1")(h)
    if temb is not None:
      t = nn.Dense(self.out_channels, dtype=self.dtype, name="time_emb_proj")(nn.silu(temb))
      h = h + t[:, None, None, :]
    h = nn.silu(GroupNorm(self.groups, self.epsilon, name="norm2")(h))
    h = conv(self.out_channels, 3, self.dtype, "conv2")(h)
    if x.shape[-1] != self.out_channels:
      x = conv(self.out_channels, 1, self.dtype, "conv_shortcut", padding="VALID")(x)
    return x + h


class Downsample(nn.Module):
  """A stride-2 3x3 conv. The UNet pads 1 on every side; the VAE encoder pads only bottom and right."""
  channels: int
  asymmetric: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.asymmetric:
      x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
      return conv(self.channels, 3, self.dtype, "conv", stride=2, padding="VALID")(x)
    return conv(self.channels, 3, self.dtype, "conv", stride=2)(x)


class Upsample(nn.Module):
  """Nearest-neighbour 2x (each pixel repeated: exact, no resize kernel) then a 3x3 conv."""
  channels: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
    return conv(self.channels, 3, self.dtype, "conv")(x)


def sinusoidal_embedding(timesteps, dim: int, flip_sin_to_cos: bool, freq_shift: float, max_period: float = 10000.0):
  """diffusers' get_timestep_embedding: (B,) -> (B, dim) fp32, [sin, cos] (or [cos, sin] when flipped)."""
  half = dim // 2
  exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
  angles = jnp.asarray(timesteps, jnp.float32).reshape(-1, 1) * jnp.exp(exponent)[None]
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class TimestepEmbedding(nn.Module):
  """Dense -> SiLU -> Dense: the timestep embedding and unCLIP's projection class embedding alike."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(self.features, dtype=self.dtype, name="linear_1")(x)
    return nn.Dense(self.features, dtype=self.dtype, name="linear_2")(nn.silu(x))
