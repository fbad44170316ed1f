"""DINOv2 ViT-S/B/L/g with patch 14 (transformers' Dinov2Model and Dinov2WithRegistersModel) in Flax, NHWC.

The image features of FD-DINOv2 (Stein et al. 2023, dgm-eval): the CLS token after the final layer norm,
from checkpoints in transformers' layout (`config.json` + `model.safetensors`, as the hub's
facebook/dinov2-{small,base,large,giant} and facebook/dinov2-with-registers-* hold them). Parameter names
are the checkpoint's (`encoder/layer/0/attention/attention/query`), so the shared converter maps them.

Position embeddings are trained on a 37 x 37 grid (518 px); at dgm-eval's 224 px the grid is 16 x 16 and
they are resampled bicubically. Two codes do that differently for the models without registers, and their
features differ far beyond rounding (tests/test_dinov2.py checks both):
- "dinov2" (default): facebookresearch/dinov2's torch-hub models, which dgm-eval runs (as did older
  transformers releases): `scale_factor=(grid + 0.1) / 37`, no antialias; register models: `size=grid`,
  antialias.
- "transformers": transformers 5.24: `size=grid`; no antialias for Dinov2Model, antialias for
  Dinov2WithRegistersModel (the same as the hub's register models).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxaug.errors import UserError
from jaxaug.models import checkpoint, convert
from jaxaug.models.attention import dot_product_attention
from jaxaug.models.clip import ACTIVATIONS
from jaxaug.models.pipeline import init_shapes

INPUT_SIZE = 224  # dgm-eval resizes every image to 224 x 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODEL_TYPES = {"dinov2": 0, "dinov2_with_registers": 4}  # model_type -> default num_register_tokens
# model_type -> {positions: (interpolate_offset, interpolate_antialias)}
POSITIONS = {
    "dinov2": {"dinov2": (0.1, False), "transformers": (0.0, False)},
    "dinov2_with_registers": {"dinov2": (0.0, True), "transformers": (0.0, True)},
}
# Checkpoint prefixes of a DINOv2 inside a model with a head (transformers' base_model_prefix).
_PREFIXES = ("dinov2.", "dinov2_with_registers.")
_BACKBONE = ("embeddings", "encoder", "layernorm")
# transformers 5's in-memory names (a `save_file(model.state_dict())`) -> the checkpoints' names.
_RENAMES = (("attention.q_proj.", "attention.attention.query."), ("attention.k_proj.", "attention.attention.key."),
            ("attention.v_proj.", "attention.attention.value."), ("attention.o_proj.", "attention.output.dense."),
            ("mlp.down_proj.", "mlp.weights_out."))
_DOWNLOAD = "e.g. `huggingface-cli download facebook/dinov2-large --local-dir DIR` where there is network"


@dataclasses.dataclass(frozen=True)
class Dinov2Config:
  """The architecture, from transformers' config.json (defaults are transformers'), and how positions resample."""
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  mlp_ratio: float = 4
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-6
  image_size: int = 224  # the trained grid is image_size // patch_size
  patch_size: int = 14
  num_channels: int = 3
  qkv_bias: bool = True
  layerscale_value: float = 1.0  # the initial value only: checkpoints hold the trained scales
  use_swiglu_ffn: bool = False
  num_register_tokens: int = 0
  interpolate_offset: float = 0.1
  interpolate_antialias: bool = False

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size

  @property
  def ffn_size(self) -> int:
    hidden = int(self.hidden_size * self.mlp_ratio)
    return (int(hidden * 2 / 3) + 7) // 8 * 8 if self.use_swiglu_ffn else hidden  # SwiGLU keeps 2/3, 8-aligned

  @classmethod
  def from_transformers(cls, config: dict, where: str, positions: str = "dinov2") -> "Dinov2Config":
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
      raise UserError(f"{where}: model_type {model_type!r} is not a DINOv2 (expected one of {', '.join(MODEL_TYPES)}); "
                      f"point at a DINOv2 checkpoint, {_DOWNLOAD}")
    if positions not in POSITIONS[model_type]:
      raise UserError(f"DINOv2 positions must be one of {', '.join(POSITIONS[model_type])}, not {positions!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in config.items() if k in names and v is not None}
    values.setdefault("num_register_tokens", MODEL_TYPES[model_type])
    if model_type == "dinov2":
      values["num_register_tokens"] = 0
    values["interpolate_offset"], values["interpolate_antialias"] = POSITIONS[model_type][positions]
    for key in ("image_size", "patch_size"):
      values[key] = _square(values.get(key, getattr(cls, key)), key, where)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_channels", "num_register_tokens"):
      _count(values.get(key, getattr(cls, key)), key, where, least=0 if key == "num_register_tokens" else 1)
    for key in ("mlp_ratio", "layer_norm_eps"):
      value = values.get(key, getattr(cls, key))
      if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise UserError(f"{where}: {key} must be a positive number, not {value!r}")
    out = cls(**values)
    if out.hidden_act not in ACTIVATIONS:
      raise UserError(f"{where}: unsupported hidden_act {out.hidden_act!r} (jaxaug has {', '.join(ACTIVATIONS)})")
    if out.hidden_size % out.num_attention_heads:
      raise UserError(f"{where}: hidden_size {out.hidden_size} is not a multiple of num_attention_heads "
                      f"{out.num_attention_heads}")
    return out


def _count(value, key: str, where: str, least: int = 1, square: str = "") -> int:
  if not isinstance(value, int) or isinstance(value, bool) or value < least:
    raise UserError(f"{where}: {key} must be an integer >= {least}{square}, not {value!r}")
  return value


def _square(value, key: str, where: str) -> int:
  """An int, or a [h, w] pair with h == w (DINOv2's position grid is square)."""
  if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
    value = value[0]
  return _count(value, key, where, square=" (or a square [n, n])")


# ---------------------------------------------------------------------------
# Preprocessing

def preprocess(images) -> np.ndarray:
  """uint8 images (B, H, W, 3), or a sequence of (H, W, 3) of any sizes -> float32 (B, 224, 224, 3), as
  dgm-eval's DINOv2 encoder prepares them.

  dgm-eval (`DINOv2Encoder.transform`, default `clean_resize=False`) opens each file as a PIL RGB image and
  applies torchvision's `Resize((224, 224), BICUBIC)`, which on a PIL image is `PIL.Image.resize((224, 224),
  BICUBIC)` on the uint8 pixels (PIL's bicubic, a = -0.5, antialiased when it shrinks; the aspect ratio is
  not kept, nothing is cropped), then `ToTensor` (/ 255) and `Normalize` with the ImageNet mean and std. The
  same here, with PIL; a grey image ((H, W) or (H, W, 1)) is made RGB first, as PIL's `convert('RGB')` does.
  """
  from PIL import Image

  resized = []
  for image in images:
    image = np.asarray(image)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 1):
      image = np.repeat(image.reshape(image.shape[:2] + (1,)), 3, axis=-1)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f"DINOv2 preprocess takes uint8 RGB images (H, W, 3), not {image.dtype} {image.shape}")
    resized.append(np.asarray(Image.fromarray(image).resize((INPUT_SIZE, INPUT_SIZE), Image.BICUBIC)))
  mean, std = np.float32(IMAGENET_MEAN), np.float32(IMAGENET_STD)
  return (np.stack(resized).astype(np.float32) / np.float32(255) - mean) / std


