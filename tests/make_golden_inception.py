"""Records the FID Inception golden (tests/golden/inception.npz): pytorch-fid's network and clean-fid's FID.

make_golden.py's companion for the FID network. It needs torchvision, which PyPI's wheels do not pair with
make_golden.py's torch 2.13, so it runs in its own venv:

    python3 -m venv /work/golden-tv
    /work/golden-tv/bin/pip install torch==2.14.1 torchvision==0.29.1 clean-fid pytorch-fid scipy safetensors numpy pillow
    /work/golden-tv/bin/python tests/make_golden_inception.py

The network is pytorch-fid's `InceptionV3(output_blocks=[3], use_fid_inception=True)` with random weights
(tests/fid_inputs.py, from a seed: the test draws the same ones), loaded strictly in place of the download.
clean-fid's `compute_fid(dir_a, dir_b, mode="clean", custom_feat_extractor=...)` then runs its own folder
listing, reading, "clean" resize (PIL bicubic on float channels to 299) and FID on the two folders, with the
extractor doing what clean-fid's own network does to the resized [0, 255] batch: (x - 128) / 128, then pool3.
Stored: the features clean-fid computed for each folder and its FID; about 60 KiB. Also state_zip.pth and
state_legacy.pth: a small state dict (fid_inputs.torch_file_sample) as torch.save writes it now and as torch
before 1.6 did (pytorch-fid's weights are in that format), for models/torch_file.py.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import fid_inputs  # noqa: E402

OUT = Path(__file__).parent / "golden" / "inception.npz"


def network():
  """pytorch-fid's FID Inception (pool3 block only, no resize, no [0, 1] -> [-1, 1]) with the seeded weights."""
  import torchvision
  from pytorch_fid import inception as pfid

  with mock.patch.object(torchvision.models.inception.Inception3, "load_state_dict", lambda self, *a, **k: None), \
       mock.patch.object(pfid, "load_state_dict_from_url", lambda *a, **k: {}):
    shapes = {k: tuple(v.shape) for k, v in pfid.fid_inception_v3().state_dict().items()}
  state = {k: torch.from_numpy(v) for k, v in fid_inputs.weights(shapes).items()}
  with mock.patch.object(pfid, "load_state_dict_from_url", lambda *a, **k: state):
    net = pfid.InceptionV3(output_blocks=[3], resize_input=False, normalize_input=False, use_fid_inception=True)
  return net.eval(), state


def torch_files():
  """The sample state dict in both of torch.save's formats, views kept as views (shared storages, offsets)."""
  sample = fid_inputs.torch_file_sample()
  base = torch.from_numpy(sample["base"])
  state = {k: torch.from_numpy(v) for k, v in sample.items()}
  state.update(base=base, base_t=base.t(), base_rows=base[2:5])
  if state["base_t"].is_contiguous() or state["base_rows"].storage_offset() == 0:
    sys.exit("the sample lost its views; update this script")
  for name, zip_format in (("state_zip.pth", True), ("state_legacy.pth", False)):
    torch.save(state, OUT.parent / name, _use_new_zipfile_serialization=zip_format)
    back = torch.load(OUT.parent / name, weights_only=True)
    assert all(np.array_equal(back[k].numpy(), v) for k, v in sample.items())
    print(f"wrote {OUT.parent / name} ({(OUT.parent / name).stat().st_size} bytes)")


def main():
  from cleanfid import fid

  torch_files()

  torch.manual_seed(0)
  net, state = network()
  seen = []

  def extractor(batch):  # clean-fid hands over the resized [0, 255] float batch, NCHW
    with torch.no_grad():
      out = net((batch - 128) / 128)[0].squeeze(-1).squeeze(-1)
    seen.append(out.numpy())
    return out

  with tempfile.TemporaryDirectory() as tmp:
    folders = fid_inputs.write_folders(tmp)
    score = fid.compute_fid(str(folders["a"]), str(folders["b"]), mode="clean", custom_feat_extractor=extractor,
                            device=torch.device("cpu"), num_workers=0, batch_size=8, verbose=False)
  counts = [len(s) for s in fid_inputs.FOLDERS.values()]
  if [len(s) for s in seen] != counts:
    sys.exit(f"clean-fid ran the extractor on batches of {[len(s) for s in seen]}, not one per folder {counts}")
  rec = {"features_a": seen[0], "features_b": seen[1], "fid": np.float64(score),
         "fid_from_features": np.float64(fid.fid_from_feats(seen[0], seen[1])),
         "state_names": np.array(sorted(state)), "seed": np.int64(fid_inputs.SEED),
         "versions": np.array([f"torch {torch.__version__}", f"clean-fid {_version('clean-fid')}",
                               f"pytorch-fid {_version('pytorch-fid')}"])}
  OUT.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(OUT, **rec)
  print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB): FID {score:.6f}, feature scale "
        f"{np.abs(seen[0]).mean():.4f}")


def _version(name: str) -> str:
  from importlib.metadata import version

  return version(name)


if __name__ == "__main__":
  main()
