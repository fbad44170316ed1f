"""Pieces of `python -m jaxaug.train`: input streams (data), train and eval steps (step), orbax checkpoints
(checkpoint) and PIL charts (plots)."""
