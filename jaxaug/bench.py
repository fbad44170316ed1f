"""python -m jaxaug.bench {sampler,condition,input,train}: speed figures as a table and as JSON.

    python -m jaxaug.bench sampler --model=tiny --resolution=64 --steps=10 --batch=8
    python -m jaxaug.bench condition --model=DIR --batch=8
    python -m jaxaug.bench input

Every figure names the device it ran on. On CPU the models are the tiny random checkpoints unless
--model says otherwise: those figures check the plumbing, not the speed of a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxaug.errors import exit_on_user_error


def _device() -> dict:
  d = jax.devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind, "device_count": jax.device_count(),
          "jax": jax.__version__, "python": platform.python_version()}


def _timed(fn, *args, repeats: int):
  jax.block_until_ready(fn(*args))  # warm-up (compiled already)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _job(args, out_dir: str):
  from jaxaug import generate

  config = generate.get_demo_config()
  config.model = args.model
  config.resolution = args.resolution
  config.sampler.steps = args.steps
  config.sampler.guidance = args.guidance
  config.batch.per_device = args.batch
  config.data.source_size = args.source_size
  config.output.dir = out_dir
  if args.scheduler:
    config.sampler.scheduler = args.scheduler
  return generate.prepare(config)


def _batch(job, batch: int):
  rng = np.random.default_rng(0)
  size = job.config.data.source_size
  return {"item_id": np.arange(batch, dtype=np.int32), "method": np.zeros(batch, np.int32),
          "image1": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
          "image2": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
          "prompt_ids": np.repeat(job.prompt_ids[:1], batch, axis=0)}


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0))


def bench_sampler(args) -> dict:
  from jaxaug import generate, mesh

  with tempfile.TemporaryDirectory() as out:
    job = _job(args, out)
    mesh_ = mesh.data_mesh()
    step = generate.make_step(job, mesh_)
    params = jax.device_put(job.params, mesh.replicated(mesh_))
    batch = mesh.to_global(mesh_, _batch(job, args.batch * jax.local_device_count()))
    start = time.perf_counter()
    compiled = step.lower(params, batch).compile()
    compile_s = time.perf_counter() - start
    seconds = _timed(compiled, params, batch, repeats=args.repeats)
  images = args.batch * jax.device_count()
  sched = job.pipe.make_scheduler(job.spec.scheduler)
  unet_calls = int(sched.set_timesteps(sched.create_state(), args.steps, (1,)).timesteps.shape[0])
  flops = _flops(compiled)
  stats = jax.devices()[0].memory_stats() or {}
  return {"images_per_s": images / seconds, "seconds_per_batch": seconds, "seconds_per_step": seconds / unet_calls,
          "unet_calls": unet_calls, "tflops_per_s": flops / seconds / 1e12 if flops else None,
          "peak_memory_gib": stats.get("peak_bytes_in_use", 0) / 2**30 or None, "compile_s": compile_s,
          "batch_per_device": args.batch, "resolution": args.resolution, "steps": args.steps,
          "guidance": args.guidance, "model": args.model, "dtype": str(jnp.dtype(job.pipe.dtype))}


def bench_condition(args) -> dict:
  """The conditioning step's time against one guided UNet evaluation at the same batch."""
  from jaxaug import augment, condition
  from jaxaug.models import sd

  with tempfile.TemporaryDirectory() as out:
    job = _job(args, out)
  pipe, params, b = job.pipe, job.params, args.batch
  methods = tuple(augment.get_method(m) for m in augment.METHODS)
  batch = _batch(job, b)
  method_index = jnp.arange(b, dtype=jnp.int32) % len(methods)

  @jax.jit
  def cond(params, item_id, m, x1, x2):
    keys = condition.item_keys(0, item_id)
    return condition.condition(pipe, params, methods, m, keys, x1, x2, 0).vector

  latent = args.resolution // pipe.vae_factor
  lat = jnp.zeros((2 * b, pipe.latent_channels, latent, latent))
  ctx = jnp.zeros((2 * b, pipe.tokenizer.model_max_length, pipe.unet.cross_attention_dim))
  vec = jnp.zeros((2 * b, 2 * pipe.image_embed_dim))

  @jax.jit
  def unet(params, lat, ctx, vec):
    return sd.predict(pipe, params, lat, jnp.full((2 * b,), 500), ctx, vec)

  c = _timed(cond, params, batch["item_id"], method_index, batch["image1"], batch["image2"], repeats=args.repeats)
  u = _timed(unet, params, lat, ctx, vec, repeats=args.repeats)
  return {"condition_s": c, "unet_step_s": u, "condition_over_unet_step": c / u,
          "condition_over_sampling": c / (u * (args.steps + 1)), "batch": b, "methods": "all ten, mixed",
          "model": args.model, "resolution": args.resolution}


def bench_input(args) -> dict:
  from jaxaug.data.pipeline import bench_input as run

  return run(size=args.input_size)


def bench_train(args) -> dict:
  from jaxaug import train

  return train.bench_train()


BENCHES = {"sampler": bench_sampler, "condition": bench_condition, "input": bench_input, "train": bench_train}


def _table(name: str, result: dict, device: dict) -> str:
  rows = [f"jaxaug.bench {name} on {device['device_count']} x {device['device_kind']} ({device['platform']}), "
          f"jax {device['jax']}"]
  if device["platform"] == "cpu":
    rows.append("  (CPU: reduced sizes; these figures check the plumbing, not accelerator speed)")
  for key, value in result.items():
    if isinstance(value, float):
      value = f"{value:.4g}"
    rows.append(f"  {key:28s} {value}")
  return "\n".join(rows)


@exit_on_user_error
def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m jaxaug.bench", description=__doc__.splitlines()[0])
  parser.add_argument("bench", choices=sorted(BENCHES))
  parser.add_argument("--model", default="tiny", help="checkpoint dir, hub id, or tiny")
  parser.add_argument("--resolution", type=int, default=64)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--guidance", type=float, default=2.0)
  parser.add_argument("--scheduler", default="")
  parser.add_argument("--batch", type=int, default=4, help="per device")
  parser.add_argument("--source-size", type=int, default=64)
  parser.add_argument("--input-size", type=int, default=224)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--json", default="", help="also write the result here")
  args = parser.parse_args(argv)
  device = _device()
  result = BENCHES[args.bench](args)
  print(_table(args.bench, result, device))
  record = {"bench": args.bench, "device": device, "args": vars(args), "result": result}
  if args.json:
    with open(args.json, "w") as f:
      json.dump(record, f, indent=2)
  else:
    json.dump(record, sys.stdout)
    print()
  return record


if __name__ == "__main__":
  main()
