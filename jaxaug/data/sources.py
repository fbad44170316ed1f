"""Labelled real-image sources: one small random-access interface for every origin.

An `ImageSource` has a length, `source[i] -> Example(image, label, id)` (uint8
HxWx3 RGB at full size, int label, stable string id), `class_names`, and a
`labels` array so per-class counts, k-shot subsets and class groups never
decode an image. `read(i)` gives the undecoded bytes; pipelines decode them
with `images.load_fit`. A missing or corrupt image raises `images.BadImage`
from `read`/`[]`; the pipelines skip and count those.

Sources are opened from a spec string (`open_source(spec, split)`):

  tfds:caltech101                    TFDS through `tfds.data_source` (see tfds_sources.py);
  tfds:voc/2007?data_dir=/data/tfds  options: data_dir, names (wnid -> name file)
  folder:/data/pets/{split}          root/<class name>/*.{jpg,jpeg,png,webp}
  demo:6                             the built-in procedural demo set, N images per class (demo.py)
  world:10  world:lt                 the demo world's target domain (world.py): N per class, or
                                     long-tailed; option domain=broad for the generator's world
  imagenet_lt:/lists?root=/imagenet  ImageNet-LT list files applied to an ImageNet tree;
                                     the target is a list file or a directory holding
                                     ImageNet_LT_{train,val,test}.txt; option names=<file>

`{split}` anywhere in the target is replaced by the split name, so one spec
serves train and test. Split names are TFDS's (train / validation / test);
ImageNet-LT lists call validation "val".
"""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
from absl import logging

from jaxaug.data.images import BadImage, decode_image
from jaxaug.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")

# Class groups for long-tail reporting: train images per class.
MANY_ABOVE = 100  # many: > 100
FEW_BELOW = 20  # few: < 20; medium: 20..100


class Example(NamedTuple):
  image: np.ndarray  # uint8 HxWx3 RGB, full size
  label: int
  id: str


class ImageSource:
  """Random access to labelled images. Subclasses set `class_names` and `labels`
  and implement `read` and `id`."""

  class_names: tuple[str, ...]
  labels: np.ndarray  # int32 [len]

  def __len__(self) -> int:
    return len(self.labels)

  def read(self, index: int) -> bytes | np.ndarray:
    """Undecoded image (bytes, or pixels if the origin only has pixels); raises BadImage."""
    raise NotImplementedError

  def id(self, index: int) -> str:
    raise NotImplementedError

  def __getitem__(self, index: int) -> Example:
    index = _check_index(index, len(self))
    return Example(decode_image(self.read(index)), int(self.labels[index]), self.id(index))

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def counts(self) -> np.ndarray:
    """Images per class, int64 [num_classes]."""
    return np.bincount(self.labels, minlength=self.num_classes)

  def ids(self) -> list[str]:
    return [self.id(i) for i in range(len(self))]


def _check_index(index, length: int) -> int:
  index = int(index)
  if not -length <= index < length:
    raise IndexError(f"index {index} out of range for a source of {length} images")
  return index % length


class FileSource(ImageSource):
  """Images as files under `root`; ids are the paths relative to `root`."""

  def __init__(self, root: str, paths: Sequence[str], labels, class_names: Sequence[str]):
    self.root = root
    self.paths = list(paths)
    self.labels = np.asarray(labels, np.int32)
    self.class_names = tuple(class_names)

  def read(self, index: int) -> bytes:
    path = os.path.join(self.root, self.paths[index])
    try:
      with open(path, "rb") as f:
        return f.read()
    except OSError as e:
      raise BadImage(f"cannot read the file ({e.strerror or e})") from e

  def id(self, index: int) -> str:
    return self.paths[index]

  def ids(self) -> list[str]:
    return list(self.paths)


class Subset(ImageSource):
  """Some images of a parent source, in the given order; ids are the parent's."""

  def __init__(self, parent: ImageSource, indices):
    self.parent = parent
    self.indices = np.asarray(indices, np.int64)
    self.labels = parent.labels[self.indices]
    self.class_names = parent.class_names

  def read(self, index: int) -> bytes | np.ndarray:
    return self.parent.read(int(self.indices[index]))

  def id(self, index: int) -> str:
    return self.parent.id(int(self.indices[index]))


# ---------------------------------------------------------------------------
# Image folders


def folder_source(root: str) -> FileSource:
  """root/<class name>/*.{jpg,jpeg,png,webp}; classes sorted by name, files by name."""
  if not os.path.isdir(root):
    raise UserError(f"image folder {root!r} does not exist: pass folder:<dir holding one sub-directory per class>")
  class_names = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
  if not class_names:
    raise UserError(f"image folder {root!r} has no class sub-directories: put images in {root}/<class name>/")
  paths, labels = [], []
  for label, name in enumerate(class_names):
    files = sorted(
        f.name for f in os.scandir(os.path.join(root, name))
        if f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS))
    paths += [f"{name}/{f}" for f in files]
    labels += [label] * len(files)
  if not paths:
    raise UserError(f"image folder {root!r} has no {'/'.join(IMAGE_EXTENSIONS)} files under its class sub-directories")
  return FileSource(root, paths, labels, class_names)


