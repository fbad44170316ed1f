"""User errors: one clear line, exit status 2, no traceback (design.md contract 5)."""

from __future__ import annotations

import functools
import sys


class UserError(Exception):
  """Something the user can fix: a missing file, a bad name, a wrong shape.

  The message is one line that names the thing and says how to fix it.
  """


def exit_on_user_error(main):
  """Wraps an entry point so a UserError prints one line and exits with status 2."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except UserError as e:
      print(f"jaxaug: error: {e}", file=sys.stderr, flush=True)
      raise SystemExit(2) from None

  return wrapped
