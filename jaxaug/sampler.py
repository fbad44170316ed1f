"""The denoising loop as one traced function: conditioning in, latents or pixels out, nothing leaves the device.

Modes: `unclip` (the paper: pure-noise start, image vector + text), `txt2img`, and `img2img` (SDEdit: the
real image's latents noised to `strength`). Classifier-free guidance runs both branches in one UNet call;
the unconditional branch has the empty prompt and, for unCLIP, an all-zero image vector. Scheduler
arithmetic is fp32 whatever the parameters' dtype.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxaug.errors import UserError
from jaxaug.models import sd
from jaxaug.models.pipeline import Pipeline

MODES = ("unclip", "txt2img", "img2img")


def interleave(a, b):
  """[a0, b0, a1, b1, ...]: doubles a batch while each device keeps its own rows (no resharding), so an
  item's numerics do not depend on how many devices share the batch."""
  return jnp.stack([a, b], axis=1).reshape((-1,) + a.shape[1:])


def deinterleave(x):
  pairs = x.reshape((-1, 2) + x.shape[1:])
  return pairs[:, 0], pairs[:, 1]


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """What the loop does; hashable, so one compiled loop serves every batch of a run."""
  mode: str = "unclip"
  scheduler: str | None = None  # None: the checkpoint's own
  steps: int = 30
  guidance: float = 2.0
  strength: float = 0.5  # img2img only

  def check(self, pipe: Pipeline) -> "SamplerSpec":
    if self.mode not in MODES:
      raise UserError(f"unknown sampler mode '{self.mode}'; choose one of {', '.join(MODES)}")
    if self.mode == "unclip" and pipe.kind != "unclip":
      raise UserError(f"mode 'unclip' needs an SD 2.1-unCLIP checkpoint; {pipe.name} is a plain SD checkpoint "
                      "(use mode txt2img or img2img)")
    if self.steps < 1:
      raise UserError(f"sampler steps must be at least 1, not {self.steps}")
    if self.mode == "img2img" and not 0.0 < self.strength <= 1.0:
      raise UserError(f"img2img strength must be in (0, 1], not {self.strength}")
    pipe.make_scheduler(self.scheduler)  # raises for an unknown or unsupported scheduler
    return self

  @property
  def guided(self) -> bool:
    return self.guidance > 1.0  # diffusers' rule: guidance 1 or less means a single branch


def first_step(spec: SamplerSpec) -> int:
  """The loop's first step: 0, or for img2img (SDEdit) the steps that skip the first (1 - strength) of the schedule."""
  return spec.steps - min(int(spec.steps * spec.strength), spec.steps) if spec.mode == "img2img" else 0


def denoise(pipe: Pipeline, params, spec: SamplerSpec, latents, context, uncond_context, image_vector=None,
            start_latents=None):
  """Runs the scheduler loop and returns final latents (B, C, h, w), fp32.

  latents: the initial Gaussian latents (unclip, txt2img) or the img2img noise; context / uncond_context:
  text hidden states (B, L, D); image_vector: the unCLIP conditioning vector (B, 2d); start_latents: the
  real image's latents for img2img.
  """
  scheduler = pipe.make_scheduler(spec.scheduler)
  timesteps = scheduler.timesteps(spec.steps)
  first = first_step(spec)
  if spec.mode == "img2img":  # SDEdit: start from the real latents noised to the first step's level
    latents = scheduler.add_noise_at(start_latents.astype(jnp.float32), latents, spec.steps, first)
  else:
    latents = latents * scheduler.init_noise_sigma
  batch = latents.shape[0]
  if spec.guided:
    context = interleave(uncond_context, context)
    if image_vector is not None:
      image_vector = interleave(sd.unconditional_image_vector(batch, image_vector.shape[-1]), image_vector)
  timesteps_dev = jnp.asarray(timesteps)

  def step(i, carry):
    latents, state = carry
    x = interleave(latents, latents) if spec.guided else latents
    out = sd.predict(pipe, params, x, jnp.broadcast_to(timesteps_dev[i], x.shape[:1]), context, image_vector)
    if spec.guided:
      uncond, cond = deinterleave(out)
      out = uncond + spec.guidance * (cond - uncond)
    return scheduler.step(state, spec.steps, i, out, latents)

  latents = latents.astype(jnp.float32)
  latents, _ = jax.lax.fori_loop(first, len(timesteps), step, (latents, scheduler.init(latents)))
  return latents
