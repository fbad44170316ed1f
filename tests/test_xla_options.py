"""jaxaug's XLA:CPU default (xla_options): added only where safe, never over a user's flag, and really in effect."""

import os
import subprocess
import sys

import pytest

from jaxaug import xla_options

CHECKED = xla_options._jaxlib_version() in xla_options.CHECKED_JAXLIB


@pytest.fixture
def checked_jaxlib(monkeypatch):
  monkeypatch.setattr(xla_options, "_jaxlib_version", lambda: (0, 10))
  monkeypatch.setattr(xla_options, "_backend_started", lambda: False)


def test_added_to_the_flags_a_user_gave(checked_jaxlib):
  env = {}
  assert xla_options.apply_cpu_defaults(env) and env["XLA_FLAGS"] == xla_options.CPU_DEFAULT
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert xla_options.apply_cpu_defaults(env)
  assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=4 {xla_options.CPU_DEFAULT}"
  assert not xla_options.apply_cpu_defaults(env)  # once only
  assert env["XLA_FLAGS"].count(xla_options.YNN_FLAG) == 1


def test_never_over_a_users_own_setting_nor_after_an_opt_out(checked_jaxlib):
  own = {"XLA_FLAGS": f"{xla_options.YNN_FLAG}=individual_dot,individual_convolution"}
  assert not xla_options.apply_cpu_defaults(own)
  assert own["XLA_FLAGS"] == f"{xla_options.YNN_FLAG}=individual_dot,individual_convolution"
  assert xla_options.cpu_convolutions(own) == "ynnpack"
  out = {xla_options.OPT_OUT: "0"}
  assert not xla_options.apply_cpu_defaults(out) and "XLA_FLAGS" not in out


def test_not_added_on_an_unchecked_jaxlib_or_a_started_backend(monkeypatch):
  # XLA aborts the process on a flag its build does not know: only versions checked to have it get it
  monkeypatch.setattr(xla_options, "_backend_started", lambda: False)
  for version in [(0, 9), (0, 12), ()]:
    monkeypatch.setattr(xla_options, "_jaxlib_version", lambda v=version: v)
    env = {}
    assert not xla_options.apply_cpu_defaults(env) and env == {}, version
  monkeypatch.setattr(xla_options, "_jaxlib_version", lambda: (0, 10))
  monkeypatch.setattr(xla_options, "_backend_started", lambda: True)  # too late: XLA has read its flags
  assert not xla_options.apply_cpu_defaults({})


@pytest.mark.parametrize("flags, expected", [
    ("", "default"), ("--xla_force_host_platform_device_count=2", "default"),
    (xla_options.CPU_DEFAULT, "xla"), (f"{xla_options.YNN_FLAG}=", "xla"),
    (f"{xla_options.YNN_FLAG}=individual_convolution", "ynnpack"),
    (f"{xla_options.YNN_FLAG}=-individual_convolution", "xla"),
    (f"{xla_options.YNN_FLAG}=-individual_dot", "default"),
    (f"{xla_options.CPU_DEFAULT} {xla_options.YNN_FLAG}=individual_convolution", "ynnpack"),  # the last one wins
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


def _probe(**env):
  base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_options.OPT_OUT)}
  run = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  flags, fusions = run.stdout.strip().rsplit("|", 1)
  return flags.strip(), int(fusions)


def test_importing_jaxaug_takes_convolutions_away_from_ynnpack():
  """The compiled program changes, not just the environment: with the default a 3x3 convolution is XLA's own,
  without it (opt-out) YNNPACK's fusion."""
  flags, fusions = _probe()
  if not CHECKED:  # another jaxlib: nothing is added, whatever its XLA does
    assert xla_options.YNN_FLAG not in flags
    return
  assert flags == xla_options.CPU_DEFAULT and fusions == 0
  flags, fusions = _probe(**{xla_options.OPT_OUT: "0"})
  assert flags == "" and fusions >= 1
