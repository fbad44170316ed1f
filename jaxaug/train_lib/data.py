"""Training input: real + synthetic images mixed per batch or swapped per sample, and padded eval batches.

Two ways to mix (method.md, Downstream training):

  batch  every batch holds a fixed number of synthetic images from a shuffled pass over the synthetic
         set; the rest are real images drawn at random (ImageNet-LT: half and half).
  swap   each sample of a shuffled real stream is replaced, with probability p, by a random
         synthetic image of the same class (few-shot, DA-Fusion: p = 0.5).

Both are grain pipelines whose state goes into the checkpoint, so a resumed run reads exactly the
batches an uninterrupted run would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from jaxaug.data import pipeline
from jaxaug.data.sources import ImageSource, Subset, _check_index
from jaxaug.errors import UserError

MIXES = ("batch", "swap")


class ArraySource(ImageSource):
  """Images already in memory (uint8 [N, H, W, 3] or [N, H, W]) as a source; ids are `array/<index>`."""

  def __init__(self, images, labels, class_names: Sequence[str]):
    self.images = np.asarray(images, np.uint8)
    self.labels = np.asarray(labels, np.int32)
    self.class_names = tuple(class_names)
    if len(self.images) != len(self.labels):
      raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

  def read(self, index: int) -> np.ndarray:
    return self.images[_check_index(index, len(self))]

  def id(self, index: int) -> str:
    return f"array/{_check_index(index, len(self))}"


def check_classes(real: ImageSource, synthetic: ImageSource, where: str) -> None:
  """A synthetic set must label images with the real source's classes, in the same order."""
  if tuple(synthetic.class_names) != tuple(real.class_names):
    diff = next((i for i, (a, b) in enumerate(zip(real.class_names, synthetic.class_names)) if a != b),
                min(len(real.class_names), len(synthetic.class_names)))
    got = synthetic.class_names[diff] if diff < len(synthetic.class_names) else "nothing"
    want = real.class_names[diff] if diff < len(real.class_names) else "nothing"
    raise UserError(f"synthetic set {where} has {len(synthetic.class_names)} classes and the real source "
                    f"{len(real.class_names)}; class {diff} is {got!r} there but {want!r} here: generate it from "
                    "this real source (or point --config.synthetic at the right directory)")


def check_no_empty_class(source: ImageSource, where: str) -> None:
  """Every class needs real training images (Balanced Softmax takes the log of the counts)."""
  counts = source.counts()
  if (empty := np.flatnonzero(counts == 0)).size:
    c = int(empty[0])
    raise UserError(f"class {c} ({source.class_names[c]!r}) has no training images in {where} "
                    f"({empty.size} empty classes): add images or use a source without empty classes")


def select_synthetic(synthetic, method: str, keep: np.ndarray | None, where: str) -> ImageSource:
  """The synthetic images to train on: those made with one conditioning method ('' for all) that a keep list keeps
  (`keep`: bool per image, None for all), from the done record's index (no shard read)."""
  chosen = np.ones(len(synthetic), bool) if keep is None else np.asarray(keep, bool)
  if method:
    made = synthetic.methods == method
    if not made.any():
      raise UserError(f"synthetic set {where} has no images made with method {method!r}: "
                      "set --config.synthetic_method to one it holds, or '' for all")
    chosen = chosen & made
  return synthetic if chosen.all() else Subset(synthetic, np.flatnonzero(chosen))


class SwapStream(ImageSource):
  """The swap mix as one source read in order: entry n is the n-th training sample.

  Epoch e is `default_rng([seed, e])`'s permutation of the real images; each sample is swapped
  with probability p for a uniform synthetic image of its class (classes without synthetic
  images stay real). Epochs are drawn independently, so a longer run keeps the same prefix.
  """

  def __init__(self, real: ImageSource, synthetic: ImageSource, p: float, seed: int, length: int):
    self.real, self.synthetic = real, synthetic
    self.class_names = real.class_names
    n_real = len(real)
    by_class = np.argsort(synthetic.labels, kind="stable")
    syn_counts = np.bincount(synthetic.labels, minlength=real.num_classes)
    syn_starts = np.concatenate([[0], np.cumsum(syn_counts)[:-1]])
    chunks = []
    for epoch in range(math.ceil(length / n_real)):
      rng = np.random.default_rng([seed, epoch])
      order = rng.permutation(n_real)
      labels = real.labels[order]
      swap = (rng.random(n_real) < p) & (syn_counts[labels] > 0)
      pick = syn_starts[labels] + np.floor(rng.random(n_real) * syn_counts[labels]).astype(np.int64)
      chunks.append(np.where(swap, n_real + by_class[np.minimum(pick, len(by_class) - 1)], order))
    self.entries = np.concatenate(chunks)[:length]  # < n_real: a real index; else n_real + synthetic index
    self.labels = np.concatenate([real.labels, synthetic.labels])[self.entries]

  def read(self, index: int):
    entry = int(self.entries[index])
    if entry < len(self.real):
      return self.real.read(entry)
    return self.synthetic.read(entry - len(self.real))

  def id(self, index: int) -> str:
    entry = int(self.entries[_check_index(index, len(self))])
    if entry < len(self.real):
      return f"real:{self.real.id(entry)}"
    return f"synthetic:{self.synthetic.id(entry - len(self.real))}"


