"""Deterministic inputs of the FID Inception's golden test, made the same way by tests/make_golden_inception.py
(PyTorch, pytorch-fid, clean-fid) and by tests/test_inception.py (jaxaug): random weights from a seed, keyed by
the state-dict name, and two small folders of PNG images. Only numpy and PIL, so that both venvs import it.

The weights are drawn per tensor name (not in one stream), so the two frameworks need not list the tensors in
the same order; conv weights are He-scaled and the batch norms near identity, so that 94 layers of random
weights keep activations of order one (features that vanish or explode would hide errors).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 2015
# (folder, [square sides]): squares, so that jaxaug's centre crop is the identity and both read the same pixels.
FOLDERS = {"a": (37, 64, 64, 100), "b": (48, 80, 120)}


def weight(name: str, shape: tuple[int, ...], seed: int = SEED) -> np.ndarray:
  rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
  if name.endswith("num_batches_tracked"):
    return np.zeros(shape, np.int64)
  if name.endswith("running_var"):
    return rng.uniform(0.5, 1.5, shape).astype(np.float32)
  if name.endswith("running_mean") or name.endswith("bn.bias"):
    return rng.uniform(-0.2, 0.2, shape).astype(np.float32)
  if name.endswith("bn.weight"):
    return rng.uniform(0.6, 1.4, shape).astype(np.float32)
  fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
  return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def weights(shapes: dict[str, tuple[int, ...]], seed: int = SEED) -> dict[str, np.ndarray]:
  """{state-dict name: tensor} for the given names and (torch-layout) shapes."""
  return {name: weight(name, tuple(shape), seed) for name, shape in shapes.items()}


def image(side: int, seed: int) -> np.ndarray:
  """A smooth random colour field with some grain (uint8, side x side x 3)."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
  smooth = np.asarray(Image.fromarray(coarse).resize((side, side), Image.Resampling.BILINEAR), np.float32)
  return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)


def write_folders(root: str | Path) -> dict[str, Path]:
  """The two folders of PNGs ({name: directory}), files named so that a sorted listing is their order."""
  out = {}
  for f, (name, sides) in enumerate(FOLDERS.items()):
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    for i, side in enumerate(sides):
      Image.fromarray(image(side, 100 * f + i)).save(folder / f"{i:03d}.png")
    out[name] = folder
  return out


def torch_file_sample() -> dict[str, np.ndarray]:
  """What tests/golden/state_{zip,legacy}.pth hold (tests of models/torch_file.py): tensors of several dtypes
  and shapes, one a transposed (non-contiguous) view and one a slice at an offset into another's storage."""
  rng = np.random.default_rng(SEED)
  base = rng.standard_normal((6, 5)).astype(np.float32)
  return {"conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "base": base,
          "base_t": base.T, "base_rows": base[2:5], "bn.num_batches_tracked": np.array(7, np.int64),
          "half": rng.standard_normal(5).astype(np.float16), "mask": np.array([True, False, True])}
