"""The generation step: a batch of plan items -> conditioning -> the sampler loop -> VAE decode -> uint8 images, as
one jitted function with explicit shardings. generate.py runs it; bench and the experiment's dry run lower it to
count its FLOPs (jaxaug/flops.py). The text contexts of the run's prompts (one per class, and the empty prompt's
for guidance) are encoded once per run (`text_contexts`) and handed to each step, which looks them up by label.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxaug import augment, condition, mesh, plan as plan_lib
from jaxaug.models import sd
from jaxaug.sampler import SamplerSpec, denoise


@dataclasses.dataclass
class Job:
  """Everything the loop needs, checked before anything is written."""
  config: object
  out: Path
  source: object
  methods: tuple[augment.Method, ...]
  plan: plan_lib.Plan
  pipe: object
  params: object
  spec: SamplerSpec
  prompt_ids: np.ndarray  # (num_classes, L) token ids per class
  empty_ids: np.ndarray  # (1, L)
  weights: dict  # {weight file: sha256} of the checkpoint


CLASS_CHUNK = 256  # prompts per text-tower call when a run's class prompts are encoded (one compile, bounded memory)


def text_contexts(job: Job, params, mesh_) -> dict:
  """The text contexts of a run, encoded once, replicated: "classes" (num_classes, L, D), one per class prompt, and
  "empty" (1, L, D), guidance's unconditional text. The step looks them up by label.

  Every prompt of a run is a class's (or the empty one), so encoding them here rather than the batch's prompts in
  every step saves one text tower call per batch (0.35 s of a 10.7 s full-size bf16 batch at 256 px on a 2-core
  CPU; two such calls when the empty prompt was encoded in the step too). The images are byte for byte those of a
  step that encodes the batch's prompts itself (tested; also checked in bf16). They stay on every device for the
  run: ImageNet-LT's 1,000 at SD 2.1's size are 158 MB in bf16.
  """
  replicated = mesh.replicated(mesh_)
  encode = jax.jit(lambda p, ids: sd.encode_text(job.pipe, p, ids), in_shardings=(replicated, replicated),
                   out_shardings=replicated)
  put = lambda ids: jax.make_array_from_process_local_data(replicated, np.asarray(ids, np.int32))  # noqa: E731
  ids = job.prompt_ids
  chunk = min(len(ids), CLASS_CHUNK)
  padded = np.concatenate([ids, np.repeat(ids[-1:], -len(ids) % chunk, axis=0)])
  parts = [encode(params, put(padded[s:s + chunk])) for s in range(0, len(padded), chunk)]
  classes = jax.jit(lambda *xs: jnp.concatenate(xs)[:len(ids)], out_shardings=replicated)(*parts)
  return {"classes": classes, "empty": encode(params, put(job.empty_ids))}


def make_step(job: Job, mesh_):
  """The jitted step: (params, a batch of items, `text_contexts`) -> uint8 images and the drawn lambdas. Nothing
  leaves the device."""
  pipe, spec, config = job.pipe, job.spec, job.config
  latent = config.resolution // pipe.vae_factor

  def step(params, batch, contexts):
    k_cond, k_latents, k_vae = condition.item_streams(config.seed, batch["item_id"])
    batch_size = batch["item_id"].shape[0]
    context = contexts["classes"][batch["label"]]
    uncond = jnp.broadcast_to(contexts["empty"], context.shape)
    noise = jax.vmap(lambda k: jax.random.normal(k, (pipe.latent_channels, latent, latent)))(k_latents)
    vector, start, lam = None, None, jnp.ones((batch_size,), jnp.float32)
    if spec.mode == "unclip":
      cond = condition.condition(pipe, params, job.methods, batch["method"], k_cond, batch["image1"], batch["image2"],
                                 config.sampler.noise_level)
      vector, lam = cond.vector, cond.lam
    elif spec.mode == "txt2img" and pipe.kind == "unclip":  # text only: the "no image" vector of guidance's branch
      vector = sd.unconditional_image_vector(batch_size, 2 * pipe.image_embed_dim)
    elif spec.mode == "img2img":
      real = jax.image.resize(augment.to_float(batch["image1"]), (batch_size, config.resolution, config.resolution, 3),
                              "bicubic", antialias=True)
      real = jnp.transpose(jnp.clip(real, 0, 1) * 2 - 1, (0, 3, 1, 2))
      start = jax.vmap(lambda k, x: sd.encode(pipe, params, x[None], k)[0])(k_vae, real)
    latents = denoise(pipe, params, spec, noise, context, uncond, vector, start_latents=start)
    pixels = sd.to_pixels(sd.decode(pipe, params, latents))
    return {"image": jnp.round(pixels * 255).astype(jnp.uint8), "lam": lam}

  data = mesh.batch_sharding(mesh_)
  return jax.jit(step, in_shardings=(mesh.replicated(mesh_), data, mesh.replicated(mesh_)), out_shardings=data)
