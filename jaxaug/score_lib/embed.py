"""Images -> embeddings by an encoder (score_lib/encoders.py: CLIP, Inception, DINOv2), cached in units a
killed run resumes.

One jitted step, sharded over every device of every host, embeds a batch: the host fits each image as its
encoder wants it (CLIP: uint8 squares at the tower's input size, shorter side, centre crop, bicubic, the
`data.images.fit_square` rule, as CLIPImageProcessor does; Inception: clean-fid's float resize to 299), then
the device runs the encoder's `apply` (CLIP: `condition`'s normalisation -> `models.sd.encode_image`, the
projected image embedding), float32 out. The host side is `data.pipeline.read_units`: grain threads decoding
ahead of the device. Each encoder has its own caches.

The cache keeps generation's discipline (design.md contract 2): a unit's .npy is written under a
temporary name, fsynced and renamed, then recorded in the done file of its process; a rerun embeds only
the units not recorded, so a kill costs at most the units in flight. A set's directory name carries a
hash of everything its embeddings depend on, so another encoder, model, dtype or real set never mixes with it:

  <cache>/real-<hash>/unit-00000003.npy       float32 (rows, d) in source order; NaN rows: unreadable images
  <cache>/synthetic-<hash>/unit-00000012.npy  one per generation unit, rows in the shard's order
          .../done_units.jsonl                {"unit", "file", "rows", "bytes", "sha256", "version",
                                               "sources" (synthetic)} per unit
          .../key.json                        what the hash covers

A disk or a person can still damage a recorded unit, so every run checks each recorded unit's file against
its size and SHA-256 before trusting it: a unit that is missing, short, unreadable or fails its checksum is
embedded again (one warning line names it) and recorded again with a higher `version`, which wins over the
old line in whichever process's done file that is. A unit recorded before checksums were kept is held to
what can still be checked (readable, float32, its row count) and then its file's checksum is recorded.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np
from absl import logging

from jaxaug import fsutil, mesh
from jaxaug.data import synthetic
from jaxaug.data.pipeline import read_units
from jaxaug.data.sources import ImageSource
from jaxaug.errors import UserError


@dataclasses.dataclass(frozen=True)
class Unit:
  """A cached unit: its number and the source positions of its rows, in order."""
  number: int
  positions: np.ndarray


def real_units(count: int, unit_size: int) -> list[Unit]:
  """Consecutive runs of `unit_size` source positions."""
  starts = range(0, count, unit_size)
  return [Unit(u, np.arange(start, min(start + unit_size, count))) for u, start in enumerate(starts)]


def synthetic_units(source: synthetic.SyntheticSource) -> list[Unit]:
  """One unit per generation unit, so a set that grows later only adds units; positions as the source orders them."""
  done = synthetic.read_done(source.out)  # read after the source: it holds every unit the source lists
  unit_of = {int(item): unit for unit, entry in done.items() for item in entry["item_ids"]}
  owners = np.array([unit_of[int(item)] for item in source.item_ids], np.int64)
  starts = np.flatnonzero(np.diff(owners, prepend=-1))
  ends = np.append(starts[1:], len(owners))
  return [Unit(int(owners[s]), np.arange(s, e)) for s, e in zip(starts, ends)]


def digest(key: dict) -> str:
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def model_identity(model: str) -> dict:
  """What the image tower's output depends on: a local checkpoint's tower files (name, size, mtime), or the name."""
  root = Path(model).expanduser()
  if not root.is_dir():
    return {"model": model}
  files = sorted(p for part in ("image_encoder", "feature_extractor") if (root / part).is_dir()
                 for p in (root / part).rglob("*") if p.is_file())
  return {"model": str(root.resolve()),
          "files": [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


class Cache:
  """One set's embedding units in a directory."""

  def __init__(self, root: str | os.PathLike, name: str, key: dict):
    self.key = key
    self.dir = Path(root) / f"{name}-{digest(key)}"

  def prepare(self) -> None:
    """Creates the directory, removes what a kill can leave (temporary files, a torn done line). Process 0 only."""
    try:
      self.dir.mkdir(parents=True, exist_ok=True)
      synthetic.remove_temporaries(self.dir)  # units' and key.json's
      if not (self.dir / "key.json").is_file():
        fsutil.atomic_write_bytes(self.dir / "key.json", json.dumps(self.key, indent=2, sort_keys=True).encode())
    except OSError as e:
      raise UserError(f"cannot write the embedding cache {self.dir} ({e.strerror or e}); choose another "
                      "--config.cache_dir") from None
    synthetic.read_done(self.dir, repair=True)

  def done(self) -> dict[int, dict]:
    """{unit: entry} over every process's done file, a unit's highest `version` winning (a later line on a tie)."""
    entries = {}
    for path in sorted(self.dir.glob(synthetic.DONE_GLOB)):
      for entry in _done_lines(path):
        old = entries.get(entry["unit"])
        if old is None or entry.get("version", 0) >= old.get("version", 0):
          entries[entry["unit"]] = entry
    return entries

  def commit(self, unit: int, embeddings: np.ndarray, extra: dict, process: int, version: int = 1) -> None:
    """The unit's .npy under a temporary name, fsync, rename; then its line, with the file's size and checksum,
    in this process's done file."""
    name = f"unit-{unit:08d}.npy"
    array = io.BytesIO()
    np.save(array, np.asarray(embeddings, np.float32))
    data = array.getvalue()
    fsutil.atomic_write_bytes(self.dir / name, data)
    self.record({"unit": unit, "file": name, "rows": int(len(embeddings)), "bytes": len(data),
                 "sha256": hashlib.sha256(data).hexdigest(), "version": version, **extra}, process)

  def record(self, entry: dict, process: int) -> None:
    fsutil.append_line(self.dir / synthetic.done_file(process), json.dumps(entry))

  def pending(self, units: Sequence[Unit], process: int) -> list[tuple[Unit, int]]:
    """(unit, version to record it with) for each of `units` to embed: those not recorded, and those whose file is
    damaged (one warning line each). A sound unit recorded before checksums gets its checksum recorded now."""
    done, pending, adopted = self.done(), [], 0
    for unit in units:
      entry = done.get(unit.number)
      if entry is None:
        pending.append((unit, 1))
        continue
      _, problem, written = check_unit(self.dir, entry, len(unit.positions))
      if problem:
        logging.warning("embedding unit %d (%s) in %s %s: embedding it again", unit.number, entry["file"], self.dir,
                        problem)
        pending.append((unit, entry.get("version", 0) + 1))
      elif "sha256" not in entry:
        self._adopt({**entry, **written, "version": entry.get("version", 0) + 1}, process)
        adopted += 1
    if adopted:
      logging.warning("%d embedding unit(s) in %s were recorded without a checksum (an older jaxaug): their files "
                      "are readable and of the right shape, so their checksums are recorded now", adopted, self.dir)
    return pending

  def _adopt(self, entry: dict, process: int) -> None:
    try:
      self.record(entry, process)
    except OSError as e:
      raise UserError(f"cannot write the embedding cache {self.dir} ({e.strerror or e}); choose another "
                      "--config.cache_dir") from None

  def load(self, units: Sequence[Unit]) -> tuple[np.ndarray, dict[int, dict]]:
    """The embeddings of `units` in order, (rows, d) float32, and their done entries; each file checked again."""
    done = self.done()
    missing = [u.number for u in units if u.number not in done]
    if missing:
      raise UserError(f"the embedding cache {self.dir} lacks {len(missing)} unit(s) (e.g. {missing[0]}): a host "
                      "stopped early; rerun the same command to embed them")
    arrays = []
    for unit in units:
      array, problem, _ = check_unit(self.dir, done[unit.number], len(unit.positions))
      if problem:
        raise UserError(f"embedding unit {unit.number} ({done[unit.number]['file']}) in {self.dir} {problem}: it "
                        "changed during this run; rerun the same command to embed it again")
      arrays.append(array)
    return np.concatenate(arrays) if arrays else np.zeros((0, 0), np.float32), {u.number: done[u.number] for u in units}


