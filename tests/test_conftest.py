"""The suite's own scheduling: every module that conftest.SLOW_FIRST starts first or KEEP_WHOLE keeps whole exists
(a renamed module would silently lose its place), and the scheduler makes each module one work unit, so that a
module fixture is made once, not once per worker."""

from pathlib import Path

import conftest

ROOT = Path(__file__).resolve().parent.parent


def test_every_module_named_exists():
  for unit in [*conftest.SLOW_FIRST, *conftest.KEEP_WHOLE]:
    assert (ROOT / unit).is_file() and Path(unit).name.startswith("test_"), unit


def _units(nodeids: list[str]) -> set[str]:
  scheduler = object.__new__(conftest.ModuleUnits)  # no xdist session here: only the split is asked of it
  scheduler.collection = nodeids
  return {scheduler._split_scope(n) for n in nodeids}


def test_a_module_is_one_work_unit():
  generate = ["tests/test_generate.py::test_reference_run_output",
              "tests/test_generate.py::test_bad_input_is_one_line_exit_2_nothing_written[--config.x=a::b]",
              "tests/test_generate.py::test_configs_have_every_field[demo-None]"]
  assert _units([*generate, "tests/test_train.py::test_x"]) == {"tests/test_generate.py", "tests/test_train.py"}
  assert _units(generate) == set(generate)  # one module alone: each test its own unit, spread over the workers
  world = ["tests/test_demo_world.py::test_class_agreement", "tests/test_demo_world.py::test_mixtures_stay_a_or_b"]
  assert _units(world) == {"tests/test_demo_world.py"}  # but one whose tests share measurements stays whole
