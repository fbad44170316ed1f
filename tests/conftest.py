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


# Tests that share an expensive module fixture (or measurements) run together on one xdist worker, so the fixture
# is made once. (`--dist loadgroup` with xdist_group marks would say this, but pytest 9 drops the group suffix xdist
# adds to node ids, pytest-xdist#1386, and the tests are then spread as if unmarked.)
ONE_WORKER = {
    "demo world: models, judge and measurements": ("tests/test_demo_world.py::",),
    "experiment: the reference grid": tuple(f"tests/test_experiment.py::{name}" for name in (
        "test_demo_grid_runs_end_to_end", "test_rerun_of_a_finished_grid_runs_nothing",
        "test_sigkill_mid_grid_then_rerun_gives_the_same_results",
        "test_a_finished_cell_under_a_changed_config_is_refused")),
    "generate: the 8-unit reference run": tuple(f"tests/test_generate.py::{name}" for name in (
        "test_sigkill_and_rerun_is_identical", "test_sigint_then_sigterm_stop_cleanly_and_rerun_is_identical")),
    "train: the uninterrupted run": tuple(f"tests/test_train.py::{name}" for name in (
        "test_kill_and_resume_ends_with_the_same_metrics", "test_sigterm_then_sigint_keep_a_checkpoint",
        "test_a_signal_to_the_local_launcher")),
}


# The longest work units start first (longest-processing-time order), so that the suite does not end with one
# worker running a long test while the other idles. Seconds as measured in the whole suite on the 2-core CPU
# (junit, December 2026); a unit not named counts as short. Only the order depends on these: a stale figure costs
# time, never a result.
SLOW_FIRST = {
    "demo world: models, judge and measurements": 140,
    "train: the uninterrupted run": 80,
    "experiment: the reference grid": 45,
    "generate: the 8-unit reference run": 30,
    "tests/test_experiment_multirun.py::test_two_processes_train_a_group_as_one_process_does": 30,
    "tests/test_generate.py::test_two_processes_give_identical_records": 28,
    "tests/test_install.py::test_demo_without_flags_from_an_empty_directory": 24,
    "tests/test_bench.py::test_sampler_bench_sweeps_batches_and_kernels": 23,
    "tests/test_generate.py::test_recovery_removes_what_a_kill_inside_each_write_leaves": 23,
    "tests/test_train.py::test_a_damaged_checkpoint_leaves_no_unraisable_reports": 21,
    "tests/test_world.py::test_the_pairs_stage_pulls_the_two_branches_together_at_low_noise": 20,
    "tests/test_experiment_multirun.py::test_batched_runs_equal_separate_runs": 12,
    "tests/test_experiment_multirun.py::test_bench_experiment_times_both_ways_and_counts_compiles": 12,
    "tests/test_generate.py::test_the_runs_prompts_are_encoded_once_per_run_not_in_every_step": 10,
}


def pytest_xdist_make_scheduler(config, log):
  from xdist.scheduler import LoadScopeScheduling

  class Scheduling(LoadScopeScheduling):
    """Every test its own work unit (as `--dist load`), except each ONE_WORKER group, one unit each; the units
    named in SLOW_FIRST go out first, longest first."""

    def _split_scope(self, nodeid: str) -> str:
      return next((group for group, prefixes in ONE_WORKER.items() if nodeid.startswith(prefixes)), nodeid)

    def _assign_work_unit(self, node):
      if not getattr(self, "_longest_first", False):  # the queue is complete when the first unit goes out
        self._longest_first = True
        units = sorted(self.workqueue.items(), key=lambda unit: -SLOW_FIRST.get(unit[0], 0))  # stable
        self.workqueue.clear()
        self.workqueue.update(units)
      super()._assign_work_unit(node)

  return Scheduling(config, log)
