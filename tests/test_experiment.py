"""python -m jaxaug.experiment: the demo grid end to end, SIGKILL and rerun, the dry run, bad input, the tables."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxaug import config_files
from jaxaug.data import world
from jaxaug.errors import UserError
from jaxaug.experiment_lib import cost, grid as grid_lib, results as results_lib, runner

ROOT = Path(__file__).resolve().parent.parent


def _env():
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.expanduser("~/.cache/jaxaug-tests/jax"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5", JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  env.setdefault("JAXAUG_CACHE_DIR", str(Path.home() / ".cache" / "jaxaug"))
  return env


def _experiment(out, *flags, wait=True):
  cmd = [sys.executable, "-m", "jaxaug.experiment", "--config=experiment_tiny", f"--config.output.dir={out}", *flags]
  if not wait:
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)


def _manifest_keys(out):
  return [json.loads(line)["key"] for line in (Path(out) / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The demo grid run straight through (2 shot counts x 2 methods + real x 2 seeds), by the command itself."""
  out = tmp_path_factory.mktemp("grid") / "whole"
  started = time.perf_counter()
  run = _experiment(out)
  assert run.returncode == 0, run.stderr[-3000:]
  return out, run, time.perf_counter() - started


def test_demo_grid_runs_end_to_end(reference):
  out, run, seconds = reference
  print(f"\ndemo grid, uninterrupted: {seconds:.0f}s")
  results = json.loads((out / "results.json").read_text())
  assert results["runs_done"] == results["runs_total"] == 2 * 3 * 2
  assert {(r["shots"], r["row"], r["seed"]) for r in results["runs"]} == {
      (k, row, s) for k in (1, 2) for row in ("embed_cutmix_dropout", "mixup", "real") for s in (0, 1)}
  for r in results["runs"]:
    assert r["status"] == "done" and 0.0 <= r["best_top1"] <= 1.0 and r["best_top1"] >= r["top1"]
    metrics = json.loads((out / r["workdir"] / "metrics.json").read_text())
    assert metrics["best_top1"] == r["best_top1"]  # the table's numbers are the runs' own
  # Each synthetic run trained on its own method's images of its column's set.
  config = json.loads((out / "train/demo_2shot/mixup/seed1/config.json").read_text())
  assert (config["synthetic"], config["synthetic_method"], config["shots"], config["seed"]) == (
      str(out / "synthetic/demo_2shot"), "mixup", 2, 1)
  assert json.loads((out / "train/demo_1shot/real/seed0/config.json").read_text())["synthetic"] == ""
  sets = {s["name"]: s for s in results["synthetic_sets"]}
  assert sets["demo_1shot"]["images"] == 4 * 2 * 2 and sets["demo_1shot"]["methods"] == ["embed_cutmix_dropout",
                                                                                           "mixup"]
  # Each set was scored by jaxaug.score against the real images it was made from, per method.
  scores = sets["demo_2shot"]["scores"]["methods"]
  assert set(scores) == {"embed_cutmix_dropout", "mixup"} and all(m["fd"] > 0 for m in scores.values())
  assert (out / "synthetic/demo_2shot/scores/scores.json").is_file()
  subset = json.loads((out / "subsets/demo_2shot_seed0.json").read_text())
  assert subset["counts"] == [2, 2, 2, 2] and len(subset["ids"]) == 8
  md = (out / "results.md").read_text()
  assert "| method | demo 1-shot | demo 2-shot |" in md and "| real (baseline) |" in md
  picture = np.asarray(Image.open(out / "accuracy_demo.png").convert("RGB"))
  assert picture.shape[0] >= 400 and len(np.unique(picture.reshape(-1, 3), axis=0)) > 20
  # The two columns' 12 runs trained as 2 batched programs that compiled their steps once.
  log = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
  assert log["training_programs_traced"] == {"init": 1, "train_step": 1, "eval_step": 1}
  assert "12 of 12 training runs done" in run.stdout and "training compiled 3 program(s)" in run.stdout


def test_rerun_of_a_finished_grid_runs_nothing(reference):
  out, _, _ = reference
  before = (out / "manifest.jsonl").read_text(), (out / "results.json").read_text()
  again = _experiment(out)
  assert again.returncode == 0, again.stderr[-2000:]
  assert ((out / "manifest.jsonl").read_text(), (out / "results.json").read_text()) == before
  assert json.loads((out / "runs.jsonl").read_text().splitlines()[-1])["training_programs_traced"] == {}


