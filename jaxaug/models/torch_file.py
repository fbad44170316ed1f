"""A PyTorch state dict file (.pth / .pt / .bin from torch.save) read as numpy arrays, without torch.

torch.save writes a pickle whose tensors point at raw storages: in a zip archive (torch >= 1.6:
`<name>/data.pkl` and `<name>/data/<key>`), or in the legacy stream (before 1.6, as pytorch-fid's 2019 FID
weights): magic number, protocol, system info, the pickle, the list of storage keys, then each storage as
an int64 element count and its little-endian bytes. Either way the pickle can name any Python callable, so
it is read with an unpickler that knows only what a state dict holds (an OrderedDict of tensors rebuilt from
storages) and refuses everything else: loading a weights file runs no code from it.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {"DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
           "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class NotAStateDict(ValueError):
  """The file is not a torch.save'd dict of tensors (or needs something a state dict never holds)."""


class _Storage:
  """A storage named in the pickle, its bytes filled in once read."""

  def __init__(self, dtype, numel: int):
    self.dtype, self.numel, self.array = np.dtype(dtype), numel, None


class _Tensor:
  """A tensor as the pickle describes it: a strided view of a storage, made an array once the storage is read."""

  def __init__(self, storage: _Storage, offset: int, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

  def array(self) -> np.ndarray:
    flat = self.storage.array
    if flat is None:
      raise NotAStateDict("a tensor's storage is missing from the file")
    needed = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1 if all(self.size) else 0
    if needed > len(flat):
      raise NotAStateDict("a tensor reaches past the end of its storage")
    item = flat.itemsize
    return np.lib.stride_tricks.as_strided(flat[self.offset:], self.size, [s * item for s in self.stride]).copy()


def _rebuild_tensor(storage, offset, size, stride, *_):
  if not isinstance(storage, _Storage):
    raise NotAStateDict("a tensor is not built on a storage")
  return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(tensor, *_):
  return tensor


class _Unpickler(pickle.Unpickler):
  """Allows the few globals a state dict pickles; storages come through `persistent_load`."""

  def __init__(self, file, storages: dict):
    super().__init__(file)
    self.storages = storages

  def find_class(self, module: str, name: str):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return _rebuild_parameter
    if module == "torch" and name in _DTYPES:
      return name
    raise NotAStateDict(f"it pickles {module}.{name}, which a state dict of tensors does not")

  def persistent_load(self, saved_id):
    if not isinstance(saved_id, tuple) or not saved_id or saved_id[0] not in ("storage", b"storage"):
      raise NotAStateDict(f"unknown persistent id {saved_id!r:.40}")
    storage_type, key, _location, numel = saved_id[1:5]
    if len(saved_id) > 5 and saved_id[5] is not None:
      raise NotAStateDict("it holds storage views (torch < 0.4), which this reader does not")
    if storage_type not in _DTYPES:
      raise NotAStateDict(f"unknown storage type {storage_type!r}")
    key = key.decode() if isinstance(key, bytes) else str(key)
    if key not in self.storages:
      self.storages[key] = _Storage(_DTYPES[storage_type], numel)
    return self.storages[key]


def _arrays(state) -> dict[str, np.ndarray]:
  if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, _Tensor) for k, v in state.items()):
    raise NotAStateDict("it does not hold a dict of tensor names to tensors")
  return {name: tensor.array() for name, tensor in state.items()}


def _read_zip(path: Path) -> dict[str, np.ndarray]:
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise NotAStateDict("a zip file without torch.save's data.pkl")
    root = pickles[0][: -len("data.pkl")]
    storages: dict[str, _Storage] = {}
    state = _Unpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
    for key, storage in storages.items():
      data = archive.read(f"{root}data/{key}")
      count = len(data) // storage.dtype.itemsize
      storage.array = np.frombuffer(data, storage.dtype.newbyteorder("<"), count).astype(storage.dtype)
  return _arrays(state)


def _read_legacy(path: Path) -> dict[str, np.ndarray]:
  with open(path, "rb") as f:
    if _Plain(f).load() != _LEGACY_MAGIC:  # one unpickler per record: each stops exactly at its record's end
      raise NotAStateDict("neither a zip archive nor torch's legacy format (no magic number)")
    _Plain(f).load()  # protocol version
    _Plain(f).load()  # system info
    storages: dict[str, _Storage] = {}
    state = _Unpickler(f, storages).load()
    keys = _Plain(f).load()
    for key in keys:
      storage = storages.get(str(key))
      header = f.read(8)
      if storage is None or len(header) != 8:
        raise NotAStateDict("its storages do not match its pickle (truncated?)")
      (count,) = struct.unpack("<q", header)
      data = f.read(count * storage.dtype.itemsize)
      if len(data) != count * storage.dtype.itemsize:
        raise NotAStateDict("it ends inside a storage (truncated)")
      storage.array = np.frombuffer(data, storage.dtype.newbyteorder("<"), count).astype(storage.dtype)
  return _arrays(state)


class _Plain(pickle.Unpickler):
  """The legacy stream's own records (magic number, versions, system info, storage keys): plain values only."""

  def find_class(self, module: str, name: str):
    raise NotAStateDict(f"its header pickles {module}.{name}")


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
  """{name: array} of a torch.save'd state dict; NotAStateDict (or OSError) where the file is not one."""
  path = Path(path)
  try:
    return _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
  except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, TypeError, ValueError) as e:
    if isinstance(e, NotAStateDict):
      raise
    raise NotAStateDict(f"unreadable ({type(e).__name__}: {' '.join(str(e).split())})") from None
