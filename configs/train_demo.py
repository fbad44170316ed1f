"""Training demo: a tiny ResNet on the procedural demo set and its generated set, a few minutes on a CPU.

    python -m jaxaug.generate                      # writes the synthetic set to out/demo first
    python -m jaxaug.train                         # this config is the default

Every field is documented here; train_imagenet_lt.py and train_fewshot.py change the recipe.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.workdir = "out/train_demo"  # checkpoints, metrics and pictures; rerunning resumes from here

  # Data. Spec strings are described in jaxaug/data/sources.py.
  c.real = "demo:32"
  c.train_split = "train"
  c.eval_split = "test"
  c.shots = 0  # k real images per class (0: all), the same subset generation used for this seed
  c.shots_seed = 0
  c.synthetic = "out/demo"  # a `python -m jaxaug.generate` output directory; '' trains on real images only
  c.synthetic_method = ""  # keep only the images of one conditioning method ('' keeps all)
  c.mix = "batch"  # batch: a fixed synthetic share of every batch | swap: each sample swapped w.p. fraction
  c.synthetic_fraction = 0.5
  c.load_size = 64  # host square every image is fitted to (shorter side, centre crop)
  c.crop_size = 56  # training random-resized-crop size; evaluation centre-crops to it
  c.augment = True  # random resized crop, flip, colour jitter 0.4 on the device (off: centre crop)

  # Model and loss.
  c.model = "resnet_tiny"  # resnet18 | resnet50 | resnext50_32x4d | resnet_tiny
  c.pretrained = ""  # torchvision/timm .safetensors with the backbone's ImageNet weights
  c.linear_probe = False  # train only the head over the frozen pretrained backbone
  c.loss = "balanced_softmax"  # cross_entropy | balanced_softmax (log real class counts added in training)
  c.label_smoothing = 0.0

  # Optimizer: sgd (momentum, weight decay, warmup then cosine to 0) | adam (constant rate).
  c.optimizer = "sgd"
  c.lr = 0.1
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.warmup_epochs = 1.0
  c.batch_size = 32  # global, over all devices of all hosts
  c.eval_batch_size = 64
  c.epochs = 100
  c.steps_per_epoch = 0  # 0: one pass over the synthetic set (batch mix) or the real set

  c.seed = 0
  c.log_every = 10  # steps
  c.eval_every = 50  # steps; 0: only at the end
  c.checkpoint_every = 100  # steps
  c.num_threads = 4  # image-decoding threads per host
  c.num_workers = 0  # grain worker processes per host (a resumed run needs the same number)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.coordinator = ""  # host:port for a local multi-process run; empty: automatic (TPU pod, SLURM)
  c.mesh.num_processes = 0
  c.mesh.process_id = -1
  return c
