"""python -m jaxaug.score end to end on a hand-made synthetic set with known answers; cache, resume, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxaug import config_base, score
from jaxaug.data import open_source, synthetic
from jaxaug.errors import exit_on_user_error
from jaxaug.score_lib import embed, pictures, report, scoring

ROOT = Path(__file__).resolve().parent.parent
NOISE_PER_CLASS = 4


def _png(pixels: np.ndarray) -> bytes:
  import io

  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()


def make_set(out: Path, class_names=None, unit_size: int = 8, units: int | None = None, model: str = "tiny") -> Path:
  """A synthetic set in the real format. Method "copy": every real image of demo:6 once, unchanged, with itself
  as source (so it is the real set). Method "noise": uniform noise, sourced on the class's first real image."""
  real = open_source("demo:6", "train")
  items = [("copy", int(real.labels[i]), real.read(i), real.id(i)) for i in range(len(real))]
  rng = np.random.default_rng(0)
  for c in range(real.num_classes):
    first = int(np.flatnonzero(real.labels == c)[0])
    items += [("noise", c, rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), real.id(first))
              for _ in range(NOISE_PER_CLASS)]
  names = list(class_names or real.class_names)
  starts = list(range(0, len(items), unit_size))
  for unit, start in enumerate(starts[:units]):
    records = [synthetic.encode_record(_png(pixels), label, names[label], item,
                                       {"method": method, "source_ids": [source]})
               for item, (method, label, pixels, source) in enumerate(items[start:start + unit_size], start)]
    synthetic.write_unit(out, unit, records)
  out.mkdir(parents=True, exist_ok=True)
  synthetic.write_info(out, {"class_names": names, "units": len(starts), "units_done": len(starts[:units])})
  generation = {"model": model, "data": {"source": "demo:6", "split": "train"}}
  (out / "config.json").write_text(json.dumps({"config": generation, "fingerprint": {"seed": 0}}))
  return out


def score_config(synthetic_dir, output_dir, **fields):
  config = config_base.score_config()
  config.synthetic, config.output_dir = str(synthetic_dir), str(output_dir)
  config.metrics.kid_subsets = 20
  config.metrics.copy_threshold = 0.999  # the tiny random tower finds all images alike (cosine ~0.95)
  for key, value in fields.items():
    target = config
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
  root = tmp_path_factory.mktemp("score")
  make_set(root / "set")
  config = score_config(root / "set", root / "scores")
  return root, config, score.run(config)


def _without_timing(scores: dict) -> dict:
  return {k: v for k, v in scores.items() if k not in ("timing", "about")}


def test_a_set_that_is_the_real_set_scores_as_identical(scored):
  """The "copy" method holds exactly the real images: FD 0, precision = recall = coverage = 1, all copies."""
  _, _, scores = scored
  copy, noise = scores["methods"]["copy"], scores["methods"]["noise"]
  assert copy["n_synthetic"] == copy["n_real"] == 24
  assert copy["fd"] == pytest.approx(0.0, abs=1e-6)
  assert copy["precision"] == copy["recall"] == copy["coverage"] == 1.0
  assert copy["diversity"] == pytest.approx(scores["real"]["diversity"], rel=1e-6)
  assert copy["copy_share"] == 1.0 and noise["copy_share"] == 0.0
  assert copy["consistency"] == 1.0 and noise["consistency"] < 1.0  # the real images' own classes; noise has none
  assert scores["overall"]["consistency"] == pytest.approx((24 + noise["consistency"] * 16) / 40)
  assert copy["kid_std"] > copy["kid_se"] > 0  # 20 subsets of 12 from 24: the whole set's error is the smaller
  assert noise["fd"] > 1.0 and noise["n_synthetic"] == 4 * NOISE_PER_CLASS
  copies = scores["copies"]
  assert copies["checked"] == 40 and copies["share"] == pytest.approx(24 / 40)
  assert copies["source_similarity"]["max"] == pytest.approx(1.0, abs=1e-5)
  histogram = copies["source_similarity"]["histogram"]
  nearest = sum(histogram["nearest_is_source"])
  assert nearest + sum(histogram["other"]) == 40 and nearest >= 24 and histogram["nearest_is_source"][-1] >= 24
  assert copies["nearest_is_source_share"] == pytest.approx(nearest / 40)
  assert all(r["method"] == "copy" for r in copies["most_similar"])
  assert [c["n_synthetic"] for c in scores["classes"]] == [6 + NOISE_PER_CLASS] * 4
  assert scores["groups"] == {}  # 6 real images in every class: no long tail
  assert scores["about"]["dim"] == 32 and scores["about"]["methods"] == ["copy", "noise"]


