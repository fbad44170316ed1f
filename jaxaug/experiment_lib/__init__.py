"""python -m jaxaug.experiment's library: grid planning, manifest, stages, results, pictures, dry-run cost."""
