"""The embedded demo: the tiny random unCLIP pipeline on the procedural demo set, all ten methods.

    python -m jaxaug.generate            # this config is the default
Finishes in a few minutes on a laptop CPU; the images are noise-like (random weights), the point is the
whole path: plan, on-device augmentation, sampling, sharded writing, resume and the contact sheet.
"""

import ml_collections

ALL_METHODS = ("rand_img_cond,dropout,cutmix,mixup,embed_cutmix,embed_mixup,cutmix_dropout,mixup_dropout,"
               "embed_cutmix_dropout,embed_mixup_dropout")


def get_config():
  c = ml_collections.ConfigDict()
  c.model = "tiny"  # a diffusers directory or hub id; 'tiny' / 'tiny-sd' are built-in random checkpoints
  c.dtype = "auto"  # auto: fp32 on CPU, bf16 on accelerators
  c.seed = 0
  c.methods = ALL_METHODS  # comma-separated names from method.md
  c.alpha = 1.0  # lambda ~ Beta(alpha, alpha)
  c.prompt = "a photo of a {}"  # {} is the class name; ImageNet-LT uses "{}"
  c.resolution = 64  # output pixels (768 for SD 2.1-unCLIP)
  c.reader_threads = 4

  c.data = ml_collections.ConfigDict()
  c.data.source = "demo:6"  # see jaxaug/data/sources.py for spec strings
  c.data.split = "train"
  c.data.shots = 0  # k images per class (0: all)
  c.data.shots_seed = 0
  c.data.source_size = 64  # host working size of real images (shorter side, centre crop)

  c.plan = ml_collections.ConfigDict()
  c.plan.policy = "per_class"  # fill_to | per_class | per_image
  c.plan.amount = 1
  c.plan.unit_size = 8

  c.sampler = ml_collections.ConfigDict()
  c.sampler.mode = "unclip"  # unclip | txt2img | img2img
  c.sampler.scheduler = ""  # '' = the checkpoint's own; pndm | ddim | dpm++
  c.sampler.steps = 10
  c.sampler.guidance = 2.0
  c.sampler.strength = 0.5  # img2img only
  c.sampler.noise_level = 0  # unCLIP image-embedding noise level (paper: 0)

  c.batch = ml_collections.ConfigDict()
  c.batch.per_device = 8

  c.output = ml_collections.ConfigDict()
  c.output.dir = "out/demo"
  c.output.format = "png"  # png | jpeg
  c.output.jpeg_quality = 95
  c.output.image_files = True  # also write images/<class>/item-N.png for people to look at

  c.mesh = ml_collections.ConfigDict()
  c.mesh.coordinator = ""  # host:port for a local multi-process run; empty: automatic (TPU pod, SLURM)
  c.mesh.num_processes = 0
  c.mesh.process_id = -1
  return c
