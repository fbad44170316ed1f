"""FLOP counts of the generation and training steps, counted on their traced programs (nothing runs).

A FLOP here is one of the matrix units' work: 2 x the multiply-adds of every matrix product and convolution,
read off the jaxpr (`jaxpr_flops`), the same count on every backend. (XLA's own cost analysis was used before;
on a GPU under jax 0.11 it gave 0, and it would not see cuDNN's convolutions, which are custom calls there.)

`python -m jaxaug.bench flops|sampler` counts a loaded generation job; the experiment's --dry_run counts configs
with the model's architecture described from its config files (`abstract_model`, no weights read) and the
training steps with parameters as shapes. Device-hours assume a fraction of the device's dense bf16 peak.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxaug import augment, mesh
from jaxaug.generate_lib.step import Job, make_step
from jaxaug.models import pipeline, sd, tiny
from jaxaug.sampler import SamplerSpec, first_step

# Dense bf16 peak of the accelerators we expect, for the fraction-of-peak figure (vendor datasheets).
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "TPU v4": 275.0, "TPU v5 lite": 197.0,
                    "TPU v5p": 459.0, "TPU v6 lite": 918.0}


UTILISATION = 0.4  # of the dense bf16 peak: what device-hours assume


def bf16_peak(device_kind: str) -> float | None:
  return next((peak for name, peak in BF16_PEAK_TFLOPS.items() if name in device_kind), None)


def device_hours(tflop: float, peak_tflops: float) -> float:
  """Hours of one device to do `tflop` at UTILISATION of its bf16 peak."""
  return tflop / (UTILISATION * peak_tflops) / 3600


def count(traced) -> float:
  """FLOPs of a traced program (`jax.jit(f).trace(*args)`; arguments may be jax.ShapeDtypeStruct)."""
  return jaxpr_flops(traced.jaxpr)


def jaxpr_flops(jaxpr) -> float:
  """2 x multiply-adds of the matrix products and convolutions of a (closed) jaxpr, nested programs included.

  A loop's body counts once, whatever its trip count (a while loop's is not known when tracing; XLA's cost
  analysis counts the same way), and a `cond` its costliest branch. Elementwise work is left out: it is memory
  bound and not what the bf16 peak measures.
  """
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * _size(eqn.outvars[0].aval.shape) * _size([lhs[d] for d in contract])
    elif name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
      total += 2.0 * _size(eqn.outvars[0].aval.shape) * _size(rhs) / out_features
    total += sum(f for f in map(_flops_of, eqn.params.values()) if f is not None)
  return total


def _flops_of(value) -> float | None:
  """FLOPs of an equation parameter that holds programs (a jaxpr, or a cond's tuple of branches: the costliest
  counts); None for any other parameter."""
  if hasattr(value, "eqns") or hasattr(getattr(value, "jaxpr", None), "eqns"):
    return jaxpr_flops(value)
  if isinstance(value, (tuple, list)) and value:
    branches = [_flops_of(v) for v in value]  # each branch counted once, also in nested conds
    if None not in branches:
      return max(branches)  # only a cond has a tuple of programs (its branches)
  return None


def _size(shape) -> float:
  return float(np.prod([int(d) for d in shape], dtype=np.float64))


# ---------------------------------------------------------------------------
# Generation


def with_kernel(job: Job, kernel: str) -> Job:
  return dataclasses.replace(job, pipe=dataclasses.replace(job.pipe, attention=kernel))


def unet_call(job: Job, batch: int, resolution: int, params=None):
  """One guided UNet evaluation (2 x batch rows) as a program of its own, the loop's unit of work, and its
  inputs: random latents and conditioning (never zeros, which some kernels run faster) and `params` (default
  the job's: pass the parameters already on the device, or each timed call also copies them there)."""
  pipe = job.pipe
  latent = resolution // pipe.vae_factor
  rows = 2 * batch
  rng = np.random.default_rng(0)
  normal = lambda *shape: jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
  lat = normal(rows, pipe.latent_channels, latent, latent)
  ctx = normal(rows, pipe.tokenizer.model_max_length, pipe.unet.cross_attention_dim)
  vec = normal(rows, 2 * pipe.image_embed_dim) if pipe.kind == "unclip" else None
  unet = jax.jit(lambda params, lat, ctx, vec: sd.predict(pipe, params, lat, jnp.full((rows,), 500), ctx, vec))
  return unet, (job.params if params is None else params, lat, ctx, vec)


def unet_calls(job: Job, steps: int) -> int:
  """UNet calls of one sampling run: the schedule's, less those an img2img start skips (sampler.first_step)."""
  sched = job.pipe.make_scheduler(job.spec.scheduler)
  return len(sched.timesteps(steps)) - first_step(job.spec)


def _abstract_inputs(job: Job, mesh_, batch: int):
  """The generation step's arguments as shapes: replicated parameters, a global batch of `batch` per device and
  the run's text contexts (encoded once per run, outside the step: not counted)."""
  replicated = mesh.replicated(mesh_)
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), job.params)
  n, size, data = batch * jax.device_count(), job.config.data.source_size, mesh.batch_sharding(mesh_)
  shape = lambda dims, dtype: jax.ShapeDtypeStruct(dims, dtype, sharding=data)
  images = shape((n, size, size, 3), jnp.uint8)
  contexts = jax.eval_shape(lambda p: {"classes": sd.encode_text(job.pipe, p, jnp.asarray(job.prompt_ids)),
                                       "empty": sd.encode_text(job.pipe, p, jnp.asarray(job.empty_ids))}, params)
  return params, {"item_id": shape((n,), jnp.int32), "method": shape((n,), jnp.int32), "image1": images,
                  "image2": images, "label": shape((n,), jnp.int32)}, \
      jax.tree.map(lambda c: jax.ShapeDtypeStruct(c.shape, c.dtype, sharding=replicated), contexts)


