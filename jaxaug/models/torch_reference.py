"""The PyTorch baseline for `python -m jaxaug.bench sampler --vs-torch`: diffusers' own unCLIP pipeline.

It times StableUnCLIPImg2ImgPipeline on the same checkpoint directory (so the same random or real
weights), resolution, steps, guidance and batch, in fp16 with PyTorch's scaled-dot-product attention on a
GPU (fp32 on a CPU), or in the dtype `--dtype` asks for. The bench runs it as a child process before JAX touches the device, so the two
never share GPU memory and jaxaug's own process never imports torch (torch is no jaxaug dependency):

    python -m jaxaug.models.torch_reference '{"model": "tiny", "batches": [4, 8], ...}'   # prints one JSON line
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from jaxaug.errors import UserError

# Start of the child's per-batch progress lines on stderr; the bench passes these through as they come.
PROGRESS = "  torch"


def time_unclip_pipeline(model: str, *, batches: list[int], resolution: int, steps: int, guidance: float,
                         scheduler: str, repeats: int, dtype: str = "auto", compile: bool = False,
                         prompt_embeds: bool = False) -> dict:
  """Median seconds per batch and images/s of diffusers' PyTorch pipeline at each batch size.

  dtype auto: fp16 on a GPU, fp32 on a CPU (each platform's usual choice); fp32 or bf16: that, where it runs.
  compile: the UNet wrapped in `torch.compile` (inductor, default mode), the baseline a careful PyTorch user
  would time against; its compile happens in each batch's warm-up and is reported as `torch_warmup_s`.
  prompt_embeds: the prompt and the empty prompt encoded once per batch size, outside the timing, and handed to the
  pipeline (as jaxaug's run encodes its prompts once); otherwise each call encodes them, as a script passing
  prompt strings does.
  """
  try:
    import torch
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler, StableUnCLIPImg2ImgPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0
  except ImportError as e:
    raise UserError(f"--vs-torch needs torch and diffusers' PyTorch pipeline ({e.name} is missing): "
                    "pip install torch \"jaxaug[reference]\"") from None
  from jaxaug.models.tiny import resolve_model  # here: the child process imports JAX only if it must

  cuda = torch.cuda.is_available()
  dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(dtype, torch.float16 if cuda else torch.float32)
  pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(resolve_model(model), torch_dtype=dtype)
  if scheduler:
    classes = {"pndm": PNDMScheduler, "ddim": DDIMScheduler, "dpm++": DPMSolverMultistepScheduler}
    pipe.scheduler = classes[scheduler].from_config(pipe.scheduler.config)
  pipe = pipe.to("cuda" if cuda else "cpu")
  pipe.unet.set_attn_processor(AttnProcessor2_0())
  pipe.set_progress_bar_config(disable=True)
  if compile:
    pipe.unet = torch.compile(pipe.unet)
  size = pipe.feature_extractor.crop_size["height"]
  rng = np.random.default_rng(0)

  def time_batch(batch: int) -> float:
    image = torch.from_numpy(rng.normal(size=(batch, 3, size, size)).astype(np.float32)).to(pipe.device, dtype)
    text = {"prompt": ["a photo of a red circle"] * batch}
    if prompt_embeds:
      with torch.no_grad():
        embeds, negative = pipe.encode_prompt(text["prompt"], pipe.device, 1, guidance > 1.0)
      text = {"prompt_embeds": embeds, "negative_prompt_embeds": negative}

    def run():
      out = pipe(**text, image=image, height=resolution, width=resolution,
                 num_inference_steps=steps, guidance_scale=guidance, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
      if cuda:
        torch.cuda.synchronize()
      return out

    start = time.perf_counter()
    run()  # warm-up (and, with compile, the compile)
    warmup = time.perf_counter() - start
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      run()
      times.append(time.perf_counter() - start)
    return float(np.median(times)), warmup

  runs = []
  for batch in batches:
    try:
      seconds, warmup = time_batch(batch)
    except torch.cuda.OutOfMemoryError:
      runs.append({"batch": batch, "torch_images_per_s": None, "error": "out of memory"})
      break
    runs.append({"batch": batch, "torch_seconds_per_batch": seconds, "torch_images_per_s": batch / seconds,
                 "torch_warmup_s": warmup})
    # Progress on stderr, one line per batch: a long GPU run that is cut off still shows what it measured.
    print(f"{PROGRESS}{' compiled' if compile else ''} batch={batch:<4d} {batch / seconds:.4g} images/s, "
          f"warm-up {warmup:.1f}s", file=sys.stderr, flush=True)
  return {"runs": runs, "torch_dtype": str(dtype), "torch_device": torch.cuda.get_device_name() if cuda else "cpu",
          "torch_version": torch.__version__, "torch_compiled": compile, "torch_prompt_embeds": prompt_embeds}


def main():
  args = json.loads(sys.argv[1])
  try:
    result = time_unclip_pipeline(**args)
  except UserError as e:
    print(f"jaxaug: error: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  print(json.dumps(result))


if __name__ == "__main__":
  main()
