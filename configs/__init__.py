"""The shipped configs; an installed jaxaug carries them as `jaxaug.configs` (see jaxaug/config_files.py)."""
