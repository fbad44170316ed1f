"""Shared test set-up: a persistent compilation cache keeps the suite fast."""

import os
import sys

import jax

jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/jaxaug-tests/jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# The same cache for the jaxaug processes the tests start (generate, train, the installed wheel's demo).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/jaxaug-tests/jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# The launcher scripts (launch/*.sh) run `python` from PATH: put this interpreter's directory first, so that the
# tests exercise this environment's jaxaug even when its virtual environment is not activated.
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])


# Modules whose tests share expensive module fixtures and measurements: each runs whole on one xdist worker.
# (`--dist loadgroup` with xdist_group marks would say this, but pytest 9 drops the group suffix xdist adds to node
# ids, pytest-xdist#1386, and the tests are then spread as if unmarked.)
ONE_WORKER_MODULES = ("tests/test_demo_world.py",)


def pytest_xdist_make_scheduler(config, log):
  from xdist.scheduler import LoadScopeScheduling

  class Scheduling(LoadScopeScheduling):
    """Every test its own work unit (as `--dist load`), except the modules above, one unit each."""

    def _split_scope(self, nodeid: str) -> str:
      module = nodeid.split("::", 1)[0]
      return module if module in ONE_WORKER_MODULES else nodeid

  return Scheduling(config, log)
