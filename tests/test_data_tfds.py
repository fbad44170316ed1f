"""TFDS sources: `tfds.testing.mock_data` with hand-made records, a real tiny COCO prepared
without TensorFlow, the VOC/COCO single-label rule, and the not-prepared message.

The default random `mock_data` cannot be used here: our reader asks for encoded
images (`SkipDecoding`), and TFDS's random generator encodes them with
TensorFlow. `as_data_source_fn` serves hand-made encoded records instead, while
the builder lookup, DatasetInfo and class names still come from TFDS's code.
"""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

import data_fixtures as fx
from jaxaug.data import pipeline, sources, tfds_sources
from jaxaug.errors import UserError

VOC_DOG, VOC_CAT, VOC_PERSON = 11, 7, 14


@pytest.fixture(autouse=True)
def _label_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXAUG_CACHE_DIR", str(tmp_path / "cache"))


def _classification_records(labels, file_key="file_name"):
  return [{"image": fx.encode(fx.solid((10 * i, 60, 90))), "label": np.int64(label), file_key: f"{i}.jpg"}
          for i, label in enumerate(labels)]


@pytest.mark.parametrize("name, split, num_classes", [
    ("caltech101", "train", 102),
    ("oxford_flowers102", "validation", 102),
    ("food101", "validation", 101),
    ("imagenet_lt", "test", 1000),
    ("imagenet2012", "validation", 1000),
])
def test_classification_datasets(name, split, num_classes):
  labels = [3, 0, 3, num_classes - 1]
  decoders = []
  serve = fx.as_data_source_from({split: _classification_records(labels)}, decoders)
  with tfds.testing.mock_data(as_data_source_fn=serve):
    source = sources.open_source(f"tfds:{name}", split)
  assert source.num_classes == num_classes
  assert source.labels.tolist() == labels
  assert source.ids() == [f"{split}/{i}" for i in range(4)]
  assert isinstance(decoders[0]["image"], tfds.decode.SkipDecoding)  # images stay encoded
  example = source[2]
  assert example.label == 3 and example.image.shape == (24, 32, 3)
  assert abs(int(example.image[0, 0, 0]) - 20) <= 3


def test_imagenet_class_names_from_a_names_file(tmp_path):
  serve = fx.as_data_source_from({"train": _classification_records([0, 999])})
  with tfds.testing.mock_data(as_data_source_fn=serve):
    wnids = sources.open_source("tfds:imagenet2012", "train").class_names
    assert wnids[0] == "n01440764"
    names = tmp_path / "LOC_synset_mapping.txt"
    names.write_text("".join(f"{w} readable {i}\n" for i, w in enumerate(wnids)))
    source = sources.open_source(f"tfds:imagenet2012?names={names}", "train")
  assert source.class_names[0] == "readable 0" and source.class_names[999] == "readable 999"


def test_unknown_split_is_a_user_error():
  serve = fx.as_data_source_from({"train": _classification_records([0])})
  with tfds.testing.mock_data(as_data_source_fn=serve):
    with pytest.raises(UserError, match="has no split 'dev'"):
      sources.open_source("tfds:caltech101", "dev")


# --- single label by the largest object


def test_largest_object_label_rule():
  boxes = [[0.0, 0.0, 0.2, 0.2], [0.1, 0.1, 0.9, 0.8], [0.0, 0.0, 0.5, 0.5]]
  assert tfds_sources.largest_object_label([4, 9, 2], boxes) == 9
  assert tfds_sources.largest_object_label([4, 9, 2], boxes, areas=[900, 10, 30]) == 4  # area wins over box
  assert tfds_sources.largest_object_label([5, 3], [[0, 0, 0.5, 0.5]] * 2) == 5  # tie: first object
  assert tfds_sources.largest_object_label([], np.zeros((0, 4))) == -1
  with pytest.raises(ValueError):
    tfds_sources.largest_object_label([1, 2], [[0, 0, 1, 1]])


def _voc_record(i, objects):
  labels = [label for label, _ in objects]
  boxes = [np.asarray(box, np.float32) for _, box in objects]
  return {"image": fx.encode(fx.solid((30 * i, 0, 0))), "image/filename": f"{i:06d}.jpg",
          "objects": {"label": labels, "bbox": boxes, "is_difficult": [False] * len(labels)}}


def test_voc_single_label_on_hand_made_annotations():
  records = [
      _voc_record(0, [(VOC_PERSON, (0.1, 0.1, 0.3, 0.2)), (VOC_DOG, (0.0, 0.0, 0.9, 0.7))]),
      _voc_record(1, []),  # no object: left out
      _voc_record(2, [(VOC_CAT, (0.2, 0.2, 0.4, 0.4))]),
      _voc_record(3, [(VOC_PERSON, (0, 0, 0.5, 0.5)), (VOC_CAT, (0.5, 0.5, 1.0, 1.0))]),  # tie
  ]
  with tfds.testing.mock_data(as_data_source_fn=fx.as_data_source_from({"validation": records})):
    source = sources.open_source("tfds:voc/2007", "validation")
  assert source.class_names[VOC_DOG] == "dog" and source.num_classes == 20
  assert source.labels.tolist() == [VOC_DOG, VOC_CAT, VOC_PERSON]
  assert source.ids() == ["validation/0", "validation/2", "validation/3"]
  assert abs(int(source[2].image[0, 0, 0]) - 90) <= 3  # record 3's image