def test_report_files(scored):
  root, _, scores = scored
  out = root / "scores"
  assert json.loads((out / "scores.json").read_text()) == json.loads(json.dumps(scores))
  md = (out / "scores.md").read_text()
  assert "| **all** |" in md and "| copy | 24 | 0 |" in md and "| noise | 16 |" in md and "*real images*" in md
  assert "## Copy check" in md and "## Classes" in md
  histogram = next(line for line in md.splitlines() if line.startswith("| nearest real is the source |"))
  assert int(histogram.split("|")[-2]) >= 24  # the 24 copies are in the 0.95-1 bin
  assert "| own class ↑ |" in md and "(sd " in md and "Own class per method" in md
  for name, min_width in (("fidelity_diversity.png", 1000), ("worst_classes.png", 500), ("class_consistency.png", 500)):
    with Image.open(out / name) as image:
      assert image.width > min_width and image.height > 100
  assert not list(out.glob(".*tmp*"))


def test_a_worst_class_strip_shows_the_source_then_its_copy(scored):
  _, config, _ = scored
  emb = score.load_embeddings(score.prepare(config)).embeddings
  strip = pictures.pick_strip(emb, 0, 3, "red circle")
  first_real = int(np.flatnonzero(emb.real_labels == 0)[0])
  assert strip.source == first_real  # its copy and the 4 noise images use it: the class's most used source
  row, similarity = strip.nearest[0]
  assert similarity == pytest.approx(1.0, abs=1e-5) and emb.methods[row] == "copy" and emb.sources[row, 0] == first_real
  assert len(strip.farthest) == 3 and max(s for _, s in strip.farthest) <= strip.nearest[-1][1]


def test_the_consistency_page_orders_each_methods_images_by_class_agreement(scored, tmp_path):
  """Per class and method: the most class-agreeing first, then the least (own votes, margin, item id), none twice; the
  fidelity/diversity plot names the encoder it was given."""
  _, config, scores = scored
  emb = score.load_embeddings(score.prepare(config)).embeddings
  votes = scoring.class_votes(emb, scoring.MetricSettings.from_config(config.metrics))
  rows = pictures.pick_consistency_rows(emb, votes, [0, 2], 3)
  assert [r.title.split("\n")[:2] for r in rows] == [["red circle", "copy"], ["red circle", "noise"],
                                                      ["green checker", "copy"], ["green checker", "noise"]]
  key = lambda r: (votes.own_votes[r], votes.margin[r], emb.item_ids[r])
  for row in rows:
    most, least = [r for r, _ in row.most], [r for r, _ in row.least]
    assert [key(r) for r in most] == sorted(map(key, most), reverse=True)
    assert [key(r) for r in least] == sorted(map(key, least)) and not set(most) & set(least)
    assert least and min(map(key, most)) >= max(map(key, least))
    assert row.most[0][1] == f"{votes.own_votes[most[0]]}/5  {votes.margin[most[0]]:+.2f}"
  tile = lambda r: np.full((8, 8, 3), 200, np.uint8)
  assert pictures.consistency_png(rows, tile, tmp_path / "c.png", 3).is_file()
  drawn = [np.asarray(Image.open(pictures.fidelity_diversity_png(scores, tmp_path / f"{e}.png", e)))
           for e in ("clip", "dinov2")]
  assert drawn[0].shape == drawn[1].shape and (drawn[0] != drawn[1]).any()  # the titles name the encoder


