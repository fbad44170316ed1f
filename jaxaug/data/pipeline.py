"""grain input pipelines: training batches and generation-source reads.

Every image is decoded and brought to `size` x `size` on the host by the
`images.fit_square` rule (JPEGs decoded at reduced scale first); the device
gets uint8 and does all augmentation.

Training (`train_batches`): index stream -> shuffle (a new order each epoch,
from `seed`) -> repeat -> this host's share (every `shard_count`-th element
from `shard_index`) -> decode + fit in `num_threads` threads -> fixed-size
batches of good images -> optional `num_workers` processes. Each batch is a
dict of `image` uint8 [B, size, size, 3], `label` int32 [B], `index` int64 [B]
(source indices, for ids). `get_state()` / `set_state()` give a JSON-able
checkpoint; resuming needs the same worker count (grain slices the stream by
worker).

Bad images: an unreadable, missing or corrupt image is skipped, logged with its
id and reason, and counted (`Batches.skipped`, kept in the checkpoint state);
its batch is filled from the next images. Only a long run of bad images in a
row (`max_bad_run`, a sign of a wrong data root) stops the run with a UserError.

Generation (`read_units`): reads given source indices unit by unit in threads,
ahead of the device; a bad image comes back as zeros with `ok` False.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import grain
import numpy as np
from absl import flags, logging

from jaxaug.data.images import BadImage, load_fit
from jaxaug.data.sources import FileSource, ImageSource
from jaxaug.errors import UserError


class Skipped(NamedTuple):
  """Marks a source image that could not be used."""
  index: int
  id: str
  reason: str


def load_example(source: ImageSource, size: int, index, fit: Callable | None = None) -> dict | Skipped:
  """One source index -> {'image', 'label', 'index'}, or Skipped if the image is bad. `fit` (encoded bytes or
  pixels -> the image array; default: `load_fit` to `size`) lets a scoring encoder prepare images its own way."""
  index = int(index)
  try:
    image = fit(source.read(index)) if fit else load_fit(source.read(index), size)
  except BadImage as e:
    return Skipped(index, source.id(index), str(e))
  return {"image": image, "label": np.int32(source.labels[index]), "index": np.int64(index)}


class _GoodBatchIterator(grain.DatasetIterator):
  """Fills each batch with good examples, passing the skipped ones along by id."""

  def __init__(self, parent, batch_size: int, drop_remainder: bool, max_bad_run: int):
    super().__init__(parent)
    self._batch_size = batch_size
    self._drop_remainder = drop_remainder
    self._max_bad_run = max_bad_run

  def __next__(self) -> dict:
    good, skipped, bad_run = [], [], 0
    while len(good) < self._batch_size:
      try:
        element = next(self._parent)
      except StopIteration:
        break
      if isinstance(element, Skipped):
        skipped.append(f"{element.id}: {element.reason}")
        bad_run += 1
        if bad_run >= self._max_bad_run:
          raise UserError(f"{bad_run} unreadable images in a row (last {skipped[-1]}): check the data root and files")
        continue
      bad_run = 0
      good.append(element)
    if not good or (self._drop_remainder and len(good) < self._batch_size):
      if skipped:  # still report what was skipped at the very end
        logging.warning("skipped %d unreadable images at the end of the data: %s", len(skipped), skipped[:5])
      raise StopIteration
    batch = {key: np.stack([e[key] for e in good]) for key in good[0]}
    batch["skipped"] = tuple(skipped)
    return batch

  def get_state(self):
    return self._parent.get_state()  # a batch never holds images over

  def set_state(self, state):
    self._parent.set_state(state)


class _GoodBatchIterDataset(grain.IterDataset):

  def __init__(self, parent, batch_size: int, drop_remainder: bool, max_bad_run: int):
    super().__init__(parent)
    self._args = (batch_size, drop_remainder, max_bad_run)

  def __iter__(self):
    return _GoodBatchIterator(self._parent.__iter__(), *self._args)


def batch_dataset(source: ImageSource, *, batch_size: int, size: int, seed: int | None = 0,
                  num_epochs: int | None = None, drop_remainder: bool = True,
                  shard_index: int = 0, shard_count: int = 1, num_threads: int = 4,
                  num_workers: int = 0, max_bad_run: int = 1000,
                  block: tuple[int, int] | None = None) -> grain.IterDataset:
  """The grain dataset behind `train_batches`; seed=None reads in source order. Hosts share training batches by
  blocks: `block` = (start, whole) reads positions [start, start + batch_size) of each run of `whole` (by default
  this host's equal part of the global batch, `shard_count` x `batch_size`)."""
  if len(source) == 0:
    raise UserError("the data source has no images: check its path and split")
  ds = grain.MapDataset.range(len(source))
  if seed is not None:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  if block is None and shard_count > 1 and drop_remainder:
    block = (shard_index * batch_size, shard_count * batch_size)
  if block is not None:
    ds = _host_blocks(ds, block[0], batch_size, block[1])
  else:  # one host, or one pass whose batches are summed (evaluation): any split of the images will do
    ds = ds[shard_index::shard_count]
  ds = ds.map(functools.partial(load_example, source, size))
  buffer = max(4 * num_threads, min(2 * batch_size, 256))  # keeps threads busy, bounds memory per worker
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=buffer))
  ds = _GoodBatchIterDataset(ds, batch_size, drop_remainder, max_bad_run)
  if num_workers > 0:
    _ensure_flags_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=2))
  return ds


