"""The synthetic dataset format: ArrayRecord shards, one per unit, committed atomically.

    out/
      shards/unit-00000012.array_record   one record per image (msgpack, see `encode_record`)
      done_units.jsonl                    one line per committed unit: unit, shard, item ids, labels, methods
                                          (done_units.pN.jsonl from process N > 0 of a multi-host run)
      dataset_info.json                   classes, counts, config, versions
      config.json, contact_sheet.png, images/<class>/<item>.png (optional)
      damaged/unit-00000004.array_record  a shard that failed its check, set aside by generate to be made again

A unit's shard is written under a temporary name, fsynced and renamed, and only then recorded as done,
so a kill at any instant leaves either the whole unit or nothing visible. The shard files are the
authority: a unit whose shard exists but whose line is missing (a kill between rename and record) is
recorded again from the shard on the next start. Records are readable by grain's ArrayRecordDataSource
(`decode_record` turns the bytes into a dict).

Every record is stored with a checksum. A damaged record (flipped bytes on disk) fails its read with
`DamagedShard`, one line naming the shard and unit; `python -m jaxaug.generate` rerun on the directory reads
every finished shard (`damaged_shards`), moves the damaged ones to damaged/ (`set_aside`) and makes them again.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter
from flax import serialization

from jaxaug.data.sources import ImageSource, _check_index
from jaxaug.errors import UserError
from jaxaug.fsutil import append_line, as_os_error, atomic_write_text, fsync_dir

SHARDS = "shards"
DONE = "done_units.jsonl"
DONE_GLOB = "done_units*.jsonl"
INFO = "dataset_info.json"
DAMAGED = "damaged"
_SHARD_RE = re.compile(r"^unit-(\d{8})\.array_record$")
_TMP_GLOB = ".*.tmp*"  # fsutil's `.NAME.tmp-PID`, and the `.NAME.tmp` of earlier versions


def shard_name(unit: int) -> str:
  return f"unit-{unit:08d}.array_record"


def encode_record(image: bytes, label: int, class_name: str, item_id: int, provenance: dict) -> bytes:
  """One image's record: encoded image bytes, label, class name, item id and provenance."""
  return serialization.msgpack_serialize({"image": image, "label": int(label), "class_name": class_name,
                                          "item_id": int(item_id), "provenance": provenance})


def decode_record(data: bytes) -> dict:
  return serialization.msgpack_restore(data)


def done_file(process: int) -> str:
  """Each process appends to its own done record, so hosts never interleave writes to one file."""
  return DONE if process == 0 else f"done_units.p{process}.jsonl"


def write_unit(out: str | os.PathLike, unit: int, records: list[bytes], process: int = 0) -> Path:
  """Commits one unit of encoded records: shard under a temporary name, fsync, rename, then the done line.

  A failed write (a full disk at any record or at close) removes the temporary and raises OSError naming the shard.
  """
  shards = Path(out) / SHARDS
  shards.mkdir(parents=True, exist_ok=True)
  final = shards / shard_name(unit)
  tmp = shards / f".{final.name}.tmp-{os.getpid()}"
  try:
    _write_shard(tmp, records)
    os.replace(tmp, final)
  except BaseException as e:
    tmp.unlink(missing_ok=True)
    if isinstance(e, OSError):  # name the shard being written, not its temporary
      e.filename, e.filename2 = os.fspath(final), None
    raise
  fsync_dir(shards)
  _append_done(Path(out) / done_file(process), unit, records)
  return final


def _write_shard(path: Path, records: list[bytes]) -> None:
  """The records as an fsynced ArrayRecord file. The writer buffers, so a full disk may first show at close; its
  RuntimeError becomes the OSError it reports, as a full disk in any other write."""
  try:
    writer = ArrayRecordWriter(str(path), "group_size:1")
    try:
      for record in records:
        writer.write(record)
    finally:
      writer.close()
  except RuntimeError as e:
    raise as_os_error(e, path) from None
  with open(path, "rb+") as f:
    os.fsync(f.fileno())


def _append_done(path: Path, unit: int, records: list[bytes]):
  """The done line indexes the unit (items, labels, methods), so readers never open a shard to list it."""
  rows = [decode_record(r) for r in records]
  line = json.dumps({"unit": unit, "shard": shard_name(unit), "item_ids": [r["item_id"] for r in rows],
                     "labels": [r["label"] for r in rows],
                     "methods": [r["provenance"].get("method", "") for r in rows]})
  append_line(path, line)


def read_shard(path: Path) -> list[bytes]:
  reader = ArrayRecordReader(str(path))
  try:
    return reader.read_all()
  finally:
    reader.close()


