"""python -m jaxaug.generate: plan -> condition -> sample -> write, sharded and resumable.

    python -m jaxaug.generate                                   # the demo (configs/demo.py)
    python -m jaxaug.generate --config=imagenet_lt --config.model=DIR_OR_HUB_ID

Rerunning the same command continues where it stopped; an output image is a pure function of
(config, seed, item_id), whatever the device count, host count, batch size or number of restarts.

Rerunning it also repairs the set: every start first reads each finished shard's records against their
checksums (each host its own units), moves a damaged shard to OUT/damaged/ (kept, not deleted) and makes its
unit again, byte-identical to an undamaged run. This is the fix that `python -m jaxaug.train` and
`python -m jaxaug.score` name when a record cannot be read. A full disk in any write (a shard, its close, a done
line, an image file, dataset_info.json) ends in one line: free space and rerun the same command to continue.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image

from jaxaug import augment, config_files, fsutil, interrupt, locks, mesh, plan as plan_lib, xla_options
from jaxaug.data import kshot, open_source, synthetic
from jaxaug.data.pipeline import read_units
from jaxaug.errors import UserError, run_with_config
from jaxaug.fsutil import atomic_write_bytes
from jaxaug.generate_lib.config import check_config, fingerprint
from jaxaug.generate_lib.step import Job, make_step, text_contexts
from jaxaug.models import checkpoint, sd
from jaxaug.models.tiny import resolve_model
from jaxaug.models.pipeline import load
from jaxaug.sampler import SamplerSpec

_DEFAULT_CONFIG = "demo"  # a shipped config (jaxaug.config_files)

def get_demo_config():
  """The default config (configs/demo.py), for code that builds a run without flags."""
  return config_files.load(_DEFAULT_CONFIG)


def check_noise_level(config, root) -> None:
  """unCLIP's noise level indexes the checkpoint's image-noising schedule; outside it a gather would clamp silently."""
  if config.sampler.mode != "unclip" or not (root / "image_noising_scheduler").is_dir():
    return
  steps = checkpoint.read_config(root, "image_noising_scheduler", "scheduler_config.json").get(
      "num_train_timesteps", 1000)
  if not 0 <= config.sampler.noise_level < steps:
    raise UserError(f"--config.sampler.noise_level={config.sampler.noise_level} is out of range: this checkpoint's "
                    f"image-noising schedule has levels 0..{steps - 1} (the paper uses 0)")


def prepare(config, methods: tuple[augment.Method, ...] | None = None) -> Job:
  """Validates the config (unless `check_config` gave `methods`) and loads everything; raises UserError before
  any output exists."""
  methods = methods or check_config(config)
  source = open_source(config.data.source, config.data.split)
  if config.data.shots:
    source = kshot(source, config.data.shots, config.data.shots_seed)
  plan = plan_lib.make_plan(source.labels, source.num_classes, tuple(m.name for m in methods), config.plan.policy,
                            config.plan.amount, config.seed, config.plan.unit_size, source.class_names)
  _check_self_pairs(config, source, plan, methods, config.sampler.mode)
  dtype = {"fp32": jnp.float32, "bf16": jnp.bfloat16}.get(config.dtype)
  if config.dtype == "auto":
    dtype = jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  root = checkpoint.resolve(resolve_model(config.model))
  check_noise_level(config, root)
  weights = hash_weights(root)
  pipe, params = load(str(root), dtype, config.attention, config.dots)
  spec = SamplerSpec(mode=config.sampler.mode, scheduler=config.sampler.scheduler or None, steps=config.sampler.steps,
                     guidance=config.sampler.guidance, strength=config.sampler.strength).check(pipe)
  grid = pipe.vae_factor * 2 ** (len(pipe.unet.block_out_channels) - 1)  # VAE, then the UNet's downsamplings
  if config.resolution % grid:
    raise UserError(f"resolution {config.resolution} must be a multiple of {grid} for this checkpoint (e.g. 768 or 512)")
  prompts = [config.prompt.format(name) for name in source.class_names]
  job = Job(config=config, out=output_dir(config), source=source, methods=methods, plan=plan, pipe=pipe,
            params=params, spec=spec, prompt_ids=sd.tokenize(pipe, prompts), empty_ids=sd.tokenize(pipe, [""]),
            weights=weights)
  _check_output(job)
  return job


def output_dir(config) -> Path:
  return Path(os.path.expanduser(config.output.dir))


def hash_weights(root: Path) -> dict:
  """The checkpoint's weight hashes: the first time, a few seconds per GB read; then from the cache."""
  def progress(path, size):
    if size >= 100_000_000:
      logging.info("hashing %s (%.1f GB; once: cached by size and mtime)", path, size / 1e9)

  return checkpoint.weight_hashes(root, progress)