def _done_lines(path: Path) -> list[dict]:
  """A done file's complete lines; a torn last line (a kill mid-append, which `Cache.prepare` cuts) is not one."""
  entries = []
  with open(path, "rb") as f:
    for raw in f:
      try:
        entry = json.loads(raw)
      except ValueError:
        break
      if not raw.endswith(b"\n"):
        break
      entries.append(entry)
  return entries


def check_unit(directory: Path, entry: dict, rows: int) -> tuple[np.ndarray | None, str, dict]:
  """(embeddings or None, what is wrong with the unit's file or '', the file's {"bytes", "sha256"}): a file can be
  missing, short, unreadable, fail its recorded checksum (same-size garbage), or hold other than `rows` float32 rows."""
  try:
    data = (directory / entry["file"]).read_bytes()
  except FileNotFoundError:
    return None, "is missing", {}
  except OSError as e:
    return None, f"is unreadable ({e.strerror or e})", {}
  found = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
  if "bytes" in entry and found["bytes"] != entry["bytes"]:
    return None, f"is {found['bytes']} bytes, not the {entry['bytes']} recorded", found
  if "sha256" in entry and found["sha256"] != entry["sha256"]:
    return None, "fails its checksum", found
  try:
    array = np.load(io.BytesIO(data), allow_pickle=False)
  except Exception as e:  # noqa: BLE001 (whatever a damaged header makes np.load raise, the file is unreadable)
    return None, f"is unreadable ({type(e).__name__}: {e})", found
  if array.dtype != np.float32 or array.ndim != 2 or len(array) != rows:
    return None, f"holds {array.dtype} {array.shape}, not {rows} float32 rows", found
  return array, "", found


def make_step(apply: Callable, mesh_):
  """The jitted, sharded step: an encoder's apply(params, (B, S, S, 3) host batch) -> (B, d) float32."""
  return jax.jit(apply, in_shardings=(mesh.replicated(mesh_), mesh.batch_sharding(mesh_)),
                 out_shardings=mesh.batch_sharding(mesh_))


