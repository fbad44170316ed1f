"""A regular (non-editable) install: the wheel carries jaxaug and its configs, and runs from an empty directory.

The wheel is built from a copy of the sources and installed with pip into a fresh virtual environment
that borrows this environment's already-installed dependencies (a .pth file), so nothing is downloaded
where the build backend is at hand and the test takes seconds plus the demo.
"""

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import numpy as np
import pytest

from jaxaug import config_files
from jaxaug.data import synthetic
from jaxaug.models import demo_world

ROOT = Path(__file__).resolve().parent.parent
AGREEMENT = 0.8  # the judge's share of the demo's 200 images labelled with their class (measured 0.90)


def _can_build_without_isolation() -> bool:
  """setuptools builds wheels itself from 70.1 on; before that it needs the `wheel` package."""
  try:
    version = tuple(int(p) for p in importlib.metadata.version("setuptools").split(".")[:2])
  except importlib.metadata.PackageNotFoundError:
    return False
  return version >= (70, 1) or importlib.util.find_spec("wheel") is not None


def build_wheel(work: Path) -> Path:
  src = work / "src"
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
  for folder in ("jaxaug", "configs"):
    shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(ROOT / name, src / name)
  isolation = ["--no-build-isolation"] if _can_build_without_isolation() else []  # else pip fetches setuptools
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(work / "dist"),
                  str(src)], check=True, capture_output=True, text=True, timeout=300)
  (wheel,) = (work / "dist").glob("jaxaug-*.whl")
  return wheel


def install_into_fresh_venv(wheel: Path, venv: Path) -> Path:
  """`pip install WHEEL` into a new venv whose dependencies are this environment's; returns its python."""
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
  python = venv / "bin" / "python"
  site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        check=True, capture_output=True, text=True).stdout.strip()
  here = sysconfig.get_paths()
  # Plain path lines: the directories join sys.path after the venv's own, and their .pth files (this
  # environment's editable jaxaug among them) are not run, so `import jaxaug` finds only the wheel.
  Path(site, "_borrowed_dependencies.pth").write_text(f"{here['purelib']}\n{here['platlib']}\n")
  subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                  str(wheel)], check=True, capture_output=True, text=True, timeout=300)
  return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  work = tmp_path_factory.mktemp("install")
  return install_into_fresh_venv(build_wheel(work), work / "venv")


def _clean_env():
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env.setdefault("JAXAUG_CACHE_DIR", str(Path.home() / ".cache" / "jaxaug"))
  return env


def _run(python, *args, cwd):
  return subprocess.run([str(python), *args], cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=600)


def test_every_package_is_in_the_wheel():
  listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
  on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "jaxaug").rglob("__init__.py")}
  weights = ROOT / "jaxaug" / "models" / "world_weights"  # the shipped checkpoint's folders, as data packages
  on_disk |= {".".join(p.relative_to(ROOT).parts) for p in [weights, *weights.iterdir()] if p.is_dir()}
  assert listed == on_disk | {"jaxaug.configs"}


def test_installed_package_is_the_wheel_with_its_configs(installed, tmp_path):
  run = _run(installed, "-c", "import jaxaug, jaxaug.configs; from jaxaug import config_files; "
             "print(jaxaug.__file__); print(config_files.config_dir())", cwd=tmp_path)
  assert run.returncode == 0, run.stderr[-2000:]
  package, configs = run.stdout.split()
  venv = installed.parent.parent
  assert Path(package).is_relative_to(venv) and Path(configs) == Path(package).parent / "configs"
  assert sorted(p.name for p in Path(configs).glob("*.py")) == sorted(p.name for p in (ROOT / "configs").glob("*.py"))


def test_demo_without_flags_from_an_empty_directory(installed, tmp_path):
  run = _run(installed, "-m", "jaxaug.generate", cwd=tmp_path)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "contact sheet: out/demo/contact_sheet.png" in run.stdout
  assert (tmp_path / "out" / "demo" / "contact_sheet.png").is_file()
  src = synthetic.SyntheticSource(tmp_path / "out" / "demo")
  assert len({src.provenance(i)["method"] for i in range(len(src))}) == 10
  # The default is the trained world shipped in the package, and its images show their class.
  assert json.loads((tmp_path / "out" / "demo" / "config.json").read_text())["config"]["model"] == "world"
  examples = [src[i] for i in range(len(src))]
  predicted = demo_world.Judge.load().predict(np.stack([e.image for e in examples]))
  assert np.mean(predicted == np.asarray([e.label for e in examples])) >= AGREEMENT


@pytest.mark.parametrize("args, expect", [
    # A shipped config by name, by NAME:ARG and by its configs/ path: each loads (the bad value proves it
    # got as far as checking the config's values) from a directory that has no configs/.
    (["jaxaug.generate", "--config=imagenet_lt", "--config.plan.unit_size=0"], "plan.unit_size=0"),
    (["jaxaug.generate", "--config=fewshot:caltech101,4", "--config.data.source_size=0"], "data.source_size=0"),
    (["jaxaug.generate", "--config=configs/demo.py", "--config.output.jpeg_quality=0"], "output.jpeg_quality=0"),
    (["jaxaug.train", "--config=train_fewshot:caltech101,4,real", "--config.lr=-1.0"], "lr=-1.0"),
    (["jaxaug.generate", "--config=nothere"], "no config file or shipped config named 'nothere'"),
    # score's default config is shipped too: with no finished set to score it says so in one line.
    (["jaxaug.score", "--config.synthetic=absent"], "synthetic set absent does not exist"),
])
def test_configs_by_name_from_an_empty_directory(installed, tmp_path, args, expect):
  run = _run(installed, "-m", *args, cwd=tmp_path)
  assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
  lines = [l for l in run.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and expect in lines[0], lines
  assert not any(tmp_path.iterdir())


def test_own_config_file_by_path(tmp_path, monkeypatch):
  own = tmp_path / "mine.py"
  own.write_text("from jaxaug.config_base import generation_config\ndef get_config():\n  return generation_config()\n")
  monkeypatch.chdir(tmp_path)
  assert config_files.resolve("mine.py") == "mine.py"
  assert config_files.resolve(f"{own}:x") == f"{own}:x"
  assert config_files.resolve("imagenet_lt") == str(config_files.config_dir() / "imagenet_lt.py")
  assert config_files.resolve("fewshot:coco,8") == f"{config_files.config_dir() / 'fewshot.py'}:coco,8"
  assert config_files.resolve("configs/demo.py") == str(config_files.config_dir() / "demo.py")
  assert config_files.unknown_message("elsewhere/demo.py") is not None  # only configs/NAME.py maps to a shipped one