def _check_self_pairs(config, source, plan: plan_lib.Plan, methods, mode: str):
  """A class with one real image makes a pair method mix that image with itself: one warning, or refused."""
  pairs = [m for m, method in enumerate(methods) if method.pairs]
  if mode != "unclip" or not pairs:
    return
  alone = np.isin(plan.method, pairs) & (source.counts()[plan.label] == 1)
  if not alone.any():
    return
  names = [source.class_names[c] for c in sorted(set(plan.label[alone].tolist()))]
  used = sorted({methods[m].name for m in plan.method[alone].tolist()})
  listed = ", ".join(map(repr, names[:10])) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
  what = (f"{len(names)} class(es) have a single real image, so {', '.join(used)} mix it with itself there: "
          f"{listed}")
  if config.refuse_self_pairs:
    raise UserError(f"{what}; add real images to them, drop those methods, or set --config.refuse_self_pairs=False "
                    "to generate anyway")
  if jax.process_index() == 0:
    logging.warning("%s (set --config.refuse_self_pairs=True to refuse such a run)", what)


# Raised when the model code's rounding changes under the same settings, so that a run begun before resumes with
# a warning. 2: GroupNorm's statistics summed per channel first; under fp32_results the folded upsampling conv and
# the blocked long attention (December 2026). 3: under fp32_results, attention over one to two blocks of queries
# (the full-size image tower's 257) in two parts. A stored run without it is revision 1.
NUMERICS_REVISION = 3


def numerics(config, pipe) -> dict:
  """What changes an image's float rounding but not what it depicts: a resume may change these, with a warning."""
  found = {"batch.per_device": config.batch.per_device, "dtype": jnp.dtype(pipe.dtype).name,
           "attention": pipe.attention, "dots": pipe.dots, "numerics_revision": NUMERICS_REVISION}
  if jax.default_backend() == "cpu":
    found["cpu_convolutions"] = xla_options.cpu_convolutions()
  return found


def _check_output(job: Job):
  out, config = job.out, job.config
  stored = _stored_run(job)
  if stored is not None:
    before = {"reference_quirks": False, **stored["fingerprint"]}  # sets made before the switch ran without quirks
    # as JSON stores it (tuples become lists); weights only where the directory recorded them
    now = json.loads(json.dumps(fingerprint(config, job.weights if "weights" in before else None)))
    if before != now:
      changed = sorted(k for k in now if before.get(k) != now[k])
      if changed == ["weights"]:
        raise UserError(_weights_changed(out, config.model, before["weights"], job.weights))
      raise UserError(f"{out} holds a run with a different config ({', '.join(changed)} changed); use a new "
                      "--config.output.dir, or rerun with the same config to resume")
    was = stored.get("numerics") or {}
    if was:
      was = {"numerics_revision": 1, **was}  # recorded from revision 2 on
    changed = {k: v for k, v in numerics(config, job.pipe).items() if k in was and was[k] != v}
    if changed:
      rounding = ("up to bf16 rounding (visibly close, not equal)" if "dtype" in changed
                  else "up to float rounding (about one grey level in rare pixels)")
      logging.warning("resuming with %s: the remaining images equal an uninterrupted run's %s, not byte for byte",
                      ", ".join(f"{k}={v} (was {was[k]})" for k, v in changed.items()), rounding)
  fsutil.make_dirs(out, "output directory", "--config.output.dir")
  try:
    probe = out / f".write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
  except OSError as e:
    raise UserError(f"cannot write to output directory {out} ({e.strerror}); choose another --config.output.dir") from None


