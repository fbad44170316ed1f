"""One training run, as `python -m jaxaug.train` does it: the data opened and checked, the compiled steps
(Trainer), the loop with its checkpoints, resume and logs, and the final evaluation.

train.py is the command over `train_and_evaluate`; train_lib/multirun.py trains several runs as one program with
the same checks, fingerprint, resume, history and final records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import json
import logging as std_logging
import os
import shutil
import signal
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxaug import evaluate, fsutil, interrupt, locks, mesh
from jaxaug.config_base import TRAINING_RANGES, check_values
from jaxaug.data import keep, kshot, open_source
from jaxaug.data.sources import ImageSource, describe
from jaxaug.data.synthetic import SyntheticSource
from jaxaug.errors import UserError
from jaxaug.models import resnet
from jaxaug.train_lib import checkpoint, data as data_lib, step as step_lib

# Config fields a rerun may change without changing the run (each host has its own mesh.process_id; a
# workdir may be moved; allowing a partial synthetic set is a permission, not a setting).
_LOCAL_FIELDS = ("mesh", "workdir", "allow_partial_synthetic", "stop_grace_s")


@dataclasses.dataclass
class Data:
  train: ImageSource  # real training images (the k-shot subset when shots > 0)
  eval: ImageSource
  synthetic: ImageSource | None
  keep: dict | None = None  # the keep list applied to the synthetic set: file, rule, encoder, k, kept, dropped


class Opened:
  """Sources opened once and shared by the runs that read them (an experiment column's rows and seeds): each real
  split, each k-shot subset and each synthetic set (its completeness checked and its shards scanned once)."""

  def __init__(self):
    self._sources: dict[tuple, ImageSource] = {}

  def get(self, key: tuple, open_: Callable[[], ImageSource]) -> ImageSource:
    if key not in self._sources:
      self._sources[key] = open_()
    return self._sources[key]


def open_data(config, opened: Opened | None = None) -> Data:
  """The run's real splits and synthetic set; `opened` shares them with other runs of the same data."""
  opened = opened or Opened()
  real = lambda split: opened.get(("real", config.real, split), lambda: open_source(config.real, split))
  train = real(config.train_split)
  if config.shots:
    train = opened.get(("kshot", config.real, config.train_split, config.shots, config.shots_seed),
                       lambda: training_split(config, train))
  synthetic, kept = None, None
  if config.synthetic:
    synthetic = opened.get(("synthetic", config.synthetic, config.allow_partial_synthetic),
                           lambda: open_synthetic(config))
    mask = None
    if config.synthetic_keep:
      mask, kept = keep.read(config.synthetic_keep, synthetic, config.synthetic)
      kept = {**kept, "kept": int(mask.sum()), "dropped": int((~mask).sum())}
      logging.info("keep list %s (%s by %s): training on %d of the %d synthetic images, %d dropped", kept["file"],
                   kept["rule"], kept["encoder"], kept["kept"], len(mask), kept["dropped"])
    if config.synthetic_method or mask is not None:
      synthetic = data_lib.select_synthetic(synthetic, config.synthetic_method, mask, config.synthetic)
  return Data(train=train, eval=real(config.eval_split), synthetic=synthetic, keep=kept)


def training_split(config, source: ImageSource) -> ImageSource:
  """The real training images a run uses: `source` (its train split), or its k-shot subset when `shots` > 0."""
  return kshot(source, config.shots, config.shots_seed) if config.shots else source


def open_synthetic(config) -> SyntheticSource:
  """The synthetic set, refused when incomplete (unless allowed) or when a shard is damaged."""
  synthetic = SyntheticSource(os.path.expanduser(config.synthetic))
  check_complete(synthetic, config.allow_partial_synthetic, config.synthetic)
  synthetic.check_shards()
  return synthetic


def check_complete(synthetic: SyntheticSource, allow_partial: bool, where: str) -> None:
  """A set whose generation has not finished is refused, unless asked for; then the share used is logged."""
  units, planned = synthetic.info.get("units"), synthetic.info.get("planned_items")
  if units is None or synthetic.units_done >= units:  # complete, or hand-made without a plan
    return
  share = (f"{synthetic.units_done} of {units} units done, {len(synthetic)} of {planned} planned images "
           f"({100 * len(synthetic) / max(planned or 1, 1):.0f}%)")
  if not allow_partial:
    raise UserError(f"synthetic set {where} is incomplete ({share}): finish it by rerunning the `python -m "
                    "jaxaug.generate` command that made it, or set --config.allow_partial_synthetic=True to train on "
                    "what is there")
  logging.warning("training on a partial synthetic set, as allow_partial_synthetic asks: %s holds %s", where, share)


def check_config(config) -> None:
  """Every value and setting a training config can get wrong, checked before any data is opened (one line,
  exit 2): config_base's ranges, then the choices and the fields that must agree with each other."""
  check_values(config, TRAINING_RANGES)
  for field, allowed in (("loss", step_lib.LOSSES), ("optimizer", step_lib.OPTIMIZERS), ("mix", data_lib.MIXES),
                         ("transform", step_lib.TRANSFORMS)):
    if config[field] not in allowed:
      raise UserError(f"unknown {field} {config[field]!r}: set --config.{field} to one of {', '.join(allowed)}")
  if config.model not in resnet.ARCHS:
    raise UserError(f"unknown model {config.model!r}: set --config.model to one of {', '.join(resnet.ARCHS)}")
  for field, unit in (("batch_size", jax.device_count()), ("eval_batch_size", jax.device_count())):
    if config[field] % unit:
      raise UserError(f"{field} {config[field]} must be a positive multiple of the {unit} devices")
  if config.crop_size > config.load_size:
    raise UserError(f"crop_size {config.crop_size} is larger than load_size {config.load_size}: crops come from "
                    "the loaded squares, so make load_size >= crop_size")
  if config.synthetic_keep and not config.synthetic:
    raise UserError(f"--config.synthetic_keep={config.synthetic_keep} is a keep list of a synthetic set: pass the set "
                    "as --config.synthetic, or drop --config.synthetic_keep")
  if config.linear_probe and not config.pretrained:
    raise UserError("linear_probe needs a frozen pretrained backbone: set --config.pretrained=<torchvision or "
                    "timm .safetensors file>")
  if config.pretrained:
    resnet.check_pretrained(config.pretrained)


def check(config, data: Data) -> None:
  """What needs the data (after `check_config`): two or more classes, none empty, the same classes in the
  evaluation split and the synthetic set, and a synthetic set with images."""
  if data.train.num_classes < 2:
    raise UserError(f"{config.real} ({config.train_split}) has {data.train.num_classes} class: a classifier needs "
                    "at least two; point --config.real at a dataset with two or more classes")
  data_lib.check_no_empty_class(data.train, f"{config.real} ({config.train_split})")
  if tuple(data.eval.class_names) != tuple(data.train.class_names):
    raise UserError(f"split {config.eval_split} of {config.real} has other classes than {config.train_split}: "
                    "evaluate on a split of the same dataset")
  if data.synthetic is not None:
    data_lib.check_classes(data.train, data.synthetic, config.synthetic)
    if len(data.synthetic) == 0:
      raise UserError(f"synthetic set {config.synthetic} has no images yet: finish generating it, or set "
                      "--config.synthetic=''")


def steps_per_epoch(config, data: Data) -> int:
  """The paper's epoch: one pass over the synthetic set in the batch mix, else over the real set."""
  if config.steps_per_epoch:
    return config.steps_per_epoch
  n_syn = data_lib.synthetic_per_batch(config.mix, config.synthetic_fraction, config.batch_size,
                                      data.synthetic is not None)
  if n_syn:
    return max(1, len(data.synthetic) // n_syn)
  return max(1, len(data.train) // config.batch_size)


def compute_dtype():
  """bf16 on accelerators, fp32 on CPU (exact, and what the resume test compares bit for bit)."""
  return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16


def fingerprint(config) -> dict:
  return {k: v for k, v in json.loads(config.to_json()).items() if k not in _LOCAL_FIELDS}


def _check_workdir(workdir: Path, config, resumable: bool) -> None:
  """A workdir with checkpoints belongs to its config; a changed config cannot resume from them."""
  saved = workdir / "config.json"
  if resumable and saved.exists():
    try:
      before = json.loads(saved.read_bytes())
      if not isinstance(before, dict):
        raise ValueError("not a config")
    except (OSError, ValueError) as e:
      raise UserError(f"{saved} is unreadable ({type(e).__name__}: {e}) and {workdir} holds checkpoints: if this "
                      f"command made them, move it aside (mv {saved} {saved}.bad) and rerun to resume; otherwise use "
                      "a new --config.workdir") from None
    now = fingerprint(config)
    changed = sorted(k for k in (set(before) | set(now)) - set(_LOCAL_FIELDS) if before.get(k) != now.get(k))
    if changed:
      raise UserError(f"{workdir} holds checkpoints of a run with another config ({', '.join(changed)} changed): "
                      "rerun with the same config to resume, or use a new --config.workdir")


def open_workdir(workdir: Path, make) -> object:
  """`make()` once the workdir exists (first the directory, later its checkpoint manager); a workdir that
  cannot be one is a user error."""
  if workdir.exists() and not workdir.is_dir():
    raise UserError(f"workdir {workdir} is a file, not a directory: set --config.workdir to a directory (new, or a "
                    "run's to resume it)")
  fsutil.make_dirs(workdir, "workdir", "--config.workdir")
  try:
    return make()
  except OSError as e:
    raise UserError(f"workdir {workdir} cannot be used ({e.strerror or e}): set --config.workdir to a writable "
                    "directory") from None


def resume(mngr, like, stream, workdir: Path) -> tuple[object, int, list[dict]]:
  """The newest checkpoint that restores on every host, its step and the log window it left open; damaged
  newer ones are moved aside.

  `like` is a freshly initialised state: the structure and shardings a checkpoint is restored into.
  """
  failed = []
  with _quiet_unraisable():
    for step in sorted(mngr.all_steps(), reverse=True):
      try:
        state, input_state = checkpoint.restore(mngr, step, like)
        window = input_state.pop(_WINDOW, [])
        stream.set_state(input_state)
        cause = None
      except Exception as e:  # orbax, tensorstore and json raise many types for a damaged checkpoint
        cause = _first_line(e)
      if mesh.on_every_host(cause is None):
        break
      failed.append((step, cause or "it does not restore on another host"))
  if len(failed) == len(mngr.all_steps()):
    causes = "; ".join(f"step {s}: {c}" for s, c in failed)
    raise UserError(f"no checkpoint in {workdir / 'checkpoints'} restores ({causes}): move {workdir} aside to start "
                    "over, or set another --config.workdir")
  if failed:  # moved aside, so the run can save those steps again
    mesh.barrier("restored")
    if jax.process_index() == 0:
      aside = workdir / "damaged_checkpoints" / time.strftime("%Y%m%d-%H%M%S")
      aside.mkdir(parents=True, exist_ok=True)
      for bad, cause in failed:
        os.replace(workdir / "checkpoints" / str(bad), aside / str(bad))
        logging.warning("checkpoint step %d does not restore (%s): resuming from step %d; the damaged step is moved to "
                        "%s", bad, cause, step, aside / str(bad))
    mesh.barrier("moved aside")
    mngr.reload()
  return state, int(step), window


# A checkpoint saved on a signal between log steps carries the metrics of the log window it interrupted
# (under this key of its input state), so the resumed run logs exactly what an uninterrupted one logs.
_WINDOW = "_log_window"


@contextlib.contextmanager
def _quiet_unraisable():
  """Orbax leaves a coroutine per array un-awaited when a damaged checkpoint fails to restore; Python reports each
  one as 'Exception ignored in: <coroutine ...>' when it is collected. The one-line warning says it all."""
  before = sys.unraisablehook

  def hook(unraisable):
    abandoned = isinstance(unraisable.object, types.CoroutineType) or (
        isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value))
    if not abandoned:  # (its coroutines are closed after orbax's event loop, which then reports that instead)
      before(unraisable)

  sys.unraisablehook = hook
  try:
    yield
  finally:
    gc.collect()  # the failed restore's coroutines are collected here, under the hook
    sys.unraisablehook = before


def _first_line(e: Exception) -> str:
  """The gist of an error: its type and first sentence (orbax and tensorstore append pages of detail)."""
  text = str(e).strip().splitlines()[0].split(". ")[0][:160] if str(e).strip() else ""
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


class Trainer:
  """The compiled steps, the mesh and the run's constants."""

  def __init__(self, config, data: Data):
    self.config = config
    self.data = data
    self.mesh = mesh.data_mesh()
    self.steps_per_epoch = steps_per_epoch(config, data)
    self.total_steps = config.epochs * self.steps_per_epoch
    self.model = resnet.create(config.model, data.train.num_classes, frozen_backbone=config.linear_probe,
                               dtype=compute_dtype())
    self.tx = step_lib.optimizer(
        config.optimizer, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
        warmup_steps=round(config.warmup_epochs * self.steps_per_epoch), total_steps=self.total_steps,
        linear_probe=config.linear_probe)
    replicated, batch = mesh.replicated(self.mesh), mesh.batch_sharding(self.mesh)
    prior = step_lib.log_prior(config.loss, data.train.counts())
    self.init = jax.jit(functools.partial(step_lib.init_state, self.model, self.tx, config.seed, config.crop_size),
                        out_shardings=replicated)
    self.train_step = jax.jit(
        functools.partial(step_lib.train_step, model=self.model, tx=self.tx, prior=prior,
                          label_smoothing=config.label_smoothing, crop=config.crop_size,
                          transform=config.transform),
        in_shardings=(replicated, batch), out_shardings=(replicated, replicated), donate_argnums=0)
    self.eval_step = jax.jit(functools.partial(step_lib.eval_step, model=self.model, crop=config.crop_size),
                             in_shardings=(replicated, batch), out_shardings=replicated)

  def shard(self) -> tuple[int, int]:
    return jax.process_index(), jax.process_count()

  def initial_state(self):
    state = self.init()
    if self.config.pretrained:
      variables = resnet.load_pretrained(self.config.pretrained, self.config.model,
                                         jax.device_get({"params": state.params, "batch_stats": state.batch_stats}))
      variables = jax.device_put(variables, mesh.replicated(self.mesh))
      state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
    return state

  def train_input(self) -> data_lib.TrainInput:
    c = self.config
    return data_lib.train_input(
        self.data.train, self.data.synthetic, mix=c.mix, fraction=c.synthetic_fraction,
        batch_size=c.batch_size // jax.process_count(), total_steps=self.total_steps, size=c.load_size,
        seed=c.seed, shard=self.shard(), num_threads=c.num_threads, num_workers=c.num_workers)

  def evaluate(self, state) -> dict:
    c = self.config
    batches = data_lib.eval_input(self.data.eval, batch_size=c.eval_batch_size // jax.process_count(),
                                  size=c.load_size, shard=self.shard(), num_threads=c.num_threads)
    correct, count = evaluate.run(self.eval_step, state, batches, functools.partial(mesh.to_global, self.mesh))
    return evaluate.summarize(correct, count, self.data.train.counts(), self.data.train.class_names)


def _read_history(path: Path, upto: int, total: int) -> list[dict]:
  """metrics.jsonl records up to the resumed step; later ones (and a final evaluation) will be made again."""
  if not path.is_file():
    return []
  history = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      break  # a torn last line from a kill
    if record["step"] < upto or (record["step"] == upto and ("loss" in record or upto < total)):
      history.append(record)
  return history


class History:
  """metrics.jsonl on process 0, rewritten on resume to what the restored step had logged."""

  def __init__(self, path: Path, upto: int, total: int):
    self.path = path
    self.records = _read_history(path, upto, total)
    self.primary = jax.process_index() == 0
    if self.primary:
      fsutil.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.records))

  def add(self, record: dict) -> None:
    self.records.append(record)
    if self.primary:
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")


