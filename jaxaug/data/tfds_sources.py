"""TFDS image sources through `tfds.data_source`: ArrayRecord files, no TensorFlow to read.

Known datasets and the splits the protocols use:

  caltech101          train (30 per class), test           few-shot (DA-Fusion)
  oxford_flowers102   train (10 per class), validation, test
  food101             train, validation
  imagenet_lt         train, validation, test               long tail (manual download)
  imagenet2012        train, validation                     (manual download)
  voc/2007            train, validation, test               single label, see below
  coco/2017           train, validation                     single label, see below

Other TFDS names with `image` and `label` features work too.

Single label (DA-Fusion protocol): an image of voc/2007 or coco/2017 takes the
class of its largest annotated object; images without objects are left out.
COCO sizes objects by their annotation `area` (the segment area, as DA-Fusion
does); TFDS's VOC has boxes only, so VOC sizes them by box area (DA-Fusion used
VOC segmentation masks, which TFDS does not carry). Ties go to the first object.

Reading never needs TensorFlow: each name is opened with a major-version
pattern (e.g. `coco/2017:1.*.*`), which makes TFDS build the reader from the
prepared files' metadata instead of the builder code (coco's code imports
TensorFlow). Preparing does need `tfds build ... --file_format=array_record`.
Images are read as encoded bytes (`SkipDecoding`) and decoded by the pipeline.

Labels are found by one pass over the split's records, cached as .npz under
$JAXAUG_CACHE_DIR (default ~/.cache/jaxaug) keyed by dataset, split and files,
so restarts of an ImageNet-sized run do not re-read the whole split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
from collections.abc import Callable, Mapping

import numpy as np
from absl import logging

from jaxaug import fsutil
from jaxaug.data.images import BadImage
from jaxaug.data.sources import ImageSource, read_class_name_map, register_kind
from jaxaug.errors import UserError

_RULE_VERSION = 1  # bump when a labelling rule changes, to invalidate label caches


@dataclasses.dataclass(frozen=True)
class TfdsDataset:
  version: str  # major-version pattern: read from prepared files, not builder code
  manual: bool = False  # needs files put in <data_dir>/downloads/manual first
  objects: bool = False  # single label by the largest annotated object


DATASETS: Mapping[str, TfdsDataset] = {
    "caltech101": TfdsDataset("3.*.*"),
    "oxford_flowers102": TfdsDataset("2.*.*"),
    "food101": TfdsDataset("2.*.*"),
    "imagenet_lt": TfdsDataset("1.*.*", manual=True),
    "imagenet2012": TfdsDataset("5.*.*", manual=True),
    "voc/2007": TfdsDataset("5.*.*", objects=True),
    "coco/2017": TfdsDataset("1.*.*", objects=True),
}


def largest_object_label(labels, bboxes=None, areas=None) -> int:
  """Class of the largest object, or -1 when there is none.

  Size is `areas` when given (COCO annotation areas), else box area from
  (ymin, xmin, ymax, xmax) boxes (VOC). Ties go to the first object.
  """
  labels = np.asarray(labels).reshape(-1)
  if labels.size == 0:
    return -1
  if areas is not None:
    size = np.asarray(areas, np.float64).reshape(-1)
  else:
    boxes = np.asarray(bboxes, np.float64).reshape(-1, 4)
    size = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  if size.shape != labels.shape:
    raise ValueError(f"{labels.size} object labels but {size.size} object sizes")
  return int(labels[int(np.argmax(size))])


def _record_label(record) -> int:
  return int(record["label"])


def _record_object_label(record) -> int:
  objects = record["objects"]
  return largest_object_label(objects["label"], objects.get("bbox"), objects.get("area"))


def _data_dir(data_dir: str | None) -> str:
  import tensorflow_datasets as tfds
  return data_dir or os.environ.get("TFDS_DATA_DIR") or tfds.core.constants.DATA_DIR


def prepare_hint(name: str, data_dir: str) -> str:
  """How to prepare `name` in `data_dir` so that `tfds.data_source` can read it."""
  build = f"`tfds build {name} --data_dir={data_dir} --file_format=array_record`"
  if DATASETS.get(name, TfdsDataset("")).manual:
    manual = os.path.join(data_dir, "downloads", "manual")
    return f"put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in {manual}, then run {build}"
  return f"run {build}"


def open_data_source(name: str, split: str, data_dir: str | None = None):
  """`tfds.data_source` for one split with images left encoded; UserError if not prepared."""
  import tensorflow_datasets as tfds
  data_dir = _data_dir(data_dir)
  known = DATASETS.get(name)
  versioned = f"{name}:{known.version}" if known else name
  try:
    # TFDS prints a banner when builder code tries TensorFlow (coco, unprepared); the error says it.
    with contextlib.redirect_stdout(io.StringIO()):
      return tfds.data_source(
          versioned, split=split, data_dir=data_dir, download=False,
          decoders={"image": tfds.decode.SkipDecoding()})
  except tfds.core.registered.DatasetNotFoundError as e:
    if known is None:
      raise UserError(f"tfds has no dataset {name!r}: use a TFDS name such as {', '.join(DATASETS)}") from e
    raise UserError(f"tfds dataset {name!r} is not prepared in {data_dir}: {prepare_hint(name, data_dir)}") from e
  except Exception as e:  # TFDS raises many types for "no files here"; say how to fix it.
    cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, ValueError) and "split" in cause.lower():
      raise UserError(f"tfds dataset {name!r} has no split {split!r} ({cause}): use one of its splits") from e
    needs_tf = " (its tfds build needs tensorflow installed; reading it here does not)" if "tensorflow" in cause else ""
    raise UserError(
        f"tfds dataset {name!r} is not prepared in {data_dir} as array_record{needs_tf}: "
        f"{prepare_hint(name, data_dir)}") from e


def _class_names(info, objects: bool, names_file: str | None) -> tuple[str, ...]:
  features = info.features
  try:
    label = features["objects"]["label"] if objects else features["label"]
    names = list(label.names)
  except (KeyError, AttributeError) as e:
    raise UserError(f"tfds dataset {info.full_name!r} has no class-label feature "
                    f"{'objects/label' if objects else 'label'}: use an image classification dataset") from e
  if names_file:
    mapping = read_class_name_map(names_file)
    missing = [n for n in names if n not in mapping]
    if missing:
      raise UserError(f"class names file {names_file!r} has no entry for {missing[0]!r}: "
                      "use a complete wnid -> name file")
    names = [mapping[n] for n in names]
  return tuple(names)


def _cache_file(info, split: str, size: int, cache_dir: str | None) -> str | None:
  """Where this split's labels are cached, or None when there are no local files to key on."""
  data_dir = os.fspath(info.data_dir)
  info_file = os.path.join(data_dir, "dataset_info.json")
  if not os.path.isfile(info_file):
    return None  # mocked, or on a remote file system: just scan
  cache_dir = cache_dir or os.fspath(fsutil.cache_dir())
  key = f"{_RULE_VERSION}|{info.full_name}|{split}|{size}|{os.path.abspath(data_dir)}|{os.path.getmtime(info_file)}"
  digest = hashlib.sha1(key.encode()).hexdigest()[:16]
  stem = f"{info.full_name}-{split}".replace("/", "_").replace("[", "_").replace("]", "_").replace(":", "_")
  return os.path.join(cache_dir, "tfds_labels", f"{stem}-{digest}.npz")