def test_sigkill_mid_grid_then_rerun_gives_the_same_results(reference, tmp_path):
  whole, _, _ = reference
  out = tmp_path / "killed"
  proc = _experiment(out, wait=False)
  # Mid-training of the first column: its program has saved step 6 of 12 (generation is done by then).
  deadline = time.time() + 600
  while not list(out.glob("train/demo_1shot/_programs/*/checkpoints/6")):
    assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:] if proc.poll() else "timeout"
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (out / "results.json").exists() or json.loads((out / "results.json").read_text())["runs_done"] < 12
  keys_at_kill = _manifest_keys(out)
  assert {"generate/demo_1shot", "score/demo_1shot"} <= set(keys_at_kill)
  assert not any(k.startswith("train/") for k in keys_at_kill)
  rerun = _experiment(out)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert json.loads((out / "results.json").read_text()) == json.loads((whole / "results.json").read_text())
  assert (out / "results.md").read_text() == (whole / "results.md").read_text()
  keys = _manifest_keys(out)
  assert len(keys) == len(set(keys)) == len(_manifest_keys(whole))  # no cell recorded twice, none missing
  assert "wrote 0 image(s)" not in rerun.stdout  # the finished set was not even reopened by generate
  for name in ("demo_1shot", "demo_2shot"):
    shards = sorted((whole / "synthetic" / name / "shards").glob("*.array_record"))
    assert [p.read_bytes() for p in shards] == [
        (out / "synthetic" / name / "shards" / p.name).read_bytes() for p in shards]


# ---------------------------------------------------------------------------
# Dry run


def test_dry_run_of_the_demo_prints_the_plan_and_runs_nothing(tmp_path):
  run = _experiment(tmp_path / "plan", "--dry_run")
  assert run.returncode == 0, run.stderr[-2000:]
  assert "images to generate: 32 in 2 generation runs" in run.stdout
  assert "training runs: 12" in run.stdout and "12 runs x 12 steps of batch 8" in run.stdout
  assert "device-hours on one H100" in run.stdout and "TFLOP per image" in run.stdout
  assert not (tmp_path / "plan").exists()


def test_fewshot_grid_plan_counts():
  config = config_files.load("fewshot_grid")
  grid = grid_lib.settings(config)
  cells = grid_lib.cells(grid)
  p = cost.plan(config, grid, cells, flops=False)
  # Documented sizes (no TFDS data here): 102 + 102 + 20 + 80 classes x 16 images x (10 methods + txt2img + sdedit)
  # x 5 shot counts; 4 datasets x 5 shots x 13 rows x 4 seeds runs of 50 x 200 steps.
  assert p["images"] == (102 + 102 + 20 + 80) * 16 * 12 * 5
  assert p["generation_runs"] == 4 * 5 * 3 and p["subsets"] == 20
  assert p["training_runs"] == 1040 and all(t["steps_each"] == [10_000] for t in p["training"])
  assert len(p["notes"]) == 4 and "not on this machine" in p["notes"][0]


def test_world_long_tail_grid_plan_counts():
  """The small local variant of the ImageNet-LT grid: world:lt filled to 100 images per class, one generation run
  per method and one for txt2img, 3 trials of 3 rows trained as one group."""
  config = config_files.load("experiment_world_lt")
  grid = grid_lib.settings(config)
  p = cost.plan(config, grid, grid_lib.cells(grid), flops=False)
  filled = sum(max(0, 100 - n) for n in world.lt_counts())  # 548
  assert p["images"] == 2 * filled and p["generation_runs"] == 2 and p["subsets"] == 0
  assert p["training_runs"] == 9 and all(t["steps_each"] == [320] for t in p["training"])
  config.sources.world = "world:lt?min=1"  # the harder tail the docs measure
  grid = grid_lib.settings(config)
  p = cost.plan(config, grid, grid_lib.cells(grid), flops=False)
  assert p["images"] == 2 * sum(max(0, 100 - n) for n in world.lt_counts(10, 200, 1))