def recover(out: str | os.PathLike) -> dict[int, dict]:
  """Committed units by number, after tidying what a kill can leave behind.

  Removes every writer's temporaries, drops a torn last line of each done record, and re-records units
  whose shard was renamed but not yet recorded. Call once at start, from one process per output directory,
  while no other process writes there (generate holds the directory's locks).
  """
  out = Path(out)
  remove_temporaries(out)
  shards = out / SHARDS
  if not shards.is_dir():
    return {}
  done = read_done(out, repair=True)
  for unit in sorted(shard_units(out) - set(done)):
    _append_done(out / DONE, unit, read_shard(shards / shard_name(unit)))
  return committed(out)


def shard_units(out: str | os.PathLike) -> set[int]:
  """Units whose shard file exists (the authority on what is finished)."""
  shards = Path(out) / SHARDS
  if not shards.is_dir():
    return set()
  return {int(m.group(1)) for p in shards.iterdir() if (m := _SHARD_RE.match(p.name))}


def committed(out: str | os.PathLike) -> dict[int, dict]:
  """Done records whose shard exists: a unit whose shard was deleted is made again by the next run."""
  on_disk = shard_units(out)
  return {u: e for u, e in read_done(out).items() if u in on_disk}


def temporaries(out: str | os.PathLike) -> list[Path]:
  """What a kill inside a write can leave: `.NAME.tmp-PID` files (shards, dataset_info.json, config.json, the
  contact sheet, image files) in the directory, its shards/ and its images/<class>/ folders."""
  out = Path(out)
  folders = [out, out / SHARDS, *(p for p in (out / "images").glob("*") if p.is_dir())]
  return sorted(p for folder in folders if folder.is_dir() for p in folder.glob(_TMP_GLOB) if p.is_file())


def remove_temporaries(out: str | os.PathLike) -> None:
  for tmp in temporaries(out):
    tmp.unlink(missing_ok=True)


def read_done(out: str | os.PathLike, repair: bool = False) -> dict[int, dict]:
  """The done records of all processes as {unit: entry}; `repair` (recover only) cuts torn last lines."""
  entries = {}
  for path in sorted(Path(out).glob(DONE_GLOB)):
    entries.update(_read_done_file(path, repair))
  return entries


def _read_done_file(path: Path, repair: bool) -> dict[int, dict]:
  """One done record; a torn final line (killed mid-append) is ignored, and removed when repairing."""
  entries, good_bytes = {}, 0
  with open(path, "rb") as f:
    for raw in f:
      try:
        entry = json.loads(raw)
      except json.JSONDecodeError:
        break
      if not raw.endswith(b"\n"):
        break
      entries[entry["unit"]] = entry
      good_bytes += len(raw)
  if repair and good_bytes != path.stat().st_size:
    with open(path, "rb+") as f:
      f.truncate(good_bytes)
  return entries


def write_info(out: str | os.PathLike, info: dict):
  """dataset_info.json, written atomically (it is rewritten as units complete)."""
  path = Path(out) / INFO
  path.parent.mkdir(parents=True, exist_ok=True)
  atomic_write_text(path, json.dumps(info, indent=2, sort_keys=True))


def read_info(out: str | os.PathLike) -> dict:
  path = Path(out) / INFO
  if not path.is_file():
    raise UserError(f"{out} is not a jaxaug synthetic dataset (no {INFO}); point it at a `python -m "
                    "jaxaug.generate` output directory")
  try:
    info = json.loads(path.read_bytes())
    if not isinstance(info, dict) or not isinstance(info.get("class_names"), list):
      raise ValueError("no class_names in it")
  except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
    raise UserError(f"{path} is unreadable ({type(e).__name__}: {e}): rerun the `python -m jaxaug.generate` command "
                    "that made this set, which writes it again at start and keeps the finished units") from None
  return info


def _shard_problem(path: str, expected: int) -> str | None:
  """What is wrong with one shard, or None: it opens and holds the records its done line lists."""
  if not os.path.exists(path):
    return "is missing"
  try:
    reader = ArrayRecordReader(path)
    try:
      found = reader.num_records()
    finally:
      reader.close()
  except RuntimeError as e:
    return f"is damaged ({str(e).strip() or 'no readable index: truncated'})"
  return None if found == expected else f"is damaged (holds {found} of its {expected} records: truncated)"


def _one_line(error: Exception) -> str:
  return " ".join(str(error).split()) or type(error).__name__


def shard_damage(path: str | os.PathLike, expected: int | None) -> str | None:
  """What is wrong with a finished shard, reading every record (each is checked against its checksum), or None.

  `expected`: the record count its done line lists (None where the line is missing). Records are read one at a
  time, so a shard of large images never sits in memory whole.
  """
  try:
    reader = ArrayRecordReader(os.fspath(path), "max_parallelism:1")
    try:
      found = reader.num_records()
      for _ in range(found):
        reader.read()
    finally:
      reader.close()
  except RuntimeError as e:
    return f"is unreadable ({_one_line(e)})"
  if expected is not None and found != expected:
    return f"holds {found} of the {expected} records its done line lists"
  return None


