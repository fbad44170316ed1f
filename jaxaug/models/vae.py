"""SD's AutoencoderKL: the encoder to a diagonal Gaussian posterior, and the decoder, NHWC inside.

Parameter names are the checkpoint's (`decoder/mid_block/attentions_0/to_q`). Interfaces are NCHW like
the latents the sampler carries: `encode` takes images (B, 3, H, W) in [-1, 1] and returns the posterior
over NHWC latents; `decode` takes latents (B, C, h, w) and returns images (B, 3, H, W).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxaug.errors import UserError
from jaxaug.models.attention import dense, dot_product_attention
from jaxaug.models.layers import Downsample, GroupNorm, ResnetBlock, Upsample, conv, conv_form

_FIXED = {"use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True, "shift_factor": None,
          "latents_mean": None, "latents_std": None, "act_fn": "silu"}
_IGNORED = ("sample_size", "scaling_factor", "force_upcast")


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
  layers_per_block: int = 2
  latent_channels: int = 4
  norm_num_groups: int = 32

  @classmethod
  def from_diffusers(cls, config: dict, where: str) -> "VAEConfig":
    fields = {f.name for f in dataclasses.fields(cls)}
    for key, value in config.items():
      if key.startswith("_") or key in fields or key in _IGNORED or key in ("down_block_types", "up_block_types"):
        continue
      if key in _FIXED:
        if value != _FIXED[key]:
          raise UserError(f"{where}: unsupported architecture option {key}={value!r} (jaxaug's VAE supports only "
                          f"{_FIXED[key]!r})")
        continue
      raise UserError(f"{where}: unknown architecture option '{key}' in config.json; this is not an SD AutoencoderKL")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in fields}
    out = cls(**kwargs)
    levels = len(out.block_out_channels)
    for key, name in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
      types = config.get(key, [name] * levels)
      if any(t != name for t in types) or len(types) != levels:
        raise UserError(f"{where}: {key} must be {levels} x {name}, not {types}")
    if any(c % out.norm_num_groups for c in out.block_out_channels):
      raise UserError(f"{where}: block_out_channels {out.block_out_channels} are not multiples of norm_num_groups "
                      f"{out.norm_num_groups}")
    return out


class _AttentionBlock(nn.Module):
  """The mid block's single-head self-attention over all pixels, with a residual (scores in fp32)."""
  groups: int
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = GroupNorm(self.groups, 1e-6, name="group_norm")(x).reshape(b, h * w, 1, c)
    q, k, v = (dense(c, self.dtype, self.dots, n)(y) for n in ("to_q", "to_k", "to_v"))
    y = dot_product_attention(q, k, v, fp32_scores=True, fp32_results=self.dots == "fp32_results")
    return x + dense(c, self.dtype, self.dots, "to_out_0")(y.reshape(b, h * w, c)).reshape(b, h, w, c)


class _MidBlock(nn.Module):
  channels: int
  groups: int
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x):
    x = ResnetBlock(self.channels, self.groups, 1e-6, self.dtype, self.dots, name="resnets_0")(x)
    x = _AttentionBlock(self.groups, self.dtype, self.dots, name="attentions_0")(x)
    return ResnetBlock(self.channels, self.groups, 1e-6, self.dtype, self.dots, name="resnets_1")(x)


class _Level(nn.Module):
  channels: int
  layers: int
  groups: int
  resample: bool
  up: bool
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x):
    for j in range(self.layers):
      x = ResnetBlock(self.channels, self.groups, 1e-6, self.dtype, self.dots, name=f"resnets_{j}")(x)
    if self.resample and self.up:
      x = Upsample(self.channels, self.dtype, self.dots, name="upsamplers_0")(x)
    elif self.resample:
      x = Downsample(self.channels, asymmetric=True, dtype=self.dtype, dots=self.dots, name="downsamplers_0")(x)
    return x


class Encoder(nn.Module):
  config: VAEConfig
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    x = conv(cfg.block_out_channels[0], 3, self.dtype, "conv_in", dots=self.dots)(x)
    levels = len(cfg.block_out_channels)
    for i, c in enumerate(cfg.block_out_channels):
      x = _Level(c, cfg.layers_per_block, cfg.norm_num_groups, i < levels - 1, False, self.dtype, self.dots,
                 name=f"down_blocks_{i}")(x)
    x = _MidBlock(cfg.block_out_channels[-1], cfg.norm_num_groups, self.dtype, self.dots, name="mid_block")(x)
    x = nn.silu(GroupNorm(cfg.norm_num_groups, 1e-6, name="conv_norm_out")(x))
    return conv(2 * cfg.latent_channels, 3, self.dtype, "conv_out", dots=self.dots)(x)


class Decoder(nn.Module):
  config: VAEConfig
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, z):
    cfg = self.config
    x = conv(cfg.block_out_channels[-1], 3, self.dtype, "conv_in", dots=self.dots)(z)
    x = _MidBlock(cfg.block_out_channels[-1], cfg.norm_num_groups, self.dtype, self.dots, name="mid_block")(x)
    levels = len(cfg.block_out_channels)
    for i, c in enumerate(cfg.block_out_channels[::-1]):
      x = _Level(c, cfg.layers_per_block + 1, cfg.norm_num_groups, i < levels - 1, True, self.dtype, self.dots,
                 name=f"up_blocks_{i}")(x)
    x = nn.silu(GroupNorm(cfg.norm_num_groups, 1e-6, name="conv_norm_out")(x))
    return conv(cfg.out_channels, 3, self.dtype, "conv_out", dots=self.dots)(x)


@dataclasses.dataclass(frozen=True)
class Posterior:
  """The encoder's diagonal Gaussian over NHWC latents (log-variance clipped to [-30, 20] as diffusers)."""
  mean: jax.Array
  logvar: jax.Array

  def sample(self, key):
    return self.mean + jnp.exp(0.5 * self.logvar) * jax.random.normal(key, self.mean.shape, self.mean.dtype)

  def mode(self):
    return self.mean


class AutoencoderKL(nn.Module):
  config: VAEConfig
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"  # the form of its convolutions and matmuls, resolved (attention.DOTS)

  @property
  def block_out_channels(self) -> tuple[int, ...]:
    return self.config.block_out_channels

  @property
  def in_channels(self) -> int:
    return self.config.in_channels

  def setup(self):
    latent = self.config.latent_channels
    self.encoder = Encoder(self.config, self.dtype, self.dots)
    self.decoder = Decoder(self.config, self.dtype, self.dots)
    form = conv_form(self.dtype, self.dots)
    self.quant_conv = nn.Conv(2 * latent, (1, 1), padding="VALID", dtype=self.dtype, conv_general_dilated=form)
    self.post_quant_conv = nn.Conv(latent, (1, 1), padding="VALID", dtype=self.dtype, conv_general_dilated=form)

  def encode(self, images) -> Posterior:
    moments = self.quant_conv(self.encoder(jnp.transpose(images, (0, 2, 3, 1)).astype(self.dtype)))
    mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
    return Posterior(mean, jnp.clip(logvar, -30.0, 20.0))

  def decode(self, latents):
    z = self.post_quant_conv(jnp.transpose(latents, (0, 2, 3, 1)).astype(self.dtype))
    return jnp.transpose(self.decoder(z), (0, 3, 1, 2))

  def __call__(self, images):
    """Init helper: encode then decode the posterior's mean (creates every parameter)."""
    return self.decode(jnp.transpose(self.encode(images).mode(), (0, 3, 1, 2)))