def _stored_run(job: Job) -> dict | None:
  """config.json of the run in the output directory; None where there is none to keep.

  The fingerprint of a directory with finished units is never replaced: an unreadable config.json there
  stops the run, and a missing one is written again only if a finished unit matches this config.
  """
  path = job.out / "config.json"
  finished = synthetic.shard_units(job.out)
  if not path.exists():
    if finished:
      _check_finished_unit(job, min(finished))
      logging.warning("%s had no config.json; a finished unit matches this config (seed, model, sampler, prompt, "
                      "sources, resolution, format), so it is written again for its %d finished unit(s)", job.out,
                      len(finished))
    return None
  try:
    stored = json.loads(path.read_bytes())
    if not isinstance(stored, dict) or not isinstance(stored.get("fingerprint"), dict):
      raise ValueError("no output fingerprint in it")
    return stored
  except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
    cause = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if finished:
      raise UserError(f"{path} is unreadable ({cause}) and {job.out} holds {len(finished)} finished unit(s): if this "
                      f"command made them, move it aside (mv {path} {path}.bad) and rerun, which checks a finished "
                      "unit against this config first; otherwise use a new --config.output.dir") from None
    logging.warning("%s is unreadable (%s) and no unit is finished in %s: writing it again", path, cause, job.out)
    return None


def _check_finished_unit(job: Job, unit: int):
  """Refuses unless the first record of a finished unit is what this config makes for its item."""
  shard = job.out / synthetic.SHARDS / synthetic.shard_name(unit)
  try:
    records = synthetic.read_shard(shard)
  except RuntimeError as e:
    raise UserError(f"{job.out} has no config.json and its finished unit {unit} cannot be read ({e}); use a new "
                    "--config.output.dir") from None
  if not records:
    return
  record = synthetic.decode_record(records[0])
  item = int(record["item_id"])
  differ = []
  if item >= len(job.plan) or int(job.plan.label[item]) != record["label"]:
    differ.append("plan or data")
  else:
    expected = _provenance(job, item, lam=None)
    differ += [k for k, v in expected.items() if k != "lam" and record["provenance"].get(k) != v]
    image = Image.open(io.BytesIO(record["image"]))
    if image.format.lower() != {"png": "png"}.get(job.config.output.format, "jpeg"):
      differ.append("output.format")
    if image.size != (job.config.resolution,) * 2:
      differ.append("resolution")
  if differ:
    raise UserError(f"{job.out} has no config.json and holds finished units made with another config "
                    f"({', '.join(differ)} differ); use a new --config.output.dir, or rerun with the config that made "
                    "them")
def _weights_changed(out: Path, model: str, before: dict, now: dict) -> str:
  differ = sorted(f for f in set(before) | set(now) if before.get(f) != now.get(f))
  more = f" and {len(differ) - 1} more" if len(differ) > 1 else ""
  return (f"{out} was made with other weights than {model} holds now ({differ[0]}{more} differ by sha256, see "
          f"config.json); point --config.model at the checkpoint it was made with, or use a new --config.output.dir")


def encode_image(pixels: np.ndarray, fmt: str, quality: int) -> bytes:
  buf = io.BytesIO()
  if fmt == "png":
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=6)
  else:
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality, subsampling=0)
  return buf.getvalue()


def _uses_second_image(job: Job, item: int) -> bool:
  return job.spec.mode == "unclip" and job.methods[job.plan.method[item]].pairs


def _source_ids(job: Job, item: int) -> list[str]:
  ids = job.plan.source[item][: 2 if _uses_second_image(job, item) else 1]
  return [job.source.id(int(i)) for i in ids]


def _needed_ok(job: Job, item: int, ok1: bool, ok2: bool) -> bool:
  return ok1 and (ok2 or not _uses_second_image(job, item))


def _provenance(job: Job, item: int, lam: float | None) -> dict:
  config, label = job.config, int(job.plan.label[item])
  return {"source_ids": _source_ids(job, item), "method": job.plan.methods[job.plan.method[item]], "lam": lam,
          "seed": config.seed, "model": config.model, "mode": job.spec.mode, "steps": job.spec.steps,
          "guidance": job.spec.guidance, "scheduler": job.spec.scheduler or job.pipe.scheduler_name,
          "noise_level": config.sampler.noise_level, "prompt": config.prompt.format(job.source.class_names[label]),
          "reference_quirks": bool(config.reference_quirks)}


