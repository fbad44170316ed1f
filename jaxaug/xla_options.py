"""How jaxaug sets up a CPU process: which library runs XLA:CPU's convolutions (and why jaxaug leaves jaxlib's
choice alone), the host's malloc (`keep_host_memory`), and the host facts a CPU figure needs (issue 20).

jaxlib 0.10's XLA:CPU hands convolutions to YNNPACK ("individual_convolution" in
`--xla_cpu_experimental_ynn_fusion_type`). XLA's own (Eigen) convolutions are faster on an AMD EPYC (Zen 4):
a full-size SD 2.1-unCLIP sampling step 0.0369 -> 0.0455 images/s (fp32, 256 px), the demo world's UNet call
10-20% and its VAE decode 35-45% faster. But their rounding depends on how many threads the process gives
them: one 3x3 convolution (2x4x4x128) came out differently with 1 and with 4 host devices in the process, and
with 1 and 2 cores (taskset), while YNNPACK's were bit-identical in every case. A generation run's images would
then depend on the machine's core count, and the 1-device and 4-device runs of one config would differ
(tests/test_generate.py's four-device test fails under it). jaxaug promises byte-identical images across
device counts and resumes, so the faster choice is an opt-in, not a default:

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_dot python -m jaxaug.generate ...

A run records which library it used (`cpu_convolutions` in config.json's numerics), so a resume that
changes it warns that the remaining images round differently. docs/speed.md has the figures.
"""

from __future__ import annotations

import os
import sys

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
FASTER_CONVOLUTIONS = f"{YNN_FLAG}=individual_dot"  # YNNPACK for dots only; convolutions are XLA's own


def cpu_convolutions(environ=os.environ) -> str:
  """Which library runs CPU convolutions under this process's XLA_FLAGS: 'xla', 'ynnpack', or 'default' (the
  jaxlib's own choice; YNNPACK in jaxlib 0.10)."""
  value = None
  for flag in environ.get("XLA_FLAGS", "").split():
    if flag.startswith(YNN_FLAG + "="):
      value = flag.split("=", 1)[1]  # the last one wins, as in XLA's parser
  if value is None:
    return "default"
  kinds = [k.strip() for k in value.split(",") if k.strip()]
  if any(k.startswith(("-", "+")) for k in kinds):  # edits of the default set
    return "xla" if "-individual_convolution" in kinds else "default"
  return "ynnpack" if "individual_convolution" in kinds else "xla"


HOST_MEMORY_ENV = "JAXAUG_HOST_MEMORY"  # "default": leave glibc's malloc as it is; "keep" (or unset): keep_host_memory


def keep_host_memory(environ=os.environ) -> bool:
  """Has glibc's malloc keep freed memory for the next buffer instead of handing it back to the OS; returns
  whether it did (not on another C library, nor under JAXAUG_HOST_MEMORY=default).

  Why: glibc maps each buffer above 32 MB afresh and unmaps it when freed, and trims the heap's freed top,
  so XLA:CPU's large intermediates (a UNet call's attention scores, a VAE decode's activations) fault their
  pages in one by one on every call. Measured on a 2-core Zen 4: one 2x5x1024x1024 fp32 attention-score matmul
  22 -> 7 ms, a full-size bf16 UNet call at 256 px 1.54 -> 1.43 s. The cost: the process keeps its peak
  memory until it exits. `python -m jaxaug.<command>` calls it when the package is imported; a program that
  imports jaxaug keeps its own malloc unless it calls this.
  """
  asked = environ.get(HOST_MEMORY_ENV, "keep")
  if asked not in ("keep", "default"):
    from jaxaug.errors import UserError

    raise UserError(f"{HOST_MEMORY_ENV}={asked!r}: expected keep or default (glibc's malloc as it is)")
  if asked == "default" or not sys.platform.startswith("linux"):
    return False
  import ctypes
  try:
    libc = ctypes.CDLL("libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # musl and others: no mallopt
    return False
  m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
  most = ctypes.c_int(2 ** 31 - 1)
  global _host_memory_kept
  _host_memory_kept = bool(mallopt(m_mmap_threshold, most)) and bool(mallopt(m_trim_threshold, most))
  return _host_memory_kept


_host_memory_kept = False


def host_memory_kept() -> bool:
  """Whether keep_host_memory has changed this process's malloc (a CPU figure records it)."""
  return _host_memory_kept


CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what XLA:CPU's kernels use


def host_cpu(cpuinfo: str = "/proc/cpuinfo") -> dict:
  """This machine's CPU model, core count and the vector features XLA:CPU can use: a CPU figure means little
  without them (the same command ran 0.67-1.1x PyTorch on three CPUs, issue 20). A virtual machine's model name
  can be as short as "AMD EPYC", so the family and model numbers come with it."""
  import platform

  fields: dict[str, str] = {}
  try:
    with open(cpuinfo) as f:
      for line in f:
        key, _, value = line.partition(":")
        if not line.strip():
          break  # the first processor's block is enough
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  model = fields.get("model name") or platform.processor() or platform.machine()
  if "cpu family" in fields and "model" in fields:
    model += f" (family {fields['cpu family']}, model {fields['model']})"
  flags = set(fields.get("flags", "").split())
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {"model": model, "cores": cores, "features": [f for f in CPU_FEATURES if f in flags]}
