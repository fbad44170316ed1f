"""The FID Inception-v3 (pool3, 2048-d) as clean-fid and pytorch-fid compute it, in flax linen (NHWC), no torch.

The network is the 2015-12-05 TensorFlow graph that FID was defined with, as pytorch-fid rebuilds it
(`InceptionV3(output_blocks=[3], use_fid_inception=True)`): torchvision's Inception-v3 layout with the
graph's quirks, which change the features and so the FID:
  - average pooling in the Mixed_5* (A), Mixed_6b-e (C) and Mixed_7b (E) blocks does not count the padding;
  - the last block, Mixed_7c, pools its fourth branch with a 3x3 max pool, not an average;
  - batch norm epsilon 1e-3; the features are the global average of Mixed_7c (pool3), before the 1008-way fc.

Images go in as clean-fid's `mode="clean"` prepares them (`clean_resize`): each uint8 channel resized to
299x299 as a float ('F' mode) PIL image, bicubic, clipped to [0, 255], not rounded; then `scale_pixels` maps
[0, 255] to the graph's input, (x - 128) / 128, as the graph itself (and clean-fid's network) does.

Weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a state dict; its layer names are the module
names here; https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/), read as it is (without
torch: models/torch_file.py) or as a `.safetensors` file converted once, wherever torch is installed:

    python -c "import torch, safetensors.torch as s; s.save_file({k: v.contiguous() for k, v in \
torch.load('pt_inception-2015-12-05-6726825d.pth', map_location='cpu').items()}, 'pt_inception-2015-12-05.safetensors')"

The fc layer and the batch norm counters the file holds are not needed and are ignored.
"""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxaug.errors import UserError

SIZE = 299
DIM = 2048
_WANTED = ("--config.inception_weights takes pytorch-fid's pt_inception-2015-12-05-6726825d.pth or a .safetensors "
           "converted from it (jaxaug/models/inception.py)")


class BasicConv(nn.Module):
  """Convolution without bias, batch norm (running statistics), ReLU: torchvision's BasicConv2d."""
  features: int
  kernel: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, (self.strides,) * 2, padding=((ph, ph), (pw, pw)), use_bias=False,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool(x):
  """3x3, stride 1, padding 1, the padding not counted (the TF graph's SAME average pool)."""
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x, strides: int = 2, pad: int = 0):
  return nn.max_pool(x, (3, 3), (strides, strides), padding=((pad, pad), (pad, pad)))


class BlockA(nn.Module):
  """Mixed_5b-d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool-1x1."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
    b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
    b5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class BlockB(nn.Module):
  """Mixed_6a: the grid 35 -> 17."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(384, (3, 3), strides=2, name="branch3x3")(x)
    bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool(x)], axis=-1)


class BlockC(nn.Module):
  """Mixed_6b-e: factorised 7x7 convolutions with `channels_7x7` channels inside."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
    b7 = BasicConv(c, (1, 1), name="branch7x7_1")(x)
    b7 = BasicConv(c, **row, name="branch7x7_2")(b7)
    b7 = BasicConv(192, **col, name="branch7x7_3")(b7)
    bd = BasicConv(c, (1, 1), name="branch7x7dbl_1")(x)
    for i, (features, shape) in enumerate([(c, col), (c, row), (c, col), (192, row)], start=2):
      bd = BasicConv(features, **shape, name=f"branch7x7dbl_{i}")(bd)
    bp = BasicConv(192, (1, 1), name="branch_pool")(_avg_pool(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class BlockD(nn.Module):
  """Mixed_7a: the grid 17 -> 8."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
    b3 = BasicConv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class BlockE(nn.Module):
  """Mixed_7b/c: split 1x3 / 3x1 branches; `max_pool` is the graph's quirk in Mixed_7c."""
  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    def split(y, prefix):
      return [BasicConv(384, (1, 3), padding=(0, 1), name=f"{prefix}a")(y),
              BasicConv(384, (3, 1), padding=(1, 0), name=f"{prefix}b")(y)]

    b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
    b3 = split(BasicConv(384, (1, 1), name="branch3x3_1")(x), "branch3x3_2")
    bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = split(BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd), "branch3x3dbl_3")
    pooled = _max_pool(x, strides=1, pad=1) if self.max_pool else _avg_pool(x)
    bp = BasicConv(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, *b3, *bd, bp], axis=-1)


class FIDInception(nn.Module):
  """(B, 299, 299, 3) in the graph's input range [-1, 1] -> (B, 2048) pool3 features."""

  @nn.compact
  def __call__(self, x):
    x = BasicConv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool(x)
    x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool(x)
    for name, pool in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = BlockA(pool, name=name)(x)
    x = BlockB(name="Mixed_6a")(x)
    for name, channels in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = BlockC(channels, name=name)(x)
    x = BlockD(name="Mixed_7a")(x)
    x = BlockE(name="Mixed_7b")(x)
    x = BlockE(max_pool=True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2), dtype=jnp.float32)


