"""grain pipelines: batches, epochs, host shards, skipped images, checkpoint state, workers."""

import json

import numpy as np
import pytest

import data_fixtures as fx
from jaxaug.data import images, pipeline, sources
from jaxaug.errors import UserError


@pytest.fixture
def folder(tmp_path):
  """3 classes x 5 images plus one corrupt file and one truncated JPEG (17 listed)."""
  fx.make_folder(str(tmp_path), {"a": 5, "b": 5, "c": 5}, corrupt=("b/bad.jpg",))
  fx.write(str(tmp_path / "c" / "cut.jpg"), fx.truncated_jpeg())
  return sources.folder_source(str(tmp_path))


def _bad(source):
  return {source.ids().index("b/bad.jpg"), source.ids().index("c/cut.jpg")}


def _take(batches, n):
  return [next(batches) for _ in range(n)]


def test_batches_hold_fitted_images_and_matching_labels(folder):
  batches = pipeline.train_batches(folder, batch_size=4, size=16, seed=0, shard=(0, 1))
  batch = next(batches)
  assert batch["image"].shape == (4, 16, 16, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].dtype == np.int32 and batch["index"].dtype == np.int64
  assert np.array_equal(batch["label"], folder.labels[batch["index"]])
  i = int(batch["index"][0])
  assert np.array_equal(batch["image"][0], images.load_fit(folder.read(i), 16))
  assert set(batch) == {"image", "label", "index"}


def test_each_epoch_uses_every_good_image_once_and_skips_bad_ones(folder):
  batches = pipeline.train_batches(folder, batch_size=5, size=8, seed=1, shard=(0, 1))
  epoch1 = np.concatenate([b["index"] for b in _take(batches, 3)])  # 15 good images per epoch
  assert sorted(epoch1.tolist()) == sorted(set(range(len(folder))) - _bad(folder))
  epoch2 = np.concatenate([b["index"] for b in _take(batches, 3)])
  assert sorted(epoch2.tolist()) == sorted(epoch1.tolist())
  assert not np.array_equal(epoch1, epoch2)  # reshuffled each epoch
  # Both bad images are met every epoch; a trailing one is counted when the next epoch starts.
  assert 3 <= batches.skipped <= 4
  again = pipeline.train_batches(folder, batch_size=5, size=8, seed=1, shard=(0, 1))
  assert np.array_equal(np.concatenate([b["index"] for b in _take(again, 3)]), epoch1)  # seed -> order


def test_skipped_images_are_logged(folder, caplog):
  batches = pipeline.train_batches(folder, batch_size=5, size=8, seed=1, shard=(0, 1))
  with caplog.at_level("WARNING"):
    _take(batches, 3)
  logged = " ".join(r.getMessage() for r in caplog.records)
  assert "b/bad.jpg" in logged and "c/cut.jpg" in logged


def test_eval_batches_in_order_with_short_last_batch_and_host_shards(folder):
  batches = pipeline.eval_batches(folder, batch_size=4, size=8, shard=(0, 1))
  whole = list(batches)
  assert batches.skipped == 2
  order = np.concatenate([b["index"] for b in whole]).tolist()
  assert order == sorted(set(range(len(folder))) - _bad(folder))
  assert [len(b["index"]) for b in whole] == [4, 4, 4, 3]
  halves = [np.concatenate([b["index"] for b in pipeline.eval_batches(folder, batch_size=4, size=8, shard=(h, 2))])
            for h in range(2)]
  assert not set(halves[0]) & set(halves[1])
  assert sorted(np.concatenate(halves).tolist()) == order


