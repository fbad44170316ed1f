"""python -m jaxaug.train: losses, class groups, mixing, the long-tail digits check, user errors, resume, devices."""

import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image
from processes import as_from_a_terminal, python_m

from jaxaug import evaluate, train
from jaxaug.data import keep, open_source, synthetic
from jaxaug.errors import UserError
from jaxaug.models import resnet
from jaxaug.train_lib import data as data_lib, loop, step as step_lib

REPO = Path(__file__).resolve().parent.parent


def make_synthetic(out, source, per_class, methods=("mixup",), class_names=None, unit_size=8):
  """A generated set in the real format (write_unit): inverted copies of the source's images."""
  names = list(class_names or source.class_names)
  items = [(c, int(np.flatnonzero(source.labels == c)[k % int((source.labels == c).sum())]), m)
           for m in methods for c in range(len(names)) for k in range(per_class)]
  for unit, start in enumerate(range(0, len(items), unit_size)):
    records = []
    for item_id in range(start, min(start + unit_size, len(items))):
      label, index, method = items[item_id]
      buffer = io.BytesIO()
      Image.fromarray(255 - source[index].image).save(buffer, format="PNG")
      records.append(synthetic.encode_record(buffer.getvalue(), label, names[label], item_id,
                                             {"method": method, "source_ids": [source.id(index)]}))
    synthetic.write_unit(out, unit, records)
  synthetic.write_info(out, {"class_names": names})
  return synthetic.SyntheticSource(out)


def config_file(name, *arg):
  """get_config(*arg) of configs/<name>.py (config files are loaded by path, not imported as a package)."""
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*arg)


def demo_config(workdir, **fields):
  config = config_file("train_demo")
  config.workdir = str(workdir)
  config.synthetic = ""
  for key, value in fields.items():
    config[key] = value
  return config


# ---------------------------------------------------------------------------
# Losses and groups


def test_balanced_softmax_is_cross_entropy_on_logits_plus_log_counts():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 5))
  labels = rng.integers(0, 5, 6)
  counts = np.array([500, 120, 40, 9, 2])
  prior = step_lib.log_prior("balanced_softmax", counts)
  got = step_lib.classification_loss(jnp.asarray(logits, jnp.float32), labels, prior)
  # -log(n_y e^z_y / sum_j n_j e^z_j), Ren et al. 2020 eq. 4
  weighted = counts * np.exp(logits)
  want = -np.mean(np.log(weighted[np.arange(6), labels] / weighted.sum(1)))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  plain = step_lib.classification_loss(logits, labels, step_lib.log_prior("cross_entropy", counts))
  np.testing.assert_allclose(plain, optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), rtol=1e-6)
  smooth = step_lib.classification_loss(logits, labels, prior, label_smoothing=0.1)
  adjusted = jax.nn.log_softmax(logits + np.log(counts))
  want = -np.mean(0.9 * adjusted[np.arange(6), labels] + 0.1 * adjusted.mean(1))
  np.testing.assert_allclose(smooth, want, rtol=1e-5)


def test_many_medium_few_on_a_known_confusion():
  train_counts = np.array([150, 101, 100, 20, 19, 3, 50])  # many: 0, 1; medium: 2, 3, 6; few: 4, 5
  confusion = np.array([  # rows: true class, columns: predicted
      [9, 1, 0, 0, 0, 0, 0],
      [2, 8, 0, 0, 0, 0, 0],
      [0, 0, 5, 5, 0, 0, 0],
      [0, 0, 0, 4, 0, 0, 0],
      [3, 0, 0, 0, 1, 0, 0],
      [1, 1, 0, 0, 0, 0, 0],
      [0, 0, 0, 0, 0, 0, 0],  # no test images: no accuracy, in no mean
  ])
  summary = evaluate.summarize(np.diag(confusion), confusion.sum(1), train_counts, list("abcdefg"))
  assert summary["top1"] == pytest.approx(27 / 40)
  assert summary["many"] == pytest.approx((0.9 + 0.8) / 2)
  assert summary["medium"] == pytest.approx((0.5 + 1.0) / 2)
  assert summary["few"] == pytest.approx((0.25 + 0.0) / 2)
  assert summary["classes"] == {"many": 2, "medium": 3, "few": 2}
  assert summary["per_class"][6]["accuracy"] is None and summary["per_class"][4]["train_images"] == 19


# ---------------------------------------------------------------------------
# Mixing real and synthetic images


def _solid_source(value, counts, size=8):
  labels = np.repeat(np.arange(len(counts)), counts)
  return data_lib.ArraySource(np.full((len(labels), size, size, 3), value, np.uint8), labels,
                              [f"c{i}" for i in range(len(counts))])


