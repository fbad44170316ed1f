"""Pieces of `python -m jaxaug.generate`: the config's checks and fingerprint (config) and the generation step
(step)."""
