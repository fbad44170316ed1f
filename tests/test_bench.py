"""The bench commands run at tiny size and report what they promise (no timing is asserted)."""

import json

from jaxaug import bench


def test_sampler_bench(tmp_path):
  out = tmp_path / "sampler.json"
  record = bench.main(["sampler", "--resolution=32", "--steps=2", "--batch=2", "--repeats=1", f"--json={out}"])
  result = json.loads(out.read_text())["result"]
  assert result == json.loads(json.dumps(record["result"]))
  assert result["images_per_s"] > 0 and result["unet_calls"] == 3  # PNDM runs steps + 1 UNet calls
  assert result["tflops_per_s"] > 0 and result["compile_s"] > 0
  assert record["device"]["platform"] == "cpu"


def test_condition_bench(capsys):
  record = bench.main(["condition", "--resolution=32", "--batch=2", "--repeats=1"])
  assert 0 < record["result"]["condition_over_unet_step"]
  assert "condition_over_unet_step" in capsys.readouterr().out
