"""DINOv2 (jaxaug.models.dinov2) against PyTorch transformers: features on random weights of the hub's configs
(tests/golden/dinov2.npz, from tests/make_golden.py), torch's bicubic position resampling, the checkpoint
layouts transformers writes and reads, dgm-eval's preprocessing, and one-line errors for bad files."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import dinov2_cases as cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file, save_file

from jaxaug.errors import UserError
from jaxaug.models import dinov2

GOLDEN = np.load(Path(__file__).parent / "golden" / "dinov2.npz")
TOL = 1e-4


@functools.cache
def _features_fn(module):
  return jax.jit(lambda params, x: module.apply({"params": params}, x))


def _run(config, params, x):
  return np.asarray(_features_fn(dinov2.Dinov2(config))(params, x))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """Writes each case's random checkpoint once (ViT-S's serves two cases)."""
  written = {}

  def get(config: dict, seed: int) -> Path:
    key = (json.dumps(config, sort_keys=True), seed)
    if key not in written:
      written[key] = dinov2.write_random(tmp_path_factory.mktemp("dinov2"), config, seed)
    return written[key]

  return get


@pytest.mark.parametrize("case", list(cases.CASES))
def test_features_match_transformers(case, checkpoints):
  config, _, _, _, seed, modes = cases.CASES[case]
  root = checkpoints(config, seed)
  x = cases.pixels(case)
  got = {}
  loaded, params = dinov2.load(root, positions=modes[0])
  assert loaded == dinov2.Dinov2Config.from_transformers(config, case, positions=modes[0])
  raw = json.loads((root / "config.json").read_text())
  for mode in modes:
    cfg = dinov2.Dinov2Config.from_transformers(raw, case, positions=mode)  # what load(root, positions=mode) reads
    tokens = _run(cfg, params, x)
    got[mode] = tokens[:, 0]
    np.testing.assert_allclose(tokens[:, 0], GOLDEN[f"{case}/{mode}/features"], atol=TOL, rtol=0, err_msg=mode)
    np.testing.assert_allclose(tokens[:, cases.TOKENS, cases.TOKENS], GOLDEN[f"{case}/{mode}/tokens"], atol=TOL,
                               rtol=0, err_msg=f"{mode}: [CLS], registers, patches in transformers' order")
  assert got[modes[0]].shape == (x.shape[0], config["hidden_size"])
  if x.shape[0] > 1:  # the images' features differ: the test sees the input
    assert np.abs(got[modes[0]][0] - got[modes[0]][1]).max() > 100 * TOL
  if set(modes) == {"transformers", "dinov2"}:
    gap = np.abs(GOLDEN[f"{case}/transformers/features"] - GOLDEN[f"{case}/dinov2/features"]).max()
    if config["model_type"] == "dinov2" and x.shape[1] != config["image_size"]:
      assert gap > 100 * TOL  # the two resamplings differ far beyond the tolerance: the test tells them apart
    else:  # the register models' hub code resamples as transformers does; on the trained grid neither resamples
      assert gap < TOL


@pytest.mark.parametrize("rows,cols,antialias,offset", cases.RESAMPLES)
def test_resample_matrix_matches_torch_interpolate(rows, cols, antialias, offset):
  grid = cases.RESAMPLE_GRID
  source = cases.resample_source()
  weights = [dinov2.resample_matrix(grid, n, grid / (n + offset), antialias) for n in (rows, cols)]
  got = np.einsum("hi,wj,cij->chw", *weights, source)
  np.testing.assert_allclose(got, GOLDEN[f"resample/{rows}x{cols}/{int(antialias)}/{offset}"], atol=2e-5, rtol=0)


def test_features_are_the_cls_token(tiny):
  _, _, (config, params) = tiny
  module = dinov2.Dinov2(config)
  x = np.random.default_rng(0).standard_normal((2, 28, 42, 3), np.float32)
  tokens, got = jax.jit(lambda p, x: (module.apply({"params": p}, x), dinov2.features(module, p, x)))(params, x)
  assert tokens.shape == (2, 1 + 2 + 2 * 3, 32)
  np.testing.assert_allclose(got, tokens[:, 0], atol=1e-6)
  assert np.abs(got - tokens[:, 1]).max() > 0.1


# ---------------------------------------------------------------------------
# Layouts


def _strip(names):
  return sorted(n.removeprefix("dinov2.") for n in names if not n.startswith("classifier."))


@pytest.mark.parametrize("name", list(cases.LAYOUTS))
def test_random_checkpoints_have_save_pretrained_layout(name):
  state = dinov2.random_state(cases.LAYOUTS[name])
  names = [str(n) for n in GOLDEN[f"layout/{name}/names"]]
  shapes = dict(zip(names, (str(s) for s in GOLDEN[f"layout/{name}/shapes"])))
  assert sorted(state) == _strip(names)
  prefix = "dinov2." if name == "Dinov2ForImageClassification" else ""
  for key, value in state.items():
    assert ",".join(map(str, value.shape)) == shapes[prefix + key], key


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """A tiny SwiGLU checkpoint with registers (every kind of tensor), and its params as loaded."""
  config = {**dinov2.TINY, "model_type": "dinov2_with_registers", "use_swiglu_ffn": True, "num_register_tokens": 2}
  root = dinov2.write_random(tmp_path_factory.mktemp("tiny") / "dinov2", config, seed=7)
  return root, config, dinov2.load(root)


def _write(directory: Path, config: dict, state: dict) -> Path:
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "config.json").write_text(json.dumps(config))
  save_file(state, str(directory / "model.safetensors"))
  return directory


def _same_params(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_loader_reads_a_model_with_a_head(tiny, tmp_path):
  root, config, (_, params) = tiny
  state = load_file(str(root / "model.safetensors"))
  headed = {f"dinov2_with_registers.{k}": v for k, v in state.items()}
  headed["classifier.weight"] = np.ones((3, 64), np.float32)
  _, got = dinov2.load(_write(tmp_path / "headed", config, headed))
  _same_params(got, params)
  state["classifier.weight"] = headed["classifier.weight"]  # a head without a prefixed backbone is not a DINOv2
  with pytest.raises(UserError, match="classifier.weight"):
    dinov2.load(_write(tmp_path / "bare_with_head", config, state))


def test_loader_reads_transformers5_names(tiny, tmp_path):
  root, config, (_, params) = tiny
  state = load_file(str(root / "model.safetensors"))
  renamed = {}
  for key, value in state.items():
    for old, new in (("attention.attention.query", "attention.q_proj"), ("attention.attention.key", "attention.k_proj"),
                     ("attention.attention.value", "attention.v_proj"), ("attention.output.dense", "attention.o_proj"),
                     ("mlp.weights_out", "mlp.down_proj")):
      key = key.replace(old, new)
    if ".mlp.weights_in." in key:
      gate, up = np.split(value, 2)
      renamed[key.replace("weights_in", "gate_proj")], renamed[key.replace("weights_in", "up_proj")] = gate, up
    else:
      renamed[key] = value
  _, got = dinov2.load(_write(tmp_path / "v5", config, renamed))
  _same_params(got, params)
  del renamed["encoder.layer.1.mlp.up_proj.bias"]
  with pytest.raises(UserError, match=r"encoder\.layer\.1\.mlp\.up_proj\.bias"):
    dinov2.load(_write(tmp_path / "v5_incomplete", config, renamed))


def test_loader_reads_one_safetensors_file(tiny, tmp_path):
  root, _, (config, params) = tiny
  got_config, got = dinov2.load(root / "model.safetensors")
  assert got_config == config and config.num_register_tokens == 2 and config.use_swiglu_ffn
  _same_params(got, params)
  assert dinov2.load(root, positions="transformers")[0] == config  # register models resample alike either way
  plain = _write(tmp_path / "plain", dinov2.TINY, dinov2.random_state(dinov2.TINY))
  offsets = {mode: dinov2.load(plain, positions=mode)[0].interpolate_offset for mode in ("dinov2", "transformers")}
  assert offsets == {"dinov2": 0.1, "transformers": 0.0}


def _error(path, **kwargs) -> str:
  with pytest.raises(UserError) as e:
    dinov2.load(path, **kwargs)
  message = str(e.value)
  assert "\n" not in message
  return message


def test_bad_files_are_one_line_naming_file_and_tensor(tiny, tmp_path):
  root, config, _ = tiny
  state = load_file(str(root / "model.safetensors"))
  assert str(tmp_path / "nowhere") in _error(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  assert "config.json" in _error(tmp_path / "empty")
  no_weights = tmp_path / "no_weights"
  no_weights.mkdir()
  (no_weights / "config.json").write_text(json.dumps(config))
  assert "model.safetensors" in _error(no_weights)
  bad_json = _write(tmp_path / "bad_json", config, state)
  (bad_json / "config.json").write_text("{not json")
  assert str(bad_json / "config.json") in _error(bad_json)
  clip = _write(tmp_path / "clip", {**config, "model_type": "clip_vision_model"}, state)
  assert "clip_vision_model" in _error(clip)
  assert "positions" in _error(root, positions="timm")
  for field, value in (("hidden_size", "big"), ("image_size", [518, 224]), ("mlp_ratio", "4"), ("layer_norm_eps", -1)):
    assert field in _error(_write(tmp_path / f"odd_{field}", {**config, field: value}, state))
  assert "num_attention_heads" in _error(_write(tmp_path / "heads", {**config, "num_attention_heads": 5}, state))
  missing = dict(state)
  del missing["encoder.layer.0.attention.attention.key.weight"]
  where = _write(tmp_path / "missing", config, missing)
  message = _error(where)
  assert "encoder.layer.0.attention.attention.key.weight" in message and str(where / "model.safetensors") in message
  misshaped = {**state, "embeddings.position_embeddings": state["embeddings.position_embeddings"][:, :-1]}
  message = _error(_write(tmp_path / "misshaped", config, misshaped))
  assert "embeddings.position_embeddings" in message and "(1, 16, 32)" in message
  truncated = _write(tmp_path / "truncated", config, state) / "model.safetensors"
  truncated.write_bytes(truncated.read_bytes()[:100])
  assert str(truncated) in _error(truncated)


# ---------------------------------------------------------------------------
# Preprocessing (dgm-eval's)


def test_preprocess_normalises_with_imagenet_statistics():
  image = np.zeros((1, 100, 60, 3), np.uint8) + np.uint8([255, 0, 128])
  out = dinov2.preprocess(image)
  assert out.shape == (1, 224, 224, 3) and out.dtype == np.float32  # squashed to 224 x 224, as dgm-eval's Resize
  want = (np.float32([1.0, 0.0, 128 / 255]) - np.float32(dinov2.IMAGENET_MEAN)) / np.float32(dinov2.IMAGENET_STD)
  np.testing.assert_allclose(out, np.broadcast_to(want, out.shape), atol=1e-6)


def test_preprocess_resizes_with_pil_bicubic():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 150, 300, 3), dtype=np.uint8)
  out = dinov2.preprocess(images)
  mean, std = np.float32(dinov2.IMAGENET_MEAN), np.float32(dinov2.IMAGENET_STD)
  pixels = np.rint((out * std + mean) * 255)
  pil = np.asarray(Image.fromarray(images[1]).resize((224, 224), Image.BICUBIC))
  np.testing.assert_allclose(pixels[1], pil, atol=0)
  same = rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)  # already 224: untouched
  np.testing.assert_allclose(np.rint((dinov2.preprocess(same) * std + mean) * 255), same, atol=0)
  mixed = dinov2.preprocess([images[0], same[0][:100]])  # a list of images of different sizes
  np.testing.assert_array_equal(mixed[0], out[0])
  np.testing.assert_array_equal(mixed[1], dinov2.preprocess(same[:, :100])[0])
  grey = dinov2.preprocess(images[:, :, :, :1])
  np.testing.assert_allclose(grey[..., 0] * std[0] + mean[0], grey[..., 2] * std[2] + mean[2], atol=1e-6)
  with pytest.raises(ValueError, match="uint8"):
    dinov2.preprocess(images.astype(np.float32))


def test_score_with_dinov2_reports_fd_dinov2_from_the_modules_own_features(tmp_path, capsys):
  """`--config.encoders=dinov2,clip`: the DINOv2 encoder leads the report (FD-DINOv2), CLIP is beside it; each
  cached real embedding is exactly what the module gives the preprocessed image, and a copy's equals its source's."""
  from jaxaug import score
  from jaxaug.data.images import decode_image
  from test_score import make_set, score_config

  weights = dinov2.write_random(tmp_path / "dino", dinov2.TINY, seed=3)
  make_set(tmp_path / "set", unit_size=4, units=1)  # 4 "copy" images: real images of demo:6, unchanged
  config = score_config(tmp_path / "set", tmp_path / "out", encoders="dinov2,clip", dinov2=str(weights), shots=1,
                        **{"batch.per_device": 4, "metrics.k": 2, "metrics.kid_subset_size": 4, "metrics.prdc_max": 0})
  scores = score.run(config)
  assert scores["about"]["encoder"] == "dinov2" and scores["about"]["dim"] == dinov2.TINY["hidden_size"]
  assert scores["overall"]["fd"] is not None and scores["by_encoder"]["clip"]["label"] == "CLIP"
  assert "overall: FD-DINOv2" in capsys.readouterr().out
  assert "| images | FD-DINOv2 ↓ |" in (tmp_path / "out" / "scores.md").read_text()

  job = score.prepare(config)
  emb = score.load_embeddings(job, 0).embeddings
  config_, params = dinov2.load(str(weights))
  module = dinov2.Dinov2(config_)
  image = decode_image(job.real.read(0))
  want = np.asarray(dinov2.features(module, params, jnp.asarray(dinov2.preprocess(image[None]))))[0]
  np.testing.assert_allclose(emb.real[0], want, rtol=1e-4, atol=1e-4)
  paired = [(row, src) for row, src in enumerate(emb.sources[:, 0]) if src >= 0]
  assert paired
  for row, src in paired:
    np.testing.assert_allclose(emb.synthetic[row], emb.real[src], rtol=1e-5, atol=1e-4)
