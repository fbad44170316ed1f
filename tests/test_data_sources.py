"""Image decoding, folder and ImageNet-LT list sources, k-shot subsets, class groups, specs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import data_fixtures as fx
from jaxaug.data import images, sources
from jaxaug.errors import UserError

# --- decoding and the fixed-size rule


def test_fit_square_keeps_the_centred_square():
  image = np.zeros((40, 80, 3), np.uint8)
  image[:, 20:60] = 255  # the centred 40x40 square is white, the sides black
  out = images.fit_square(image, 16)
  assert out.shape == (16, 16, 3) and out.dtype == np.uint8
  assert out[:, 1:-1].min() >= 250  # like resize-then-crop, only the border blends with the sides
  tall = np.zeros((90, 30, 3), np.uint8)
  tall[30:60] = (0, 255, 0)
  out = images.fit_square(tall, 10)
  assert np.all(out[1:-1, :, 1] >= 250) and np.all(out[..., 0] <= 5)


def test_load_fit_matches_the_full_decode_rule():
  rng = np.random.default_rng(0)
  coarse = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
  from PIL import Image
  photo = np.asarray(Image.fromarray(coarse).resize((1600, 1200), Image.Resampling.BICUBIC))
  data = fx.encode(photo)
  fast = images.load_fit(data, 128)  # decodes at 1/8 scale first
  exact = images.fit_square(images.decode_image(data), 128)
  assert fast.shape == exact.shape == (128, 128, 3)
  assert np.abs(fast.astype(int) - exact.astype(int)).mean() < 3


def test_decode_converts_modes_and_rejects_garbage():
  import io
  from PIL import Image
  grey = np.full((8, 9), 77, np.uint8)
  buf = io.BytesIO()
  Image.fromarray(grey).save(buf, format="PNG")
  assert images.decode_image(buf.getvalue()).shape == (8, 9, 3)
  rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent -> white, not black
  buf = io.BytesIO()
  Image.fromarray(rgba).save(buf, format="PNG")
  assert images.decode_image(buf.getvalue()).min() == 255
  with pytest.raises(images.BadImage):
    images.decode_image(b"garbage")
  with pytest.raises(images.BadImage):
    images.load_fit(fx.truncated_jpeg(), 16)
  with pytest.raises(images.BadImage):
    images.decode_image(np.zeros((4, 4, 3), np.float32))


def _saved(image, fmt: str, **options) -> bytes:
  import io

  buf = io.BytesIO()
  image.save(buf, format=fmt, **options)
  return buf.getvalue()


def test_16_bit_and_float_images_are_scaled_not_clipped():
  from PIL import Image

  ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)  # a hand-made 16-bit gradient
  want = np.arange(256, dtype=np.uint8)  # v / 257
  gradient = Image.fromarray(np.tile(ramp, (4, 1)))
  assert gradient.mode == "I;16"
  png = _saved(gradient, "PNG")
  assert Image.open(__import__("io").BytesIO(png)).mode == "I;16"
  out = images.decode_image(png)
  assert out.shape == (4, 256, 3) and np.array_equal(out[2, :, 0], want) and np.all(out == out[..., :1])
  grey = images.decode_image(_saved(Image.fromarray(np.full((8, 8), 32768, np.uint16)), "PNG"))
  assert np.all(grey == 128)  # mid-grey stays mid-grey (convert("RGB") made 99.5% of it 255)
  assert np.array_equal(images.load_fit(png, 4)[0, :, 0], images.fit_square(out, 4)[0, :, 0])
  as_int32 = Image.fromarray(np.tile(ramp.astype(np.int32), (4, 1)))  # mode I, as older PIL opens 16-bit PNGs
  assert as_int32.mode == "I" and np.array_equal(images.decode_image(_saved(as_int32, "TIFF"))[1, :, 1], want)
  unit = Image.fromarray(np.tile(np.linspace(0, 1, 256, dtype=np.float32), (4, 1)))
  assert unit.mode == "F" and np.array_equal(images.decode_image(_saved(unit, "TIFF"))[3, :, 2], want)
  assert np.array_equal(images.decode_image(np.tile(ramp, (4, 1)))[0, :, 0], want)  # decoded uint16 pixels too


def test_transparent_pixels_are_white_in_every_alpha_mode():
  from PIL import Image

  la = np.zeros((4, 4, 2), np.uint8)
  la[..., 0], la[:2, :, 1] = 40, 255  # dark grey; top half opaque, bottom half transparent
  out = images.decode_image(_saved(Image.fromarray(la, "LA"), "PNG"))
  assert np.all(out[:2] == 40) and np.all(out[2:] == 255)
  palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
  palette.putpalette([200, 0, 0, 0, 0, 200])
  out = images.decode_image(_saved(palette, "PNG", transparency=1))  # index 1 is transparent
  assert np.array_equal(out[0, 0], [200, 0, 0]) and np.array_equal(out[0, 1], [255, 255, 255])
  out = images.decode_image(_saved(palette, "GIF", transparency=1))
  assert np.array_equal(out[1, 0], [255, 255, 255]) and np.array_equal(out[1, 1], [200, 0, 0])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation):
  import io

  from PIL import Image, ImageOps

  picture = np.zeros((24, 48, 3), np.uint8)  # wide: red left third, blue top right corner
  picture[:, :16] = (255, 0, 0)
  picture[:8, 32:] = (0, 0, 255)
  exif = Image.Exif()
  exif[0x0112] = orientation
  data = _saved(Image.fromarray(picture), "JPEG", quality=95, exif=exif.tobytes())
  upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
  assert upright.shape == ((24, 48, 3) if orientation < 5 else (48, 24, 3))
  assert np.array_equal(images.decode_image(data), upright)
  assert np.array_equal(images.load_fit(data, 24), images.fit_square(upright, 24))


# --- image folders


def test_folder_source_reads_classes_and_files(tmp_path):
  fx.make_folder(str(tmp_path), {"zebra": 2, "ant": 3, "bee": 1})
  (tmp_path / "ant" / "notes.txt").write_text("not an image")
  (tmp_path / "ant" / "UPPER.JPEG").write_bytes(fx.encode(fx.solid((1, 2, 3))))
  source = sources.open_source(f"folder:{tmp_path}")
  assert source.class_names == ("ant", "bee", "zebra")
  assert source.counts().tolist() == [4, 1, 2]
  assert sources.describe(source) == "7 images, 3 classes, 1-4 per class"
  assert source.ids()[:4] == ["ant/000.jpg", "ant/001.jpg", "ant/002.png", "ant/UPPER.JPEG"]
  example = source[5]
  assert example.id == "zebra/000.jpg" and example.label == 2
  assert example.image.shape == (24, 32, 3) and example.image.dtype == np.uint8
  assert np.abs(example.image[0, 0].astype(int) - (0, 0, 200)).max() <= 3  # zebra was written first: red 0


def test_folder_corrupt_file_raises_bad_image_only_when_read(tmp_path):
  fx.make_folder(str(tmp_path), {"a": 2, "b": 2}, corrupt=("b/zz_bad.jpg",))
  source = sources.folder_source(str(tmp_path))
  assert len(source) == 5  # listed: decoding is lazy
  bad = source.ids().index("b/zz_bad.jpg")
  with pytest.raises(images.BadImage, match="not an image"):
    source[bad]
  assert source[0].label == 0


def test_folder_errors(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    sources.open_source(f"folder:{tmp_path}/nope")
  with pytest.raises(UserError, match="no class sub-directories"):
    sources.open_source(f"folder:{tmp_path}")
  (tmp_path / "cls").mkdir()
  with pytest.raises(UserError, match="has no .jpg"):
    sources.open_source(f"folder:{tmp_path}")


def test_split_placeholder(tmp_path):
  fx.make_folder(str(tmp_path / "train"), {"a": 3})
  fx.make_folder(str(tmp_path / "test"), {"a": 1})
  spec = f"folder:{tmp_path}/{{split}}"
  assert len(sources.open_source(spec, "train")) == 3
  assert len(sources.open_source(spec, "test")) == 1


# --- ImageNet-LT lists


def test_imagenet_lt_lists(tmp_path):
  tree = fx.make_imagenet_lt(str(tmp_path))
  spec = f"imagenet_lt:{tree['lists']}?root={tree['root']}&names={tree['names']}"
  train = sources.open_source(spec, "train")
  assert train.class_names == tuple(fx.WNID_NAMES[w] for w in fx.WNIDS)
  assert train.counts().tolist() == [6, 3, 1]  # the missing file is still listed
  assert train.ids() == [p for p, _ in tree["train"]]
  val = sources.open_source(spec, "validation")  # TFDS split name -> ImageNet_LT_val.txt
  assert val.ids() == [p for p, _ in tree["val"]]
  test = sources.open_source(spec, "test")
  assert test[2].label == 2 and test[2].id.startswith("val/n01484850/")
  with pytest.raises(images.BadImage, match="cannot read"):
    train[train.ids().index(tree["missing"])]
  with pytest.raises(images.BadImage, match="corrupt"):
    train[train.ids().index(tree["corrupt"])]
  good = train[0]
  assert good.label == 0 and good.image.shape == (24, 32, 3)


def test_imagenet_lt_without_names_uses_wnids(tmp_path):
  tree = fx.make_imagenet_lt(str(tmp_path))
  source = sources.imagenet_lt_source(os.path.join(tree["lists"], "ImageNet_LT_train.txt"), tree["root"])
  assert source.class_names == fx.WNIDS


def test_imagenet_lt_errors(tmp_path):
  tree = fx.make_imagenet_lt(str(tmp_path))
  with pytest.raises(UserError, match="does not exist"):
    sources.open_source(f"imagenet_lt:{tree['lists']}?root={tmp_path}/nowhere", "train")
  with pytest.raises(UserError, match="has none of the files"):
    sources.open_source(f"imagenet_lt:{tree['lists']}?root={tmp_path}", "train")
  with pytest.raises(UserError, match="needs \\?root="):
    sources.open_source(f"imagenet_lt:{tree['lists']}", "train")
  with pytest.raises(UserError, match="cannot be read"):
    sources.open_source(f"imagenet_lt:{tree['lists']}?root={tree['root']}", "holdout")
  (tmp_path / "bad.txt").write_text("train/n01440764/x.JPEG zero\n")
  with pytest.raises(UserError, match="line 1"):
    sources.imagenet_lt_source(str(tmp_path / "bad.txt"), tree["root"])
  partial = tmp_path / "partial.txt"
  partial.write_text(f"{fx.WNIDS[0]} tench\n")
  with pytest.raises(UserError, match="no entry for n01443537"):
    sources.imagenet_lt_source(os.path.join(tree["lists"], "ImageNet_LT_train.txt"), tree["root"], str(partial))


def test_class_name_map_formats(tmp_path):
  keras = tmp_path / "imagenet_class_index.json"
  keras.write_text(json.dumps({"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"]}))
  assert sources.read_class_name_map(str(keras)) == {"n01440764": "tench", "n01443537": "goldfish"}
  plain = tmp_path / "map.json"
  plain.write_text(json.dumps({"n01440764": "tench"}))
  assert sources.read_class_name_map(str(plain)) == {"n01440764": "tench"}


# --- k-shot subsets and groups


class _Labels(sources.ImageSource):
  """Labels only: k-shot and groups must never decode."""

  def __init__(self, labels, num_classes):
    self.labels = np.asarray(labels, np.int32)
    self.class_names = tuple(f"c{i}" for i in range(num_classes))

  def read(self, index):
    raise AssertionError("k-shot must not read images")

  def id(self, index):
    return f"img{index}"


def _table():
  rng = np.random.default_rng(123)
  return _Labels(rng.permutation(np.repeat(np.arange(5), [30, 12, 3, 50, 7])), 5)


def test_kshot_takes_k_per_class_deterministically():
  source = _table()
  four = sources.kshot(source, 4, seed=0)
  assert four.counts().tolist() == [4, 4, 3, 4, 4]  # class 2 has only 3
  assert np.all(np.diff(four.indices) > 0)  # source order, no repeats
  assert np.array_equal(four.indices, sources.kshot(source, 4, seed=0).indices)
  assert not np.array_equal(four.indices, sources.kshot(source, 4, seed=1).indices)
  one, sixteen = sources.kshot(source, 1, 0), sources.kshot(source, 16, 0)
  assert set(one.indices) <= set(four.indices) <= set(sixteen.indices)  # shots nest
  assert np.array_equal(four.labels, source.labels[four.indices])
  assert four.id(0) == f"img{four.indices[0]}"
  with pytest.raises(UserError):
    sources.kshot(source, 0, 0)


def test_kshot_class_choice_ignores_other_classes():
  source = _table()
  grown = _Labels(np.concatenate([source.labels, np.full(40, 0)]), 5)  # only class 0 grows
  a, b = sources.kshot(source, 2, 7), sources.kshot(grown, 2, 7)
  for c in range(1, 5):
    assert np.array_equal(a.indices[a.labels == c], b.indices[b.labels == c])


_KSHOT_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
import test_data_sources as t
from jaxaug.data import sources
print(sources.kshot(t._table(), 4, seed=3).ids())
"""


