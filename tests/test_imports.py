"""jaxaug's import graph (read from the source, nothing imported): no circle, and no library module imports an
entry point, except that the experiment's stages call generate/score/train's `run` (design.md, layout)."""

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jaxaug"
ENTRY_POINTS = {f"jaxaug.{name}" for name in ("generate", "score", "train", "experiment", "bench", "preview")}
ALLOWED = {("jaxaug.experiment_lib.stages", "jaxaug.generate"), ("jaxaug.experiment_lib.stages", "jaxaug.score")}


def _modules() -> dict[str, Path]:
  out = {}
  for path in PACKAGE.rglob("*.py"):
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    out[name.removesuffix(".__init__")] = path
  return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
  """The jaxaug modules `name` imports anywhere in its file (function bodies too)."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    else:
      continue
    for target in targets:
      while target and target not in modules:  # a name inside a module: the module
        target = target.rpartition(".")[0]
      if target and target != name:
        found.add(target)
  return found


@functools.cache
def graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(name, path, modules) for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while not component or component[-1] != v:
        component.append(stack.pop())
        on_stack.discard(component[-1])
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return found


def test_no_import_circle():
  assert cycles(graph()) == []


def test_no_library_module_imports_an_entry_point():
  edges = graph()
  upward = {(m, t) for m, targets in edges.items() if m not in ENTRY_POINTS for t in targets & ENTRY_POINTS}
  assert upward - ALLOWED == set()


def test_the_walker_sees_a_circle_and_function_level_imports():
  """The checks above could fail: a circle made of a module-level and a function-level import is found."""
  edges = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
  assert cycles(edges) == [["a", "b"]]
  stages = graph()["jaxaug.experiment_lib.stages"]
  assert {"jaxaug.generate", "jaxaug.score"} <= stages  # imported inside the stage functions
