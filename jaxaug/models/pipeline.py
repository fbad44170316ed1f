"""Loading a Stable Diffusion checkpoint (SD 2.1-unCLIP or plain SD 1.x/2.x) into Flax.

`load(model, dtype)` returns a `Pipeline` (modules, tokenizer, scheduler and constants: static) and a
parameter tree (arrays: what jit takes and shards). Every config is checked: options our Flax modules
cannot honour end in a UserError that names them, rather than in a silently different model.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxaug import fsutil
from jaxaug.errors import UserError
from jaxaug.models import attention, checkpoint, convert, schedulers
from jaxaug.models import tokenizer as tokenizer_lib
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
  dots: str = "native"  # the form of every model's matmuls and convolutions, resolved (attention.DOTS)

  @property
  def unet(self) -> UNet:
    return UNet(self.unet_config, dtype=self.dtype, attention=self.attention, dots=self.dots)

  @property
  def vae(self) -> AutoencoderKL:
    return AutoencoderKL(self.vae_config, dtype=self.dtype, dots=self.dots)

  @property
  def text_encoder(self) -> TextEncoder:
    return TextEncoder(self.text_config, dtype=self.dtype, dots=self.dots)

  @property
  def image_encoder(self) -> ImageEncoder | None:
    return None if self.image_config is None else ImageEncoder(self.image_config, dtype=self.dtype, dots=self.dots)

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


def unet_module(config: dict, dtype, where: str) -> UNet:
  return UNet(UNetConfig.from_diffusers(config, where), dtype=dtype)


def vae_module(config: dict, dtype, where: str) -> AutoencoderKL:
  return AutoencoderKL(VAEConfig.from_diffusers(config, where), dtype=dtype)


def text_module(config: dict, dtype, where: str = "text_encoder") -> TextEncoder:
  return TextEncoder(CLIPConfig.from_transformers(config, where, vision=False), dtype=dtype)


def image_module(config: dict, dtype, where: str = "image_encoder") -> ImageEncoder:
  return ImageEncoder(CLIPConfig.from_transformers(config, where, vision=True), dtype=dtype)


@dataclasses.dataclass(frozen=True)
class Architecture:
  """A checkpoint without its weights: the pipeline kind and each component's config as its file holds it.

  From a checkpoint directory (`read_architecture`) or written out (models/tiny.py); `describe` turns it into a
  Pipeline, so loading, the FLOP count and the experiment's checks read a checkpoint one way.
  """
  pipeline_class: str  # model_index.json's _class_name
  unet: dict
  vae: dict
  text_encoder: dict
  scheduler: dict
  image_encoder: dict | None = None  # unCLIP only, as the next two
  image_noising_scheduler: dict | None = None
  feature_extractor: dict | None = None

  @property
  def kind(self) -> str:
    return _kind(self.pipeline_class)


def _kind(pipeline_class: str) -> str:
  return "unclip" if pipeline_class in UNCLIP_PIPELINES else "sd"


def checkpoint_kind(root: Path) -> str:
  """'unclip' or 'sd', from the pipeline class model_index.json names; any other pipeline is a UserError."""
  return _kind(_pipeline_class(root))


def _pipeline_class(root: Path) -> str:
  cls = checkpoint.model_index(root).get("_class_name", "?")
  if cls not in UNCLIP_PIPELINES + SD_PIPELINES:
    raise UserError(f"{root}: unknown pipeline '{cls}' in model_index.json; jaxaug loads "
                    f"{', '.join(UNCLIP_PIPELINES + SD_PIPELINES)}")
  return cls


def read_architecture(root: Path) -> Architecture:
  """The checkpoint's config files (no weights read)."""
  arch = Architecture(pipeline_class=_pipeline_class(root), unet=checkpoint.read_config(root, "unet"),
                      vae=checkpoint.read_config(root, "vae"), text_encoder=checkpoint.read_config(root, "text_encoder"),
                      scheduler=checkpoint.read_config(root, "scheduler", "scheduler_config.json"))
  if arch.kind == "sd":
    return arch
  return dataclasses.replace(
      arch, image_encoder=checkpoint.read_config(root, "image_encoder"),
      image_noising_scheduler=checkpoint.read_config(root, "image_noising_scheduler", "scheduler_config.json"),
      feature_extractor=checkpoint.read_config(root, "feature_extractor", "preprocessor_config.json"))


