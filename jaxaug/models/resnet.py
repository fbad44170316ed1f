"""ResNet / ResNeXt classifiers (flax linen, BatchNorm) and ImageNet weights from torchvision or timm.

Layers are named after torchvision's (`conv1`, `bn1`, `layer2_0/downsample_conv`, `fc`), padding is
explicit and the stride sits in the 3x3 convolution (ResNet v1.5), so a torchvision- or timm-layout
`.safetensors` file maps onto the parameters one to one (`load_pretrained`, no torch needed).

`frozen_backbone=True` is the linear probe: the backbone always uses its running BatchNorm statistics
and passes no gradient, so only `fc` learns.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxaug.errors import UserError

# torchvision's init for convolutions; BatchNorm starts at scale 1, bias 0.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _pad(k: int):
  return ((k // 2, k // 2), (k // 2, k // 2))


class BasicBlock(nn.Module):
  """Two 3x3 convolutions (ResNet-18/34)."""
  planes: int
  strides: int
  conv: Any
  norm: Any
  expansion = 1

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.planes, (3, 3), (self.strides,) * 2, padding=_pad(3), name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.planes, (3, 3), padding=_pad(3), name="conv2")(y)
    y = self.norm(name="bn2")(y)
    return nn.relu(y + _shortcut(self, x, self.planes))


class Bottleneck(nn.Module):
  """1x1 down, 3x3 (grouped for ResNeXt, carries the stride), 1x1 up by 4 (ResNet-50, ResNeXt-50)."""
  planes: int
  strides: int
  conv: Any
  norm: Any
  groups: int = 1
  width_per_group: int = 64
  expansion = 4

  @nn.compact
  def __call__(self, x):
    width = int(self.planes * self.width_per_group / 64) * self.groups
    y = nn.relu(self.norm(name="bn1")(self.conv(width, (1, 1), padding=_pad(1), name="conv1")(x)))
    y = self.conv(width, (3, 3), (self.strides,) * 2, padding=_pad(3), feature_group_count=self.groups,
                  name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.norm(name="bn3")(self.conv(self.planes * 4, (1, 1), padding=_pad(1), name="conv3")(y))
    return nn.relu(y + _shortcut(self, x, self.planes * 4))


def _shortcut(block, x, features: int):
  """Identity, or a strided 1x1 convolution + BatchNorm where the shape changes (torchvision's `downsample`)."""
  if block.strides == 1 and x.shape[-1] == features:
    return x
  x = block.conv(features, (1, 1), (block.strides,) * 2, padding=_pad(1), name="downsample_conv")(x)
  return block.norm(name="downsample_bn")(x)


class ResNet(nn.Module):
  """A ResNet on NHWC images normalised with the ImageNet mean and std; returns float32 logits.

  small_stem: a 3x3 stride-1 stem without max-pool, for tiny images (tests, the demo).
  """
  stage_sizes: Sequence[int]
  block: str  # "basic" | "bottleneck"
  num_classes: int
  width: int = 64
  groups: int = 1
  width_per_group: int = 64
  small_stem: bool = False
  frozen_backbone: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    update_stats = train and not self.frozen_backbone
    conv = functools.partial(nn.Conv, use_bias=False, kernel_init=_conv_init, dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not update_stats, momentum=0.9, epsilon=1e-5,
                             dtype=self.dtype)
    x = jnp.asarray(x, self.dtype)
    if self.small_stem:
      x = nn.relu(norm(name="bn1")(conv(self.width, (3, 3), padding=_pad(3), name="conv1")(x)))
    else:
      x = nn.relu(norm(name="bn1")(conv(self.width, (7, 7), (2, 2), padding=_pad(7), name="conv1")(x)))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_pad(3))
    if self.block == "basic":
      block = functools.partial(BasicBlock, conv=conv, norm=norm)
    else:
      block = functools.partial(Bottleneck, conv=conv, norm=norm, groups=self.groups,
                                width_per_group=self.width_per_group)
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = block(self.width * 2**i, strides, name=f"layer{i + 1}_{j}")(x)
    x = jnp.mean(x, axis=(1, 2))
    if self.frozen_backbone:
      x = jax.lax.stop_gradient(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
    return jnp.asarray(x, jnp.float32)


ARCHS = {
    "resnet18": dict(stage_sizes=(2, 2, 2, 2), block="basic"),
    "resnet50": dict(stage_sizes=(3, 4, 6, 3), block="bottleneck"),
    "resnext50_32x4d": dict(stage_sizes=(3, 4, 6, 3), block="bottleneck", groups=32, width_per_group=4),
    # Three one-block stages of 16/32/64 channels: seconds to train on a CPU (tests, demo).
    "resnet_tiny": dict(stage_sizes=(1, 1, 1), block="basic", width=16, small_stem=True),
}


def create(arch: str, num_classes: int, *, frozen_backbone: bool = False, dtype=jnp.float32) -> ResNet:
  if arch not in ARCHS:
    raise UserError(f"unknown model {arch!r}: use one of {', '.join(ARCHS)}")
  return ResNet(num_classes=num_classes, frozen_backbone=frozen_backbone, dtype=dtype, **ARCHS[arch])


# ---------------------------------------------------------------------------
# torchvision / timm weights


def _torch_key(path: tuple[str, ...]) -> str:
  """A flax variable path -> its torchvision state-dict key (timm's ResNets use the same names)."""
  *modules, leaf = path
  parts = []
  for m in modules:
    if match := re.fullmatch(r"(layer\d+)_(\d+)", m):
      parts += [match.group(1), match.group(2)]
    else:
      parts.append({"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(m, m))
  leaf = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}.get(leaf, leaf)
  return ".".join(parts + [leaf])


def _to_flax(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel" and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO; grouped: (O, I/g, kh, kw) -> (kh, kw, I/g, O)
  if path[-1] == "kernel":
    return value.T
  return value


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file

  try:
    return load_file(path)
  except FileNotFoundError:
    raise UserError(f"pretrained weights {path!r} not found: pass --config.pretrained=<torchvision or timm "
                    ".safetensors file>") from None
  except Exception as e:  # safetensors has its own error type for bad headers
    raise UserError(f"cannot read pretrained weights {path!r} ({e}): pass a valid .safetensors file") from None


def check_pretrained(path: str) -> None:
  """A missing or unreadable weights file is one line before a run creates anything (reads the header only)."""
  from safetensors import safe_open

  try:
    with safe_open(path, framework="numpy") as f:
      names = list(f.keys())
  except FileNotFoundError:
    raise UserError(f"pretrained weights {path!r} not found: pass --config.pretrained=<torchvision or timm "
                    ".safetensors file>") from None
  except Exception as e:  # safetensors has its own error type for bad headers
    raise UserError(f"cannot read pretrained weights {path!r} ({e}): pass a valid .safetensors file") from None
  if not any(k.endswith("conv1.weight") for k in names):
    raise UserError(f"{path!r} has no conv1.weight: it is not a torchvision/timm ResNet state dict")


def load_pretrained(path: str, arch: str, variables: dict) -> dict:
  """Replaces the backbone of `variables` ({'params', 'batch_stats'}) with the weights in `path`.

  `path` is a torchvision- or timm-layout state dict saved as .safetensors (e.g. timm's
  `resnet50.tv_in1k`); a common key prefix such as `module.` is ignored. The `fc` head is not
  loaded: it keeps its fresh init, sized for this task's classes.
  """
  state = _read_safetensors(path)
  prefix = next((k[: -len("conv1.weight")] for k in sorted(state, key=len) if k.endswith("conv1.weight")), None)
  if prefix is None:
    raise UserError(f"{path!r} has no conv1.weight: it is not a torchvision/timm ResNet state dict")

  def load(collection):
    def leaf(key_path, current):
      names = tuple(k.key for k in key_path)
      if names[0] == "fc":
        return current
      key = prefix + _torch_key(names)
      if key not in state:
        raise UserError(f"{path!r} has no {key!r}: it does not hold {arch} weights (check --config.model)")
      value = _to_flax(names, np.asarray(state[key], np.float32))
      if value.shape != current.shape:
        raise UserError(f"{key!r} in {path!r} has shape {state[key].shape}, {arch} needs another: "
                        "the file holds a different architecture (check --config.model)")
      return jnp.asarray(value, current.dtype)

    return jax.tree_util.tree_map_with_path(leaf, collection)

  return {"params": load(variables["params"]), "batch_stats": load(variables["batch_stats"])}