def test_a_keep_list_beside_the_set_trains_on_the_kept_images_only(scored, tmp_path, capsys):
  """--config.keep=drop_bottom=0.25: per class of 10 images the 2 whose nearest real images agree least with their
  class (noise: the copies are the real images) are listed as dropped; train reads the list and trains on the rest,
  and its metrics.json records how many it dropped."""
  from jaxaug.train_lib import loop
  root, config, _ = scored
  config = score_config(root / "set", tmp_path / "scores", keep="drop_bottom=0.25",
                        cache_dir=str(root / "scores" / "embeddings"))
  scores = score.run(config)
  path = root / "set" / "keep-clip-drop_bottom-0.25.json"
  assert scores["keep"] == {"file": str(path), "rule": "drop_bottom=0.25", "encoder": "clip", "k": 5, "images": 40,
                            "kept": 32, "dropped": 8, "unreadable": 0}
  listed = json.loads(path.read_text())
  assert listed["counts"]["classes"] == {name: {"kept": 8, "dropped": 2} for name in open_source("demo:6").class_names}
  assert set(listed["dropped"]) <= set(range(24, 40)) and sorted(listed["kept"] + listed["dropped"]) == list(range(40))
  assert f"keep list: {path} (drop_bottom=0.25, clip votes of k = 5): kept 32 of 40" in capsys.readouterr().out
  assert "## Keep list" in (tmp_path / "scores" / "scores.md").read_text()

  run = config_base.training_config()
  run.update(real="demo:6", synthetic=str(root / "set"), synthetic_keep=str(path), workdir=str(tmp_path / "run"),
             model="resnet_tiny", load_size=16, crop_size=16, batch_size=8, eval_batch_size=8, epochs=1,
             steps_per_epoch=2, log_every=1, checkpoint_every=2, eval_every=0, num_workers=0)
  data = loop.open_data(run)
  assert sorted(data.synthetic.ids()) == sorted(f"item-{i}" for i in listed["kept"])
  metrics = loop.train_and_evaluate(run, data)
  assert metrics["synthetic_keep"] == {"file": str(path), "rule": "drop_bottom=0.25", "encoder": "clip", "k": 5,
                                       "kept": 32, "dropped": 8}
  assert json.loads((tmp_path / "run" / "metrics.json").read_text())["synthetic_keep"]["dropped"] == 8


def test_rerun_embeds_nothing_and_scores_the_same(scored):
  _, config, scores = scored
  again = score.run(config)
  assert again["timing"]["embedded_images"] == 0
  assert _without_timing(again) == _without_timing(scores)


def test_smaller_k_for_tiny_classes_is_a_warning_and_a_table_note(scored, caplog):
  root, config, _ = scored
  shared = str(root / "scores" / "embeddings")
  config = score_config(root / "set", root / "scores_k6", **{"metrics.k": 6, "cache_dir": shared})
  with caplog.at_level("WARNING"):
    scores = score.run(config)
  assert scores["timing"]["embedded_images"] == 0  # a new metric setting reuses the shared cache
  assert all(c["prdc_skipped"] and c["precision"] is None for c in scores["classes"])
  assert scores["prdc_skipped_classes"] == list(open_source("demo:6").class_names)
  assert "PRDC skipped for 4 class(es) with fewer than k+1 = 7" in caplog.text
  md = (root / "scores_k6" / "scores.md").read_text()
  assert "| skip | skip | skip | skip |" in md and "skipped for 4 class(es)" in md
  assert scores["methods"]["copy"]["precision"] == 1.0  # pooled rows have enough images


