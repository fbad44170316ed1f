"""python -m jaxaug.bench {sampler,condition,flops,input,train,score,experiment}: speed figures as a table and as JSON.

    python -m jaxaug.bench sampler --model=random-sd21-unclip --resolution=768 --steps=30 --batch=4,8,16
    python -m jaxaug.bench condition --model=DIR --batch=8
    python -m jaxaug.bench flops --model=random-sd21-unclip --resolution=768 --images=1164154
    python -m jaxaug.bench input
    python -m jaxaug.bench experiment --runs=6     # training runs/hour: one program for all runs vs one at a time
    python -m jaxaug.bench score --model=random-sd21-unclip --batch=64

Every figure names the device it ran on. On CPU the models are the tiny random checkpoints unless
--model says otherwise: those figures check the plumbing, not the speed of a GPU.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import platform
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxaug import xla_options
from jaxaug.errors import UserError, exit_on_user_error
from jaxaug.flops import (BF16_PEAK_TFLOPS, bf16_peak, device_hours, model_flops, unet_call, unet_calls,
                          with_kernel)


def _device() -> dict:
  d = jax.devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind, "device_count": jax.device_count(),
          "jax": jax.__version__, "python": platform.python_version(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "host_cpu": {**xla_options.host_cpu(), "malloc_keeps_memory": xla_options.host_memory_kept()}}


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
  config.batch.per_device = _sizes(args.batch)[0]
  config.attention = _names(args.attention)[0]
  config.dots = args.dots
  config.dtype = args.dtype
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
          "label": np.zeros(batch, np.int32)}


def _step_inputs(job, mesh_, batch: int):
  from jaxaug import generate, mesh

  params = jax.device_put(job.params, mesh.replicated(mesh_))
  batch = mesh.to_global(mesh_, _batch(job, batch * jax.local_device_count()))
  return params, batch, generate.text_contexts(job, params, mesh_)


def _memory_gib(compiled) -> float | None:
  """Device memory the executable needs (arguments + outputs + scratch, less donated): per run, not cumulative."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  used = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
  return used / 2**30


def _out_of_memory(error: Exception) -> bool:
  return "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


def _sampler_run(job, kernel: str, batch: int, flops: tuple[float, float], args, programs: dict) -> dict:
  """One (attention kernel, per-device batch) point: the whole sampling step, then one UNet call alone. The
  compiled step and its inputs are kept in `programs` for timing again (--rounds)."""
  from jaxaug import generate, mesh

  job = with_kernel(job, kernel)
  mesh_ = mesh.data_mesh()
  inputs = _step_inputs(job, mesh_, batch)
  start = time.perf_counter()
  compiled = generate.make_step(job, mesh_).lower(*inputs).compile()
  compile_s = time.perf_counter() - start
  seconds = _timed(compiled, *inputs, repeats=args.repeats)
  programs[(kernel, batch)] = (compiled, inputs)
  unet_fn, unet_inputs = unet_call(job, batch, args.resolution, params=inputs[0])  # already on the device
  unet_compiled = unet_fn.lower(*unet_inputs).compile()
  unet_s = _timed(unet_compiled, *unet_inputs, repeats=args.repeats)
  calls = unet_calls(job, args.steps)
  step_flops, unet_flops = flops
  run = {"attention": kernel, "batch_per_device": batch, "images_per_s": batch * jax.device_count() / seconds,
         "seconds_per_batch": seconds, "seconds_per_step": seconds / calls, "unet_calls": calls,
         "tflops_per_s": step_flops / seconds / 1e12, "unet_call_s": unet_s,
         "unet_tflops_per_s": unet_flops / unet_s / 1e12, "unet_tflop_per_call": unet_flops / 1e12,
         "memory_gib": _memory_gib(compiled), "compile_s": compile_s}
  peak = bf16_peak(jax.devices()[0].device_kind)
  if peak:
    run["unet_fraction_of_bf16_peak"] = run["unet_tflops_per_s"] / peak
  if args.profile:
    where = os.path.join(args.profile, f"{kernel}_b{batch}")
    run["profile"] = {"dir": where,
                      "unet": profiled(unet_compiled, unet_inputs, args.repeats, os.path.join(where, "unet")),
                      "step": profiled(compiled, inputs, 1, os.path.join(where, "step"))}
  return run


# ---------------------------------------------------------------------------
# Where a program's time goes (--profile): jax.profiler's trace, summed per XLA op and per kind of work


PROFILE_KINDS = ("convolution", "matmul", "attention", "reduction", "elementwise", "layout", "other")
CPU_TRACE_FLAG = "--xla_cpu_enable_xprof_traceme=true"


