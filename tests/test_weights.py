"""Weights named and pinned: sha256 of every weight file (cached by size and mtime), `python -m jaxaug.models
DIR --hash`, and one line for a hub id that is gone or out of reach."""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from jaxaug.errors import UserError
from jaxaug.models import checkpoint, tiny


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  return tiny.write_tiny(tmp_path_factory.mktemp("ckpt") / "unclip", "unclip")


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXAUG_CACHE_DIR", str(tmp_path / "cache"))
  return tmp_path / "cache"


def test_hashes_are_the_sha256_of_every_weight_file(ckpt, cache_dir):
  hashes = checkpoint.weight_hashes(ckpt)
  files = sorted(p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*.safetensors"))
  assert list(hashes) == files and "unet/diffusion_pytorch_model.safetensors" in hashes
  for name, digest in hashes.items():
    assert digest == hashlib.sha256((ckpt / name).read_bytes()).hexdigest()


def test_hashes_are_cached_by_size_and_mtime(ckpt, cache_dir, tmp_path, monkeypatch):
  root = tmp_path / "copy"
  shutil.copytree(ckpt, root)
  read = []
  real = checkpoint.sha256_file
  monkeypatch.setattr(checkpoint, "sha256_file", lambda p: read.append(p.name) or real(p))
  first = checkpoint.weight_hashes(root)
  assert len(read) == len(first)
  read.clear()
  assert checkpoint.weight_hashes(root) == first and read == []  # a rerun only stats the files
  vae = root / "vae" / "diffusion_pytorch_model.safetensors"
  data = bytearray(vae.read_bytes())
  data[-1] ^= 1  # same size; the write moves the mtime
  vae.write_bytes(bytes(data))
  changed = checkpoint.weight_hashes(root)
  assert read == [vae.name] and changed["vae/diffusion_pytorch_model.safetensors"] != first[
      "vae/diffusion_pytorch_model.safetensors"]
  assert {k: v for k, v in changed.items() if not k.startswith("vae/")} == {
      k: v for k, v in first.items() if not k.startswith("vae/")}


def test_damaged_hash_cache_is_rebuilt(ckpt, cache_dir):
  cache_dir.mkdir(parents=True)
  (cache_dir / "weight_hashes.json").write_text("{not json")
  assert checkpoint.weight_hashes(ckpt) == {p.relative_to(ckpt).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                                            for p in ckpt.rglob("*.safetensors")}


def test_cli_hash_prints_sha256sum_lines(ckpt, tmp_path):
  run = subprocess.run([sys.executable, "-m", "jaxaug.models", str(ckpt), "--hash"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "JAXAUG_CACHE_DIR": str(tmp_path)})
  assert run.returncode == 0, run.stderr
  lines = run.stdout.splitlines()
  assert len(lines) == len(list(ckpt.rglob("*.safetensors")))
  check = subprocess.run(["sha256sum", "-c", "--quiet"], input=run.stdout, cwd=ckpt, capture_output=True, text=True)
  assert check.returncode == 0, check.stdout + check.stderr


def _hub_error(cls_name):
  from huggingface_hub import errors

  cls = getattr(errors, cls_name)
  # huggingface_hub >= 1.0 requires an HTTP response to build its HTTP errors; the classification only looks at the
  # type, so build the instance without calling the version-specific constructor.
  error = cls.__new__(cls)
  Exception.__init__(error, "404 Client Error: Repository Not Found")
  return error


@pytest.mark.parametrize("repo, error, expect", [
    ("stabilityai/stable-diffusion-2-1-unclip", "RepositoryNotFoundError",
     "'stabilityai/stable-diffusion-2-1-unclip' does not exist on the Hugging Face hub (any more); Stability AI "
     "removed its SD 2.x repositories from the hub in November 2025; use the community mirror "
     "sd2-community/stable-diffusion-2-1-unclip"),
    ("someone/gone", "RepositoryNotFoundError", "'someone/gone' does not exist on the Hugging Face hub"),
    ("someone/gated", "GatedRepoError", "is gated on the Hugging Face hub"),
    ("someone/far", "OfflineModeIsEnabled", "cannot reach the Hugging Face hub to fetch 'someone/far'"),
])
def test_hub_id_that_cannot_be_fetched_is_one_line_naming_alternatives(monkeypatch, repo, error, expect):
  import huggingface_hub

  def fail(*args, **kwargs):
    raise _hub_error(error)

  monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
  with pytest.raises(UserError) as err:
    checkpoint.resolve(repo)
  message = str(err.value)
  assert expect in message and "\n" not in message
  assert "sd2-community/stable-diffusion-2-1-unclip" in message and "--local-dir DIR" in message


def test_unreachable_hub_for_real(tmp_path):
  """The real hub client, offline: the official id's line says it is gone and names the mirror."""
  run = subprocess.run([sys.executable, "-m", "jaxaug.models", "stabilityai/stable-diffusion-2-1-unclip"],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)})
  assert run.returncode == 2 and "Traceback" not in run.stderr
  (line,) = [l for l in run.stderr.splitlines() if l.strip()]
  assert "cannot reach the Hugging Face hub" in line and "removed its SD 2.x repositories" in line
  assert "sd2-community/stable-diffusion-2-1-unclip" in line
