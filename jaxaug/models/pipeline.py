"""Loading a Stable Diffusion checkpoint (SD 2.1-unCLIP or plain SD 1.x/2.x) into Flax.

`load(model, dtype)` returns a `Pipeline` (modules, tokenizer, scheduler and constants: static) and a
parameter tree (arrays: what jit takes and shards). Every config is checked: options our Flax modules
cannot honour end in a UserError that names them, rather than in a silently different model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxaug.errors import UserError
from jaxaug.models import attention, checkpoint, convert, hf
from jaxaug.models.clip import ImageEncoder, TextEncoder

UNCLIP_PIPELINES = ("StableUnCLIPImg2ImgPipeline", "StableUnCLIPPipeline")
SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
SCHEDULERS = {"pndm": hf.PNDMScheduler, "ddim": hf.DDIMScheduler, "dpm++": hf.DPMSolverMultistepScheduler}
_SCHEDULER_NAMES = {"PNDMScheduler": "pndm", "DDIMScheduler": "ddim", "DPMSolverMultistepScheduler": "dpm++"}

# Config keys of diffusers' PyTorch UNet that the Flax UNet has no option for: allowed only at these values.
_UNET_FIXED = {
    "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5, "time_embedding_type": "positional",
    "resnet_time_scale_shift": "default", "addition_embed_type": None, "encoder_hid_dim": None,
    "encoder_hid_dim_type": None, "num_class_embeds": None, "time_cond_proj_dim": None, "conv_in_kernel": 3,
    "conv_out_kernel": 3, "center_input_sample": False, "downsample_padding": 1, "mid_block_scale_factor": 1,
    "dual_cross_attention": False, "class_embeddings_concat": False, "timestep_post_act": None,
    "time_embedding_dim": None, "time_embedding_act_fn": None, "attention_type": "default",
    "reverse_transformer_layers_per_block": None, "cross_attention_norm": None,
    "mid_block_only_cross_attention": None, "addition_time_embed_dim": None, "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0, "addition_embed_type_num_heads": 64,
}
_UNET_FIELDS = ("sample_size", "in_channels", "out_channels", "down_block_types", "up_block_types", "mid_block_type",
                "only_cross_attention", "block_out_channels", "layers_per_block", "attention_head_dim",
                "num_attention_heads", "cross_attention_dim", "dropout", "use_linear_projection", "flip_sin_to_cos",
                "freq_shift", "transformer_layers_per_block")
# upcast_attention asks for fp32 attention scores in bf16/fp16: the xla and cudnn kernels (attention.py)
# always compute them in fp32; diffusers' einsum path does not (a rounding difference, not a different model).
_UNET_IGNORED = ("upcast_attention", "class_embed_type", "projection_class_embeddings_input_dim")

_VAE_FIXED = {"use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True,
              "shift_factor": None, "latents_mean": None, "latents_std": None}
_VAE_FIELDS = ("in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
               "layers_per_block", "act_fn", "latent_channels", "norm_num_groups", "sample_size", "scaling_factor")
_VAE_IGNORED = ("force_upcast",)

# The UNet's projection class embedding (unCLIP) runs through the Flax UNet's `text_time` addition path:
# both are Dense -> SiLU -> Dense added to the timestep embedding. We feed the whole conditioning vector as
# `text_embeds` and an empty `time_ids`, so that path computes exactly class_embedding(vector).
UNET_NAMING = convert.Naming(numbered_suffix=True, renames=(("class_embedding", "add_embedding"),))
VAE_NAMING = convert.Naming(numbered_suffix=True, renames=(
    ("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out_0", "proj_attn")))


@dataclasses.dataclass(frozen=True)
class ClipImageSpec:
  """What the checkpoint's feature_extractor does to an image before the vision tower."""
  size: int
  mean: tuple[float, float, float]
  std: tuple[float, float, float]


