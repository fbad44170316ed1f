"""Records PyTorch diffusers reference outputs for the tiny unCLIP checkpoint (tests/golden/unclip.npz).

This is the one script in the project that uses torch. It writes the tiny checkpoint with jaxaug's own
writer (so PyTorch diffusers also checks that layout), runs diffusers 0.39.0's StableUnCLIPImg2ImgPipeline
on fixed inputs, and saves the intermediate and final outputs that tests/test_parity.py compares against.

    python -m venv /tmp/golden && . /tmp/golden/bin/activate
    pip install torch==2.13.0 diffusers==0.39.0 transformers==4.57.6 accelerate -e .
    python tests/make_golden.py            # rewrites tests/golden/unclip.npz
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler, StableUnCLIPImg2ImgPipeline

from jaxaug.models import tiny

OUT = Path(__file__).parent / "golden" / "unclip.npz"
PROMPTS = ["a photo of a red circle", "blue stripes"]
GUIDANCE = 2.0
STEPS = 3
UNET_T = 501
NOISE_LEVELS = (0, 100)


def main():
  torch.manual_seed(0)
  rng = np.random.default_rng(1234)
  with tempfile.TemporaryDirectory() as tmp:
    root = tiny.write_tiny(Path(tmp) / "tiny-unclip", "unclip", seed=0)
    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(str(root), torch_dtype=torch.float32)
    rec = {"checkpoint_sha256": np.array(tiny.checkpoint_digest(root))}
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
    for name, cls in (("pndm", PNDMScheduler), ("ddim", DDIMScheduler), ("dpm++", DPMSolverMultistepScheduler)):
      # diffusers' Flax DPM-Solver++ ends its last step at alpha_cumprod[0], as PyTorch's final_sigmas_type
      # 'sigma_min' does (PyTorch's default 'zero' goes to sigma 0: a 0.027 pixel difference in 3 tiny steps).
      extra = {"final_sigmas_type": "sigma_min"} if name == "dpm++" else {}
      pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
      seen = {}

      def record(module, args, kwargs):
        seen.setdefault("class_labels", kwargs["class_labels"].clone())

      hook = pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
      gen = torch.Generator().manual_seed(7)
      images = pipe(prompt=PROMPTS, image=torch.from_numpy(pixel_values), height=res, width=res,
                    num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=gen,
                    latents=torch.from_numpy(latents), output_type="np", noise_level=0).images
      hook.remove()
      sample_noise = torch.randn(embed_noise.shape, generator=torch.Generator().manual_seed(7))
      expect = pipe.noise_image_embeddings(image_embeds, noise_level=0, noise=sample_noise)
      used = seen["class_labels"].chunk(2)[1]
      if not torch.allclose(used, expect, atol=1e-6):
        sys.exit("the pipeline's image-embedding noise was not the generator's first draw; update this script")
      rec[f"{name}_timesteps"] = pipe.scheduler.timesteps.numpy()
      rec[f"{name}_embed_noise"] = sample_noise.numpy()
      rec[f"{name}_images"] = images.astype(np.float32)

  OUT.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(OUT, **rec)
  print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB): {', '.join(sorted(rec))}")


if __name__ == "__main__":
  main()
