"""Every config value is checked before any work: one row per bad value, each one line and nothing written.

The command-line path (one line on stderr, exit status 2, no traceback) is the same wrapper for every
UserError; tests/test_generate.py and tests/test_install.py run some of these rows through it.
"""

import numbers
import subprocess
import sys

import pytest

from jaxaug import config_base, generate, score, train
from jaxaug.config_base import GENERATION_RANGES, TRAINING_RANGES, generation_config, training_config
from jaxaug.errors import UserError, exit_on_user_error


def _small_generation(out):
  config = generate.get_demo_config()
  config.output.dir = str(out)
  return config


GENERATION_ROWS = [
    # The cases.
    ({"data.source_size": 0}, "--config.data.source_size=0 is out of range: it must be >= 1"),
    ({"data.source_size": -5}, "--config.data.source_size=-5 is out of range: it must be >= 1"),
    ({"prompt": "a photo of {"}, "--config.prompt='a photo of {' is not a prompt template (ValueError"),
    ({"prompt": "{0} {1}"}, "--config.prompt='{0} {1}' is not a prompt template (IndexError"),
    ({"prompt": "a {name}"}, "--config.prompt='a {name}' is not a prompt template (KeyError"),
    ({"sampler.noise_level": 5000}, "noise_level=5000 is out of range: this checkpoint's image-noising schedule has "
                                    "levels 0..999"),
    ({"sampler.noise_level": -3}, "--config.sampler.noise_level=-3 is out of range: it must be >= 0"),
    ({"output.jpeg_quality": 0}, "--config.output.jpeg_quality=0 is out of range: it must be in [1, 100]"),
    ({"output.jpeg_quality": 150}, "--config.output.jpeg_quality=150 is out of range: it must be in [1, 100]"),
    ({"reader_threads": 0}, "--config.reader_threads=0 is out of range: it must be >= 1"),
    ({"data.split": "trian"}, "data source 'world:8' has no split 'trian': the world has train and test"),
    # Issue 15 item 5.
    ({"sampler.guidance": -1.0}, "--config.sampler.guidance=-1.0 is out of range: it must be >= 0"),
    ({"resolution": -64}, "--config.resolution=-64 is out of range: it must be >= 1"),
    # The sweep of config_base.py.
    ({"resolution": 0}, "--config.resolution=0 is out of range"),
    ({"resolution": 30}, "resolution 30 must be a multiple of 8 for this checkpoint"),
    ({"seed": -1}, "--config.seed=-1 is out of range: it must be in [0, 4294967295]"),
    ({"seed": 2**32}, "--config.seed=4294967296 is out of range"),
    ({"alpha": 0.0}, "--config.alpha=0.0 is out of range: it must be > 0"),
    ({"data.shots": -1}, "--config.data.shots=-1 is out of range"),
    ({"data.shots_seed": -1}, "--config.data.shots_seed=-1 is out of range"),
    ({"plan.amount": 0}, "--config.plan.amount=0 is out of range: it must be >= 1"),
    ({"plan.unit_size": 0}, "--config.plan.unit_size=0 is out of range"),
    ({"sampler.steps": 0}, "--config.sampler.steps=0 is out of range"),
    ({"sampler.strength": 0.0}, "--config.sampler.strength=0.0 is out of range: it must be in (0, 1]"),
    ({"sampler.strength": 1.5}, "--config.sampler.strength=1.5 is out of range"),
    ({"batch.per_device": 0}, "--config.batch.per_device=0 is out of range"),
    ({"mesh.num_processes": -1}, "--config.mesh.num_processes=-1 is out of range"),
    ({"mesh.process_id": -2}, "--config.mesh.process_id=-2 is out of range"),
    ({"output.format": "gif"}, "--config.output.format='gif' is not one of png, jpeg"),
    ({"dtype": "fp16"}, "--config.dtype='fp16' is not one of auto, fp32, bf16"),
    ({"plan.policy": "all"}, "--config.plan.policy='all' is not one of fill_to, per_class, per_image"),
    ({"sampler.mode": "text"}, "--config.sampler.mode='text' is not one of unclip, txt2img, img2img"),
    ({"output.dir": ""}, "--config.output.dir is empty"),
    ({"methods": " , "}, "config.methods is empty"),
]


@pytest.mark.parametrize("override, expect", GENERATION_ROWS, ids=[str(o) for o, _ in GENERATION_ROWS])
def test_bad_generation_value(tmp_path, override, expect):
  config = _small_generation(tmp_path / "out")
  config.update_from_flattened_dict(override)
  with pytest.raises(UserError) as err:
    generate.prepare(config)
  message = str(err.value)
  assert expect in message and "\n" not in message, message
  assert not (tmp_path / "out").exists()


