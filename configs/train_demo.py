"""Training demo: a tiny ResNet on the procedural demo set and its generated set, a few minutes on a CPU.

    python -m jaxaug.generate                      # writes the synthetic set to out/demo first
    python -m jaxaug.train                         # this config is the default

Every field is documented in jaxaug/config_base.py (training_config); train_imagenet_lt.py and train_fewshot.py change the recipe.
"""

from jaxaug.config_base import training_config


def get_config():
  return training_config()
