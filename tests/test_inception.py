"""The FID Inception against pytorch-fid's network and clean-fid's FID (tests/golden/inception.npz, written by
tests/make_golden_inception.py on the same seeded random weights and folders), its loader's one-line errors,
and python -m jaxaug.score with encoders=clip,inception."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

import fid_inputs
from jaxaug import score
from jaxaug.errors import UserError
from jaxaug.models import inception
from jaxaug.score_lib import embed, metrics
from test_score import make_set, score_config

GOLDEN = np.load(Path(__file__).parent / "golden" / "inception.npz")


@pytest.fixture(scope="module")
def fid(tmp_path_factory):
  """Seeded weights as a .safetensors file, the two folders, and our features of every image (one jit call)."""
  root = tmp_path_factory.mktemp("inception")
  state = fid_inputs.weights(inception.torch_shapes())
  save_file(state, str(root / "weights.safetensors"))
  folders = fid_inputs.write_folders(root)
  paths = {name: sorted(folder.glob("*.png")) for name, folder in folders.items()}
  images = np.stack([inception.clean_resize(np.asarray(Image.open(p).convert("RGB")))
                     for name in ("a", "b") for p in paths[name]])
  params = inception.load(root / "weights.safetensors")
  features = np.asarray(jax.jit(inception.features)(params, images))
  n = len(paths["a"])
  return {"root": root, "state": state, "a": features[:n], "b": features[n:]}


def test_features_equal_pytorch_fid_on_clean_fid_inputs(fid):
  """Our pool3 features of clean-fid's resize equal pytorch-fid's FID Inception fed by clean-fid (same weights)."""
  assert sorted(inception.torch_shapes()) == sorted(n for n in GOLDEN["state_names"]
                                                    if not n.endswith("num_batches_tracked") and not n.startswith("fc."))
  for name in ("a", "b"):
    ref = GOLDEN[f"features_{name}"]
    assert np.abs(ref).mean() > 0.5  # activations neither vanished nor saturated in 94 random layers
    np.testing.assert_allclose(fid[name], ref, rtol=1e-5, atol=1e-4)


def test_fid_equals_clean_fid_compute_fid(fid):
  """metrics.fd on our features of the two folders = clean-fid's compute_fid(mode="clean") on them."""
  ours = metrics.fd(fid["a"], fid["b"])
  assert ours == pytest.approx(float(GOLDEN["fid"]), rel=1e-3)
  assert ours > 10  # the two folders differ: a number that could be wrong


def test_clean_resize_is_float_bicubic_clipped_not_rounded():
  checker = (np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, -1)
  out = inception.clean_resize(checker, 29)
  assert out.shape == (29, 29, 3) and out.dtype == np.float32
  assert out.min() == 0.0 and out.max() == 255.0  # bicubic overshoots; clipped as clean-fid does
  assert np.any(out != np.round(out))  # no quantisation to uint8
  assert inception.scale_pixels(np.float32(128.0)) == 0.0 and inception.scale_pixels(np.float32(0.0)) == -1.0


def _one_line(excinfo) -> str:
  message = str(excinfo.value)
  assert "\n" not in message
  return message


