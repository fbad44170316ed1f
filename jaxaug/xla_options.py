"""XLA:CPU options jaxaug sets by default, because they were measured to win on CPUs (issue 20).

jaxlib 0.10's XLA:CPU hands every convolution to YNNPACK ("individual_convolution" in
`--xla_cpu_experimental_ynn_fusion_type`). On an AMD EPYC (Zen 4, AVX-512) that was the slower choice:
XLA's own convolutions made a full-size SD 2.1-unCLIP sampling step 23% faster (0.0369 -> 0.0455 images/s,
fp32, 256 px) and the demo world's UNet call 10-20% and its VAE decode 35-45% faster. YNNPACK keeps the
dots, where it wins. docs/speed.md has the figures and the commands.

XLA reads XLA_FLAGS once, when jax starts its first backend, and aborts the process on a flag its build does
not know. So the option is added only to the jaxlib versions it was checked on, only while no backend has
started, and never over a user's own setting of the same flag. `JAXAUG_XLA_CPU_DEFAULTS=0` turns it off.
"""

from __future__ import annotations

import os
import sys

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
CPU_DEFAULT = f"{YNN_FLAG}=individual_dot"  # YNNPACK for dots only; convolutions are XLA's own
CHECKED_JAXLIB = ((0, 10), (0, 11))  # (major, minor) whose XLA has the flag: 0.10.2 measured here, 0.11 read
OPT_OUT = "JAXAUG_XLA_CPU_DEFAULTS"


def _jaxlib_version() -> tuple[int, ...]:
  try:
    from jaxlib.version import __version__  # 6 ms, and jax imports it anyway
    return tuple(int(p) for p in __version__.split(".")[:2])
  except (ImportError, ValueError):
    return ()


def _backend_started() -> bool:
  bridge = sys.modules.get("jax._src.xla_bridge")
  return bool(getattr(bridge, "_backends", None))


def apply_cpu_defaults(environ=os.environ) -> bool:
  """Add CPU_DEFAULT to XLA_FLAGS where it is safe and wanted; True when it was added."""
  flags = environ.get("XLA_FLAGS", "")
  if (environ.get(OPT_OUT, "1") == "0" or YNN_FLAG in flags or _jaxlib_version() not in CHECKED_JAXLIB
      or _backend_started()):
    return False
  environ["XLA_FLAGS"] = f"{flags} {CPU_DEFAULT}".strip()
  return True


def cpu_convolutions(environ=os.environ) -> str:
  """Which library runs CPU convolutions under this process's XLA_FLAGS: 'xla', 'ynnpack', or 'default' (the
  jaxlib's own choice). Recorded in a run's numerics, since the two libraries round differently."""
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
