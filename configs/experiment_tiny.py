"""The plumbing grid: the whole experiment path on random tiny weights, in about a minute (tests use it).

    python -m jaxaug.experiment --config=experiment_tiny

Demo images (4 classes), 1 and 2 shots, embed_cutmix_dropout and mixup against the real-only baseline, 2 seeds:
2 k-shot subsets, 2 generation runs (tiny random unCLIP, both methods mixed), their scores, and 12 tiny
classifiers trained as 2 batched programs, then out/experiment_tiny/results.md and accuracy_demo.png. The tiny
pipeline's images are noise and the classifiers are tiny, so the numbers only show the plumbing.
"""

from jaxaug.config_base import experiment_config


def get_config():
  c = experiment_config()
  c.output.dir = "out/experiment_tiny"
  g = c.generation
  g.model, g.resolution, g.reader_threads = "tiny", 32, 2
  g.data.source_size = 48
  g.plan.policy, g.plan.amount, g.plan.unit_size = "per_class", 2, 8
  g.sampler.scheduler, g.sampler.steps, g.sampler.guidance = "", 3, 10.0
  g.batch.per_device = 8
  g.output.format = "png"
  t = c.training
  t.mix, t.synthetic_fraction = "swap", 0.5  # the few-shot protocol: each sample swapped w.p. 0.5
  t.load_size, t.crop_size, t.transform = 24, 20, "flip_rotate"
  t.model, t.loss = "resnet_tiny", "cross_entropy"
  t.optimizer, t.lr, t.weight_decay, t.warmup_epochs = "adam", 3e-3, 0.0, 0.0
  t.batch_size, t.eval_batch_size = 8, 16
  t.epochs, t.steps_per_epoch = 2, 6
  t.log_every, t.eval_every, t.checkpoint_every = 3, 6, 6
  t.num_threads = 2
  return c
