"""One writer per (directory, process index): an exclusive `flock` held for the life of the process.

Each process of a run locks `DIR/.lock.pN` for its own index N, so the processes of one multi-process run
never block each other, while a second run on the same directory (a double submit, a requeue that
overlaps the old job) stops at once, naming the holder. The kernel drops the lock when its process dies,
SIGKILL included, so a killed run never leaves a stale lock; the lock file itself stays, unlocked.

Across hosts the lock is only as good as the filesystem's `flock`: NFS carries it to the server (unless
mounted with local_lock=flock/all or nolock), Lustre only with the `flock` mount option (`localflock`
keeps it on one client); `scope_note` says when a mount keeps it local.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from absl import logging

from jaxaug.errors import UserError

_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def lock_path(directory: str | os.PathLike, index: int) -> Path:
  return Path(directory) / f".lock.p{index}"


class DirectoryLock:
  """A held slot; released by `release`, by leaving a `with` block, or by the process ending."""

  def __init__(self, path: Path, fd: int | None):
    self.path, self._fd = path, fd

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing the only descriptor drops the flock
      self._fd = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()


def _owner(fd: int) -> dict:
  try:
    return json.loads(os.pread(fd, 4096, 0) or b"{}")
  except (OSError, ValueError):
    return {}


def describe(owner: dict) -> str:
  if not owner:
    return "a process that has not yet written its name"
  started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
  return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, started {started}"


def _in_use(directory, index: int, owner: dict, what: str, flag: str) -> str:
  return (f"{directory} is in use by another {what} (process {index}: {describe(owner)}); wait for it to end or stop "
          f"it, or use another {flag}")


def hold(directory: str | os.PathLike, index: int, what: str, flag: str) -> DirectoryLock:
  """Locks slot `index` of `directory` for this process; UserError naming the holder if another has it.

  `what` names the kind of run in the message, `flag` the config field that picks another directory.
  """
  path = lock_path(directory, index)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise UserError(f"cannot create the lock file {path} ({e.strerror}); choose another {flag}") from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    owner = _owner(fd)
    os.close(fd)
    raise UserError(_in_use(directory, index, owner, what, flag)) from None
  except OSError as e:
    if e.errno not in _UNSUPPORTED:
      raise
    logging.warning("%s: this filesystem does not support flock (%s), so jaxaug cannot see whether another run writes "
                    "here; make sure only one job uses this directory", directory, e.strerror)
    return DirectoryLock(path, fd)
  note = scope_note(directory)
  if note:
    logging.warning("%s: %s", directory, note)
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode(), 0)
  except OSError as e:  # a full disk: the lock is held, but nothing else could be written either
    os.close(fd)
    raise UserError(f"cannot write {path} ({e.strerror}): free space or fix permissions there, then rerun the same "
                    "command to continue") from None
  return DirectoryLock(path, fd)


def hold_run(directory: str | os.PathLike, index: int, count: int, what: str, flag: str) -> DirectoryLock:
  """Slot `index` of a run of `count` processes; process 0 also refuses while another run's processes hold
  slots beyond this run's (a bigger job still running: its writes would race this run's recovery)."""
  lock = hold(directory, index, what, flag)
  others = held_slots(directory, count) if index == 0 else {}
  if others:
    lock.release()
    other, owner = min(others.items())
    raise UserError(_in_use(directory, other, owner, what, flag))
  return lock


def holder(directory: str | os.PathLike, index: int) -> dict | None:
  """The owner of slot `index` if some process holds it now, else None (probes without keeping the lock)."""
  path = lock_path(directory, index)
  try:
    fd = os.open(path, os.O_RDWR)
  except FileNotFoundError:
    return None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    return _owner(fd)
  except OSError:
    return None
  finally:
    os.close(fd)
  return None


def held_slots(directory: str | os.PathLike, beyond: int) -> dict[int, dict]:
  """{index: owner} for every slot >= `beyond` that a live process holds: another run's processes."""
  held = {}
  for path in Path(directory).glob(".lock.p*"):
    suffix = path.name[len(".lock.p"):]
    if suffix.isdigit() and int(suffix) >= beyond:
      owner = holder(directory, int(suffix))
      if owner is not None:
        held[int(suffix)] = owner
  return held


def _unescape(field: str) -> str:
  return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mount_of(path: str | os.PathLike, mountinfo: str) -> tuple[str, str, set[str]] | None:
  """(mount point, filesystem type, options) of the mount holding `path`, from /proc/self/mountinfo text."""
  real = os.path.realpath(path)
  best = None
  for line in mountinfo.splitlines():
    left, sep, right = line.partition(" - ")
    fields, tail = left.split(), right.split()
    if not sep or len(fields) < 6 or len(tail) < 3:
      continue
    point = _unescape(fields[4])
    inside = real == point or real.startswith(point.rstrip("/") + "/")
    if inside and (best is None or len(point) >= len(best[0])):
      best = (point, tail[0], set(fields[5].split(",")) | set(tail[2].split(",")))
  return best


def scope_note(path: str | os.PathLike, mountinfo: str | None = None) -> str | None:
  """A warning when the mount holding `path` keeps flock on each host, so runs on two hosts cannot see each other."""
  if mountinfo is None:
    try:
      mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
      return None
  mount = mount_of(path, mountinfo)
  if mount is None:
    return None
  point, fstype, options = mount
  local = None
  if fstype.startswith("nfs") and options & {"local_lock=flock", "local_lock=all", "nolock"}:
    local = f"NFS mount {point} keeps flock on each host ({', '.join(sorted(options & {'local_lock=flock', 'local_lock=all', 'nolock'}))})"
  elif fstype == "lustre" and "localflock" in options:
    local = f"Lustre mount {point} is mounted with localflock"
  if local is None:
    return None
  return (f"{local}: the output lock stops a second run on this host only; make sure no other host runs the same "
          "process index on this directory")