def describe(arch: Architecture, name: str, where: str, dtype=jnp.float32, attention_impl: str = "xla") -> Pipeline:
  """The Pipeline of `arch`, every option checked (UserErrors name `where`, the checkpoint); no weights involved.

  Its tokenizer stands in at CLIP's 77 tokens (enough to count FLOPs); `load` puts the checkpoint's own there.
  """
  short = Path(where).name  # config errors name the component as <checkpoint name>/<component>
  unet = UNetConfig.from_diffusers(arch.unet, f"{short}/unet")
  vae = VAEConfig.from_diffusers(arch.vae, f"{short}/vae")
  text = CLIPConfig.from_transformers(arch.text_encoder, f"{short}/text_encoder", vision=False)
  if text.hidden_size != unet.cross_attention_dim:
    raise UserError(f"{where}: text_encoder hidden_size {text.hidden_size} does not match the UNet's "
                    f"cross_attention_dim {unet.cross_attention_dim}")
  sched_cls = arch.scheduler.get("_class_name", "?")
  if sched_cls not in SCHEDULER_NAMES:
    raise UserError(f"{where}/scheduler: unknown scheduler '{sched_cls}'; jaxaug runs {', '.join(SCHEDULER_NAMES)}")
  extra = {}
  if arch.kind == "unclip":
    image = CLIPConfig.from_transformers(arch.image_encoder, f"{short}/image_encoder", vision=True)
    want = 2 * image.projection_dim
    if unet.class_embed_input_dim != want:
      raise UserError(f"{where}/unet: projection_class_embeddings_input_dim is {unet.class_embed_input_dim} but the "
                      f"image encoder gives {want} (image embedding + noise-level embedding)")
    extra = dict(image_config=image, clip_image=clip_image_spec(arch.feature_extractor),
                 noising_alphas_cumprod=schedulers.alphas_cumprod(arch.image_noising_scheduler,
                                                                  f"{short}/image_noising_scheduler"))
  elif unet.class_embed_input_dim is not None:
    raise UserError(f"{where}/unet: the UNet has an unCLIP image embedding but model_index.json names "
                    f"{arch.pipeline_class}")
  schedulers.Scheduler.from_config(SCHEDULER_NAMES[sched_cls], arch.scheduler)  # checks the options now
  return Pipeline(
      name=name, kind=arch.kind, unet_config=unet, vae_config=vae, text_config=text,
      tokenizer=types.SimpleNamespace(model_max_length=77),
      scheduler_name=SCHEDULER_NAMES[sched_cls], scheduler_config=arch.scheduler,
      vae_scale=float(arch.vae.get("scaling_factor", 0.18215)), dtype=dtype, attention=attention_impl, **extra)


def param_shapes(pipe: Pipeline) -> dict:
  """Each component's parameter tree as shapes (fp32, as Flax initialises it): what a checkpoint's weights fill.

  Tracing four inits costs a second or more on every command (most of a tiny model's load), so the result is
  kept in the cache directory, keyed by the configs, jax, flax and the model code itself.
  """
  configs = (pipe.unet_config, pipe.vae_config, pipe.text_config, pipe.image_config)
  key = hashlib.sha256(repr((configs, jax.__version__, flax.__version__, _model_code_digest())).encode())
  path = fsutil.cache_dir() / "param_shapes" / f"{key.hexdigest()[:32]}.json"
  if (shapes := _SHAPES.get(path)) is None:
    shapes = _read_shapes(path)
    if shapes is None:
      shapes = _traced_param_shapes(pipe)
      _write_shapes(path, shapes)
    _SHAPES[path] = shapes
  return shapes


_SHAPES: dict[Path, dict] = {}  # this process's loads


