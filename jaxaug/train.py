"""python -m jaxaug.train: a classifier on real (+ synthetic) images, evaluated by class group, resumable.

    python -m jaxaug.train                                      # the demo (configs/train_demo.py)
    python -m jaxaug.train --config=train_imagenet_lt --config.real=... --config.synthetic=DIR
    python -m jaxaug.train --config=train_fewshot:caltech101,4,embed_cutmix_dropout

Rerunning the same command continues from the last checkpoint in `config.workdir`, which gets
config.json, checkpoints/ (orbax), metrics.jsonl (train loss and accuracy every `log_every` steps,
eval top-1 every `eval_every` steps), and at the end metrics.json (top-1 overall, many / medium /
few, per class), curves.png and per_class.png. The run itself is train_lib/loop.py (`train_and_evaluate`).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxaug import mesh
from jaxaug.errors import run_with_config
from jaxaug.models import resnet
from jaxaug.train_lib import step as step_lib
from jaxaug.train_lib.loop import compute_dtype, quiet_orbax, train_and_evaluate

_DEFAULT_CONFIG = "train_demo"  # a shipped config (jaxaug.config_files)


# ---------------------------------------------------------------------------
# Bench


def bench_train(*, model: str = "resnet50", size: int | None = None, batch_size: int | None = None,
                steps: int = 10, input_seconds: float = 3.0) -> dict:
  """Train-step images/s (augmentation, forward, backward, SGD) and whether the input pipeline keeps up.

  On an accelerator: ResNet-50 at 224 px, bf16, batch 128 per device. On CPU the same step is too
  slow to time usefully, so it runs reduced (64 px, batch 8; `reduced` says so). The input side is
  `pipeline.bench_input`: ImageNet-sized JPEGs decoded and fitted to load size on all host cores.
  """
  from jaxaug.data import pipeline

  on_cpu = jax.default_backend() == "cpu"
  size = size or (64 if on_cpu else 224)
  batch_size = batch_size or (8 if on_cpu else 128) * jax.device_count()
  load = round(size * 256 / 224)
  net = resnet.create(model, 1000, dtype=compute_dtype())
  tx = step_lib.optimizer("sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, warmup_steps=0, total_steps=1000,
                          linear_probe=False)
  m = mesh.data_mesh()
  replicated, batch_sharding = mesh.replicated(m), mesh.batch_sharding(m)
  state = jax.jit(functools.partial(step_lib.init_state, net, tx, 0, size), out_shardings=replicated)()
  train_step = jax.jit(
      functools.partial(step_lib.train_step, model=net, tx=tx, prior=jnp.zeros(1000), label_smoothing=0.0,
                        crop=size, transform="crop_flip_jitter"),
      in_shardings=(replicated, batch_sharding), out_shardings=(replicated, replicated), donate_argnums=0)
  rng = np.random.default_rng(0)
  batch = jax.device_put({"image": rng.integers(0, 256, (batch_size, load, load, 3), dtype=np.uint8),
                          "label": rng.integers(0, 1000, batch_size).astype(np.int32)}, batch_sharding)
  state, metrics = train_step(state, batch)  # compile
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = train_step(state, batch)
  jax.block_until_ready(metrics)
  step_rate = steps * batch_size / (time.perf_counter() - start)
  host = pipeline.bench_input(size=load, min_seconds=input_seconds)
  return {
      "model": model, "size": size, "load_size": load, "batch_size": batch_size, "devices": jax.device_count(),
      "device": jax.devices()[0].device_kind, "dtype": jnp.dtype(compute_dtype()).name,
      "reduced": on_cpu and (size, model) != (224, "resnet50"),
      "train_images_per_s": round(step_rate, 1),
      "input_images_per_s": host["pipeline_images_per_s"], "input_workers": host["pipeline_workers"],
      "input_keeps_up": host["pipeline_images_per_s"] >= step_rate,
  }


def _main(config):
  logging.get_absl_handler().addFilter(quiet_orbax)
  mesh.initialize(config.mesh.coordinator, config.mesh.num_processes, config.mesh.process_id)
  train_and_evaluate(config)


def main():
  run_with_config(_main, _DEFAULT_CONFIG, "training config: a shipped name (train_demo, train_imagenet_lt, "
                  "train_fewshot:ARG) or a .py file")


if __name__ == "__main__":
  main()