def test_negative_resolution_does_not_claim_a_multiple(tmp_path):
  config = _small_generation(tmp_path / "out")
  config.resolution = -64
  with pytest.raises(UserError) as err:
    generate.prepare(config)
  assert "multiple of 4" not in str(err.value)


TRAINING_ROWS = [
    ({"lr": 0.0}, "--config.lr=0.0 is out of range: it must be > 0"),
    ({"lr": -1.0}, "--config.lr=-1.0 is out of range"),
    ({"momentum": 1.5}, "--config.momentum=1.5 is out of range: it must be in [0, 1]"),
    ({"weight_decay": -1e-4}, "--config.weight_decay=-0.0001 is out of range"),
    ({"warmup_epochs": -1.0}, "--config.warmup_epochs=-1.0 is out of range"),
    ({"label_smoothing": 1.0}, "--config.label_smoothing=1.0 is out of range: it must be in [0, 1)"),
    ({"synthetic_fraction": 1.5}, "--config.synthetic_fraction=1.5 is out of range: it must be in [0, 1]"),
    ({"load_size": 0}, "--config.load_size=0 is out of range"),
    ({"crop_size": 0}, "--config.crop_size=0 is out of range"),
    ({"batch_size": 0}, "--config.batch_size=0 is out of range"),
    ({"eval_batch_size": -8}, "--config.eval_batch_size=-8 is out of range"),
    ({"epochs": 0}, "--config.epochs=0 is out of range"),
    ({"steps_per_epoch": -1}, "--config.steps_per_epoch=-1 is out of range"),
    ({"log_every": 0}, "--config.log_every=0 is out of range"),
    ({"eval_every": -1}, "--config.eval_every=-1 is out of range"),
    ({"checkpoint_every": 0}, "--config.checkpoint_every=0 is out of range"),
    ({"num_threads": 0}, "--config.num_threads=0 is out of range"),
    ({"num_workers": -1}, "--config.num_workers=-1 is out of range"),
    ({"seed": -1}, "--config.seed=-1 is out of range"),
    ({"shots": -2}, "--config.shots=-2 is out of range"),
    ({"shots_seed": 2**32}, "--config.shots_seed=4294967296 is out of range"),
    ({"mesh.num_processes": -1}, "--config.mesh.num_processes=-1 is out of range"),
    ({"real": "demo:4", "train_split": "val"}, "data source 'demo:4' has no split 'val'"),
    ({"synthetic_keep": "keep.json"}, "--config.synthetic_keep=keep.json is a keep list of a synthetic set: pass the "
                                      "set as --config.synthetic"),
]


@pytest.mark.parametrize("override, expect", TRAINING_ROWS, ids=[str(o) for o, _ in TRAINING_ROWS])
def test_bad_training_value(tmp_path, override, expect):
  config = training_config()
  config.workdir = str(tmp_path / "work")
  config.synthetic = ""
  config.update_from_flattened_dict(override)
  with pytest.raises(UserError) as err:
    train.train_and_evaluate(config)
  assert expect in str(err.value) and "\n" not in str(err.value), str(err.value)
  assert not (tmp_path / "work").exists()


def _numeric_fields(config, prefix=""):
  for key, value in config.items():
    if hasattr(value, "items"):
      yield from _numeric_fields(value, f"{prefix}{key}.")
    elif isinstance(value, numbers.Number) and not isinstance(value, bool):
      yield prefix + key


@pytest.mark.parametrize("config, ranges", [(generation_config(), GENERATION_RANGES),
                                            (training_config(), TRAINING_RANGES)], ids=["generation", "training"])
def test_every_numeric_field_has_a_range_that_its_default_meets(config, ranges):
  assert sorted(_numeric_fields(config)) == sorted(ranges)
  for name, allowed in ranges.items():
    value = config
    for part in name.split("."):
      value = value[part]
    assert allowed.holds(value), name