def eval_record(step: int, summary: dict) -> dict:
  return {"step": step, **{k: summary[k] for k in ("top1",) + evaluate.GROUPS}}


def _stop_at(stop: interrupt.StepStop, mngr, step: int, state, stream, window: list, saved: bool, progress) -> None:
  """After a signal: a checkpoint of this step (with its open log window), the line, exit 130 / 143."""
  progress.close()
  if not saved:
    open_window = [{k: float(v) for k, v in m.items()} for m in window]
    checkpoint.save(mngr, step, state, {**stream.get_state(), _WINDOW: open_window})
  mngr.wait_until_finished()
  mngr.close()
  stream.close()
  mesh.leave()
  name = signal.Signals(stop.requested).name
  stop.exit(f"jaxaug: interrupted by {name} at step {step}: checkpoint {step} kept; rerun the same command to "
            "continue")


def _abandon(workdir: Path, grace_s: float, name: str, step: int) -> None:
  """The grace time ran out before a checkpoint of the step reached was committed: remove what orbax had begun
  (its temporary directory) and say which checkpoint the rerun starts from."""
  directory = workdir / "checkpoints"
  for partial in directory.glob("*.orbax-checkpoint-tmp*"):
    shutil.rmtree(partial, ignore_errors=True)
  steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if directory.is_dir() else []
  kept = f"checkpoint {max(steps)} kept" if steps else "no checkpoint yet, the rerun starts over"
  if not steps or max(steps) < step:
    kept = f"no checkpoint of it within the {grace_s:g} s grace (--config.stop_grace_s); {kept}"
  print(f"\njaxaug: interrupted by {name} at step {step}: {kept}; rerun the same command to continue",
        file=sys.stderr, flush=True)