def test_swap_stream_swaps_within_the_class_at_rate_p():
  real = _solid_source(0, [30, 30, 30])
  syn = data_lib.ArraySource(np.full((20, 8, 8, 3), 255, np.uint8), [0] * 10 + [1] * 10, real.class_names)
  stream = data_lib.SwapStream(real, syn, 0.5, seed=3, length=900)
  real_entries = stream.entries < len(real)
  assert np.array_equal(stream.labels, np.concatenate([real.labels, syn.labels])[stream.entries])
  assert not np.any(~real_entries & (stream.labels == 2))  # class 2 has no synthetic images
  assert 0.4 < np.mean(~real_entries[stream.labels < 2]) < 0.6
  for epoch in range(10):  # every real image once per epoch, when not swapped
    chunk = stream.entries[epoch * 90:(epoch + 1) * 90]
    assert len(set(chunk[chunk < 90])) == np.sum(chunk < 90)
  again = data_lib.SwapStream(real, syn, 0.5, seed=3, length=1800)
  assert np.array_equal(again.entries[:900], stream.entries)  # a longer run has the same start


def test_batch_mix_puts_the_synthetic_share_in_every_batch():
  real = _solid_source(0, [12, 12])
  syn = _solid_source(255, [5, 5])
  stream = data_lib.train_input(real, syn, mix="batch", fraction=0.25, batch_size=8, total_steps=10, size=8,
                                seed=0, shard=(0, 1), num_threads=1, num_workers=0)
  for _ in range(6):
    batch = next(stream)
    assert batch["image"].shape == (8, 8, 8, 3)
    assert np.array_equal(batch["image"].reshape(8, -1).max(1), [0] * 6 + [255] * 2)
  stream.close()


@pytest.mark.parametrize("mix, fraction", [("batch", 0.5), ("batch", 0.25), ("swap", 0.5), ("real only", 0.0)])
def test_hosts_batches_side_by_side_are_one_hosts_batch(mix, fraction):
  """Whatever the mix, 3 hosts' batches concatenated are 1 host's batch in order (the train step keys augmentation
  by position), so training takes the same steps on any host count. Batch mix at 0.5 of 6: host 0 reads only real
  images, host 1 one real and one synthetic, host 2 only synthetic."""
  def distinct(first, counts):  # every image its own grey level, so that order shows
    labels = np.repeat(np.arange(len(counts)), counts)
    grey = (first + np.arange(len(labels))).astype(np.uint8)[:, None, None, None]
    return data_lib.ArraySource(np.broadcast_to(grey, (len(labels), 8, 8, 3)).copy(), labels, ["c0", "c1"])

  real, syn = distinct(0, [12, 12]), None if mix == "real only" else distinct(200, [5, 5])

  def batches(host, hosts):
    stream = data_lib.train_input(real, syn, mix="batch" if syn is None else mix, fraction=fraction,
                                  batch_size=6 // hosts, total_steps=10, size=8, seed=0, shard=(host, hosts),
                                  num_threads=1, num_workers=0)
    taken = [next(stream) for _ in range(7)]
    stream.close()
    return taken

  one = batches(0, 1)
  parts = [batches(h, 3) for h in range(3)]
  for step, whole in enumerate(one):
    for key in ("image", "label"):
      assert np.array_equal(whole[key], np.concatenate([p[step][key] for p in parts])), (step, key)
  if mix == "batch":
    synthetic = one[0]["image"].reshape(6, -1).max(1) >= 200
    assert synthetic.tolist() == [False] * (6 - round(6 * fraction)) + [True] * round(6 * fraction)


# ---------------------------------------------------------------------------
# Long tail: Balanced Softmax against cross-entropy on digits


def digits_long_tail(imbalance=50, n_max=140, test_per_class=30, seed=0):
  """scikit-learn's 8x8 digits with n_max * imbalance^(-c/9) train images for class c; a balanced test set."""
  from sklearn.datasets import load_digits

  digits = load_digits()
  images = np.repeat(np.round(digits.images * 255 / 16).astype(np.uint8)[..., None], 3, -1)
  rng = np.random.default_rng(seed)
  train_idx, test_idx = [], []
  for c in range(10):
    members = rng.permutation(np.flatnonzero(digits.target == c))
    test_idx.append(members[:test_per_class])
    train_idx.append(members[test_per_class:test_per_class + round(n_max * imbalance ** (-c / 9))])
  names = [str(c) for c in range(10)]
  train_idx, test_idx = np.concatenate(train_idx), np.concatenate(test_idx)
  return (data_lib.ArraySource(images[train_idx], digits.target[train_idx], names),
          data_lib.ArraySource(images[test_idx], digits.target[test_idx], names))