def _read_records(data_source, start: int, stop: int):
  if hasattr(data_source, "__getitems__"):
    return data_source.__getitems__(list(range(start, stop)))
  return [data_source[i] for i in range(start, stop)]


def scan_labels(data_source, rule: Callable[[dict], int], chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """(record indices kept, their labels): one pass; records labelled -1 are dropped."""
  labels = np.empty(len(data_source), np.int64)
  for start in range(0, len(data_source), chunk):
    stop = min(start + chunk, len(data_source))
    labels[start:stop] = [rule(r) for r in _read_records(data_source, start, stop)]
  records = np.flatnonzero(labels >= 0)
  return records, labels[records].astype(np.int32)


def _cached_scan(data_source, split: str, rule, cache_dir: str | None):
  path = _cache_file(data_source.dataset_info, split, len(data_source), cache_dir)
  if path and os.path.exists(path):
    with np.load(path) as cached:
      return cached["records"], cached["labels"]
  logging.info("reading the labels of %d records of %s %s once%s", len(data_source),
               data_source.dataset_info.full_name, split, f" (cached at {path})" if path else "")
  records, labels = scan_labels(data_source, rule)
  if path:
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      tmp = f"{path}.tmp{os.getpid()}.npz"
      np.savez(tmp, records=records, labels=labels)
      os.replace(tmp, path)
    except OSError as e:
      logging.warning("could not cache labels at %s (%s); they will be re-read next time", path, e)
  return records, labels


class TfdsSource(ImageSource):
  """One split of a prepared TFDS dataset; ids are `<split>/<record index>`."""

  def __init__(self, data_source, split: str, records, labels, class_names):
    self.data_source = data_source
    self.split = split
    self.records = np.asarray(records, np.int64)
    self.labels = np.asarray(labels, np.int32)
    self.class_names = tuple(class_names)

  def read(self, index: int) -> bytes | np.ndarray:
    record = int(self.records[index])
    try:
      return self.data_source[record]["image"]
    except Exception as e:  # a damaged record costs one image, not the run
      raise BadImage(f"cannot read record {record} ({type(e).__name__}: {e})") from e

  def id(self, index: int) -> str:
    return f"{self.split}/{int(self.records[index])}"


def tfds_source(name: str, split: str, data_dir: str | None = None, names_file: str | None = None,
                cache_dir: str | None = None) -> TfdsSource:
  """Opens `name` (e.g. caltech101, voc/2007) at `split`; see the module docstring."""
  known = DATASETS.get(name, TfdsDataset(""))
  data_source = open_data_source(name, split, data_dir)
  info = data_source.dataset_info
  class_names = _class_names(info, known.objects, names_file)
  rule = _record_object_label if known.objects else _record_label
  records, labels = _cached_scan(data_source, split, rule, cache_dir)
  if len(records) < len(data_source):
    logging.info("%s %s: %d of %d images have no annotated object and are left out",
                 name, split, len(data_source) - len(records), len(data_source))
  if len(records) == 0:
    raise UserError(f"tfds dataset {name!r} split {split!r} has no labelled images: "
                    "pick a split with labels (COCO's test has none)")
  return TfdsSource(data_source, split, records, labels, class_names)


def _open(target: str, split: str, options: dict[str, str], spec: str) -> TfdsSource:
  return tfds_source(target, split, data_dir=options.get("data_dir"), names_file=options.get("names"))


register_kind("tfds", _open, ("data_dir", "names"))  # tensorflow_datasets itself is imported on first use
