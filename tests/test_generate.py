"""python -m jaxaug.generate: the demo, reproducibility across devices and processes, kill-and-resume, bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from processes import python_m

from jaxaug import generate, xla_options
from jaxaug.data import synthetic

ROOT = Path(__file__).resolve().parent.parent
# A small run: 4 classes x 3 methods, 2 units of 4 plus... per_device 2 so batches cross unit borders.
SMALL = ["--config.methods=cutmix,embed_mixup_dropout,rand_img_cond", "--config.plan.amount=1",
         "--config.plan.unit_size=5", "--config.sampler.steps=2", "--config.resolution=32",
         "--config.batch.per_device=2", "--config.data.source=demo:3", "--config.output.image_files=false",
         "--config.data.source_size=48", "--config.model=tiny"]


def _env(devices=1):
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "PYTHONUNBUFFERED": "1",
         "JAX_COMPILATION_CACHE_DIR": os.path.expanduser("~/.cache/jaxaug-tests/jax"),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
  env.setdefault("JAXAUG_CACHE_DIR", str(Path.home() / ".cache" / "jaxaug"))
  return env


def _generate(out, *flags, devices=1, wait=True, cwd=None, env=None, ignored=()):
  cmd = python_m("jaxaug.generate", f"--config.output.dir={out}", *flags, ignored=ignored)
  env = {**_env(devices), **(env or {})}
  if not wait:
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def _records(out) -> dict:
  """{unit: [record bytes]} of a finished run."""
  shards = Path(out) / synthetic.SHARDS
  return {p.name: synthetic.read_shard(p) for p in sorted(shards.glob("unit-*.array_record"))}


def _uninterrupted(tmp_path_factory, flags):
  out = tmp_path_factory.mktemp("ref") / "out"
  run = _generate(out, *flags)
  assert run.returncode == 0, run.stderr[-3000:]
  return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  return _uninterrupted(tmp_path_factory, SMALL)


def test_reference_run_output(reference):
  recs = _records(reference)
  assert len(recs) == 3  # 12 items in units of 5
  src = synthetic.SyntheticSource(reference)
  assert len(src) == 12 and src.counts().tolist() == [3, 3, 3, 3]
  assert sorted(src.item_ids.tolist()) == list(range(12))
  prov = src.provenance(0)
  assert prov["method"] in ("cutmix", "embed_mixup_dropout", "rand_img_cond")
  assert {"source_ids", "lam", "seed", "model", "prompt"} <= set(prov)
  lams = [src.provenance(i)["lam"] for i in range(len(src))]
  methods = [src.provenance(i)["method"] for i in range(len(src))]
  assert all(l == 1.0 for l, m in zip(lams, methods) if m == "rand_img_cond")
  assert any(0 < l < 1 for l, m in zip(lams, methods) if m != "rand_img_cond")
  assert src[0].image.shape == (32, 32, 3)
  info = json.loads((reference / "dataset_info.json").read_text())
  assert info["synthetic_counts"] == [3, 3, 3, 3] and info["units_done"] == 3
  config = json.loads((reference / "config.json").read_text())
  assert config["config"]["sampler"]["steps"] == 2
  sheet = Image.open(reference / "contact_sheet.png")
  assert sheet.size[0] > 3 * 96 * 3 and sheet.size[1] > 4 * 96


def test_rerun_finds_everything_done(reference, tmp_path):
  before = _records(reference)
  sheet = reference / "contact_sheet.png"
  drawn = sheet.stat().st_mtime_ns
  again = _generate(reference, *SMALL)
  assert again.returncode == 0, again.stderr[-2000:]
  assert "wrote 0 image(s)" in again.stdout
  assert _records(reference) == before
  assert f"contact sheet: {sheet}" in again.stdout and sheet.stat().st_mtime_ns == drawn  # the same images' sheet


def test_four_devices_give_identical_records(reference, tmp_path):
  run = _generate(tmp_path / "out", *SMALL, devices=4)
  assert run.returncode == 0, run.stderr[-3000:]
  assert _records(tmp_path / "out") == _records(reference)


def test_two_processes_give_identical_records(reference, tmp_path):
  # launch/local.sh: two processes joined by jax.distributed over localhost, each writing its own units.
  out = tmp_path / "out"
  run = subprocess.run(["bash", str(ROOT / "launch" / "local.sh"), "2", "jaxaug.generate", f"--config.output.dir={out}",
                        *SMALL], env=_env(), capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert (out / "done_units.p1.jsonl").is_file()  # process 1 wrote its own units
  assert _records(out) == _records(reference)


def _free_slurm_job_id() -> int:
  """A job id whose derived coordinator port (jax: id % 4096 + 61440) is free here."""
  import socket

  for job_id in range(1000, 1000 + 4096):
    with socket.socket() as probe:
      try:
        probe.bind(("localhost", job_id % 4096 + 61440))
        return job_id
      except OSError:
        continue
  raise RuntimeError("no free port in jax's SLURM port range")


def _stand_in(bin_dir, name, script):
  bin_dir.mkdir(exist_ok=True)
  (bin_dir / name).write_text("#!/usr/bin/env bash\n" + script)
  (bin_dir / name).chmod(0o755)


def test_slurm_launcher_under_a_stand_in_srun(tmp_path):
  """launch/slurm_gpu.sbatch as sbatch runs it, with an `srun` that starts its two tasks on this machine
  and the SLURM variables a real step sets: jax.distributed takes coordinator and ranks from them. The probe
  stands in for the entry point (generation across two processes: test_two_processes_give_identical_records)."""
  _stand_in(tmp_path / "bin", "srun", """shift  # --kill-on-bad-exit=1
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_STEP_ID=0 "$@" & pids+=($!); done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit "$status"
""")
  env = {**_env(), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SLURM_JOB_ID": str(_free_slurm_job_id()),
         "SLURM_NTASKS": "2", "SLURM_STEP_NODELIST": "localhost", "SLURM_STEP_NUM_NODES": "1"}
  out = tmp_path / "out"
  flags = [*SMALL, "--config.prompt=a photo of a {}, 'at dusk'"]
  run = subprocess.run(["bash", str(ROOT / "launch" / "slurm_gpu.sbatch"), "tests.launch_probe", str(out), *flags],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  found = [json.loads((out / f"rank-{i}.json").read_text()) for i in (0, 1)]
  assert [(f["process"], f["processes"]) for f in found] == [(0, 2), (1, 2)]  # both tasks joined one job
  assert all(f["argv"] == flags for f in found)


def test_slurm_launcher_keeps_compiled_programs_across_requeues(tmp_path):
  """A requeued job would compile every program again: the sbatch script points JAX's persistent compilation
  cache at $HOME unless the user chose a directory (the stand-in srun only reports what it was given)."""
  _stand_in(tmp_path / "bin", "srun", 'echo "cache=$JAX_COMPILATION_CACHE_DIR args=$*"\n')
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env.update(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", HOME=str(tmp_path / "home"))
  script = str(ROOT / "launch" / "slurm_gpu.sbatch")
  run = subprocess.run(["bash", script, "jaxaug.generate", "--x=1"], env=env, capture_output=True, text=True)
  assert run.returncode == 0, run.stderr
  assert run.stdout.strip() == (f"cache={tmp_path}/home/.cache/jaxaug/jax-compilation "
                                "args=--kill-on-bad-exit=1 python -m jaxaug.generate --x=1")
  run = subprocess.run(["bash", script, "jaxaug.train"], env={**env, "JAX_COMPILATION_CACHE_DIR": "/shared/xla"},
                       capture_output=True, text=True)
  assert run.stdout.startswith("cache=/shared/xla args="), run.stdout


def test_tpu_pod_launcher_under_a_stand_in_gcloud(tmp_path):
  """launch/tpu_pod.sh with a `gcloud` that runs --command on two local "workers" (HOME/jaxaug is this
  checkout). TPU metadata cannot be emulated, so the stand-in hands the workers ranks the SLURM way;
  what is tested is the launcher's own part: every worker, and flags with spaces and quotes intact."""
  home = tmp_path / "home"
  home.mkdir()
  (home / "jaxaug").symlink_to(ROOT)
  _stand_in(tmp_path / "bin", "gcloud", """
command=$(printf '%s\\n' "$@" | sed -n 's/^--command=//p')
[[ " $* " == *" compute tpus tpu-vm ssh my-tpu --zone=us-central2-b --worker=all "* ]] || { echo "bad: $*" >&2; exit 9; }
pids=()
for i in 0 1; do SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NTASKS=2 bash -c "$command" & pids+=($!); done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit "$status"
""")
  prompt = "a photo of a {}, 'outdoors' & \"wide\""
  env = {**_env(), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "HOME": str(home),
         "SLURM_JOB_ID": str(_free_slurm_job_id()), "SLURM_STEP_NODELIST": "localhost"}
  out = tmp_path / "out"
  # tests/launch_probe.py stands in for the entry point (the local launcher test runs generation itself)
  flags = [*SMALL, f"--config.prompt={prompt}", "--config.plan.amount=a b"]
  run = subprocess.run(["bash", str(ROOT / "launch" / "tpu_pod.sh"), "my-tpu", "us-central2-b", "tests.launch_probe",
                        str(out), *flags], env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  found = [json.loads((out / f"rank-{i}.json").read_text()) for i in (0, 1)]
  assert [(f["process"], f["processes"]) for f in found] == [(0, 2), (1, 2)]  # both workers joined one job
  assert all(f["argv"] == flags for f in found)  # every flag intact, quotes and spaces included


def test_local_launcher_stops_on_the_first_failure(tmp_path):
  run = subprocess.run(["bash", str(ROOT / "launch" / "local.sh"), "2", "jaxaug.generate", *SMALL,
                        "--config.methods=nonsense", f"--config.output.dir={tmp_path / 'out'}"], env=_env(),
                       capture_output=True, text=True, timeout=600)
  assert run.returncode == 2 and "unknown augmentation method 'nonsense'" in run.stderr


def test_sigkill_and_rerun_is_identical(longer_reference, tmp_path):
  out = tmp_path / "out"
  proc = _generate(out, *LONGER, wait=False)  # 8 units: the kill lands while units remain
  deadline = time.time() + 300
  while time.time() < deadline and not list((out / synthetic.SHARDS).glob("unit-*.array_record")):
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert 1 <= len(list((out / synthetic.SHARDS).glob("unit-*"))) < 8, "not killed mid-run; make the run longer"
  rerun = _generate(out, *LONGER)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert _records(out) == _records(longer_reference)
  assert not list((out / synthetic.SHARDS).glob(".*"))  # no temporary shard left


# ---------------------------------------------------------------------------
# SIGINT and SIGTERM (issue 15): a longer run, so the signal lands while units remain

LONGER = [*SMALL, "--config.plan.amount=3"]  # 36 items in 8 units


@pytest.fixture(scope="module")
def longer_reference(tmp_path_factory):
  return _uninterrupted(tmp_path_factory, LONGER)


def _interrupt(out, signum, ignored=(), first=None) -> tuple[int, str]:
  """Runs LONGER into `out` (started with the signals in `ignored` ignored), sends `signum` right after this run
  commits its first unit; (exit status, stderr). With `first`, that signal goes first, and `signum` after the
  next unit commits.

  (Not a fixed unit number: units that were in flight when an earlier run was stopped finish in that run's grace.)
  """
  proc = _generate(out, *LONGER, wait=False, ignored=ignored)
  err = []

  def next_commit():
    for line in proc.stderr:
      err.append(line)
      if re.search(r"unit \d+: 5 images committed", line):
        return

  next_commit()
  if first is not None:
    proc.send_signal(first)
    next_commit()
  sent = time.time()
  proc.send_signal(signum)
  _, rest = proc.communicate(timeout=60)
  assert time.time() - sent < 15
  return proc.returncode, "".join(err) + rest


def test_sigint_then_sigterm_stop_cleanly_and_rerun_is_identical(longer_reference, tmp_path):
  """Ctrl-C, then SLURM's pre-emption SIGTERM in the resumed run, then a rerun: as if never interrupted."""
  out = tmp_path / "out"
  for signum, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
    before = len(synthetic.read_done(out)) if out.exists() else 0
    code, err = _interrupt(out, signum)
    assert code == status and "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    match = re.fullmatch(rf"jaxaug: interrupted by {signum.name}: (\d+) unit\(s\) committed in this run, (\d+)/8 "
                         r"units done in all; rerun the same command to continue", line)
    assert match, line
    shards = sorted(p.name for p in (out / synthetic.SHARDS).iterdir())
    assert not [s for s in shards if s.startswith(".")]  # the writes in flight finished
    assert int(match[2]) == before + int(match[1]) == len(shards) == len(synthetic.read_done(out))
    assert int(match[1]) >= 1 and len(shards) < 8  # it stopped dispatching
  rerun = _generate(out, *LONGER)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert _records(out) == _records(longer_reference)


