"""The SD 1.x / 2.x UNet (diffusers' UNet2DConditionModel as those checkpoints configure it), NHWC inside.

Parameter names are the checkpoint's (`down_blocks_0/attentions_1/transformer_blocks_0/attn2/to_k`), so the
converter maps safetensors names straight onto this tree. unCLIP's image conditioning is the
`projection` class embedding: a Dense-SiLU-Dense of the 2048-d image vector added to the timestep
embedding. The attention kernel is a field (see attention.py), passed down to every transformer block.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from jaxaug.errors import UserError
from jaxaug.models.attention import Attention, dense
from jaxaug.models.layers import Downsample, GroupNorm, ResnetBlock, TimestepEmbedding, Upsample, conv, \
    sinusoidal_embedding

DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D")

# diffusers UNet options with no effect on SD 1.x/2.x inference, or honoured only at one value.
_FIXED = {
    "act_fn": "silu", "time_embedding_type": "positional", "resnet_time_scale_shift": "default",
    "addition_embed_type": None, "encoder_hid_dim": None, "encoder_hid_dim_type": None, "num_class_embeds": None,
    "time_cond_proj_dim": None, "conv_in_kernel": 3, "conv_out_kernel": 3, "center_input_sample": False,
    "downsample_padding": 1, "mid_block_scale_factor": 1, "dual_cross_attention": False,
    "class_embeddings_concat": False, "timestep_post_act": None, "time_embedding_dim": None,
    "time_embedding_act_fn": None, "attention_type": "default", "reverse_transformer_layers_per_block": None,
    "cross_attention_norm": None, "addition_time_embed_dim": None, "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
}
_IGNORED = ("sample_size", "dropout", "addition_embed_type_num_heads")  # no effect on inference


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """The architecture, read from the checkpoint's unet/config.json (see from_diffusers)."""
  in_channels: int = 4
  out_channels: int = 4
  down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
  up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
  has_mid_block: bool = True
  block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
  layers_per_block: int = 2
  heads: tuple[int, ...] = (5, 10, 20, 20)  # per level; diffusers' `attention_head_dim` holds head counts
  transformer_layers: tuple[int, ...] = (1, 1, 1, 1)
  only_cross_attention: tuple[bool, ...] = (False,) * 4
  mid_only_cross_attention: bool = False
  cross_attention_dim: int = 1024
  use_linear_projection: bool = True
  upcast_attention: bool = False
  flip_sin_to_cos: bool = True
  freq_shift: float = 0
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  class_embed_input_dim: int | None = None  # unCLIP: the projection class embedding's input size

  @classmethod
  def from_diffusers(cls, config: dict, where: str) -> "UNetConfig":
    """Reads a diffusers UNet2DConditionModel config; any option this UNet cannot honour is a UserError."""
    known = {f.name for f in dataclasses.fields(cls)} | {
        "mid_block_type", "attention_head_dim", "num_attention_heads", "transformer_layers_per_block",
        "class_embed_type", "projection_class_embeddings_input_dim", "mid_block_only_cross_attention"}
    for key, value in config.items():
      if key.startswith("_") or key in _IGNORED or key in known:
        continue
      if key in _FIXED:
        if value != _FIXED[key]:
          raise UserError(f"{where}: unsupported architecture option {key}={value!r} (jaxaug's UNet supports only "
                          f"{_FIXED[key]!r})")
        continue
      raise UserError(f"{where}: unknown architecture option '{key}' in config.json; this checkpoint is not an "
                      "SD 1.x/2.x or SD 2.1-unCLIP model jaxaug can load")
    get = lambda key, default: default if config.get(key) is None else config[key]  # noqa: E731
    down = tuple(get("down_block_types", cls.down_block_types))
    up = tuple(get("up_block_types", cls.up_block_types))
    levels = len(down)
    for kind, names, allowed in (("down", down, DOWN_BLOCKS), ("up", up, UP_BLOCKS)):
      for name in names:
        if name not in allowed:
          raise UserError(f"{where}: unsupported {kind} block '{name}' (jaxaug's UNet has {', '.join(allowed)})")
    channels = tuple(get("block_out_channels", cls.block_out_channels))
    if not levels == len(up) == len(channels):
      raise UserError(f"{where}: {levels} down blocks, {len(up)} up blocks and {len(channels)} block_out_channels "
                      "must agree")
    mid = get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid not in ("UNetMidBlock2DCrossAttn", None):
      raise UserError(f"{where}: unsupported mid_block_type {mid!r} (jaxaug has UNetMidBlock2DCrossAttn or none)")
    layers = get("layers_per_block", cls.layers_per_block)
    if not isinstance(layers, int):
      raise UserError(f"{where}: layers_per_block must be one integer for SD 1.x/2.x, not {layers!r}")
    heads = _per_level(config.get("num_attention_heads") or get("attention_head_dim", 8), levels, "heads", where)
    groups = get("norm_num_groups", cls.norm_num_groups)
    for c, n in zip(channels, heads):
      if c % n or c % groups:
        raise UserError(f"{where}: {c} channels cannot be split into {n} attention heads and {groups} norm groups")
    only_cross = _per_level(get("only_cross_attention", False), levels, "only_cross_attention", where)
    mid_only = config.get("mid_block_only_cross_attention")
    if mid_only is None:
      mid_only = config.get("only_cross_attention") if isinstance(config.get("only_cross_attention"), bool) else False
    class_embed = config.get("class_embed_type")
    if class_embed not in (None, "projection"):
      raise UserError(f"{where}: unsupported architecture option class_embed_type={class_embed!r} (only "
                      "'projection', the unCLIP image embedding, or none)")
    class_dim = config.get("projection_class_embeddings_input_dim") if class_embed == "projection" else None
    if class_embed == "projection" and not class_dim:
      raise UserError(f"{where}: class_embed_type 'projection' needs projection_class_embeddings_input_dim")
    return cls(
        in_channels=get("in_channels", 4), out_channels=get("out_channels", 4), down_block_types=down,
        up_block_types=up, has_mid_block=mid is not None, block_out_channels=channels, layers_per_block=layers,
        heads=heads, transformer_layers=_per_level(get("transformer_layers_per_block", 1), levels,
                                                   "transformer_layers_per_block", where),
        only_cross_attention=only_cross, mid_only_cross_attention=bool(mid_only),
        cross_attention_dim=get("cross_attention_dim", 1280), use_linear_projection=get("use_linear_projection", False),
        upcast_attention=get("upcast_attention", False), flip_sin_to_cos=get("flip_sin_to_cos", True),
        freq_shift=get("freq_shift", 0), norm_num_groups=groups, norm_eps=get("norm_eps", 1e-5),
        class_embed_input_dim=class_dim)