def _host_blocks(ds: grain.MapDataset, start: int, size: int, whole: int) -> grain.MapDataset:
  """Positions [start, start + size) of each run of `whole`: a host's part of every global batch. Side by side,
  the hosts' batches are then one host's batch, image for image and position for position (the train step keys
  each image's augmentation by its position), so a run on 2 hosts takes the steps a run on 1 takes. Only whole
  global batches (as drop_remainder)."""
  if not 0 <= start < start + size <= whole:
    raise ValueError(f"block [{start}, {start + size}) is not within a batch of {whole}")
  return grain.MapDataset.range(len(ds) // whole * size).map(lambda j: ds[(j // size) * whole + start + j % size])


def _ensure_flags_parsed() -> None:
  """grain's worker processes read absl flags; outside an absl app (tests, notebooks) use defaults."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class Batches:
  """Iterator over batches that counts and logs skipped images and checkpoints its state."""

  def __init__(self, dataset: grain.IterDataset):
    self._iterator = iter(dataset)
    self.skipped = 0

  def __iter__(self) -> Batches:
    return self

  def __next__(self) -> dict:
    batch = next(self._iterator)
    skipped = batch.pop("skipped")
    batch = {key: np.asarray(value) for key, value in batch.items()}  # plain arrays, even from workers
    for entry in skipped:
      logging.warning("skipped unreadable image %s", entry)
    self.skipped += len(skipped)
    return batch

  def get_state(self) -> dict:
    return {"grain": self._iterator.get_state(), "skipped": self.skipped}

  def set_state(self, state: dict) -> None:
    self._iterator.set_state(state["grain"])
    self.skipped = int(state["skipped"])

  def close(self) -> None:
    close = getattr(self._iterator, "close", None)
    if close:
      close()


def _default_shard() -> tuple[int, int]:
  import jax
  return jax.process_index(), jax.process_count()


def train_batches(source: ImageSource, *, batch_size: int, size: int, seed: int,
                  num_epochs: int | None = None, num_threads: int = 4, num_workers: int = 0,
                  shard: tuple[int, int] | None = None, max_bad_run: int = 1000,
                  block: tuple[int, int] | None = None) -> Batches:
  """Shuffled, repeated, fixed-size batches for training; `batch_size` is per host.

  `shard` = (this host, host count), by default from jax.process_index/count; `block` as in `batch_dataset`.
  """
  shard_index, shard_count = shard or _default_shard()
  return Batches(batch_dataset(
      source, batch_size=batch_size, size=size, seed=seed, num_epochs=num_epochs,
      drop_remainder=True, shard_index=shard_index, shard_count=shard_count,
      num_threads=num_threads, num_workers=num_workers, max_bad_run=max_bad_run, block=block))


def eval_batches(source: ImageSource, *, batch_size: int, size: int, num_threads: int = 4,
                 num_workers: int = 0, shard: tuple[int, int] | None = None) -> Batches:
  """One pass in source order, last batch possibly short; this host's share only."""
  shard_index, shard_count = shard or _default_shard()
  return Batches(batch_dataset(
      source, batch_size=batch_size, size=size, seed=None, num_epochs=1, drop_remainder=False,
      shard_index=shard_index, shard_count=shard_count, num_threads=num_threads,
      num_workers=num_workers))


# ---------------------------------------------------------------------------
# Generation sources


def read_unit(source: ImageSource, size: int, indices: Sequence[int], fit: Callable | None = None,
              dtype=np.uint8) -> dict:
  """Source images for one generation unit: image [n, size, size, 3] of `dtype`, ok [n], index [n]."""
  indices = np.asarray(indices, np.int64)
  images = np.zeros((len(indices), size, size, 3), dtype)
  ok = np.ones(len(indices), bool)
  for k, index in enumerate(indices):
    example = load_example(source, size, index, fit)
    if isinstance(example, Skipped):
      logging.warning("skipped unreadable source image %s: %s", example.id, example.reason)
      ok[k] = False
    else:
      images[k] = example["image"]
  return {"image": images, "ok": ok, "index": indices}


def read_units(source: ImageSource, units: Iterable[Sequence[int]], size: int, *,
               num_threads: int = 4, prefetch: int = 4, fit: Callable | None = None, dtype=np.uint8) -> Iterator[dict]:
  """`read_unit` for each unit in order, `prefetch` units ahead in `num_threads` threads."""
  ds = grain.MapDataset.source([np.asarray(u, np.int64) for u in units])
  ds = ds.map(functools.partial(read_unit, source, size, fit=fit, dtype=dtype))
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)))


