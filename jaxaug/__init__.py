"""jaxaug: augmentation-conditioned Stable Diffusion data generation and classifier training in JAX."""

__version__ = "0.1.0"

import logging as _logging

# jax logs at INFO that it found no TPU on every CPU/GPU start; users need not see it.
_logging.getLogger("jax._src.xla_bridge").setLevel(_logging.WARNING)
