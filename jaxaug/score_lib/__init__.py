"""The parts of `python -m jaxaug.score`: metrics (pure numpy), embedding and its cache, scoring, report, pictures."""
