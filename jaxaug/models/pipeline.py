"""Loading a Stable Diffusion checkpoint (SD 2.1-unCLIP or plain SD 1.x/2.x) into Flax.

`load(model, dtype)` returns a `Pipeline` (modules, tokenizer, scheduler and constants: static) and a
parameter tree (arrays: what jit takes and shards). Every config is checked: options our Flax modules
cannot honour end in a UserError that names them, rather than in a silently different model.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxaug.errors import UserError
from jaxaug.models import attention, checkpoint, convert, schedulers
from jaxaug.models.clip import CLIPConfig, ImageEncoder, TextEncoder
from jaxaug.models.unet import UNet, UNetConfig
from jaxaug.models.vae import AutoencoderKL, VAEConfig

UNCLIP_PIPELINES = ("StableUnCLIPImg2ImgPipeline", "StableUnCLIPPipeline")
SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
SCHEDULERS = ("pndm", "ddim", "dpm++")
SCHEDULER_NAMES = {"PNDMScheduler": "pndm", "DDIMScheduler": "ddim", "DPMSolverMultistepScheduler": "dpm++"}

# Our modules carry the checkpoint's own names; the VAE also accepts the names diffusers used before 0.14.
UNET_NAMING = convert.DIFFUSERS
VAE_NAMING = convert.Naming(numbered_suffix=True, aliases=(
    ("query", "to_q"), ("key", "to_k"), ("value", "to_v"), ("proj_attn", "to_out_0")))


@dataclasses.dataclass(frozen=True)
class ClipImageSpec:
  """What the checkpoint's feature_extractor does to an image before the vision tower."""
  size: int
  mean: tuple[float, float, float]
  std: tuple[float, float, float]


@dataclasses.dataclass(frozen=True, eq=False)
class Pipeline:
  """The static half of a checkpoint; the arrays live in the params tree returned beside it.

  Modules are built from their configs on access, so `dataclasses.replace(pipe, attention=...)` or
  `dtype=...` gives a pipeline whose modules compute with that kernel or dtype.
  """
  name: str
  kind: str  # "unclip" or "sd"
  unet_config: UNetConfig
  vae_config: VAEConfig
  text_config: CLIPConfig
  tokenizer: Any
  scheduler_name: str
  scheduler_config: dict
  vae_scale: float
  image_config: CLIPConfig | None = None
  clip_image: ClipImageSpec | None = None
  noising_alphas_cumprod: np.ndarray | None = None  # the image-noising DDPM schedule (unCLIP)
  dtype: Any = jnp.float32
  attention: str = "xla"  # the UNet's attention kernel, resolved (see attention.py)

  @property
  def unet(self) -> UNet:
    return UNet(self.unet_config, dtype=self.dtype, attention=self.attention)

  @property
  def vae(self) -> AutoencoderKL:
    return AutoencoderKL(self.vae_config, dtype=self.dtype)

  @property
  def text_encoder(self) -> TextEncoder:
    return TextEncoder(self.text_config, dtype=self.dtype)

  @property
  def image_encoder(self) -> ImageEncoder | None:
    return None if self.image_config is None else ImageEncoder(self.image_config, dtype=self.dtype)

  @property
  def latent_channels(self) -> int:
    return self.unet_config.in_channels

  @property
  def vae_factor(self) -> int:
    return 2 ** (len(self.vae_config.block_out_channels) - 1)

  @property
  def image_embed_dim(self) -> int:
    return self.image_config.projection_dim

  def make_scheduler(self, name: str | None = None) -> schedulers.Scheduler:
    """A scheduler configured from the checkpoint's scheduler/ folder (its own class by default)."""
    name = name or self.scheduler_name
    if name not in SCHEDULERS:
      raise UserError(f"unknown scheduler '{name}'; choose one of {', '.join(SCHEDULERS)}")
    # As diffusers' from_config: another class reads the keys it knows and keeps its own defaults for the rest.
    config = dict(self.scheduler_config)
    return schedulers.Scheduler.from_config(name, config)