def finish_run(history: History, workdir: Path, total_steps: int, summary: dict, data: Data) -> dict:
  """The final evaluation's record, metrics.json (with the run's best top-1 and last loss, and the keep list applied
  to its synthetic set) and the pictures."""
  history.add(eval_record(total_steps, summary))
  train_records = [r for r in history.records if "loss" in r]
  summary = {"step": total_steps, "train_loss": train_records[-1]["loss"] if train_records else None,
             "best_top1": max(r["top1"] for r in history.records if "top1" in r), **summary,
             **({"synthetic_keep": data.keep} if data.keep else {})}
  if jax.process_index() == 0:
    evaluate.write_json(str(workdir / "metrics.json"), summary)
    evaluate.curves_png(history.records, str(workdir / "curves.png"))
    evaluate.per_class_png(summary, str(workdir / "per_class.png"))
  return summary


def quiet_orbax(record) -> bool:
  """A log filter: orbax logs every checkpoint step at INFO; keep its warnings only."""
  return "orbax" not in record.pathname or record.levelno >= std_logging.WARNING


def _progress(total: int, initial: int):
  from tqdm import tqdm

  return tqdm(total=total, initial=initial, disable=jax.process_index() != 0, unit="step", desc="training",
              file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def train_and_evaluate(config, data: Data | None = None) -> dict:
  """Trains (or resumes) in config.workdir and returns the final metrics (also in metrics.json)."""
  check_config(config)
  data = data or open_data(config)
  check(config, data)
  trainer = Trainer(config, data)
  workdir = Path(os.path.expanduser(config.workdir))
  open_workdir(workdir, lambda: None)  # makes it; a file or an unwritable path is one line
  with locks.hold_run(workdir, jax.process_index(), jax.process_count(), "training run", "--config.workdir"):
    return _train(config, data, trainer, workdir)


def _train(config, data: Data, trainer: Trainer, workdir: Path) -> dict:
  """The run itself, while this process holds its slot of the workdir (nothing is written before)."""
  mngr = open_workdir(workdir, lambda: checkpoint.manager(str(workdir / "checkpoints")))
  latest = mngr.latest_step()
  _check_workdir(workdir, config, resumable=latest is not None)
  if jax.process_index() == 0:
    evaluate.write_json(str(workdir / "config.json"), fingerprint(config))
  logging.info("real train: %s; eval: %s; synthetic: %s", describe(data.train), describe(data.eval),
               describe(data.synthetic) if data.synthetic is not None else "none")
  logging.info("%s, %d steps (%d per epoch), batch %d on %d devices, %s", config.model, trainer.total_steps,
               trainer.steps_per_epoch, config.batch_size, jax.device_count(), jnp.dtype(compute_dtype()).name)

  stream = trainer.train_input()
  window = []  # the metrics of the steps since the last logged one
  if latest is None:
    state, start = trainer.initial_state(), 0
  else:
    state, start, window = resume(mngr, trainer.init(), stream, workdir)
    logging.info("resumed from step %d", start)
  history = History(workdir / "metrics.jsonl", start, trainer.total_steps)

  to_global = functools.partial(mesh.to_global, trainer.mesh)
  since = time.perf_counter()
  stopper = interrupt.StepStop(config.stop_grace_s, functools.partial(_abandon, workdir, config.stop_grace_s))
  with _progress(trainer.total_steps, start) as progress, stopper as stop:  # an error's line starts on its own line
    for step in range(start + 1, trainer.total_steps + 1):
      state, metrics = trainer.train_step(state, to_global(next(stream)))
      window.append(metrics)
      progress.update()
      save = step % config.checkpoint_every == 0 or step == trainer.total_steps
      if step % config.log_every == 0 or save:  # windows end at checkpoints, so resumed logs match
        means = {k: float(np.mean([float(m[k]) for m in window])) for k in window[0]}
        rate = len(window) * config.batch_size / (time.perf_counter() - since)
        history.add({"step": step, **means, "images_per_s": round(rate, 1)})
        progress.set_postfix(loss=f"{means['loss']:.3f}", img_s=f"{rate:.0f}")
        window, since = [], time.perf_counter()
      if config.eval_every and step % config.eval_every == 0 and step < trainer.total_steps:
        summary = trainer.evaluate(state)
        history.add(eval_record(step, summary))
        logging.info("step %d: eval top-1 %.4f", step, summary["top1"])
      if save:
        checkpoint.save(mngr, step, state, stream.get_state())
      if step < trainer.total_steps and mesh.max_over_hosts(int(stop.should_stop(step))):
        _stop_at(stop, mngr, step, state, stream, window, saved=save, progress=progress)
    progress.close()
    stream.close()
    mngr.wait_until_finished()
    mngr.close()
    stop.step = trainer.total_steps  # a signal from here on (the final evaluation) keeps the last checkpoint
    summary = finish_run(history, workdir, trainer.total_steps, trainer.evaluate(state), data)
  groups = ", ".join(f"{g} {summary[g]:.4f}" for g in evaluate.GROUPS if summary[g] is not None)
  print(f"top-1 {summary['top1']:.4f} ({groups}) after {trainer.total_steps} steps; results in {workdir}",
        flush=True)
  return summary
