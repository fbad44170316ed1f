"""Several training runs as one program: a leading run axis over states and batches (loop.py's step, vmapped or
looped over the runs: `default_run_axis`).

A grid trains many small classifiers of the same shape (the seeds of a cell, and the methods of a dataset
and shot count). Run one at a time, each pays its own compile and leaves the device mostly idle; here a
group of R runs shares one compiled step whose every array carries a leading run axis. Each run keeps
its own initial weights (its seed), data stream (its seed and synthetic set), head, BatchNorm statistics
and optimizer state, so its numbers equal a separate `loop.train_and_evaluate` of its config up to float
rounding (tests/test_experiment_multirun.py). `Programs` keeps the compiled steps by their static settings,
so later groups of the same shapes reuse them: no compile per cell.

A group checkpoints in its own directory (the stacked state and every run's input state) and resumes
from there; each run's own workdir gets what train.py writes: config.json, metrics.jsonl, metrics.json,
curves.png and per_class.png.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxaug import evaluate, locks, mesh
from jaxaug.errors import UserError
from jaxaug.models import resnet
from jaxaug.train_lib import checkpoint, data as data_lib, loop, step as step_lib


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run: its full config (own seed, synthetic set, workdir) and its opened data."""
  config: object
  data: loop.Data


@dataclasses.dataclass(frozen=True)
class ProgramSpec:
  """What the compiled steps depend on; runs with equal specs (and batch shapes) share one program."""
  arch: str
  num_classes: int
  linear_probe: bool
  optimizer: str
  lr: float
  momentum: float
  weight_decay: float
  warmup_steps: int
  total_steps: int
  label_smoothing: float
  crop: int
  transform: str

  @classmethod
  def of(cls, config, num_classes: int, steps_per_epoch: int) -> ProgramSpec:
    return cls(arch=config.model, num_classes=num_classes, linear_probe=bool(config.linear_probe),
               optimizer=config.optimizer, lr=float(config.lr), momentum=float(config.momentum),
               weight_decay=float(config.weight_decay), warmup_steps=round(config.warmup_epochs * steps_per_epoch),
               total_steps=config.epochs * steps_per_epoch, label_smoothing=float(config.label_smoothing),
               crop=config.crop_size, transform=config.transform)


# Fields every run of a group must share beyond the ProgramSpec: the batch shapes, the evaluation set and the
# step schedule of logs, evaluations and checkpoints.
_GROUP_FIELDS = ("batch_size", "eval_batch_size", "load_size", "real", "eval_split", "pretrained", "loss",
                 "log_every", "eval_every", "checkpoint_every", "num_threads", "num_workers")


def group_key(config, data, steps_per_epoch: int) -> tuple:
  """Runs with equal keys can train as one program (see module docstring)."""
  spec = ProgramSpec.of(config, data.train.num_classes, steps_per_epoch)
  return (spec,) + tuple(config[f] for f in _GROUP_FIELDS)


@dataclasses.dataclass
class Compiled:
  init: object  # seeds (R,) -> stacked TrainState
  train_step: object  # (states, batches (R, B, ...), prior) -> (states, metrics (R,))
  eval_step: object  # (states, batch (B, ...)) -> per-run per-class counts (R, C)
  model: object


RUN_AXES = ("vmap", "loop")


def default_run_axis(platform: str) -> str:
  """How one program carries R runs: `vmap` on accelerators; on CPUs a `loop` over the runs.

  jax.vmap of a step whose weights carry the run axis turns every convolution into one grouped convolution
  (feature_group_count = R), and XLA:CPU runs grouped convolutions far slower than R plain ones. Measured on
  the 2-core Zen 4 for the demo grid's 15 tiny ResNets (batch 16, 32 px): a vmapped train step takes 1,892 ms
  (13 s to compile); the one-run step, compiled once and called for each run in turn, 15 x 24 ms. Unrolling the
  15 runs inside one program runs as fast (345 ms) but takes 63 s to compile, and lax.map is slower than vmap.
  GPUs and TPUs batch grouped convolutions well and keep vmap's single batched kernel. Both ways give each run
  its own numbers (tests/test_experiment_multirun.py compares them).
  """
  return "loop" if platform == "cpu" else "vmap"


