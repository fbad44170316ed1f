"""The score command's settings checked before any work (one line, exit 2): what `python -m jaxaug.score` and the
experiment's preflight both call, so the experiment never imports the score command to check a grid."""

from __future__ import annotations

from jaxaug.config_base import SCORING_RANGES, check_values
from jaxaug.errors import UserError
from jaxaug.score_lib import consistency, encoders

RANK_NAMES = {"fd": "FD", "kid": "KID", "precision": "precision", "coverage": "coverage",  # --config.pictures.rank_by
              "diversity": "diversity", "consistency": "own class"}
RANK_BY = tuple(RANK_NAMES)

_CHOICES = {"dtype": ("fp32", "bf16"), "pictures.rank_by": RANK_BY}


def check_config(config) -> None:
  """Every value checked before any work (one line, exit 2): config_base's ranges and choices, k against prdc_max
  (PRDC needs more than k images of each set), the keep rule."""
  check_values(config, SCORING_RANGES, _CHOICES)
  for name in encoders.parse(config.encoders):
    if name in encoders.WEIGHT_FIELDS:
      encoders.check_weights(name, config[encoders.WEIGHT_FIELDS[name]])
  k, prdc_max = config.metrics.k, config.metrics.prdc_max
  if prdc_max and prdc_max <= k:
    raise UserError(f"--config.metrics.k={k} is not below --config.metrics.prdc_max={prdc_max}: PRDC needs more than k "
                    "images of each set; raise metrics.prdc_max (0 for all images) or lower metrics.k")
  keep_rule(config.keep)


def keep_rule(text: str) -> consistency.KeepRule | None:
  """--config.keep as a rule ('' for none); one line naming the rules otherwise."""
  if not text:
    return None
  try:
    return consistency.parse_keep_rule(text)
  except ValueError as e:
    raise UserError(f"--config.keep={text!r}: {e}; use one of {', '.join(consistency.KEEP_RULES)} (0 < F < 1), or '' "
                    "for no keep list") from None