# ---------------------------------------------------------------------------
# ImageNet-LT split lists


def read_class_name_map(path: str) -> dict[str, str]:
  """wnid -> readable name from a names file.

  Accepted: text lines `n01440764 tench, Tinca tinca` (ImageNet's
  LOC_synset_mapping.txt), JSON {"n01440764": "tench, ..."}, or Keras'
  imagenet_class_index.json {"0": ["n01440764", "tench"]}.
  """
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except OSError as e:
    raise UserError(f"class names file {path!r} cannot be read ({e.strerror or e}): "
                    "pass names=<wnid -> name file>") from e
  if path.endswith(".json"):
    try:
      raw = json.loads(text)
    except json.JSONDecodeError as e:
      raise UserError(f"class names file {path!r} is not valid JSON ({e}): fix it or use `wnid name` text lines") from e
    if all(isinstance(v, list) and len(v) == 2 for v in raw.values()):
      return {wnid: name for wnid, name in raw.values()}
    return {str(k): str(v) for k, v in raw.items()}
  mapping = {}
  for line_no, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    parts = line.strip().split(maxsplit=1)
    if len(parts) != 2:
      raise UserError(f"class names file {path!r} line {line_no} is not `wnid name`: fix the line")
    mapping[parts[0]] = parts[1]
  return mapping


