"""Entry points and launchers as child processes, started as a terminal starts them."""

from __future__ import annotations

import sys

SIGNALS = ("SIGINT", "SIGTERM")


def as_from_a_terminal(argv: list[str], ignored: tuple[str, ...] = ()) -> list[str]:
  """The command that runs `argv` with SIGINT and SIGTERM at their defaults (or ignored: those named in `ignored`),
  whatever this suite inherited: a shell without job control starts background jobs, and so perhaps this suite,
  with SIGINT ignored, which a child would inherit and jaxaug (like Python and bash) keeps ignored.
  A `python -c` sets them and `execvp`s argv (same pid; no preexec_fn in a threaded parent)."""
  unknown = set(ignored) - set(SIGNALS)
  if unknown:
    raise ValueError(f"not a signal this sets: {sorted(unknown)}")
  settings = "; ".join(f"signal.signal(signal.{s}, signal.{'SIG_IGN' if s in ignored else 'SIG_DFL'})"
                       for s in SIGNALS)
  start = f"import os, signal, sys; {settings}; os.execvp(sys.argv[1], sys.argv[1:])"
  return [sys.executable, "-c", start, *map(str, argv)]


def python_m(module: str, *args, ignored: tuple[str, ...] = ()) -> list[str]:
  """`python -m module args`, started as `as_from_a_terminal` says."""
  return as_from_a_terminal([sys.executable, "-m", module, *args], ignored)
