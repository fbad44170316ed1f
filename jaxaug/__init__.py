"""jaxaug: augmentation-conditioned Stable Diffusion data generation and classifier training in JAX."""

__version__ = "0.1.0"