# Issue 21 item 11: score's settings against config_base.SCORING_RANGES, as generate's and train's are.
SCORING_ROWS = [
    # The cases.
    ({"reader_threads": 0}, "--config.reader_threads=0 is out of range: it must be >= 1"),
    ({"pictures.worst_classes": -1}, "--config.pictures.worst_classes=-1 is out of range: it must be >= 0"),
    ({"metrics.k": 100000}, "--config.metrics.k=100000 is not below --config.metrics.prdc_max=10000"),
    # The sweep of score_config.
    ({"shots": -1}, "--config.shots=-1 is out of range: it must be >= 0"),
    ({"shots_seed": 2**32}, "--config.shots_seed=4294967296 is out of range"),
    ({"batch.per_device": 0}, "--config.batch.per_device=0 is out of range: it must be >= 1"),
    ({"unit_size": 0}, "--config.unit_size=0 is out of range: it must be >= 1"),
    ({"metrics.k": 0}, "--config.metrics.k=0 is out of range: it must be >= 1"),
    ({"metrics.prdc_max": -1}, "--config.metrics.prdc_max=-1 is out of range: it must be >= 0"),
    ({"metrics.prdc_max": 5}, "--config.metrics.k=5 is not below --config.metrics.prdc_max=5"),
    ({"metrics.kid_subset_size": 1}, "--config.metrics.kid_subset_size=1 is out of range: it must be >= 2"),
    ({"metrics.kid_subsets": 1}, "--config.metrics.kid_subsets=1 is out of range: it must be >= 2"),
    ({"metrics.kid_class_subsets": 0}, "--config.metrics.kid_class_subsets=0 is out of range: it must be >= 2"),
    ({"metrics.copy_threshold": 0.0}, "--config.metrics.copy_threshold=0.0 is out of range: it must be in (0, 1]"),
    ({"metrics.copy_threshold": 1.5}, "--config.metrics.copy_threshold=1.5 is out of range"),
    ({"metrics.block_mb": 0}, "--config.metrics.block_mb=0 is out of range: it must be >= 1"),
    ({"metrics.seed": -1}, "--config.metrics.seed=-1 is out of range: it must be in [0, 4294967295]"),
    ({"pictures.neighbours": 0}, "--config.pictures.neighbours=0 is out of range: it must be >= 1"),
    ({"metrics.consistency_k": 0}, "--config.metrics.consistency_k=0 is out of range: it must be >= 1"),
    ({"pictures.consistency_classes": -1}, "--config.pictures.consistency_classes=-1 is out of range: it must be >= 0"),
    ({"keep": "drop_bottom=2"}, "--config.keep='drop_bottom=2': drop_bottom's fraction must lie in (0, 1), not 2; use "
                                "one of own_class, own_in_k, drop_bottom=F (0 < F < 1), or '' for no keep list"),
    ({"mesh.num_processes": -1}, "--config.mesh.num_processes=-1 is out of range"),
    ({"mesh.process_id": -2}, "--config.mesh.process_id=-2 is out of range"),
    ({"dtype": "fp16"}, "--config.dtype='fp16' is not one of fp32, bf16"),
    ({"pictures.rank_by": "vendi"}, "--config.pictures.rank_by='vendi' is not one of fd, kid, precision, coverage, "
                                    "diversity"),
]


@pytest.fixture(scope="module")
def scoring_set(tmp_path_factory):
  from test_score import make_set

  return make_set(tmp_path_factory.mktemp("scoring") / "set")


@pytest.mark.parametrize("override, expect", SCORING_ROWS, ids=[str(o) for o, _ in SCORING_ROWS])
def test_bad_scoring_value(scoring_set, tmp_path, capsys, override, expect):
  """One line naming the flag, exit 2, and no output directory or embedding cache, though the set is scoreable."""
  from test_score import score_config

  config = score_config(scoring_set, tmp_path / "scores", cache_dir=str(tmp_path / "cache"))
  config.update_from_flattened_dict(override)
  with pytest.raises(SystemExit) as exit_:
    exit_on_user_error(score.run)(config)
  err = capsys.readouterr().err.strip().splitlines()
  assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("jaxaug: error: "), err
  assert expect in err[0], err[0]
  assert not (tmp_path / "scores").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("flag, names", [("--config.reader_threads=0", "--config.reader_threads=0"),
                                         ("--config.pictures.worst_classes=-1", "--config.pictures.worst_classes=-1"),
                                         ("--config.metrics.k=100000", "--config.metrics.prdc_max=10000")])
def test_bad_scoring_flag_on_the_command_line(scoring_set, tmp_path, flag, names):
  run = subprocess.run([sys.executable, "-m", "jaxaug.score", f"--config.synthetic={scoring_set}",
                        f"--config.output_dir={tmp_path / 'scores'}", flag],
                       capture_output=True, text=True, timeout=120)
  lines = run.stderr.strip().splitlines()
  assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
  assert lines[-1].startswith("jaxaug: error: --config.") and names in lines[-1], lines[-1]
  assert not (tmp_path / "scores").exists()


def test_every_numeric_scoring_field_has_a_range_that_its_default_meets():
  config = config_base.score_config()
  assert sorted(_numeric_fields(config)) == sorted(config_base.SCORING_RANGES)
  for name, allowed in config_base.SCORING_RANGES.items():
    assert allowed.holds(config_base.field(config, name)), name
