"""Batched runs (train_lib/multirun.py): R runs as one program equal R separate train.py runs."""

import json
import shutil
from pathlib import Path

import pytest

from jaxaug import train
from jaxaug.data import open_source
from jaxaug.errors import UserError
from jaxaug.train_lib import loop, multirun
from test_train import demo_config, make_synthetic

SMALL = dict(real="demo:4", load_size=20, crop_size=16, batch_size=8, eval_batch_size=16, epochs=2, steps_per_epoch=4,
             log_every=2, eval_every=4, checkpoint_every=4, lr=0.05, num_threads=2, mix="swap")
# (seed, synthetic method): a real-only run beside two of one synthetic set's methods, as in a grid cell.
RUNS = ((0, None), (1, "mixup"), (2, "cutmix"))


def _history(workdir):
  lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(l).items() if k != "images_per_s"} for l in lines]


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
  out = tmp_path_factory.mktemp("syn")
  return make_synthetic(str(out), open_source("demo:4", "train"), 2, methods=("mixup", "cutmix")).out


def _config(workdir, syn, seed, method):
  config = demo_config(workdir, seed=seed, **SMALL)
  config.synthetic, config.synthetic_method = (str(syn), method) if method else ("", "")
  return config


# How close "equal" is. The flat demo shapes repeat one pre-activation value over hundreds of positions (57% of
# neighbouring pixels are equal); where that value sits within rounding of ReLU's kink, the vmapped program's other
# summation order can flip the gradient mask of all those positions at once. Measured on jax 0.12.0.1 (CPU), one
# step from identical inputs: loss equal to 1e-7 but the stem's kernel moved by 5e-4 (channels with values within
# 1e-4 of the kink); after 8 steps one run's loss was 0.5% off. On jax 0.10.2 every loss agreed to 1e-7. A run given
# another run's seed, data or state is off by far more: the runs' own losses differ pairwise by over 10% (checked).
LOSS_REL = 2e-2


def _same_history(workdir, other):
  """The runs' metrics.jsonl agree record by record, within LOSS_REL and one image."""
  a, b = _history(workdir), _history(other)
  assert [r["step"] for r in a] == [r["step"] for r in b] and [sorted(r) for r in a] == [sorted(r) for r in b]
  for ra, rb in zip(a, b):
    for k in ra:  # loss; accuracy over a window of 2 batches of 8 and top-1 over 16 images: one image each
      slack = dict(rel=LOSS_REL) if k == "loss" else dict(abs=1 / 16 + 1e-6)
      assert rb[k] == (None if ra[k] is None else pytest.approx(ra[k], **slack)), (workdir.name, ra["step"], k)


def test_batched_runs_equal_separate_runs(tmp_path, syn):
  separate = [train.train_and_evaluate(_config(tmp_path / f"alone{s}", syn, s, m)) for s, m in RUNS]
  programs = multirun.Programs()
  runs = [multirun.Run(c, loop.open_data(c)) for c in (_config(tmp_path / f"run{s}", syn, s, m) for s, m in RUNS)]
  batched = multirun.train_group(runs, programs, tmp_path / "group", quiet=True)
  for (seed, _), alone, together in zip(RUNS, separate, batched):
    assert together["train_loss"] == pytest.approx(alone["train_loss"], rel=LOSS_REL), seed
    for key in ("top1", "best_top1"):
      assert together[key] == pytest.approx(alone[key], abs=1 / 16 + 1e-6), (seed, key)  # one of 16 images
    _same_history(tmp_path / f"alone{seed}", tmp_path / f"run{seed}")
    assert json.loads((tmp_path / f"run{seed}" / "metrics.json").read_text()) == json.loads(json.dumps(together))
  # The runs really differ from each other (own seeds, own data), by much more than the tolerance above.
  losses = sorted(r["train_loss"] for r in batched)
  assert all(b > a * (1 + 5 * LOSS_REL) for a, b in zip(losses, losses[1:])), losses
  # One compile each of init, train step and eval step; a second group of the same shapes compiles nothing.
  assert dict(programs.traces) == {"init": 1, "train_step": 1, "eval_step": 1}
  more = [multirun.Run(c, loop.open_data(c)) for c in (_config(tmp_path / f"more{s}", syn, s + 10, m)
                                                          for s, m in RUNS)]
  multirun.train_group(more, programs, tmp_path / "group2", quiet=True)
  assert programs.compiles == 3


