"""The paper's few-shot table: Caltech101, Flowers102, PASCAL and COCO at 1/2/4/8/16 shots, every method and baseline.

    python -m jaxaug.experiment --config=fewshot_grid --config.training.pretrained=resnet50_tv_in1k.safetensors \
        --config.output.dir=/data/experiments/fewshot
    python -m jaxaug.experiment --config=fewshot_grid --dry_run      # the plan and its H100-hours first

Per (dataset, shots): the k-shot subset, one generation run with all ten methods mixed (configs/fewshot.py:
16 images per class per method, SD 2.1-unCLIP, guidance 10, 768 px), the txt2img and sdedit baselines' sets,
their scores, then 13 rows x 4 seeds = 52 linear probes (configs/train_fewshot.py: frozen ResNet-50, Adam 1e-4,
50 x 200 steps of 32, swap p = 0.5) trained as one batched program. The table is each run's best top-1, mean ±
std over the 4 seeds, beside DA-Fusion's published numbers. Flowers102 draws its shots from train + validation
(TFDS's train split has 10 images per class, too few for 16 shots).
"""

from jaxaug import config_files
from jaxaug.config_base import ALL_METHODS, experiment_config

DATASETS = ("caltech101", "flowers102", "pascal", "coco")


def _module(name: str):
  """A shipped config file as a module (for its constants)."""
  from importlib import util

  spec = util.spec_from_file_location(f"jaxaug_config_{name}", config_files.config_dir() / f"{name}.py")
  module = util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config():
  c = experiment_config()
  c.table = "fewshot"
  specs = _module("train_fewshot").DATASETS  # name -> (TFDS spec, evaluation split)
  c.sources = {name: specs[name][0] for name in DATASETS}
  c.eval_splits = {name: specs[name][1] for name in DATASETS}
  c.train_splits = {name: "train" for name in DATASETS}
  c.train_splits.flowers102 = "train+validation"
  c.datasets = ",".join(DATASETS)
  c.shots = "1,2,4,8,16"
  c.methods = ALL_METHODS
  c.baselines = "real,txt2img,sdedit"
  c.seeds = "0,1,2,3"
  c.generation = config_files.load("fewshot", "caltech101,1")
  sdedit = config_files.load("fewshot", "caltech101,1,sdedit")
  c.sdedit.model, c.sdedit.resolution = sdedit.model, sdedit.resolution
  c.sdedit.guidance, c.sdedit.strength = sdedit.sampler.guidance, sdedit.sampler.strength
  c.training = config_files.load("train_fewshot", "caltech101,1,real")
  c.output.dir = "out/fewshot_grid"
  return c
