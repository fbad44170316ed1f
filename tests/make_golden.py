"""Records PyTorch diffusers reference outputs for the tiny checkpoints (tests/golden/unclip.npz) and for the
trained demo world shipped in the package (tests/golden/world.npz), and transformers' DINOv2 features on
random weights of the hub's configs (tests/golden/dinov2.npz, for tests/test_dinov2.py).

This is the one script in the project that uses torch. It writes the tiny checkpoints with jaxaug's own
writer (so PyTorch diffusers also checks that layout), runs diffusers 0.39.0's StableUnCLIPImg2ImgPipeline
(fp32 and bf16) and StableDiffusionImg2ImgPipeline on fixed inputs, and saves the intermediate and final
outputs that tests/test_parity.py compares against.

    python -m venv /tmp/golden && . /tmp/golden/bin/activate
    pip install torch==2.13.0 -e ".[reference]"      # transformers 5.24 made dinov2.npz (torch 2.14.1 moves the
                                                     # world goldens by up to 1.1e-5, inside the tests' tolerances)
    python tests/make_golden.py            # rewrites tests/golden/unclip.npz, world.npz and dinov2.npz
    python tests/make_golden.py dinov2     # only tests/golden/dinov2.npz (transformers' DINOv2, see _dinov2)
    python tests/make_golden.py world      # only tests/golden/world.npz (after the shipped world changed)
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler, StableDiffusionImg2ImgPipeline,
                       StableUnCLIPImg2ImgPipeline)

from jaxaug.models import tiny

OUT = Path(__file__).parent / "golden" / "unclip.npz"
WORLD_OUT = Path(__file__).parent / "golden" / "world.npz"
DINOV2_OUT = Path(__file__).parent / "golden" / "dinov2.npz"
WORLD_PROMPTS = ["a photo of a star", "a photo of a ring"]
WORLD = {"steps": 10, "guidance": 3.0, "unet_t": 401}
PROMPTS = ["a photo of a red circle", "blue stripes"]
GUIDANCE = 2.0
STEPS = 3
UNET_T = 501
NOISE_LEVELS = (0, 100)
SCHEDULERS = {"pndm": (PNDMScheduler, {}), "ddim": (DDIMScheduler, {}),
              # PyTorch's default DPM-Solver++ ends at sigma 0; diffusers' Flax one ended at sigma_min.
              "dpm++": (DPMSolverMultistepScheduler, {}),
              "dpm++_sigma_min": (DPMSolverMultistepScheduler, {"final_sigmas_type": "sigma_min"})}
IMG2IMG = {"steps": 4, "strength": 0.5, "guidance": 7.5, "size": 32, "seed": 11}


def main():
  torch.manual_seed(0)
  rng = np.random.default_rng(1234)
  with tempfile.TemporaryDirectory() as tmp:
    root = tiny.write_tiny(Path(tmp) / "tiny-unclip", "unclip", seed=0)
    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(str(root), torch_dtype=torch.float32)
    pipe16 = StableUnCLIPImg2ImgPipeline.from_pretrained(str(root), torch_dtype=torch.bfloat16)
    rec = {"checkpoint_sha256": np.array(tiny.checkpoint_digest(root))}
    sd_root = tiny.write_tiny(Path(tmp) / "tiny-sd", "sd", seed=0)
    sd_pipe = StableDiffusionImg2ImgPipeline.from_pretrained(str(sd_root), torch_dtype=torch.float32)
    rec["sd_checkpoint_sha256"] = np.array(tiny.checkpoint_digest(sd_root))
  pipe.set_progress_bar_config(disable=True)
  batch = len(PROMPTS)
  size = pipe.feature_extractor.crop_size["height"]
  res = 2 * size  # generated image size; latents are res / 2 for the tiny VAE
  h = res // pipe.vae_scale_factor

  # Fixed inputs.
  mean = np.array(pipe.feature_extractor.image_mean, np.float32)[:, None, None]
  std = np.array(pipe.feature_extractor.image_std, np.float32)[:, None, None]
  pixels01 = rng.uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
  pixel_values = (pixels01 - mean) / std
  latents = rng.normal(size=(batch, 4, h, h)).astype(np.float32)
  embed_noise = rng.normal(size=(batch, pipe.image_encoder.config.projection_dim)).astype(np.float32)
  rec.update(pixel_values=pixel_values, latents=latents, embed_noise=embed_noise,
             guidance=np.float32(GUIDANCE), unet_t=np.int32(UNET_T))

  with torch.no_grad():
    ids = pipe.tokenizer(PROMPTS, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    empty = pipe.tokenizer([""] * batch, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                           truncation=True, return_tensors="pt").input_ids
    text = pipe.text_encoder(ids)[0]
    uncond_text = pipe.text_encoder(empty)[0]
    image_embeds = pipe.image_encoder(torch.from_numpy(pixel_values)).image_embeds
    rec.update(input_ids=ids.numpy(), empty_ids=empty.numpy(), text_hidden=text.numpy(),
               uncond_text_hidden=uncond_text.numpy(), image_embeds=image_embeds.numpy())
    for level in NOISE_LEVELS:
      vec = pipe.noise_image_embeddings(image_embeds, noise_level=level, noise=torch.from_numpy(embed_noise))
      rec[f"image_vector_{level}"] = vec.numpy()

    # One guided UNet evaluation: unconditional half with an empty prompt and an all-zero image vector.
    vec = torch.from_numpy(rec["image_vector_0"])
    lat = torch.from_numpy(latents)
    out = pipe.unet(torch.cat([lat, lat]), UNET_T, encoder_hidden_states=torch.cat([uncond_text, text]),
                    class_labels=torch.cat([torch.zeros_like(vec), vec])).sample
    uncond, cond = out.chunk(2)
    rec["unet_guided"] = (uncond + GUIDANCE * (cond - uncond)).numpy()
    rec["vae_decoded"] = pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample.numpy()

    # Whole samples: the pipeline draws the image-embedding noise from the generator, so record what it used.
    for name, (cls, extra) in SCHEDULERS.items():
      pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
      images, sample_noise = _unclip_sample(pipe, pixel_values, latents, image_embeds, torch.float32)
      rec[f"{name}_timesteps"] = pipe.scheduler.timesteps.numpy()
      rec[f"{name}_embed_noise"] = sample_noise.numpy()
      rec[f"{name}_images"] = images

    # bf16: the guided UNet output and a PNDM sample, for the bf16 parity test's yardstick.
    pipe16.set_progress_bar_config(disable=True)
    bf = torch.bfloat16
    out = pipe16.unet(torch.cat([lat, lat]).to(bf), UNET_T, encoder_hidden_states=torch.cat([uncond_text, text]).to(bf),
                      class_labels=torch.cat([torch.zeros_like(vec), vec]).to(bf)).sample.float()
    uncond, cond = out.chunk(2)
    rec["bf16_unet_guided"] = (uncond + GUIDANCE * (cond - uncond)).numpy()
    embeds16 = pipe16.image_encoder(torch.from_numpy(pixel_values).to(bf)).image_embeds
    rec["bf16_pndm_images"], _ = _unclip_sample(pipe16, pixel_values, latents, embeds16, bf)

    rec.update(_sd_img2img(sd_pipe, rng))

  OUT.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(OUT, **rec)
  print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB): {', '.join(sorted(rec))}")
  _world()


def _world():
  """The trained demo world as shipped: its encoders, a guided UNet call, a VAE decode and a whole PNDM sample
  on two real target-domain images. Trained weights expose what random ones hide (a swapped conditioning
  half or a wrong normaliser still gives noise with random weights, not with these)."""
  from jaxaug.data import world
  from jaxaug.models import tiny as builtin

  root = builtin.resolve_model("world")
  pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(root, torch_dtype=torch.float32)
  pipe.set_progress_bar_config(disable=True)
  source = world.WorldSource("test", 4)
  real = np.stack([source.read(3 * 4), source.read(5 * 4)])  # a star and a ring
  size = pipe.feature_extractor.crop_size["height"]
  mean = np.array(pipe.feature_extractor.image_mean, np.float32)[:, None, None]
  std = np.array(pipe.feature_extractor.image_std, np.float32)[:, None, None]
  pixel_values = (np.transpose(real, (0, 3, 1, 2)).astype(np.float32) / 255 - mean) / std
  h = size // pipe.vae_scale_factor
  rng = np.random.default_rng(99)
  latents = rng.normal(size=(2, 4, h, h)).astype(np.float32)
  rec = {"checkpoint_sha256": np.array(builtin.checkpoint_digest(root)), "real": real, "pixel_values": pixel_values,
         "latents": latents, "guidance": np.float32(WORLD["guidance"]), "unet_t": np.int32(WORLD["unet_t"])}
  with torch.no_grad():
    ids = pipe.tokenizer(WORLD_PROMPTS, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    empty = pipe.tokenizer([""] * 2, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                           truncation=True, return_tensors="pt").input_ids
    text, uncond_text = pipe.text_encoder(ids)[0], pipe.text_encoder(empty)[0]
    embeds = pipe.image_encoder(torch.from_numpy(pixel_values)).image_embeds
    vec = pipe.noise_image_embeddings(embeds, noise_level=0, noise=torch.zeros_like(embeds))
    lat = torch.from_numpy(latents)
    out = pipe.unet(torch.cat([lat, lat]), WORLD["unet_t"], encoder_hidden_states=torch.cat([uncond_text, text]),
                    class_labels=torch.cat([torch.zeros_like(vec), vec])).sample
    uncond, cond = out.chunk(2)
    rec.update(input_ids=ids.numpy(), text_hidden=text.numpy(), image_embeds=embeds.numpy(), image_vector=vec.numpy(),
               unet_guided=(uncond + WORLD["guidance"] * (cond - uncond)).numpy(),
               vae_decoded=pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample.numpy())
    pipe.scheduler = PNDMScheduler.from_config(pipe.scheduler.config)
    images = pipe(prompt=WORLD_PROMPTS, image=torch.from_numpy(pixel_values), height=size, width=size,
                  num_inference_steps=WORLD["steps"], guidance_scale=WORLD["guidance"],
                  generator=torch.Generator().manual_seed(7), latents=lat, output_type="np", noise_level=0).images
    rec["pndm_images"] = images.astype(np.float32)
    # The pipeline's first draw from the generator is the image-embedding noise (checked in _unclip_sample).
    rec["sample_embed_noise"] = torch.randn(embeds.shape, generator=torch.Generator().manual_seed(7)).numpy()
  np.savez_compressed(WORLD_OUT, **rec)
  print(f"wrote {WORLD_OUT} ({WORLD_OUT.stat().st_size // 1024} KiB)")


def _unclip_sample(pipe, pixel_values, latents, image_embeds, dtype):
  """One guided 3-step unCLIP sample; returns the images and the image-embedding noise the pipeline drew."""
  seen = {}

  def record(module, args, kwargs):
    seen.setdefault("class_labels", kwargs["class_labels"].clone())

  hook = pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
  gen = torch.Generator().manual_seed(7)
  images = pipe(prompt=PROMPTS, image=torch.from_numpy(pixel_values).to(dtype), height=2 * pixel_values.shape[-1],
                width=2 * pixel_values.shape[-1], num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=gen,
                latents=torch.from_numpy(latents).to(dtype), output_type="np", noise_level=0).images
  hook.remove()
  sample_noise = torch.randn(image_embeds.shape, generator=torch.Generator().manual_seed(7))
  expect = pipe.noise_image_embeddings(image_embeds, noise_level=0, noise=sample_noise.to(dtype))
  used = seen["class_labels"].chunk(2)[1]
  if not torch.allclose(used.float(), expect.float(), atol=1e-6):
    sys.exit("the pipeline's image-embedding noise was not the generator's first draw; update this script")
  return images.astype(np.float32), sample_noise


def _sd_img2img(pipe, rng) -> dict:
  """SDEdit on the plain tiny SD checkpoint (PNDM, its own, and DPM-Solver++): the real image's latents noised
  to `strength`, then denoised. The generator's two draws (the VAE posterior's, then the noise) are replayed
  and checked against the UNet's first input, so the JAX side can start from the same numbers."""
  pipe.set_progress_bar_config(disable=True)
  cfg = IMG2IMG
  image01 = rng.uniform(0, 1, (1, 3, cfg["size"], cfg["size"])).astype(np.float32)
  rec = {"img2img_image": 2 * image01 - 1}
  base = pipe.scheduler.config
  for name, cls in (("pndm", PNDMScheduler), ("dpm++", DPMSolverMultistepScheduler)):
    pipe.scheduler = cls.from_config(base)
    seen = {}

    def record(module, args, kwargs):
      seen.setdefault("sample", args[0].clone())

    hook = pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    images = pipe(prompt=PROMPTS[:1], image=torch.from_numpy(image01), strength=cfg["strength"],
                  num_inference_steps=cfg["steps"], guidance_scale=cfg["guidance"],
                  generator=torch.Generator().manual_seed(cfg["seed"]), output_type="np").images
    hook.remove()
    h = cfg["size"] // pipe.vae_scale_factor
    gen = torch.Generator().manual_seed(cfg["seed"])
    posterior_noise = torch.randn((1, 4, h, h), generator=gen)
    noise = torch.randn((1, 4, h, h), generator=gen)
    with torch.no_grad():
      dist = pipe.vae.encode(torch.from_numpy(2 * image01 - 1)).latent_dist
      start = (dist.mean + dist.std * posterior_noise) * pipe.vae.config.scaling_factor
    t_start = cfg["steps"] - min(int(cfg["steps"] * cfg["strength"]), cfg["steps"])
    first = pipe.scheduler.timesteps[t_start:t_start + 1]
    if hasattr(pipe.scheduler, "_step_index"):
      pipe.scheduler._step_index = None  # DPM-Solver noises at its begin index, not where the run ended
    expect = pipe.scheduler.add_noise(start, noise, first)
    if not torch.allclose(seen["sample"].chunk(2)[0], expect, atol=1e-5):
      sys.exit("img2img: the pipeline's first UNet input is not the replayed draws; update this script")
    rec[f"img2img_{name}_posterior_noise"] = posterior_noise.numpy()
    rec[f"img2img_{name}_noise"] = noise.numpy()
    rec[f"img2img_{name}_images"] = images.astype(np.float32)
  return rec