def test_a_killed_run_resumes_with_only_the_missing_units(scored, tmp_path, monkeypatch):
  root, _, _ = scored
  fields = {"batch.per_device": 4, "unit_size": 8}
  reference = score.run(score_config(root / "set", tmp_path / "whole", **fields))
  commit, calls = embed.Cache.commit, []

  def dying_commit(self, unit, *args, **kwargs):
    calls.append(unit)
    if len(calls) == 3:
      raise RuntimeError("killed")
    commit(self, unit, *args, **kwargs)

  monkeypatch.setattr(embed.Cache, "commit", dying_commit)
  config = score_config(root / "set", tmp_path / "killed", **fields)
  with pytest.raises(RuntimeError, match="killed"):
    score.run(config)
  monkeypatch.setattr(embed.Cache, "commit", commit)
  real_cache = next((tmp_path / "killed" / "embeddings").glob("real-*"))
  assert sorted(synthetic.read_done(real_cache)) == [0, 1]
  (real_cache / ".unit-00000002.npy.tmp-999").write_bytes(b"half")  # what a kill inside a write leaves
  with open(real_cache / "done_units.jsonl", "a") as f:
    f.write('{"unit": 2, "fi')  # a torn line
  resumed = score.run(config)
  assert resumed["timing"]["embedded_images"] == 24 + 40 - 16  # real units 0 and 1 were done
  assert not list(real_cache.glob(".unit-*"))
  assert _without_timing(resumed) == _without_timing(reference)