def scale_pixels(x):
  """[0, 255] (float) -> the graph's input: (x - 128) / 128, as the TF graph and clean-fid's network do."""
  return (x - 128.0) / 128.0


def features(params: dict, images) -> jax.Array:
  """Float (B, 299, 299, 3) pixels in [0, 255] (`clean_resize`'s output) -> (B, 2048) float32 pool3 features."""
  return FIDInception().apply(params, scale_pixels(jnp.asarray(images, jnp.float32)))


def clean_resize(image: np.ndarray, size: int = SIZE) -> np.ndarray:
  """uint8 HxWx3 -> float32 size x size x 3 as clean-fid's mode="clean": each channel a float PIL image, bicubic,
  clipped to [0, 255] and not rounded (its `make_resizer("PIL", False, "bicubic", (299, 299))`)."""
  channels = [np.asarray(Image.fromarray(np.asarray(image[..., c], np.float32), mode="F")
                         .resize((size, size), Image.Resampling.BICUBIC)) for c in range(3)]
  return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.float32)


# ---------------------------------------------------------------------------
# Weights


def init_variables(seed: int = 0) -> dict:
  """Random variables of the right shapes ({'params', 'batch_stats'}): the template `load` fills."""
  return jax.jit(FIDInception().init)(jax.random.key(seed), jnp.zeros((1, SIZE, SIZE, 3), jnp.float32))


def _shapes() -> dict:
  return jax.eval_shape(FIDInception().init, jax.random.key(0), jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32))


def torch_name(collection: str, path: tuple[str, ...]) -> str:
  """The state-dict name of a flax leaf: ('params', (Mixed_5b, branch1x1, conv, kernel)) ->
  'Mixed_5b.branch1x1.conv.weight'."""
  leaf = path[-1]
  if collection == "batch_stats":
    leaf = {"mean": "running_mean", "var": "running_var"}[leaf]
  else:
    leaf = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
  return ".".join(path[:-1] + (leaf,))


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else tuple(shape)


def to_flax(value: np.ndarray) -> np.ndarray:
  """A torch tensor's layout -> flax's: convolution kernels OIHW -> HWIO, the rest as they are."""
  return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value


def read_state(path: str | Path) -> dict[str, np.ndarray]:
  """The tensors of a .safetensors file or of pytorch-fid's .pth itself (models/torch_file.py, no torch); one line
  where the file is missing, unreadable or of another format."""
  from safetensors.numpy import load_file

  from jaxaug.models import torch_file

  path = Path(path).expanduser()
  if not path.is_file():
    state = "is a directory" if path.is_dir() else "does not exist"
    raise UserError(f"Inception weights {path} {state}: {_WANTED}")
  if path.suffix in (".pth", ".pt"):
    try:
      return torch_file.read_state_dict(path)
    except (OSError, torch_file.NotAStateDict) as e:
      raise UserError(f"cannot read Inception weights {path} as a PyTorch state dict ({e}): {_WANTED}") from None
  if path.suffix != ".safetensors":
    raise UserError(f"Inception weights {path} are neither .safetensors nor .pth: {_WANTED}")
  try:
    return load_file(str(path))
  except Exception as e:  # safetensors raises its own error type for bad headers
    raise UserError(f"cannot read Inception weights {path} ({e}): {_WANTED}") from None


def load(path: str | Path) -> dict:
  """The FID Inception's variables from a pytorch-fid state dict saved as .safetensors (see the module docstring);
  a missing tensor or one of another shape is one line naming it."""
  state = read_state(path)

  def collection(name: str, tree):
    def leaf(key_path, shape):
      names = tuple(k.key for k in key_path)
      key = torch_name(name, names)
      if key not in state:
        raise UserError(f"Inception weights {path} have no tensor {key!r}: not pytorch-fid's FID Inception state "
                        f"dict; {_WANTED}")
      value = to_flax(np.asarray(state[key], np.float32))
      if value.shape != shape.shape:
        raise UserError(f"tensor {key!r} in Inception weights {path} has shape {tuple(state[key].shape)}, the FID "
                        f"Inception needs {_torch_shape(shape.shape)}: another network's weights; {_WANTED}")
      return jnp.asarray(value)

    return jax.tree_util.tree_map_with_path(leaf, tree)

  shapes = _shapes()
  return {name: collection(name, tree) for name, tree in shapes.items()}


def torch_shapes() -> dict[str, tuple[int, ...]]:
  """{state-dict name: torch-layout shape} of every tensor `load` reads."""
  return {torch_name(name, tuple(k.key for k in key_path)): _torch_shape(leaf.shape)
          for name, tree in _shapes().items() for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
