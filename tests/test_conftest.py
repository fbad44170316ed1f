"""The suite's own scheduling: every test that conftest.ONE_WORKER keeps on one worker, or SLOW_FIRST starts first,
exists (a renamed test would silently leave its group and make the group's shared fixture once per worker, in
parallel, or lose its place at the front of the queue)."""

import ast
from pathlib import Path

from conftest import ONE_WORKER

ROOT = Path(__file__).resolve().parent.parent


def _tests(path: Path) -> list[str]:
  return [n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)
          and n.name.startswith("test_")]


def test_every_one_worker_prefix_names_a_test():
  for group, prefixes in ONE_WORKER.items():
    for prefix in prefixes:
      path, _, name = prefix.partition("::")
      assert (ROOT / path).is_file(), (group, prefix)
      assert any(t.startswith(name) for t in _tests(ROOT / path)), (group, prefix)


def test_every_slow_first_unit_is_a_group_or_a_test():
  from conftest import SLOW_FIRST

  for unit in SLOW_FIRST:
    if unit in ONE_WORKER:
      continue
    path, _, name = unit.partition("::")
    assert (ROOT / path).is_file() and name in _tests(ROOT / path), unit