class TrainInput:
  """Fixed-size host batches from one or more named streams, concatenated in name order."""

  def __init__(self, streams: dict[str, pipeline.Batches]):
    self.streams = dict(sorted(streams.items()))

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    parts = [next(s) for s in self.streams.values()]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("image", "label")}

  def get_state(self) -> dict:
    return {name: s.get_state() for name, s in self.streams.items()}

  def set_state(self, state: dict) -> None:
    for name, s in self.streams.items():
      s.set_state(state[name])

  def close(self) -> None:
    for s in self.streams.values():
      s.close()


def synthetic_per_batch(mix: str, fraction: float, batch: int, has_synthetic: bool) -> int:
  """Synthetic images in each global batch for the batch mix (0 for the swap mix or without a set)."""
  if not has_synthetic or mix != "batch":
    return 0
  return int(round(fraction * batch))


def train_input(real: ImageSource, synthetic: ImageSource | None, *, mix: str, fraction: float,
                batch_size: int, total_steps: int, size: int, seed: int, shard: tuple[int, int],
                num_threads: int, num_workers: int) -> TrainInput:
  """The training stream for this host; `batch_size` is per host and `shard` = (host, hosts)."""
  common = dict(size=size, num_threads=num_threads, num_workers=num_workers, shard=shard)
  if synthetic is None:
    return TrainInput({"real": pipeline.train_batches(real, batch_size=batch_size, seed=seed, **common)})
  if mix == "swap":
    stream = SwapStream(real, synthetic, fraction, seed, total_steps * batch_size * shard[1])
    batches = pipeline.batch_dataset(
        stream, batch_size=batch_size, size=size, seed=None, num_epochs=None, drop_remainder=True,
        shard_index=shard[0], shard_count=shard[1], num_threads=num_threads, num_workers=num_workers)
    return TrainInput({"swap": pipeline.Batches(batches)})
  # The global batch is [real, then n_syn synthetic] (TrainInput's name order), as on one host; this host reads
  # its block of it, which may hold only real images, only synthetic ones, or both: each stream gives this host
  # its part of that stream's share of every global batch.
  host, hosts = shard
  whole = batch_size * hosts
  n_syn = synthetic_per_batch(mix, fraction, whole, True)
  n_real = whole - n_syn
  lo, hi = host * batch_size, (host + 1) * batch_size  # this host's block of the global batch
  real_end, syn_start = min(hi, n_real), max(lo, n_real)  # where its real part ends and its synthetic part starts
  streams = {}
  if real_end > lo:
    streams["real"] = pipeline.train_batches(real, batch_size=real_end - lo, seed=seed,
                                             block=(lo, n_real) if hosts > 1 else None, **common)
  if hi > syn_start:
    streams["synthetic"] = pipeline.train_batches(synthetic, batch_size=hi - syn_start, seed=seed + 1,
                                                  block=(syn_start - n_real, n_syn) if hosts > 1 else None, **common)
  return TrainInput(streams)


def eval_input(source: ImageSource, *, batch_size: int, size: int, shard: tuple[int, int], num_threads: int):
  """This host's share of one pass, in `eval_steps` batches of exactly `batch_size` with a `mask`.

  Every host yields the same number of batches (the last ones padded), so the collective eval step
  runs in lock-step on all of them.
  """
  batches = pipeline.eval_batches(source, batch_size=batch_size, size=size, num_threads=num_threads, shard=shard)
  for _ in range(eval_steps(len(source), batch_size, shard[1])):
    images = np.zeros((batch_size, size, size, 3), np.uint8)
    labels = np.zeros(batch_size, np.int32)
    mask = np.zeros(batch_size, bool)
    batch = next(batches, None)
    if batch is not None:
      n = len(batch["label"])
      images[:n], labels[:n], mask[:n] = batch["image"], batch["label"], True
    yield {"image": images, "label": labels, "mask": mask}
  batches.close()


def eval_steps(num_images: int, batch_size: int, hosts: int) -> int:
  return max(1, math.ceil(math.ceil(num_images / hosts) / batch_size))