# ---------------------------------------------------------------------------
# Position embeddings on another grid

def _cubic(x: np.ndarray, a: float) -> np.ndarray:
  """Keys' cubic convolution kernel (PyTorch: a = -0.75; its antialiased variant, as PIL: a = -0.5)."""
  x = np.abs(x)
  return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1, np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def resample_matrix(size_in: int, size_out: int, scale: float, antialias: bool) -> np.ndarray:
  """(size_out, size_in) weights of PyTorch's 1-D bicubic resampling, align_corners=False.

  `scale` is input pixels per output pixel (in / out for `size=`, 1 / scale_factor for `scale_factor=`).
  Without antialias: 4 taps around `scale * (i + 0.5) - 0.5`, indices clamped to the edge. With antialias:
  the kernel stretched by the scale when shrinking, cut at the edges and renormalised; an axis whose size
  does not change is copied.
  """
  out = np.zeros((size_out, size_in))
  if antialias and size_in == size_out:
    return np.eye(size_in)
  for i in range(size_out):
    if antialias:
      stretch = max(scale, 1.0)
      center = scale * (i + 0.5)
      lo, hi = max(int(center - 2 * stretch + 0.5), 0), min(int(center + 2 * stretch + 0.5), size_in)
      weights = _cubic((np.arange(lo, hi) - center + 0.5) / stretch, -0.5)
      out[i, lo:hi] = weights / weights.sum()
    else:
      source = scale * (i + 0.5) - 0.5
      first = math.floor(source)
      for tap in range(4):
        out[i, min(max(first - 1 + tap, 0), size_in - 1)] += _cubic(np.float64(source - first - tap + 1), -0.75)
  return out