def test_a_run_started_with_sigint_ignored_goes_on_through_it_and_stops_on_sigterm(tmp_path):
  """A background job of a shell without job control (SIGINT ignored): Ctrl-C does not stop it, SIGTERM does."""
  code, err = _interrupt(tmp_path / "out", signal.SIGTERM, ignored=("SIGINT",), first=signal.SIGINT)
  assert code == 143 and "Traceback" not in err, err[-3000:]
  match = re.fullmatch(r"jaxaug: interrupted by SIGTERM: (\d+) unit\(s\) committed in this run, \1/8 units done "
                       r"in all; rerun the same command to continue", err.strip().splitlines()[-1])
  assert match and int(match[1]) >= 2, err[-3000:]  # the unit before SIGINT, and at least one after it


# ---------------------------------------------------------------------------
# Faults at start: config.json (issue 15)

def _partial_copy(reference, out, units: int):
  """`reference` as a run killed after its first `units` units: their shards and done lines only."""
  import shutil

  shutil.copytree(reference, out)
  for shard in (out / synthetic.SHARDS).iterdir():
    if int(shard.name[5:13]) >= units:
      shard.unlink()
  done = out / synthetic.DONE
  done.write_text("".join(l for l in done.read_text().splitlines(True) if json.loads(l)["unit"] < units))