def test_two_processes_train_a_group_as_one_process_does(tmp_path, syn):
  """Each host of a multi-host group reads its share of every run's batch (multirun's host sharding): two
  processes joined by jax.distributed over localhost end where one process does, run by run."""
  import os
  import socket
  import subprocess
  import sys

  runs = [multirun.Run(c, loop.open_data(c)) for c in (_config(tmp_path / f"one{s}", syn, s, m) for s, m in RUNS)]
  one = multirun.train_group(runs, multirun.Programs(), tmp_path / "one_group", quiet=True)
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
  probe = Path(__file__).resolve().parent / "multirun_probe.py"
  procs = [subprocess.Popen([sys.executable, str(probe), str(tmp_path / "two"), str(syn), f"localhost:{port}", "2",
                             str(rank)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for rank in range(2)]
  for proc in procs:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
  two = json.loads((tmp_path / "two" / "results.json").read_text())
  assert (two["processes"], two["devices"]) == (2, 2)
  for (seed, _), alone, together in zip(RUNS, one, two["results"]):
    assert together["train_loss"] == pytest.approx(alone["train_loss"], rel=LOSS_REL), seed
    for key in ("top1", "best_top1"):
      assert together[key] == pytest.approx(alone[key], abs=1 / 16 + 1e-6), (seed, key)
    _same_history(tmp_path / f"one{seed}", tmp_path / "two" / f"run{seed}")
  losses = sorted(r["train_loss"] for r in two["results"])  # and the runs still differ from each other
  assert all(b > a * (1 + 5 * LOSS_REL) for a, b in zip(losses, losses[1:])), losses


def test_vmapped_and_looped_runs_take_the_same_step():
  """The two ways one program carries the runs (multirun.default_run_axis) compute the same thing."""
  import jax
  import numpy as np

  from jaxaug import mesh

  spec = multirun.ProgramSpec(arch="resnet_tiny", num_classes=4, linear_probe=False, optimizer="sgd", lr=0.05,
                              momentum=0.9, weight_decay=0.0, warmup_steps=0, total_steps=4, label_smoothing=0.0,
                              crop=16, transform="flip_rotate")
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (3, 8, 20, 20, 3), dtype=np.uint8), "label": rng.integers(0, 4, (3, 8))}
  evaluation = {"image": batch["image"][0], "label": batch["label"][0], "mask": np.ones(8, bool)}
  out = {}
  for axis in multirun.RUN_AXES:
    compiled = multirun.Programs(run_axis=axis).get(spec, mesh.data_mesh())
    states = compiled.init(jax.numpy.asarray([0, 1, 2], jax.numpy.uint32))
    states, metrics = compiled.train_step(states, multirun._runs_to_global(mesh.data_mesh(), batch),
                                          jax.numpy.zeros(4))
    out[axis] = jax.device_get((metrics, states.params, compiled.eval_step(states, evaluation)))
  (m_v, p_v, e_v), (m_u, p_u, e_u) = out["vmap"], out["loop"]
  for k in m_v:
    np.testing.assert_allclose(m_u[k], m_v[k], rtol=1e-5, atol=1e-6)
  assert len(set(np.round(np.asarray(m_v["loss"]), 4))) == 3  # three runs, three losses: the run axis is real
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), p_u, p_v)
  jax.tree.map(np.testing.assert_array_equal, e_u, e_v)
  with pytest.raises(ValueError, match="run_axis"):
    multirun.Programs(run_axis="unroll")


def test_a_resumed_group_ends_where_an_uninterrupted_one_does(tmp_path, syn):
  def runs(prefix, epochs):
    configs = [_config(tmp_path / f"{prefix}{s}", syn, s, m) for s, m in RUNS[:2]]
    for c in configs:
      c.epochs = epochs
    return [multirun.Run(c, loop.open_data(c)) for c in configs]

  programs = multirun.Programs()
  whole = multirun.train_group(runs("whole", 2), programs, tmp_path / "whole_group", quiet=True)
  # As a kill between the checkpoints of steps 4 and 8 would leave it: the last checkpoint and a result gone.
  shutil.rmtree(tmp_path / "whole_group" / "checkpoints" / "8")
  (tmp_path / "whole0" / "metrics.json").unlink()
  again = multirun.train_group(runs("whole", 2), programs, tmp_path / "whole_group", quiet=True)
  assert [r["top1"] for r in again] == [r["top1"] for r in whole]
  assert [r["train_loss"] for r in again] == [r["train_loss"] for r in whole]
  assert _history(tmp_path / "whole0")[-1]["step"] == 8

  with pytest.raises(UserError, match="holds checkpoints of other runs"):
    changed = runs("whole", 2)
    changed[0].config.synthetic_fraction = 0.25
    multirun.train_group(changed, programs, tmp_path / "whole_group", quiet=True)


def test_bench_experiment_times_both_ways_and_counts_compiles():
  import argparse

  from jaxaug import bench

  result = bench.bench_experiment(argparse.Namespace(runs=2, train_steps=2, train_size=16))
  assert result["training_runs"] == 2 and result["one_at_a_time_s"] > 0 and result["batched_s"] > 0
  assert result["run_axis"] == "loop" and sorted(result["batched_s_by_run_axis"]) == ["loop", "vmap"]
  assert result["batched_s"] == result["batched_s_by_run_axis"]["loop"]
  assert result["batched_runs_per_hour"] == pytest.approx(2 / result["batched_s"] * 3600)
  assert result["training_programs_traced_batched"] == 3  # init, train step, eval step: once for both runs
  # Two runs as one group build no more XLA programs than two runs one at a time (measured 9 and 9 on jax 0.10.2).
  assert result["xla_programs_built_batched"] <= result["xla_programs_built_one_at_a_time"]