@dataclasses.dataclass(frozen=True, eq=False)
class Pipeline:
  """The static half of a checkpoint; the arrays live in the params tree returned beside it."""
  name: str
  kind: str  # "unclip" or "sd"
  unet: Any
  vae: Any
  text_encoder: TextEncoder
  tokenizer: Any
  scheduler_name: str
  scheduler_config: dict
  vae_scale: float
  image_encoder: ImageEncoder | None = None
  clip_image: ClipImageSpec | None = None
  noising_alphas_cumprod: np.ndarray | None = None  # the image-noising DDPM schedule (unCLIP)
  dtype: Any = jnp.float32
  attention: str = "xla"  # the UNet's attention kernel, resolved (see attention.py)

  @property
  def latent_channels(self) -> int:
    return self.unet.in_channels

  @property
  def vae_factor(self) -> int:
    return 2 ** (len(self.vae.block_out_channels) - 1)

  @property
  def image_embed_dim(self) -> int:
    return self.image_encoder.config.projection_dim

  def make_scheduler(self, name: str | None = None):
    """A Flax scheduler configured from the checkpoint's scheduler/ folder (its own class by default)."""
    name = name or self.scheduler_name
    if name not in SCHEDULERS:
      raise UserError(f"unknown scheduler '{name}'; choose one of {', '.join(SCHEDULERS)}")
    config = dict(self.scheduler_config)
    spacing = config.get("timestep_spacing", "leading")
    if name in ("pndm", "ddim") and spacing != "leading":
      raise UserError(f"scheduler '{name}' supports timestep_spacing 'leading' only; the checkpoint says '{spacing}' "
                      "(use --config.sampler.scheduler=dpm++)")
    for flag in ("thresholding", "rescale_betas_zero_snr"):
      if config.get(flag):
        raise UserError(f"the checkpoint's scheduler sets {flag}=true, which jaxaug's schedulers do not support")
    if name == "dpm++":
      config.setdefault("algorithm_type", "dpmsolver++")
      config.setdefault("solver_order", 2)
    return SCHEDULERS[name].from_config(config)


def _module_kwargs(config: dict, fields, fixed: dict, ignored, where: str) -> dict:
  kwargs = {}
  for key, value in config.items():
    if key.startswith("_") or key in ignored:
      continue
    if key in fields:
      kwargs[key] = tuple(value) if isinstance(value, list) else value
    elif key in fixed:
      if value != fixed[key]:
        raise UserError(f"{where}: unsupported architecture option {key}={value!r} (jaxaug's Flax modules support "
                        f"only {fixed[key]!r})")
    else:
      raise UserError(f"{where}: unknown architecture option '{key}' in config.json; this checkpoint is not an "
                      "SD 1.x/2.x or SD 2.1-unCLIP model jaxaug can load")
  return kwargs


def unet_module(config: dict, dtype, where: str):
  kwargs = _module_kwargs(config, _UNET_FIELDS, _UNET_FIXED, _UNET_IGNORED, where)
  class_embed = config.get("class_embed_type")
  if class_embed == "projection":
    kwargs.update(addition_embed_type="text_time", addition_time_embed_dim=2,
                  projection_class_embeddings_input_dim=config["projection_class_embeddings_input_dim"])
  elif class_embed is not None:
    raise UserError(f"{where}: unsupported architecture option class_embed_type={class_embed!r} (only 'projection', "
                    "the unCLIP image embedding, or none)")
  return hf.UNet2DConditionModel(dtype=dtype, **kwargs)


def unet_inputs(unet, batch: int, height: int, width: int):
  """Dummy UNet inputs of the right shapes (for init and shape checks)."""
  sample = jnp.zeros((batch, unet.in_channels, height, width), jnp.float32)
  context = jnp.zeros((batch, 1, unet.cross_attention_dim), jnp.float32)
  extra = class_inputs(unet, jnp.zeros((batch, unet.projection_class_embeddings_input_dim or 0)))
  return sample, jnp.zeros((batch,), jnp.int32), context, extra


def class_inputs(unet, vector):
  """The UNet's extra conditioning for an unCLIP vector (None for plain SD)."""
  if unet.addition_embed_type is None:
    return None
  return {"text_embeds": vector, "time_ids": jnp.zeros((vector.shape[0], 0), vector.dtype)}


