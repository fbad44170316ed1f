"""SIGINT and SIGTERM during generation: stop dispatching, let in-flight unit writes finish, one line, exit.

SLURM pre-emption sends SIGTERM and, after a grace period (KillWait, 30 s by default), SIGKILL; a user
presses Ctrl-C. Either way the run stops taking new work, waits up to `GRACE_S` for the unit writes
already submitted, prints how many units this run committed and "rerun the same command to continue",
and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM). A second signal exits at once.

Python runs signal handlers only between bytecodes of the main thread, which can sit for minutes in an
XLA compile or a device step. So the work is done by a watcher thread that `signal.set_wakeup_fd` wakes
the moment a signal arrives; the main thread only has to stop submitting writes (`submit`, `stopping`).
"""

from __future__ import annotations

import concurrent.futures
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable

GRACE_S = 10.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def handled() -> tuple:
  """Of SIGNALS, those this process acts on: all but those it was started with ignored. A shell without job
  control starts background jobs with SIGINT ignored so that the terminal's Ctrl-C does not reach them; Python
  keeps such a signal ignored, and so do jaxaug's startup handler and every run-time handler (SIGTERM, which
  schedulers send, is never ignored that way)."""
  return tuple(s for s in SIGNALS if signal.getsignal(s) is not signal.SIG_IGN)


class _Watched:
  """Signals handled by a watcher thread (`_watch`, in the subclass) that `signal.set_wakeup_fd` wakes: a byte per
  signal on the pipe, and b"\\0" when the `with` block ends."""

  _pipe = None
  _saved = None

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      return self  # signals belong to the main thread; a run started elsewhere keeps the default handling
    read, write = os.pipe()
    os.set_blocking(write, False)
    self._pipe = (read, write)
    self._saved = (signal.set_wakeup_fd(write, warn_on_full_buffer=False),
                   {s: signal.signal(s, _ignore) for s in handled()})
    threading.Thread(target=self._watch, name="jaxaug-signals", daemon=True).start()
    return self

  def __exit__(self, *exc):
    if self._pipe is None:
      return
    wakeup, handlers = self._saved
    for s, handler in handlers.items():
      signal.signal(s, handler)
    signal.set_wakeup_fd(wakeup)
    os.write(self._pipe[1], b"\0")  # tells the watcher to end; it closes the pipe

  def _watch(self):
    raise NotImplementedError

  def _next_signal(self) -> int | None:
    """Blocks until a signal arrives (its number) or the `with` block ends (None, and the pipe is closed)."""
    read, write = self._pipe
    while True:
      byte = os.read(read, 1)
      if byte in (b"", b"\0"):
        os.close(read)
        os.close(write)
        return None
      if byte[0] in SIGNALS:
        return byte[0]


class Stopper(_Watched):
  """Context manager around a run; `status()` adds e.g. '5/12 units done in all' to the final line."""

  def __init__(self, status: Callable[[], str] = lambda: "", grace_s: float = GRACE_S):
    self.status = status
    self.grace_s = grace_s
    self.stopping = False
    self._lock = threading.Lock()
    self._writes: list[concurrent.futures.Future] = []

  def submit(self, executor: concurrent.futures.Executor, fn, *args) -> concurrent.futures.Future | None:
    """executor.submit(fn, *args), tracked; None once stopping (the caller then stops, see `park`)."""
    with self._lock:
      if self.stopping:
        return None
      future = executor.submit(fn, *args)
      self._writes.append(future)
      return future

  def park(self):
    """Called by the main thread once stopping: do nothing more; the watcher ends the process."""
    while True:
      time.sleep(3600)

  def _watch(self):
    signum = self._next_signal()
    if signum is not None:
      self._stop(signum)

  def _stop(self, signum: int):
    with self._lock:
      self.stopping = True
      writes = list(self._writes)
    deadline = time.monotonic() + self.grace_s
    pending = [w for w in writes if not w.done()]
    while pending and time.monotonic() < deadline:
      again, _, _ = select.select([self._pipe[0]], [], [], 0.05)
      if again and os.read(self._pipe[0], 1)[:1] in (bytes([s]) for s in SIGNALS):
        break  # a second signal: exit now
      pending = [w for w in pending if not w.done()]
    committed = sum(1 for w in writes if w.done() and not w.cancelled() and w.exception() is None)
    try:
      status = self.status()
    except Exception:  # the line must come out whatever state the run is in
      status = ""
    name = signal.Signals(signum).name
    _stderr_for_this_thread_only()
    print(f"\njaxaug: interrupted by {name}: {committed} unit(s) committed in this run"
          f"{', ' + status if status else ''}; rerun the same command to continue", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(128 + signum)


def _ignore(signum, frame):
  """The Python-level handler: nothing; the watcher thread acts (and no KeyboardInterrupt is raised)."""


class StepStop(_Watched):
  """SIGINT and SIGTERM during a loop of steps (training): stop at the next step boundary, within a grace time.

  The first signal sets `requested`; the loop sees it after its step (`should_stop`), saves a checkpoint at the
  step it reached and calls `exit`. A loop that does not get there within `grace_s` (a long compile, a stuck
  input, a save that does not fit) is abandoned by the watcher thread: `abandon(signal name, step)` runs (it
  removes the half-written checkpoint and prints the line) and the process exits. A second signal abandons at once.
  """

  def __init__(self, grace_s: float, abandon: Callable[[str, int], None]):
    self.grace_s = grace_s
    self.abandon = abandon
    self.requested: int | None = None
    self.step = 0  # the last step the loop finished (the loop keeps it current)
    self._exiting = threading.Lock()

  def should_stop(self, step: int) -> bool:
    """Called by the loop after each step: True once a signal asked this process to stop."""
    self.step = step
    return self.requested is not None

  def exit(self, line: str) -> None:
    """The loop's own end after a signal: the line, and the status 128 + signal number."""
    with self._exiting:
      _end(line, self.requested)

  def _watch(self):
    self.requested = self._next_signal()
    if self.requested is None:
      return
    read, write = self._pipe
    deadline = time.monotonic() + self.grace_s
    while time.monotonic() < deadline:
      again, _, _ = select.select([read], [], [], 0.05)
      if again:
        byte = os.read(read, 1)
        if byte in (b"", b"\0"):  # the run ended normally after all (its last step was the one it was on)
          os.close(read)
          os.close(write)
          return
        if byte[0] in SIGNALS:
          break  # a second signal: abandon now
    if self._exiting.acquire(blocking=False):  # the loop is not already printing its own line
      try:
        _stderr_for_this_thread_only()
        self.abandon(signal.Signals(self.requested).name, self.step)
      finally:
        _end("", self.requested)


def _end(line: str, signum: int) -> None:
  if line:
    print(f"\n{line}", file=sys.stderr, flush=True)
  sys.stderr.flush()
  sys.stdout.flush()
  os._exit(128 + signum)


def _stderr_for_this_thread_only() -> None:
  """Before the watcher thread's last line: `sys.stderr` becomes its own stream to the process's stderr, and the
  old stream's descriptor goes to /dev/null, so that the main thread (a progress bar still drawing, holding the
  old stream) cannot write after that line. The process exits right after (os._exit)."""
  sys.stderr.flush()
  own = os.fdopen(os.dup(2), "w", buffering=1)
  null = os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 2)
  os.close(null)
  sys.stderr = own