def test_balanced_softmax_beats_cross_entropy_on_few_classes_of_long_tailed_digits(tmp_path):
  real_train, real_test = digits_long_tail()
  assert real_train.counts().tolist() == [140, 91, 59, 38, 25, 16, 10, 7, 4, 3]
  results = {}
  for loss in ("cross_entropy", "balanced_softmax"):
    config = demo_config(tmp_path / loss, loss=loss, model="resnet_tiny", load_size=8, crop_size=8, transform="none",
                         batch_size=64, eval_batch_size=300, epochs=20, steps_per_epoch=10, lr=0.05,
                         eval_every=0, checkpoint_every=1000, log_every=50)
    results[loss] = train.train_and_evaluate(config, loop.Data(real_train, real_test, None))
  ce, bs = results["cross_entropy"], results["balanced_softmax"]
  print(f"\nlong-tailed digits (1:50), few-group top-1: cross-entropy {ce['few']:.4f}, "
        f"Balanced Softmax {bs['few']:.4f}; overall {ce['top1']:.4f} / {bs['top1']:.4f}")
  assert bs["few"] > ce["few"] + 0.05
  assert bs["top1"] > ce["top1"]


# ---------------------------------------------------------------------------
# Steps


def test_linear_probe_updates_only_the_head():
  model = resnet.create("resnet_tiny", 3, frozen_backbone=True)
  tx = step_lib.optimizer("adam", lr=1e-2, momentum=0.9, weight_decay=0.0, warmup_steps=0, total_steps=10,
                          linear_probe=True)
  state = step_lib.init_state(model, tx, 0, 16)
  batch = {"image": np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8),
           "label": np.array([0, 1, 2, 0], np.int32)}
  step = jax.jit(lambda s, b: step_lib.train_step(s, b, model=model, tx=tx, prior=jnp.zeros(3), label_smoothing=0.0,
                                                  crop=12, transform="crop_flip_jitter"))
  new, _ = step(state, batch)
  new, metrics = step(new, batch)
  assert int(new.step) == 2 and np.isfinite(metrics["loss"])
  for (path, before), after in zip(jax.tree_util.tree_leaves_with_path(state.params), jax.tree.leaves(new.params)):
    assert np.array_equal(before, after) == (path[0].key != "fc"), path
  jax.tree.map(np.testing.assert_array_equal, new.batch_stats, state.batch_stats)


# ---------------------------------------------------------------------------
# User errors


def test_bad_inputs_are_user_errors(tmp_path):
  demo = open_source("demo:4", "train")
  other = make_synthetic(str(tmp_path / "other"), demo, 1, class_names=["a", "b", "c", "d"])
  config = demo_config(tmp_path / "run", real="demo:4", synthetic=other.out.as_posix(), epochs=1)
  with pytest.raises(UserError, match="class 0 is 'a' there but 'red circle' here"):
    train.train_and_evaluate(config)

  empty = _solid_source(0, [4, 0, 4])
  with pytest.raises(UserError, match=r"class 1 \('c1'\) has no training images"):
    train.train_and_evaluate(demo_config(tmp_path / "empty", load_size=8, crop_size=8),
                             loop.Data(empty, empty, None))

  small = dict(real="demo:4", load_size=16, crop_size=16, batch_size=8, epochs=2, steps_per_epoch=2,
               checkpoint_every=2)
  train.train_and_evaluate(demo_config(tmp_path / "resume", **small))
  with pytest.raises(UserError, match=r"another config \(lr changed\)"):
    train.train_and_evaluate(demo_config(tmp_path / "resume", **{**small, "lr": 0.5}))

  with pytest.raises(UserError, match="linear_probe needs"):
    train.train_and_evaluate(demo_config(tmp_path / "probe", real="demo:4", linear_probe=True))


