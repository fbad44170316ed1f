"""The embedded demo: the trained demo world's unCLIP pipeline on its target domain, all ten methods.

    python -m jaxaug.generate            # this config is the default
The world (jaxaug/data/world.py) has ten shape classes; its generator (jaxaug/models/demo_world.py) was
trained here on a broad style of them and ships inside the package, so the images mean something: the
contact sheet (out/demo/contact_sheet.png) shows each class's real target-domain image, the augmented
condition and the generated image. About a minute on a laptop CPU.
"""

from jaxaug.config_base import ALL_METHODS, generation_config


def get_config():
  c = generation_config()
  c.model = "world"
  c.methods = ALL_METHODS
  c.resolution = 32
  c.reader_threads = 2
  c.data.source = "world:8"
  c.data.source_size = 32
  c.plan.policy = "per_class"
  c.plan.amount = 2
  c.plan.unit_size = 20
  c.sampler.scheduler = ""  # the checkpoint's own (PNDM)
  c.sampler.steps = 20
  c.sampler.guidance = 3.0
  c.batch.per_device = 20
  c.output.dir = "out/demo"
  c.output.format = "png"
  c.output.image_files = True
  return c