def model_flops(job: Job, batch: int, resolution: int, steps: int) -> tuple[float, float]:
  """(FLOPs of one sampling step, of one guided UNet call), per device, as `jaxpr_flops` counts the model.

  Counted with the plain xla attention kernel whatever kernel runs: a fused kernel (cuDNN) is one opaque
  primitive, and every kernel is measured against the same count. A loop's body counts once, so the denoising
  loop's other UNet calls are added.
  """
  job = with_kernel(job, "xla")
  unet_fn, unet_inputs = unet_call(job, batch, resolution)
  unet = count(unet_fn.trace(*unet_inputs))
  mesh_ = mesh.data_mesh()
  # Traced, not partitioned: the count is for the global batch, which every device shares equally.
  step = count(make_step(job, mesh_).trace(*_abstract_inputs(job, mesh_, batch)))
  return step / jax.device_count() + (unet_calls(job, steps) - 1) * unet, unet


def architecture(model: str) -> tuple[pipeline.Architecture, str]:
  """`model`'s architecture (config files, no weights) and where it came from.

  A local checkpoint (or a built-in tiny one) gives its own configs; the built-in random-sd21* names and a hub
  id that is not on this machine are taken at SD 2.1 size, unCLIP where the name says so: FLOPs depend on the
  architecture only, and the paper's checkpoints have SD 2.1's.
  """
  path = Path(os.path.expanduser(tiny.resolve_model(model) if model == tiny.WORLD_MODEL else model))
  if model in tiny.BUILTIN_MODELS and tiny.BUILTIN_MODELS[model][1] == "tiny":
    path = tiny.cached_tiny(tiny.BUILTIN_MODELS[model][0])
  if path.is_dir():
    return pipeline.read_architecture(path), str(path)
  kind = "unclip" if "unclip" in model.lower() else "sd"
  return tiny.full_architecture(kind), f"SD 2.1{'-unCLIP' if kind == 'unclip' else ''} architecture (not on this machine)"


def abstract_model(model: str, dtype=jnp.bfloat16):
  """(Pipeline, parameters as jax.ShapeDtypeStruct, source of the architecture) for `model`: enough to lower
  and count the generation step's FLOPs on any machine, with no weights read or allocated."""
  arch, where = architecture(model)
  pipe = pipeline.describe(arch, model, where, dtype)
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype), pipeline.param_shapes(pipe))
  if pipe.kind == "unclip":
    params["image_normalizer"] = {k: jax.ShapeDtypeStruct((1, pipe.image_embed_dim), jnp.float32)
                                  for k in ("mean", "std")}
  return pipe, params, where


def generation_flops(config) -> dict:
  """TFLOP per generated image of a generation config (its model, resolution, sampler, per-device batch), as
  XLA counts the lowered step (`bench flops`' count), with the model's architecture from `abstract_model`."""
  pipe, params, where = abstract_model(config.model)
  spec = SamplerSpec(mode=config.sampler.mode, scheduler=config.sampler.scheduler or None,
                     steps=config.sampler.steps, guidance=config.sampler.guidance,
                     strength=config.sampler.strength).check(pipe)
  methods = augment.parse_methods(config.methods, config.alpha, config.reference_quirks)
  ids = np.zeros((1, pipe.tokenizer.model_max_length), np.int32)
  job = Job(config=config, out=None, source=None, methods=methods, plan=None, pipe=pipe, params=params, spec=spec,
            prompt_ids=ids, empty_ids=ids, weights={})
  batch, steps = config.batch.per_device, config.sampler.steps
  step, _ = model_flops(job, batch, config.resolution, steps)
  return {"tflop_per_image": step / batch / 1e12, "unet_calls": unet_calls(job, steps), "architecture": where,
          "resolution": config.resolution, "mode": spec.mode}


# ---------------------------------------------------------------------------
# Training


def training_flops(config, num_classes: int) -> dict:
  """TFLOP of one training step (global batch) and of one evaluated image for a training config, as XLA counts
  the lowered train and eval steps of train_lib/step.py (parameters as shapes only)."""
  from jaxaug.models import resnet
  from jaxaug.train_lib import step as step_lib
  from jaxaug.train_lib.loop import compute_dtype

  model = resnet.create(config.model, num_classes, frozen_backbone=config.linear_probe, dtype=compute_dtype())
  tx = step_lib.optimizer(config.optimizer, lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay, warmup_steps=0, total_steps=1000,
                          linear_probe=config.linear_probe)
  state = jax.eval_shape(functools.partial(step_lib.init_state, model, tx, 0, config.crop_size))
  load = config.load_size

  def images(n):
    return jax.ShapeDtypeStruct((n, load, load, 3), jnp.uint8)

  labels = lambda n: jax.ShapeDtypeStruct((n,), jnp.int32)
  train = jax.jit(functools.partial(step_lib.train_step, model=model, tx=tx, prior=jnp.zeros(num_classes),
                                    label_smoothing=config.label_smoothing, crop=config.crop_size,
                                    transform=config.transform))
  step = count(train.trace(state, {"image": images(config.batch_size), "label": labels(config.batch_size)}))
  evaluate = jax.jit(functools.partial(step_lib.eval_step, model=model, crop=config.crop_size))
  n = config.eval_batch_size
  per_eval = count(evaluate.trace(state, {"image": images(n), "label": labels(n),
                                          "mask": jax.ShapeDtypeStruct((n,), jnp.bool_)}))
  return {"tflop_per_step": step / 1e12, "tflop_per_eval_image": per_eval / n / 1e12}
