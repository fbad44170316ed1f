"""A generation config: its checks before any work (one line, exit 2) and its fingerprint, the fields that decide
the output images (a rerun into the same directory must keep them; the experiment records it per cell)."""

from __future__ import annotations

from absl import logging

from jaxaug import augment, plan as plan_lib
from jaxaug.config_base import GENERATION_RANGES, check_values
from jaxaug.errors import UserError
from jaxaug.sampler import MODES

# Config fields that decide the output images.
_OUTPUT_FIELDS = ("model", "data", "methods", "alpha", "plan", "prompt", "sampler", "resolution", "seed", "output.format",
                  "output.jpeg_quality", "reference_quirks")


def _lookup(config, dotted: str):
  for part in dotted.split("."):
    config = config[part]
  return config.to_dict() if hasattr(config, "to_dict") else config


def fingerprint(config, weights: dict | None = None) -> dict:
  """What decides the output images: the output fields, and the sha256 of every weight file (when known)."""
  out = {f: _lookup(config, f) for f in _OUTPUT_FIELDS}
  if weights is not None:
    out["weights"] = weights
  return out


_CHOICES = {"dtype": ("auto", "fp32", "bf16"), "output.format": ("png", "jpeg"), "plan.policy": plan_lib.POLICIES,
            "sampler.mode": MODES}


def check_config(config) -> tuple[augment.Method, ...]:
  """Every value checked before any work (one line, exit 2): ranges, choices, the prompt, the methods."""
  check_values(config, GENERATION_RANGES, _CHOICES)
  if not config.output.dir:
    raise UserError("--config.output.dir is empty: name the directory the dataset goes to")
  check_prompt(config.prompt)
  methods = augment.parse_methods(config.methods, config.alpha, config.reference_quirks)
  if not methods:
    raise UserError("config.methods is empty: name at least one method, e.g. --config.methods=embed_cutmix_dropout")
  return methods


def check_prompt(prompt: str) -> None:
  """The prompt is a str.format template with one `{}` for the class name."""
  try:
    prompt.format("class name")
  except (ValueError, IndexError, KeyError) as e:
    raise UserError(f"--config.prompt={prompt!r} is not a prompt template ({type(e).__name__}: {e}): write one {{}} "
                    "where the class name goes, and {{ or }} for a literal brace") from None
  if prompt.format("a") == prompt.format("b"):
    logging.warning("--config.prompt=%r has no {}: every class gets the same prompt", prompt)