def _take(tree, i):
  return jax.tree.map(lambda x: x[i], tree)


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


class Programs:
  """Compiled steps by ProgramSpec, shared by every group in this process; `traces` counts real compiles.

  A jitted function traces (and XLA compiles) once per new input shape: `traces` counts those, per
  program, so a grid can say how many compiles it made. `run_axis` (None: `default_run_axis` of the
  platform) says how the runs share a program.
  """

  def __init__(self, run_axis: str | None = None):
    if run_axis is not None and run_axis not in RUN_AXES:
      raise ValueError(f"run_axis must be one of {RUN_AXES}, got {run_axis!r}")
    self.run_axis = run_axis
    self._cache: dict[ProgramSpec, Compiled] = {}
    self.traces: collections.Counter = collections.Counter()

  def get(self, spec: ProgramSpec, mesh_) -> Compiled:
    if spec not in self._cache:
      self._cache[spec] = self._build(spec, mesh_)
    return self._cache[spec]

  @property
  def compiles(self) -> int:
    return sum(self.traces.values())

  def _build(self, spec: ProgramSpec, mesh_) -> Compiled:
    model = resnet.create(spec.arch, spec.num_classes, frozen_backbone=spec.linear_probe, dtype=loop.compute_dtype())
    tx = step_lib.optimizer(spec.optimizer, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
                            warmup_steps=spec.warmup_steps, total_steps=spec.total_steps,
                            linear_probe=spec.linear_probe)
    replicated, runs_batch = mesh.replicated(mesh_), run_batch_sharding(mesh_)
    traces = self.traces
    axis = self.run_axis or default_run_axis(mesh_.devices.flat[0].platform)

    def init(seeds):
      traces["init"] += 1
      return jax.vmap(lambda seed: step_lib.init_state(model, tx, seed, spec.crop))(seeds)

    def one_train(state, batch, prior):
      return step_lib.train_step(state, batch, model=model, tx=tx, prior=prior,
                                 label_smoothing=spec.label_smoothing, crop=spec.crop, transform=spec.transform)

    def one_eval(state, batch):
      return step_lib.eval_step(state, batch, model=model, crop=spec.crop)

    init = jax.jit(init, out_shardings=replicated)
    if axis == "vmap":
      def train_step(states, batches, prior):
        traces["train_step"] += 1
        return jax.vmap(one_train, in_axes=(0, 0, None))(states, batches, prior)

      def eval_step(states, batch):
        traces["eval_step"] += 1
        return jax.vmap(one_eval, in_axes=(0, None))(states, batch)

      return Compiled(
          init=init,
          train_step=jax.jit(train_step, in_shardings=(replicated, runs_batch, replicated),
                             out_shardings=(replicated, replicated), donate_argnums=0),
          eval_step=jax.jit(eval_step, in_shardings=(replicated, mesh.batch_sharding(mesh_)),
                            out_shardings=replicated),
          model=model)

    # loop: one run's step, compiled once, takes run i's slice of the stacked state and batch; the runs' results
    # are stacked again by one more small program.
    def train_run(states, batches, prior, i):
      traces["train_step"] += 1
      return one_train(_take(states, i), _take(batches, i), prior)

    def eval_run(states, batch, i):
      traces["eval_step"] += 1
      return one_eval(_take(states, i), batch)

    train_run = jax.jit(train_run, in_shardings=(replicated, runs_batch, replicated, None),
                        out_shardings=(replicated, replicated))
    eval_run = jax.jit(eval_run, in_shardings=(replicated, mesh.batch_sharding(mesh_), None),
                       out_shardings=replicated)
    stack = jax.jit(lambda trees: _stack(trees), out_shardings=replicated)

    def looped_train(states, batches, prior):
      runs = jax.tree.leaves(states.step)[0].shape[0]
      return stack([train_run(states, batches, prior, i) for i in range(runs)])

    def looped_eval(states, batch):
      runs = jax.tree.leaves(states.step)[0].shape[0]
      return stack([eval_run(states, batch, i) for i in range(runs)])

    return Compiled(init=init, train_step=looped_train, eval_step=looped_eval, model=model)


