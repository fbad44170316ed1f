"""ImageNet-LT, the paper's recipe: ResNeXt-50 (32x4d) from scratch, Balanced Softmax, half-synthetic batches.

    python -m jaxaug.train --config=configs/train_imagenet_lt.py \
        --config.real='imagenet_lt:/data/imagenet_lt?root=/data/imagenet' --config.synthetic=out/imagenet_lt

An epoch is one pass over the synthetic set (1.16 M images, 256 per batch). Fields are explained
in train_demo.py.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.workdir = "out/train_imagenet_lt"

  # Data. Spec strings are described in jaxaug/data/sources.py.
  c.real = "imagenet_lt:/data/imagenet_lt?root=/data/imagenet"
  c.train_split = "train"
  c.eval_split = "test"  # ImageNet-LT test: 50 images per class of ImageNet val
  c.shots = 0  # k real images per class (0: all), the same subset generation used for this seed
  c.shots_seed = 0
  c.synthetic = "out/imagenet_lt"
  c.synthetic_method = ""  # keep only the images of one conditioning method ('' keeps all)
  c.mix = "batch"  # batch: a fixed synthetic share of every batch | swap: each sample swapped w.p. fraction
  c.synthetic_fraction = 0.5
  c.load_size = 256
  c.crop_size = 224
  c.augment = True  # random resized crop, flip, colour jitter 0.4 on the device (off: centre crop)

  # Model and loss.
  c.model = "resnext50_32x4d"
  c.pretrained = ""  # torchvision/timm .safetensors with the backbone's ImageNet weights
  c.linear_probe = False  # train only the head over the frozen pretrained backbone
  c.loss = "balanced_softmax"  # cross_entropy | balanced_softmax (log real class counts added in training)
  c.label_smoothing = 0.0

  # Optimizer: sgd (momentum, weight decay, warmup then cosine to 0) | adam (constant rate).
  c.optimizer = "sgd"
  c.lr = 0.2
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.warmup_epochs = 5.0  # not in method.md: linear warmup for lr 0.2 at batch 512 (Goyal et al.)
  c.batch_size = 512
  c.eval_batch_size = 1024
  c.epochs = 90  # not in method.md: the usual ImageNet-LT schedule
  c.steps_per_epoch = 0  # 0: one pass over the synthetic set (batch mix) or the real set

  c.seed = 0
  c.log_every = 100
  c.eval_every = 5000
  c.checkpoint_every = 2000
  c.num_threads = 2
  c.num_workers = 16

  c.mesh = ml_collections.ConfigDict()
  c.mesh.coordinator = ""  # host:port for a local multi-process run; empty: automatic (TPU pod, SLURM)
  c.mesh.num_processes = 0
  c.mesh.process_id = -1
  return c