def _env(devices=1):
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.expanduser("~/.cache/jaxaug-tests/jax"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5", JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _cli(workdir, *fields, devices=1):
  cmd = python_m("jaxaug.train", f"--config={REPO / 'configs' / 'train_demo.py'}", f"--config.workdir={workdir}",
                 *fields)
  return subprocess.Popen(cmd, cwd=REPO, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_user_error_is_one_line_and_exit_status_2(tmp_path):
  demo = open_source("demo:4", "train")
  other = make_synthetic(str(tmp_path / "other"), demo, 1, class_names=["a", "b", "c"])
  proc = _cli(tmp_path / "run", "--config.real=demo:4", f"--config.synthetic={other.out}")
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 2
  lines = [line for line in err.splitlines() if line.startswith("jaxaug: error:")]
  assert len(lines) == 1 and "3 classes" in lines[0] and "Traceback" not in err


def test_missing_pretrained_file_is_one_line_before_the_workdir_exists(tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(UserError, match=r"pretrained weights '.*nope.safetensors' not found"):
    train.train_and_evaluate(demo_config(workdir, pretrained=str(tmp_path / "nope.safetensors")))
  (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
  with pytest.raises(UserError, match=r"cannot read pretrained weights '.*garbage.safetensors'"):
    train.train_and_evaluate(demo_config(workdir, pretrained=str(tmp_path / "garbage.safetensors")))
  assert not workdir.exists()  # no lock, checkpoints/ or config.json left behind


def test_a_real_set_of_one_class_is_refused(tmp_path):
  from data_fixtures import make_folder

  for split in ("train", "test"):
    make_folder(str(tmp_path / "real" / split), {"cat": 4})
  workdir = tmp_path / "run"
  with pytest.raises(UserError, match=r"has 1 class: a classifier needs at least two"):
    train.train_and_evaluate(demo_config(workdir, real=f"folder:{tmp_path / 'real'}/{{split}}"))
  assert not workdir.exists()


# ---------------------------------------------------------------------------
# Broken training inputs (issue 15): one line each, and a damaged latest checkpoint falls back


def _cut(path, keep):
  data = path.read_bytes()
  path.write_bytes(data[:keep(len(data))])


def _rewrite_short(path, keep):
  """The shard with only its first `keep` records: it opens, but holds fewer than its done line lists."""
  from array_record.python.array_record_module import ArrayRecordWriter

  records = synthetic.read_shard(path)[:keep]
  writer = ArrayRecordWriter(str(path), "group_size:1")
  for record in records:
    writer.write(record)
  writer.close()


def _partial_set(out, units_planned=10):
  """4 of `units_planned` units of 8 images, as a killed `python -m jaxaug.generate` leaves them."""
  syn = make_synthetic(str(out), open_source("demo:4", "train"), 8)
  synthetic.write_info(out, {"class_names": list(syn.class_names), "units": units_planned,
                             "planned_items": 8 * units_planned})
  return out


def test_partial_synthetic_set_is_refused_unless_allowed(tmp_path, caplog):
  out = _partial_set(tmp_path / "syn")
  config = demo_config(tmp_path / "run", real="demo:4", synthetic=str(out))
  with pytest.raises(UserError, match=rf"^synthetic set {out} is incomplete \(4 of 10 units done, 32 of 80 planned "
                                      r"images \(40%\)\): finish it by rerunning the `python -m jaxaug.generate` "
                                      r"command that made it, or set --config.allow_partial_synthetic=True"):
    loop.open_data(config)
  config.allow_partial_synthetic = True
  caplog.set_level("WARNING")
  assert len(loop.open_data(config).synthetic) == 32
  assert [r.getMessage() for r in caplog.records] == [
      f"training on a partial synthetic set, as allow_partial_synthetic asks: {out} holds 4 of 10 units done, 32 of "
      "80 planned images (40%)"]
  _partial_set(out, units_planned=4)  # finished: nothing to say
  caplog.clear()
  assert len(loop.open_data(demo_config(tmp_path / "run", real="demo:4", synthetic=str(out))).synthetic) == 32
  assert not caplog.records


def test_runs_of_one_column_open_its_data_once(tmp_path, monkeypatch):
  """The experiment's runs of a column (methods x seeds) share the real splits, the k-shot subset and the checked
  synthetic set (loop.Opened); each run still gets its own method's images."""
  make_synthetic(str(tmp_path / "syn"), open_source("demo:4", "train"), 2, methods=("mixup", "dropout"))
  scans = []
  monkeypatch.setattr(synthetic.SyntheticSource, "check_shards", lambda self, *a, **k: scans.append(self))
  opened = loop.Opened()
  runs = [loop.open_data(demo_config(tmp_path / f"run{i}", real="demo:4", shots=2, shots_seed=0, seed=i,
                                     synthetic=str(tmp_path / "syn"), synthetic_method=m), opened)
          for i, m in enumerate(("mixup", "dropout", "mixup"))]
  assert len(scans) == 1 and all(r.train is runs[0].train and r.eval is runs[0].eval for r in runs)
  assert len(runs[0].train) == 8 and [len(r.synthetic) for r in runs] == [8, 8, 8]
  assert {runs[0].synthetic.parent.methods[i] for i in runs[1].synthetic.indices} == {"dropout"}
  alone = loop.open_data(demo_config(tmp_path / "alone", real="demo:4", shots=2, shots_seed=0,
                                     synthetic=str(tmp_path / "syn"), synthetic_method="mixup"))
  assert len(scans) == 2 and alone.train.ids() == runs[0].train.ids()  # no Opened: opened anew, the same images


@pytest.mark.parametrize("damage, expect", [
    (lambda d: (d / "shards" / "unit-00000002.array_record").unlink(), "shard unit-00000002.array_record is missing"),
    (lambda d: _cut(d / "shards" / "unit-00000001.array_record", lambda n: n // 2),
     "shard unit-00000001.array_record is damaged (no readable index: truncated)"),
    (lambda d: _cut(d / "shards" / "unit-00000003.array_record", lambda n: n - 3),
     "shard unit-00000003.array_record is damaged (Invalid Riegeli/records file: "),
    (lambda d: _rewrite_short(d / "shards" / "unit-00000000.array_record", 5),
     "shard unit-00000000.array_record is damaged (holds 5 of its 8 records: truncated)"),
    (lambda d: _cut(d / "dataset_info.json", lambda n: n // 2), "dataset_info.json is unreadable (JSONDecodeError"),
], ids=["deleted shard", "truncated shard", "cut shard", "short shard", "unreadable dataset_info.json"])
def test_damaged_synthetic_set_is_one_line(tmp_path, damage, expect):
  out = _partial_set(tmp_path / "syn", units_planned=4)
  damage(out)
  with pytest.raises(UserError) as error:
    loop.open_data(demo_config(tmp_path / "run", real="demo:4", synthetic=str(out)))
  message = str(error.value)
  assert expect in message and "\n" not in message
  assert message.endswith(("and makes them again", "keeps the finished units"))


def _keep_list(path, syn, kept_ids, fingerprint=None):
  """A keep list of `syn` as python -m jaxaug.score writes it (data/keep.py), keeping `kept_ids`."""
  keep.write(path, synthetic_dir=syn.out, fingerprint=fingerprint, class_names=syn.class_names, item_ids=syn.item_ids,
             labels=syn.labels, scored=syn.item_ids, keep=np.isin(syn.item_ids, kept_ids), rule="own_class",
             encoder="clip", k=5)
  return path


def test_a_keep_list_selects_images_with_the_method_and_names_what_does_not_belong(tmp_path, caplog):
  """The kept ids only (and of them the chosen method's), logged with the count dropped; a list of another set, of
  the set before it grew, or unreadable, is one line naming the fix."""
  demo = open_source("demo:4", "train")
  syn = make_synthetic(str(tmp_path / "syn"), demo, 2, methods=("mixup", "cutmix"))  # 16 images, 2 units
  kept_ids = syn.item_ids[::3]
  listed = _keep_list(tmp_path / "keep.json", syn, kept_ids)
  config = demo_config(tmp_path / "run", real="demo:4", synthetic=str(syn.out), synthetic_keep=str(listed))
  with caplog.at_level("INFO"):
    data = loop.open_data(config)
  assert sorted(data.synthetic.ids()) == sorted(f"item-{i}" for i in kept_ids)
  assert data.keep == {"file": str(listed), "rule": "own_class", "encoder": "clip", "k": 5, "kept": 6, "dropped": 10}
  assert "training on 6 of the 16 synthetic images, 10 dropped" in caplog.text
  config.synthetic_method = "cutmix"
  cutmix = loop.open_data(config).synthetic
  assert sorted(cutmix.ids()) == sorted(f"item-{i}" for i in kept_ids if syn.methods[i] == "cutmix")

  config.synthetic_method = ""
  for name, bad, says in [
      ("other.json", lambda p: _keep_list(p, syn, kept_ids, fingerprint={"seed": 1}), "for another synthetic set"),
      ("broken.json", lambda p: (p.write_text("{"), p)[1], "is unreadable (JSONDecodeError"),
      ("missing.json", lambda p: p, "does not exist"),
      ("renamed.json", lambda p: _keep_list(p, make_synthetic(str(tmp_path / "renamed"), demo, 2,
                                                              class_names=list("abcd")), kept_ids),
       "a set with other classes")]:
    config.synthetic_keep = str(bad(tmp_path / name))
    with pytest.raises(UserError, match=f"^keep list {tmp_path / name} .*{re.escape(says)}.*--config.synthetic_keep$"):
      loop.open_data(config)
  before = _keep_list(tmp_path / "before.json", syn, kept_ids)
  more = make_synthetic(str(tmp_path / "more"), demo, 3, methods=("mixup", "cutmix"))  # the same set, grown by 8
  config.synthetic, config.synthetic_keep = str(more.out), str(before)
  with pytest.raises(UserError, match=r"lists 16 images but .* holds 24 \(8 of them not in the list, 0 listed ones not "
                                      r"in the set\): the set changed since it was scored"):
    loop.open_data(config)


def test_workdir_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / "run").write_text("not a directory")
  with pytest.raises(UserError, match=f"^workdir {tmp_path / 'run'} is a file, not a directory: set --config.workdir"):
    train.train_and_evaluate(demo_config(tmp_path / "run", real="demo:4", load_size=16, crop_size=16))


# 6 steps; checkpoints every 2 steps, the last two kept: 4 and 6.
TWO_CHECKPOINTS = dict(real="demo:4", load_size=16, crop_size=16, batch_size=8, epochs=3, steps_per_epoch=2,
                       checkpoint_every=2, log_every=1, eval_every=0)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("two") / "run"
  train.train_and_evaluate(demo_config(workdir, **TWO_CHECKPOINTS))
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [4, 6]
  return workdir


def _truncate_largest_array(step_dir):
  largest = max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  _cut(largest, lambda n: n // 2)


def _empty_state(step_dir):
  import shutil

  shutil.rmtree(step_dir / "state")
  (step_dir / "state").mkdir()


def _break_input_json(step_dir):
  (step_dir / "input" / "process_0-of-1.json").write_text('{"real": {"grain"')


CHECKPOINT_DAMAGE = {"truncated array file": _truncate_largest_array, "emptied state": _empty_state,
                     "broken JSON": _break_input_json}


@pytest.mark.parametrize("damage", CHECKPOINT_DAMAGE)
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(two_checkpoints, tmp_path, caplog, damage):
  import shutil

  workdir = tmp_path / "run"
  shutil.copytree(two_checkpoints, workdir)
  (workdir / "metrics.json").unlink()
  CHECKPOINT_DAMAGE[damage](workdir / "checkpoints" / "6")
  caplog.set_level("WARNING")
  train.train_and_evaluate(demo_config(workdir, **TWO_CHECKPOINTS))
  warnings = [r.getMessage() for r in caplog.records if "does not restore" in r.getMessage()]
  assert len(warnings) == 1 and warnings[0].startswith("checkpoint step 6 does not restore (")
  assert "): resuming from step 4; the damaged step is moved to " in warnings[0]
  assert [p.parent.name for p in (workdir / "damaged_checkpoints").glob("*/6")]  # kept for a look, out of the way
  assert json.loads((workdir / "metrics.json").read_text()) == json.loads((two_checkpoints / "metrics.json").read_text())
  assert _history(workdir) == _history(two_checkpoints)


def test_a_damaged_checkpoint_leaves_no_unraisable_reports(two_checkpoints, tmp_path):
  """Orbax leaves a coroutine per array un-awaited when some files of a checkpoint are damaged, and Python reports
  each as 'Exception ignored in: <coroutine ...>' on stderr (49 blocks here, for one truncated file): they must not
  bury the one warning. Each data file of the latest checkpoint is truncated in turn."""
  import gc
  import shutil

  from jaxaug.train_lib import checkpoint

  config = demo_config(two_checkpoints, **TWO_CHECKPOINTS)
  trainer = loop.Trainer(config, loop.open_data(config))
  files = sorted((two_checkpoints / "checkpoints" / "6" / "state").glob("ocdbt.process_*/d/*"))
  fell_back, before = 0, sys.unraisablehook
  for i, file in enumerate(files):
    workdir = tmp_path / str(i)
    shutil.copytree(two_checkpoints / "checkpoints", workdir / "checkpoints")
    _cut(workdir / file.relative_to(two_checkpoints), lambda n: n // 2)
    reports = []
    sys.unraisablehook = reports.append
    try:
      mngr = checkpoint.manager(str(workdir / "checkpoints"))
      _, step, _ = loop.resume(mngr, trainer.init(), trainer.train_input(), workdir)
      mngr.close()
      gc.collect()
    finally:
      sys.unraisablehook = before
    fell_back += step == 4
    assert not reports, (file.name, len(reports), reports[0].object, reports[0].exc_value)
  assert fell_back >= 1  # some truncations do break the checkpoint (measured: 3 of 9 files)


def test_unreadable_workdir_config_json_is_one_line_and_moving_it_aside_resumes(two_checkpoints, tmp_path):
  import shutil

  workdir = tmp_path / "run"
  shutil.copytree(two_checkpoints, workdir)
  (workdir / "metrics.json").unlink()
  (workdir / "config.json").write_text('{"workdir": ')
  config = demo_config(workdir, **TWO_CHECKPOINTS)
  with pytest.raises(UserError, match=rf"^{workdir / 'config.json'} is unreadable \(JSONDecodeError: .*\) and "
                                      rf"{workdir} holds checkpoints: if this command made them, move it aside"):
    train.train_and_evaluate(config)
  os.rename(workdir / "config.json", workdir / "config.json.bad")
  train.train_and_evaluate(config)
  assert json.loads((workdir / "metrics.json").read_text()) == json.loads((two_checkpoints / "metrics.json").read_text())


def test_no_checkpoint_restores_is_one_line(two_checkpoints, tmp_path):
  import shutil

  workdir = tmp_path / "run"
  shutil.copytree(two_checkpoints, workdir)
  _empty_state(workdir / "checkpoints" / "6")
  _break_input_json(workdir / "checkpoints" / "4")
  proc = _cli(workdir, "--config.synthetic=", *(f"--config.{k}={v}" for k, v in TWO_CHECKPOINTS.items()))
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
  lines = [line for line in err.splitlines() if line.startswith("jaxaug: error:")]
  assert len(lines) == 1 and lines[0] == err.strip().splitlines()[-1]
  assert lines[0].startswith(f"jaxaug: error: no checkpoint in {workdir / 'checkpoints'} restores (step 6: ValueError: ")
  assert "; step 4: JSONDecodeError: " in lines[0]
  assert lines[0].endswith(f"): move {workdir} aside to start over, or set another --config.workdir")


def test_truncated_shard_on_the_command_line_is_one_line(tmp_path):
  out = _partial_set(tmp_path / "syn", units_planned=4)
  _cut(out / "shards" / "unit-00000001.array_record", lambda n: n // 2)
  proc = _cli(tmp_path / "run", "--config.real=demo:4", f"--config.synthetic={out}")
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
  assert err.strip().splitlines()[-1] == (
      f"jaxaug: error: synthetic set {out}: shard unit-00000001.array_record is damaged (no readable index: "
      "truncated); rerun the `python -m jaxaug.generate` command that made this set, which checks every shard's "
      f"records, moves damaged shards to {out / 'damaged'}/ and makes them again")


# ---------------------------------------------------------------------------
# Resume and devices (subprocesses: a real kill, a real device count)


def _history(workdir):
  records = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]


RESUME_RUN = ("--config.real=demo:8", "--config.load_size=32", "--config.crop_size=28", "--config.batch_size=16",
              "--config.epochs=12", "--config.steps_per_epoch=10", "--config.checkpoint_every=10",
              "--config.log_every=5", "--config.eval_every=40")


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
  """An uninterrupted RESUME_RUN: (its fields, its workdir)."""
  root = tmp_path_factory.mktemp("resume")
  syn = make_synthetic(str(root / "syn"), open_source("demo:8", "train"), 3, methods=("mixup", "cutmix"))
  fields = (*RESUME_RUN, f"--config.synthetic={syn.out}")
  whole = _cli(root / "whole", *fields)
  assert whole.wait(timeout=300) == 0, whole.stderr.read()
  return fields, root / "whole"


def _same_run(workdir, whole) -> None:
  final = {name: json.loads((Path(d) / "metrics.json").read_text()) for name, d in (("this", workdir), ("whole", whole))}
  assert final["this"] == final["whole"]
  assert _history(workdir) == _history(whole)
  assert (Path(workdir) / "curves.png").is_file() and (Path(workdir) / "per_class.png").is_file()


def test_kill_and_resume_ends_with_the_same_metrics(whole_run, tmp_path):
  fields, whole = whole_run
  killed = tmp_path / "killed"
  proc = _cli(killed, *fields)
  deadline = time.time() + 300
  while not (killed / "checkpoints" / "20").is_dir():
    assert proc.poll() is None and time.time() < deadline, "the run ended before its second checkpoint"
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / "metrics.json").exists()
  rerun = _cli(killed, *fields)
  assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
  _same_run(killed, whole)


def _signal_after_checkpoint(workdir, fields, signum, checkpoint: int) -> tuple[int, str]:
  """Runs training, sends `signum` once checkpoint `checkpoint` is committed; (exit status, stderr)."""
  proc = _cli(workdir, *fields)
  deadline = time.time() + 300
  while not (workdir / "checkpoints" / str(checkpoint)).is_dir():
    assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
    time.sleep(0.02)
  sent = time.time()
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=120)
  assert time.time() - sent < 25  # within SLURM's 30 s before SIGKILL
  return proc.returncode, err


def test_sigterm_then_sigint_keep_a_checkpoint_and_the_rerun_ends_as_if_never_stopped(whole_run, tmp_path):
  """Pre-emption (SIGTERM): a checkpoint at the step reached, one line, 143. Ctrl-C with no grace time: the
  checkpoint in flight is abandoned cleanly, 130. The rerun after each continues; the metrics equal the whole run's."""
  import re

  fields, whole = whole_run
  workdir = tmp_path / "stopped"
  code, err = _signal_after_checkpoint(workdir, fields, signal.SIGTERM, 10)
  assert code == 143 and "Traceback" not in err, err[-3000:]
  match = re.fullmatch(r"jaxaug: interrupted by SIGTERM at step (\d+): checkpoint \1 kept; rerun the same command to "
                       r"continue", err.strip().splitlines()[-1])
  assert match, err[-3000:]
  step = int(match[1])
  assert 10 <= step < 120 and (workdir / "checkpoints" / str(step)).is_dir()
  assert not [p for p in (workdir / "checkpoints").iterdir() if not p.name.isdigit()]  # no temporary left

  code, err = _signal_after_checkpoint(workdir, (*fields, "--config.stop_grace_s=0"), signal.SIGINT, 30)
  assert code == 130 and "Traceback" not in err, err[-3000:]
  line = err.strip().splitlines()[-1]
  assert re.fullmatch(r"jaxaug: interrupted by SIGINT at step \d+: (no checkpoint of it within the 0 s grace "
                      r"\(--config.stop_grace_s\); )?checkpoint \d+ kept; rerun the same command to continue", line), line
  assert not [p for p in (workdir / "checkpoints").iterdir() if not p.name.isdigit()]

  rerun = _cli(workdir, *fields)
  assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
  _same_run(workdir, whole)


def test_one_and_four_devices_give_the_same_loss_curve(tmp_path):
  syn = make_synthetic(str(tmp_path / "syn"), open_source("demo:8", "train"), 3)
  fields = ("--config.real=demo:8", f"--config.synthetic={syn.out}", "--config.mix=swap", "--config.load_size=32",
            "--config.crop_size=28", "--config.batch_size=16", "--config.epochs=1", "--config.steps_per_epoch=10",
            "--config.log_every=1", "--config.eval_batch_size=16", "--config.lr=0.01")
  runs = {n: _cli(tmp_path / f"devices{n}", *fields, devices=n) for n in (1, 4)}
  for n, proc in runs.items():
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
  one, four = (_history(tmp_path / f"devices{n}") for n in (1, 4))
  assert [r["step"] for r in one] == [r["step"] for r in four]
  one, four = ([r["loss"] for r in h if "loss" in r] for h in (one, four))
  # Same global batch, augmentation and BatchNorm statistics; only the order of float sums differs,
  # and a tiny net on 16 images amplifies that step by step.
  np.testing.assert_allclose(four[:4], one[:4], rtol=1e-5)
  np.testing.assert_allclose(four, one, rtol=1e-3)
  assert "on 4 devices" in runs[4].stderr.read()


def test_paper_configs():
  lt = config_file("train_imagenet_lt")
  assert (lt.model, lt.loss, lt.mix, lt.synthetic_fraction, lt.lr, lt.batch_size) == (
      "resnext50_32x4d", "balanced_softmax", "batch", 0.5, 0.2, 512)
  fewshot = config_file("train_fewshot", "flowers102,8,mixup")
  assert (fewshot.real, fewshot.shots, fewshot.synthetic, fewshot.synthetic_method) == (
      "tfds:oxford_flowers102", 8, "out/flowers102_8shot", "mixup")
  assert (fewshot.linear_probe, fewshot.optimizer, fewshot.mix, fewshot.epochs * fewshot.steps_per_epoch) == (
      True, "adam", "swap", 10_000)
  assert config_file("train_fewshot", "coco,1,real").synthetic == ""
  assert config_file("train_fewshot", "pascal,2,sdedit").synthetic == "out/pascal_2shot_sdedit"
  with pytest.raises(ValueError, match="DATASET,SHOTS,METHOD"):
    config_file("train_fewshot", "mnist,1,real")


# ---------------------------------------------------------------------------
# Pictures and bench


def test_pictures_are_drawn(tmp_path):
  history = [{"step": s, "loss": 2 / s, "accuracy": 1 - 1 / s} for s in range(1, 50)]
  history += [{"step": s, "top1": 0.5 + s / 200, "many": 0.9, "medium": 0.6, "few": s / 100} for s in (10, 30, 49)]
  evaluate.curves_png(history, str(tmp_path / "curves.png"))
  counts = np.array([500, 300, 120, 80, 40, 20, 10, 5])
  summary = evaluate.summarize(np.array([45, 40, 30, 20, 15, 10, 5, 1]), np.full(8, 50), counts, list("abcdefgh"))
  evaluate.per_class_png(summary, str(tmp_path / "per_class.png"))
  for name in ("curves.png", "per_class.png"):
    image = np.asarray(Image.open(tmp_path / name).convert("RGB"))
    assert image.shape[0] >= 300 and len(np.unique(image.reshape(-1, 3), axis=0)) > 10


def test_bench_train_reports_step_and_input_rates():
  result = train.bench_train(model="resnet_tiny", size=16, batch_size=4, steps=2, input_seconds=0.3)
  assert result["train_images_per_s"] > 0 and result["input_images_per_s"] > 0
  assert result["reduced"] and isinstance(result["input_keeps_up"], bool)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_local_launcher_stops_both_processes_at_one_step(whole_run, tmp_path, signum):
  """SIGTERM to launch/local.sh (a scheduler, `kill`) is passed to its two processes; Ctrl-C in a terminal (SIGINT
  to the script's process group) reaches them itself, although a script's background jobs start with SIGINT
  ignored. Either way they agree on the step, save one checkpoint, and the script exits 128 + the signal."""
  import re

  fields, _ = whole_run
  workdir = tmp_path / "two"
  script = ["bash", REPO / "launch" / "local.sh", "2", "jaxaug.train", f"--config={REPO / 'configs' / 'train_demo.py'}",
            f"--config.workdir={workdir}", *fields]
  proc = subprocess.Popen(as_from_a_terminal(script), cwd=REPO, env=_env(), start_new_session=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while not (workdir / "checkpoints" / "10").is_dir():
    assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
    time.sleep(0.02)
  if signum == signal.SIGINT:
    os.killpg(proc.pid, signum)  # a terminal's Ctrl-C: the whole foreground process group
  else:
    proc.send_signal(signum)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signum and "Traceback" not in err, err[-3000:]
  steps = re.findall(rf"jaxaug: interrupted by {signum.name} at step (\d+): checkpoint \1 kept; rerun the same "
                     r"command to continue", err)
  assert len(steps) == 2 and steps[0] == steps[1], err[-3000:]
  assert (workdir / "checkpoints" / steps[0]).is_dir()
  assert not [p for p in (workdir / "checkpoints").iterdir() if not p.name.isdigit()]

