"""What to generate: a deterministic list of items, grouped into fixed-size units.

An item is one image to generate: (item_id, class, two same-class source images, method). The plan is a
pure function of the real source's labels and the config, so every host computes the same plan without
talking to the others, and a rerun computes the same plan again. Units are `unit_size` consecutive
items; a unit is the grain of work, of commit and of resume.

Policies, per method:
  fill_to N    each class gets max(N - real count, 0) items (ImageNet-LT: N = 1280)
  per_class K  each class gets K items (few-shot: K = 16)
  per_image K  each real image gets K items, with that image as the first source
Items are ordered by method, then class, then k. Source images are drawn from (seed, item_id) alone
(`item_uniform`): two distinct images of the class where it has two (the first fixed for per_image).
A class with no real images is refused under every policy: per_image would otherwise plan nothing for it
and leave a class the synthetic set silently lacks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxaug.errors import UserError

POLICIES = ("fill_to", "per_class", "per_image")


@dataclasses.dataclass(frozen=True)
class Plan:
  """Items as parallel arrays (a million items stay a few tens of MB)."""
  label: np.ndarray  # int32 [n]
  source: np.ndarray  # int64 [n, 2]: indices into the real source
  method: np.ndarray  # int32 [n]: index into `methods`
  methods: tuple[str, ...]
  unit_size: int

  def __len__(self) -> int:
    return len(self.label)

  @property
  def num_units(self) -> int:
    return -(-len(self) // self.unit_size)

  def unit_items(self, unit: int) -> np.ndarray:
    """Item ids of one unit (the last unit may be short)."""
    return np.arange(unit * self.unit_size, min((unit + 1) * self.unit_size, len(self)))


def per_class_amounts(counts: np.ndarray, policy: str, amount: int) -> np.ndarray:
  """Items to make per class for one method."""
  if policy == "fill_to":
    return np.maximum(amount - counts, 0)
  if policy == "per_class":
    return np.full_like(counts, amount)
  if policy == "per_image":
    return counts * amount
  raise UserError(f"unknown plan policy '{policy}'; choose one of {', '.join(POLICIES)}")


def make_plan(labels: np.ndarray, num_classes: int, methods: tuple[str, ...], policy: str, amount: int, seed: int,
              unit_size: int, class_names: Sequence[str] | None = None) -> Plan:
  """The plan for a real source with these labels (see the module docstring); `class_names` name refused classes."""
  if amount < 0:
    raise UserError(f"plan amount must be >= 0, not {amount}")
  if unit_size < 1:
    raise UserError(f"unit_size must be >= 1, not {unit_size}")
  labels = np.asarray(labels, np.int64)
  counts = np.bincount(labels, minlength=num_classes)
  amounts = per_class_amounts(counts, policy, amount)
  check_no_empty_class(counts, class_names)
  members = [np.flatnonzero(labels == c) for c in range(num_classes)]
  out_label, out_first, out_method = [], [], []
  for m in range(len(methods)):
    for c in range(num_classes):
      n = int(amounts[c])
      out_label.append(np.full(n, c, np.int32))
      out_method.append(np.full(n, m, np.int32))
      # per_image: the k-th batch of items walks the class's images in order; otherwise drawn below.
      out_first.append(np.repeat(members[c], amount) if policy == "per_image" else np.full(n, -1, np.int64))
  label = np.concatenate(out_label) if out_label else np.zeros(0, np.int32)
  method = np.concatenate(out_method) if out_method else np.zeros(0, np.int32)
  first = np.concatenate(out_first) if out_first else np.zeros(0, np.int64)
  source = np.stack([first, first], axis=1)
  items = np.arange(len(label), dtype=np.uint64)
  for c in np.unique(label):
    rows = np.flatnonzero(label == c)
    pool = members[c]
    n = len(pool)
    if policy == "per_image":
      pos1 = np.searchsorted(pool, source[rows, 0])
    else:
      pos1 = (item_uniform(seed, items[rows], 0) * n).astype(np.int64)
    # The second source: another image of the class, uniformly among the other n - 1 (itself if n == 1).
    offset = 1 + (item_uniform(seed, items[rows], 1) * max(n - 1, 1)).astype(np.int64)
    pos2 = np.where(n > 1, (pos1 + offset) % n, pos1)
    source[rows, 0], source[rows, 1] = pool[pos1], pool[pos2]
  return Plan(label=label, source=source, method=method, methods=tuple(methods), unit_size=unit_size)


def check_no_empty_class(counts: np.ndarray, class_names: Sequence[str] | None = None) -> None:
  """UserError naming the first class without real images: nothing to condition on, whatever the policy."""
  empty = np.flatnonzero(np.asarray(counts) == 0)
  if not len(empty):
    return
  first = int(empty[0])
  named = f"class {first} ({class_names[first]!r})" if class_names is not None else f"class {first}"
  raise UserError(f"{named} has no real images to condition on ({len(empty)} such class(es)); remove them from the "
                  "source (an empty class folder: delete it) or check the split")


def item_uniform(seed: int, items: np.ndarray, stream: int) -> np.ndarray:
  """A uniform [0, 1) number per (seed, item, stream): splitmix64 of the three, vectorised and host-independent."""
  with np.errstate(over="ignore"):
    x = items.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x ^= np.uint64(seed & 0xFFFFFFFF) * np.uint64(0xBF58476D1CE4E5B9) + np.uint64(stream) * np.uint64(0x94D049BB133111EB)
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
      x = (x ^ (x >> np.uint64(shift))) * np.uint64(mult)
    x ^= x >> np.uint64(31)
  return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def host_units(plan: Plan, done: set[int], process_index: int, process_count: int) -> list[int]:
  """The pending units of one host: unit u belongs to host u mod process_count."""
  return [u for u in range(process_index, plan.num_units, process_count) if u not in done]
