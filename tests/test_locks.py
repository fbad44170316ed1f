"""One writer per process slot: the lock, its message, its release on SIGKILL, and what a mount does to it."""

import signal
import socket
import subprocess
import sys

import pytest

from jaxaug import locks
from jaxaug.errors import UserError

HOLD = """
import sys, time
from jaxaug import locks
lock = locks.hold(sys.argv[1], int(sys.argv[2]), "test run", "--dir")
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture()
def holder(tmp_path):
  """Starts a process that holds slot N of a directory; yields start(directory, N) -> Popen."""
  procs = []

  def start(directory, index=0):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), str(index)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    procs.append(proc)
    return proc

  yield start
  for proc in procs:
    proc.kill()
    proc.wait()


def test_second_writer_of_a_slot_is_refused_naming_the_first(tmp_path, holder):
  first = holder(tmp_path)
  with pytest.raises(UserError) as err:
    locks.hold(tmp_path, 0, "generation run", "--config.output.dir")
  message = str(err.value)
  assert f"is in use by another generation run (process 0: pid {first.pid} on host {socket.gethostname()}" in message
  assert "--config.output.dir" in message and "\n" not in message
  with locks.hold(tmp_path, 1, "generation run", "--config.output.dir"):  # another process index: its own slot
    pass


def test_sigkilled_holder_leaves_no_stale_lock(tmp_path, holder):
  first = holder(tmp_path)
  first.send_signal(signal.SIGKILL)
  first.wait()
  assert (tmp_path / ".lock.p0").exists()  # the file stays; the kernel dropped the lock
  assert locks.holder(tmp_path, 0) is None
  with locks.hold(tmp_path, 0, "generation run", "--config.output.dir") as lock:
    assert locks.holder(tmp_path, 0) is not None  # probing from another descriptor sees this process's lock
  assert lock._fd is None and locks.holder(tmp_path, 0) is None


def test_process_0_refuses_while_a_bigger_run_holds_other_slots(tmp_path, holder):
  other = holder(tmp_path, 3)
  with locks.hold_run(tmp_path, 1, 2, "generation run", "--config.output.dir"):  # only process 0 checks
    pass
  with pytest.raises(UserError, match=f"process 3: pid {other.pid}"):
    locks.hold_run(tmp_path, 0, 2, "generation run", "--config.output.dir")
  assert locks.holder(tmp_path, 0) is None  # refused: its own slot was let go
  with locks.hold_run(tmp_path, 0, 4, "generation run", "--config.output.dir"):  # slot 3 is within a 4-process run
    pass


MOUNTS = """\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
40 22 0:50 / /shared rw,relatime shared:20 - nfs4 fs:/export rw,vers=4.2,local_lock=none,addr=10.0.0.1
41 22 0:51 / /scratch rw,relatime shared:21 - nfs fs:/scratch rw,vers=3,local_lock=flock,addr=10.0.0.1
42 22 0:52 / /lustre rw shared:22 - lustre 10.0.0.2@tcp:/fs rw,localflock
43 22 0:53 / /lustre2 rw shared:23 - lustre 10.0.0.2@tcp:/fs2 rw,flock
44 22 0:54 / /my\\040data rw shared:24 - nfs fs:/d rw,vers=3,nolock
"""


@pytest.mark.parametrize("path, local", [
    ("/home/me/out", None),
    ("/shared/out", None),  # NFS carries flock to the server
    ("/scratch/out", "NFS mount /scratch keeps flock on each host (local_lock=flock)"),
    ("/lustre/run/out", "Lustre mount /lustre is mounted with localflock"),
    ("/lustre2/out", None),
    ("/my data/out", "NFS mount /my data keeps flock on each host (nolock)"),
])
def test_scope_note_for_mounts_that_keep_flock_local(path, local):
  note = locks.scope_note(path, MOUNTS)
  if local is None:
    assert note is None
  else:
    assert note.startswith(local) and "this host only" in note


def test_training_workdir_is_locked(tmp_path, holder):
  from jaxaug import train
  from jaxaug.config_base import training_config

  workdir = tmp_path / "work"
  workdir.mkdir()
  first = holder(workdir)
  config = training_config()
  config.workdir, config.synthetic, config.real = str(workdir), "", "demo:2"
  with pytest.raises(UserError) as err:
    train.train_and_evaluate(config)
  assert f"is in use by another training run (process 0: pid {first.pid}" in str(err.value)
  assert "--config.workdir" in str(err.value)
  assert sorted(p.name for p in workdir.iterdir()) == [".lock.p0"]  # refused before any checkpoint or metric
