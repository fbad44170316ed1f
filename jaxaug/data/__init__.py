"""Real-image sources (TFDS, ImageNet-LT lists, image folders, k-shot subsets) and their grain pipelines.

Open a source with `open_source("tfds:caltech101", "train")` (spec strings are
described in sources.py), subset it with `kshot`, and read it with
`pipeline.train_batches` / `pipeline.read_units`. TFDS and grain are imported
only by the modules that need them. Each kind of spec (folder, imagenet_lt, demo, world, tfds) is registered by
its module; this package imports them all, so `open_source` knows every kind whatever was imported first.
"""

from jaxaug.data.images import BadImage, decode_image, fit_square, load_fit
from jaxaug.data.sources import (Example, ImageSource, class_groups, folder_source, imagenet_lt_source,
                                 indices_of, kshot, open_source)
from jaxaug.data import demo, tfds_sources, world  # noqa: F401,E402 (each registers its spec kind with sources)

__all__ = [
    "BadImage", "Example", "ImageSource", "class_groups", "decode_image", "fit_square", "folder_source",
    "imagenet_lt_source", "indices_of", "kshot", "load_fit", "open_source",
]
