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


def test_vs_torch_without_torch_is_one_clear_line():
  import importlib.util
  import subprocess
  import sys

  # The suite's environment has no torch (it is no jaxaug dependency): the baseline must say so plainly.
  run = subprocess.run([sys.executable, "-m", "jaxaug.bench", "sampler", "--vs-torch", "--resolution=32",
                        "--steps=1", "--batch=1", "--repeats=1"], capture_output=True, text=True, timeout=300)
  if importlib.util.find_spec("torch") is not None:
    assert run.returncode == 0 and "jax_over_torch" in run.stdout, run.stderr[-2000:]
  else:
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "--vs-torch needs torch" in run.stderr.strip().splitlines()[-1]
