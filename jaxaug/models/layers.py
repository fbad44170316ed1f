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


def conv(features: int, kernel: int, dtype, name: str, stride: int = 1, padding=1, dots: str = "native"):
  """A PyTorch-style Conv2d: symmetric `padding` on both sides (or 'VALID').

  `dots` is the models' matmul and convolution form (attention.DOTS, resolved): "fp32_results" computes the
  convolution as `conv_form` says (row_dots: the same parameters, the same sums in another order).
  """
  pad = padding if isinstance(padding, str) else ((padding, padding), (padding, padding))
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=pad, dtype=dtype, name=name,
                 conv_general_dilated=conv_form(dtype, dots))


def conv_form(dtype, dots: str):
  """nn.Conv's `conv_general_dilated` for a resolved `dots` form. fp32_results: row_dots in a non-fp32 model;
  in an fp32 one only where the kernel dwarfs the input (`rows_where_the_kernel_dwarfs_the_input`). native:
  None (XLA's convolution)."""
  if dots != "fp32_results":
    return None
  return rows_where_the_kernel_dwarfs_the_input if jnp.dtype(dtype) == jnp.dtype(jnp.float32) else row_dots


_NHWC = jax.lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))


# Above this many kernel elements per input element, row_dots batches its rows (see there), and an fp32
# convolution is row_dots rather than XLA's (rows_where_the_kernel_dwarfs_the_input).
ROWS_BATCHED_ABOVE = 32


def kernel_dwarfs_input(x, kernel) -> bool:
  """More than ROWS_BATCHED_ABOVE kernel elements per input element: where the weights dominate the cost."""
  return kernel.size > ROWS_BATCHED_ABOVE * x.size


def rows_where_the_kernel_dwarfs_the_input(x, kernel, *args, **kwargs):
  """An fp32 convolution: row_dots where the kernel dwarfs the input, XLA's convolution elsewhere.

  Why: in fp32, XLA:CPU's convolution is 2-2.6x slower than the batched row dots where the weights dominate
  (SD's UNet at 8x8 and 4x4 latents, a few images at a time) and 1.3-2.6x faster where the activations do
  (the UNet's larger levels, the VAE); measured per shape in docs/benchmarks.md.
  """
  if kernel_dwarfs_input(x, kernel):
    return row_dots(x, kernel, *args, **kwargs)
  return jax.lax.conv_general_dilated(x, kernel, *args, **kwargs)


def row_dots(x, kernel, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
             feature_group_count=1, precision=None):
  """An NHWC convolution as matmuls that ask for fp32 results, one per kernel row, summed in fp32 and rounded
  once to the inputs' dtype (`lax.conv_general_dilated`'s signature, for nn.Conv).

  Why: XLA:CPU compiles a bf16 convolution as conversions to fp32 around an fp32 convolution, and a bf16
  matmul asking for fp32 results is the one form it runs in bf16 (AVX512-BF16, AMX). The input, shifted
  once per kernel column, is stacked on channels and sliced once per kernel row; each slice is contracted
  with that row's (column, channel) slab of the kernel. Slicing the kernel copies its weights on every call,
  which costs most where the kernel dwarfs the input (SD's UNet at 8x8 and 4x4 latents); there the row
  slices of the input are stacked instead and one dot, batched over the rows, takes the kernel only
  reshaped. Measured per form at SD's shapes in docs/benchmarks.md. Dilated or grouped convolutions (none in
  these models) stay XLA's.
  """
  kh, kw, c_in, c_out = kernel.shape
  plain = (feature_group_count == 1 and dimension_numbers == _NHWC
           and all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))))
  if not plain:
    return jax.lax.conv_general_dilated(x, kernel, window_strides, padding, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                        feature_group_count=feature_group_count, precision=precision)
  batched = kernel_dwarfs_input(x, kernel)
  sh, sw = window_strides
  pads = ((0, 0), (0, 0)) if padding == "VALID" else tuple(tuple(p) for p in padding)
  x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  columns = jnp.concatenate([x[:, :, j:j + sw * (out_w - 1) + 1:sw] for j in range(kw)], axis=-1)
  rows = [columns[:, i:i + sh * (out_h - 1) + 1:sh] for i in range(kh)]  # each (B, H, W, kw * c_in)
  slabs = kernel.reshape(kh, kw * c_in, c_out)
  if batched:
    out = jax.lax.dot_general(jnp.stack(rows), slabs, (((4,), (1,)), ((0,), (0,))),
                              preferred_element_type=jnp.float32).sum(axis=0)
  else:
    out = sum(jnp.einsum("bhwc,cd->bhwd", row, slab, preferred_element_type=jnp.float32)
              for row, slab in zip(rows, slabs))
  return out.astype(x.dtype)


class ResnetBlock(nn.Module):
  """ResnetBlock2D: norm -> SiLU -> conv, (+ projected time embedding), norm -> SiLU -> conv, + shortcut.

  The VAE's blocks have no time embedding (temb None) and eps 1e-6; the UNet's take the config's norm_eps.
  """
  out_channels: int
  groups: int = 32
  epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"  # the convolutions' form (see conv)

  @nn.compact
  def __call__(self, x, temb=None):
    h = nn.silu(GroupNorm(self.groups, self.epsilon, name="norm1")(x))
    h = conv(self.out_channels, 3, self.dtype, "conv1", dots=self.dots)(h)
    if temb is not None:
      t = nn.Dense(self.out_channels, dtype=self.dtype, name="time_emb_proj")(nn.silu(temb))
      h = h + t[:, None, None, :]
    h = nn.silu(GroupNorm(self.groups, self.epsilon, name="norm2")(h))
    h = conv(self.out_channels, 3, self.dtype, "conv2", dots=self.dots)(h)
    if x.shape[-1] != self.out_channels:
      x = conv(self.out_channels, 1, self.dtype, "conv_shortcut", padding="VALID", dots=self.dots)(x)
    return x + h


class Downsample(nn.Module):
  """A stride-2 3x3 conv. The UNet pads 1 on every side; the VAE encoder pads only bottom and right."""
  channels: int
  asymmetric: bool = False
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x):
    if self.asymmetric:
      x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
      return conv(self.channels, 3, self.dtype, "conv", stride=2, padding="VALID", dots=self.dots)(x)
    return conv(self.channels, 3, self.dtype, "conv", stride=2, dots=self.dots)(x)


class Upsample(nn.Module):
  """Nearest-neighbour 2x (each pixel repeated: exact, no resize kernel) then a 3x3 conv."""
  channels: int
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
    return conv(self.channels, 3, self.dtype, "conv", dots=self.dots)(x)


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