def resample_positions(patch_positions, grid: int, rows: int, cols: int, config: Dinov2Config):
  """(grid*grid, D) trained patch positions -> (rows*cols, D), in fp32, as `config.interpolate_*` say."""
  offset = config.interpolate_offset
  weights = [resample_matrix(grid, n, grid / (n + offset), config.interpolate_antialias) for n in (rows, cols)]
  square = patch_positions.astype(jnp.float32).reshape(grid, grid, -1)
  resized = jnp.einsum("hi,wj,ijd->hwd", *(jnp.asarray(w, jnp.float32) for w in weights), square)
  return resized.reshape(rows * cols, -1)


# ---------------------------------------------------------------------------
# The model

def _norm(config: Dinov2Config, dtype, name: str):
  return nn.LayerNorm(config.layer_norm_eps, dtype=dtype, use_fast_variance=False, name=name)


class _PatchEmbeddings(nn.Module):
  """`patch_embeddings.projection`: a stride-14 conv, (B, H, W, C) -> (B, H / 14, W / 14, D)."""
  config: Dinov2Config
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, pixels):
    p = self.config.patch_size
    conv = nn.Conv(self.config.hidden_size, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                   name="projection")
    return conv(pixels.astype(self.dtype))


class _Embeddings(nn.Module):
  """[CLS] + patches (a stride-14 conv), plus positions resampled to the input's grid, then the registers."""
  config: Dinov2Config
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, pixels):
    cfg = self.config
    d, grid = cfg.hidden_size, cfg.grid
    init = nn.initializers.normal(0.02)
    cls_token = self.param("cls_token", init, (1, 1, d))
    positions = self.param("position_embeddings", init, (1, grid * grid + 1, d))
    patches = _PatchEmbeddings(cfg, self.dtype, name="patch_embeddings")(pixels)
    b, rows, cols, _ = patches.shape
    x = jnp.concatenate([jnp.broadcast_to(cls_token.astype(patches.dtype), (b, 1, d)),
                         patches.reshape(b, rows * cols, d)], axis=1)
    if rows * cols != grid * grid or pixels.shape[1] != pixels.shape[2]:  # both codes skip only this case
      positions = jnp.concatenate([positions[0, :1].astype(jnp.float32),
                                   resample_positions(positions[0, 1:], grid, rows, cols, cfg)])[None]
    x = x + positions.astype(x.dtype)
    if cfg.num_register_tokens:
      registers = self.param("register_tokens", init, (1, cfg.num_register_tokens, d))
      x = jnp.concatenate([x[:, :1], jnp.broadcast_to(registers.astype(x.dtype), (b,) + registers.shape[1:]),
                           x[:, 1:]], axis=1)
    return x


