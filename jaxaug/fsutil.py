"""Atomic file writes: a temporary `.NAME.tmp-PID` beside the target, fsync, rename.

A reader sees the old file or the new one, never a torn one; a kill leaves at most the temporary, which
the next run's recovery removes (`jaxaug.data.synthetic.recover`).
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path


def cache_dir() -> Path:
  """jaxaug's own cache ($JAXAUG_CACHE_DIR, default ~/.cache/jaxaug): tiny checkpoints, weight hashes, label
  scans, parameter shapes. Everything in it can be deleted; it is made again."""
  return Path(os.environ.get("JAXAUG_CACHE_DIR") or "~/.cache/jaxaug").expanduser()


def fsync_dir(path: str | os.PathLike) -> None:
  """Makes a rename inside `path` durable (the directory entry, not only the file, reaches the disk)."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to a temporary name beside `path`, fsyncs it and renames it over `path`.

  A kill or a full disk at any instant leaves either the old file or the new one, never a torn one.
  On an error the temporary file is removed and the error raised.
  """
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    tmp.unlink(missing_ok=True)
    if isinstance(e, OSError):  # name the file being written, not its temporary
      e.filename, e.filename2 = os.fspath(path), None
    raise
  fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def append_line(path: str | os.PathLike, line: str) -> None:
  """Appends one line to a record file (done records) and fsyncs it; a kill mid-line leaves a torn last line,
  which the readers' recovery cuts."""
  with open(path, "a") as f:
    f.write(line + "\n")
    f.flush()
    os.fsync(f.fileno())


def write_png(path: str | os.PathLike, image) -> None:
  """A PIL image as PNG, atomically (pictures a reader may open while a run rewrites them)."""
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  atomic_write_bytes(path, buffer.getvalue())


def as_os_error(error: Exception, path: str | os.PathLike) -> OSError:
  """A native writer's failure (Riegeli's RuntimeError "write() failed: No space left on device; ...") as the
  OSError it reports, so a full disk inside ArrayRecord gives the same one line as one inside Python's writes."""
  text = " ".join(str(error).split()) or type(error).__name__
  known = [code for code in errno.errorcode if os.strerror(code) in text]
  code = max(known, key=lambda c: len(os.strerror(c))) if known else errno.EIO
  return OSError(code, os.strerror(code) if known else text, os.fspath(path))


def make_dirs(path: str | os.PathLike, what: str, flag: str) -> None:
  """`mkdir -p` for a run's output; a path that cannot be one is one line naming `what` and the flag to change.

  A dangling symbolic link on the way (a scratch mount not mounted, a moved target) is named with its target:
  mkdir's own "File exists" would send the user looking for a directory that is not there.
  """
  from jaxaug.errors import UserError

  path = Path(path)
  for p in (path, *path.parents):
    if p.is_symlink() and not p.exists():
      raise UserError(f"cannot write to {what} {path}: {p} is a symbolic link to {os.readlink(p)}, which does not "
                      f"exist; create the link's target or choose another {flag}")
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot write to {what} {path} ({e.strerror or e}); choose another {flag}") from None