def write_unit(job: Job, unit: int, items: np.ndarray, images: dict[int, np.ndarray], lams: dict[int, float],
               process: int) -> int:
  """Encodes and commits one unit (skipped items have no image); returns the images written."""
  config, records = job.config, []
  for item in items:
    item = int(item)
    if item not in images:
      continue
    label = int(job.plan.label[item])
    data = encode_image(images[item], config.output.format, config.output.jpeg_quality)
    records.append(synthetic.encode_record(data, label, job.source.class_names[label], item,
                                           _provenance(job, item, float(lams[item]))))
    if config.output.image_files:
      folder = job.out / "images" / _safe(job.source.class_names[label])
      folder.mkdir(parents=True, exist_ok=True)
      ext = "png" if config.output.format == "png" else "jpg"
      atomic_write_bytes(folder / f"item-{item:08d}.{ext}", data)
  synthetic.write_unit(job.out, unit, records, process)
  return len(records)


def _safe(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "class"


def _batches(job: Job, pending_items: np.ndarray, local_batch: int, steps: int):
  """`steps` host batches of `local_batch` rows: items, source images, prompt ids.

  The last batches are padded by repeating a row (a host with no work left feeds a dummy batch, since
  every host takes part in every step); callers keep only the first len(chunk) rows.
  """
  plan, size = job.plan, job.config.data.source_size
  chunks = [pending_items[s * local_batch:(s + 1) * local_batch] for s in range(steps)]
  real = [c for c in chunks if len(c)]
  reads = read_units(job.source, [np.concatenate([plan.source[c, 0], plan.source[c, 1]]) for c in real], size,
                     num_threads=job.config.reader_threads)
  blank = np.zeros((local_batch, size, size, 3), np.uint8)
  for chunk in chunks:
    n = len(chunk)
    if n == 0:
      item, image1, image2, ok = np.zeros(local_batch, np.int64), blank, blank, np.ones(0, bool)
    else:
      read = next(reads)
      rows = np.concatenate([np.arange(n), np.full(local_batch - n, n - 1)])
      item, image1, image2, ok = chunk[rows], read["image"][:n][rows], read["image"][n:][rows], read["ok"]
    host = {"item_id": item.astype(np.int32), "method": plan.method[item].astype(np.int32), "image1": image1,
            "image2": image2, "label": plan.label[item].astype(np.int32)}
    yield chunk, ok[:n], ok[n:], host


def run(config) -> dict:
  """Generates every pending unit of this host; returns the summary.

  SIGINT or SIGTERM stops it cleanly: no new work, in-flight unit writes finish, one line, exit 130 / 143.
  """
  where = {}  # output directory and unit count once known, for that line

  def status() -> str:
    return f"{len(synthetic.committed(where['out']))}/{where['units']} units done in all" if where else ""

  with interrupt.Stopper(status) as stopper:
    return _run(config, stopper, where)


def _run(config, stopper: interrupt.Stopper, where: dict) -> dict:
  mesh.initialize(config.mesh.coordinator, config.mesh.num_processes, config.mesh.process_id)
  process, processes = jax.process_index(), jax.process_count()
  start_time = time.time()
  methods = check_config(config)
  # A directory that exists is locked before the model loads, so a second run stops at once; a new one
  # is locked as soon as prepare has checked everything and made it.
  lock = _lock_output(output_dir(config), process) if output_dir(config).is_dir() else None
  try:
    job = prepare(config, methods)
  except BaseException:
    if lock:
      lock.release()
    raise
  where.update(out=job.out, units=job.plan.num_units)
  with lock or _lock_output(job.out, process):
    return _generate(job, stopper, process, processes, start_time)


def _lock_output(out: Path, process: int) -> locks.DirectoryLock:
  return locks.hold_run(out, process, jax.process_count(), "generation run", "--config.output.dir")


def _generate(job: Job, stopper: interrupt.Stopper, process: int, processes: int, start_time: float) -> dict:
  config = job.config
  mesh_ = mesh.data_mesh()
  _repair(job, process, processes)
  mesh.barrier("repaired")
  if process == 0:
    _start_output(job)
  mesh.barrier("recovered")
  done = set(synthetic.committed(job.out))
  pending = plan_lib.host_units(job.plan, done, process, processes)
  pending_items = np.concatenate([job.plan.unit_items(u) for u in pending]) if pending else np.zeros(0, np.int64)
  local_batch = mesh.local_batch(config.batch.per_device)
  steps = mesh.max_over_hosts(-(-len(pending_items) // local_batch))
  total = sum(len(job.plan.unit_items(u)) for u in range(job.plan.num_units) if u not in done)
  if process == 0:
    logging.info("%d items in %d units; %d done, %d to make on %d device(s), %d process(es); %s, %s attention",
                 len(job.plan), job.plan.num_units, len(done), total, jax.device_count(), processes,
                 jnp.dtype(job.pipe.dtype).name, job.pipe.attention)
  params = jax.device_put(job.params, mesh.replicated(mesh_))
  step, contexts = make_step(job, mesh_), text_contexts(job, params, mesh_)

  unit_of = {int(i): u for u in pending for i in job.plan.unit_items(u)}
  left = {u: len(job.plan.unit_items(u)) for u in pending}
  images, lams = {}, {}
  stats = {"written": 0, "skipped_sources": 0, "skipped_items": []}
  bar = _progress(total if process == 0 else 0, process == 0)
  writer = concurrent.futures.ThreadPoolExecutor(max_workers=2)
  writes = []
  unit_start = {u: None for u in pending}

  def finish(chunk, ok1, ok2, result, dispatched):
    out = mesh.to_local(result)
    for row, item in enumerate(chunk):
      item = int(item)
      unit = unit_of[item]
      unit_start[unit] = unit_start[unit] or dispatched
      if _needed_ok(job, item, bool(ok1[row]), bool(ok2[row])):
        images[item], lams[item] = out["image"][row], float(out["lam"][row])
      else:
        stats["skipped_sources"] += 1
        stats["skipped_items"].append(item)
      left[unit] -= 1
      if left[unit] == 0:
        items = job.plan.unit_items(unit)
        unit_images = {int(i): images.pop(int(i)) for i in items if int(i) in images}
        unit_lams = {i: lams.pop(i) for i in unit_images}
        write = stopper.submit(writer, _commit, job, unit, items, unit_images, unit_lams, process, unit_start[unit])
        if write is None:
          stopper.park()  # interrupted: the signal watcher ends the process
        writes.append(write)
    bar.update(len(chunk) * processes)

  previous = None
  try:
    for chunk, ok1, ok2, host in _batches(job, pending_items, local_batch, steps):
      if stopper.stopping:
        stopper.park()
      result = step(params, mesh.to_global(mesh_, host), contexts)  # asynchronous: runs while the last batch is written
      if previous is not None:
        finish(*previous)
      for w in [w for w in writes if w.done()]:  # a failed write stops the run now, not at the end
        stats["written"] += w.result()
        writes.remove(w)
      previous = (chunk, ok1, ok2, result, time.time())
    if previous is not None:
      finish(*previous)
    for w in writes:
      stats["written"] += w.result()
  finally:
    writer.shutdown(wait=True)
    bar.close()
  mesh.barrier("written")
  wall = time.time() - start_time
  summary = {"images_written": stats["written"],
             "skipped_sources": stats["skipped_sources"], "wall_s": round(wall, 2),
             "images_per_s": round(stats["written"] / wall, 3) if wall else 0.0, "process": process}
  if stats["skipped_items"]:
    logging.warning("skipped %d item(s) whose source image could not be read: items %s", stats["skipped_sources"],
                    stats["skipped_items"][:20])
  if process == 0:
    _finish_run(job, summary)
  return summary


def _commit(job, unit, items, unit_images, unit_lams, process, began):
  try:
    n = write_unit(job, unit, items, unit_images, unit_lams, process)
  except OSError as e:
    raise UserError(f"writing unit {unit} to {job.out} failed ({e.strerror or e}); free space or fix the "
                    "directory and rerun the same command to continue") from None
  logging.info("unit %d: %d images committed, %.2fs after its first batch was dispatched", unit, n,
               time.time() - began)
  return n






def _repair(job: Job, process: int, processes: int) -> None:
  """Checks every record of this host's finished shards and sets the damaged ones aside, to be made again below.

  Runs before recovery, which would otherwise read a damaged shard whose done line is missing.
  """
  units = [u for u in synthetic.shard_units(job.out) if u % processes == process]
  began = time.time()
  try:
    damaged = synthetic.damaged_shards(job.out, units, job.config.reader_threads)
    moved = {u: synthetic.set_aside(job.out, u) for u in damaged}
  except OSError as e:
    raise UserError(f"cannot check or set aside the shards in {job.out} ({e.strerror or e}): fix the directory, "
                    "then rerun the same command to continue") from None
  if units:
    logging.info("checked the records of %d finished shard(s) in %.1fs: %d damaged", len(units),
                 time.time() - began, len(damaged))
  for unit, problem in damaged.items():
    logging.warning("shard %s %s: moved to %s; unit %d is made again", synthetic.shard_name(unit), problem,
                    moved[unit], unit)


def _progress(total: int, enabled: bool):
  from tqdm import tqdm

  return tqdm(total=total, disable=not enabled or total == 0, unit="img", desc="generating", file=sys.stderr,
              dynamic_ncols=True, smoothing=0.1)


def _versions() -> dict:
  import flax

  return {"jaxaug": __import__("jaxaug").__version__, "jax": jax.__version__, "flax": flax.__version__,
          "python": platform.python_version()}


def _start_output(job: Job):
  """config.json (atomically, only when it changes); tidies what a kill left; dataset_info.json."""
  config, path = job.config, job.out / "config.json"
  text = json.dumps({"config": json.loads(config.to_json()), "fingerprint": fingerprint(config, job.weights),
                     "numerics": numerics(config, job.pipe)}, indent=2)
  try:
    if not path.is_file() or path.read_bytes() != text.encode():
      fsutil.atomic_write_text(path, text)
    synthetic.recover(job.out)
    _write_info(job)
  except OSError as e:
    raise UserError(f"cannot write {e.filename or job.out} ({e.strerror or e}): free space or fix permissions there, "
                    "then rerun the same command to continue") from None


def _write_info(job: Job, summary: dict | None = None):
  done = synthetic.committed(job.out)
  counts = np.zeros(job.source.num_classes, np.int64)
  for entry in done.values():
    np.add.at(counts, np.asarray(entry["labels"], np.int64), 1)
  synthetic.write_info(job.out, {
      "class_names": list(job.source.class_names), "synthetic_counts": counts.tolist(),
      "real_counts": job.source.counts().tolist(), "planned_items": len(job.plan), "units": job.plan.num_units,
      "units_done": len(done), "methods": list(job.plan.methods), "model": job.config.model,
      "resolution": job.config.resolution, "format": job.config.output.format, "versions": _versions(),
      "weights": job.weights,
      "last_run": summary or {}})


def _finish_run(job: Job, summary: dict):
  try:
    _write_info(job, summary)
  except OSError as e:
    raise UserError(f"cannot write {e.filename or job.out} ({e.strerror or e}): free space or fix permissions there, "
                    "then rerun the same command to continue") from None
  sheet = None
  try:
    sheet = _contact_sheet(job, summary)
  except UserError:
    raise
  except Exception as e:  # a picture must never fail a finished run
    logging.warning("contact sheet not written: %s", e)
  lines = [f"wrote {summary['images_written']} image(s) in {summary['wall_s']:.1f}s "
           f"({summary['images_per_s']:.2f} images/s); skipped sources: {summary['skipped_sources']}",
           f"dataset: {job.out}  ({len(synthetic.read_done(job.out))}/{job.plan.num_units} units done)"]
  if sheet:
    lines.append(f"contact sheet: {sheet}")
  print("\n".join(lines), flush=True)


def _contact_sheet(job: Job, summary: dict) -> Path | None:
  """The set's contact sheet: drawn anew when this run wrote images, kept when it wrote none (a rerun of a finished
  set: the sheet of the same images stands, and the rerun stays quick)."""
  from jaxaug.contact_sheet import write_contact_sheet

  existing = job.out / "contact_sheet.png"
  if summary["images_written"] == 0 and existing.is_file():
    return existing
  return write_contact_sheet(job)


def main():
  run_with_config(run, _DEFAULT_CONFIG, "generation config: a shipped name (demo, imagenet_lt, fewshot:ARG) "
                  "or a .py file")


if __name__ == "__main__":
  main()