def profiled(compiled, inputs, calls: int, trace_dir: str) -> dict:
  """Runs `compiled` `calls` times under jax.profiler and summarises the trace against its HLO. Run it once
  before (the sampler bench has timed it), so the trace holds only steady-state calls."""
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(calls):
      jax.block_until_ready(compiled(*inputs))
  traces = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True))
  if not traces:
    return {"error": f"jax.profiler wrote no perfetto trace under {trace_dir}"}
  with gzip.open(traces[-1], "rt") as f:
    events = json.load(f)
  hlo = compiled.as_text()
  return trace_summary(events.get("traceEvents", []) if isinstance(events, dict) else events, op_kinds(hlo), calls,
                       op_sources(hlo), cpu=jax.devices()[0].platform == "cpu")


def _instructions(hlo: str) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
  """An optimised HLO module's text as ({computation: its opcodes}, [(instruction, opcode, line)])."""
  bodies: dict[str, set[str]] = {}
  current = None
  entries = []
  for line in hlo.splitlines():
    head = re.match(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
    if head and not line.startswith(" "):
      current = head.group(2)
      bodies[current] = set()
      continue
    m = re.match(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(?:\([^=]*?\)|\S+)\s+([\w\-]+)\(", line)
    if m and current is not None:
      bodies[current].add(m.group(2))
      entries.append((m.group(1), m.group(2), line))
  return bodies, entries


def op_kinds(hlo: str) -> dict[str, str]:
  """{instruction name: kind of work}: a fusion is what its body does (a convolution or a dot anywhere in it
  decides), a library call (cuDNN, cuBLAS) what its target says."""
  bodies, entries = _instructions(hlo)
  kinds = {}
  for name, opcode, line in entries:
    called = re.search(r"calls=%?([\w.\-]+)", line)
    body = bodies.get(called.group(1), set()) if called else set()
    target = re.search(r'custom_call_target="([^"]+)"', line)
    kinds[name] = _named_kind(target.group(1)) if target else _kind(opcode, body, line)
  return kinds


def op_sources(hlo: str) -> dict[str, str]:
  """{instruction name: the jax op it came from}, e.g. ".../UNet/up_blocks_0/resnets_1/conv1/conv_general_dilated"
  (flax puts the module path there), so a slow op names its layer."""
  found = {}
  for name, _, line in _instructions(hlo)[1]:
    m = re.search(r'op_name="([^"]+)"', line)
    if m:
      found[name] = m.group(1)
  return found


def _kind(opcode: str, body: set[str], line: str) -> str:
  ops = body | {opcode}
  if "convolution" in ops:
    return "convolution"
  if "dot" in ops or "__triton_gemm" in line:
    return "matmul"
  if opcode in ("copy", "transpose") or (opcode == "fusion" and body and body <= {"parameter", "copy", "transpose",
                                                                                  "bitcast", "reshape"}):
    return "layout"
  if ops & {"reduce", "reduce-window", "all-reduce"}:
    return "reduction"
  if opcode == "fusion" or ops & {"add", "multiply", "exponential", "maximum", "convert", "select", "divide"}:
    return "elementwise"
  return "other"


_NAME_MARKS = (("attention", ("fmha", "flash", "attention")), ("convolution", ("conv", "implicit", "wgrad")),
               ("matmul", ("gemm", "xmma", "cutlass", "matmul", "cublas", "sm90_", "sm80_")))


def _named_kind(name: str) -> str:
  """The kind of a library call from its target ("__cudnn$convForward") or of a GPU kernel from its name (for
  kernels the trace does not tie to an HLO op)."""
  low = name.lower()
  return next((kind for kind, marks in _NAME_MARKS if any(m in low for m in marks)), "other")


def trace_summary(events: list, kinds: dict[str, str], calls: int, sources: dict[str, str] | None = None,
                  cpu: bool = False) -> dict:
  """Device time per call by kind of work, the busiest ops, and how much of the span the device was busy.

  Device events are a GPU's kernels (grouped by the HLO op that launched them) or, on a CPU, the XLA ops the
  executor ran (those run on the calling thread only with XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true). Ops
  that overlap (streams, a CPU's threads) can make the busy time exceed the span."""
  names = {e["pid"]: e.get("args", {}).get("name", "") for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  threads = {(e["pid"], e.get("tid")): e.get("args", {}).get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
  device_pids = {pid for pid, name in names.items() if name.startswith("/device:")}
  if not cpu and not device_pids:  # an accelerator's trace without its device lines: host events would mislead
    return {"error": "the trace has no /device: process (no kernels recorded)"}

  def on_device(e) -> bool:
    if device_pids:  # a GPU: its kernels, not the "XLA Modules" / "XLA Ops" summary lines beside them
      return e["pid"] in device_pids and not threads.get((e["pid"], e.get("tid")), "").startswith("XLA ")
    return "hlo_op" in e.get("args", {}) and threads.get((e["pid"], e.get("tid"))) != "python"

  ops: dict[str, list] = {}
  first, last = float("inf"), 0.0
  for e in events:
    if e.get("ph") != "X" or not on_device(e) or e.get("name", "").startswith("end: "):
      continue
    op = e.get("args", {}).get("hlo_op") or e["name"]
    kind = kinds.get(op) or _named_kind(e["name"])
    entry = ops.setdefault(op, [kind, 0.0, 0])
    entry[1] += e.get("dur", 0.0)
    entry[2] += 1
    first, last = min(first, e["ts"]), max(last, e["ts"] + e.get("dur", 0.0))
  busy = sum(v[1] for v in ops.values())
  if not busy:
    hint = f" (on a CPU: run with XLA_FLAGS={CPU_TRACE_FLAG})" if not device_pids else ""
    return {"error": "the trace holds no device ops" + hint}
  by_kind = {k: sum(v[1] for v in ops.values() if v[0] == k) for k in PROFILE_KINDS}
  top = sorted(ops.items(), key=lambda kv: -kv[1][1])[:12]
  return {"calls": calls, "device_ms_per_call": busy / 1e3 / calls, "span_ms_per_call": (last - first) / 1e3 / calls,
          "busy_share_of_span": busy / (last - first) if last > first else 1.0,
          "share": {k: v / busy for k, v in by_kind.items() if v},
          "top_ops": [{"op": op, "kind": kind, "ms_per_call": t / 1e3 / calls, "share": t / busy,
                       "launches_per_call": n / calls, "source": (sources or {}).get(op, "")}
                      for op, (kind, t, n) in top]}


def bench_sampler(args) -> dict:
  """Every (attention, batch) pair asked for; a batch that runs out of memory ends that kernel's row."""
  from jaxaug.models import attention

  with tempfile.TemporaryDirectory() as out:
    job = _job(args, out)
  kernels = [attention.resolve(a, job.pipe.dtype) for a in _names(args.attention)]
  flops = {batch: model_flops(job, batch, args.resolution, args.steps) for batch in _sizes(args.batch)}
  runs, programs = [], {}
  for kernel in dict.fromkeys(kernels):
    for batch in _sizes(args.batch):
      try:
        run = _sampler_run(job, kernel, batch, flops[batch], args, programs)
      except Exception as e:  # noqa: BLE001 (XLA raises its runtime error type for OOM)
        if not _out_of_memory(e):
          raise
        runs.append({"attention": kernel, "batch_per_device": batch, "images_per_s": None, "error": "out of memory"})
        break
      runs.append(run)
      _progress(run)
  done = [r for r in runs if r["images_per_s"]]
  if not done:
    raise UserError("every batch size ran out of device memory; try a smaller --batch")
  best = max(done, key=lambda r: r["images_per_s"])
  result = {"model": args.model, "resolution": args.resolution, "steps": args.steps, "guidance": args.guidance,
            "dtype": jnp.dtype(job.pipe.dtype).name, "dots": job.pipe.dots, "best": best, "runs": runs}
  if args.vs_torch:
    if jax.device_count() > 1:
      raise UserError("--vs-torch compares one device with one GPU: run it with a single visible device")
    result["torch"] = args.torch_result
    torch_best = _torch_best(args.torch_result)
    if torch_best:
      result["jax_over_torch"] = best["images_per_s"] / torch_best
    if args.rounds > 1 and torch_best:
      result["rounds"] = alternating_rounds(args, programs, best["images_per_s"], torch_best)
      result["jax_over_torch"] = float(np.median([r["jax_over_torch"] for r in result["rounds"]]))
  return result


def _torch_best(torch_result: dict) -> float | None:
  """PyTorch's best images/s over its batches (None where every batch failed)."""
  return max((r["torch_images_per_s"] for r in torch_result["runs"] if r["torch_images_per_s"]), default=None)


def alternating_rounds(args, programs: dict, jax_first: float, torch_first: float) -> list[dict]:
  """--rounds: PyTorch's pipeline and jaxaug's compiled steps timed in turn, round after round, each round's
  best against the other's. On a shared or throttling CPU identical runs spread by 10% or more, and a drift
  between two back-to-back runs would land in a single ratio; the median over alternating rounds does not."""
  rounds = [{"round": 1, "jax_images_per_s": jax_first, "torch_images_per_s": torch_first,
             "jax_over_torch": jax_first / torch_first}]
  for number in range(2, args.rounds + 1):
    torch = _torch_best(torch_baseline(args))
    if torch is None:
      raise UserError(f"the PyTorch baseline gave no figure in round {number}")
    jax_best = max(batch * jax.device_count() / _timed(compiled, *inputs, repeats=args.repeats)
                   for (_, batch), (compiled, inputs) in programs.items())
    rounds.append({"round": number, "jax_images_per_s": jax_best, "torch_images_per_s": torch,
                   "jax_over_torch": jax_best / torch})
    print(f"  round {number}: jaxaug {jax_best:.4g} images/s, PyTorch {torch:.4g}, ratio {jax_best / torch:.3f}",
          file=sys.stderr, flush=True)
  return rounds


def _progress(run: dict):
  print(f"  attention={run['attention']:6s} batch={run['batch_per_device']:<4d} {run['images_per_s']:.4g} images/s, "
        f"compile {run['compile_s']:.1f}s", file=sys.stderr, flush=True)


def _sizes(text: str) -> list[int]:
  try:
    sizes = [int(b) for b in text.split(",") if b.strip()]
  except ValueError:
    raise UserError(f"--batch takes per-device sizes separated by commas, e.g. 4,8,16, not {text!r}") from None
  if not sizes or min(sizes) < 1:
    raise UserError(f"--batch sizes must be >= 1, not {text!r}")
  return sorted(set(sizes))


def _one(values: list, flag: str):
  if len(values) != 1:
    raise UserError(f"{flag} takes one value here; lists are for the sampler bench")
  return values[0]


def _names(text: str) -> list[str]:
  return [a.strip() for a in text.split(",") if a.strip()] or ["auto"]


def torch_baseline(args) -> dict:
  """diffusers' PyTorch pipeline timed in a child process (see jaxaug/models/torch_reference.py).

  The child's progress lines pass through to our stderr as they come; its last stderr line is the error.
  """
  import subprocess

  from jaxaug.models.torch_reference import PROGRESS  # imports no torch

  # The child only writes built-in checkpoints with jax (the GPU is torch's), and keeps glibc's malloc as a
  # PyTorch script has it (jaxaug's entry points change it: xla_options.keep_host_memory).
  env = {**os.environ, "JAX_PLATFORMS": "cpu", xla_options.HOST_MEMORY_ENV: "default"}
  request = {"model": args.model, "batches": _sizes(args.batch), "resolution": args.resolution, "steps": args.steps,
             "guidance": args.guidance, "scheduler": args.scheduler, "repeats": args.repeats, "dtype": args.dtype,
             "compile": args.torch_compile, "prompt_embeds": args.torch_prompt_embeds}
  child = subprocess.Popen([sys.executable, "-m", "jaxaug.models.torch_reference", json.dumps(request)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  last = ""
  for line in child.stderr:
    if line.startswith(PROGRESS):
      print(line, end="", file=sys.stderr, flush=True)
    elif line.strip():
      last = line.strip()
  stdout = child.stdout.read()
  if child.wait() != 0:
    message = last or f"exit status {child.returncode}"
    raise UserError(f"the PyTorch baseline failed: {message.removeprefix('jaxaug: error: ')}")
  return json.loads(stdout.strip().splitlines()[-1])


def bench_condition(args) -> dict:
  """The conditioning step's time against one guided UNet evaluation at the same batch."""
  from jaxaug import augment, condition
  from jaxaug.models import sd

  b = _one(_sizes(args.batch), "--batch")
  _one(_names(args.attention), "--attention")
  with tempfile.TemporaryDirectory() as out:
    job = _job(args, out)
  pipe, params = job.pipe, job.params
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


def bench_flops(args) -> dict:
  """FLOPs per image from XLA's cost analysis (lowered, never run: any machine can plan a GPU run), and
  the device-hours `--images` would take at the target 40% of each accelerator's bf16 peak."""
  batch = _one(_sizes(args.batch), "--batch")
  _one(_names(args.attention), "--attention")
  with tempfile.TemporaryDirectory() as out:
    job = _job(args, out)
  step, unet = model_flops(job, batch, args.resolution, args.steps)
  calls = unet_calls(job, args.steps)
  per_image = step / batch / 1e12
  hours = {name: device_hours(args.images * per_image, peak) for name, peak in BF16_PEAK_TFLOPS.items()}
  return {"model": args.model, "resolution": args.resolution, "steps": args.steps, "unet_calls": calls,
          "guided": job.spec.guided, "tflop_per_image": per_image, "unet_share": calls * unet / step,
          "images": args.images, "device_hours_at_40pct_bf16_peak": hours}


def bench_input(args) -> dict:
  from jaxaug.data.pipeline import bench_input as run

  return run(size=args.input_size)


def bench_train(args) -> dict:
  from jaxaug import train

  return train.bench_train()


# ---------------------------------------------------------------------------
# Experiment: training runs batched (one program, a leading run axis) against one at a time


def bench_experiment(args) -> dict:
  """Runs/hour of `--runs` small training runs as one program (train_lib/multirun.py) and one at a time
  (train.py), at tiny size on the demo data, each with a fresh in-process compile cache; plus compiles."""
  from pathlib import Path

  from jaxaug import train
  from jaxaug.config_base import training_config
  from jaxaug.train_lib import loop, multirun

  def config(workdir, seed):
    c = training_config()
    c.update(dict(workdir=str(workdir), real="demo:8", synthetic="", model="resnet_tiny", load_size=args.train_size,
                  crop_size=args.train_size, transform="flip_rotate", batch_size=16, eval_batch_size=32, epochs=1,
                  steps_per_epoch=args.train_steps, log_every=args.train_steps, eval_every=0,
                  checkpoint_every=args.train_steps, seed=seed, num_threads=2, loss="cross_entropy",
                  optimizer="adam", lr=1e-3, weight_decay=0.0, warmup_epochs=0.0))
    return c

  import contextlib
  import io

  from jaxaug.experiment_lib.stages import CompileCounter

  with tempfile.TemporaryDirectory() as tmp:
    jax.clear_caches()
    counter = CompileCounter()
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
      for seed in range(args.runs):
        train.train_and_evaluate(config(Path(tmp) / f"alone{seed}", seed))
    alone, alone_compiles = time.perf_counter() - start, sum(counter.built.values())
    counter.close()
    by_axis, compiles, traced = {}, {}, {}
    for axis in multirun.RUN_AXES:  # the platform's default and the other way, each with a fresh cache
      jax.clear_caches()
      counter = CompileCounter()
      programs = multirun.Programs(run_axis=axis)
      runs = [multirun.Run(c, loop.open_data(c))
              for c in (config(Path(tmp) / f"{axis}{s}", s) for s in range(args.runs))]
      start = time.perf_counter()
      multirun.train_group(runs, programs, Path(tmp) / f"group_{axis}", quiet=True)
      by_axis[axis], compiles[axis] = time.perf_counter() - start, sum(counter.built.values())
      traced[axis] = programs.compiles
      counter.close()
  axis = multirun.default_run_axis(jax.devices()[0].platform)
  batched = by_axis[axis]
  return {"training_runs": args.runs, "steps_per_run": args.train_steps, "model": "resnet_tiny", "size": args.train_size,
          "batch_size": 16, "one_at_a_time_s": alone, "batched_s": batched, "run_axis": axis,
          "batched_s_by_run_axis": by_axis,
          "one_at_a_time_runs_per_hour": args.runs / alone * 3600, "batched_runs_per_hour": args.runs / batched * 3600,
          "speedup": alone / batched, "xla_programs_built_one_at_a_time": alone_compiles,
          "xla_programs_built_batched": compiles[axis], "training_programs_traced_batched": traced[axis]}


# ImageNet-LT's shape, for the score bench's extrapolation: 1,000 classes filled to 1,280 images.
LT_CLASSES, LT_REAL, LT_SYNTHETIC = 1000, 115_846, 1_164_154


def random_embeddings(rng, classes: int, synthetic_per_class: int, real_per_class: int, dim: int):
  """Embeddings of a synthetic and a real set with class structure (a centre per class plus noise), one method,
  each synthetic image sourced on a real image of its class: what `score_lib.scoring` needs, without images."""
  from jaxaug.score_lib import scoring

  centres = rng.normal(size=(classes, dim)).astype(np.float32)
  real_labels = np.repeat(np.arange(classes), real_per_class)
  labels = np.repeat(np.arange(classes), synthetic_per_class)
  real = centres[real_labels] + rng.normal(size=(len(real_labels), dim)).astype(np.float32)
  synthetic = centres[labels] + rng.normal(size=(len(labels), dim)).astype(np.float32)
  sources = np.stack([labels * real_per_class + rng.integers(0, real_per_class, len(labels)),
                      np.full(len(labels), -1)], axis=1)
  return scoring.Embeddings(real=real, real_labels=real_labels, synthetic=synthetic, labels=labels,
                            methods=np.full(len(labels), "m", dtype=object), sources=sources,
                            item_ids=np.arange(len(labels)), class_names=tuple(f"c{i}" for i in range(classes)),
                            real_counts=np.full(classes, real_per_class))


def _score_settings(block_mb: int):
  from jaxaug import config_base
  from jaxaug.score_lib import scoring

  metrics = config_base.score_config().metrics
  metrics.block_mb = block_mb
  return scoring.MetricSettings.from_config(metrics)


def _traced_scores(emb, settings) -> dict:
  """compute_scores' time and its peak traced allocation above the inputs (numpy reports to tracemalloc)."""
  import tracemalloc

  from jaxaug.score_lib import scoring

  tracemalloc.start()
  base = tracemalloc.get_traced_memory()[0]
  start = time.perf_counter()
  scores = scoring.compute_scores(emb, settings)
  seconds = time.perf_counter() - start
  peak = tracemalloc.get_traced_memory()[1] - base
  tracemalloc.stop()
  return {"seconds": seconds, "working_bytes": peak, "input_bytes": emb.real.nbytes + emb.synthetic.nbytes,
          "classes_s": scores["timing"]["classes_s"]}


def _score_encoder(name: str, args) -> object:
  """An encoder of `python -m jaxaug.score` for the bench: CLIP from --model; Inception from --inception-weights or,
  without, random weights (the rate does not depend on them); DINOv2 from --dinov2."""
  from jaxaug.score_lib import encoders

  if name == "clip":
    return encoders.clip_checkpoint(args.model, args.score_dtype)
  if name == "inception" and not args.inception_weights:
    from jaxaug.models import inception

    return encoders.inception_from(inception.init_variables(0), {"encoder": "inception", "weights": "random"})
  if name == "dinov2" and not args.dinov2:
    raise UserError("--score-encoders names dinov2: pass --dinov2=<transformers Dinov2Model directory or .safetensors>")
  return encoders.build(name, clip_encoder=None, inception_weights=args.inception_weights, dinov2_weights=args.dinov2)


def _embedding_rate(encoder, args, batch: int, mesh_) -> dict:
  """The encoder's device step in images/s over all devices, and its host fit (decode + resize) per core on
  ImageNet-sized JPEGs: the cores a device needs to be kept fed is the first over the second."""
  from jaxaug import mesh
  from jaxaug.data.pipeline import make_bench_images
  from jaxaug.score_lib import embed

  embedder = embed.embedder_for(encoder, mesh_, batch, reader_threads=1)
  images = np.random.default_rng(0).integers(0, 256, (batch * jax.local_device_count(), encoder.size, encoder.size, 3))
  images = mesh.to_global(mesh_, images.astype(encoder.host_dtype))
  params = embedder.params
  start = time.perf_counter()
  compiled = embedder.step.lower(params, images).compile()
  compile_s = time.perf_counter() - start
  seconds = _timed(compiled, params, images, repeats=args.repeats)
  with tempfile.TemporaryDirectory() as tmp:
    source = make_bench_images(tmp, 8, 375, 500)
    data = [source.read(i) for i in range(len(source))]
    start = time.perf_counter()
    for item in data:
      encoder.fit(item)
    host = len(data) / (time.perf_counter() - start)
  return {"encoder": encoder.name, "image_size": encoder.size, "dim": encoder.dim, "batch_per_device": batch,
          "images_per_s": batch * jax.device_count() / seconds, "host_images_per_s_per_core": host,
          "compile_s": compile_s}


def bench_score(args) -> dict:
  """Embedding images/s per encoder (--score-encoders); metric time for N x N random embeddings; memory and time
  at 3 sizes of ImageNet-LT's class shape, extrapolated to its 1,164,154 synthetic images."""
  from jaxaug import mesh
  from jaxaug.score_lib import encoders

  batch = _one(_sizes(args.batch), "--batch")
  mesh_ = mesh.data_mesh()
  rates = {}
  for name in encoders.parse(args.score_encoders):
    rate = _embedding_rate(_score_encoder(name, args), args, batch, mesh_)
    if name == "clip":
      rate.update(model=args.model, dtype=args.score_dtype)
    rates["embedding" if not rates else f"embedding_{name}"] = rate

  rng = np.random.default_rng(0)
  settings = _score_settings(args.score_block_mb)
  n, classes = args.score_images, args.score_classes
  square = _traced_scores(random_embeddings(rng, classes, n // classes, n // classes, args.score_dim), settings)
  metrics = {"synthetic": n // classes * classes, "real": n // classes * classes, "dim": args.score_dim,
             "classes": classes, "metrics_s": square["seconds"], "per_class_s": square["classes_s"] / classes,
             "pooled_s": square["seconds"] - square["classes_s"], "working_mib": square["working_bytes"] / 2**20}

  synthetic_per_class, real_per_class = round(LT_SYNTHETIC / LT_CLASSES), round(LT_REAL / LT_CLASSES)
  sizes = _sizes(args.score_scaling)
  runs = [_traced_scores(random_embeddings(rng, c, synthetic_per_class, real_per_class, args.score_dim), settings)
          for c in sizes]
  counts = np.array([c * synthetic_per_class for c in sizes], float)
  slope, intercept = np.polyfit(counts, [r["working_bytes"] for r in runs], 1)
  per_class_s = float(np.mean([r["classes_s"] / c for r, c in zip(runs, sizes)]))
  inputs = (LT_SYNTHETIC + LT_REAL) * args.score_dim * 4
  working = intercept + slope * LT_SYNTHETIC
  scaling = {"classes": ",".join(map(str, sizes)), "synthetic": ",".join(str(int(c)) for c in counts),
             "working_mib": ",".join(f"{r['working_bytes'] / 2**20:.0f}" for r in runs),
             "input_mib": ",".join(f"{r['input_bytes'] / 2**20:.0f}" for r in runs),
             "seconds": ",".join(f"{r['seconds']:.1f}" for r in runs), "per_class_s": per_class_s,
             "working_bytes_per_synthetic_image": slope}
  extrapolated = {"synthetic": LT_SYNTHETIC, "real": LT_REAL, "classes": LT_CLASSES, "dim": args.score_dim,
                  "embeddings_gib": inputs / 2**30, "working_gib": working / 2**30,
                  "peak_gib": (inputs + working) / 2**30, "class_rows_hours": per_class_s * LT_CLASSES / 3600,
                  "block_mb": args.score_block_mb}
  return {**rates, "metrics": metrics, "scaling": scaling, "imagenet_lt_extrapolated": extrapolated}


BENCHES = {"sampler": bench_sampler, "condition": bench_condition, "flops": bench_flops, "input": bench_input,
           "train": bench_train, "score": bench_score, "experiment": bench_experiment}


_COLUMNS = (("attention", "attention", "{}"), ("batch_per_device", "batch", "{}"), ("images_per_s", "images/s", "{:.4g}"),
            ("seconds_per_step", "s/step", "{:.4g}"), ("unet_tflops_per_s", "UNet TFLOP/s", "{:.4g}"),
            ("unet_fraction_of_bf16_peak", "of bf16 peak", "{:.1%}"), ("memory_gib", "GiB", "{:.3g}"),
            ("compile_s", "compile s", "{:.1f}"))


def _grid(runs: list[dict]) -> list[str]:
  cells = [[title for _, title, _ in _COLUMNS]]
  for run in runs:
    if run.get("error"):
      cells.append([str(run["attention"]), str(run["batch_per_device"]), run["error"]] + [""] * (len(_COLUMNS) - 3))
      continue
    cells.append([fmt.format(run[key]) if run.get(key) is not None else "-" for key, _, fmt in _COLUMNS])
  widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS))]
  return ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)).rstrip() for row in cells]


def _profile_lines(run: dict) -> list[str]:
  rows = [f"  profile of attention={run['attention']} batch={run['batch_per_device']} (trace: {run['profile']['dir']}):"]
  for program in ("unet", "step"):
    p = run["profile"][program]
    if "error" in p:
      rows.append(f"    {program}: {p['error']}")
      continue
    shares = ", ".join(f"{k} {v:.0%}" for k, v in sorted(p["share"].items(), key=lambda kv: -kv[1]))
    rows.append(f"    {program}: {p['device_ms_per_call']:.4g} ms of device time per call, busy "
                f"{p['busy_share_of_span']:.0%} of its span; {shares}")
    rows += [f"      {t['share']:6.1%} {t['ms_per_call']:9.4g} ms  {t['kind']:11s} {t['op']}  {_short(t['source'])}"
             for t in p["top_ops"][:6]]
  return rows


def _short(source: str) -> str:
  """The layer part of a jax op name: 'jit(f)/UNet/down_blocks_1/resnets_0/conv1/conv_general_dilated' ->
  'down_blocks_1/resnets_0/conv1/conv_general_dilated'."""
  parts = [p for p in source.split("/") if not p.startswith(("jit(", "pjit(", "while", "body", "cond"))]
  return "/".join(parts[-4:])


def _number(value) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(name: str, result: dict, device: dict) -> str:
  rows = [f"jaxaug.bench {name} on {device['device_count']} x {device['device_kind']} ({device['platform']}), "
          f"jax {device['jax']}" + (f", XLA_FLAGS={device['xla_flags']}" if device["xla_flags"] else "")]
  if name == "flops":
    rows.append("  (lowered, not run: FLOPs depend on the model and shapes, not on this device)")
  elif device["platform"] == "cpu":
    cpu = device["host_cpu"]
    malloc = "malloc keeps freed memory" if cpu.get("malloc_keeps_memory") else "glibc's default malloc"
    rows.append(f"  (CPU: {cpu['model']}, {cpu['cores']} cores, {', '.join(cpu['features']) or 'no AVX2'}, {malloc}; "
                "a CPU figure is this CPU's, not an accelerator's)")
  for key, value in result.items():
    if key in ("runs", "best", "torch", "rounds"):
      continue
    if isinstance(value, dict):
      rows.append(f"  {key}:")
      rows += [f"    {k:26s} {_number(v)}" for k, v in value.items()]
      continue
    rows.append(f"  {key:28s} {_number(value)}")
  if "runs" in result:
    rows += _grid(result["runs"])
    best = result["best"]
    rows.append(f"  best: attention={best['attention']} batch={best['batch_per_device']} "
                f"({best['images_per_s']:.4g} images/s)")
    rows += [line for run in result["runs"] if run.get("profile") for line in _profile_lines(run)]
  if result.get("torch"):
    torch = result["torch"]
    mode = "torch.compile" if torch.get("torch_compiled") else "eager"
    mode += ", prompts encoded once" if torch.get("torch_prompt_embeds") else ""
    rows.append(f"  PyTorch {torch['torch_version']} diffusers ({mode}), {torch['torch_dtype']}, SDPA on "
                f"{torch['torch_device']}:")
    rows += [f"    batch {r['batch']:<4d} " + (f"{r['torch_images_per_s']:.4g} images/s" if r["torch_images_per_s"]
                                               else r.get("error", "-")) for r in torch["runs"]]
  if result.get("rounds"):
    rows.append("  alternating rounds (jax_over_torch above is their median):")
    rows += [f"    round {r['round']:<3d} jaxaug {r['jax_images_per_s']:.4g}  PyTorch {r['torch_images_per_s']:.4g}  "
             f"ratio {r['jax_over_torch']:.3f}" for r in result["rounds"]]
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
  parser.add_argument("--batch", default="4", help="per device; the sampler bench takes a list, e.g. 4,8,16")
  parser.add_argument("--attention", default="auto",
                      help="UNet attention kernel (auto, xla, cudnn, einsum); the sampler bench takes a list")
  parser.add_argument("--dots", default="auto", choices=("auto", "native", "fp32_results"),
                      help="sampler: the models' matmul and convolution form (auto: fp32_results on a CPU)")
  parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"),
                      help="sampler/condition/flops: the generation dtype (auto: fp32 on a CPU, bf16 on an "
                           "accelerator); --vs-torch runs PyTorch in it too (auto: fp16 on a GPU, fp32 on a CPU)")
  parser.add_argument("--source-size", type=int, default=64)
  parser.add_argument("--input-size", type=int, default=224)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--images", type=int, default=1_164_154, help="flops: how many images to plan for "
                      "(default: ImageNet-LT's synthetic set)")
  parser.add_argument("--torch-compile", action="store_true",
                      help="with --vs-torch: PyTorch's UNet under torch.compile (inductor) instead of eager")
  parser.add_argument("--torch-prompt-embeds", action="store_true",
                      help="with --vs-torch: PyTorch's prompts encoded once per batch size and handed to the "
                           "pipeline, as jaxaug's run encodes its prompts once (default: each call encodes them)")
  parser.add_argument("--vs-torch", action="store_true",
                      help="sampler: also time diffusers' PyTorch pipeline on the same weights and print the ratio")
  parser.add_argument("--rounds", type=int, default=1,
                      help="with --vs-torch on a CPU: time PyTorch and jaxaug in turn this many times and report "
                           "the median of the rounds' ratios (identical runs on a shared CPU spread by 10%% or more)")
  parser.add_argument("--runs", type=int, default=6, help="experiment: training runs to time, batched and one by one")
  parser.add_argument("--train-steps", type=int, default=30, help="experiment: training steps per run")
  parser.add_argument("--train-size", type=int, default=32, help="experiment: training image size")
  parser.add_argument("--score-images", type=int, default=10_000,
                      help="score: synthetic and real random embeddings for the metric time")
  parser.add_argument("--score-dim", type=int, default=1024, help="score: embedding size (ViT-H/14: 1024)")
  parser.add_argument("--score-classes", type=int, default=10, help="score: classes of the metric-time sets")
  parser.add_argument("--score-scaling", default="40,80,160",
                      help="score: class counts at ImageNet-LT's class shape for the memory scaling (three)")
  parser.add_argument("--score-block-mb", type=int, default=256, help="score: memory for pairwise blocks")
  parser.add_argument("--score-dtype", default="fp32", choices=("fp32", "bf16"), help="score: the CLIP tower's dtype")
  parser.add_argument("--score-encoders", default="clip", help="score: encoders to time, e.g. clip,inception,dinov2")
  parser.add_argument("--inception-weights", default="", help="score: FID Inception .safetensors (default: random)")
  parser.add_argument("--dinov2", default="", help="score: DINOv2 weights (transformers directory or .safetensors)")
  parser.add_argument("--json", default="", help="also write the result here")
  parser.add_argument("--profile", default="", help="sampler: trace each point's UNet call and sampling step with "
                      "jax.profiler into this directory and print where the device time goes (on a CPU, "
                      f"XLA_FLAGS={CPU_TRACE_FLAG} records the ops that run on the calling thread too)")
  args = parser.parse_args(argv)
  if args.vs_torch and args.bench != "sampler":
    raise UserError("--vs-torch goes with the sampler bench")
  if args.torch_compile and not args.vs_torch:
    raise UserError("--torch-compile goes with --vs-torch")
  if args.torch_prompt_embeds and not args.vs_torch:
    raise UserError("--torch-prompt-embeds goes with --vs-torch")
  if args.rounds != 1 and not args.vs_torch:
    raise UserError("--rounds goes with --vs-torch")
  if args.rounds < 1:
    raise UserError(f"--rounds takes a count of at least 1, not {args.rounds}")
  if args.profile and args.bench != "sampler":
    raise UserError("--profile goes with the sampler bench")
  args.torch_result = torch_baseline(args) if args.vs_torch else None  # first: JAX has not taken the GPU yet
  device = _device()
  if args.rounds > 1 and device["platform"] != "cpu":  # JAX now holds the accelerator's memory
    raise UserError("--rounds alternates the two on a CPU; on an accelerator run the bench again instead")
  result = BENCHES[args.bench](args)
  print(_table(args.bench, result, device))
  record = {"bench": args.bench, "device": device,
            "args": {k: v for k, v in vars(args).items() if k != "torch_result"}, "result": result}
  if args.json:
    with open(args.json, "w") as f:
      json.dump(record, f, indent=2)
  else:
    json.dump(record, sys.stdout)
    print()
  return record


if __name__ == "__main__":
  main()