def test_kill_inside_config_json_write_then_rerun_finishes(reference, tmp_path):
  """A resume that writes config.json (its numerics changed) killed inside that write keeps the old one whole."""
  out = tmp_path / "out"
  _partial_copy(reference, out, 1)
  before = (out / "config.json").read_bytes()
  killed = subprocess.run([sys.executable, str(ROOT / "tests" / "write_faults.py"), "kill", "config",
                           f"--config.output.dir={out}", *SMALL, "--config.batch.per_device=3"], env=_env(),
                          capture_output=True, text=True, timeout=600)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert (out / "config.json").read_bytes() == before
  rerun = _generate(out, *SMALL)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert _records(out) == _records(reference)


def test_deleted_shard_and_torn_dataset_info_are_made_again(reference, tmp_path):
  """What `python -m jaxaug.train` asks for when a shard or dataset_info.json is damaged: rerun generation."""
  import shutil

  out = tmp_path / "out"
  shutil.copytree(reference, out)
  (out / synthetic.SHARDS / synthetic.shard_name(1)).unlink()  # its done line stays
  (out / "dataset_info.json").write_text('{"class_na')
  rerun = _generate(out, *SMALL)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "wrote 5 image(s)" in rerun.stdout
  assert _records(out) == _records(reference)
  assert json.loads((out / "dataset_info.json").read_text())["units_done"] == 3


@pytest.fixture
def small_disk(tmp_path):
  """A 4 MB tmpfs (mounting needs root)."""
  disk = tmp_path / "disk"
  disk.mkdir()
  mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, text=True)
  if mount.returncode:
    pytest.skip(f"cannot mount a tmpfs here (needs root): {mount.stderr.strip()}")
  yield disk
  subprocess.run(["umount", "-l", str(disk)], check=True)


def _fill(disk):
  fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
  try:
    while True:
      os.write(fd, bytes(65536))
  except OSError:
    pass
  finally:
    os.close(fd)


def test_full_disk_at_start_then_rerun_finishes(reference, small_disk):
  out = small_disk / "out"
  _fill(small_disk)
  run = _generate(out, *SMALL)
  assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
  # The first file written (the output lock's holder line, or config.json) names the full disk.
  last = run.stderr.strip().splitlines()[-1]
  assert last.startswith(f"jaxaug: error: cannot write {out}/") and last.endswith(
      " (No space left on device): free space or fix permissions there, then rerun the same command to continue")
  assert [p.name for p in out.iterdir() if not p.name.startswith(".lock.")] == []  # no torn config.json, no temporary
  (small_disk / "filler").unlink()
  rerun = _generate(out, *SMALL)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert _records(out) == _records(reference)