def damaged_shards(out: str | os.PathLike, units, num_threads: int = 8) -> dict[int, str]:
  """{unit: what is wrong} for those of `units` whose shard fails `shard_damage`."""
  from concurrent.futures import ThreadPoolExecutor

  out, units = Path(out), sorted(units)
  done = read_done(out)
  expected = [len(done[u]["item_ids"]) if u in done else None for u in units]
  paths = [out / SHARDS / shard_name(u) for u in units]
  with ThreadPoolExecutor(max(1, num_threads)) as pool:
    problems = list(pool.map(shard_damage, paths, expected))
  return {u: problem for u, problem in zip(units, problems) if problem}


def set_aside(out: str | os.PathLike, unit: int) -> Path:
  """Moves a unit's shard to damaged/ (kept for inspection, never deleted), so the next run makes the unit again.

  Its done line stays (`committed` skips a unit without a shard); the remade unit records the same line again.
  """
  out = Path(out)
  folder = out / DAMAGED
  folder.mkdir(exist_ok=True)
  target, n = folder / shard_name(unit), 0
  while target.exists():
    n += 1
    target = folder / f"{shard_name(unit)}.{n}"
  os.replace(out / SHARDS / shard_name(unit), target)
  fsync_dir(out / SHARDS)
  fsync_dir(folder)
  return target


class DamagedShard(UserError, RuntimeError):
  """A record that fails its checksum: one line for the entry points (a UserError), and still the RuntimeError
  that callers drawing around unreadable images (the contact sheet) catch."""


class SyntheticSource(ImageSource):
  """A generated dataset as an `ImageSource`: items ordered by unit, then by position in the unit."""

  def __init__(self, out: str | os.PathLike):
    self.out = Path(out)
    self.info = read_info(self.out)
    self.class_names = tuple(self.info["class_names"])
    done = read_done(self.out)
    self._units = sorted(done)
    self.item_ids = np.array([i for u in self._units for i in done[u]["item_ids"]], np.int64)
    self.labels = np.array([l for u in self._units for l in done[u]["labels"]], np.int32)
    self.methods = np.array([m for u in self._units for m in done[u]["methods"]], dtype=object)
    self._paths = [str(self.out / SHARDS / done[u]["shard"]) for u in self._units]
    self._starts = np.cumsum([0] + [len(done[u]["item_ids"]) for u in self._units])
    self._source = None

  @property
  def units_done(self) -> int:
    return len(self._units)

  def check_shards(self, num_threads: int = 16) -> None:
    """UserError naming the first shard that is missing, unreadable or short of its records (its index only;
    a damaged record fails when read, see `record`)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(num_threads) as pool:
      problems = list(pool.map(_shard_problem, self._paths, np.diff(self._starts).tolist()))
    bad = [(unit, path, problem) for unit, path, problem in zip(self._units, self._paths, problems) if problem]
    if bad:
      unit, path, problem = bad[0]
      more = f" ({len(bad)} shards in all)" if len(bad) > 1 else ""
      raise UserError(f"synthetic set {self.out}: shard {Path(path).name} {problem}{more}; rerun the `python -m "
                      "jaxaug.generate` command that made this set, which checks every shard's records, moves damaged "
                      f"shards to {self.out / DAMAGED}/ and makes them again")

  def _records(self):
    if self._source is None:  # opened lazily so the source pickles cheaply into grain workers
      import grain

      # Each shard's range comes from its done line, so a short shard fails when read instead of
      # silently shifting every later record onto the wrong label.
      ranges = [f"{path}[0:{n}]" for path, n in zip(self._paths, np.diff(self._starts).tolist())]
      self._source = grain.sources.ArrayRecordDataSource(ranges)
    return self._source

  def __getstate__(self):
    return {**self.__dict__, "_source": None}

  def record(self, index: int) -> dict:
    """One record as a dict; `DamagedShard` (one line: shard, unit, how to repair) where it fails its checksum."""
    index = _check_index(index, len(self))
    records = self._records()
    try:
      data = records[index]
    except RuntimeError as e:
      raise DamagedShard(self._damaged(index, e)) from None
    return decode_record(data)

  def _damaged(self, index: int, error: Exception) -> str:
    at = int(np.searchsorted(self._starts, index, side="right")) - 1
    return (f"synthetic set {self.out}: shard {Path(self._paths[at]).name} (unit {self._units[at]}) is damaged: its "
            f"record {index - int(self._starts[at])} cannot be read ({_one_line(error)}); rerun the `python -m "
            f"jaxaug.generate` command that made this set, which checks every shard's records, moves damaged shards "
            f"to {self.out / DAMAGED}/ and makes them again")

  def read(self, index: int) -> bytes:
    return self.record(index)["image"]

  def id(self, index: int) -> str:
    return f"item-{int(self.item_ids[_check_index(index, len(self))])}"

  def ids(self) -> list[str]:
    return [f"item-{int(i)}" for i in self.item_ids]

  def provenance(self, index: int) -> dict:
    return self.record(index)["provenance"]