def _parse_list(list_file: str) -> tuple[list[str], np.ndarray]:
  try:
    with open(list_file, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise UserError(f"ImageNet-LT list {list_file!r} cannot be read ({e.strerror or e}): "
                    "pass the path of ImageNet_LT_<split>.txt") from e
  paths, labels = [], []
  for line_no, line in enumerate(lines, 1):
    if not line.strip():
      continue
    parts = line.split()
    if len(parts) != 2 or not parts[1].isdigit():
      raise UserError(f"ImageNet-LT list {list_file!r} line {line_no} is not `path label`: fix or regenerate the list")
    paths.append(parts[0])
    labels.append(int(parts[1]))
  if not paths:
    raise UserError(f"ImageNet-LT list {list_file!r} is empty: pass a non-empty ImageNet_LT_<split>.txt")
  return paths, np.asarray(labels, np.int32)


def _wnid_of(path: str) -> str:
  return os.path.basename(os.path.dirname(path))


def _lt_class_names(paths, labels, list_file: str, names: dict[str, str] | None) -> list[str]:
  """Class i is the wnid (directory) its images sit in, or that wnid's readable name."""
  wnids: dict[int, str] = {}
  for path, label in zip(paths, labels):
    wnid = wnids.setdefault(int(label), _wnid_of(path))
    if wnid != _wnid_of(path):
      raise UserError(f"ImageNet-LT list {list_file!r} gives label {label} to both {wnid} "
                      f"and {_wnid_of(path)}: fix the list")
  class_names = []
  for label in range(int(labels.max()) + 1):
    wnid = wnids.get(label)
    if wnid is None:
      logging.warning("ImageNet-LT list %s has no image of class %d; naming it class_%d", list_file, label, label)
      class_names.append(f"class_{label}")
    elif names is None:
      class_names.append(wnid)
    elif wnid in names:
      class_names.append(names[wnid])
    else:
      raise UserError(f"class names file has no entry for {wnid} (class {label} of {list_file!r}): "
                      "use a complete wnid -> name file")
  return class_names


def imagenet_lt_source(list_file: str, root: str, names_file: str | None = None) -> FileSource:
  """An ImageNet-LT split: `path label` lines (ImageNet_LT_*.txt) under an ImageNet root.

  Files are checked lazily: a missing or corrupt one is skipped when read. If
  none of a spread of 16 listed files exists, the root is wrong and this raises.
  """
  if not os.path.isdir(root):
    raise UserError(f"ImageNet root {root!r} does not exist: "
                    "pass root=<dir holding the train/ and val/ trees the list names>")
  paths, labels = _parse_list(list_file)
  probe = [paths[i] for i in np.linspace(0, len(paths) - 1, min(16, len(paths))).astype(int)]
  if not any(os.path.exists(os.path.join(root, p)) for p in probe):
    raise UserError(f"ImageNet root {root!r} has none of the files {list_file!r} lists "
                    f"(e.g. {probe[0]}): pass the root those paths are relative to")
  names = read_class_name_map(names_file) if names_file else None
  return FileSource(root, paths, labels, _lt_class_names(paths, labels, list_file, names))


# ---------------------------------------------------------------------------
# Subsets and groups


def kshot(source: ImageSource, shots: int, seed: int) -> Subset:
  """k images per class, the same on every host, run and process.

  Class c's shots are the first `shots` entries of
  `np.random.default_rng([seed, c]).permutation(n_c)` applied to that class's
  indices in source order (n_c images). Each class has its own stream, so the
  choice for one class does not depend on the others, and for one seed the
  subsets nest (the 1-shot set is inside the 2-shot set). A class with fewer
  than `shots` images keeps all of them (logged). The subset lists the chosen
  images in source order. Pure numpy on `source.labels`: nothing is decoded.
  """
  if shots < 1:
    raise UserError(f"shots={shots} is not a positive number of images per class: use 1, 2, 4, 8 or 16")
  chosen = []
  for c in range(source.num_classes):
    members = np.flatnonzero(source.labels == c)
    if len(members) < shots:
      logging.warning("class %d (%s) has %d images, fewer than %d shots: keeping all",
                      c, source.class_names[c], len(members), shots)
    order = np.random.default_rng([seed, c]).permutation(len(members))
    chosen.append(members[order[:shots]])
  return Subset(source, np.sort(np.concatenate(chosen)))


def class_groups(counts) -> dict[str, np.ndarray]:
  """Long-tail groups from train images per class: many > 100, medium 20-100, few < 20.

  Returns class indices per group; compute it from the train split's counts.
  """
  counts = np.asarray(counts)
  return {
      "many": np.flatnonzero(counts > MANY_ABOVE),
      "medium": np.flatnonzero((counts >= FEW_BELOW) & (counts <= MANY_ABOVE)),
      "few": np.flatnonzero(counts < FEW_BELOW),
  }


def indices_of(source: ImageSource, ids: Sequence[str]) -> np.ndarray:
  """Source indices of the given ids (e.g. a generation plan's source images)."""
  where = {image_id: i for i, image_id in enumerate(source.ids())}
  missing = [i for i in ids if i not in where]
  if missing:
    raise UserError(f"source has no image with id {missing[0]!r} ({len(missing)} missing): "
                    "the plan was made from another source")
  return np.asarray([where[i] for i in ids], np.int64)


# ---------------------------------------------------------------------------
# Spec strings

@dataclasses.dataclass(frozen=True)
class SourceKind:
  """A kind of spec string: the options it takes and how it opens a target. Each kind's module registers it."""
  options: frozenset[str]
  open: Callable[[str, str, dict[str, str], str], ImageSource]  # (target, split, options, spec) -> source
  split_names: Mapping[str, str]  # a split's name where `{split}` fills the target (ImageNet-LT's "val")


KINDS: dict[str, SourceKind] = {}


def register_kind(name: str, open_: Callable[[str, str, dict[str, str], str], ImageSource],
                  options: Sequence[str] = (), split_names: Mapping[str, str] | None = None) -> None:
  """Makes `name:` a spec kind (jaxaug/data/__init__.py imports every kind's module, so all are registered)."""
  KINDS[name] = SourceKind(frozenset(options), open_, dict(split_names or {}))


def parse_spec(spec: str, split: str) -> tuple[str, str, dict[str, str]]:
  """'kind:target?k=v&...' -> (kind, target with {split} filled, options)."""
  kind, sep, rest = spec.partition(":")
  if not sep or kind not in KINDS:
    kinds = ", ".join(k + ":" for k in sorted(KINDS))
    raise UserError(f"data source {spec!r} has no known kind: start it with one of {kinds}")
  target, _, query = rest.partition("?")
  try:
    options = dict(urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
  except ValueError as e:
    raise UserError(f"data source {spec!r} has a malformed ?options part: write ?key=value&key=value") from e
  allowed = KINDS[kind].options
  unknown = set(options) - allowed
  if unknown:
    takes = ", ".join(sorted(allowed)) or "no options"
    raise UserError(f"data source {spec!r} has unknown option {sorted(unknown)[0]!r}: {kind} takes {takes}")
  if not target:
    raise UserError(f"data source {spec!r} names nothing after {kind}:")
  return kind, target.replace("{split}", KINDS[kind].split_names.get(split, split)), options


def open_source(spec: str, split: str = "train") -> ImageSource:
  """Opens a source from a spec string (module docstring); UserError if it is not there."""
  kind, target, options = parse_spec(spec, split)
  return KINDS[kind].open(target, split, options, spec)


_LT_SPLITS = {"validation": "val"}  # ImageNet-LT's lists call validation "val"


def _open_imagenet_lt(target: str, split: str, options: dict[str, str], spec: str) -> FileSource:
  if "root" not in options:
    raise UserError(f"data source {spec!r} needs ?root=<ImageNet dir> for the list's image paths")
  list_file = target
  if os.path.isdir(target):
    list_file = os.path.join(target, f"ImageNet_LT_{_LT_SPLITS.get(split, split)}.txt")
  return imagenet_lt_source(list_file, options["root"], options.get("names"))


register_kind("folder", lambda target, split, options, spec: folder_source(target))
register_kind("imagenet_lt", _open_imagenet_lt, ("root", "names"), _LT_SPLITS)


def describe(source: ImageSource) -> str:
  """One line for logs: size, classes, smallest and largest class."""
  counts = source.counts()
  return (f"{len(source)} images, {source.num_classes} classes, "
          f"{int(counts.min())}-{int(counts.max())} per class")