def test_unreadable_config_json(reference, tmp_path):
  from jaxaug import generate
  from jaxaug.errors import UserError

  # No finished unit: nothing to protect, so it is written again.
  fresh = tmp_path / "fresh"
  fresh.mkdir()
  (fresh / "config.json").write_text("")
  run = _generate(fresh, *SMALL, "--config.methods=rand_img_cond")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "config.json is unreadable (JSONDecodeError" in run.stderr and "writing it again" in run.stderr
  assert json.loads((fresh / "config.json").read_text())["config"]["methods"] == "rand_img_cond"

  # Finished units: refused in one line that says what to do; doing it resumes after a check.
  out = tmp_path / "out"
  _partial_copy(reference, out, 2)
  (out / "config.json").write_text('{"config": {"mod')
  with pytest.raises(UserError) as refused:
    generate.prepare(_config(out, *SMALL))
  assert str(refused.value).startswith(f"{out / 'config.json'} is unreadable (JSONDecodeError: ")
  assert (f"holds 2 finished unit(s): if this command made them, move it aside (mv {out / 'config.json'} "
          f"{out / 'config.json.bad'}) and rerun") in str(refused.value)
  os.rename(out / "config.json", out / "config.json.bad")
  with pytest.raises(UserError, match=r"holds finished units made with another config \(guidance differ\)"):
    generate.prepare(_config(out, *SMALL, "--config.sampler.guidance=5"))
  assert not (out / "config.json").exists()
  rerun = _generate(out, *SMALL)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "had no config.json; a finished unit matches this config" in rerun.stderr
  assert _records(out) == _records(reference)
  stored, made = (json.loads((d / "config.json").read_text()) for d in (out, reference))
  assert (stored["fingerprint"], stored["numerics"]) == (made["fingerprint"], made["numerics"])


def test_batch_size_and_attention_change_images_only_by_rounding(reference, tmp_path):
  """Another per-device batch or attention kernel computes the same function; XLA may round differently.

  (Device and host counts at the same per-device batch give identical bytes: the tests above.)
  """
  import io

  run = _generate(tmp_path / "out", *SMALL, "--config.batch.per_device=3", "--config.attention=einsum")
  assert run.returncode == 0, run.stderr[-3000:]
  a, b = _records(reference), _records(tmp_path / "out")
  assert a.keys() == b.keys()
  for unit in a:
    for ra, rb in zip(a[unit], b[unit], strict=True):
      da, db = synthetic.decode_record(ra), synthetic.decode_record(rb)
      assert (da["item_id"], da["label"], da["provenance"]["source_ids"]) == (
          db["item_id"], db["label"], db["provenance"]["source_ids"])
      assert abs(da["provenance"]["lam"] - db["provenance"]["lam"]) < 1e-6
      ia = np.asarray(Image.open(io.BytesIO(da["image"])), np.int16)
      ib = np.asarray(Image.open(io.BytesIO(db["image"])), np.int16)
      assert np.abs(ia - ib).max() <= 2 and (ia != ib).mean() < 0.01


def _bad(tmp_path, *flags):
  out = tmp_path / "bad"
  run = _generate(out, *SMALL, *flags)
  lines = [l for l in run.stderr.splitlines() if l.strip() and not l.startswith(("I1", "W1", "I0", "W0"))]
  return run, lines, out


