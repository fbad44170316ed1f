"""XLA:CPU's convolution library (xla_options): jaxaug leaves jaxlib's choice alone, reads what a run used, and
the documented opt-in really changes the compiled program."""

import os
import subprocess
import sys

import pytest

from jaxaug import xla_options


@pytest.mark.parametrize("flags, expected", [
    ("", "default"), ("--xla_force_host_platform_device_count=2", "default"),
    (xla_options.FASTER_CONVOLUTIONS, "xla"), (f"{xla_options.YNN_FLAG}=", "xla"),
    (f"{xla_options.YNN_FLAG}=individual_convolution", "ynnpack"),
    (f"{xla_options.YNN_FLAG}=-individual_convolution", "xla"),
    (f"{xla_options.YNN_FLAG}=-individual_dot", "default"),
    (f"{xla_options.FASTER_CONVOLUTIONS} {xla_options.YNN_FLAG}=individual_convolution", "ynnpack"),  # last wins
])
def test_cpu_convolutions_reads_the_flags(flags, expected):
  assert xla_options.cpu_convolutions({"XLA_FLAGS": flags}) == expected


PROBE = """
import jaxaug, jax, jax.numpy as jnp, os
conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
hlo = jax.jit(conv).lower(jnp.ones((2, 16, 16, 32)), jnp.ones((3, 3, 32, 32))).compile().as_text()
fusions = [l for l in hlo.splitlines() if "ynn_fusion" in l and "= " in l and "fusion(" in l]
print(os.environ.get("XLA_FLAGS", ""), "|", len(fusions))
"""


def _probe(flags=None):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if flags is not None:
    env["XLA_FLAGS"] = flags
  run = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  seen, fusions = run.stdout.strip().rsplit("|", 1)
  return seen.strip(), int(fusions)


def test_jaxaug_adds_no_flag_and_the_opt_in_takes_convolutions_from_ynnpack():
  seen, _ = _probe()
  assert seen == ""  # importing jaxaug leaves XLA_FLAGS alone
  seen, fusions = _probe(xla_options.FASTER_CONVOLUTIONS)
  assert seen == xla_options.FASTER_CONVOLUTIONS and fusions == 0  # XLA's own convolution: no YNNPACK fusion


def test_host_cpu_names_the_model_and_the_vector_features(tmp_path):
  info = tmp_path / "cpuinfo"
  info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: 1\n"
                  "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\n"
                  "model name\t: something else\nflags\t\t: avx512f\n")
  cpu = xla_options.host_cpu(str(info))
  assert cpu["model"] == "AMD EPYC (family 23, model 1)" and cpu["features"] == ["avx2", "fma"]
  assert cpu["cores"] >= 1
  assert xla_options.host_cpu(str(tmp_path / "absent"))["features"] == []  # not Linux: no flags, still a model


MALLOC_PROBE = """
import sys
if sys.argv[1] == "entry":
  sys.argv[:1] = ["-m"]  # what `python -m jaxaug.<command>` has while the package is imported
import jaxaug
from jaxaug import xla_options
if sys.argv[1] == "call":
  xla_options.keep_host_memory()
import numpy as np

def resident_mb():
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * 4096 / 2**20

before = resident_mb()
for _ in range(3):
  block = np.ones(100 * 2**20 // 8)  # 100 MB, written (so resident), then freed
  del block
print(xla_options.host_memory_kept(), round(resident_mb() - before))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and /proc are Linux's")
@pytest.mark.parametrize("how, env, kept", [("none", {}, False), ("call", {}, True), ("entry", {}, True),
                                            ("entry", {xla_options.HOST_MEMORY_ENV: "default"}, False)])
def test_malloc_keeps_freed_memory_for_entry_points_only(how, env, kept):
  """glibc hands a freed 100 MB buffer back to the OS (the next one faults its pages in again); after
  keep_host_memory the process keeps it. Entry points call it, a plain import does not, and the environment
  variable opts out."""
  run = subprocess.run([sys.executable, "-c", MALLOC_PROBE, how], env={**os.environ, **env}, capture_output=True,
                       text=True, timeout=120)
  assert run.returncode == 0, run.stderr[-2000:]
  flag, kept_mb = run.stdout.split()
  assert flag == str(kept)
  assert (int(kept_mb) >= 90) == kept, run.stdout  # the buffer's 100 MB still resident, or given back


def test_an_unknown_host_memory_setting_is_one_line():
  run = subprocess.run([sys.executable, "-m", "jaxaug.generate", "--help"],
                       env={**os.environ, xla_options.HOST_MEMORY_ENV: "off"}, capture_output=True, text=True,
                       timeout=120)
  assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
  assert run.stderr.strip().splitlines() == [
      f"jaxaug: error: {xla_options.HOST_MEMORY_ENV}='off': expected keep or default (glibc's malloc as it is)"]