def unet_inputs(unet: UNet, batch: int, height: int, width: int):
  """Dummy UNet inputs of the right shapes (for init and shape checks)."""
  sample = jnp.zeros((batch, unet.in_channels, height, width), jnp.float32)
  context = jnp.zeros((batch, 1, unet.cross_attention_dim), jnp.float32)
  vector = None if unet.class_embed_input_dim is None else jnp.zeros((batch, unet.class_embed_input_dim))
  return sample, jnp.zeros((batch,), jnp.int32), context, vector


def init_shapes(module, *args, method=None):
  """The module's parameter tree as shapes only (traced, never computed)."""
  return jax.eval_shape(lambda: module.init(jax.random.key(0), *args, method=method))["params"]


def _cast(tree, dtype):
  return jax.tree.map(lambda x: np.asarray(x, dtype) if np.issubdtype(np.asarray(x).dtype, np.floating) else x, tree)


def _load_component(root: Path, name: str, module, naming, *init_args, method=None):
  where = f"{root.name}/{name}"
  target = init_shapes(module, *init_args, method=method)
  return convert.torch_to_flax(checkpoint.read_weights(root, name), target, naming, where)


def unet_module(config: dict, dtype, where: str) -> UNet:
  return UNet(UNetConfig.from_diffusers(config, where), dtype=dtype)


def vae_module(config: dict, dtype, where: str) -> AutoencoderKL:
  return AutoencoderKL(VAEConfig.from_diffusers(config, where), dtype=dtype)


def text_module(config: dict, dtype, where: str = "text_encoder") -> TextEncoder:
  return TextEncoder(CLIPConfig.from_transformers(config, where, vision=False), dtype=dtype)


def image_module(config: dict, dtype, where: str = "image_encoder") -> ImageEncoder:
  return ImageEncoder(CLIPConfig.from_transformers(config, where, vision=True), dtype=dtype)


def load(model: str, dtype=jnp.float32, attention_impl: str = "auto") -> tuple[Pipeline, dict]:
  """Loads `model` (a diffusers directory or hub id) as (Pipeline, params) with float params in `dtype`.

  `attention_impl` picks the UNet's attention kernel (attention.IMPLEMENTATIONS; auto: the fastest that
  runs here).
  """
  attention_impl = attention.resolve(attention_impl, dtype)
  root = checkpoint.resolve(model)
  index = checkpoint.model_index(root)
  cls = index.get("_class_name", "?")
  if cls in UNCLIP_PIPELINES:
    kind = "unclip"
  elif cls in SD_PIPELINES:
    kind = "sd"
  else:
    raise UserError(f"{root}: unknown pipeline '{cls}' in model_index.json; jaxaug loads "
                    f"{', '.join(UNCLIP_PIPELINES + SD_PIPELINES)}")

  unet = unet_module(checkpoint.read_config(root, "unet"), dtype, f"{root.name}/unet")
  vae_config = checkpoint.read_config(root, "vae")
  vae = vae_module(vae_config, dtype, f"{root.name}/vae")
  text_config = checkpoint.read_config(root, "text_encoder")
  text = text_module(text_config, dtype, f"{root.name}/text_encoder")
  params = {
      "unet": _load_component(root, "unet", unet, UNET_NAMING, *unet_inputs(unet, 1, 8, 8)),
      "vae": _load_component(root, "vae", vae, VAE_NAMING, jnp.zeros((1, vae.in_channels, 8, 8))),
      "text_encoder": _load_component(root, "text_encoder", text, convert.CLIP_TEXT, jnp.zeros((1, 4), jnp.int32)),
  }
  if text.config.hidden_size != unet.cross_attention_dim:
    raise UserError(f"{root}: text_encoder hidden_size {text.config.hidden_size} does not match the UNet's "
                    f"cross_attention_dim {unet.cross_attention_dim}")
  scheduler_config = checkpoint.read_config(root, "scheduler", "scheduler_config.json")
  sched_cls = scheduler_config.get("_class_name", "?")
  if sched_cls not in SCHEDULER_NAMES:
    raise UserError(f"{root}/scheduler: unknown scheduler '{sched_cls}'; jaxaug runs {', '.join(SCHEDULER_NAMES)}")
  extra = {}
  if kind == "unclip":
    image_config = checkpoint.read_config(root, "image_encoder")
    image = image_module(image_config, dtype, f"{root.name}/image_encoder")
    size = image.config.image_size
    params["image_encoder"] = _load_component(root, "image_encoder", image, convert.CLIP_VISION,
                                              jnp.zeros((1, size, size, image.config.num_channels)))
    params["image_normalizer"] = _normalizer(root, image.config.projection_dim)
    want = 2 * image.config.projection_dim
    if unet.class_embed_input_dim != want:
      raise UserError(f"{root}/unet: projection_class_embeddings_input_dim is {unet.class_embed_input_dim} but the "
                      f"image encoder gives {want} (image embedding + noise-level embedding)")
    noising = checkpoint.read_config(root, "image_noising_scheduler", "scheduler_config.json")
    extra = dict(image_config=image.config, clip_image=_clip_image_spec(root),
                 noising_alphas_cumprod=schedulers.alphas_cumprod(noising, f"{root.name}/image_noising_scheduler"))
  elif unet.class_embed_input_dim is not None:
    raise UserError(f"{root}/unet: the UNet has an unCLIP image embedding but model_index.json names {cls}")
  schedulers.Scheduler.from_config(SCHEDULER_NAMES[sched_cls], scheduler_config)  # checks the options now
  pipe = Pipeline(
      name=str(model), kind=kind, unet_config=unet.config, vae_config=vae.config, text_config=text.config,
      tokenizer=_tokenizer(root, text.config.max_position_embeddings),
      scheduler_name=SCHEDULER_NAMES[sched_cls], scheduler_config=scheduler_config,
      vae_scale=float(vae_config.get("scaling_factor", 0.18215)), dtype=dtype, attention=attention_impl, **extra)
  models = {k: _cast(v, dtype) for k, v in params.items() if k != "image_normalizer"}
  return pipe, {**params, **models}  # the normaliser stays fp32: it is noise-schedule arithmetic


