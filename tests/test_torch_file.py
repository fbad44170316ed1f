"""models/torch_file.py reads torch.save's two formats without torch (tests/golden/state_*.pth, written by
tests/make_golden_inception.py with torch) and runs nothing a file pickles."""

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fid_inputs
from jaxaug.models import torch_file

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", ["state_zip.pth", "state_legacy.pth"])
def test_reads_both_formats_views_and_dtypes(name):
  expected = fid_inputs.torch_file_sample()
  got = torch_file.read_state_dict(GOLDEN / name)
  assert sorted(got) == sorted(expected)
  for key, value in expected.items():
    assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
    np.testing.assert_array_equal(got[key], value)


def _legacy(tmp_path, payload: bytes) -> Path:
  path = tmp_path / "evil.pth"
  path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C) + pickle.dumps(1001) + pickle.dumps({}) + payload)
  return path


def test_a_pickled_callable_is_refused_not_called(tmp_path):
  with pytest.raises(torch_file.NotAStateDict, match="posix.system|os.system|nt.system"):
    torch_file.read_state_dict(_legacy(tmp_path, pickle.dumps(os.system)))
  path = tmp_path / "evil_zip.pth"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("evil/data.pkl", pickle.dumps(os.system))
  with pytest.raises(torch_file.NotAStateDict, match="system"):
    torch_file.read_state_dict(path)


def test_truncated_and_foreign_files_are_not_state_dicts(tmp_path):
  data = (GOLDEN / "state_legacy.pth").read_bytes()
  (tmp_path / "cut.pth").write_bytes(data[:-20])
  with pytest.raises(torch_file.NotAStateDict, match="truncated"):
    torch_file.read_state_dict(tmp_path / "cut.pth")
  (tmp_path / "list.pth").write_bytes(pickle.dumps([1, 2]))
  with pytest.raises(torch_file.NotAStateDict):
    torch_file.read_state_dict(tmp_path / "list.pth")
  with pytest.raises(torch_file.NotAStateDict, match="dict of tensor"):
    torch_file.read_state_dict(_legacy(tmp_path, pickle.dumps({"a": 1}) + pickle.dumps([])))