@pytest.mark.parametrize("flag, expect", [
    ("--config.methods=cutmix,sharpen", "unknown augmentation method 'sharpen'"),
    ("--config.sampler.scheduler=euler", "unknown scheduler 'euler'"),
    ("--config.model=/no/such/checkpoint", "checkpoint '/no/such/checkpoint' not found"),
    ("--config.data.source=folder:/no/such/images", "/no/such/images"),
    ("--config.resolution=30", "resolution 30 must be a multiple of 4"),
    ("--config.data.source_size=-5", "--config.data.source_size=-5 is out of range"),  # were tracebacks
    ("--config.prompt=a photo of {", "is not a prompt template"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, flag, expect):
  run, lines, out = _bad(tmp_path, flag)
  assert run.returncode == 2, run.stderr[-2000:]
  assert "Traceback" not in run.stderr
  assert len(lines) == 1 and expect in lines[0], lines
  assert not out.exists()


@pytest.mark.parametrize("args, expect", [
    (["--config=configs/fewshot.py:mnist,1"], "fewshot.py takes DATASET,SHOTS"),
    (["--config.nonexistent=3"], "the config has no field 'nonexistent'"),
    (["--config=configs/nothere.py"], "no config file or shipped config named 'configs/nothere.py'"),
    (["stray"], "unexpected arguments ['stray']"),
])
def test_bad_flags_are_one_line(args, expect):
  run = subprocess.run([sys.executable, "-m", "jaxaug.generate", *args], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=300)
  assert run.returncode == 2 and "Traceback" not in run.stderr
  lines = [l for l in run.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and expect in lines[0], lines


def test_unwritable_output_directory(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  run = _generate(blocker / "out", *SMALL)
  assert run.returncode == 2 and "cannot write to output directory" in run.stderr
  assert "Traceback" not in run.stderr


def test_changed_config_into_same_directory_is_refused(reference):
  run = _generate(reference, *SMALL, "--config.sampler.guidance=5")
  assert run.returncode == 2 and "different config (sampler changed)" in run.stderr


def _demo_folder(root, per_class=2):
  """demo:N as an image folder (real files that a test can damage)."""
  from jaxaug.data.demo import DemoSource

  demo = DemoSource("train", per_class)
  for i in range(len(demo)):
    folder = root / demo.class_names[demo.labels[i]].replace(" ", "_")
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(demo.read(i)).save(folder / f"{i}.png")
  return root


def test_corrupt_source_image_is_skipped_and_counted(tmp_path):
  root = _demo_folder(tmp_path / "images")
  first = sorted((root / "blue_stripes").iterdir())[0]
  first.write_bytes(b"\x89PNG broken")
  out = tmp_path / "out"
  run = _generate(out, *SMALL, f"--config.data.source=folder:{root}", "--config.methods=rand_img_cond",
                  "--config.plan.amount=2")
  assert run.returncode == 0, run.stderr[-3000:]
  src = synthetic.SyntheticSource(out)
  skipped = 8 - len(src)
  assert skipped >= 1 and f"skipped sources: {skipped}" in run.stdout
  assert all(p["source_ids"][0].endswith(first.name) is False for p in map(src.provenance, range(len(src))))


def _config(out, *flags):
  """The config `python -m jaxaug.generate` builds from these flags, for a run inside the test process."""
  from jaxaug import generate

  config = generate.get_demo_config()
  for flag in flags:
    key, value = flag.removeprefix("--config.").split("=", 1)
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value.lower() == "true" if isinstance(node[leaf], bool) else type(node[leaf])(value)
  config.output.dir = str(out)
  return config


def test_contact_sheet_marks_an_unreadable_source_and_keeps_the_rest(tmp_path, caplog):
  from jaxaug import generate
  from jaxaug.contact_sheet import MARK_GREY, TILE, LABEL_W, HEAD_H, pick_items, write_contact_sheet

  root = _demo_folder(tmp_path / "images")
  config = _config(tmp_path / "out", *SMALL, f"--config.data.source=folder:{root}",
                   "--config.methods=rand_img_cond,cutmix")
  generate.run(config)
  job = generate.prepare(config)
  source = synthetic.SyntheticSource(job.out)
  chosen = pick_items(source, job.plan.methods, 16)
  items = {cell: int(source.item_ids[pos]) for cell, pos in chosen.items()}
  broken = int(job.plan.source[items[(1, 1)], 1])  # the second source of class 1's cutmix cell
  (root / job.source.id(broken)).write_bytes(b"\x89PNG damaged")

  caplog.set_level("WARNING")
  path = write_contact_sheet(job)
  assert path == job.out / "contact_sheet.png"
  sheet = np.asarray(Image.open(path).convert("RGB"))
  classes = sorted({c for c, _ in chosen})
  marked, want = [], []
  for (label, m), item in items.items():
    first, second = job.plan.source[item]
    unreadable = [first == broken, first == broken or (job.methods[m].pairs and second == broken), False]
    for t, bad in enumerate(unreadable):
      y, x = HEAD_H + classes.index(label) * TILE, LABEL_W + m * (3 * TILE + 8) + t * TILE
      tile = sheet[y:y + TILE, x:x + TILE]
      marked.append(bool(np.mean(np.all(tile == MARK_GREY, axis=-1)) > 0.5))
      want.append(bool(bad))
  assert marked == want and sum(want) >= 1  # the cutmix condition at least; every other tile drawn
  warning = next(r.getMessage() for r in caplog.records if "contact sheet" in r.getMessage())
  assert f"{sum(want)} tile(s) marked unreadable" in warning
  assert f"{job.source.class_names[1]}/cutmix condition" in warning


def test_class_with_one_real_image_in_a_pair_method_warns_once_or_is_refused(tmp_path, caplog):
  from jaxaug import generate
  from jaxaug.errors import UserError

  root = _demo_folder(tmp_path / "images")
  for name in ("green_checker", "red_circle"):
    sorted((root / name).iterdir())[0].unlink()  # one real image left in these two classes
  flags = (*SMALL, f"--config.data.source=folder:{root}")
  caplog.set_level("WARNING")
  generate.prepare(_config(tmp_path / "out", *flags))
  warnings = [r.getMessage() for r in caplog.records if "single real image" in r.getMessage()]
  assert warnings == ["2 class(es) have a single real image, so cutmix, embed_mixup_dropout mix it with itself there: "
                      "'green_checker', 'red_circle' (set --config.refuse_self_pairs=True to refuse such a run)"]
  with pytest.raises(UserError, match=r"2 class\(es\) have a single real image, .*; add real images to them, drop "
                                      r"those methods, or set --config.refuse_self_pairs=False to generate anyway"):
    generate.prepare(_config(tmp_path / "out", *flags, "--config.refuse_self_pairs=true"))
  caplog.clear()
  generate.prepare(_config(tmp_path / "out", *flags, "--config.methods=rand_img_cond,dropout"))  # no pairs: quiet
  assert not [r for r in caplog.records if "single real image" in r.getMessage()]


@pytest.mark.parametrize("name, arg", [("demo", None), ("imagenet_lt", None), ("fewshot", "coco,8"),
                                       ("fewshot", "pascal,1,sdedit"), ("fewshot", "flowers102,16,txt2img")])
def test_configs_have_every_field(name, arg):
  import importlib.util

  from jaxaug import generate
  from jaxaug.config_base import generation_config

  spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  base = generation_config()
  assert set(generate.fingerprint(config)) == set(generate.fingerprint(base))
  assert sorted(config.to_dict()) == sorted(base.to_dict())
  if name == "imagenet_lt":
    assert (config.plan.policy, config.plan.amount, config.sampler.steps, config.sampler.guidance, config.prompt,
            config.methods, config.resolution) == ("fill_to", 1280, 30, 2.0, "{}", "embed_cutmix_dropout", 768)
  if arg == "pascal,1,sdedit":
    assert config.sampler.mode == "img2img" and config.sampler.strength == 0.5 and config.sampler.guidance == 7.5


def test_resume_with_other_numerics_warns(reference, tmp_path):
  import shutil

  out = tmp_path / "out"
  shutil.copytree(reference, out)
  # and with XLA's own CPU convolutions (xla_options), which round differently from YNNPACK's
  run = _generate(out, *SMALL, "--config.batch.per_device=3", "--config.attention=einsum", "--config.dots=native",
                  env={"XLA_FLAGS": f"--xla_force_host_platform_device_count=1 {xla_options.FASTER_CONVOLUTIONS}"})
  assert run.returncode == 0, run.stderr[-3000:]
  warning = next(line for line in run.stderr.splitlines() if "resuming with" in line)
  assert "batch.per_device=3 (was 2)" in warning and "attention=einsum (was xla)" in warning
  assert "dots=native (was fp32_results)" in warning  # fp32_results: auto on a CPU
  assert "cpu_convolutions=xla (was default)" in warning
  assert _records(out) == _records(reference)  # a finished run stays as it was


def test_resume_of_a_run_from_older_model_code_warns(reference, tmp_path):
  """A run recorded before NUMERICS_REVISION existed (revision 1) rounds differently from today's code: its
  resume says so; one recorded now does not."""
  import shutil

  out = tmp_path / "out"
  shutil.copytree(reference, out)
  stored = json.loads((out / "config.json").read_text())
  assert stored["numerics"]["numerics_revision"] == generate.NUMERICS_REVISION
  run = _generate(out, *SMALL)
  assert run.returncode == 0 and "resuming with" not in run.stderr, run.stderr[-3000:]
  del stored["numerics"]["numerics_revision"]
  (out / "config.json").write_text(json.dumps(stored, indent=2))
  run = _generate(out, *SMALL)
  assert run.returncode == 0, run.stderr[-3000:]
  warning = next(line for line in run.stderr.splitlines() if "resuming with" in line)
  assert f"numerics_revision={generate.NUMERICS_REVISION} (was 1)" in warning
  assert _records(out) == _records(reference)


def test_bad_attention_is_one_line(tmp_path):
  run = _generate(tmp_path / "out", *SMALL, "--config.attention=cudnn")  # CPU: no cuDNN here
  assert run.returncode == 2 and "Traceback" not in run.stderr
  assert "attention=cudnn needs an NVIDIA GPU" in run.stderr.strip().splitlines()[-1]
  assert not (tmp_path / "out").exists()


def test_second_run_on_the_same_directory_stops_at_once(reference, tmp_path):
  """A double submit: the second run ends in one line naming the first, while the first is caught inside its
  first shard write; the first then finishes as if alone."""
  import socket

  out, go = tmp_path / "out", tmp_path / "go"
  first = subprocess.Popen([sys.executable, str(ROOT / "tests" / "write_faults.py"), f"pause={go}", "shard",
                            f"--config.output.dir={out}", *SMALL], env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while time.time() < deadline and first.poll() is None and not list((out / synthetic.SHARDS).glob(".unit-*")):
    time.sleep(0.05)
  second = _generate(out, *SMALL)
  go.touch()
  stdout, stderr = first.communicate(timeout=600)
  assert first.returncode == 0, stderr[-3000:]
  assert second.returncode == 2 and "Traceback" not in second.stderr
  lines = [l for l in second.stderr.splitlines() if l.strip() and not l.startswith(("I1", "W1", "I0", "W0"))]
  assert len(lines) == 1, lines
  assert f"is in use by another generation run (process 0: pid {first.pid} on host {socket.gethostname()}" in lines[0]
  assert _records(out) == _records(reference)
  units = [json.loads(line)["unit"] for line in (out / synthetic.DONE).read_text().splitlines()]
  assert sorted(units) == [0, 1, 2]  # each unit recorded once


def test_other_weights_behind_the_same_path_are_refused(tmp_path):
  import shutil

  from jaxaug.models import tiny

  model = tmp_path / "model"
  shutil.copytree(tiny.cached_tiny("unclip"), model)
  out = tmp_path / "out"
  flags = [*SMALL, f"--config.model={model}", "--config.plan.unit_size=12"]
  run = _generate(out, *flags)
  assert run.returncode == 0, run.stderr[-3000:]
  recorded = json.loads((out / "config.json").read_text())["fingerprint"]["weights"]
  assert recorded == json.loads((out / "dataset_info.json").read_text())["weights"]
  vae = model / "vae" / "diffusion_pytorch_model.safetensors"
  assert recorded["vae/diffusion_pytorch_model.safetensors"] == __import__("hashlib").sha256(vae.read_bytes()).hexdigest()
  data = bytearray(vae.read_bytes())
  data[-1] ^= 1
  vae.write_bytes(bytes(data))
  before = _records(out)
  again = _generate(out, *flags)
  assert again.returncode == 2 and "Traceback" not in again.stderr
  assert (f"{out} was made with other weights than {model} holds now (vae/diffusion_pytorch_model.safetensors differ "
          "by sha256") in again.stderr.strip().splitlines()[-1]
  assert _records(out) == before


def test_recovery_removes_what_a_kill_inside_each_write_leaves(reference, tmp_path):
  """SIGKILL inside each kind of write, one after the other into one directory; each rerun tidies what the
  last kill left (temporaries, a torn done line) and goes further; the last one finishes identical."""
  out = tmp_path / "out"
  flags = [f"--config.output.dir={out}", *SMALL, "--config.output.image_files=true"]
  left = []
  for what in ("info", "shard", "done", "image", "sheet"):
    killed = subprocess.run([sys.executable, str(ROOT / "tests" / "write_faults.py"), "kill", what, *flags], env=_env(),
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, (what, killed.stderr[-3000:])
    assert not any(p.exists() for p in left), (what, left)  # this run's recovery removed the last kill's leftovers
    left = synthetic.temporaries(out)
    if what == "done":
      assert not (out / synthetic.DONE).read_bytes().endswith(b"\n")  # a torn line
    else:
      assert left, f"killed inside the {what} write, but no temporary is left"
  rerun = _generate(out, *SMALL, "--config.output.image_files=true")
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert synthetic.temporaries(out) == [] and not any(".tmp" in p.name for p in out.rglob("*"))
  assert _records(out) == _records(reference)
  units = [json.loads(line)["unit"] for line in (out / synthetic.DONE).read_text().splitlines()]
  assert sorted(units) == [0, 1, 2]
  assert len(list((out / "images").rglob("item-*.png"))) == 12


# ---------------------------------------------------------------------------
# Issue 21: a full disk at shard close and at the last dataset_info.json, a damaged record, an empty class folder

def test_full_disk_at_shard_close_is_one_line_then_rerun_finishes(reference, tmp_path):
  """The 150k tmpfs case without root: unit 0's shard goes to /dev/full (tests/write_faults.py full shard), whose
  writes fail with ENOSPC; the ArrayRecord writer only finds out when it closes the shard."""
  out = tmp_path / "out"
  run = subprocess.run([sys.executable, str(ROOT / "tests" / "write_faults.py"), "full", "shard",
                        f"--config.output.dir={out}", *SMALL], env=_env(), capture_output=True, text=True, timeout=600)
  assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
  assert run.stderr.strip().splitlines()[-1] == (
      f"jaxaug: error: writing unit 0 to {out} failed (No space left on device); free space or fix the directory and "
      "rerun the same command to continue")
  assert synthetic.temporaries(out) == [] and 0 not in synthetic.shard_units(out)
  rerun = _generate(out, *SMALL)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert _records(out) == _records(reference)


def test_full_disk_at_the_last_dataset_info_write_is_one_line(reference, tmp_path):
  """dataset_info.json is rewritten when the run ends; a full disk there (its temporary on /dev/full) is one line."""
  import shutil

  from jaxaug import generate
  from jaxaug.errors import UserError

  out = tmp_path / "out"
  shutil.copytree(reference, out)
  before = (out / "dataset_info.json").read_bytes()
  job = generate.prepare(_config(out, *SMALL))
  os.symlink("/dev/full", out / f".dataset_info.json.tmp-{os.getpid()}")
  with pytest.raises(UserError) as error:
    generate._finish_run(job, {"images_written": 0, "skipped_sources": 0, "wall_s": 1.0, "images_per_s": 0.0})
  assert str(error.value) == (f"cannot write {out / 'dataset_info.json'} (No space left on device): free space or fix "
                              "permissions there, then rerun the same command to continue")
  assert (out / "dataset_info.json").read_bytes() == before and synthetic.temporaries(out) == []


def _damage_record(shard: Path, index: int) -> bytes:
  """Flips 64 bytes in the middle of record `index`'s image data, found where it lies in the file; the new bytes."""
  image = synthetic.decode_record(synthetic.read_shard(shard)[index])["image"]
  data = bytearray(shard.read_bytes())
  at = data.find(image)
  assert at > 0 and data.find(image, at + 1) < 0, "the image bytes are not stored as written (compressed?)"
  at += len(image) // 2 - 32
  data[at:at + 64] = bytes(b ^ 0xFF for b in data[at:at + 64])
  shard.write_bytes(data)
  return bytes(data)


def test_damaged_record_is_one_line_for_train_and_score_readers(reference, tmp_path):
  import shutil

  from jaxaug.data.pipeline import read_units
  from jaxaug.errors import UserError

  out = tmp_path / "out"
  shutil.copytree(reference, out)
  _damage_record(out / synthetic.SHARDS / synthetic.shard_name(1), 2)
  source = synthetic.SyntheticSource(out)
  source.check_shards()  # the index is whole: the damage shows when the record is read
  damaged = 5 + 2  # unit 1's record 2
  with pytest.raises(UserError) as error:  # score's reader: grain threads decoding ahead
    list(read_units(source, [np.arange(len(source))], 32))
  message = str(error.value)
  assert "\n" not in message and message.startswith(
      f"synthetic set {out}: shard unit-00000001.array_record (unit 1) is damaged: its record 2 cannot be read "
      "(Corrupted Riegeli/records file: chunk data hash mismatch")
  assert message.endswith("rerun the `python -m jaxaug.generate` command that made this set, which checks every "
                          f"shard's records, moves damaged shards to {out}/damaged/ and makes them again")
  with pytest.raises(UserError, match="record 2 cannot be read"):
    source.provenance(damaged)
  assert source.read(damaged - 1) and source.read(damaged + 1)  # its neighbours in the shard read
  train = subprocess.run([sys.executable, "-m", "jaxaug.train", f"--config={ROOT / 'configs' / 'train_demo.py'}",
                          f"--config.workdir={tmp_path / 'run'}", "--config.real=demo:3", f"--config.synthetic={out}",
                          "--config.epochs=1", "--config.batch_size=8", "--config.eval_batch_size=8"], cwd=ROOT,
                         env=_env(), capture_output=True, text=True, timeout=600)
  assert train.returncode == 2 and "Traceback" not in train.stderr, train.stderr[-3000:]
  lines = [l for l in train.stderr.splitlines() if "jaxaug: error:" in l]
  assert len(lines) == 1 and lines[0].endswith(f"jaxaug: error: {message}")  # (after the open progress bar)


def test_rerun_sets_damaged_shards_aside_and_makes_them_again(reference, tmp_path):
  """A damaged record (unit 1) and a cut shard (unit 2): a rerun of generate reads every record, moves both shards
  to damaged/ and makes the two units again, byte-identical to the undamaged run."""
  import shutil

  out = tmp_path / "out"
  shutil.copytree(reference, out)
  shards = out / synthetic.SHARDS
  damaged = _damage_record(shards / synthetic.shard_name(1), 2)
  cut = (shards / synthetic.shard_name(2)).read_bytes()[:-3]
  (shards / synthetic.shard_name(2)).write_bytes(cut)
  rerun = _generate(out, *SMALL)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "wrote 7 image(s)" in rerun.stdout  # units 1 and 2: 5 + 2 items
  warnings = [l.split("] ", 1)[1] for l in rerun.stderr.splitlines() if "is made again" in l]
  assert [w.split(" is unreadable (")[0] for w in warnings] == [f"shard {synthetic.shard_name(u)}" for u in (1, 2)]
  assert "chunk data hash mismatch" in warnings[0]
  assert warnings[1].endswith(f": moved to {out}/damaged/unit-00000002.array_record; unit 2 is made again")
  assert (out / "damaged" / synthetic.shard_name(1)).read_bytes() == damaged  # set aside, not deleted
  assert (out / "damaged" / synthetic.shard_name(2)).read_bytes() == cut
  assert _records(out) == _records(reference)
  source = synthetic.SyntheticSource(out)
  assert sorted(source.item_ids.tolist()) == list(range(12)) and all(source.read(i) for i in range(len(source)))
  assert json.loads((out / "dataset_info.json").read_text())["units_done"] == 3


@pytest.mark.parametrize("policy", ["per_image", "per_class", "fill_to"])
def test_empty_class_folder_is_refused_under_every_policy(tmp_path, policy):
  from jaxaug import generate
  from jaxaug.errors import UserError

  root = _demo_folder(tmp_path / "images")
  (root / "zz_empty").mkdir()  # sorts after the four demo classes: class 4
  config = _config(tmp_path / "out", *SMALL, f"--config.data.source=folder:{root}", f"--config.plan.policy={policy}")
  with pytest.raises(UserError) as error:
    generate.prepare(config)
  assert str(error.value) == ("class 4 ('zz_empty') has no real images to condition on (1 such class(es)); remove "
                              "them from the source (an empty class folder: delete it) or check the split")
  assert not (tmp_path / "out").exists()


def test_the_runs_prompts_are_encoded_once_per_run_not_in_every_step(tmp_path, monkeypatch):
  """Every prompt of a run is a class's or the empty one (`generate_lib.step.text_contexts`): the step's program has
  no text tower in it, looks the contexts up by label, and makes the images a step encoding its prompts would."""
  import jax
  import jax.numpy as jnp

  from jaxaug import bench, flops, mesh
  from jaxaug.generate_lib import step as step_lib
  from jaxaug.models import sd

  config = generate.get_demo_config()
  config.model, config.resolution, config.output.dir = "tiny", 64, str(tmp_path)
  config.sampler.steps = 3  # what is compared does not depend on the count; 20 only cost time
  job = generate.prepare(config)
  mesh_ = mesh.data_mesh()
  step = step_lib.make_step(job, mesh_)

  def text_dots(lowered) -> int:
    return len(re.findall(r'loc\("[^"]*/TextEncoder/[^"]*dot_general', lowered.as_text(debug_info=True)))

  assert text_dots(jax.jit(lambda p: sd.encode_text(job.pipe, p, jnp.asarray(job.empty_ids))).lower(job.params)) > 0
  assert text_dots(step.lower(*flops._abstract_inputs(job, mesh_, 1))) == 0  # was 2 encodes, then 1 (the batch's)
  params, batch, contexts = bench._step_inputs(job, mesh_, 2)
  batch["label"] = jnp.asarray([len(job.prompt_ids) - 1, 0], jnp.int32)  # two classes, the last one first
  assert contexts["classes"].shape[0] == len(job.prompt_ids) >= 3
  images = np.asarray(step(params, batch, contexts)["image"])

  # The same images as a step that encodes the batch's prompts and the empty one itself, byte for byte ...
  def encoding_inside(p, b):
    ids = jnp.asarray(job.prompt_ids)[b["label"]]
    inside = {"classes": sd.encode_text(job.pipe, p, ids),
              "empty": sd.encode_text(job.pipe, p, jnp.asarray(job.empty_ids))}
    return step(p, dict(b, label=jnp.arange(len(ids), dtype=jnp.int32)), inside)
  np.testing.assert_array_equal(images, np.asarray(jax.jit(encoding_inside)(params, batch)["image"]))
  # ... and from contexts encoded a few classes at a time (a run with more classes than one call takes) ...
  monkeypatch.setattr(step_lib, "CLASS_CHUNK", 2)
  chunked = step_lib.text_contexts(job, params, mesh_)
  np.testing.assert_array_equal(np.asarray(chunked["classes"]), np.asarray(contexts["classes"]))
  # ... and the contexts handed in are the ones used, the empty one for guidance, the class's by label.
  no_empty = dict(contexts, empty=jnp.zeros_like(contexts["empty"]))
  assert not np.array_equal(images, np.asarray(step(params, batch, no_empty)["image"]))
  swapped = dict(batch, label=batch["label"][::-1])
  assert not np.array_equal(images[0], np.asarray(step(params, swapped, contexts)["image"])[0])