def test_kshot_same_in_fresh_processes():
  script = _KSHOT_SCRIPT.format(tests=os.path.dirname(__file__))
  env = dict(os.environ, PYTHONHASHSEED="random")
  runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True).stdout
          for _ in range(2)]
  assert runs[0] == runs[1]
  assert runs[0].strip() == str(sources.kshot(_table(), 4, seed=3).ids())


def test_class_groups_on_a_known_table():
  counts = [5, 19, 20, 100, 101, 1280, 0, 57]
  groups = sources.class_groups(counts)
  assert groups["few"].tolist() == [0, 1, 6]
  assert groups["medium"].tolist() == [2, 3, 7]
  assert groups["many"].tolist() == [4, 5]


def test_indices_of(tmp_path):
  fx.make_folder(str(tmp_path), {"a": 2, "b": 2})
  source = sources.folder_source(str(tmp_path))
  assert sources.indices_of(source, ["b/001.jpg", "a/000.jpg"]).tolist() == [3, 0]
  with pytest.raises(UserError, match="no image with id"):
    sources.indices_of(source, ["c/000.jpg"])


# --- spec strings


@pytest.mark.parametrize("spec, message", [
    ("caltech101", "no known kind"),
    ("s3:bucket", "no known kind"),
    ("folder:/x?root=/y", "unknown option 'root'"),
    ("tfds:caltech101?datadir=/x", "unknown option 'datadir'"),
    ("tfds:", "names nothing"),
])
def test_bad_specs(spec, message):
  with pytest.raises(UserError, match=message):
    sources.open_source(spec)


def test_user_error_exits_with_status_2(tmp_path):
  code = ("from jaxaug.errors import exit_on_user_error\n"
          "from jaxaug.data.sources import open_source\n"
          f"exit_on_user_error(open_source)('folder:{tmp_path}/missing')\n")
  run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert run.returncode == 2
  assert run.stderr.strip().count("\n") == 0 and "does not exist" in run.stderr
  assert "Traceback" not in run.stderr
