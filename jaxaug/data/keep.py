"""Keep lists: the images of a synthetic set to train on, as `python -m jaxaug.score --config.keep=RULE` chose them.

    <synthetic>/keep-<encoder>-<rule>.json
      format, version        "jaxaug keep list", 1
      synthetic              the set's directory when the list was written (for people; the set may move)
      set                    fingerprint: SHA-256 of the set's config.json "fingerprint" ('' for a set without
                             one), class_names, images: what `read` checks the list against
      rule, encoder, k       the keep rule, the encoder whose embeddings voted, the votes' k
      counts                 images, kept, dropped (unreadable images are dropped and also counted apart), and
                             per class {"kept", "dropped"}
      kept, dropped          item ids (the set's stable ids: `SyntheticSource.item_ids`, ids `item-<id>`), sorted

Every image of the set is in exactly one of kept and dropped, so a set that gained or lost images since it
was scored is caught (`read`), as is a list of another set.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from jaxaug.errors import UserError
from jaxaug.fsutil import atomic_write_text

FORMAT = "jaxaug keep list"
VERSION = 1


def file_name(encoder: str, rule: str) -> str:
  return f"keep-{encoder}-{rule.replace('=', '-')}.json"


def fingerprint_digest(fingerprint: dict | None) -> str:
  """A set's identity from its config.json "fingerprint" (seed, model, sampler, ...); '' where it has none."""
  if not fingerprint:
    return ""
  return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def generation_fingerprint(synthetic_dir: str | os.PathLike) -> dict | None:
  """The "fingerprint" of a set's config.json; None where it has none (a hand-made set) or it is unreadable."""
  try:
    fingerprint = json.loads((Path(synthetic_dir) / "config.json").read_text())["fingerprint"]
  except (OSError, ValueError, KeyError, TypeError):
    return None
  return fingerprint if isinstance(fingerprint, dict) else None


def write(path: Path, *, synthetic_dir: Path, fingerprint: dict | None, class_names, item_ids: np.ndarray,
          labels: np.ndarray, scored: np.ndarray, keep: np.ndarray, rule: str, encoder: str, k: int) -> dict:
  """Writes the keep list (atomically) and returns its counts. `item_ids` / `labels`: every image of the set;
  `scored`: those that were embedded (readable); `keep`: per scored image, kept or not."""
  item_ids, labels = np.asarray(item_ids, np.int64), np.asarray(labels)
  kept_mask = np.zeros(len(item_ids), bool)
  kept_mask[np.flatnonzero(np.isin(item_ids, np.asarray(scored)[np.asarray(keep, bool)]))] = True
  per_class = {name: {"kept": int((kept_mask & (labels == c)).sum()), "dropped": int((~kept_mask & (labels == c)).sum())}
               for c, name in enumerate(class_names)}
  counts = {"images": len(item_ids), "kept": int(kept_mask.sum()), "dropped": int((~kept_mask).sum()),
            "unreadable": int(len(item_ids) - len(scored)), "classes": per_class}
  record = {"format": FORMAT, "version": VERSION, "synthetic": str(synthetic_dir),
            "set": {"fingerprint": fingerprint_digest(fingerprint), "class_names": list(class_names),
                    "images": len(item_ids)},
            "rule": rule, "encoder": encoder, "k": int(k), "counts": counts,
            "kept": sorted(item_ids[kept_mask].tolist()), "dropped": sorted(item_ids[~kept_mask].tolist())}
  atomic_write_text(path, json.dumps(record))
  return counts


def read(path: str | os.PathLike, synthetic, where: str) -> tuple[np.ndarray, dict]:
  """(kept: bool per image of `synthetic`, a SyntheticSource; the list's rule, encoder, k and counts), after
  checking that the list belongs to this set as it is now; UserError (one line) otherwise."""
  path = Path(os.path.expanduser(path))
  again = (f"write one with `python -m jaxaug.score --config.synthetic={where} --config.keep=RULE` and pass the file "
           "it names to --config.synthetic_keep")
  try:
    record = json.loads(path.read_text())
    if not isinstance(record, dict) or record.get("format") != FORMAT:
      raise ValueError("not a jaxaug keep list")
    kept, dropped, made_for = record["kept"], record["dropped"], record["set"]
  except FileNotFoundError:
    raise UserError(f"keep list {path} does not exist: {again}") from None
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f"keep list {path} is unreadable ({type(e).__name__}: {e}): {again}") from None
  if list(made_for.get("class_names", [])) != list(synthetic.class_names):
    raise UserError(f"keep list {path} was written for a set with other classes than {where}: {again}")
  if made_for.get("fingerprint", "") != fingerprint_digest(generation_fingerprint(synthetic.out)):
    raise UserError(f"keep list {path} was written for another synthetic set than {where} (its generation config "
                    f"differs): {again}")
  listed = np.asarray(sorted(kept) + sorted(dropped), np.int64)
  ids = np.asarray(synthetic.item_ids, np.int64)
  missing, extra = np.setdiff1d(ids, listed), np.setdiff1d(listed, ids)
  if len(missing) or len(extra) or len(listed) != len(np.unique(listed)):
    raise UserError(f"keep list {path} lists {len(listed)} images but {where} holds {len(ids)} ({len(missing)} of them "
                    f"not in the list, {len(extra)} listed ones not in the set): the set changed since it was scored; {again}")
  about = {k: record.get(k) for k in ("rule", "encoder", "k")}
  return np.isin(ids, np.asarray(kept, np.int64)), {"file": str(path), **about}