def test_abstract_model_has_the_loaded_checkpoints_shapes():
  """The dry run counts FLOPs on an architecture rebuilt from configs alone: it must be the checkpoint's."""
  import jax

  from jaxaug import flops
  from jaxaug.models import load, tiny

  for name in ("tiny", "tiny-sd"):
    pipe, params, _ = flops.abstract_model(name)
    loaded_pipe, loaded = load(tiny.resolve_model(name))
    assert jax.tree.structure(params) == jax.tree.structure(loaded)
    assert jax.tree.leaves(jax.tree.map(lambda a, b: a.shape == b.shape, params, loaded)) == [True] * len(
        jax.tree.leaves(loaded))
    assert (pipe.kind, pipe.scheduler_name, pipe.vae_factor) == (loaded_pipe.kind, loaded_pipe.scheduler_name,
                                                                 loaded_pipe.vae_factor)
  # A hub id not on this machine is taken at SD 2.1-unCLIP size: SD 2.1's 865.9 M UNet parameters plus the 4.3 M
  # of its image-embedding projection.
  pipe, params, where = flops.abstract_model("sd2-community/stable-diffusion-2-1-unclip")
  unet = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params["unet"]))
  assert "not on this machine" in where and round(unet / 1e6, 1) == 870.2 and pipe.image_embed_dim == 1024


# ---------------------------------------------------------------------------
# Bad input: one line, exit 2, before any stage


def _demo(**fields):
  config = config_files.load("experiment_tiny")
  config.update_from_flattened_dict(fields)
  return config


def test_methods_none_is_a_grid_of_baselines_only():
  grid = grid_lib.settings(_demo(methods="none", baselines="real,txt2img"))
  assert grid.methods == () and grid.rows == ("real", "txt2img")


@pytest.mark.parametrize("fields, message", [
    ({"datasets": "demo,mnist"}, r"unknown dataset 'mnist': --config.datasets takes names of --config.sources"),
    ({"methods": "mixup,cutout"}, r"unknown method 'cutout' in --config.methods"),
    ({"baselines": "real,randaugment"}, r"unknown baseline 'randaugment'"),
    ({"methods": ""}, r"--config.methods='' names no method: .* or --config.methods=none for a grid of baselines only"),
    ({"methods": ","}, r"--config.methods=',' names no method"),
    ({"methods": "none", "baselines": ""}, r"the grid has no rows"),
    ({"shots": "1,two"}, r"'two' is not a whole number"),
    ({"shots": "0,1"}, r"unknown shot count 0 .* a positive number of real images per class"),
    ({"shots": "1,8"}, r"unknown shot count 8 for dataset demo: class 'red circle' has only 4 images"),
    ({"baselines": "real,sdedit"}, r"baseline sdedit needs a plain Stable Diffusion checkpoint: set "
                                   r"--config.sdedit.model"),
    ({"baselines": "sdedit", "sdedit.model": "tiny"}, r"'tiny' is an unCLIP checkpoint; sdedit needs a plain"),
    ({"generation.sampler.steps": 0}, r"--config.generation.sampler.steps=0 is out of range"),
    ({"training.crop_size": 99}, r"crop_size 99 is larger than load_size"),
    ({"score.settings.metrics.k": 0}, r"--config.score.settings.metrics.k=0 is out of range"),
    ({"score.settings.encoders": "clip,inception"}, r"--config.score.settings.inception_weights is empty"),
])
def test_bad_grids_are_one_line_before_any_stage(tmp_path, fields, message):
  config = _demo(**{"output.dir": str(tmp_path / "out"), **fields})
  with pytest.raises(UserError, match=message):
    runner.run(config)
  assert not (tmp_path / "out").exists()


def test_cells_that_disagree_on_classes_are_refused(tmp_path):
  for split, classes in (("train", ("cat", "dog")), ("test", ("cat", "fox"))):
    for name in classes:
      folder = tmp_path / "data" / split / name
      folder.mkdir(parents=True)
      for i in range(2):
        Image.new("RGB", (8, 8), (i * 90, 0, 0)).save(folder / f"{i}.png")
  config = _demo(**{"output.dir": str(tmp_path / "out"), "shots": "1", "sources.demo": f"folder:{tmp_path}/data/{{split}}"})
  with pytest.raises(UserError, match=r"dataset demo: splits train \(2 classes\) and test \(2 classes\) disagree at "
                                      r"class 1, so its cells would not share classes"):
    runner.run(config)
  assert not (tmp_path / "out").exists()


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
  run = _experiment(tmp_path / "out", "--config.methods=mixup,bogus")
  assert run.returncode == 2
  errors = [l for l in run.stderr.splitlines() if l.startswith("jaxaug: error:")]
  assert len(errors) == 1 and "unknown method 'bogus'" in errors[0] and "Traceback" not in run.stderr
  assert not (tmp_path / "out").exists()


