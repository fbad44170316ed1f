"""The paper's long-tail question in the demo world: the small local variant of imagenet_lt_grid.

    python -m jaxaug.experiment --config=experiment_world_lt
    python -m jaxaug.experiment --config=experiment_world_lt --dry_run

The world's long-tailed target domain (world:lt: 200 train images for the first class down to 5 for the last,
20 test images per class) stands in for ImageNet-LT. Each method gets its own generation run filling every class
to 100 images with the shipped world generator (about 550 images), the txt2img baseline the same with the class
prompt alone; then tiny ResNets with Balanced Softmax on half-synthetic batches (the paper's recipe, scaled
down), beside real-only, 3 seeds each. The table is the paper's: top-1 overall and on the many / medium / few
classes.
"""

from jaxaug import config_files
from jaxaug.config_base import experiment_config


def get_config():
  c = experiment_config()
  c.table = "imagenet_lt"
  c.datasets = "world"
  c.sources = {"world": "world:lt"}
  c.train_splits = {"world": "train"}
  c.eval_splits = {"world": "test"}
  c.shots = "0"
  c.methods = "embed_cutmix_dropout"
  c.baselines = "real,txt2img"
  c.seeds = "0,1,2"
  c.generation_per_method = True
  demo = config_files.load("experiment_demo")  # the demo grid's generator and classifier, on the long tail
  g = c.generation = demo.generation
  g.plan.policy, g.plan.amount = "fill_to", 100
  t = c.training = demo.training
  t.mix, t.synthetic_fraction = "batch", 0.5  # the paper's ImageNet-LT recipe: half of every batch synthetic
  t.loss = "balanced_softmax"
  t.batch_size = 32
  t.epochs = 16
  t.eval_every, t.checkpoint_every = 80, 160
  c.output.dir = "out/experiment_world_lt"
  return c