# ---------------------------------------------------------------------------
# Bench


def _photo_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """Colour fields plus grain; at 500x375, quality 90 about 105 KB, near ImageNet's mean JPEG."""
  from PIL import Image
  coarse = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
  smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32)
  return np.clip(smooth + rng.normal(0, 16, smooth.shape), 0, 255).astype(np.uint8)


def make_bench_images(directory: str, count: int, height: int, width: int, seed: int = 0) -> FileSource:
  """`count` photo-like JPEGs (quality 90) in one class folder, as a source."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(directory, "bench"), exist_ok=True)
  paths = []
  for i in range(count):
    path = f"bench/{i:05d}.jpg"
    Image.fromarray(_photo_like(rng, height, width)).save(os.path.join(directory, path), quality=90)
    paths.append(path)
  return FileSource(directory, paths, np.zeros(count, np.int32), ("bench",))


def bench_input(*, size: int = 224, image_hw: tuple[int, int] = (375, 500), num_images: int = 64,
                min_seconds: float = 3.0, batch_size: int = 32, num_workers: int | None = None) -> dict:
  """Decoded + resized images/s: on one core, and through the training pipeline.

  The default image is ImageNet's typical 500x375 JPEG. `per_core` is one
  thread in one process (divide a GPU's images/s by it for the cores needed);
  `pipeline` runs `train_batches` with `num_workers` processes (default: all
  cores) and one thread each.
  """
  cores = os.cpu_count() or 1
  num_workers = cores if num_workers is None else num_workers
  with tempfile.TemporaryDirectory() as directory:
    source = make_bench_images(directory, num_images, *image_hw)
    encoded = [source.read(i) for i in range(len(source))]
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
      for data in encoded:
        load_fit(data, size)
      done += len(encoded)
    per_core = done / (time.perf_counter() - start)

    batches = train_batches(source, batch_size=batch_size, size=size, seed=0, num_threads=1,
                            num_workers=num_workers, shard=(0, 1))
    for _ in range(2 * max(1, num_workers)):
      next(batches)  # start-up (worker processes, first buffers) is not throughput
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
      done += len(next(batches)["label"])
    pipeline = done / (time.perf_counter() - start)
    batches.close()
  return {
      "per_core_images_per_s": round(per_core, 1),
      "pipeline_images_per_s": round(pipeline, 1),
      "pipeline_workers": num_workers,
      "cores": cores,
      "size": size,
      "source_hw": list(image_hw),
      "mean_jpeg_kb": round(sum(map(len, encoded)) / len(encoded) / 1024, 1),
  }
