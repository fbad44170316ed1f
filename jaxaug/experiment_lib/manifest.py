"""manifest.jsonl: the finished cells of an experiment, one JSON line each, appended and fsynced.

A cell is recorded only after its own outputs are complete (a generated set with every unit committed, a
training run's metrics.json written), so after a kill at any instant the manifest lists work that is truly
done; a cell in flight is not listed and its stage resumes it from its own state (generation units, training
checkpoints). A torn last line (the kill hit the append) is dropped on open. Each entry keeps the cell's config
fingerprint, so a finished cell is never silently reused under another config.
"""

from __future__ import annotations

import json
from pathlib import Path

from jaxaug import fsutil
from jaxaug.errors import UserError

NAME = "manifest.jsonl"


class Manifest:
  def __init__(self, out: Path):
    self.path = Path(out) / NAME
    self.entries: dict[str, dict] = {}
    if self.path.is_file():
      lines = self.path.read_text().splitlines()
      good = []
      for line in lines:
        try:
          entry = json.loads(line)
          self.entries[entry["key"]] = entry
          good.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
          continue  # a torn append from a kill: that cell was not finished
      if len(good) != len(lines):
        fsutil.atomic_write_text(self.path, "".join(l + "\n" for l in good))

  def done(self, key: str) -> dict | None:
    return self.entries.get(key)

  def check(self, key: str, fingerprint: dict) -> None:
    """A finished cell whose config now differs is a user error (its result belongs to the old config)."""
    entry = self.entries.get(key)
    if entry is None:
      return
    before, now = entry.get("fingerprint"), json.loads(json.dumps(fingerprint))
    if before != now:
      changed = sorted(k for k in set(before or {}) | set(now) if (before or {}).get(k) != now.get(k))
      raise UserError(f"{key} in {self.path.parent} was finished with another config ({', '.join(changed[:4])} "
                      "changed): rerun with the same config to continue, or use a new --config.output.dir")

  def record(self, entries: list[dict]) -> None:
    """Appends finished cells in one write (a group's runs finish together), then fsyncs."""
    if not entries:
      return
    text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    fsutil.append_line(self.path, text.rstrip("\n"))
    for line in text.splitlines():  # as a later run will read them back, key order included
      entry = json.loads(line)
      self.entries[entry["key"]] = entry