def _normalizer(root: Path, dim: int) -> dict:
  state = checkpoint.read_weights(root, "image_normalizer")
  out = {}
  for key in ("mean", "std"):
    if key not in state:
      raise UserError(f"{root}/image_normalizer: weights have no '{key}' (expected mean and std of shape (1, {dim}))")
    if state[key].shape != (1, dim):
      raise UserError(f"{root}/image_normalizer: '{key}' has shape {state[key].shape}, expected (1, {dim})")
    out[key] = state[key].astype(np.float32)
  return out


def _clip_image_spec(root: Path) -> ClipImageSpec:
  cfg = checkpoint.read_config(root, "feature_extractor", "preprocessor_config.json")
  crop = cfg.get("crop_size", 224)
  size = crop["height"] if isinstance(crop, dict) else int(crop)
  return ClipImageSpec(size=size, mean=tuple(cfg["image_mean"]), std=tuple(cfg["image_std"]))


def _tokenizer(root: Path, positions: int):
  """transformers' CLIPTokenizer (its only use in jaxaug; works with transformers 4.x and 5.x).

  Its files are checked first (checkpoint.check_tokenizer), so each kind of damage names its file; whatever
  transformers still refuses becomes one line too. `positions`: the text encoder's, which prompts must fit.
  """
  d = checkpoint.check_tokenizer(root)
  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
  os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
  from transformers import CLIPTokenizer  # imported here: heavy, and only loading needs it

  try:
    tokenizer = CLIPTokenizer.from_pretrained(str(d))
  except Exception as e:  # tokenizers raises bare Exceptions, transformers many types, for damaged content
    raise UserError(f"{d} cannot be read as a CLIP tokenizer ({type(e).__name__}: {' '.join(str(e).split())}); "
                    "re-download the checkpoint's tokenizer/ folder") from None
  _check_prompt_length(tokenizer.model_max_length, positions, d)
  return tokenizer


def _check_prompt_length(length, positions: int, d: Path) -> None:
  """Prompts are padded to model_max_length: without one (transformers then says 1e30) padding fails later."""
  if type(length) is int and 0 < length <= positions:
    return
  config = d / "tokenizer_config.json"
  given = "none" if type(length) is int and length > 10**9 else repr(length)
  what = (f"{config} gives no usable model_max_length (found {given})" if config.is_file() else
          f"missing {config}, which gives model_max_length")
  raise UserError(f"{what}; the text encoder takes at most {positions} tokens: re-download the checkpoint's "
                  f"tokenizer/ folder, or set \"model_max_length\": {positions} there")