def test_a_finished_cell_under_a_changed_config_is_refused(reference, tmp_path):
  out, _, _ = reference
  config = _demo(**{"output.dir": str(out), "training.lr": 0.5})
  with pytest.raises(UserError, match=r"train/demo_1shot/embed_cutmix_dropout/seed0 in .* was finished with another "
                                      r"config \(lr changed\)"):
    runner.run(config)


# ---------------------------------------------------------------------------
# Tables and pictures from a hand-made results.json


def _hand_made() -> dict:
  def summary(dataset, shots, row, values, of=2):
    a = np.asarray(values, float)
    return {"dataset": dataset, "shots": shots, "row": row, "done": len(values), "of": of,
            "best_top1": {"mean": float(a.mean()) if a.size else None,
                          "std": float(a.std(ddof=1)) if a.size > 1 else None, "n": len(values)}}

  rows = [summary("caltech101", 1, "dropout", [0.8, 0.9]), summary("caltech101", 4, "dropout", [0.85]),
          summary("caltech101", 1, "real", [0.7, 0.7]), summary("caltech101", 4, "real", [])]
  return {"table": "fewshot", "metric": "best_top1", "datasets": [
      {"name": "caltech101", "spec": "tfds:caltech101", "train_split": "train", "eval_split": "test"}],
      "shots": [1, 4], "methods": ["dropout"], "baselines": ["real"], "seeds": [0, 1], "reference_quirks": False,
      "runs_done": 5, "runs_total": 8, "summary": rows, "runs": [], "synthetic_sets": [
          {"name": "caltech101_1shot", "status": "done", "images": 3264, "scores": {"methods": {"dropout": {
              "n_synthetic": 1632, "fd": 12.34, "coverage": 0.5, "diversity": 0.25, "copy_share": 0.01}}}},
          {"name": "caltech101_4shot", "status": "pending", "scores": None}],
      "paper": {"caltech101": {k: list(v) for k, v in results_lib.PAPER["caltech101"].items()}}}


def test_table_renders_the_papers_layout_with_its_baselines():
  md = results_lib.markdown(_hand_made()).splitlines()
  assert "| method | caltech101 1-shot | caltech101 4-shot |" in md
  assert "| dropout | **0.850 ± 0.071** | 0.850 (1/2) |" in md
  assert "| real (baseline) | 0.700 ± 0.000 | pending |" in md
  assert "| *DA-Fusion (paper)* | *0.854* | *0.922* |" in md
  assert "| *Real Guidance (paper)* | *0.841* | *0.917* |" in md
  assert "| *RandAugment (paper)* | *0.791* | *0.917* |" in md
  assert any("5 of 8 runs finished; the rest are pending" in line for line in md)
  assert "| caltech101_1shot dropout | 1,632 | 12.3 | 0.500 | 0.250 | 1.0% |" in md
  assert "| caltech101_4shot | pending |  |  |  |  |" in md


def test_synthetic_sets_table_names_the_space_of_each_fd():
  from jaxaug.experiment_lib import results

  def scored(name, encoder=None):
    scores = {"methods": {"cutmix": {"n_synthetic": 8, "fd": 12.5, "coverage": 0.5, "diversity": 0.25}}}
    return {"name": name, "status": "done", "images": 8, "scores": {**scores, **({"encoder": encoder} if encoder else {})}}

  def table(*sets):
    return "\n".join(results._sets_markdown(list(sets)))

  assert "| FD-Inception ↓ |" in table(scored("a", "Inception"), scored("b", "Inception"))
  assert "| FD-CLIP ↓ |" in table(scored("a"))  # scored before the encoder was recorded: CLIP, as it was then
  mixed = table(scored("a", "Inception"), scored("b", "DINOv2"))
  assert "| FD ↓ (space) |" in mixed and "12.5 (Inception)" in mixed and "12.5 (DINOv2)" in mixed


