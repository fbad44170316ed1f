"""Where `--config=...` finds its file: a shipped config by name, or a path.

The repository keeps its configs in the top-level `configs/`; an installed jaxaug carries the same files
as the package `jaxaug.configs` (pyproject maps one onto the other). So `--config=imagenet_lt`,
`--config=fewshot:caltech101,4` and `--config=configs/imagenet_lt.py` work from any directory, and a
path to a user's own `.py` file works as usual.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def config_dir() -> Path:
  """The shipped configs: inside the installed package, else the source checkout's configs/."""
  installed = _PACKAGE / "configs"
  if (installed / "demo.py").is_file():
    return installed
  checkout = _PACKAGE.parent
  if (checkout / "pyproject.toml").is_file() and (checkout / "configs" / "demo.py").is_file():
    return checkout / "configs"
  raise FileNotFoundError(f"jaxaug's configs are not installed next to {_PACKAGE}; reinstall jaxaug")


def shipped_names() -> list[str]:
  return sorted(p.stem for p in config_dir().glob("*.py") if not p.name.startswith("_"))


def resolve(value: str) -> str:
  """`--config`'s value with a shipped config's name (or its `configs/NAME.py` path, where no such file
  exists here) replaced by the shipped file's path; `:ARG` is kept. Anything else is returned as given."""
  path, sep, arg = value.partition(":")
  if Path(path).expanduser().is_file():
    return value
  candidate = Path(path)
  name = candidate.stem if candidate.suffix == ".py" else candidate.name
  looks_shipped = candidate.parent == Path(".") or candidate.parent.name == "configs"
  if looks_shipped and name in shipped_names():
    return f"{config_dir() / (name + '.py')}{sep}{arg}"
  return value


def unknown_message(value: str) -> str | None:
  """One line for a `--config` value that names no file, or None if it does."""
  path = value.partition(":")[0]
  if Path(path).expanduser().is_file():
    return None
  return (f"no config file or shipped config named {path!r}; give a path to a .py file or one of "
          f"{', '.join(shipped_names())}")


def load(name: str, arg: str | None = None):
  """get_config(arg) of a shipped config, for code that builds a run without flags (bench, tests)."""
  path = config_dir() / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"jaxaug_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()