def run_batch_sharding(mesh_) -> NamedSharding:
  """Batches of R runs (R, B, ...): every run's batch split over the devices, as a single run's is."""
  return NamedSharding(mesh_, P(None, "data"))


def _runs_to_global(mesh_, tree):
  sharding = run_batch_sharding(mesh_)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


class _Streams:
  """The runs' training streams as one: stacked batches (R, B, ...) and one checkpointable state."""

  def __init__(self, streams: list[data_lib.TrainInput]):
    self.streams = streams

  def __next__(self) -> dict:
    batches = [next(s) for s in self.streams]
    return {k: np.stack([b[k] for b in batches]) for k in ("image", "label")}

  def get_state(self) -> dict:
    return {f"run{i}": s.get_state() for i, s in enumerate(self.streams)}

  def set_state(self, state: dict) -> None:
    for i, s in enumerate(self.streams):
      s.set_state(state[f"run{i}"])

  def close(self) -> None:
    for s in self.streams:
      s.close()


def _load_pretrained(path: str, arch: str, states):
  """Every run's backbone from the pretrained file (read once); each run keeps its own fresh `fc` head."""
  first = jax.device_get(jax.tree.map(lambda x: x[0], {"params": states.params, "batch_stats": states.batch_stats}))
  loaded = resnet.load_pretrained(path, arch, first)
  runs = jax.tree.leaves(states.step)[0].shape[0]

  def merge(path, stacked, one):
    return stacked if path[0].key == "fc" else jnp.broadcast_to(jnp.asarray(one, stacked.dtype), stacked.shape)

  params = jax.tree_util.tree_map_with_path(merge, states.params, loaded["params"])
  stats = jax.tree_util.tree_map_with_path(merge, states.batch_stats, loaded["batch_stats"])
  assert runs == jax.tree.leaves(params)[0].shape[0]
  return states.replace(params=params, batch_stats=stats)


def _check_group_dir(group_dir: Path, runs: list[Run], resumable: bool) -> dict:
  now = {"runs": [loop.fingerprint(r.config) for r in runs]}
  saved = group_dir / "config.json"
  if resumable and saved.is_file() and json.loads(saved.read_text()) != json.loads(json.dumps(now)):
    raise UserError(f"{group_dir} holds checkpoints of other runs (their configs changed): rerun with the same "
                    "configs to resume, or remove that directory to start those runs again")
  return now


def train_group(runs: list[Run], programs: Programs, group_dir: str | os.PathLike, *, quiet: bool = False) -> list[dict]:
  """Trains (or resumes) the runs as one program; returns each run's final metrics (as train.py's metrics.json)."""
  if not runs:
    return []
  for r in runs:
    loop.check_config(r.config)
    loop.check(r.config, r.data)
  c = runs[0].config
  spe = loop.steps_per_epoch(c, runs[0].data)
  keys = {group_key(r.config, r.data, loop.steps_per_epoch(r.config, r.data)) for r in runs}
  if len(keys) != 1:
    raise ValueError("runs of one group must agree on their program settings (multirun.group_key)")
  spec = ProgramSpec.of(c, runs[0].data.train.num_classes, spe)
  group_dir = Path(os.path.expanduser(str(group_dir)))
  loop.open_workdir(group_dir, lambda: None)
  with locks.hold_run(group_dir, jax.process_index(), jax.process_count(), "batched training run",
                      "experiment output directory"):
    return _train_group(runs, programs.get(spec, mesh.data_mesh()), spec, group_dir, quiet)