class _SelfAttention(nn.Module):
  """`attention.attention`: query/key/value and the softmax over all tokens."""
  config: Dinov2Config
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    b, t, d = x.shape
    heads = cfg.num_attention_heads
    split = lambda y: y.reshape(b, t, heads, d // heads)  # noqa: E731
    dense = lambda name: nn.Dense(d, use_bias=cfg.qkv_bias, dtype=self.dtype, name=name)  # noqa: E731
    q, k, v = (split(dense(name)(x)) for name in ("query", "key", "value"))
    return dot_product_attention(q, k, v, fp32_scores=True).reshape(b, t, d)


class _Dense(nn.Module):
  """A container holding one Dense named `dense` (`attention.output.dense`)."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.features, dtype=self.dtype, name="dense")(x)


class _Attention(nn.Module):
  config: Dinov2Config
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = _SelfAttention(self.config, self.dtype, name="attention")(x)
    return _Dense(self.config.hidden_size, self.dtype, name="output")(y)


class _FeedForward(nn.Module):
  """fc1 -> GELU -> fc2; or SwiGLU (ViT-g): `weights_in` holds [gate; up], silu(gate) * up -> `weights_out`."""
  config: Dinov2Config
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    if cfg.use_swiglu_ffn:
      gate, up = jnp.split(nn.Dense(2 * cfg.ffn_size, dtype=self.dtype, name="weights_in")(x), 2, axis=-1)
      return nn.Dense(cfg.hidden_size, dtype=self.dtype, name="weights_out")(nn.silu(gate) * up)
    h = ACTIVATIONS[cfg.hidden_act](nn.Dense(cfg.ffn_size, dtype=self.dtype, name="fc1")(x))
    return nn.Dense(cfg.hidden_size, dtype=self.dtype, name="fc2")(h)


class _LayerScale(nn.Module):
  config: Dinov2Config
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("lambda1", nn.initializers.constant(self.config.layerscale_value), (self.config.hidden_size,))
    return x * scale.astype(x.dtype)


class _Layer(nn.Module):
  """One block; (carry, None) in and out, as nn.scan steps it."""
  config: Dinov2Config
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, _):
    cfg, dt = self.config, self.dtype
    x = x + _LayerScale(cfg, dt, name="layer_scale1")(_Attention(cfg, dt, name="attention")(_norm(cfg, dt, "norm1")(x)))
    x = x + _LayerScale(cfg, dt, name="layer_scale2")(_FeedForward(cfg, dt, name="mlp")(_norm(cfg, dt, "norm2")(x)))
    return x, None


class _Encoder(nn.Module):
  """`encoder.layer`: the blocks as one scan (one block to compile, not 40), parameters stacked on axis 0."""
  config: Dinov2Config
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    layers = nn.scan(_Layer, variable_axes={"params": 0}, split_rngs={"params": True},
                     length=self.config.num_hidden_layers)
    return layers(self.config, self.dtype, name="layer")(x, None)[0]


class Dinov2(nn.Module):
  """Normalised pixels (B, H, W, 3), H and W multiples of 14 -> all tokens after the final layer norm (B, T, D).

  T = 1 + registers + (H / 14) * (W / 14), in transformers' order: [CLS], the registers, the patches row by
  row (its `last_hidden_state`). `features` takes the CLS token.
  """
  config: Dinov2Config
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, pixels):
    x = _Embeddings(self.config, self.dtype, name="embeddings")(pixels)
    x = _Encoder(self.config, self.dtype, name="encoder")(x)
    return _norm(self.config, self.dtype, "layernorm")(x)


def features(module: Dinov2, params, x):
  """(B, hidden) image features: the CLS token after the final layer norm, as dgm-eval takes them (the torch-hub
  model's `forward`, `x_norm_clstoken`; transformers' `pooler_output`). Jit it with the module static."""
  return module.apply({"params": params}, x)[:, 0]


# ---------------------------------------------------------------------------
# Loading

def load(path, positions: str = "dinov2", dtype=np.float32) -> tuple[Dinov2Config, dict]:
  """(config, params) from a transformers DINOv2 checkpoint: a directory with config.json and
  model.safetensors (or sharded safetensors with their index), or one .safetensors file beside a config.json.

  `positions` picks the resampling of position embeddings (module docstring): "dinov2" as dgm-eval's
  torch-hub model (default), "transformers" as transformers 5.24. Params are numpy, in `dtype`.
  """
  path = Path(path).expanduser()
  if path.is_dir():
    config_path = path / "config.json"
  elif path.is_file() and path.suffix == ".safetensors":
    config_path = path.parent / "config.json"
  else:
    raise UserError(f"DINOv2 weights not found at {path}: give a directory with config.json and model.safetensors, "
                    f"or a .safetensors file beside its config.json ({_DOWNLOAD})")
  if not config_path.is_file():
    raise UserError(f"missing {config_path}: a DINOv2 checkpoint needs transformers' config.json beside its weights "
                    f"({_DOWNLOAD})")
  raw = checkpoint.read_json(config_path)
  if not isinstance(raw, dict):
    raise UserError(f"{config_path} is not a JSON object: the checkpoint is damaged (re-download it)")
  config = Dinov2Config.from_transformers(raw, str(config_path), positions)
  if path.is_dir():
    single = path / "model.safetensors"
    where, state = str(single if single.is_file() else path), checkpoint.read_weights(path.parent, path.name)
  else:
    where, state = str(path), checkpoint.read_safetensors(path)
  p = config.patch_size
  target = init_shapes(Dinov2(config), jnp.zeros((1, p, p, config.num_channels)))
  stacked = target["encoder"]["layer"]
  per_layer = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), stacked)
  target = {**target, "encoder": {"layer": {str(i): per_layer for i in range(config.num_hidden_layers)}}}
  params = convert.torch_to_flax(backbone_state(state, where), target, convert.TRANSFORMERS, where)
  layers = [params["encoder"]["layer"][str(i)] for i in range(config.num_hidden_layers)]
  params["encoder"] = {"layer": jax.tree.map(lambda *xs: np.stack(xs), *layers)}  # checkpoint layers -> scan's stack
  return config, jax.tree.map(lambda x: np.asarray(x, dtype), params)


def backbone_state(state: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
  """The backbone's tensors under the checkpoints' names (`embeddings.cls_token`, `encoder.layer.0...`).

  Reads the layouts transformers writes and reads: bare (Dinov2Model), under `dinov2.` or
  `dinov2_with_registers.` (a model with a head, whose head is dropped), and transformers 5's in-memory names
  (`q_proj`, `o_proj`, `gate_proj` + `up_proj`, `down_proj`). The mask token (pre-training only) is dropped.
  """
  prefixed = any(k.startswith(_PREFIXES) for k in state)
  out, owner = {}, {}
  for key, value in state.items():
    name = next((key[len(p):] for p in _PREFIXES if key.startswith(p)), key)
    if prefixed and name == key and name.split(".")[0] not in _BACKBONE:
      continue  # a head beside the backbone (classifier.*)
    for old, new in _RENAMES:
      name = name.replace(old, new)
    if name in owner:
      raise UserError(f"{where}: tensor '{name}' is in the checkpoint twice, as '{owner[name]}' and '{key}'; keep one "
                      "of them (re-save or re-download the weights)")
    owner[name] = key
    if name != "embeddings.mask_token":
      out[name] = value
  for gate in [k for k in out if ".mlp.gate_proj." in k]:
    up = gate.replace(".gate_proj.", ".up_proj.")
    if up not in out:
      raise UserError(f"{where}: tensor '{owner[gate]}' has no '{owner[gate].replace('.gate_proj.', '.up_proj.')}' "
                      "beside it (the SwiGLU feed-forward needs both); the weights file is incomplete (re-download it)")
    out[gate.replace(".gate_proj.", ".weights_in.")] = np.concatenate([out.pop(gate), out.pop(up)])
  return out


# ---------------------------------------------------------------------------
# Random checkpoints (tests; no download)

TINY = {"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 4,
        "image_size": 56, "patch_size": 14, "layer_norm_eps": 1e-6, "use_swiglu_ffn": False}


def random_state(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
  """Random weights in the hub's layout for a transformers config dict, drawn in numpy (so a test and the golden
  script, which loads the same numbers into PyTorch, agree). Scaled to keep every part of the network in play:
  peaked attention, layer norms and layer scales away from 1 and 0."""
  cfg = Dinov2Config.from_transformers(config, "random_state")
  rng = np.random.default_rng(seed)

  def normal(shape, std, mean=0.0):
    """Uniform bytes scaled to `std` (a ViT-g's draws in a fraction of a second): the spread is what matters."""
    noise = np.frombuffer(rng.bytes(math.prod(shape)), np.int8).astype(np.float32) + np.float32(0.5)
    return (np.float32(mean) + np.float32(std / 73.9) * noise).reshape(shape)  # int8's standard deviation: 73.9

  d, p, c = cfg.hidden_size, cfg.patch_size, cfg.num_channels
  state = {
      "embeddings.cls_token": normal((1, 1, d), 1.0),
      "embeddings.mask_token": np.zeros((1, d), np.float32),
      "embeddings.patch_embeddings.projection.weight": normal((d, c, p, p), (c * p * p) ** -0.5),
      "embeddings.patch_embeddings.projection.bias": normal((d,), 0.1),
      "embeddings.position_embeddings": normal((1, cfg.grid ** 2 + 1, d), 0.5),
  }
  if cfg.num_register_tokens:
    state["embeddings.register_tokens"] = normal((1, cfg.num_register_tokens, d), 1.0)

  def dense(name, n_out, n_in, gain=1.0):
    state[f"{name}.weight"] = normal((n_out, n_in), gain * n_in ** -0.5)
    state[f"{name}.bias"] = normal((n_out,), 0.1)

  def norm(name):
    state[f"{name}.weight"] = normal((d,), 0.1, 1.0)
    state[f"{name}.bias"] = normal((d,), 0.1)

  for i in range(cfg.num_hidden_layers):
    layer = f"encoder.layer.{i}"
    norm(f"{layer}.norm1")
    for part in ("query", "key"):
      dense(f"{layer}.attention.attention.{part}", d, d, gain=2.0)
    dense(f"{layer}.attention.attention.value", d, d)
    dense(f"{layer}.attention.output.dense", d, d)
    norm(f"{layer}.norm2")
    if cfg.use_swiglu_ffn:
      dense(f"{layer}.mlp.weights_in", 2 * cfg.ffn_size, d)
      dense(f"{layer}.mlp.weights_out", d, cfg.ffn_size)
    else:
      dense(f"{layer}.mlp.fc1", cfg.ffn_size, d)
      dense(f"{layer}.mlp.fc2", d, cfg.ffn_size)
    for scale in ("layer_scale1", "layer_scale2"):
      state[f"{layer}.{scale}.lambda1"] = normal((d,), 0.1, 0.5)
  norm("layernorm")
  return state


def write_random(directory, config: dict, seed: int = 0) -> Path:
  """A random DINOv2 checkpoint in transformers' layout (config.json + model.safetensors) under `directory`."""
  from safetensors.numpy import save_file

  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  architecture = "Dinov2WithRegistersModel" if config.get("model_type") == "dinov2_with_registers" else "Dinov2Model"
  (directory / "config.json").write_text(json.dumps({"architectures": [architecture], **config}, indent=2))
  save_file(random_state(config, seed), str(directory / "model.safetensors"))
  return directory
