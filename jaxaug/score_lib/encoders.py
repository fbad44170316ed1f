"""The encoders a set can be scored in: the unCLIP checkpoint's CLIP image tower, the FID Inception, DINOv2.

An `Encoder` is what the embedding step needs and nothing more: a host-side `fit` from one image (encoded
bytes or decoded pixels) to the array the device step takes (`size` x `size` x 3, of `host_dtype`), a jittable
`apply(params, batch) -> (B, dim) float32`, the parameters, and an `identity`: everything its output depends
on, which the embedding cache's key holds, so that another encoder or other weights never mix with a cache.

  clip       the checkpoint's own image tower (the space the unCLIP generator was conditioned on, so its FD
             flatters conditioned generation); images fitted as `data.images.fit_square`, normalised on device
  inception  clean-fid's FID: each whole image resized to 299 as its mode="clean" does (no crop: clean-fid
             squashes a non-square image), pool3 features (models/inception.py)
  dinov2     DINOv2's CLS features as dgm-eval uses them (models/dinov2.py: its resize and normalisation)

`LABELS` are the names every number is reported under: FD-CLIP, FD-Inception (the FID of papers), FD-DINOv2.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxaug import augment, condition
from jaxaug.data.images import decode_image, load_fit
from jaxaug.errors import UserError
from jaxaug.models import sd

NAMES = ("clip", "inception", "dinov2")
LABELS = {"clip": "CLIP", "inception": "Inception", "dinov2": "DINOv2"}
WEIGHT_FIELDS = {"inception": "inception_weights", "dinov2": "dinov2"}  # score config fields
_GET = {"inception": "pytorch-fid's pt_inception-2015-12-05-6726825d.pth, or a .safetensors converted from it "
                     "(jaxaug/models/inception.py)",
        "dinov2": "a transformers Dinov2Model directory or .safetensors file, e.g. facebook/dinov2-large"}


@dataclasses.dataclass(frozen=True)
class Encoder:
  """One way of embedding images (see the module docstring)."""
  name: str
  size: int  # side of the host array `fit` makes
  dim: int
  host_dtype: Any  # np.uint8 or np.float32
  fit: Callable[[bytes | np.ndarray], np.ndarray]  # one image -> (size, size, 3) host_dtype; BadImage if corrupt
  apply: Callable  # jittable (params, (B, size, size, 3)) -> (B, dim) float32
  params: Any
  identity: dict

  @property
  def label(self) -> str:
    return LABELS[self.name]


def parse(spec: str) -> tuple[str, ...]:
  """'clip,inception' -> ('clip', 'inception'): known names, each once, in the given order; one line otherwise."""
  names = tuple(n.strip() for n in spec.split(",") if n.strip())
  unknown = [n for n in names if n not in NAMES]
  if unknown or not names:
    raise UserError(f"--config.encoders={spec!r}: {'unknown encoder ' + unknown[0] if unknown else 'no encoder'}; "
                    f"choose one or more of {', '.join(NAMES)}, comma-separated")
  if len(set(names)) != len(names):
    raise UserError(f"--config.encoders={spec!r} names an encoder twice")
  return names


def file_identity(path: str | Path) -> dict:
  """A weights file or directory as the cache sees it: its path and every file's name, size and mtime."""
  root = Path(path).expanduser().resolve()
  files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
  return {"path": str(root), "files": [[str(p.relative_to(root)) if root.is_dir() else p.name, p.stat().st_size,
                                        p.stat().st_mtime_ns] for p in files]}


def clip(pipe, params: dict, identity: dict) -> Encoder:
  """The unCLIP checkpoint's image tower; `params` is {'image_encoder': ...}, `identity` what score keyed its CLIP
  cache with before there were other encoders (so that runs keep their caches)."""
  size = pipe.clip_image.size

  def apply(tower, images):
    pixels = condition.clip_normalize(pipe, condition.clip_resize(pipe, augment.to_float(images)))
    return sd.encode_image(pipe, tower, pixels)

  return Encoder("clip", size, pipe.image_embed_dim, np.uint8, functools.partial(load_fit, size=size), apply, params,
                 identity)


def clip_checkpoint(model: str, dtype: str) -> Encoder:
  """The image tower of the unCLIP checkpoint `model` ('fp32' or 'bf16'); its identity is what score keyed its CLIP
  cache with before there were other encoders (so that runs keep their caches)."""
  from jaxaug.models import checkpoint
  from jaxaug.models.pipeline import load
  from jaxaug.models.tiny import resolve_model
  from jaxaug.score_lib.embed import model_identity

  root = resolve_model(model)
  pipe, params = load(root, {"fp32": jnp.float32, "bf16": jnp.bfloat16}[dtype])
  if pipe.image_encoder is None or "image_encoder" not in params:
    raise UserError(f"model {model!r} has no CLIP image tower (a plain Stable Diffusion checkpoint): score with "
                    f"an unCLIP checkpoint, e.g. --config.model={checkpoint.MIRROR} or a local copy")
  identity = {**model_identity(root), "dtype": dtype, "size": pipe.clip_image.size}
  return clip(pipe, {"image_encoder": params["image_encoder"]}, identity)


def inception(weights: str) -> Encoder:
  """The FID Inception from pytorch-fid's weights: its .pth, or a .safetensors converted from it."""
  from jaxaug.models import inception as net

  return inception_from(net.load(weights), {"encoder": "inception", "weights": file_identity(weights),
                                            "resize": "clean-fid clean, 299"})


def inception_from(variables: dict, identity: dict) -> Encoder:
  """The FID Inception with given variables (`models.inception.load`'s, or random ones for a benchmark)."""
  from jaxaug.models import inception as net

  return Encoder("inception", net.SIZE, net.DIM, np.float32, _clean_fit, net.features, variables, identity)


def _clean_fit(data) -> np.ndarray:
  from jaxaug.models import inception as net

  return net.clean_resize(decode_image(data))


def dinov2(weights: str) -> Encoder:
  """DINOv2 (a transformers-layout directory or .safetensors file), CLS features."""
  from jaxaug.models import dinov2 as net

  config, params = net.load(weights)
  apply = functools.partial(net.features, net.Dinov2(config))
  return Encoder("dinov2", net.INPUT_SIZE, config.hidden_size, np.float32, _dinov2_fit, apply, params,
                 {"encoder": "dinov2", "weights": file_identity(weights)})


def _dinov2_fit(data) -> np.ndarray:
  from jaxaug.models import dinov2 as net

  return np.asarray(net.preprocess(decode_image(data)[None]), np.float32)[0]


def check_weights(name: str, path: str) -> None:
  """A missing weights location of `name` is one line before any work (the loaders check what is inside)."""
  field = WEIGHT_FIELDS[name]
  if not path:
    raise UserError(f"--config.encoders names {name} but --config.{field} is empty: pass its weights ({_GET[name]})")
  if not Path(path).expanduser().exists():
    raise UserError(f"{name} weights {path} do not exist: fix --config.{field}")


def build(name: str, *, clip_encoder: Callable[[], Encoder], inception_weights: str, dinov2_weights: str) -> Encoder:
  """The encoder called `name`; `clip_encoder` makes the CLIP one (it needs the loaded checkpoint)."""
  if name == "clip":
    return clip_encoder()
  if name == "inception":
    return inception(inception_weights)
  return dinov2(dinov2_weights)
