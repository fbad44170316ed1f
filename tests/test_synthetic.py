"""The synthetic format: atomic units, and recovery from every state a kill can leave."""

import errno
import io
import os

import numpy as np
import pytest
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


def test_full_disk_at_shard_close_is_an_os_error_and_leaves_nothing(tmp_path):
  """/dev/full answers every write with ENOSPC, as a full disk does. The ArrayRecord writer buffers its records and
  fails only at close, with a RuntimeError; write_unit reports it as the OSError it is, naming the shard."""
  shards = tmp_path / synthetic.SHARDS
  shards.mkdir()
  os.symlink("/dev/full", shards / f".{synthetic.shard_name(0)}.tmp-{os.getpid()}")
  with pytest.raises(OSError) as error:
    _unit(tmp_path, 0, [0, 1, 2])
  assert (error.value.errno, error.value.strerror) == (errno.ENOSPC, "No space left on device")
  assert error.value.filename == str(shards / synthetic.shard_name(0))
  assert list(shards.iterdir()) == [] and not (tmp_path / synthetic.DONE).exists()  # no temporary, no done line


def test_damaged_record_is_one_line_naming_shard_and_unit(tmp_path):
  """Flipped bytes inside a record: the shard's index is whole, so only reading that record finds it."""
  from jaxaug.errors import UserError

  synthetic.write_info(tmp_path, {"class_names": ["a", "b"]})
  _unit(tmp_path, 0, [0, 1])
  shard = _unit(tmp_path, 1, [2, 3, 4])
  image = synthetic.decode_record(synthetic.read_shard(shard)[1])["image"]
  data = bytearray(shard.read_bytes())
  at = data.find(image)  # where the record's image bytes lie in the file
  assert at > 0 and data.find(image, at + 1) < 0
  data[at + 8:at + 16] = bytes(b ^ 0xFF for b in data[at + 8:at + 16])
  shard.write_bytes(data)
  src = synthetic.SyntheticSource(tmp_path)
  src.check_shards()
  assert [src.read(i) for i in (0, 1, 2, 4)] == [_png(i) for i in (0, 1, 2, 4)]
  with pytest.raises(UserError) as error:
    src.read(3)
  assert isinstance(error.value, RuntimeError)  # what callers that draw around unreadable images catch
  message = str(error.value)
  assert "\n" not in message and message.startswith(
      f"synthetic set {tmp_path}: shard unit-00000001.array_record (unit 1) is damaged: its record 1 cannot be read "
      "(Corrupted Riegeli/records file: chunk data hash mismatch")
  assert message.endswith("rerun the `python -m jaxaug.generate` command that made this set, which checks every "
                          f"shard's records, moves damaged shards to {tmp_path}/damaged/ and makes them again")
  damaged = synthetic.damaged_shards(tmp_path, synthetic.shard_units(tmp_path))  # what generate checks at start
  assert list(damaged) == [1] and damaged[1].startswith("is unreadable (Corrupted Riegeli/records file: chunk data "
                                                        "hash mismatch")
  moved = synthetic.set_aside(tmp_path, 1)
  assert moved == tmp_path / "damaged" / "unit-00000001.array_record" and moved.read_bytes() == data
  assert set(synthetic.committed(tmp_path)) == {0}  # made again by the next generate run