@dataclasses.dataclass
class Embedder:
  """The compiled step, its replicated parameters and the host-side settings."""
  step: Callable
  params: object
  mesh: object
  size: int  # the side of the host batch
  dim: int  # the embedding's
  per_device: int
  reader_threads: int
  fit: Callable | None = None  # one image -> the host array (None: `data.images.load_fit` to `size`, uint8)
  dtype: object = np.uint8  # the host batch's


def embedder_for(encoder, mesh_, per_device: int, reader_threads: int) -> Embedder:
  """An `encoders.Encoder` as the embedding step: compiled, its parameters replicated over `mesh_`."""
  return Embedder(step=make_step(encoder.apply, mesh_), params=jax.device_put(encoder.params, mesh.replicated(mesh_)),
                  mesh=mesh_, size=encoder.size, dim=encoder.dim, per_device=per_device,
                  reader_threads=reader_threads, fit=encoder.fit, dtype=encoder.host_dtype)


def embed_units(embedder: Embedder, source: ImageSource, units: Sequence[Unit], cache: Cache, *, desc: str,
                extra: Callable[[Unit], dict] | None = None) -> dict:
  """Embeds this host's pending units into the cache (unit i belongs to host i mod hosts).

  Batches run across unit borders; a unit is committed (by a writer thread) as soon as its last row is
  back. Every host takes part in every step (the step is global), so a host with less work feeds padding.
  Returns {"images": embedded, "skipped": unreadable images (both over all hosts), "seconds": wall time}.
  """
  process, processes = jax.process_index(), jax.process_count()
  work = cache.pending([u for i, u in enumerate(units) if i % processes == process], process)
  pending, versions = [u for u, _ in work], [v for _, v in work]
  sizes = [len(u.positions) for u in pending]
  rows = np.concatenate([u.positions for u in pending]) if pending else np.zeros(0, np.int64)
  owner = np.repeat(np.arange(len(pending)), sizes)
  offset = np.cumsum([0] + sizes)
  local = mesh.local_batch(embedder.per_device)
  steps = mesh.max_over_hosts(-(-len(rows) // local))
  chunks = [np.arange(s * local, min((s + 1) * local, len(rows))) for s in range(steps)]
  bar = _progress(mesh.sum_over_hosts(len(rows)), desc)
  filled, left = {}, dict(enumerate(sizes))
  stats = {"images": 0, "skipped": 0, "seconds": 0.0}
  writer = concurrent.futures.ThreadPoolExecutor(max_workers=1)
  writes = []
  start = time.perf_counter()

  def finish(chunk, ok, result):
    out = mesh.to_local(result)[:len(chunk)]
    out[~ok] = np.nan
    for k in np.unique(owner[chunk]):
      mine = owner[chunk] == k
      array = filled.setdefault(k, np.full((sizes[k], embedder.dim), np.nan, np.float32))
      array[chunk[mine] - offset[k]] = out[mine]
      left[k] -= int(mine.sum())
      if left[k] == 0:
        writes.append(writer.submit(_commit, cache, pending[k], filled.pop(k), extra, process, versions[k]))
    stats["images"] += int(ok.sum())
    stats["skipped"] += int((~ok).sum())
    bar.update(len(chunk) * processes)

  reads = iter(()) if not len(rows) else read_units(source, [rows[c] for c in chunks if len(c)], embedder.size,
                                                    num_threads=embedder.reader_threads, fit=embedder.fit,
                                                    dtype=embedder.dtype)
  blank = np.zeros((local, embedder.size, embedder.size, 3), embedder.dtype)
  previous = None
  try:
    for chunk in chunks:
      images, ok = blank, np.zeros(0, bool)
      if len(chunk):
        read = next(reads)
        images = read["image"][np.minimum(np.arange(local), len(chunk) - 1)]  # padded by repeating the last row
        ok = read["ok"]
      result = embedder.step(embedder.params, mesh.to_global(embedder.mesh, images))  # asynchronous
      if previous is not None:
        finish(*previous)
      for w in [w for w in writes if w.done()]:  # a failed write stops the run now, not at the end
        w.result()
        writes.remove(w)
      previous = (chunk, ok, result)
    if previous is not None:
      finish(*previous)
    for w in writes:
      w.result()
  finally:
    writer.shutdown(wait=True)
    bar.close()
  stats["seconds"] = time.perf_counter() - start
  stats["images"], stats["skipped"] = (mesh.sum_over_hosts(stats[k]) for k in ("images", "skipped"))
  return stats


def _commit(cache: Cache, unit: Unit, array: np.ndarray, extra, process: int, version: int) -> None:
  try:
    cache.commit(unit.number, array, extra(unit) if extra else {}, process, version)
  except OSError as e:
    raise UserError(f"writing embedding unit {unit.number} to {cache.dir} failed ({e.strerror or e}); free space "
                    "or fix the directory and rerun the same command to continue") from None


def _progress(total: int, desc: str):
  from tqdm import tqdm

  return tqdm(total=total, disable=jax.process_index() != 0 or total == 0, unit="img", desc=desc, file=sys.stderr,
              dynamic_ncols=True, smoothing=0.1)