def _per_level(value, levels: int, what: str, where: str) -> tuple:
  values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * levels
  if len(values) != levels:
    raise UserError(f"{where}: {what} lists {len(values)} values for {levels} UNet levels")
  return values


class _GEGLU(nn.Module):
  """The GEGLU projection under the checkpoint's name `net.0.proj`: value * GELU(gate), exact erf GELU."""
  inner: int
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x):
    value, gate = jnp.split(dense(2 * self.inner, self.dtype, self.dots, "proj")(x), 2, axis=-1)
    return value * nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
  """GEGLU to 4x the width (`net.0`), then back (`net.2`); `net.1` is PyTorch's dropout."""
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x):
    h = _GEGLU(4 * x.shape[-1], self.dtype, self.dots, name="net_0")(x)
    return dense(x.shape[-1], self.dtype, self.dots, "net_2")(h)


class TransformerBlock(nn.Module):
  """Self-attention, cross-attention over the text context, GEGLU feed-forward; pre-LayerNorm, residuals."""
  heads: int
  dim_head: int
  only_cross_attention: bool = False
  kernel: str = "xla"
  upcast: bool = False
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x, context):
    def attn(name):
      return Attention(self.heads, self.dim_head, self.kernel, self.upcast, self.dtype, self.dots, name=name)

    norm = lambda name: nn.LayerNorm(1e-5, dtype=self.dtype, use_fast_variance=False, name=name)  # noqa: E731
    x = x + attn("attn1")(norm("norm1")(x), context if self.only_cross_attention else None)
    x = x + attn("attn2")(norm("norm2")(x), context)
    return x + FeedForward(self.dtype, self.dots, name="ff")(norm("norm3")(x))


class Transformer2D(nn.Module):
  """GroupNorm, project in (linear, or a 1x1 conv in SD 1.x), transformer blocks over the h*w tokens, out."""
  heads: int
  depth: int = 1
  linear_projection: bool = True
  only_cross_attention: bool = False
  groups: int = 32
  kernel: str = "xla"
  upcast: bool = False
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x, context):
    b, h, w, c = x.shape
    y = GroupNorm(self.groups, 1e-6, name="norm")(x)
    if self.linear_projection:
      y = dense(c, self.dtype, self.dots, "proj_in")(y.reshape(b, h * w, c))
    else:
      y = conv(c, 1, self.dtype, "proj_in", padding="VALID", dots=self.dots)(y).reshape(b, h * w, c)
    for i in range(self.depth):
      y = TransformerBlock(self.heads, c // self.heads, self.only_cross_attention, self.kernel, self.upcast,
                           self.dtype, self.dots, name=f"transformer_blocks_{i}")(y, context)
    if self.linear_projection:
      y = dense(c, self.dtype, self.dots, "proj_out")(y).reshape(b, h, w, c)
    else:
      y = conv(c, 1, self.dtype, "proj_out", padding="VALID", dots=self.dots)(y.reshape(b, h, w, c))
    return x + y


