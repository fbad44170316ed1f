"""Runs `python -m jaxaug.generate FLAGS...` with a fault inside one kind of write, for the recovery and lock tests.

    python tests/write_faults.py kill WHAT FLAGS...
    python tests/write_faults.py pause=FILE WHAT FLAGS...
    python tests/write_faults.py full shard FLAGS...

WHAT: info (dataset_info.json), shard (a unit's shard), done (a done-record line), image (an image file),
sheet (the contact sheet), config (config.json). `kill`: the process SIGKILLs itself after the temporary is
written and before its rename, or, for the done record and config.json, half-way through writing the line
or the temporary: what a power cut or SIGKILL at that instant leaves behind. `pause=FILE`: at the first such rename it waits until FILE exists (a run
caught mid-write, for as long as a test needs), then goes on. `full shard`: the first shard's temporary is a link
to /dev/full, where the kernel answers every write with ENOSPC as a full disk does (no root needed, unlike a small
tmpfs); the real ArrayRecord writer buffers its records, so that first shows when it closes the shard.
"""

import builtins
import fnmatch
import io
import os
import signal
import sys
import threading
import time

from jaxaug.data import synthetic

# Torn inside the write itself, (name pattern, open modes): the done record's appended line, and config.json's
# temporary (its rename never comes).
TORN = {"done": (synthetic.DONE_GLOB, "a"), "config": ("*config.json*", "wax+")}
RENAMED = {"info": "dataset_info.json", "shard": "unit-*.array_record", "image": "item-*.*", "sheet": "contact_sheet.png"}


def die():
  os.kill(os.getpid(), signal.SIGKILL)


def pause_until(path: str):
  def wait():
    while not os.path.exists(path):
      time.sleep(0.02)
  return wait


def fault_on_rename(pattern: str, fault):
  replace = os.replace

  def patched(src, dst, *args, **kwargs):
    if fnmatch.fnmatch(os.path.basename(dst), pattern):
      fault()
    return replace(src, dst, *args, **kwargs)

  os.replace = patched


class _Torn:
  """A file whose first write lands half and then kills the process: a SIGKILL inside that write."""

  def __init__(self, f):
    self._f = f

  def write(self, data):
    self._f.write(data[: len(data) // 2])
    self._f.flush()
    os.fsync(self._f.fileno())
    die()

  def __getattr__(self, name):
    return getattr(self._f, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return self._f.__exit__(*exc)


def kill_inside_write(pattern: str, modes: str):
  """Tears the first write to a file whose name matches `pattern`, opened with a mode holding one of `modes`."""
  real_open = builtins.open

  def torn_open(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    hit = not isinstance(file, int) and any(c in mode for c in modes)
    return _Torn(f) if hit and fnmatch.fnmatch(os.path.basename(os.fspath(file)), pattern) else f

  io.open = builtins.open = torn_open


def full_disk_at_first_shard():
  """The first shard written goes to /dev/full: its writer fails with "No space left on device" at close."""
  real, hit, lock = synthetic.ArrayRecordWriter, [], threading.Lock()

  def writer(path, *args, **kwargs):
    with lock:  # two writer threads commit units
      if not hit:
        hit.append(path)
        os.symlink("/dev/full", path)
    return real(path, *args, **kwargs)

  synthetic.ArrayRecordWriter = writer


def main():
  mode, what, flags = sys.argv[1], sys.argv[2], sys.argv[3:]
  if mode == "full" and what == "shard":
    full_disk_at_first_shard()
  elif mode == "kill" and what in TORN:
    kill_inside_write(*TORN[what])
  else:
    fault_on_rename(RENAMED[what], die if mode == "kill" else pause_until(mode.removeprefix("pause=")))
  from jaxaug import generate

  sys.argv = ["jaxaug.generate", *flags]
  generate.main()


if __name__ == "__main__":
  main()
