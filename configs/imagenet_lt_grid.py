"""The paper's ImageNet-LT table: top-1 overall and on the many / medium / few classes, per conditioning method.

    python -m jaxaug.experiment --config=imagenet_lt_grid \
        --config.sources.imagenet_lt='imagenet_lt:/data/ImageNet_LT?root=/data/imagenet&names=/data/LOC_synset_mapping.txt' \
        --config.output.dir=/data/experiments/imagenet_lt
    python -m jaxaug.experiment --config=imagenet_lt_grid --dry_run

Each method gets its own generation run filling every class to 1,280 images (configs/imagenet_lt.py: 1,164,154
images, guidance 2.0), then a ResNeXt-50 from scratch with Balanced Softmax (configs/train_imagenet_lt.py), beside
the real-only baseline. The default row is embed_cutmix_dropout, the paper's best on ImageNet-LT; name more with
--config.methods (each adds a 1.16 M-image set) and more trials with --config.seeds.
"""

from jaxaug import config_files
from jaxaug.config_base import experiment_config


def get_config():
  c = experiment_config()
  c.table = "imagenet_lt"
  c.sources = {"imagenet_lt": config_files.load("train_imagenet_lt").real}
  c.train_splits = {"imagenet_lt": "train"}
  c.eval_splits = {"imagenet_lt": "test"}
  c.datasets = "imagenet_lt"
  c.shots = "0"
  c.methods = "embed_cutmix_dropout"
  c.baselines = "real"
  c.seeds = "0"
  c.generation_per_method = True
  c.generation = config_files.load("imagenet_lt")
  c.training = config_files.load("train_imagenet_lt")
  c.output.dir = "out/imagenet_lt_grid"
  return c
