"""ImageNet-LT, the paper's recipe: ResNeXt-50 (32x4d) from scratch, Balanced Softmax, half-synthetic batches.

    python -m jaxaug.train --config=train_imagenet_lt \
        --config.real='imagenet_lt:/data/ImageNet_LT?root=/data/imagenet' --config.synthetic=out/imagenet_lt

An epoch is one pass over the synthetic set (1.16 M images, 256 per batch). Fields are explained
in jaxaug/config_base.py (training_config).
"""

from jaxaug.config_base import training_config


def get_config():
  c = training_config()
  c.workdir = "out/train_imagenet_lt"
  c.real = "imagenet_lt:/data/ImageNet_LT?root=/data/imagenet"
  c.eval_split = "test"  # ImageNet-LT test: 50 images per class of ImageNet val
  c.synthetic = "out/imagenet_lt"
  c.load_size, c.crop_size = 256, 224
  c.model = "resnext50_32x4d"
  c.loss = "balanced_softmax"
  c.lr = 0.2
  c.warmup_epochs = 5.0  # not in method.md: linear warmup for lr 0.2 at batch 512 (Goyal et al.)
  c.batch_size, c.eval_batch_size = 512, 1024
  c.epochs = 90  # not in method.md: the usual ImageNet-LT schedule
  c.log_every, c.eval_every, c.checkpoint_every = 100, 5000, 2000
  c.num_threads, c.num_workers = 2, 16
  return c
