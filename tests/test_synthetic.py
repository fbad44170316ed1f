"""The synthetic format: atomic units, and recovery from every state a kill can leave."""

import io

import numpy as np
from PIL import Image

from jaxaug.data import synthetic


def _png(v):
  buf = io.BytesIO()
  Image.fromarray(np.full((4, 4, 3), v, np.uint8)).save(buf, "PNG")
  return buf.getvalue()


def _unit(out, unit, items, process=0):
  recs = [synthetic.encode_record(_png(i), i % 2, "ab"[i % 2], i, {"method": "mixup", "lam": 0.5}) for i in items]
  return synthetic.write_unit(out, unit, recs, process)


def test_write_and_read_back(tmp_path):
  synthetic.write_info(tmp_path, {"class_names": ["a", "b"]})
  _unit(tmp_path, 0, [0, 1, 2])
  _unit(tmp_path, 1, [3], process=1)
  src = synthetic.SyntheticSource(tmp_path)
  assert len(src) == 4 and src.labels.tolist() == [0, 1, 0, 1]
  assert src[3].image[0, 0].tolist() == [3, 3, 3] and src.id(3) == "item-3"
  assert src.provenance(1) == {"method": "mixup", "lam": 0.5}
  assert src.record(2)["class_name"] == "a" and src.methods.tolist() == ["mixup"] * 4


def test_recover_tidies_what_a_kill_leaves(tmp_path):
  synthetic.write_info(tmp_path, {"class_names": ["a", "b"]})
  _unit(tmp_path, 0, [0, 1])
  _unit(tmp_path, 1, [2, 3])
  # A kill between rename and record: unit 1's line is lost. A kill mid-append: a torn line.
  done = tmp_path / synthetic.DONE
  lines = done.read_text().splitlines(keepends=True)
  done.write_text(lines[0] + '{"unit": 7, "sha')
  # A kill mid-write: a temporary shard.
  (tmp_path / synthetic.SHARDS / ".unit-00000002.array_record.tmp-123").write_bytes(b"partial")
  assert set(synthetic.read_done(tmp_path)) == {0}  # readers ignore the torn line and change nothing
  assert done.read_text().endswith('"sha')
  units = synthetic.recover(tmp_path)
  assert set(units) == {0, 1} and units[1]["item_ids"] == [2, 3] and units[1]["methods"] == ["mixup", "mixup"]
  assert not list((tmp_path / synthetic.SHARDS).glob(".*"))
  assert all(line.endswith("}") for line in done.read_text().splitlines())
  assert len(synthetic.SyntheticSource(tmp_path)) == 4
