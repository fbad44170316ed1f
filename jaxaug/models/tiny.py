"""Tiny random-weight Stable Diffusion checkpoints with the real architectures, in the diffusers layout.

Tests and the demo write one of these and then load it through `jaxaug.models.load`, the same code path
as a real checkpoint. The tokenizer is a small byte-level BPE made here, so nothing is downloaded.
PyTorch diffusers loads these directories too (tests/make_golden.py does), which checks the layout.

    python -m jaxaug.models.tiny --out=/tmp/tiny-unclip [--kind=unclip|sd]
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import save_file

from jaxaug import fsutil
from jaxaug.models import convert, pipeline

TOKEN_WORDS = ("a", "photo", "of", "the", "red", "blue", "green", "circle", "square", "stripes", "checker")
VERSION = 2  # bump when the tiny architecture changes, so cached copies are rebuilt

_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=77, hidden_act="gelu", projection_dim=32, layer_norm_eps=1e-5)
_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
               patch_size=4, num_channels=3, hidden_act="gelu", projection_dim=32, layer_norm_eps=1e-5)
_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], block_out_channels=[32, 64],
            layers_per_block=1, act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=64,
            scaling_factor=0.18215, force_upcast=True)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


_UNET = dict(sample_size=16, in_channels=4, out_channels=4, down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
             up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], block_out_channels=[32, 64], layers_per_block=1,
             attention_head_dim=[2, 4])

# Full SD 2.1-unCLIP size (random weights, for benchmarks: throughput does not depend on weight values).
_FULL_TEXT = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                  max_position_embeddings=77, hidden_act="gelu", projection_dim=512, layer_norm_eps=1e-5)
_FULL_VISION = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                    image_size=224, patch_size=14, num_channels=3, hidden_act="gelu", projection_dim=1024,
                    layer_norm_eps=1e-5)
_FULL_VAE = dict(_VAE, down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                 block_out_channels=[128, 256, 512, 512], layers_per_block=2, sample_size=768)
_FULL_UNET = dict(sample_size=96, in_channels=4, out_channels=4,
                  down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                  up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, block_out_channels=[320, 640, 1280, 1280],
                  layers_per_block=2, attention_head_dim=[5, 10, 20, 20])
SIZES = {"tiny": (_TEXT, _VISION, _VAE, _UNET), "full": (_FULL_TEXT, _FULL_VISION, _FULL_VAE, _FULL_UNET)}
CLIP_VOCAB = 49408  # the full-size text encoder's vocabulary (CLIP's BPE)


def _unet_config(kind: str, base: dict, context_dim: int, image_dim: int) -> dict:
  config = dict(
      **base, cross_attention_dim=context_dim, use_linear_projection=True,
      flip_sin_to_cos=True, freq_shift=0, act_fn="silu", norm_num_groups=32, norm_eps=1e-5, upcast_attention=True,
      class_embed_type=None, projection_class_embeddings_input_dim=None)
  if kind == "unclip":
    config.update(class_embed_type="projection", projection_class_embeddings_input_dim=2 * image_dim)
  return config


def pndm_config() -> dict:
  return dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
              prediction_type="v_prediction", set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
              clip_sample=False, trained_betas=None)  # as SD 2.1-unCLIP's scheduler/ (no timestep_spacing)


def _scheduler_config(config: dict | None = None) -> dict:
  return {"_class_name": "PNDMScheduler", **(config or pndm_config())}


# SD 2.1-unCLIP's image_noising_scheduler.
NOISING_SCHEDULER = {"_class_name": "DDPMScheduler", "beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000,
                     "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": True, "prediction_type": "epsilon",
                     "variance_type": "fixed_small"}
PIPELINE_CLASSES = {"unclip": "StableUnCLIPImg2ImgPipeline", "sd": "StableDiffusionPipeline"}


def _feature_extractor(image_size: int) -> dict:
  """CLIP's image preprocessing at the vision tower's size."""
  return {"image_processor_type": "CLIPImageProcessor", "feature_extractor_type": "CLIPFeatureExtractor",
          "crop_size": {"height": image_size, "width": image_size}, "size": {"shortest_edge": image_size},
          "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
          "rescale_factor": 1 / 255, "resample": 3, "image_mean": CLIP_MEAN, "image_std": CLIP_STD}


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2/CLIP's reversible byte -> printable character table."""
  printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
      range(ord("®"), ord("ÿ") + 1))
  chars, extra = [], 0
  for b in range(256):
    if b in printable:
      chars.append(chr(b))
    else:
      chars.append(chr(256 + extra))
      extra += 1
  return dict(zip(range(256), chars))


