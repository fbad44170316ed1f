"""Tests for python -m jaxaug.preview: the sheet it writes and its user errors."""

import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from jaxaug import preview
from jaxaug.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]
SHEET_SIZE = (1098, 1300)  # 170 + 4 draws x (224 + 8); 30 + 5 rows x (224 + 22 + 8).


def run_preview(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
             JAX_COMPILATION_CACHE_DIR=os.path.expanduser("~/.cache/jaxaug-tests/jax"))
  return subprocess.run([sys.executable, "-m", "jaxaug.preview", *args], env=env,
                        capture_output=True, text=True, timeout=120)


def tile(sheet, row, draw):
  """The pixels of one tile of the sheet."""
  x = preview.LABEL_WIDTH + draw * (preview.TILE + preview.GAP)
  y = preview.HEADER + row * (preview.TILE + preview.CAPTION + preview.GAP)
  return sheet[y:y + preview.TILE, x:x + preview.TILE]


def test_preview_writes_a_sheet_of_drawn_shapes(tmp_path):
  out = tmp_path / "sheet.png"
  result = run_preview(f"--out={out}", "--seed=1")
  assert result.returncode == 0, result.stderr
  assert "embedding-level methods" in result.stdout and "CLIP" in result.stdout
  assert os.listdir(tmp_path) == ["sheet.png"]  # No temporary file left.
  with Image.open(out) as image:
    assert image.format == "PNG" and image.size == SHEET_SIZE
    sheet = np.asarray(image.convert("RGB")).astype(int)
  first_source = next(iter(preview.drawn_sources().values()))
  shown = Image.fromarray(first_source).resize((preview.TILE, preview.TILE), Image.BILINEAR)
  np.testing.assert_array_equal(tile(sheet, 0, 0), np.asarray(shown))  # Tiles sit on the grid.
  tiles = [tile(sheet, row, draw) for row in range(len(preview.ROWS)) for draw in range(4)]
  assert min(t.std() for t in tiles) > 20  # Pictures, not blank paper.
  # Sources repeat across the two image rows; every augmented tile is new.
  assert len({t.tobytes() for t in tiles}) == 4 + 3 * 4


def test_preview_reads_image_files(tmp_path):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (60, 100, 3), np.uint8)).save(tmp_path / "a.png")
  Image.fromarray(rng.integers(0, 255, (80, 50, 3), np.uint8)).save(tmp_path / "b.jpg")
  sources = preview.load_sources([str(tmp_path / "a.png"), str(tmp_path / "b.jpg")])
  assert list(sources) == ["a.png", "b.jpg"]
  for image in sources.values():
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
  out = tmp_path / "sheet.png"
  result = run_preview(f"--out={out}", f"--images={tmp_path / 'a.png'},{tmp_path / 'b.jpg'}")
  assert result.returncode == 0, result.stderr
  with Image.open(out) as image:
    assert image.size == SHEET_SIZE


@pytest.mark.parametrize("bad", ["missing.jpg", "corrupt.jpg", "truncated.png"])
def test_bad_image_file_exits_2_with_one_line(tmp_path, bad):
  (tmp_path / "corrupt.jpg").write_bytes(b"not an image at all")
  good = tmp_path / "good.png"
  Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 100).save(good)
  (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:60])
  out = tmp_path / "sheet.png"
  result = run_preview(f"--out={out}", f"--images={good},{tmp_path / bad}")
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and bad in lines[0] and "Traceback" not in result.stderr, result.stderr
  assert lines[0].startswith("jaxaug: error: --images")
  assert not out.exists()


def test_out_must_be_a_png_in_an_existing_folder(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    preview.check_out(str(tmp_path / "no" / "sheet.png"))
  with pytest.raises(UserError, match=r"\.png"):
    preview.check_out(str(tmp_path / "sheet.jpg"))
  preview.check_out(str(tmp_path / "sheet.png"))


def test_unknown_flag_is_one_line_exit_2():
  import subprocess
  import sys

  run = subprocess.run([sys.executable, "-m", "jaxaug.preview", "--nonsense=1"], capture_output=True, text=True,
                       timeout=120)
  lines = [l for l in run.stderr.splitlines() if l.strip()]
  assert run.returncode == 2 and lines == ["jaxaug: error: Unknown command line flag 'nonsense'"]