def test_partial_pictures_draw_what_is_finished(tmp_path):
  paths = runner.write_results(tmp_path, _hand_made())
  assert [p.name for p in paths] == ["results.json", "results.md", "accuracy_caltech101.png"]
  picture = np.asarray(Image.open(tmp_path / "accuracy_caltech101.png").convert("RGB"))
  # The paper's three baselines are drawn in their greys, our lines in their colours.
  colours = {tuple(c) for c in picture.reshape(-1, 3)}
  assert (90, 90, 90) in colours and (31, 119, 180) in colours and (214, 39, 40) in colours


def test_generation_baselines_txt2img_and_sdedit_run_in_a_grid(tmp_path):
  """txt2img on the unCLIP checkpoint (all-zero image vector) and sdedit on a plain SD one, each its own set."""
  config = _demo(**{"output.dir": str(tmp_path / "out"), "methods": "none", "baselines": "txt2img,sdedit",
                    "shots": "1", "seeds": "0", "sdedit.model": "tiny-sd", "sdedit.resolution": 32,
                    "score.enabled": False, "training.epochs": 1, "training.steps_per_epoch": 2,
                    "training.eval_every": 0, "generation.sampler.steps": 2})
  results = runner.run(config)
  sets = {s["name"]: s for s in results["synthetic_sets"]}
  assert sets["demo_1shot_txt2img"]["images"] == sets["demo_1shot_sdedit"]["images"] == 4 * 2
  from jaxaug.data import synthetic

  for name, mode in (("demo_1shot_txt2img", "txt2img"), ("demo_1shot_sdedit", "img2img")):
    source = synthetic.SyntheticSource(tmp_path / "out" / "synthetic" / name)
    assert source.provenance(0)["mode"] == mode
  assert json.loads((tmp_path / "out" / "synthetic/demo_1shot_sdedit/config.json").read_text())["config"]["model"] == \
      "tiny-sd"
  assert [r["row"] for r in results["runs"]] == ["txt2img", "sdedit"] and results["runs_done"] == 2
  config_t = json.loads((tmp_path / "out/train/demo_1shot/txt2img/seed0/config.json").read_text())
  assert config_t["synthetic"].endswith("synthetic/demo_1shot_txt2img") and config_t["synthetic_method"] == ""


def test_imagenet_lt_table_has_the_groups_per_method(tmp_path):
  def stats(values):
    a = np.asarray(values, float)
    return {"mean": float(a.mean()) if a.size else None, "std": float(a.std(ddof=1)) if a.size > 1 else None,
            "n": len(values)}

  rows = [{"dataset": "imagenet_lt", "shots": 0, "row": "embed_cutmix_dropout", "done": 1, "of": 1,
           "top1": stats([0.5]), "many": stats([0.6]), "medium": stats([0.45]), "few": stats([0.3])},
          {"dataset": "imagenet_lt", "shots": 0, "row": "real", "done": 0, "of": 1,
           **{g: stats([]) for g in results_lib.LT_COLUMNS}}]
  results = {"table": "imagenet_lt", "metric": "top1", "datasets": [
      {"name": "imagenet_lt", "spec": "imagenet_lt:/x", "train_split": "train", "eval_split": "test"}],
      "shots": [0], "methods": ["embed_cutmix_dropout"], "baselines": ["real"], "seeds": [0],
      "reference_quirks": True, "runs_done": 1, "runs_total": 2, "summary": rows, "runs": [], "synthetic_sets": [],
      "paper": {}}
  md = results_lib.markdown(results).splitlines()
  assert "| method | imagenet_lt overall | imagenet_lt many | imagenet_lt medium | imagenet_lt few |" in md
  assert "| embed_cutmix_dropout | 0.500 | 0.600 | 0.450 | 0.300 |" in md
  assert "| real (baseline) | pending | pending | pending | pending |" in md
  assert any("reference_quirks" in line for line in md)
  paths = runner.write_results(tmp_path, results)
  assert paths[-1].name == "accuracy_imagenet_lt.png" and Image.open(paths[-1]).size == (980, 460)
