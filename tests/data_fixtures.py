"""Tiny real image files and datasets for the data tests: folders, an ImageNet tree, TFDS records."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

WNIDS = ("n01440764", "n01443537", "n01484850")
WNID_NAMES = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
              "n01484850": "great white shark"}


def encode(image: np.ndarray, fmt: str = "JPEG") -> bytes:
  buffer = io.BytesIO()
  options = {"quality": 95} if fmt == "JPEG" else {}
  Image.fromarray(image).save(buffer, format=fmt, **options)
  return buffer.getvalue()


def solid(colour, height: int = 24, width: int = 32) -> np.ndarray:
  return np.broadcast_to(np.asarray(colour, np.uint8), (height, width, 3)).copy()


def write(path: str, data: bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


def truncated_jpeg() -> bytes:
  """A JPEG cut in half: PIL opens the header but fails to decode."""
  data = encode(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
  return data[: len(data) // 2]


def make_folder(root: str, counts: dict[str, int], corrupt: tuple[str, ...] = ()) -> None:
  """root/<class>/<i>.{jpg|png}, solid colours; `corrupt` relative paths get garbage bytes."""
  for c, (name, count) in enumerate(counts.items()):
    for i in range(count):
      fmt, ext = ("PNG", "png") if i % 3 == 2 else ("JPEG", "jpg")
      write(os.path.join(root, name, f"{i:03d}.{ext}"), encode(solid((40 * c, 10 * i, 200)), fmt))
  for rel in corrupt:
    write(os.path.join(root, rel), b"this is not an image")


def make_imagenet_lt(tmp: str) -> dict:
  """An ImageNet tree (train/ and val/ by wnid) with ImageNet_LT_{train,val,test}.txt lists.

  Class sizes in train: 5, 3, 1. One listed train file is missing and one is a
  truncated JPEG. Returns paths and what the lists say.
  """
  root = os.path.join(tmp, "imagenet")
  lists = os.path.join(tmp, "lists")
  os.makedirs(lists)
  train, val, test = [], [], []
  for label, (wnid, n) in enumerate(zip(WNIDS, (5, 3, 1))):
    for i in range(n + 1):  # the extra image per class goes to the val list
      rel = f"train/{wnid}/{wnid}_{100 + i}.JPEG"
      write(os.path.join(root, rel), encode(solid((80 * label, 20 * i, 50))))
      (train if i < n else val).append((rel, label))
    rel = f"val/{wnid}/ILSVRC2012_val_{label:08d}.JPEG"
    write(os.path.join(root, rel), encode(solid((80 * label, 0, 250))))
    test.append((rel, label))
  missing = "train/n01440764/n01440764_999.JPEG"
  train.append((missing, 0))
  corrupt = train[1][0]
  write(os.path.join(root, corrupt), truncated_jpeg())
  for split, rows in (("train", train), ("val", val), ("test", test)):
    with open(os.path.join(lists, f"ImageNet_LT_{split}.txt"), "w") as f:
      f.writelines(f"{path} {label}\n" for path, label in rows)
  names = os.path.join(tmp, "LOC_synset_mapping.txt")
  with open(names, "w") as f:
    f.writelines(f"{wnid} {WNID_NAMES[wnid]}\n" for wnid in WNIDS)
  return {"root": root, "lists": lists, "names": names, "train": train, "val": val, "test": test,
          "missing": missing, "corrupt": corrupt}


class HandMadeRecords(list):
  """What `tfds.data_source` gives: a sequence of records carrying the builder's DatasetInfo."""
  dataset_info = None


def as_data_source_from(records_by_split: dict[str, list[dict]], seen_decoders: list | None = None):
  """An `as_data_source_fn` for `tfds.testing.mock_data` that serves hand-made records."""

  def as_data_source(builder, split=None, decoders=None, deserialize_method=None, **kwargs):
    del deserialize_method, kwargs
    if seen_decoders is not None:
      seen_decoders.append(decoders)
    if split not in records_by_split:
      raise ValueError(f"Unknown split {split!r}. Should be one of {sorted(records_by_split)}.")
    records = HandMadeRecords(records_by_split[split])
    records.dataset_info = builder.info
    return records

  return as_data_source


def build_tfds(data_dir: str, name: str, config: str, version: str, features, splits: dict[str, list[dict]]):
  """Prepares a real ArrayRecord TFDS dataset `name/config/version` without TensorFlow."""
  import tensorflow_datasets as tfds

  builder_name = name
  with tfds.core.registered.skip_registration():

    class HandMade(tfds.core.GeneratorBasedBuilder):
      name = builder_name
      VERSION = tfds.core.Version(version)
      BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=config)]

      def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=features)

      def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(records) for split, records in splits.items()}

      def _generate_examples(self, records):
        for i, record in enumerate(records):
          yield i, record

  builder = HandMade(data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare()
  return builder