def init_shapes(module, *args, method=None):
  """The module's parameter tree as shapes only (traced, never computed)."""
  return jax.eval_shape(lambda: module.init(jax.random.key(0), *args, method=method))["params"]


def _cast(tree, dtype):
  return jax.tree.map(lambda x: np.asarray(x, dtype) if np.issubdtype(np.asarray(x).dtype, np.floating) else x, tree)


def _load_component(root: Path, name: str, module, naming, *init_args, method=None):
  where = f"{root.name}/{name}"
  target = init_shapes(module, *init_args, method=method)
  return convert.torch_to_flax(checkpoint.read_weights(root, name), target, naming, where)


def vae_module(config: dict, dtype, where: str):
  return hf.AutoencoderKL(dtype=dtype, **_module_kwargs(config, _VAE_FIELDS, _VAE_FIXED, _VAE_IGNORED, where))


def text_module(config: dict, dtype):
  return TextEncoder(hf.CLIPTextConfig.from_dict(config), dtype=dtype)


def image_module(config: dict, dtype):
  return ImageEncoder(hf.CLIPVisionConfig.from_dict(config), dtype=dtype)


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
  text = text_module(text_config, dtype)
  params = {
      "unet": _load_component(root, "unet", unet, UNET_NAMING, *unet_inputs(unet, 1, 8, 8)),
      "vae": _load_component(root, "vae", vae, VAE_NAMING, jnp.zeros((1, vae.in_channels, 8, 8))),
      "text_encoder": _load_component(root, "text_encoder", text, convert.TRANSFORMERS, jnp.zeros((1, 4), jnp.int32)),
  }
  if text_config.get("hidden_size") != unet.cross_attention_dim:
    raise UserError(f"{root}: text_encoder hidden_size {text_config.get('hidden_size')} does not match the UNet's "
                    f"cross_attention_dim {unet.cross_attention_dim}")
  scheduler_config = checkpoint.read_config(root, "scheduler", "scheduler_config.json")
  sched_cls = scheduler_config.get("_class_name", "?")
  if sched_cls not in _SCHEDULER_NAMES:
    raise UserError(f"{root}/scheduler: unknown scheduler '{sched_cls}'; jaxaug runs {', '.join(_SCHEDULER_NAMES)}")
  extra = {}
  if kind == "unclip":
    image_config = checkpoint.read_config(root, "image_encoder")
    image = image_module(image_config, dtype)
    size = image.config.image_size
    params["image_encoder"] = _load_component(root, "image_encoder", image, convert.TRANSFORMERS,
                                              jnp.zeros((1, size, size, image.config.num_channels)))
    params["image_normalizer"] = _normalizer(root, image.config.projection_dim)
    want = 2 * image.config.projection_dim
    if unet.projection_class_embeddings_input_dim != want:
      raise UserError(f"{root}/unet: projection_class_embeddings_input_dim is "
                      f"{unet.projection_class_embeddings_input_dim} but the image encoder gives {want} "
                      "(image embedding + noise-level embedding)")
    noising = checkpoint.read_config(root, "image_noising_scheduler", "scheduler_config.json")
    extra = dict(image_encoder=image, clip_image=_clip_image_spec(root),
                 noising_alphas_cumprod=np.asarray(hf.DDPMScheduler.from_config(noising).create_state()
                                                   .common.alphas_cumprod, np.float32))
  pipe = Pipeline(
      name=str(model), kind=kind, unet=unet, vae=vae, text_encoder=text, tokenizer=_tokenizer(root),
      scheduler_name=_SCHEDULER_NAMES[sched_cls], scheduler_config=scheduler_config,
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


def _tokenizer(root: Path):
  checkpoint.component_dir(root, "tokenizer")
  try:
    return hf.CLIPTokenizer.from_pretrained(str(root / "tokenizer"))
  except (OSError, ValueError, TypeError) as e:
    raise UserError(f"{root}/tokenizer cannot be read ({e}); it needs vocab.json and merges.txt") from None
