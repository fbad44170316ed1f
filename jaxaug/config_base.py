"""Config fields and defaults for generation, training and scoring; configs/*.py start here and change what they need.

The ranges below are what the code assumes of each numeric field; `check_values` holds a config to them
before any work, so a value out of range is one line, not a traceback hours later or a silently other run.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from jaxaug.errors import UserError

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
  c.model = "tiny"  # a diffusers directory or hub id; built in: world (the trained demo world), tiny / tiny-sd (random)
  c.dtype = "auto"  # auto: fp32 on CPU, bf16 on accelerators; or fp32 / bf16
  c.attention = "auto"  # UNet attention kernel: auto (cuDNN on NVIDIA bf16, else xla) | xla | cudnn | einsum
  c.dots = "auto"  # matmul and convolution form: auto (fp32_results on CPUs) | native | fp32_results
  c.seed = 0
  c.methods = "embed_cutmix_dropout"  # comma-separated names (method.md); a run may mix several
  c.alpha = 1.0  # lambda ~ Beta(alpha, alpha)
  c.prompt = "a photo of a {}"  # {} is the class name
  c.resolution = 768  # output pixels
  c.reader_threads = 8  # host threads decoding real images
  # True: embed_cutmix and dropout behave as the paper's released code did (method.md): the cut keeps image 1's
  # embedding, dropout zeroes 40% of the whole 2048-d vector (noise-level half too). False: the intended method.
  c.reference_quirks = False
  # A class with one real image makes pair methods (cutmix, mixup, embed_*) mix it with itself: False warns
  # once per run with the class names, True refuses the run.
  c.refuse_self_pairs = False

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
  c.synthetic_keep = ""  # a keep list of the set (python -m jaxaug.score --config.keep=RULE): its kept images only
  c.allow_partial_synthetic = False  # train on a synthetic set whose generation has not finished (logs the share)
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
  # On SIGTERM (a pre-emption) or SIGINT: seconds to reach the step boundary and save a checkpoint there before
  # giving up on it (SLURM sends SIGKILL 30 s after SIGTERM by default).
  c.stop_grace_s = 20.0
  c.num_threads = 4  # image-decoding threads per host
  c.num_workers = 0  # grain worker processes per host (a resumed run needs the same number)

  c.mesh = mesh_config()
  return c


def experiment_config() -> ml_collections.ConfigDict:
  """The grid fields (python -m jaxaug.experiment), at the demo grid's values (configs/experiment_demo.py).

  Every cell's generation and training config starts from the `generation` and `training` templates; the grid
  sets what varies per cell (source, split, shots, subset seed, methods, seed, output paths).
  """
  c = ml_collections.ConfigDict()
  c.table = "fewshot"  # fewshot: top-1 per dataset x shots | imagenet_lt: overall / many / medium / few
  c.datasets = "demo"  # comma-separated names of `sources`
  c.sources = ml_collections.ConfigDict({"demo": "demo:4"})  # dataset name -> real images (jaxaug/data/sources.py)
  c.train_splits = ml_collections.ConfigDict({"demo": "train"})  # what k-shot subsets and generation draw from
  c.eval_splits = ml_collections.ConfigDict({"demo": "test"})  # what top-1 is measured on
  c.shots = "1,2"  # comma-separated k (real images per class); 0: every image (ImageNet-LT)
  c.methods = "embed_cutmix_dropout,mixup"  # conditioning methods (rows of the table)
  c.baselines = "real"  # also rows: real (no synthetic images), txt2img (text only), sdedit (img2img, plain SD)
  c.seeds = "0,1"  # training trials; the table shows mean ± std over them
  c.subset_per_seed = False  # True: trial s draws its own k-shot subset (seed s) and gets its own generation runs
  c.subset_seed = 0  # the k-shot subset's seed otherwise
  c.generation_per_method = False  # True: one generation run per method (ImageNet-LT fills every class per method)
  # True: embed_cutmix and dropout as the released code ran them (generation_config's reference_quirks).
  c.reference_quirks = False
  c.runs_per_program = 0  # training runs batched into one program: 0 as many as share its shapes, 1 one at a time
  c.sdedit = ml_collections.ConfigDict({"model": "", "resolution": 512, "guidance": 7.5, "strength": 0.5})
  c.score = ml_collections.ConfigDict()
  c.score.enabled = True  # python -m jaxaug.score on each generated set
  c.score.settings = score_config()  # its fields but those the grid sets per set; model '': the generation model
  for grid_field in ("synthetic", "real", "split", "shots", "shots_seed", "output_dir", "cache_dir", "mesh"):
    del c.score.settings[grid_field]
  c.generation = generation_config()
  c.training = training_config()
  c.output = ml_collections.ConfigDict({"dir": "out/experiment_demo"})
  c.mesh = mesh_config()
  return c


@dataclasses.dataclass(frozen=True)
class Range:
  """An interval a numeric field must lie in (closed unless `open_low` / `open_high`), and what the field is."""
  low: float | None = None
  high: float | None = None
  meaning: str = ""
  open_low: bool = False
  open_high: bool = False

  def holds(self, value) -> bool:
    if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
      return False
    return self.high is None or value < self.high or (value == self.high and not self.open_high)

  def __str__(self) -> str:
    if self.high is None:
      return f"{'>' if self.open_low else '>='} {self.low}"
    return f"in {'(' if self.open_low else '['}{self.low}, {self.high}{')' if self.open_high else ']'}"


SEED = Range(0, 2**32 - 1, "a random seed: jax keys take 32 bits, so larger or negative seeds would alias others")

GENERATION_RANGES = {
    "seed": SEED,
    "alpha": Range(0, None, "lambda ~ Beta(alpha, alpha)", open_low=True),
    "resolution": Range(1, None, "output pixels, a multiple of the checkpoint's latent grid, e.g. 768 or 512"),
    "reader_threads": Range(1, None, "host threads decoding real images"),
    "data.shots": Range(0, None, "real images per class, 0 for all"),
    "data.shots_seed": SEED,
    "data.source_size": Range(1, None, "host working size of the real images, in pixels"),
    "plan.amount": Range(1, None, "images to make, as the plan policy counts them"),
    "plan.unit_size": Range(1, None, "items per committed shard"),
    "sampler.steps": Range(1, None, "denoising steps"),
    "sampler.guidance": Range(0, None, "classifier-free guidance scale; 1 or less runs the conditional branch only"),
    "sampler.strength": Range(0, 1, "img2img: the share of the schedule run from the noised real image",
                              open_low=True),
    "sampler.noise_level": Range(0, None, "unCLIP image-embedding noise level, a step of the checkpoint's "
                                 "image-noising schedule; the paper uses 0"),
    "batch.per_device": Range(1, None, "items per device per step"),
    "output.jpeg_quality": Range(1, 100, "JPEG quality"),
    "mesh.num_processes": Range(0, None, "processes of a multi-process run, 0 for automatic"),
    "mesh.process_id": Range(-1, None, "this process's index, -1 for automatic"),
}

TRAINING_RANGES = {
    "seed": SEED,
    "shots": Range(0, None, "real images per class, 0 for all"),
    "shots_seed": SEED,
    "synthetic_fraction": Range(0, 1, "synthetic share of a batch, or the swap probability"),
    "load_size": Range(1, None, "host square every image is fitted to, in pixels"),
    "crop_size": Range(1, None, "training crop in pixels"),
    "label_smoothing": Range(0, 1, "label smoothing", open_high=True),
    "lr": Range(0, None, "learning rate", open_low=True),
    "momentum": Range(0, 1, "SGD momentum"),
    "weight_decay": Range(0, None, "weight decay"),
    "warmup_epochs": Range(0, None, "epochs of linear warmup"),
    "batch_size": Range(1, None, "global batch"),
    "eval_batch_size": Range(1, None, "global evaluation batch"),
    "epochs": Range(1, None, "epochs"),
    "steps_per_epoch": Range(0, None, "steps per epoch, 0 for one pass over the data"),
    "log_every": Range(1, None, "steps between logged metrics"),
    "eval_every": Range(0, None, "steps between evaluations, 0 for the end only"),
    "checkpoint_every": Range(1, None, "steps between checkpoints"),
    "stop_grace_s": Range(0, None, "seconds to save a checkpoint after SIGTERM or SIGINT"),
    "num_threads": Range(1, None, "image-decoding threads per host"),
    "num_workers": Range(0, None, "grain worker processes per host"),
    "mesh.num_processes": Range(0, None, "processes of a multi-process run, 0 for automatic"),
    "mesh.process_id": Range(-1, None, "this process's index, -1 for automatic"),
}

SCORING_RANGES = {
    "shots": Range(0, None, "real images per class, 0 for all"),
    "shots_seed": SEED,
    "batch.per_device": Range(1, None, "images per device per step"),
    "unit_size": Range(1, None, "real images per cached embedding unit"),
    "reader_threads": Range(1, None, "host threads decoding images"),
    "metrics.k": Range(1, None, "PRDC's k-th nearest neighbour"),
    "metrics.prdc_max": Range(0, None, "images of each set PRDC sees in a pooled row, 0 for all"),
    "metrics.kid_subset_size": Range(2, None, "images per KID subset: the unbiased MMD needs two"),
    "metrics.kid_subsets": Range(2, None, "KID subsets of a pooled row: a standard error needs two"),
    "metrics.kid_class_subsets": Range(2, None, "KID subsets of a class row: a standard error needs two"),
    "metrics.copy_threshold": Range(0, 1, "the cosine similarity to its own source at which an image is a copy",
                                    open_low=True),
    "metrics.block_mb": Range(1, None, "MiB for pairwise temporaries at a time"),
    "metrics.seed": SEED,
    "metrics.consistency_k": Range(1, None, "nearest real images voting on a synthetic image's class"),
    "pictures.worst_classes": Range(0, None, "strips in worst_classes.png, 0 for no picture"),
    "pictures.neighbours": Range(1, None, "nearest and farthest synthetic images per strip"),
    "pictures.consistency_classes": Range(0, None, "classes in class_consistency.png, 0 for no picture"),
    "mesh.num_processes": Range(0, None, "processes of a multi-process run, 0 for automatic"),
    "mesh.process_id": Range(-1, None, "this process's index, -1 for automatic"),
}


def field(config, dotted: str):
  for part in dotted.split("."):
    config = config[part]
  return config


def check_values(config, ranges: dict[str, Range], choices: dict[str, tuple[str, ...]] | None = None) -> None:
  """Raises a one-line UserError for the first field out of its range or not among its choices."""
  for name, allowed in ranges.items():
    value = field(config, name)
    if not allowed.holds(value):
      raise UserError(f"--config.{name}={value!r} is out of range: it must be {allowed} ({allowed.meaning})")
  for name, allowed in (choices or {}).items():
    value = field(config, name)
    if value not in allowed:
      shown = ", ".join(repr(a) if a == "" else a for a in allowed)
      raise UserError(f"--config.{name}={value!r} is not one of {shown}")


def score_config() -> ml_collections.ConfigDict:
  """The scoring fields (python -m jaxaug.score), at the demo's values (configs/score.py)."""
  c = ml_collections.ConfigDict()
  c.synthetic = "out/demo"  # a `python -m jaxaug.generate` output directory
  c.real = ""  # real images (spec string, jaxaug/data/sources.py); '': the source the set was generated from
  c.split = ""  # '': the split the set was generated from
  c.shots = 0  # k real images per class (0: every image of the split), chosen by shots_seed
  c.shots_seed = 0
  # Embedding spaces, comma-separated, each scored side by side (the first one's are the main tables):
  # clip (the unCLIP checkpoint's own image tower: FD-CLIP, circular for unCLIP generations), inception (clean-fid's
  # FID network: FD-Inception, the FID papers report), dinov2 (FD-DINOv2, Stein et al. 2023). A cache per encoder.
  c.encoders = "clip"
  c.inception_weights = ""  # encoders=inception: pytorch-fid's pt_inception-2015-12-05-6726825d.pth or .safetensors
  c.dinov2 = ""  # encoders=dinov2: a transformers Dinov2Model directory or .safetensors file (e.g. dinov2-large)
  c.model = ""  # whose CLIP image tower embeds the images (unCLIP); '': the model in the set's config.json
  c.dtype = "fp32"  # the CLIP tower's: fp32 | bf16 (a cache per dtype); Inception and DINOv2 run in fp32
  c.batch = ml_collections.ConfigDict()
  c.batch.per_device = 32
  c.unit_size = 1024  # real images per cached embedding unit (synthetic units are the set's own)
  c.reader_threads = 4  # host threads decoding images
  c.output_dir = ""  # scores.json, scores.md and pictures; '': <synthetic>/scores
  c.cache_dir = ""  # the embedding cache; '': <output_dir>/embeddings (runs may share one)
  # A keep rule: own_class (the class vote picks the own class) | own_in_k (the own class is among the k nearest real
  # images) | drop_bottom=F (per class, the fraction F least class-agreeing dropped). Writes the keep list
  # <synthetic>/keep-<encoder>-<rule>.json for train's --config.synthetic_keep; '': none.
  c.keep = ""

  c.metrics = ml_collections.ConfigDict()
  c.metrics.k = 5  # PRDC's k-th nearest neighbour (Naeem et al. 2020)
  c.metrics.prdc_max = 10_000  # images of each set PRDC sees in a pooled row (0: all)
  c.metrics.kid_subset_size = 1000
  c.metrics.kid_subsets = 100  # pooled rows (overall, methods, groups)
  c.metrics.kid_class_subsets = 10  # class rows
  c.metrics.copy_threshold = 0.95  # cosine similarity to the own source at which a nearest-source image is a copy
  c.metrics.block_mb = 256  # memory for pairwise temporaries at a time
  c.metrics.seed = 0  # KID subsets and PRDC samples
  c.metrics.consistency_k = 5  # real images (cosine nearest) whose vote decides a synthetic image's class

  c.pictures = ml_collections.ConfigDict()
  c.pictures.worst_classes = 4  # strips in worst_classes.png
  c.pictures.neighbours = 4  # nearest and farthest synthetic images per strip
  c.pictures.rank_by = "fd"  # what makes a class worst: fd | kid (highest) | precision | coverage | diversity |
  #                              consistency (lowest)
  c.pictures.consistency_classes = 4  # classes in class_consistency.png (least consistent first), 0 for no picture

  c.mesh = mesh_config()
  return c
