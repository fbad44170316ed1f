"""Config fields and defaults for generation and training; configs/*.py start here and change what they need."""

import ml_collections

ALL_METHODS = ("rand_img_cond,dropout,cutmix,mixup,embed_cutmix,embed_mixup,cutmix_dropout,mixup_dropout,"
               "embed_cutmix_dropout,embed_mixup_dropout")


def mesh_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.coordinator = ""  # host:port for a local multi-process run; empty: automatic (TPU pod, SLURM)
  c.num_processes = 0
  c.process_id = -1
  return c


def generation_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = "tiny"  # a diffusers directory or hub id; 'tiny' / 'tiny-sd' are built-in random checkpoints
  c.dtype = "auto"  # auto: fp32 on CPU, bf16 on accelerators; or fp32 / bf16
  c.attention = "auto"  # UNet attention kernel: auto (cuDNN on NVIDIA bf16, else xla) | xla | cudnn | einsum
  c.seed = 0
  c.methods = "embed_cutmix_dropout"  # comma-separated names (method.md); a run may mix several
  c.alpha = 1.0  # lambda ~ Beta(alpha, alpha)
  c.prompt = "a photo of a {}"  # {} is the class name
  c.resolution = 768  # output pixels
  c.reader_threads = 8  # host threads decoding real images

  c.data = ml_collections.ConfigDict()
  c.data.source = "demo:6"  # spec string, see jaxaug/data/sources.py
  c.data.split = "train"
  c.data.shots = 0  # k images per class (0: all), chosen by data.shots_seed
  c.data.shots_seed = 0
  c.data.source_size = 256  # host working size of real images (shorter side, centre crop)

  c.plan = ml_collections.ConfigDict()
  c.plan.policy = "per_class"  # fill_to | per_class | per_image
  c.plan.amount = 16
  c.plan.unit_size = 64  # items per committed shard (the grain of resume)

  c.sampler = ml_collections.ConfigDict()
  c.sampler.mode = "unclip"  # unclip | txt2img | img2img
  c.sampler.scheduler = "pndm"  # pndm | ddim | dpm++ | '' (the checkpoint's own)
  c.sampler.steps = 30
  c.sampler.guidance = 2.0
  c.sampler.strength = 0.5  # img2img only
  c.sampler.noise_level = 0  # unCLIP image-embedding noise level (paper: 0)

  c.batch = ml_collections.ConfigDict()
  c.batch.per_device = 8

  c.output = ml_collections.ConfigDict()
  c.output.dir = "out/run"
  c.output.format = "jpeg"  # png | jpeg
  c.output.jpeg_quality = 95
  c.output.image_files = False  # also write images/<class>/item-N.<ext> for people to look at

  c.mesh = mesh_config()
  return c


def training_config() -> ml_collections.ConfigDict:
  """The training fields, at the demo's values (configs/train_demo.py)."""
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
  c.transform = "crop_flip_jitter"  # on the device: crop_flip_jitter | flip_rotate (few-shot) | none

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

  c.mesh = mesh_config()
  return c


def score_config() -> ml_collections.ConfigDict:
  """The scoring fields (python -m jaxaug.score), at the demo's values (configs/score.py)."""
  c = ml_collections.ConfigDict()
  c.synthetic = "out/demo"  # a `python -m jaxaug.generate` output directory
  c.real = ""  # real images (spec string, jaxaug/data/sources.py); '': the source the set was generated from
  c.split = ""  # '': the split the set was generated from
  c.shots = 0  # k real images per class (0: every image of the split), chosen by shots_seed
  c.shots_seed = 0
  c.model = ""  # whose CLIP image tower embeds the images (unCLIP); '': the model in the set's config.json
  c.dtype = "fp32"  # the tower's: fp32 | bf16 (a cache per dtype)
  c.batch = ml_collections.ConfigDict()
  c.batch.per_device = 32
  c.unit_size = 1024  # real images per cached embedding unit (synthetic units are the set's own)
  c.reader_threads = 4  # host threads decoding images
  c.output_dir = ""  # scores.json, scores.md and pictures; '': <synthetic>/scores
  c.cache_dir = ""  # the embedding cache; '': <output_dir>/embeddings (runs may share one)

  c.metrics = ml_collections.ConfigDict()
  c.metrics.k = 5  # PRDC's k-th nearest neighbour (Naeem et al. 2020)
  c.metrics.prdc_max = 10_000  # images of each set PRDC sees in a pooled row (0: all)
  c.metrics.kid_subset_size = 1000
  c.metrics.kid_subsets = 100  # pooled rows (overall, methods, groups)
  c.metrics.kid_class_subsets = 10  # class rows
  c.metrics.copy_threshold = 0.95  # cosine similarity to the own source at which a nearest-source image is a copy
  c.metrics.block_mb = 256  # memory for pairwise temporaries at a time
  c.metrics.seed = 0  # KID subsets and PRDC samples

  c.pictures = ml_collections.ConfigDict()
  c.pictures.worst_classes = 4  # strips in worst_classes.png
  c.pictures.neighbours = 4  # nearest and farthest synthetic images per strip
  c.pictures.rank_by = "fd"  # what makes a class worst: fd | kid (highest) | precision | coverage | diversity (lowest)

  c.mesh = mesh_config()
  return c
