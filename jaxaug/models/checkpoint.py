"""Reading diffusers-format checkpoint directories: model_index.json, component configs, safetensors.

A checkpoint is a local directory or, on a machine with network, a Hugging Face hub id that is
downloaded once (safetensors and configs only). Only `.safetensors` weights are read, so torch is
never needed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from jaxaug.errors import UserError

_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors")
_HUB_PATTERNS = ["*.json", "*.txt", "*/diffusion_pytorch_model.safetensors", "*/model.safetensors",
                 "*/*.safetensors.index.json", "*/*-of-*.safetensors", "tokenizer/*"]


def resolve(model: str) -> Path:
  """A local checkpoint directory for `model` (a path, or a hub id fetched where there is network)."""
  path = Path(os.path.expanduser(model))
  if path.is_dir():
    if not (path / "model_index.json").is_file():
      raise UserError(f"{path} is not a diffusers checkpoint: it has no model_index.json (point --config.model at the "
                      "directory that holds model_index.json, unet/, vae/, ...)")
    return path
  if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
    raise UserError(f"checkpoint '{model}' not found: give a local diffusers directory or a hub id like "
                    "'stabilityai/stable-diffusion-2-1-unclip'")
  return _download(model)


def _download(repo_id: str) -> Path:
  from huggingface_hub import snapshot_download  # imported here: only hub ids need it

  try:
    return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
  except Exception as e:  # the hub client raises many types for offline / unknown / gated repos
    raise UserError(
        f"could not fetch '{repo_id}' from the Hugging Face hub ({type(e).__name__}); without network, download it "
        f"elsewhere (`huggingface-cli download {repo_id} --local-dir DIR`) and pass DIR") from None


def model_index(root: Path) -> dict:
  return read_json(root / "model_index.json")


def read_json(path: Path) -> dict:
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise UserError(f"missing {path}: the checkpoint is incomplete (re-download it)") from None
  except json.JSONDecodeError as e:
    raise UserError(f"{path} is not valid JSON ({e.msg}, line {e.lineno}): the checkpoint is damaged") from None


def component_dir(root: Path, name: str) -> Path:
  d = root / name
  if not d.is_dir():
    raise UserError(f"checkpoint {root} has no '{name}/' folder; a diffusers checkpoint for this pipeline needs it "
                    "(re-download the full checkpoint)")
  return d


def read_config(root: Path, name: str, filename: str = "config.json") -> dict:
  return read_json(component_dir(root, name) / filename)


def read_weights(root: Path, name: str) -> dict[str, np.ndarray]:
  """All tensors of one component, as numpy arrays with the checkpoint's names and layouts."""
  d = component_dir(root, name)
  for fname in _WEIGHT_NAMES:
    if (d / fname).is_file():
      return _load(d / fname)
    index = d / f"{fname}.index.json"
    if index.is_file():
      state = {}
      for shard in sorted(set(read_json(index)["weight_map"].values())):
        state.update(_load(d / shard))
      return state
  found = sorted(p.name for p in d.iterdir())
  raise UserError(f"no safetensors weights in {d} (found: {', '.join(found) or 'nothing'}); expected one of "
                  f"{', '.join(_WEIGHT_NAMES)}; convert .bin files to safetensors or re-download")


def _load(path: Path) -> dict[str, np.ndarray]:
  try:
    return load_file(str(path))
  except FileNotFoundError:
    raise UserError(f"missing weight file {path}: the checkpoint is incomplete (re-download it)") from None
  except Exception as e:  # safetensors raises its own error type for truncated or corrupt headers
    raise UserError(f"cannot read {path} ({e}): the file is damaged (re-download it)") from None
