"""CLIP text and vision towers (transformers' CLIPTextModel, CLIPVisionModelWithProjection) in Flax.

Stable Diffusion uses the text tower's last hidden state (after the final layer norm) as the UNet's
cross-attention context, and unCLIP the vision tower's pooled output through the visual projection
(`image_embeds`). Parameter names are the checkpoint's (`text_model/encoder/layers/0/self_attn/q_proj`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from jaxaug.errors import UserError
from jaxaug.models.attention import dense, dot_product_attention
from jaxaug.models.layers import conv_form

ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "quick_gelu": lambda x: x * nn.sigmoid(1.702 * x),
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
}


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
  """One tower's architecture, read from its transformers config.json (defaults are transformers')."""
  hidden_size: int = 512
  intermediate_size: int = 2048
  num_hidden_layers: int = 12
  num_attention_heads: int = 8
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  projection_dim: int = 512
  vocab_size: int = 49408  # text
  max_position_embeddings: int = 77  # text
  image_size: int = 224  # vision
  patch_size: int = 32  # vision
  num_channels: int = 3  # vision

  @classmethod
  def from_transformers(cls, config: dict, where: str, vision: bool) -> "CLIPConfig":
    defaults = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12) if vision else {}
    if isinstance(config.get("vision_config" if vision else "text_config"), dict):
      config = config["vision_config" if vision else "text_config"]  # a whole CLIPConfig: take the tower's part
    names = {f.name for f in dataclasses.fields(cls)}
    out = cls(**{**defaults, **{k: v for k, v in config.items() if k in names and v is not None}})
    if out.hidden_act not in ACTIVATIONS:
      raise UserError(f"{where}: unsupported hidden_act {out.hidden_act!r} (jaxaug's CLIP has {', '.join(ACTIVATIONS)})")
    if out.hidden_size % out.num_attention_heads:
      raise UserError(f"{where}: hidden_size {out.hidden_size} is not a multiple of num_attention_heads "
                      f"{out.num_attention_heads}")
    return out


class _SelfAttention(nn.Module):
  heads: int
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x, mask=None):
    b, t, d = x.shape
    split = lambda y: y.reshape(b, t, self.heads, d // self.heads)  # noqa: E731
    q, k, v = (split(dense(d, self.dtype, self.dots, f"{n}_proj")(x)) for n in ("q", "k", "v"))
    y = dot_product_attention(q, k, v, fp32_scores=True, mask=mask,
                              fp32_results=self.dots == "fp32_results").reshape(b, t, d)
    return dense(d, self.dtype, self.dots, "out_proj")(y)


class _Layer(nn.Module):
  config: CLIPConfig
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x, mask=None):
    cfg = self.config
    norm = lambda name: nn.LayerNorm(cfg.layer_norm_eps, dtype=self.dtype, use_fast_variance=False, name=name)  # noqa: E731
    attend = _SelfAttention(cfg.num_attention_heads, self.dtype, self.dots, name="self_attn")
    x = x + attend(norm("layer_norm1")(x), mask)
    h = _MLP(cfg, self.dtype, self.dots, name="mlp")(norm("layer_norm2")(x))
    return x + h


class _MLP(nn.Module):
  config: CLIPConfig
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x):
    h = ACTIVATIONS[self.config.hidden_act](dense(self.config.intermediate_size, self.dtype, self.dots, "fc1")(x))
    return dense(self.config.hidden_size, self.dtype, self.dots, "fc2")(h)


class _Layers(nn.Module):
  """`encoder.layers.N` in the checkpoint: children named by their index."""
  config: CLIPConfig
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x, mask=None):
    for i in range(self.config.num_hidden_layers):
      x = _Layer(self.config, self.dtype, self.dots, name=str(i))(x, mask)
    return x


class _Encoder(nn.Module):
  config: CLIPConfig
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, x, mask=None):
    return _Layers(self.config, self.dtype, self.dots, name="layers")(x, mask)


class _TextEmbeddings(nn.Module):
  config: CLIPConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, input_ids):
    cfg = self.config
    tokens = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=self.dtype, name="token_embedding")(input_ids)
    positions = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, dtype=self.dtype, name="position_embedding")
    return tokens + positions(jnp.arange(input_ids.shape[-1]))[None]


class _VisionEmbeddings(nn.Module):
  """The class token and the patches (a stride-`patch` conv without bias), plus learned positions."""
  config: CLIPConfig
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, pixels):
    cfg = self.config
    cls_token = self.param("class_embedding", nn.initializers.normal(0.02), (cfg.hidden_size,))
    p = cfg.patch_size
    patches = nn.Conv(cfg.hidden_size, (p, p), strides=(p, p), padding="VALID", use_bias=False, dtype=self.dtype,
                      conv_general_dilated=conv_form(self.dtype, self.dots), name="patch_embedding")
    patches = patches(pixels.astype(self.dtype))
    b = patches.shape[0]
    patches = patches.reshape(b, -1, cfg.hidden_size)
    x = jnp.concatenate([jnp.broadcast_to(cls_token.astype(patches.dtype), (b, 1, cfg.hidden_size)), patches], axis=1)
    positions = nn.Embed(x.shape[1], cfg.hidden_size, dtype=self.dtype, name="position_embedding")
    return x + positions(jnp.arange(x.shape[1]))[None]


class _TextTransformer(nn.Module):
  config: CLIPConfig
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, input_ids):
    cfg = self.config
    x = _TextEmbeddings(cfg, self.dtype, name="embeddings")(input_ids)
    length = input_ids.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), bool))  # no padding mask: SD attends over the padded prompt
    x = _Encoder(cfg, self.dtype, self.dots, name="encoder")(x, causal)
    return nn.LayerNorm(cfg.layer_norm_eps, dtype=self.dtype, use_fast_variance=False, name="final_layer_norm")(x)


class _VisionTransformer(nn.Module):
  config: CLIPConfig
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, pixels):
    cfg = self.config
    norm = lambda name: nn.LayerNorm(cfg.layer_norm_eps, dtype=self.dtype, use_fast_variance=False, name=name)  # noqa: E731
    embeddings = _VisionEmbeddings(cfg, self.dtype, self.dots, name="embeddings")
    x = norm("pre_layrnorm")(embeddings(pixels))  # sic: the checkpoint's name
    x = _Encoder(cfg, self.dtype, self.dots, name="encoder")(x)
    return norm("post_layernorm")(x[:, 0])


class TextEncoder(nn.Module):
  """Token ids (B, L) -> hidden states (B, L, D): the cross-attention context of the UNet."""
  config: CLIPConfig
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, input_ids):
    return _TextTransformer(self.config, self.dtype, self.dots, name="text_model")(input_ids)


class ImageEncoder(nn.Module):
  """CLIP-preprocessed pixels (B, H, W, 3) -> image embeddings (B, projection_dim)."""
  config: CLIPConfig
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, pixel_values):
    pooled = _VisionTransformer(self.config, self.dtype, self.dots, name="vision_model")(pixel_values)
    return dense(self.config.projection_dim, self.dtype, self.dots, "visual_projection", use_bias=False)(pooled)
