"""Scoring demo: the demo's synthetic set (out/demo) against the real images it was generated from.

    python -m jaxaug.generate                      # writes out/demo first
    python -m jaxaug.score                         # this config is the default

Every field is documented in jaxaug/config_base.py (score_config).
"""

from jaxaug.config_base import score_config


def get_config():
  return score_config()
