"""Pieces of `python -m jaxaug.train`: input streams (data), the train and eval steps (step), pictures (plots)."""
