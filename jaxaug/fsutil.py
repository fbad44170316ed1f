"""Atomic file writes: a temporary `.NAME.tmp-PID` beside the target, fsync, rename.

A reader sees the old file or the new one, never a torn one; a kill leaves at most the temporary, which
the next run's recovery removes (`jaxaug.data.synthetic.recover`).
"""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write_bytes(path, text.encode())
