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


def get_config():
  c = config_files.load("experiment_demo")  # the demo grid's world, baselines, seeds, generator and classifier
  c.table = "imagenet_lt"
  c.sources = {"world": "world:lt"}  # on the long tail instead of the few-shot subsets
  c.shots = "0"
  c.methods = "embed_cutmix_dropout"
  c.generation_per_method = True
  g = c.generation
  g.plan.policy, g.plan.amount = "fill_to", 100
  t = c.training
  t.mix, t.synthetic_fraction = "batch", 0.5  # the paper's ImageNet-LT recipe: half of every batch synthetic
  t.loss = "balanced_softmax"
  t.batch_size = 32
  t.epochs = 16
  t.eval_every, t.checkpoint_every = 80, 160
  c.output.dir = "out/experiment_world_lt"
  return c
