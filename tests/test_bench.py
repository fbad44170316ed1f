"""The bench commands run at tiny size and report what they promise (no timing is asserted)."""

import json

from jaxaug import bench


def test_sampler_bench_sweeps_batches_and_kernels(tmp_path, capsys):
  out = tmp_path / "sampler.json"
  record = bench.main(["sampler", "--resolution=32", "--steps=2", "--batch=2,1", "--attention=xla,einsum",
                       "--repeats=1", "--dtype=bf16", f"--json={out}"])
  result = json.loads(out.read_text())["result"]
  assert result["dtype"] == "bfloat16"  # not the CPU's automatic fp32: the flag reaches the generation config
  assert result == json.loads(json.dumps(record["result"]))
  runs = result["runs"]
  assert [(r["attention"], r["batch_per_device"]) for r in runs] == [("xla", 1), ("xla", 2), ("einsum", 1),
                                                                      ("einsum", 2)]
  for run in runs:
    assert run["images_per_s"] > 0 and run["unet_calls"] == 3  # PNDM runs steps + 1 UNet calls
    assert run["tflops_per_s"] > 0 and run["compile_s"] > 0 and run["memory_gib"] > 0
    assert run["unet_tflop_per_call"] > 0
  assert result["best"] == max(runs, key=lambda r: r["images_per_s"])
  assert record["device"]["platform"] == "cpu"
  table = capsys.readouterr().out
  assert "images/s" in table and f"best: attention={result['best']['attention']}" in table


def test_sampler_bench_bad_lists_are_one_line(capsys):
  import pytest

  with pytest.raises(SystemExit) as exit_:
    bench.main(["sampler", "--batch=4,x"])
  assert exit_.value.code == 2 and "comma" in capsys.readouterr().err
  with pytest.raises(SystemExit) as exit_:
    bench.main(["condition", "--batch=1,2"])
  assert exit_.value.code == 2 and "--batch takes one value here" in capsys.readouterr().err
  with pytest.raises(SystemExit) as exit_:
    bench.main(["sampler", "--torch-compile"])
  assert exit_.value.code == 2 and "--torch-compile goes with --vs-torch" in capsys.readouterr().err


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


def test_flops_counts_every_denoising_step():
  """XLA counts a loop body once; the bench adds the other UNet calls, so two more steps add two calls."""
  import pytest

  def flops(steps):
    return bench.main(["flops", "--resolution=32", f"--steps={steps}", "--batch=2", "--images=1000"])["result"]

  a, b = flops(2), flops(4)
  assert (a["unet_calls"], b["unet_calls"]) == (3, 5)
  unet_per_image = a["unet_share"] * a["tflop_per_image"] / a["unet_calls"]
  assert b["tflop_per_image"] - a["tflop_per_image"] == pytest.approx(2 * unet_per_image, rel=1e-3)
  assert 0.5 < a["unet_share"] < 1
  hours = a["device_hours_at_40pct_bf16_peak"]
  assert hours["H100"] == pytest.approx(1000 * a["tflop_per_image"] / (0.4 * 989.0) / 3600)


def test_flops_per_image_do_not_depend_on_the_device_count(tmp_path):
  import os
  import subprocess
  import sys

  import pytest

  flags = ["flops", "--resolution=32", "--steps=2", "--batch=2"]
  one = bench.main(flags)["result"]["tflop_per_image"]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  run = subprocess.run([sys.executable, "-m", "jaxaug.bench", *flags, f"--json={tmp_path / 'four.json'}"], env=env,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  four = json.loads((tmp_path / "four.json").read_text())
  assert four["device"]["device_count"] == 4
  assert four["result"]["tflop_per_image"] == pytest.approx(one, rel=1e-2)
