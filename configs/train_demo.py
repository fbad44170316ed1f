"""Training demo: a tiny ResNet on the demo world's target domain and the demo's generated set, minutes on a CPU.

    python -m jaxaug.generate                      # writes the synthetic set to out/demo first
    python -m jaxaug.train                         # this config is the default

Every field is documented in jaxaug/config_base.py (training_config); train_imagenet_lt.py and train_fewshot.py change the recipe.
"""

from jaxaug.config_base import training_config


def get_config():
  c = training_config()
  c.real = "world:32"  # the images out/demo was conditioned on are the first 8 per class of these
  c.load_size, c.crop_size = 32, 28
  return c