def _same_size_garbage(path: Path) -> None:
  """Other floats behind the unit's own header: a valid .npy of the right shape that only a checksum tells apart."""
  data = path.read_bytes()
  noise = np.random.default_rng(1).normal(size=(len(data) - 128) // 4).astype(np.float32).tobytes()
  path.write_bytes(data[:128] + noise)


DAMAGE = {"truncate": lambda p: p.write_bytes(p.read_bytes()[:p.stat().st_size // 2]),
          "empty": lambda p: p.write_bytes(b""),
          "delete": lambda p: p.unlink(),
          "garbage": _same_size_garbage}
DAMAGE_SAYS = {"truncate": "is {half} bytes, not the {size} recorded", "empty": "is 0 bytes, not the {size} recorded",
               "delete": "is missing", "garbage": "fails its checksum"}


def _copied_cache(root: Path, tmp_path: Path) -> Path:
  """The module run's cache, copied, so that damage stays in this test."""
  import shutil

  shutil.copytree(root / "scores" / "embeddings", tmp_path / "embeddings")
  return tmp_path / "embeddings"


def _rerun(root: Path, tmp_path: Path, caplog, name: str) -> dict:
  caplog.clear()
  with caplog.at_level("WARNING"):
    return score.run(score_config(root / "set", tmp_path / name, cache_dir=str(tmp_path / "embeddings")))


DAMAGED = [("truncate", "synthetic", 2, 8), ("empty", "synthetic", 4, 8), ("delete", "synthetic", 0, 8),
           ("garbage", "synthetic", 3, 8), ("truncate", "real", 0, 24), ("garbage", "real", 0, 24)]


@pytest.mark.parametrize("kind, cached_set, unit, rows", DAMAGED)
def test_a_damaged_cache_unit_is_embedded_again_with_a_warning(scored, tmp_path, caplog, kind, cached_set, unit, rows):
  """Issue 21 item 6: a truncated, emptied, deleted or same-size-garbage unit (once a traceback, or silently other
  scores) is embedded again, with one warning line naming it; the scores are the undamaged run's."""
  root, _, scores = scored
  cache = next(_copied_cache(root, tmp_path).glob(f"{cached_set}-*"))
  name = f"unit-{unit:08d}.npy"
  size = (cache / name).stat().st_size
  DAMAGE[kind](cache / name)
  again = _rerun(root, tmp_path, caplog, "damaged")
  warned = [r.getMessage() for r in caplog.records if name in r.getMessage()]
  assert len(warned) == 1 and f"embedding unit {unit} ({name}) in {cache}" in warned[0], caplog.text
  assert DAMAGE_SAYS[kind].format(half=size // 2, size=size) in warned[0], warned[0]
  assert warned[0].endswith(": embedding it again") and "\n" not in warned[0]
  assert again["timing"]["embedded_images"] == rows  # that unit only
  assert _without_timing(again) == _without_timing(scores)
  np.testing.assert_array_equal(np.load(cache / name), np.load(root / "scores" / "embeddings" / cache.name / name))
  clean = _rerun(root, tmp_path, caplog, "clean")  # the new record wins: nothing to redo
  assert clean["timing"]["embedded_images"] == 0 and not caplog.records, caplog.text


def test_a_unit_recorded_by_another_process_is_embedded_again_and_its_new_record_wins(scored, tmp_path, caplog):
  """A two-host run recorded unit 1 in done_units.p1.jsonl; damaged, one process embeds it again into
  done_units.jsonl, which sorts first: the higher version, not the file order, decides."""
  root, _, scores = scored
  cache = next(_copied_cache(root, tmp_path).glob("synthetic-*"))
  lines = (cache / "done_units.jsonl").read_text().splitlines(keepends=True)
  moved = [line for line in lines if json.loads(line)["unit"] == 1]
  (cache / "done_units.jsonl").write_text("".join(line for line in lines if line not in moved))
  (cache / "done_units.p1.jsonl").write_text("".join(moved))
  _same_size_garbage(cache / "unit-00000001.npy")
  again = _rerun(root, tmp_path, caplog, "damaged")
  assert again["timing"]["embedded_images"] == 8 and "embedding unit 1 (unit-00000001.npy)" in caplog.text
  assert _without_timing(again) == _without_timing(scores)
  assert json.loads((cache / "done_units.jsonl").read_text().splitlines()[-1])["version"] == 2
  assert _rerun(root, tmp_path, caplog, "clean")["timing"]["embedded_images"] == 0 and not caplog.records


def test_a_cache_from_before_checksums_is_checked_for_shape_then_gets_its_checksums(scored, tmp_path, caplog):
  """Done lines without "bytes" / "sha256" (an older jaxaug): a unit np.load cannot read is embedded again; the
  readable ones are kept, their files' checksums recorded, and from then on same-size garbage is caught too."""
  root, _, scores = scored
  cache = next(_copied_cache(root, tmp_path).glob("synthetic-*"))
  old = [{k: v for k, v in json.loads(line).items() if k not in ("bytes", "sha256", "version")}
         for line in (cache / "done_units.jsonl").read_text().splitlines()]
  (cache / "done_units.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in old))
  DAMAGE["truncate"](cache / "unit-00000002.npy")
  again = _rerun(root, tmp_path, caplog, "legacy")
  assert again["timing"]["embedded_images"] == 8 and _without_timing(again) == _without_timing(scores)
  assert "embedding unit 2 (unit-00000002.npy)" in caplog.text and "is unreadable (ValueError" in caplog.text
  assert "4 embedding unit(s) in" in caplog.text and "recorded without a checksum" in caplog.text
  lines = [json.loads(line) for line in (cache / "done_units.jsonl").read_text().splitlines()]
  assert {e["unit"] for e in lines if "sha256" in e} == {0, 1, 2, 3, 4}
  _same_size_garbage(cache / "unit-00000004.npy")
  caught = _rerun(root, tmp_path, caplog, "caught")
  assert caught["timing"]["embedded_images"] == 8 and "embedding unit 4 (unit-00000004.npy)" in caplog.text
  assert "fails its checksum" in caplog.text and _without_timing(caught) == _without_timing(scores)


def _call(config, capsys) -> str:
  with pytest.raises(SystemExit) as exit_:
    exit_on_user_error(score.run)(config)
  assert exit_.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("jaxaug: error: ")
  return err[0]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(scored, tmp_path, capsys):
  root, _, _ = scored
  out = tmp_path / "scores"
  assert "does not exist: run `python -m jaxaug.generate` first" in _call(score_config(tmp_path / "nope", out), capsys)
  make_set(tmp_path / "empty", units=0)
  assert "has no finished units yet" in _call(score_config(tmp_path / "empty", out), capsys)
  make_set(tmp_path / "renamed", class_names=["a", "b", "c", "d"], units=1)
  assert "class 0 is 'a' there but 'red circle' here" in _call(score_config(tmp_path / "renamed", out), capsys)
  line = _call(score_config(root / "set", out, model="tiny-sd"), capsys)
  assert "has no CLIP image tower (a plain Stable Diffusion checkpoint)" in line
  assert "copy_threshold" in _call(score_config(root / "set", out, **{"metrics.copy_threshold": 1.5}), capsys)
  for rule in ("drop_bottom=1.5", "drop_bottom=x", "own", "drop_bottom"):
    assert f"--config.keep={rule!r}: " in _call(score_config(root / "set", out, keep=rule), capsys)
  assert not out.exists()


def test_a_partial_set_is_scored_with_a_warning(tmp_path, caplog):
  make_set(tmp_path / "set", units=2)
  with caplog.at_level("WARNING"):
    scores = score.run(score_config(tmp_path / "set", tmp_path / "scores"))
  assert "scoring 2 of 5 units" in caplog.text
  assert scores["about"]["synthetic_images"] == 16 and scores["about"]["units_done"] == 2


def test_two_hosts_of_two_devices_embed_as_one(scored, tmp_path):
  """The CLI on 2 processes (launch/local.sh) of 2 devices each, per-device batch 2: each host embeds and records
  its own units, process 0 scores; the embeddings equal one device's at batch 32."""
  root, _, scores = scored
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  run = subprocess.run(["bash", str(ROOT / "launch" / "local.sh"), "2", "jaxaug.score",
                        f"--config.synthetic={root / 'set'}", f"--config.output_dir={tmp_path}",
                        "--config.batch.per_device=2", "--config.metrics.kid_subsets=20",
                        "--config.metrics.copy_threshold=0.999"], env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert f"scores: {tmp_path / 'scores.md'}" in run.stdout and "for 64 new images" in run.stdout
  assert (next((tmp_path / "embeddings").glob("synthetic-*")) / "done_units.p1.jsonl").is_file()
  for name in ("real", "synthetic"):
    one, four = (next((d / "embeddings").glob(f"{name}-*")) for d in (root / "scores", tmp_path))
    assert one.name == four.name  # the cache key does not depend on devices or batch
    for unit in sorted(one.glob("unit-*.npy")):
      np.testing.assert_allclose(np.load(four / unit.name), np.load(unit), rtol=1e-5, atol=1e-5)
  two = json.loads((tmp_path / "scores.json").read_text())
  assert two["methods"]["copy"]["precision"] == 1.0 and two["copies"]["share"] == scores["copies"]["share"]
  assert two["overall"]["fd"] == pytest.approx(scores["overall"]["fd"], rel=1e-4)


def test_command_line_bad_input_has_no_traceback(tmp_path):
  run = subprocess.run([sys.executable, "-m", "jaxaug.score", f"--config.synthetic={tmp_path / 'missing'}"],
                       capture_output=True, text=True, timeout=120)
  assert run.returncode == 2 and "Traceback" not in run.stderr
  assert run.stderr.strip().splitlines()[-1].startswith("jaxaug: error: synthetic set")


def test_no_flag_run_scores_the_demo_generation():
  """configs/score.py (the default) scores what the no-flag `python -m jaxaug.generate` writes, against its source."""
  from jaxaug import config_files, generate


  assert score._DEFAULT_CONFIG == "score" and config_files.resolve("score") == str(ROOT / "configs" / "score.py")
  config = config_files.load(score._DEFAULT_CONFIG)
  assert config.synthetic == generate.get_demo_config().output.dir
  assert config.real == config.split == config.model == ""  # taken from the set's config.json


# ---------------------------------------------------------------------------
# Scoring a long-tail set from embeddings


def _long_tail(rng, counts=(150, 60, 8), per_class=30, dim=16):
  centres = rng.normal(size=(len(counts), dim)) * 2  # same-class cosine about 0.8
  real_labels = np.repeat(np.arange(len(counts)), counts)
  labels = np.repeat(np.arange(len(counts)), per_class)
  real = (centres[real_labels] + rng.normal(size=(len(real_labels), dim))).astype(np.float32)
  fake = (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32)
  sources = np.full((len(labels), 2), -1)
  for c in range(len(counts)):  # sources: real images of the own class
    rows = np.flatnonzero(labels == c)
    sources[rows, 0] = np.flatnonzero(real_labels == c)[np.arange(len(rows)) % counts[c]]
  fake[::3] = real[sources[::3, 0]]  # every third image is its own source
  return scoring.Embeddings(real=real, real_labels=real_labels, synthetic=fake, labels=labels,
                            methods=np.array(["a", "b"] * (len(labels) // 2), dtype=object), sources=sources,
                            item_ids=np.arange(len(labels)), class_names=("x", "y", "z"),
                            real_counts=np.asarray(counts))


def test_long_tail_groups_and_copies_from_embeddings():
  emb = _long_tail(np.random.default_rng(0))
  settings = scoring.MetricSettings.from_config(config_base.score_config().metrics)
  scores = scoring.compute_scores(emb, settings)
  assert list(scores["groups"]) == ["many", "medium", "few"]
  assert [scores["groups"][g]["n_real"] for g in ("many", "medium", "few")] == [150, 60, 8]
  assert scores["methods"]["a"]["groups"]["few"]["n_synthetic"] == 15
  assert scores["copies"]["share"] == pytest.approx(1 / 3)  # exactly the planted copies
  assert scores["overall"]["copy_share"] == pytest.approx(1 / 3)
  assert scores["classes"][2]["precision"] is not None  # 8 real >= k + 1
  worst = scoring.worst_classes(scores, 2, "fd")
  assert [r["fd"] for r in worst] == sorted([c["fd"] for c in scores["classes"]], reverse=True)[:2]
  md = report.markdown({**scores, "about": {"synthetic": "s", "synthetic_images": 90, "units_done": 1, "units": 1,
                                            "real": "r", "split": "train", "real_images": 218, "model": "m", "dim": 8},
                        "settings": {"k": 5, "prdc_max": 10000, "copy_threshold": 0.95}})
  assert "## Many / medium / few" in md and "| **few** (1 classes) | all |" in md and "| few | b |" in md


def test_pooled_rows_see_at_most_prdc_max_images():
  emb = _long_tail(np.random.default_rng(1), counts=(300, 300, 300), per_class=200)
  base = dict(config_base.score_config().metrics)
  small = scoring.compute_scores(emb, scoring.MetricSettings(**{**base, "prdc_max": 50, "kid_subsets": 2}))
  full = scoring.compute_scores(emb, scoring.MetricSettings(**{**base, "prdc_max": 0, "kid_subsets": 2}))
  assert small["overall"]["fd"] == full["overall"]["fd"]  # FD always uses every image
  assert (small["overall"]["precision"], small["overall"]["recall"]) != (full["overall"]["precision"],
                                                                        full["overall"]["recall"])


def test_score_bench_reports_rates_scaling_and_the_imagenet_lt_extrapolation(capsys):
  from jaxaug import bench

  record = bench.main(["score", "--batch=2", "--repeats=1", "--score-images=120", "--score-dim=16",
                       "--score-classes=2", "--score-scaling=1,2,3", "--score-block-mb=1"])
  result = record["result"]
  assert result["embedding"]["images_per_s"] > 0 and result["embedding"]["dim"] == 32
  assert result["metrics"]["synthetic"] == result["metrics"]["real"] == 120 and result["metrics"]["metrics_s"] > 0
  scaling = result["scaling"]
  assert scaling["synthetic"] == "1164,2328,3492" and len(scaling["working_mib"].split(",")) == 3
  lt = result["imagenet_lt_extrapolated"]
  assert lt["synthetic"] == 1_164_154 and lt["embeddings_gib"] == pytest.approx((1_164_154 + 115_846) * 16 * 4 / 2**30)
  assert lt["peak_gib"] == pytest.approx(lt["embeddings_gib"] + lt["working_gib"])
  assert "imagenet_lt_extrapolated" in capsys.readouterr().out