def test_loader_errors_are_one_line(fid, tmp_path):
  with pytest.raises(UserError) as e:
    inception.load(tmp_path / "absent.safetensors")
  assert "does not exist" in _one_line(e) and "--config.inception_weights" in _one_line(e)
  (tmp_path / "w.ckpt").write_bytes(b"PK")
  with pytest.raises(UserError) as e:
    inception.load(tmp_path / "w.ckpt")
  assert "neither .safetensors nor .pth" in _one_line(e) and "pt_inception-2015-12-05" in _one_line(e)
  (tmp_path / "w.pth").write_bytes(b"PK\x03\x04 not really a zip")
  with pytest.raises(UserError) as e:
    inception.load(tmp_path / "w.pth")
  assert "as a PyTorch state dict" in _one_line(e)
  (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
  with pytest.raises(UserError) as e:
    inception.load(tmp_path / "bad.safetensors")
  assert "cannot read" in _one_line(e)
  save_file({"conv1.weight": np.zeros((2, 3, 3, 3), np.float32)}, str(tmp_path / "resnet.safetensors"))
  with pytest.raises(UserError) as e:
    inception.load(tmp_path / "resnet.safetensors")
  assert "have no tensor 'Conv2d_1a_3x3." in _one_line(e)
  wrong = dict(fid["state"])
  wrong["Mixed_6b.branch7x7_2.conv.weight"] = np.ascontiguousarray(wrong["Mixed_6b.branch7x7_2.conv.weight"]
                                                                   .transpose(0, 1, 3, 2))
  save_file(wrong, str(tmp_path / "transposed.safetensors"))
  with pytest.raises(UserError) as e:
    inception.load(tmp_path / "transposed.safetensors")
  assert "'Mixed_6b.branch7x7_2.conv.weight'" in _one_line(e) and "(128, 128, 7, 1)" in _one_line(e)


def test_score_with_clip_then_inception_embeds_only_the_new_encoder(fid, tmp_path, capsys):
  """A clip run, then clip,inception on the same output: only Inception embeds, FD-Inception is reported beside
  FD-CLIP; then inception,clip embeds nothing and leads the report. A copy's Inception embedding equals its
  source's (the real and synthetic images go through the same clean resize)."""
  make_set(tmp_path / "set", unit_size=4, units=1)  # 4 "copy" images: real images of demo:6, unchanged
  weights = str(fid["root"] / "weights.safetensors")
  fields = dict(shots=1, **{"batch.per_device": 4, "metrics.k": 2, "metrics.kid_subset_size": 4,
                            "metrics.prdc_max": 0, "inception_weights": weights})
  first = score.run(score_config(tmp_path / "set", tmp_path / "out", **fields))
  assert first["timing"]["embedded_images"] == 4 + 4 and "by_encoder" not in first
  both = score.run(score_config(tmp_path / "set", tmp_path / "out", encoders="clip,inception", **fields))
  assert both["timing"]["embedded_images"] == 8  # Inception's only: CLIP's caches are whole
  assert both["about"]["encoder"] == "clip" and [e["name"] for e in both["about"]["encoders"]] == ["clip", "inception"]
  assert both["overall"] == first["overall"]
  ours = both["by_encoder"]["inception"]
  assert ours["label"] == "Inception" and ours["dim"] == 2048 and ours["overall"]["fd"] is not None
  out = capsys.readouterr().out
  assert "overall: FD-CLIP" in out and "in Inception: FD-Inception" in out
  md = (tmp_path / "out" / "scores.md").read_text()
  assert "## Encoders side by side" in md and "| FD-Inception |" in md and "| images | FD-CLIP ↓ |" in md
  assert json.loads((tmp_path / "out" / "scores.json").read_text())["by_encoder"]["inception"]["dim"] == 2048

  job = score.prepare(score_config(tmp_path / "set", tmp_path / "out", encoders="clip,inception", **fields))
  loaded = score.load_embeddings(job, 1)
  emb = loaded.embeddings
  assert emb.real.shape == (4, 2048) and emb.synthetic.shape == (4, 2048)
  paired = [(row, src) for row, src in enumerate(emb.sources[:, 0]) if src >= 0]
  assert paired  # a copy's source is among the 1 shot per class
  for row, src in paired:
    np.testing.assert_allclose(emb.synthetic[row], emb.real[src], rtol=1e-5, atol=1e-4)
  assert sorted(p.name.split("-")[0] for p in (tmp_path / "out" / "embeddings").iterdir()) == [
      "inception", "inception", "real", "synthetic"]

  flipped = score.run(score_config(tmp_path / "set", tmp_path / "out", encoders="inception,clip", **fields))
  assert flipped["timing"]["embedded_images"] == 0
  assert flipped["about"]["encoder"] == "inception" and flipped["overall"] == ours["overall"]
  assert flipped["by_encoder"]["clip"]["overall"] == first["overall"]
  assert "| images | FD-Inception ↓ |" in (tmp_path / "out" / "scores.md").read_text()


@pytest.mark.parametrize("fields, expected", [
    ({"encoders": "clip,vgg"}, "unknown encoder vgg"),
    ({"encoders": "clip,clip"}, "names an encoder twice"),
    ({"encoders": "inception"}, "--config.inception_weights is empty"),
    ({"encoders": "inception", "inception_weights": "/nonexistent/w.safetensors"}, "do not exist"),
    ({"encoders": "dinov2"}, "--config.dinov2 is empty"),
])
def test_a_wrong_encoder_setting_is_one_line_before_any_output(tmp_path, fields, expected):
  config = score_config(tmp_path / "set", tmp_path / "out", **fields)
  with pytest.raises(UserError) as e:
    score.run(config)
  assert expected in _one_line(e)
  assert not (tmp_path / "out").exists()


def test_an_inception_file_of_another_network_stops_score_before_embedding(tmp_path):
  make_set(tmp_path / "set", unit_size=8, units=1)
  save_file({"conv1.weight": np.zeros((2, 3, 3, 3), np.float32)}, str(tmp_path / "resnet.safetensors"))
  config = score_config(tmp_path / "set", tmp_path / "out", encoders="clip,inception",
                        inception_weights=str(tmp_path / "resnet.safetensors"))
  with pytest.raises(UserError) as e:
    score.run(config)
  assert "Inception weights" in _one_line(e) and not (tmp_path / "out").exists()


def test_the_embedder_feeds_an_encoder_its_own_host_arrays(fid):
  """Inception's host batch is float32 at 299 (clean-fid's resize is not quantised); CLIP's stays uint8."""
  from jaxaug.score_lib import encoders

  enc = encoders.inception(str(fid["root"] / "weights.safetensors"))
  assert (enc.size, enc.dim, enc.host_dtype, enc.label) == (299, 2048, np.float32, "Inception")
  assert enc.identity["weights"]["files"][0][0] == "weights.safetensors"
  image = fid_inputs.image(50, 7)
  np.testing.assert_array_equal(enc.fit(image), inception.clean_resize(image))
  embedder = embed.embedder_for(enc, score.mesh.data_mesh(), 1, 1)
  assert embedder.dtype == np.float32 and embedder.fit is enc.fit
