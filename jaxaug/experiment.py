"""python -m jaxaug.experiment: the paper's experiments, from a dataset to its tables, in one resumable command.

    python -m jaxaug.experiment                                  # the demo grid (configs/experiment_demo.py: the demo world)
    python -m jaxaug.experiment --config=fewshot_grid --dry_run  # the plan: images, runs, steps, device-hours
    python -m jaxaug.experiment --config=fewshot_grid --config.training.pretrained=R50.safetensors \\
        --config.output.dir=/data/experiments/fewshot
    python -m jaxaug.experiment --config=imagenet_lt_grid --config.output.dir=/data/experiments/imagenet_lt

A grid crosses datasets x shots x (methods and baselines) x seeds. Per (dataset, shots) it records the k-shot
subset, generates one set with every method mixed (plus the txt2img / sdedit baselines' sets), scores the sets,
and trains every run, the runs of a column batched into one program. manifest.jsonl records finished cells, so a
kill at any moment followed by the same command finishes the grid with no cell run twice and none lost; each
stage resumes its own cell in flight. Writes results.json (every cell), results.md (the paper's table layout,
the paper's baselines beside ours) and accuracy_<dataset>.png to --config.output.dir.
"""

from __future__ import annotations

from absl import flags

from jaxaug.errors import run_with_config

_DEFAULT_CONFIG = "experiment_demo"  # a shipped config (jaxaug.config_files)

flags.DEFINE_bool("dry_run", False, "print the plan (images, training runs and steps, device-hours) and run nothing")
flags.DEFINE_string("device", "H100", "--dry_run: the accelerator the device-hours are for (bench's peak table)")
flags.DEFINE_string("bench_json", "", "--dry_run: a `python -m jaxaug.bench sampler|flops --json=FILE` result to "
                    "take generation's rate from instead of the FLOP count")


def _main(config):
  from absl import logging

  from jaxaug.experiment_lib import runner
  from jaxaug.train_lib.loop import quiet_orbax

  logging.get_absl_handler().addFilter(quiet_orbax)
  runner.run(config, dry_run=flags.FLAGS.dry_run, device=flags.FLAGS.device, bench_json=flags.FLAGS.bench_json)


def main():
  run_with_config(_main, _DEFAULT_CONFIG, "experiment config: a shipped name (experiment_demo, experiment_tiny, fewshot_grid, "
                  "imagenet_lt_grid) or a .py file")


if __name__ == "__main__":
  main()