def _dinov2():
  """transformers' Dinov2Model / Dinov2WithRegistersModel on the cases of tests/dinov2_cases.py: the random
  weights jaxaug draws (dinov2.write_random) loaded by from_pretrained, features and the first tokens for each
  way of resampling the positions ("transformers": its own; "dinov2": the torch-hub code dgm-eval runs,
  patched in). Also the names and shapes save_pretrained writes, and torch's bicubic resampling itself."""
  import dinov2_cases as cases
  from safetensors import safe_open
  from transformers import (Dinov2Config, Dinov2ForImageClassification, Dinov2Model, Dinov2WithRegistersConfig,
                            Dinov2WithRegistersModel)

  from jaxaug.models import dinov2

  classes = {"dinov2": (Dinov2Config, Dinov2Model), "dinov2_with_registers": (Dinov2WithRegistersConfig,
                                                                              Dinov2WithRegistersModel)}
  rec = {}
  for name, (config, height, width, _, seed, modes) in cases.CASES.items():
    with tempfile.TemporaryDirectory() as tmp:
      dinov2.write_random(tmp, config, seed)
      model, info = classes[config["model_type"]][1].from_pretrained(
          tmp, output_loading_info=True, dtype=torch.float32, attn_implementation="eager")
    if any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")):
      sys.exit(f"dinov2 {name}: transformers did not load jaxaug's random checkpoint as it is: {info}")
    model.eval()
    x = torch.from_numpy(cases.pixels(name)).permute(0, 3, 1, 2)
    transformers_positions = model.embeddings.interpolate_pos_encoding
    for mode in modes:
      model.embeddings.interpolate_pos_encoding = (
          transformers_positions if mode == "transformers" else _hub_positions(model.embeddings, config))
      with torch.no_grad():
        out = model(pixel_values=x)
      rec[f"{name}/{mode}/features"] = out.pooler_output.numpy()
      rec[f"{name}/{mode}/tokens"] = out.last_hidden_state[:, cases.TOKENS, cases.TOKENS].numpy()
    del model
  for name, config in cases.LAYOUTS.items():
    cfg_cls = classes[config["model_type"]][0]
    cfg = cfg_cls(**{k: v for k, v in config.items() if k != "model_type"}, num_labels=3)
    cls = Dinov2ForImageClassification if name == "Dinov2ForImageClassification" else classes[config["model_type"]][1]
    with tempfile.TemporaryDirectory() as tmp:
      cls(cfg).save_pretrained(tmp)
      with safe_open(f"{tmp}/model.safetensors", "np") as f:
        keys = sorted(f.keys())
        rec[f"layout/{name}/names"] = np.array(keys)
        rec[f"layout/{name}/shapes"] = np.array([",".join(map(str, f.get_slice(k).get_shape())) for k in keys])
  source = torch.from_numpy(cases.resample_source())[None]
  for rows, cols, antialias, offset in cases.RESAMPLES:
    size = {"scale_factor": ((rows + offset) / cases.RESAMPLE_GRID, (cols + offset) / cases.RESAMPLE_GRID)} if offset \
        else {"size": (rows, cols)}
    out = torch.nn.functional.interpolate(source, mode="bicubic", align_corners=False, antialias=antialias, **size)
    assert out.shape[-2:] == (rows, cols)
    rec[f"resample/{rows}x{cols}/{int(antialias)}/{offset}"] = out[0].numpy()
  np.savez_compressed(DINOV2_OUT, **rec)
  print(f"wrote {DINOV2_OUT} ({DINOV2_OUT.stat().st_size // 1024} KiB)")


