"""The embedded demo: the tiny random unCLIP pipeline on the procedural demo set, all ten methods.

    python -m jaxaug.generate            # this config is the default
About a minute on a laptop CPU. The tiny pipeline has random weights, so its images are noise; the
point is the whole path: plan, on-device augmentation, sampling, sharded writing, resume, contact sheet.
"""

from jaxaug.config_base import ALL_METHODS, generation_config


def get_config():
  c = generation_config()
  c.model = "tiny"
  c.methods = ALL_METHODS
  c.resolution = 64
  c.reader_threads = 4
  c.data.source = "demo:6"
  c.data.source_size = 64
  c.plan.policy = "per_class"
  c.plan.amount = 2
  c.plan.unit_size = 8
  c.sampler.scheduler = ""  # the checkpoint's own (PNDM)
  c.sampler.steps = 10
  c.output.dir = "out/demo"
  c.output.format = "png"
  c.output.image_files = True
  return c