def write_tokenizer(out: Path, words=TOKEN_WORDS, max_length: int = 77) -> int:
  """A small CLIP BPE tokenizer (bytes plus `words` as whole tokens); returns its vocabulary size."""
  out.mkdir(parents=True, exist_ok=True)
  base = list(_bytes_to_unicode().values())
  vocab = base + [c + "</w>" for c in base]
  merges = []
  for word in words:
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    while len(pieces) > 1:
      pair, merged = (pieces[0], pieces[1]), pieces[0] + pieces[1]
      if f"{pair[0]} {pair[1]}" not in merges:
        merges.append(f"{pair[0]} {pair[1]}")
        if merged not in vocab:
          vocab.append(merged)
      pieces = [merged] + pieces[2:]
  vocab += ["<|startoftext|>", "<|endoftext|>"]
  (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
  (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
  special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
             "pad_token": "<|endoftext|>"}
  (out / "special_tokens_map.json").write_text(json.dumps(special))
  (out / "tokenizer_config.json").write_text(json.dumps(
      {**special, "model_max_length": max_length, "tokenizer_class": "CLIPTokenizer", "do_lower_case": True,
       "errors": "replace"}))
  return len(vocab)


def _random_params(module, rng: np.random.Generator, *args, method=None) -> dict:
  """Random weights for `module` drawn in numpy from its parameter shapes (no compile, so it is quick).

  Kernels get a fan-in scaled normal; biases and norm scales get noise around 0 and 1, so that a mapping
  bug in either would show in the parity tests.
  """
  shapes = pipeline.init_shapes(module, *args, method=method)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return rng.normal(0.0, 1.0 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
    if name == "scale":
      return 1.0 + 0.1 * rng.normal(size=leaf.shape)
    if name == "bias":
      return 0.05 * rng.normal(size=leaf.shape)
    return 0.02 * rng.normal(size=leaf.shape)  # embeddings and CLIP's class_embedding

  return jax.tree_util.tree_map_with_path(lambda p, x: draw(p, x).astype(np.float32), shapes)


def _save(folder: Path, config: dict, config_name: str, state: dict, weights_name: str, dtype=np.float32):
  folder.mkdir(parents=True, exist_ok=True)
  (folder / config_name).write_text(json.dumps(config, indent=2))
  if state:
    save_file({k: np.ascontiguousarray(v, dtype) for k, v in state.items()}, str(folder / weights_name),
              metadata={"format": "pt"})


def random_params(kind: str, configs: dict, seed: int = 0) -> dict:
  """Random weights for every component of `configs` (as `component_configs` gives them), in Flax layout."""
  rng = np.random.default_rng(seed)
  text = pipeline.text_module(configs["text_encoder"], jnp.float32)
  params = {"text_encoder": _random_params(text, rng, jnp.zeros((1, 8), jnp.int32))}
  vae = pipeline.vae_module(configs["vae"], jnp.float32, "tiny/vae")
  params["vae"] = _random_params(vae, rng, jnp.zeros((1, 3, 16, 16)))
  unet = pipeline.unet_module(configs["unet"], jnp.float32, "tiny/unet")
  params["unet"] = _random_params(unet, rng, *pipeline.unet_inputs(unet, 1, 8, 8))
  if kind == "unclip":
    vision = configs["image_encoder"]
    image = pipeline.image_module(vision, jnp.float32)
    size = vision["image_size"]
    params["image_encoder"] = _random_params(image, rng, jnp.zeros((1, size, size, 3)))
    dim = vision["projection_dim"]
    params["image_normalizer"] = {"mean": rng.normal(0, 0.5, (1, dim)), "std": rng.uniform(0.5, 1.5, (1, dim))}
  return params


def component_configs(kind: str, text_base: dict, vision_base: dict, vae_base: dict, unet_base: dict,
                      vocab_size: int) -> dict:
  """The components' diffusers / transformers configs (without their class names)."""
  text_cfg = {**text_base, "vocab_size": vocab_size, "bos_token_id": vocab_size - 2, "eos_token_id": vocab_size - 1,
              "pad_token_id": vocab_size - 1}
  configs = {"text_encoder": text_cfg, "vae": dict(vae_base),
             "unet": _unet_config(kind, unet_base, text_base["hidden_size"], vision_base["projection_dim"])}
  if kind == "unclip":
    configs["image_encoder"] = dict(vision_base)
  return configs


def save_checkpoint(out: str | os.PathLike, kind: str, configs: dict, params: dict, dtype=np.float32,
                    scheduler: dict | None = None) -> Path:
  """Writes a diffusers-format checkpoint (everything but the tokenizer) from Flax-layout `params`; `scheduler`, a
  PNDMScheduler config, replaces SD 2.1's (the demo world's own noise schedule).

  The format `jaxaug.models.load` and PyTorch diffusers both read; used for random and trained weights alike.
  """
  out = Path(out)
  text_cfg = configs["text_encoder"]
  _save(out / "text_encoder", {**text_cfg, "model_type": "clip_text_model", "architectures": ["CLIPTextModel"]},
        "config.json", convert.flax_to_torch(params["text_encoder"], convert.TRANSFORMERS), "model.safetensors", dtype)
  _save(out / "vae", {"_class_name": "AutoencoderKL", **configs["vae"]}, "config.json",
        convert.flax_to_torch(params["vae"], pipeline.VAE_NAMING), "diffusion_pytorch_model.safetensors", dtype)
  _save(out / "unet", {"_class_name": "UNet2DConditionModel", **configs["unet"]}, "config.json",
        convert.flax_to_torch(params["unet"], pipeline.UNET_NAMING), "diffusion_pytorch_model.safetensors", dtype)
  _save(out / "scheduler", _scheduler_config(scheduler), "scheduler_config.json", {}, "")

  index = {"_class_name": PIPELINE_CLASSES["sd"], "_diffusers_version": "0.39.0",
           "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
           "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
           "vae": ["diffusers", "AutoencoderKL"], "safety_checker": [None, None],
           "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False}
  if kind == "unclip":
    vision_cfg = configs["image_encoder"]
    image_size = vision_cfg["image_size"]
    _save(out / "image_encoder", {**vision_cfg, "model_type": "clip_vision_model",
                                  "architectures": ["CLIPVisionModelWithProjection"]}, "config.json",
          convert.flax_to_torch(params["image_encoder"], convert.TRANSFORMERS), "model.safetensors", dtype)
    dim = vision_cfg["projection_dim"]
    normalizer = {k: np.asarray(v, np.float32).reshape(1, dim) for k, v in params["image_normalizer"].items()}
    _save(out / "image_normalizer", {"_class_name": "StableUnCLIPImageNormalizer", "embedding_dim": dim},
          "config.json", normalizer, "diffusion_pytorch_model.safetensors", dtype)
    _save(out / "image_noising_scheduler", NOISING_SCHEDULER, "scheduler_config.json", {}, "")
    _save(out / "feature_extractor", _feature_extractor(image_size), "preprocessor_config.json", {}, "")
    index = {k: v for k, v in index.items() if k not in ("safety_checker", "requires_safety_checker")}
    index.update(_class_name=PIPELINE_CLASSES["unclip"],
                 feature_extractor=["transformers", "CLIPImageProcessor"],
                 image_encoder=["transformers", "CLIPVisionModelWithProjection"],
                 image_normalizer=["stable_diffusion", "StableUnCLIPImageNormalizer"],
                 image_noising_scheduler=["diffusers", "DDPMScheduler"])
  (out / "model_index.json").write_text(json.dumps(index, indent=2))
  return out


def full_architecture(kind: str) -> pipeline.Architecture:
  """What `write_tiny(kind=kind, size="full")` writes (SD 2.1's architecture), as configs only: no weights drawn."""
  configs = component_configs(kind, *SIZES["full"], CLIP_VOCAB)
  arch = pipeline.Architecture(pipeline_class=PIPELINE_CLASSES[kind], unet=configs["unet"], vae=configs["vae"],
                               text_encoder=configs["text_encoder"], scheduler=_scheduler_config())
  if kind != "unclip":
    return arch
  vision = configs["image_encoder"]
  return dataclasses.replace(arch, image_encoder=vision, image_noising_scheduler=NOISING_SCHEDULER,
                             feature_extractor=_feature_extractor(vision["image_size"]))


def write_tiny(out: str | os.PathLike, kind: str = "unclip", seed: int = 0, size: str = "tiny") -> Path:
  """Writes a random `kind` ('unclip' or 'sd') checkpoint of `size` ('tiny', or 'full': SD 2.1 size in fp16)."""
  if kind not in ("unclip", "sd"):
    raise ValueError(f"kind must be 'unclip' or 'sd', not {kind!r}")
  text_base, vision_base, vae_base, unet_base = SIZES[size]
  out = Path(out)
  vocab_size = write_tokenizer(out / "tokenizer")
  configs = component_configs(kind, text_base, vision_base, vae_base, unet_base,
                              vocab_size if size == "tiny" else CLIP_VOCAB)
  params = random_params(kind, configs, seed)
  return save_checkpoint(out, kind, configs, params, np.float32 if size == "tiny" else np.float16)


def checkpoint_digest(root: str | os.PathLike) -> str:
  """sha256 over every file of a checkpoint directory (names and bytes), to tell two writes apart."""
  import hashlib

  root, h = Path(root), hashlib.sha256()
  for f in sorted(p for p in root.rglob("*") if p.is_file()):
    h.update(str(f.relative_to(root)).encode())
    h.update(f.read_bytes())
  return h.hexdigest()


def cached_tiny(kind: str = "unclip", cache_dir: str | os.PathLike | None = None, size: str = "tiny") -> Path:
  """The random checkpoint in a cache directory, written atomically on first use."""
  cache = Path(cache_dir).expanduser() if cache_dir else fsutil.cache_dir()
  path = cache / f"{'tiny' if size == 'tiny' else 'random-sd21'}-{kind}-v{VERSION}"
  if not (path / "model_index.json").is_file():
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tiny-{kind}-", dir=cache))
    write_tiny(tmp, kind, size=size)
    try:
      tmp.rename(path)
    except OSError:  # another process finished first
      shutil.rmtree(tmp, ignore_errors=True)
  return path


BUILTIN_MODELS = {"tiny": ("unclip", "tiny"), "tiny-sd": ("sd", "tiny"),
                  "random-sd21-unclip": ("unclip", "full"), "random-sd21": ("sd", "full")}


WORLD_MODEL = "world"  # the trained demo-world checkpoint shipped in the package (models/demo_world.py)
WORLD_DIR = Path(__file__).resolve().parent / "world_weights"  # where it ships


def resolve_model(name: str) -> str:
  """Built-in checkpoints or the name as given.

  world: the trained demo world (32 px, shipped inside the package); tiny / tiny-sd: random weights at toy
  size, for fast tests; random-sd21-unclip / random-sd21: full SD 2.1 size with random weights, for
  benchmarks (throughput does not depend on weight values). Random ones are written to a cache on first use.
  """
  if name == WORLD_MODEL:
    return str(WORLD_DIR)
  if name in BUILTIN_MODELS:
    kind, size = BUILTIN_MODELS[name]
    return str(cached_tiny(kind, size=size))
  return name


def main(argv=None):
  import argparse

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="directory to write the checkpoint to")
  parser.add_argument("--kind", default="unclip", choices=("unclip", "sd"))
  parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  print(write_tiny(args.out, args.kind, args.seed, args.size))


if __name__ == "__main__":
  main()
