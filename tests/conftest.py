"""Shared test set-up: a persistent compilation cache keeps the suite fast."""

import os

import jax

jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/jaxaug-tests/jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
