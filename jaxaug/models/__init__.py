"""Stable Diffusion (unCLIP and plain) in Flax, loaded from diffusers-format checkpoints without torch.

Every use of diffusers and transformers stays inside this package (see hf.py). The package itself
imports nothing heavy, so `python -m jaxaug.models.torch_reference` can bring up PyTorch diffusers alone.
"""

__all__ = ["Pipeline", "load"]


def __getattr__(name):
  if name in __all__:
    from jaxaug.models import pipeline

    return getattr(pipeline, name)
  raise AttributeError(f"module 'jaxaug.models' has no attribute {name!r}")
