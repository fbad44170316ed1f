"""The CLIP tokenizer: transformers' CLIPTokenizer, remembered per tokenizer folder.

transformers is jaxaug's only way to read a checkpoint's tokenizer/ folder, but importing it costs about a
second on every command. Its CLIPTokenizer (transformers 5, or 4's fast one) is a pipeline of the `tokenizers`
library underneath; the first load keeps that pipeline, serialised by `tokenizers` itself, in the cache
directory, keyed by the folder's bytes and both libraries' versions. Later loads rebuild it from there and
set the same padding and truncation that `tokenizer(prompts, padding="max_length", truncation=True)` sets,
so the ids are transformers' own (tests/test_models.py checks both ways agree). transformers' slow tokenizer
(4.x without `tokenizers`) is used as it is, uncached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from jaxaug import fsutil
from jaxaug.errors import UserError

_REFETCH = "re-download the checkpoint's tokenizer/ folder"


@dataclasses.dataclass(frozen=True, eq=False)
class Tokenizer:
  """Prompts -> int32 token ids (B, model_max_length), padded and truncated as diffusers asks transformers to."""
  model_max_length: int
  encode: Callable[[list[str]], np.ndarray]
  cached: bool = False  # rebuilt from the cache directory, without transformers

  def __call__(self, prompts) -> np.ndarray:
    return self.encode(list(prompts))


def load(d: Path) -> Tokenizer:
  """The tokenizer in folder `d` (already checked by checkpoint.check_tokenizer); damage it still has is one line."""
  path = fsutil.cache_dir() / "tokenizers" / f"{_key(d)}.json"
  try:
    return _from_entry(json.loads(path.read_text()))
  except Exception:  # none cached yet, or a damaged entry (tokenizers raises bare Exceptions): build it again
    pass
  tokenizer, entry = _from_transformers(d)
  if entry is not None:
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      fsutil.atomic_write_text(path, json.dumps(entry))
    except OSError:
      pass  # a read-only or full cache only costs the next command transformers' import
  return tokenizer


def _key(d: Path) -> str:
  h = hashlib.sha256()
  for name in ("transformers", "tokenizers"):
    try:
      h.update(f"{name} {importlib.metadata.version(name)}\n".encode())
    except importlib.metadata.PackageNotFoundError:
      h.update(f"{name} none\n".encode())
  for f in sorted(p for p in d.iterdir() if p.is_file()):
    h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
  return h.hexdigest()[:32]


def _from_transformers(d: Path) -> tuple[Tokenizer, dict | None]:
  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
  os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
  from transformers import CLIPTokenizer  # imported here: heavy, and only a first load needs it

  try:
    tok = CLIPTokenizer.from_pretrained(str(d))
  except Exception as e:  # tokenizers raises bare Exceptions, transformers many types, for damaged content
    raise UserError(f"{d} cannot be read as a CLIP tokenizer ({type(e).__name__}: {' '.join(str(e).split())}); "
                    f"{_REFETCH}") from None
  length = tok.model_max_length

  def encode(prompts: list[str]) -> np.ndarray:
    return tok(prompts, padding="max_length", max_length=length, truncation=True,
               return_tensors="np").input_ids.astype(np.int32)

  backend = getattr(tok, "backend_tokenizer", None)
  usable = backend is not None and type(length) is int and tok.pad_token_id is not None
  entry = None if not usable else {
      "backend": backend.to_str(), "model_max_length": length, "pad_id": tok.pad_token_id,
      "pad_token": str(tok.pad_token), "padding_side": tok.padding_side, "truncation_side": tok.truncation_side}
  return Tokenizer(length, encode), entry


def _from_entry(entry: dict) -> Tokenizer:
  from tokenizers import Tokenizer as Backend

  backend = Backend.from_str(entry["backend"])
  length = entry["model_max_length"]
  backend.enable_truncation(length, strategy="longest_first", direction=entry["truncation_side"])
  backend.enable_padding(direction=entry["padding_side"], pad_id=entry["pad_id"], pad_token=entry["pad_token"],
                         length=length)

  def encode(prompts: list[str]) -> np.ndarray:
    return np.asarray([e.ids for e in backend.encode_batch(prompts)], np.int32).reshape(len(prompts), length)

  return Tokenizer(length, encode, cached=True)
