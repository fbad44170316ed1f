"""Parameter names and layouts between PyTorch checkpoints and Flax trees.

Checkpoints in the diffusers layout store PyTorch names and layouts (`down_blocks.0.resnets.1.conv1.weight`,
conv kernels OIHW, dense kernels out x in). Flax wants nested dicts (`down_blocks_0/resnets_1/conv1/kernel`,
HWIO, in x out). The mapping is driven by the target tree (from `jax.eval_shape` of the module's init), so
every name is checked against what the module expects and a wrong checkpoint fails with the weight's name.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from flax import traverse_util

from jaxaug.errors import UserError

# diffusers containers whose children are numbered: `down_blocks.0` <-> `down_blocks_0`.
_NUMBERED = frozenset({
    "down_blocks", "up_blocks", "resnets", "attentions", "transformer_blocks", "upsamplers", "downsamplers",
    "to_out", "net",
})
# Checkpoint entries that are buffers, not parameters.
_BUFFERS = ("position_ids",)


@dataclasses.dataclass(frozen=True)
class Naming:
  """How one component's checkpoint names become paths in our Flax tree (whose modules carry the same names).

  numbered_suffix: diffusers style (`blocks.0` <-> `blocks_0`); otherwise transformers style
    (`layers.0` <-> `layers/0`).
  aliases: older checkpoint module names read as ours (after numbering), e.g. diffusers' pre-0.14 VAE
    attention `query` for `to_q`; only for reading, never written.
  base: the base model's module (transformers' base_model_prefix) that a checkpoint may leave out of a name:
    transformers 5 saves a bare CLIPTextModel as `embeddings...`, not `text_model.embeddings...`, and reads
    both; only for reading, never written.
  """
  numbered_suffix: bool
  aliases: tuple[tuple[str, str], ...] = ()
  base: str = ""


DIFFUSERS = Naming(numbered_suffix=True)
TRANSFORMERS = Naming(numbered_suffix=False)
CLIP_TEXT = Naming(numbered_suffix=False, base="text_model")  # CLIPTextModel
CLIP_VISION = Naming(numbered_suffix=False, base="vision_model")  # CLIPVisionModelWithProjection (+ visual_projection)


def _module_parts(torch_key: str, naming: Naming) -> list[str]:
  parts = torch_key.split(".")
  if naming.numbered_suffix:
    merged = []
    for p in parts:
      if p.isdigit() and merged:
        merged[-1] = f"{merged[-1]}_{p}"
      else:
        merged.append(p)
    parts = merged
  aliases = dict(naming.aliases)
  return [aliases.get(p, p) for p in parts]


def _to_flax_leaf(path: tuple[str, ...], value: np.ndarray, target: dict) -> tuple[tuple[str, ...], np.ndarray]:
  """Picks the Flax leaf name and layout for a checkpoint leaf by what the target tree has."""
  *mods, leaf = path
  mods = tuple(mods)
  if leaf in ("weight", "gamma"):
    if mods + ("scale",) in target:
      return mods + ("scale",), value
    if mods + ("embedding",) in target:
      return mods + ("embedding",), value
    want = target.get(mods + ("kernel",))
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
      if want is not None and len(want.shape) == 2 and value.shape[:2] == (1, 1):
        value = value[0, 0]  # a 1x1 conv stored where the module has a dense layer
    elif value.ndim == 2:
      value = value.T
    return mods + ("kernel",), value
  if leaf == "beta" and mods + ("bias",) in target:
    return mods + ("bias",), value
  return path, value


def torch_to_flax(state: dict[str, np.ndarray], target, naming: Naming, where: str) -> dict:
  """Maps a checkpoint state dict onto the Flax tree `target` (arrays or ShapeDtypeStructs).

  Raises UserError naming the first weight that is missing, unexpected or of the wrong shape.
  """
  flat_target = traverse_util.flatten_dict(target)
  names = full_names(state, naming, {p[0] for p in flat_target}, where)
  out = {}
  unexpected = []
  for key, value in state.items():
    if key.split(".")[-1] in _BUFFERS:
      continue
    path, value = _to_flax_leaf(tuple(_module_parts(names[key], naming)), np.asarray(value), flat_target)
    want = flat_target.get(path)
    if want is None:
      unexpected.append(key)
      continue
    if tuple(value.shape) != tuple(want.shape):
      raise UserError(
          f"{where}: weight '{key}' has shape {tuple(np.shape(state[key]))} but this architecture needs "
          f"{_torch_shape(path, want.shape)}; the config.json does not match the weights (re-download or re-convert "
          "the checkpoint)")
    out[path] = value
  missing = [p for p in flat_target if p not in out]
  if missing:
    names = ", ".join(flax_to_torch_key(p, naming) for p in missing[:3])
    raise UserError(
        f"{where}: {len(missing)} weight(s) missing from the checkpoint, e.g. {names}; the weights file is "
        "incomplete or belongs to another architecture (check config.json and re-download)")
  if unexpected:
    raise UserError(
        f"{where}: {len(unexpected)} weight(s) the architecture in config.json does not have, e.g. "
        f"{', '.join(unexpected[:3])}; config.json and the weights file do not belong together")
  return traverse_util.unflatten_dict(out)


def full_names(keys, naming: Naming, top: set[str], where: str) -> dict[str, str]:
  """{checkpoint name: the name from the top of our module tree}, adding `naming.base` where a name leaves it out.

  As transformers 5 reads them: per name, so a file in either layout loads, and so does one that mixes them.
  The same weight under both names is ambiguous (transformers silently takes one of the two): refused.
  """
  if not naming.base:
    return {k: k for k in keys}
  full, owner = {}, {}
  for key in keys:
    name = key if key.split(".")[0] in top else f"{naming.base}.{key}"
    if name in owner:
      raise UserError(f"{where}: weight '{name}' is in the checkpoint twice, as '{owner[name]}' and '{key}' (with and "
                      f"without the '{naming.base}.' prefix); keep one of them (re-save or re-download the weights)")
    owner[name], full[key] = key, name
  return full


def _torch_shape(path, shape) -> tuple[int, ...]:
  if path[-1] == "kernel" and len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if path[-1] == "kernel" and len(shape) == 2:
    return (shape[1], shape[0])
  return tuple(shape)


def flax_to_torch_key(path: tuple[str, ...], naming: Naming) -> str:
  """The checkpoint name of a Flax parameter path (inverse of the mapping above)."""
  *mods, leaf = path
  parts = []
  for m in mods:
    if naming.numbered_suffix:
      head, _, tail = m.rpartition("_")
      if head in _NUMBERED and tail.isdigit():
        parts.extend([head, tail])
        continue
    parts.extend(m.split("."))
  if leaf in ("kernel", "scale", "embedding"):
    leaf = "weight"
  return ".".join(parts + [leaf])


def flax_to_torch(params, naming: Naming) -> dict[str, np.ndarray]:
  """A Flax tree as a checkpoint state dict, PyTorch names and layouts (used to write tiny checkpoints)."""
  out = {}
  for path, value in traverse_util.flatten_dict(params).items():
    value = np.asarray(value)
    if path[-1] == "kernel" and value.ndim == 4:
      value = value.transpose(3, 2, 0, 1)
    elif path[-1] == "kernel" and value.ndim == 2:
      value = value.T
    out[flax_to_torch_key(path, naming)] = np.ascontiguousarray(value)
  return out
