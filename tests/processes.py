"""Entry points as child processes, started as a terminal starts them."""

from __future__ import annotations

import signal
import sys

SIGNALS = ("SIGINT", "SIGTERM")


def python_m(module: str, *args: str, ignored: tuple[str, ...] = ()) -> list[str]:
  """The command for `python -m module args` with SIGINT and SIGTERM at their defaults (or ignored, those named in
  `ignored`), whatever this suite inherited: a shell without job control starts background jobs, and so perhaps
  this suite, with SIGINT ignored, which the child would inherit and jaxaug (like Python) keeps ignored.
  A `python -c` sets them and `execv`s the entry point (same pid; no preexec_fn in a threaded parent)."""
  unknown = set(ignored) - set(SIGNALS)
  if unknown:
    raise ValueError(f"not a signal this sets: {sorted(unknown)}")
  settings = "; ".join(f"signal.signal(signal.{s}, signal.{'SIG_IGN' if s in ignored else 'SIG_DFL'})"
                       for s in SIGNALS)
  start = f"import os, signal, sys; {settings}; os.execv(sys.executable, [sys.executable, '-m', *sys.argv[1:]])"
  return [sys.executable, "-c", start, module, *map(str, args)]


assert all(hasattr(signal, s) for s in SIGNALS)