def _hub_positions(embeddings, config: dict):
  """facebookresearch/dinov2's `interpolate_pos_encoding` (vision_transformer.py), with the hub models' settings:
  `interpolate_offset` 0.1 and no antialias, or for the register models 0 and antialias; in place of
  transformers' own."""
  registers = config["model_type"] == "dinov2_with_registers"
  offset, antialias = (0.0, True) if registers else (0.1, False)
  patch = config["patch_size"]

  def positions(tokens, height, width):
    pos = embeddings.position_embeddings
    n = pos.shape[1] - 1
    if tokens.shape[1] - 1 == n and height == width:
      return pos
    grid, dim = int(math.sqrt(n)), pos.shape[-1]
    rows, cols = height // patch, width // patch
    size = {"scale_factor": ((rows + offset) / grid, (cols + offset) / grid)} if offset else {"size": (rows, cols)}
    square = pos[:, 1:].float().reshape(1, grid, grid, dim).permute(0, 3, 1, 2)
    square = torch.nn.functional.interpolate(square, mode="bicubic", antialias=antialias, **size)
    assert square.shape[-2:] == (rows, cols)
    return torch.cat([pos[:, :1], square.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)

  return positions


if __name__ == "__main__":
  if sys.argv[1:] == ["dinov2"]:
    _dinov2()
  elif sys.argv[1:] == ["world"]:
    _world()
  else:
    main()
    _dinov2()
