"""User errors: one clear line, exit status 2, no traceback (design.md contract 5)."""

from __future__ import annotations

import functools
import sys

from jaxaug import config_files


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



def run_with_config(main, default_config: str, help_text: str):
  """absl's app.run with an ml_collections `--config` flag; `main(config)` runs inside exit_on_user_error.

  `--config` takes a shipped config's name (`default_config` is one), `NAME:ARG`, or a path (config_files).

  Everything that can go wrong with the flags (a missing config file, a bad config argument such as
  `configs/fewshot.py:mnist,1`, an override of a field that does not exist) ends in one line, exit 2.
  The flag is defined here, not on import, so modules that import each other keep their own --config.
  """
  from absl import app, flags
  from ml_collections import config_flags

  def parse(argv):
    argv = _resolve_config_args(argv)
    try:
      config_flag = config_flags.DEFINE_config_file("config", config_files.resolve(default_config), help_text,
                                                    lock_config=True)
      rest = flags.FLAGS(argv)
      config = config_flag.value
      config.to_dict()  # a config file that failed to load raises only when first used
    except Exception as e:  # absl and ml_collections raise many types here; all are bad flags
      cause = _last_line(e)
      if isinstance(e, (KeyError, AttributeError)):
        cause = f"the config has no field {cause.strip(chr(34))} (its fields are in the config file)"
      print(f"jaxaug: error: bad --config: {cause}", file=sys.stderr, flush=True)
      raise SystemExit(2) from None
    if len(rest) > 1:
      print(f"jaxaug: error: unexpected arguments {rest[1:]}; configure with --config=... and --config.field=value",
            file=sys.stderr, flush=True)
      raise SystemExit(2)
    return config

  @exit_on_user_error
  def entry(config):
    main(config)  # app.run exits with main's return value: the run's summary is not an exit status

  app.run(entry, flags_parser=parse)


def _resolve_config_args(argv: list[str]) -> list[str]:
  """`--config=NAME[:ARG]` (or `--config NAME`) -> the shipped file's path; a value naming nothing is one line."""
  argv = list(argv)
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      value, prefix = arg[len("--config="):], "--config="
    elif arg == "--config" and i + 1 < len(argv):
      value, prefix = argv[i + 1], None
    else:
      continue
    resolved = config_files.resolve(value)
    problem = config_files.unknown_message(resolved)
    if problem:
      print(f"jaxaug: error: bad --config: {problem}", file=sys.stderr, flush=True)
      raise SystemExit(2)
    if prefix:
      argv[i] = prefix + resolved
    else:
      argv[i + 1] = resolved
  return argv


def _last_line(e: Exception) -> str:
  """The cause in a flag error: its last line, without a leading 'SomeError: '."""
  lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
  cause = lines[-1] if lines else type(e).__name__
  return cause.split(": ", 1)[-1] if cause.split(":", 1)[0].endswith(("Error", "Exception")) else cause


def parse_flags(argv):
  """absl flag parsing for `app.run(main, flags_parser=parse_flags)`: a bad flag is one line, exit 2."""
  from absl import flags

  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"jaxaug: error: {_last_line(e)}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None
