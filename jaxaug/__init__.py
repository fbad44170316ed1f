"""jaxaug: augmentation-conditioned Stable Diffusion data generation and classifier training in JAX."""

__version__ = "0.1.0"

import logging as _logging
import os as _os
import signal as _signal
import sys as _sys

# jax logs at INFO that it found no TPU on every CPU/GPU start; users need not see it.
_logging.getLogger("jax._src.xla_bridge").setLevel(_logging.WARNING)


def _interrupted_while_starting(signum, frame):
  """Ctrl-C or SIGTERM before a run's own handling starts (during `import jax`, a model load, a compile): one
  line, 130 / 143. Every write jaxaug makes is atomic or resumable, so the same command simply starts again."""
  print(f"\njaxaug: interrupted by {_signal.Signals(signum).name} while starting; rerun the same command to "
        "continue", file=_sys.stderr, flush=True)
  _os._exit(128 + signum)


# Only for `python -m jaxaug.<entry point>` (sys.argv[0] is "-m" while runpy imports the package): a notebook or
# library that imports jaxaug keeps its own signal handling and malloc. A signal the process was started with
# ignored stays ignored (as Python does), here and in the runs' own handlers (interrupt.handled), which replace
# this one while they run and put it back after. glibc's malloc then keeps freed memory (why:
# xla_options.keep_host_memory).
if _sys.argv[:1] == ["-m"]:
  for _s in (_signal.SIGINT, _signal.SIGTERM):
    if _signal.getsignal(_s) in (_signal.default_int_handler, _signal.SIG_DFL):
      _signal.signal(_s, _interrupted_while_starting)
  from jaxaug import errors as _errors, xla_options as _xla_options

  try:
    _xla_options.keep_host_memory()
  except _errors.UserError as _e:
    print(f"jaxaug: error: {_e}", file=_sys.stderr, flush=True)
    raise SystemExit(2) from None