def test_hosts_batches_side_by_side_are_one_hosts_batch(tmp_path):
  """Each host reads its block of every global batch, so 2 hosts' batches concatenated are 1 host's, in order
  (the train step keys augmentation by position): a run's steps do not depend on the host count. Over epoch ends
  too (15 images, global batch 6). (A bad image shifts its host's later batches by one, as on one host.)"""
  fx.make_folder(str(tmp_path), {"a": 5, "b": 5, "c": 5})
  source = sources.folder_source(str(tmp_path))
  one = _take(pipeline.train_batches(source, batch_size=6, size=8, seed=2, shard=(0, 1)), 5)
  hosts = [_take(pipeline.train_batches(source, batch_size=3, size=8, seed=2, shard=(h, 2)), 5) for h in range(2)]
  for whole, *parts in zip(one, *hosts):
    for key in ("index", "image", "label"):
      assert np.array_equal(whole[key], np.concatenate([p[key] for p in parts])), key
  assert len({i for b in one[:2] for i in b["index"].tolist()}) == 12  # (no image twice within an epoch)


def test_checkpoint_state_resumes_the_same_batches(folder):
  batches = pipeline.train_batches(folder, batch_size=4, size=8, seed=3, shard=(0, 1))
  _take(batches, 5)
  state = json.loads(json.dumps(batches.get_state()))  # JSON-able for checkpoints
  expected = [b["index"] for b in _take(batches, 4)]
  resumed = pipeline.train_batches(folder, batch_size=4, size=8, seed=3, shard=(0, 1))
  resumed.set_state(state)
  assert resumed.skipped == state["skipped"] > 0
  got = [b["index"] for b in _take(resumed, 4)]
  assert all(np.array_equal(a, b) for a, b in zip(expected, got))


def test_worker_processes_give_checkpointable_batches(folder):
  batches = pipeline.train_batches(folder, batch_size=4, size=8, seed=5, num_workers=2, shard=(0, 1))
  try:
    first = _take(batches, 4)
    assert all(np.array_equal(b["label"], folder.labels[b["index"]]) for b in first)
    seen = np.concatenate([b["index"] for b in first])
    assert not set(seen.tolist()) & _bad(folder)
    state = json.loads(json.dumps(batches.get_state()))
    expected = [b["index"].copy() for b in _take(batches, 3)]
    skipped = batches.skipped
  finally:
    batches.close()
  assert skipped >= 1  # counted in the main process although workers decode
  resumed = pipeline.train_batches(folder, batch_size=4, size=8, seed=5, num_workers=2, shard=(0, 1))
  try:
    resumed.set_state(state)
    got = [b["index"].copy() for b in _take(resumed, 3)]
  finally:
    resumed.close()
  assert all(np.array_equal(a, b) for a, b in zip(expected, got))


def test_a_long_run_of_bad_images_is_a_user_error(tmp_path):
  fx.make_folder(str(tmp_path), {"a": 1}, corrupt=tuple(f"a/bad{i}.jpg" for i in range(6)))
  source = sources.folder_source(str(tmp_path))
  batches = pipeline.train_batches(source, batch_size=2, size=8, seed=0, shard=(0, 1), max_bad_run=5)
  with pytest.raises(UserError, match="5 unreadable images in a row"):
    _take(batches, 3)


def test_read_units_for_generation(tmp_path):
  tree = fx.make_imagenet_lt(str(tmp_path))
  source = sources.open_source(f"imagenet_lt:{tree['lists']}?root={tree['root']}", "train")
  missing = source.ids().index(tree["missing"])
  units = [[0, 2], [missing, 3, 5], [7]]
  read = list(pipeline.read_units(source, units, size=12, num_threads=2))
  assert [u["index"].tolist() for u in read] == units
  assert read[1]["ok"].tolist() == [False, True, True]
  assert not read[1]["image"][0].any()
  assert np.array_equal(read[0]["image"][1], images.load_fit(source.read(2), 12))
  assert read[2]["image"].shape == (1, 12, 12, 3) and read[2]["ok"].all()


def test_bench_input_reports_rates():
  result = pipeline.bench_input(size=32, image_hw=(60, 80), num_images=4, min_seconds=0.05, batch_size=4,
                                num_workers=0)
  assert result["per_core_images_per_s"] > 0 and result["pipeline_images_per_s"] > 0
  assert result["size"] == 32 and result["source_hw"] == [60, 80]
