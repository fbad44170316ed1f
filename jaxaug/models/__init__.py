"""Stable Diffusion (unCLIP and plain) in Flax, loaded from diffusers-format checkpoints without torch.

The models are jaxaug's own flax.linen modules (unet.py, vae.py, clip.py, schedulers.py); checkpoints are
read from their safetensors and configs, and transformers is used only for the CLIP tokenizer. The
package itself imports nothing heavy.
"""

__all__ = ["Pipeline", "load"]


def __getattr__(name):
  if name in __all__:
    from jaxaug.models import pipeline

    return getattr(pipeline, name)
  raise AttributeError(f"module 'jaxaug.models' has no attribute {name!r}")
