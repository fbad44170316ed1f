"""CLIP text and vision towers as Flax modules with the checkpoint's parameter names.

The transformer bodies are transformers' Flax CLIP; this file adds what Stable Diffusion uses around them:
the text tower's last hidden state (after the final layer norm), and the vision tower's pooled output
through the visual projection (`image_embeds` of CLIPVisionModelWithProjection).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxaug.models import hf


class TextEncoder(nn.Module):
  """Token ids (B, L) -> hidden states (B, L, D): the cross-attention context of the UNet."""
  config: hf.CLIPTextConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, input_ids):
    positions = jnp.broadcast_to(jnp.arange(input_ids.shape[-1])[None], input_ids.shape)
    # No padding mask: SD text encoders attend causally over the padded prompt, as diffusers does.
    out = hf.CLIPTextTransformer(self.config, dtype=self.dtype, name="text_model")(
        input_ids, jnp.ones_like(input_ids), positions, deterministic=True)
    return out.last_hidden_state


class ImageEncoder(nn.Module):
  """CLIP-preprocessed pixels (B, H, W, 3) -> image embeddings (B, projection_dim)."""
  config: hf.CLIPVisionConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, pixel_values):
    out = hf.CLIPVisionTransformer(self.config, dtype=self.dtype, name="vision_model")(
        pixel_values, deterministic=True)
    return nn.Dense(self.config.projection_dim, use_bias=False, dtype=self.dtype,
                    name="visual_projection")(out.pooler_output)
