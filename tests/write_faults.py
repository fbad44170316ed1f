"""Runs `python -m jaxaug.generate FLAGS...` with a fault inside one kind of write, for the recovery and lock tests.

    python tests/write_faults.py kill WHAT FLAGS...
    python tests/write_faults.py pause=FILE WHAT FLAGS...

WHAT: info (dataset_info.json), shard (a unit's shard), done (a done-record line), image (an image file),
sheet (the contact sheet). `kill`: the process SIGKILLs itself after the temporary is written and before
its rename, or, for the done record, half-way through appending the line: what a power cut or SIGKILL at
that instant leaves behind. `pause=FILE`: at the first such rename it waits until FILE exists (a run
caught mid-write, for as long as a test needs), then goes on.
"""

import fnmatch
import os
import signal
import sys
import time

from jaxaug.data import synthetic

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


def kill_inside_done_append():
  class HalfWriter:
    def __init__(self, f):
      self.f = f

    def write(self, text):
      self.f.write(text[: len(text) // 2])
      self.f.flush()
      os.fsync(self.f.fileno())
      die()

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self.f.close()

  def patched_open(path, mode="r", *args, **kwargs):
    f = open(path, mode, *args, **kwargs)
    return HalfWriter(f) if mode == "a" and fnmatch.fnmatch(os.path.basename(path), synthetic.DONE_GLOB) else f

  synthetic.open = patched_open  # module globals come before builtins


def main():
  mode, what, flags = sys.argv[1], sys.argv[2], sys.argv[3:]
  if mode == "kill" and what == "done":
    kill_inside_done_append()
  else:
    fault_on_rename(RENAMED[what], die if mode == "kill" else pause_until(mode.removeprefix("pause=")))
  from jaxaug import generate

  sys.argv = ["jaxaug.generate", *flags]
  generate.main()


if __name__ == "__main__":
  main()
