"""Real-image sources (TFDS, ImageNet-LT lists, image folders, k-shot subsets) and their grain pipelines.

Open a source with `open_source("tfds:caltech101", "train")` (spec strings are
described in sources.py), subset it with `kshot`, and read it with
`pipeline.train_batches` / `pipeline.read_units`. TFDS and grain are imported
only by the modules that need them.
"""

from jaxaug.data.images import BadImage, decode_image, fit_square, load_fit
from jaxaug.data.sources import (Example, ImageSource, class_groups, folder_source, imagenet_lt_source,
                                 indices_of, kshot, open_source)

__all__ = [
    "BadImage", "Example", "ImageSource", "class_groups", "decode_image", "fit_square", "folder_source",
    "imagenet_lt_source", "indices_of", "kshot", "load_fit", "open_source",
]
