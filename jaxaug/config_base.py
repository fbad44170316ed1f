"""The generation config's fields and defaults; configs/*.py start from here and change what they need."""

import ml_collections

ALL_METHODS = ("rand_img_cond,dropout,cutmix,mixup,embed_cutmix,embed_mixup,cutmix_dropout,mixup_dropout,"
               "embed_cutmix_dropout,embed_mixup_dropout")


def generation_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = "tiny"  # a diffusers directory or hub id; 'tiny' / 'tiny-sd' are built-in random checkpoints
  c.dtype = "auto"  # auto: fp32 on CPU, bf16 on accelerators; or fp32 / bf16
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

  c.mesh = ml_collections.ConfigDict()
  c.mesh.coordinator = ""  # host:port for a local multi-process run; empty: automatic (TPU pod, SLURM)
  c.mesh.num_processes = 0
  c.mesh.process_id = -1
  return c