def _train_group(runs: list[Run], compiled: Compiled, spec: ProgramSpec, group_dir: Path, quiet: bool) -> list[dict]:
  """The group's training, while this process holds its slot of the group directory."""
  c = runs[0].config
  mesh_ = mesh.data_mesh()
  mngr = loop.open_workdir(group_dir, lambda: checkpoint.manager(str(group_dir / "checkpoints")))
  latest = mngr.latest_step()
  group_config = _check_group_dir(group_dir, runs, resumable=latest is not None)
  workdirs = [Path(os.path.expanduser(r.config.workdir)) for r in runs]
  primary = jax.process_index() == 0
  if primary:
    evaluate.write_json(str(group_dir / "config.json"), group_config)
    for r, w in zip(runs, workdirs):
      w.mkdir(parents=True, exist_ok=True)
      evaluate.write_json(str(w / "config.json"), loop.fingerprint(r.config))

  hosts = jax.process_count()
  streams = _Streams([data_lib.train_input(
      r.data.train, r.data.synthetic, mix=r.config.mix, fraction=r.config.synthetic_fraction,
      batch_size=r.config.batch_size // hosts, total_steps=spec.total_steps, size=r.config.load_size,
      seed=r.config.seed, shard=(jax.process_index(), hosts), num_threads=r.config.num_threads,
      num_workers=r.config.num_workers) for r in runs])
  seeds = jnp.asarray([r.config.seed for r in runs], jnp.uint32)
  if latest is None:
    states, start = compiled.init(seeds), 0
    if c.pretrained:
      states = jax.device_put(_load_pretrained(c.pretrained, c.model, states), mesh.replicated(mesh_))
  else:  # loop.py's resume, damaged-checkpoint fallback included, with the stacked state and streams
    states, start, _ = loop.resume(mngr, compiled.init(seeds), streams, group_dir)  # its saves leave no window
    logging.info("group %s resumed from step %d", group_dir.name, start)
  histories = [loop.History(w / "metrics.jsonl", start, spec.total_steps) for w in workdirs]
  prior = step_lib.log_prior(c.loss, runs[0].data.train.counts())
  eval_source = runs[0].data.eval

  def evaluate_all(states) -> list[dict]:
    batches = data_lib.eval_input(eval_source, batch_size=c.eval_batch_size // hosts, size=c.load_size,
                                  shard=(jax.process_index(), hosts), num_threads=c.num_threads)
    correct, count = evaluate.run(compiled.eval_step, states, batches, functools.partial(mesh.to_global, mesh_))
    return [evaluate.summarize(correct[i], count[i], r.data.train.counts(), r.data.train.class_names)
            for i, r in enumerate(runs)]

  progress = _progress(spec.total_steps, start, len(runs), quiet or not primary)
  window, since = [], time.perf_counter()
  for step in range(start + 1, spec.total_steps + 1):
    batch = _runs_to_global(mesh_, next(streams))
    states, metrics = compiled.train_step(states, batch, prior)
    window.append(metrics)
    progress.update()
    save = step % c.checkpoint_every == 0 or step == spec.total_steps
    if step % c.log_every == 0 or save:  # as train.py: windows end at checkpoints, so resumed logs match
      host = jax.device_get(window)
      rate = len(window) * c.batch_size / (time.perf_counter() - since)
      for i, h in enumerate(histories):
        means = {k: float(np.mean([float(m[k][i]) for m in host])) for k in host[0]}
        h.add({"step": step, **means, "images_per_s": round(rate, 1)})
      window, since = [], time.perf_counter()
    if c.eval_every and step % c.eval_every == 0 and step < spec.total_steps:
      for h, summary in zip(histories, evaluate_all(states)):
        h.add(loop.eval_record(step, summary))
    if save:
      checkpoint.save(mngr, step, states, streams.get_state())
  progress.close()
  streams.close()
  mngr.wait_until_finished()
  mngr.close()

  return [loop.finish_run(h, w, spec.total_steps, summary, r.data)
          for h, w, summary, r in zip(histories, workdirs, evaluate_all(states), runs)]


def _progress(total: int, initial: int, runs: int, disable: bool):
  import sys

  from tqdm import tqdm

  return tqdm(total=total, initial=initial, disable=disable, unit="step", desc=f"training {runs} run(s)",
              file=sys.stderr, dynamic_ncols=True, smoothing=0.1, leave=False)
