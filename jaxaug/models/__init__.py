"""Stable Diffusion (unCLIP and plain) in Flax, loaded from diffusers-format checkpoints without torch.

Every use of diffusers and transformers stays inside this package (see hf.py).
"""

from jaxaug.models.pipeline import Pipeline, load

__all__ = ["Pipeline", "load"]
