"""Shared test set-up: a persistent compilation cache keeps the suite fast."""

import os
import sys

import jax
from xdist.scheduler import LoadScopeScheduling

jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/jaxaug-tests/jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# The same cache for the jaxaug processes the tests start (generate, train, the installed wheel's demo).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/jaxaug-tests/jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# The launcher scripts (launch/*.sh) run `python` from PATH: put this interpreter's directory first, so that the
# tests exercise this environment's jaxaug even when its virtual environment is not activated.
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])


# Each test module is one xdist work unit, run whole by one worker, so that its module fixtures (a reference run,
# a grid, the demo world's models and measurements) are made once, not once per worker: the suite's summed test
# time fell from 1,154 to 1,001 s (one run each, December 2026) when its units went from single tests to modules.
#
# The longest modules start first (longest-processing-time order), so that the suite does not end with one worker
# running a long module while the other idles. Seconds as measured in the whole suite on the 2-core CPU (junit,
# December 2026); a module not named counts as short. Only the order depends on these: a stale figure costs time,
# never a result.
SLOW_FIRST = {
    "tests/test_generate.py": 229,
    "tests/test_demo_world.py": 141,
    "tests/test_train.py": 140,
    "tests/test_models.py": 86,
    "tests/test_experiment.py": 55,
    "tests/test_experiment_multirun.py": 54,
    "tests/test_bench.py": 44,
    "tests/test_install.py": 39,
    "tests/test_world.py": 37,
    "tests/test_parity.py": 35,
    "tests/test_augment.py": 18,
    "tests/test_preview.py": 17,
    "tests/test_score.py": 17,
    "tests/test_resnet.py": 15,
    "tests/test_inception.py": 15,
    "tests/test_dinov2.py": 14,
    "tests/test_reference_quirks.py": 14,
}


# Modules whose tests share one set of measurements, kept whole even when run alone (see ModuleUnits).
KEEP_WHOLE = {"tests/test_demo_world.py"}


class ModuleUnits(LoadScopeScheduling):
  """Each test module one work unit; the modules named in SLOW_FIRST go out first, longest first. A run of one
  module (`pytest tests/test_generate.py`) has every test its own unit instead, so that it still uses every
  worker, unless the module is in KEEP_WHOLE (split, the demo world's measurements would be made on both
  workers: 133 s alone against 110 s whole)."""

  def _split_scope(self, nodeid: str) -> str:
    module = nodeid.split("::")[0]  # loadscope's own split would cut a parameter id holding "::"
    if not hasattr(self, "_modules"):  # the collection is complete before the first split
      self._modules = len({n.split("::")[0] for n in self.collection})
    return module if self._modules > 1 or module in KEEP_WHOLE else nodeid

  def _assign_work_unit(self, node):
    if not getattr(self, "_longest_first", False):  # the queue is complete when the first unit goes out
      self._longest_first = True
      units = sorted(self.workqueue.items(), key=lambda unit: -SLOW_FIRST.get(unit[0], 0))  # stable
      self.workqueue.clear()
      self.workqueue.update(units)
    super()._assign_work_unit(node)


def pytest_xdist_make_scheduler(config, log):
  return ModuleUnits(config, log)