class _Level(nn.Module):
  """One down or up block: resnets, each followed by a transformer where the level has attention, then a
  down/upsampler. An up level first concatenates a skip connection to each resnet's input."""
  config: UNetConfig
  level: int  # position among the down (or up) levels; up levels read the per-level lists reversed
  up: bool
  resample: bool
  kernel: str = "xla"
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x, temb, context, skips=()):
    cfg, i = self.config, self.level
    channels = cfg.block_out_channels[::-1][i] if self.up else cfg.block_out_channels[i]
    types = cfg.up_block_types if self.up else cfg.down_block_types
    attention = types[i].startswith("CrossAttn")
    heads = cfg.heads[::-1][i] if self.up else cfg.heads[i]
    depth = cfg.transformer_layers[::-1][i] if self.up else cfg.transformer_layers[i]
    only_cross = cfg.only_cross_attention[::-1][i] if self.up else cfg.only_cross_attention[i]
    outputs = []
    for j in range(cfg.layers_per_block + (1 if self.up else 0)):
      if self.up:
        x = jnp.concatenate([x, skips[-1 - j]], axis=-1)
      x = ResnetBlock(channels, cfg.norm_num_groups, cfg.norm_eps, self.dtype, self.dots, name=f"resnets_{j}")(x, temb)
      if attention:
        x = Transformer2D(heads, depth, cfg.use_linear_projection, only_cross, cfg.norm_num_groups, self.kernel,
                          cfg.upcast_attention, self.dtype, self.dots, name=f"attentions_{j}")(x, context)
      outputs.append(x)
    if self.resample and self.up:
      x = Upsample(channels, self.dtype, self.dots, name="upsamplers_0")(x)
    elif self.resample:
      x = Downsample(channels, dtype=self.dtype, dots=self.dots, name="downsamplers_0")(x)
      outputs.append(x)
    return x, outputs


class _MidBlock(nn.Module):
  config: UNetConfig
  kernel: str = "xla"
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x, temb, context):
    cfg = self.config
    c = cfg.block_out_channels[-1]
    x = ResnetBlock(c, cfg.norm_num_groups, cfg.norm_eps, self.dtype, self.dots, name="resnets_0")(x, temb)
    x = Transformer2D(cfg.heads[-1], cfg.transformer_layers[-1], cfg.use_linear_projection,
                      cfg.mid_only_cross_attention, cfg.norm_num_groups, self.kernel, cfg.upcast_attention,
                      self.dtype, self.dots, name="attentions_0")(x, context)
    return ResnetBlock(c, cfg.norm_num_groups, cfg.norm_eps, self.dtype, self.dots, name="resnets_1")(x, temb)


class UNet(nn.Module):
  """Noise (or v) prediction: latents (B, C, h, w) NCHW at `timesteps` (B,), text context (B, L, D) and, for
  unCLIP, the image vector (B, 2d). Output NCHW in the model dtype."""
  config: UNetConfig
  dtype: jnp.dtype = jnp.float32
  attention: str = "xla"  # a resolved kernel name (attention.resolve)
  dots: str = "native"  # its matmul and convolution form, resolved (attention.resolve_dots)

  # What the rest of jaxaug reads off the module.
  @property
  def in_channels(self) -> int:
    return self.config.in_channels

  @property
  def block_out_channels(self) -> tuple[int, ...]:
    return self.config.block_out_channels

  @property
  def cross_attention_dim(self) -> int:
    return self.config.cross_attention_dim

  @property
  def class_embed_input_dim(self) -> int | None:
    return self.config.class_embed_input_dim

  @nn.compact
  def __call__(self, sample, timesteps, context, class_vector=None):
    cfg, dtype = self.config, self.dtype
    base = cfg.block_out_channels[0]
    timesteps = jnp.broadcast_to(jnp.asarray(timesteps), sample.shape[:1])
    temb = sinusoidal_embedding(timesteps, base, cfg.flip_sin_to_cos, cfg.freq_shift).astype(dtype)
    temb = TimestepEmbedding(4 * base, dtype, self.dots, name="time_embedding")(temb)
    if cfg.class_embed_input_dim is not None:
      if class_vector is None:
        raise ValueError("this UNet has a projection class embedding (unCLIP): pass class_vector")
      temb = temb + TimestepEmbedding(4 * base, dtype, self.dots, name="class_embedding")(class_vector.astype(dtype))
    context = context.astype(dtype)

    x = conv(base, 3, dtype, "conv_in", dots=self.dots)(jnp.transpose(sample, (0, 2, 3, 1)).astype(dtype))
    skips = [x]
    levels = len(cfg.block_out_channels)
    for i in range(levels):
      x, outputs = _Level(cfg, i, up=False, resample=i < levels - 1, kernel=self.attention, dtype=dtype,
                          dots=self.dots, name=f"down_blocks_{i}")(x, temb, context)
      skips += outputs
    if cfg.has_mid_block:
      x = _MidBlock(cfg, self.attention, dtype, self.dots, name="mid_block")(x, temb, context)
    for i in range(levels):
      n = cfg.layers_per_block + 1
      x, _ = _Level(cfg, i, up=True, resample=i < levels - 1, kernel=self.attention, dtype=dtype,
                    dots=self.dots, name=f"up_blocks_{i}")(x, temb, context, skips[-n:])
      skips = skips[:-n]
    x = nn.silu(GroupNorm(cfg.norm_num_groups, cfg.norm_eps, name="conv_norm_out")(x))
    x = conv(cfg.out_channels, 3, dtype, "conv_out", dots=self.dots)(x)
    return jnp.transpose(x, (0, 3, 1, 2))