@functools.cache
def _model_code_digest() -> str:
  """The source of jaxaug/models: a change to any module's layout must not meet shapes cached before it."""
  h = hashlib.sha256()
  for f in sorted(Path(__file__).parent.glob("*.py")):
    h.update(f.name.encode() + f.read_bytes())
  return h.hexdigest()


def _read_shapes(path: Path) -> dict | None:
  try:
    flat = json.loads(path.read_text())
    return traverse_util.unflatten_dict({tuple(k.split("/")): jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))
                                         for k, (shape, dtype) in flat.items()})
  except (OSError, ValueError, TypeError):
    return None  # none cached yet, or a damaged entry: trace again


def _write_shapes(path: Path, shapes: dict) -> None:
  flat = {"/".join(k): [list(v.shape), str(v.dtype)] for k, v in traverse_util.flatten_dict(shapes).items()}
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    fsutil.atomic_write_text(path, json.dumps(flat))
  except OSError:
    pass  # a read-only or full cache only costs the next command the tracing


def _traced_param_shapes(pipe: Pipeline) -> dict:
  unet, vae = UNet(pipe.unet_config), AutoencoderKL(pipe.vae_config)
  shapes = {"unet": init_shapes(unet, *unet_inputs(unet, 1, 8, 8)),
            "vae": init_shapes(vae, jnp.zeros((1, vae.in_channels, 8, 8))),
            "text_encoder": init_shapes(TextEncoder(pipe.text_config), jnp.zeros((1, 4), jnp.int32))}
  if pipe.image_config is not None:
    size = pipe.image_config.image_size
    shapes["image_encoder"] = init_shapes(ImageEncoder(pipe.image_config),
                                          jnp.zeros((1, size, size, pipe.image_config.num_channels)))
  return shapes


NAMINGS = {"unet": UNET_NAMING, "vae": VAE_NAMING, "text_encoder": convert.CLIP_TEXT,
           "image_encoder": convert.CLIP_VISION}


def load(model: str, dtype=jnp.float32, attention_impl: str = "auto", dots: str = "auto") -> tuple[Pipeline, dict]:
  """Loads `model` (a diffusers directory or hub id) as (Pipeline, params) with float params in `dtype`.

  `attention_impl` picks the UNet's attention kernel (attention.IMPLEMENTATIONS; auto: the fastest that
  runs here); `dots` the form of the models' matmuls and convolutions (attention.DOTS; auto: fp32_results on
  a CPU).
  """
  attention_impl = attention.resolve(attention_impl, dtype)
  dots = attention.resolve_dots(dots, dtype)
  root = checkpoint.resolve(model)
  pipe = describe(read_architecture(root), str(model), str(root), dtype, attention_impl)
  params = {name: convert.torch_to_flax(checkpoint.read_weights(root, name), target, NAMINGS[name],
                                        f"{root.name}/{name}")
            for name, target in param_shapes(pipe).items()}
  if pipe.kind == "unclip":
    params["image_normalizer"] = _normalizer(root, pipe.image_embed_dim)
  pipe = dataclasses.replace(pipe, tokenizer=_tokenizer(root, pipe.text_config.max_position_embeddings), dots=dots)
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


def clip_image_spec(config: dict) -> ClipImageSpec:
  """From the feature_extractor's preprocessor_config.json: the crop the vision tower sees, and the normalisation."""
  crop = config.get("crop_size", 224)
  size = crop["height"] if isinstance(crop, dict) else int(crop)
  return ClipImageSpec(size=size, mean=tuple(config["image_mean"]), std=tuple(config["image_std"]))


def _tokenizer(root: Path, positions: int) -> tokenizer_lib.Tokenizer:
  """The checkpoint's CLIP tokenizer (transformers', remembered: models/tokenizer.py).

  Its files are checked first (checkpoint.check_tokenizer), so each kind of damage names its file; whatever
  transformers still refuses becomes one line too. `positions`: the text encoder's, which prompts must fit.
  """
  d = checkpoint.check_tokenizer(root)
  tokenizer = tokenizer_lib.load(d)
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
