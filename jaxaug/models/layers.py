"""Building blocks the UNet and the VAE share, NHWC, with the checkpoints' parameter names.

Numerics follow PyTorch diffusers (the reference the parity tests hold us to): GroupNorm statistics in
fp32, exact SiLU, nearest-neighbour 2x upsampling.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxaug.models.attention import dense


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
    g = x.astype(jnp.float32).reshape(x.shape[0], -1, c)
    # One pass over the activations (sum and sum of squares together, in fp32): GroupNorm is memory-bound
    # on a GPU, and a second pass for the centred variance would read every activation twice.
    mean, mean_square = _group_moments(g, self.groups)
    g = g.reshape(x.shape[0], -1, *per_group[2:])
    var = jnp.maximum(mean_square - jnp.square(mean), 0.0)
    mul = jax.lax.rsqrt(var + self.epsilon) * scale.astype(jnp.float32).reshape(per_group)  # per (row, channel)
    y = (g - mean) * mul + bias.astype(jnp.float32).reshape(per_group)
    return y.reshape(x.shape).astype(x.dtype)


def _group_moments(x, groups: int):
  """(B, N, C) fp32 -> each group's mean and mean square, shaped (B, 1, groups, 1) to broadcast over
  (B, N, groups, C // groups).

  Why: summed over N per channel first (in blocks of N // 16 and then over the blocks), the reductions keep
  the channels contiguous and vectorise; reducing over N and the channels within a group at once measured
  10-30x slower on XLA:CPU (the VAE's GroupNorms at 256 px: 150 ms a decode)."""
  b, n, c = x.shape
  blocks = math.gcd(n, 16)
  x = x.reshape(b, blocks, n // blocks, c)
  sums = [v.sum(axis=2).sum(axis=1).reshape(b, 1, groups, c // groups).sum(axis=3, keepdims=True)
          for v in (x, jnp.square(x))]
  return sums[0] / (n * c // groups), sums[1] / (n * c // groups)


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


# Up to this many kernel elements per input element, row_dots takes one dot against every kernel row at once
# (the kernel rearranged on every call, which costs more than it saves where the kernel is larger).
ONE_DOT_UP_TO = 4


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
  """An NHWC convolution as matmuls that ask for fp32 results, summed in fp32 and rounded once to the inputs'
  dtype (`lax.conv_general_dilated`'s signature, for nn.Conv).

  Why: XLA:CPU compiles a bf16 convolution as conversions to fp32 around an fp32 convolution, and a bf16
  matmul asking for fp32 results is the one form it runs in bf16 (AVX512-BF16, AMX). The input, shifted
  once per kernel column, is stacked on channels (`_columns`); then, by how the kernel compares with the
  input (measured per form at SD's shapes in docs/benchmarks.md):
  - small kernel, stride 1 (ONE_DOT_UP_TO): one dot of all the padded rows against every kernel row at once,
    each kernel row's share of the output then summed at its row offset (no row slice of the input copied);
  - otherwise, one dot per kernel row on that row's slice of the input;
  - where the kernel dwarfs the input (kernel_dwarfs_input: SD's UNet at 8x8 and 4x4 latents) the row
    slices are stacked and one dot, batched over the rows, takes the kernel only reshaped, because slicing
    or rearranging a kernel copies every weight on every call.
  Dilated or grouped convolutions (none in these models) stay XLA's.
  """
  kh, kw, c_in, c_out = kernel.shape
  plain = (feature_group_count == 1 and dimension_numbers == _NHWC
           and all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))))
  if not plain:
    return jax.lax.conv_general_dilated(x, kernel, window_strides, padding, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                        feature_group_count=feature_group_count, precision=precision)
  sh, sw = window_strides
  pads = ((0, 0), (0, 0)) if padding == "VALID" else tuple(tuple(p) for p in padding)
  out_h, out_w = (x.shape[1] + sum(pads[0]) - kh) // sh + 1, (x.shape[2] + sum(pads[1]) - kw) // sw + 1
  columns = _columns(x, pads, kw, sw, out_w)  # as bits: every copy below stays 16-bit (see _columns)
  slabs = _bits(kernel).reshape(kh, kw * c_in, c_out)
  if sh == 1 and kernel.size <= ONE_DOT_UP_TO * x.size:
    # One dot against every kernel row at once, over all the padded rows; row i of the kernel then
    # contributes rows i..i+out_h of its third of the output. No row slice of the input is copied.
    slabs = _unbits(slabs.transpose(1, 0, 2).reshape(kw * c_in, kh * c_out), x.dtype)
    whole = jnp.einsum("bhwc,cd->bhwd", _unbits(columns, x.dtype), slabs, preferred_element_type=jnp.float32)
    out = sum(whole[:, i:i + out_h, :, i * c_out:(i + 1) * c_out] for i in range(kh))
    return out.astype(x.dtype)
  rows = [columns[:, i:i + sh * (out_h - 1) + 1:sh] for i in range(kh)]  # each (B, H, W, kw * c_in)
  if kernel_dwarfs_input(x, kernel):
    out = jax.lax.dot_general(_unbits(jnp.stack(rows), x.dtype), _unbits(slabs, x.dtype),
                              (((4,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32).sum(axis=0)
  else:
    out = sum(jnp.einsum("bhwc,cd->bhwd", _unbits(row, x.dtype), _unbits(slab, x.dtype),
                         preferred_element_type=jnp.float32) for row, slab in zip(rows, slabs))
  return out.astype(x.dtype)


def _columns(x, pads, kw: int, sw: int, out_w: int, first: int = 0):
  """The padded input shifted once per kernel column (from column `first`), stacked on channels:
  (B, H + pads, out_w, kw * C), as bits (`_bits`).

  Why bits: XLA:CPU widens each copy (pad, slice, concatenate) of a bf16 array to fp32 and back, which
  measured 10-20% of a large convolution's time; copied as uint16 they stay 16-bit."""
  v = jnp.pad(_bits(x), ((0, 0), *pads, (0, 0)))
  return jnp.concatenate([v[:, :, j:j + sw * (out_w - 1) + 1:sw] for j in range(first, first + kw)], axis=-1)


def _bits(x):
  """A 16-bit float array as its bits, so that copies of it stay 16-bit on XLA:CPU (see _columns)."""
  return jax.lax.bitcast_convert_type(x, jnp.uint16) if jnp.dtype(x.dtype).itemsize == 2 else x


def _unbits(v, dtype):
  return jax.lax.bitcast_convert_type(v, dtype) if v.dtype == jnp.uint16 else v


# Nearest-2x upsampling then a 3x3 conv, per output phase: output row 2i + a reads input rows i - 1 + a + t
# (t = 0, 1) through the kernel rows that PHASE_TAPS[a, t] sums; columns likewise.
PHASE_TAPS = ((1, 0, 0), (0, 1, 1)), ((1, 1, 0), (0, 0, 1))


def _fold_taps(kernel, axis: int):
  """A kernel's 3 taps along `axis` summed per output phase and tap (PHASE_TAPS): two new leading axes of 2."""
  return jnp.stack([jnp.stack([sum(jnp.take(kernel, r, axis) for r in range(3) if PHASE_TAPS[phase][tap][r])
                               for tap in range(2)]) for phase in range(2)])


def upsampled_conv(x, kernel, bias):
  """nearest-2x upsampling then a 3x3 conv with padding 1 (NHWC, HWIO kernel), computed on the small input.

  Why: the conv after an upsampling sees each input pixel four times; summing the kernel taps that read the
  same pixel leaves a 2x2 kernel per output phase, 2.25x fewer multiply-adds and no upsampled copy. The two
  column phases are one matmul each (fp32 results, rounded once), like row_dots. The folded kernel is rounded
  to the input's dtype once per call, so results differ from upsample-then-conv by that rounding.
  """
  b, h, w, c = x.shape
  c_out = kernel.shape[-1]
  folded = _fold_taps(_fold_taps(kernel.astype(jnp.float32), 0), 2)  # (col phase, col tap, row phase, row tap,
  folded = folded.transpose(0, 1, 4, 2, 3, 5).reshape(2, 2 * c, 4 * c_out).astype(x.dtype)  # c, c_out)
  bias = bias.astype(jnp.float32)
  phases = []  # phases[col phase][row phase]
  for col in range(2):
    columns = _unbits(_columns(x, ((1, 1), (1, 1)), 2, 1, w, first=col), x.dtype)
    whole = jnp.einsum("bhwc,cd->bhwd", columns, folded[col], preferred_element_type=jnp.float32)
    parts = lambda row, t: whole[:, row + t:row + t + h, :, (2 * row + t) * c_out:(2 * row + t + 1) * c_out]
    phases.append([_bits((parts(row, 0) + parts(row, 1) + bias).astype(x.dtype)) for row in range(2)])
  out = jnp.stack([jnp.stack([phases[0][row], phases[1][row]], axis=3) for row in range(2)], axis=2)
  return _unbits(out.reshape(b, 2 * h, 2 * w, c_out), x.dtype)


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
      t = dense(self.out_channels, self.dtype, self.dots, "time_emb_proj")(nn.silu(temb))
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
  """Nearest-neighbour 2x (each pixel repeated: exact, no resize kernel) then a 3x3 conv.

  In the fp32_results form they are one `upsampled_conv` (same parameters, 2.25x fewer multiply-adds) unless
  the kernel dwarfs the input (`folds_upsampling`); elsewhere they run as written."""
  channels: int
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x):
    if self.dots == "fp32_results" and folds_upsampling(x, self.channels):
      return UpsampledConv(self.channels, self.dtype, name="conv")(x)
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
    return conv(self.channels, 3, self.dtype, "conv", dots=self.dots)(x)


# Above this many kernel elements per upsampled-input element, Upsample keeps upsample-then-conv: folding the
# kernel on every call and computing two padding rows per image cost more than they save there (SD's UNet
# upsampling 8x8 latents at 1280 channels, two images: 22; the fold measured a loss there and a gain at 5-11).
FOLD_UPSAMPLING_UP_TO = 12


def folds_upsampling(x, features: int) -> bool:
  """Whether Upsample's fp32_results form folds its conv into the upsampling of `x` (see Upsample)."""
  return 9 * x.shape[-1] * features <= FOLD_UPSAMPLING_UP_TO * 4 * x.size


class UpsampledConv(nn.Module):
  """Upsample's conv folded into the upsampling (`upsampled_conv`), with nn.Conv's parameters."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return upsampled_conv(x.astype(self.dtype), kernel, bias)


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
  dots: str = "native"  # the matmuls' form (attention.DOTS, resolved)

  @nn.compact
  def __call__(self, x):
    x = dense(self.features, self.dtype, self.dots, "linear_1")(x)
    return dense(self.features, self.dtype, self.dots, "linear_2")(nn.silu(x))