# --- a real COCO prepared without TensorFlow

COCO_NAMES = ["person", "bicycle", "car"] + [f"class{i}" for i in range(3, 80)]


def _coco_features():
  return tfds.features.FeaturesDict({  # the layout of TFDS's coco/2017
      "image": tfds.features.Image(encoding_format="jpeg"),
      "image/filename": tfds.features.Text(),
      "image/id": np.int64,
      "objects": tfds.features.Sequence({
          "id": np.int64, "area": np.int64, "bbox": tfds.features.BBoxFeature(),
          "label": tfds.features.ClassLabel(names=COCO_NAMES), "is_crowd": np.bool_}),
  })


def _coco_record(i, objects):
  """objects: (label, area, box); the box sizes deliberately disagree with the areas."""
  return {
      "image": fx.encode(fx.solid((0, 40 * i, 0))), "image/filename": f"{i}.jpg", "image/id": i,
      "objects": {"id": list(range(len(objects))), "area": [a for _, a, _ in objects],
                  "bbox": [tfds.features.BBox(*map(float, b)) for _, _, b in objects],
                  "label": [label for label, _, _ in objects], "is_crowd": [False] * len(objects)}}


@pytest.fixture
def coco_dir(tmp_path):
  data_dir = str(tmp_path / "tfds")
  train = [
      _coco_record(0, [(0, 100, (0, 0, 1, 1)), (2, 500, (0, 0, 0.1, 0.1))]),  # car by area
      _coco_record(1, []),
      _coco_record(2, [(1, 50, (0, 0, 0.5, 0.5))]),
      _coco_record(3, [(0, 70, (0, 0, 0.2, 0.2)), (1, 60, (0, 0, 0.9, 0.9))]),  # person by area
  ]
  fx.build_tfds(data_dir, "coco", "2017", "1.1.0", _coco_features(), {"train": train, "validation": train[:1]})
  return data_dir


def test_coco_prepared_files_read_without_tensorflow(coco_dir, monkeypatch):
  assert "tensorflow" not in sys.modules
  source = sources.open_source(f"tfds:coco/2017?data_dir={coco_dir}", "train")
  assert "tensorflow" not in sys.modules
  assert len(source) == 3 and source.class_names[:3] == ("person", "bicycle", "car")
  expected = {"0.jpg": 2, "2.jpg": 1, "3.jpg": 0}  # TFDS shuffles records when it builds
  names = [source.data_source[int(r)]["image/filename"] for r in source.records]
  assert [expected[n.decode() if isinstance(n, bytes) else n] for n in names] == source.labels.tolist()
  green = {"0.jpg": 0, "2.jpg": 80, "3.jpg": 120}
  for i, n in enumerate(names):
    n = n.decode() if isinstance(n, bytes) else n
    assert abs(int(source[i].image[0, 0, 1]) - green[n]) <= 3

  cached = os.listdir(os.path.join(os.environ["JAXAUG_CACHE_DIR"], "tfds_labels"))
  assert len(cached) == 1 and cached[0].startswith("coco_2017_1.1.0-train-")
  monkeypatch.setattr(tfds_sources, "scan_labels", lambda *a, **k: pytest.fail("labels were re-read"))
  again = sources.open_source(f"tfds:coco/2017?data_dir={coco_dir}", "train")
  assert np.array_equal(again.labels, source.labels) and np.array_equal(again.records, source.records)

  copy = pickle.loads(pickle.dumps(source))  # what grain worker processes get
  assert np.array_equal(copy[0].image, source[0].image)
  batch = next(pipeline.train_batches(source, batch_size=2, size=8, seed=0, shard=(0, 1)))
  assert batch["image"].shape == (2, 8, 8, 3)


# --- not prepared


def test_not_prepared_says_how_to_prepare(tmp_path):
  empty = str(tmp_path / "empty")
  with pytest.raises(UserError, match=f"tfds build caltech101 --data_dir={empty} --file_format=array_record"):
    sources.open_source(f"tfds:caltech101?data_dir={empty}", "train")
  with pytest.raises(UserError, match=f"ILSVRC2012_img_val.tar in {empty}/downloads/manual"):
    sources.open_source(f"tfds:imagenet_lt?data_dir={empty}", "train")
  with pytest.raises(UserError, match="tfds build coco/2017"):  # coco's builder code needs TF: still one line
    sources.open_source(f"tfds:coco/2017?data_dir={empty}", "train")
  with pytest.raises(UserError, match="tfds has no dataset 'caltech_102'"):
    sources.open_source(f"tfds:caltech_102?data_dir={empty}", "train")


def test_not_prepared_exits_with_status_2(tmp_path):
  code = ("from jaxaug.errors import exit_on_user_error\n"
          "from jaxaug.data.sources import open_source\n"
          f"exit_on_user_error(open_source)('tfds:voc/2007?data_dir={tmp_path}', 'train')\n")
  run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert run.returncode == 2
  line = [l for l in run.stderr.splitlines() if l.startswith("jaxaug: error:")]
  assert len(line) == 1 and f"tfds build voc/2007 --data_dir={tmp_path}" in line[0]
  assert "Traceback" not in run.stderr
