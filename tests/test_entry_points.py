"""What every `python -m jaxaug.<entry point>` shares: Ctrl-C or SIGTERM while it starts is one line."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import python_m

ENTRY_POINTS = ("jaxaug.generate", "jaxaug.train", "jaxaug.score", "jaxaug.experiment")


def _importing_numpy(pid: int) -> bool:
  """jax imports numpy first thing; jaxaug's own package (where the handler is installed) does not."""
  try:
    return "numpy" in Path(f"/proc/{pid}/maps").read_text()
  except OSError:
    return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_a_signal_during_import_is_one_line(tmp_path, module, signum):
  # `python -m module` with both signals at their defaults whatever this suite inherited: a shell without job
  # control starts background jobs with SIGINT ignored, and jaxaug (like Python) leaves an ignored signal ignored.
  proc = subprocess.Popen(python_m(module), cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 60
  while not _importing_numpy(proc.pid):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()
    time.sleep(0.005)
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signum and "Traceback" not in err, (proc.returncode, err[-3000:])
  assert err.strip().splitlines()[-1] == (f"jaxaug: interrupted by {signum.name} while starting; rerun the same "
                                          "command to continue")
  assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_signal_started_ignored_stays_ignored_in_every_run_handler():
  """A shell without job control starts background jobs with SIGINT ignored, so that the terminal's Ctrl-C does not
  reach them: the startup handler keeps that, and so must the run-time handlers of generate, train and the demo
  world's training, while SIGTERM (what schedulers send) is still theirs."""
  from jaxaug import interrupt
  from jaxaug.models import demo_world

  inherited = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  try:
    assert interrupt.handled() == (signal.SIGTERM,)
    for block in (interrupt.Stopper(), interrupt.StepStop(1.0, lambda name, step: None),
                  demo_world.stop_on_signals()):
      with block:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN, block
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN), block
      assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    signal.signal(signal.SIGINT, signal.default_int_handler)
    assert interrupt.handled() == (signal.SIGINT, signal.SIGTERM)
  finally:
    for s, handler in inherited.items():
      signal.signal(s, handler)


# --- output directories: one helper, fsutil.make_dirs, behind generate, train, score and experiment -----------


def test_a_dangling_link_is_named_with_its_target(tmp_path):
  from jaxaug import fsutil
  from jaxaug.errors import UserError

  link = tmp_path / "scratch"
  link.symlink_to(tmp_path / "unmounted" / "scratch")
  for out in (link, link / "run" / "out"):  # the link itself, or a parent of the output
    with pytest.raises(UserError, match=rf"^cannot write to output directory {out}: {link} is a symbolic link to "
                                        rf"{tmp_path / 'unmounted' / 'scratch'}, which does not exist; create the "
                                        r"link's target or choose another --config.output.dir$"):
      fsutil.make_dirs(out, "output directory", "--config.output.dir")
  (tmp_path / "unmounted" / "scratch").mkdir(parents=True)
  fsutil.make_dirs(link / "run" / "out", "output directory", "--config.output.dir")
  assert (tmp_path / "unmounted" / "scratch" / "run" / "out").is_dir()


def test_generate_into_a_dangling_link_is_one_line(tmp_path):
  link = tmp_path / "out"
  link.symlink_to(tmp_path / "gone")
  run = subprocess.run([sys.executable, "-m", "jaxaug.generate", f"--config.output.dir={link}"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
  assert run.stderr.strip().splitlines()[-1] == (
      f"jaxaug: error: cannot write to output directory {link}: {link} is a symbolic link to {tmp_path / 'gone'}, "
      "which does not exist; create the link's target or choose another --config.output.dir")


def test_train_into_a_dangling_link_is_one_line(tmp_path):
  from jaxaug import config_files, train
  from jaxaug.errors import UserError

  link = tmp_path / "run"
  link.symlink_to(tmp_path / "gone")
  config = config_files.load("train_demo")
  config.workdir, config.synthetic = str(link), ""
  with pytest.raises(UserError, match=rf"^cannot write to workdir {link}: {link} is a symbolic link to "):
    train.train_and_evaluate(config)
