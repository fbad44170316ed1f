"""The bench commands run at tiny size and report what they promise (no timing is asserted)."""

import json

import numpy as np
import pytest

from jaxaug import bench


def test_sampler_bench_sweeps_batches_and_kernels(tmp_path, capsys):
  out = tmp_path / "sampler.json"
  record = bench.main(["sampler", "--resolution=32", "--steps=2", "--batch=2,1", "--attention=xla,einsum",
                       "--repeats=1", "--dtype=bf16", f"--json={out}", f"--profile={tmp_path / 'trace'}"])
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
  # --profile: a trace per point and program, summed by kind of work. In bf16 on a CPU the automatic form writes
  # every convolution as dots (dots=fp32_results), so the trace holds matmuls and no convolution.
  assert result["dots"] == "fp32_results"
  for run in runs:
    for program in ("unet", "step"):
      assert list((tmp_path / "trace" / f"{run['attention']}_b{run['batch_per_device']}" / program).rglob(
          "perfetto_trace.json.gz")), program
      summary = run["profile"][program]
      assert "matmul" in summary["share"] and "convolution" not in summary["share"], summary
      assert abs(sum(summary["share"].values()) - 1) < 1e-6 and summary["device_ms_per_call"] > 0
  assert f"profile of attention=einsum batch=2 (trace: {tmp_path / 'trace' / 'einsum_b2'})" in table


def test_sampler_bench_bad_lists_are_one_line(capsys):
  import pytest

  for argv, message in ((["sampler", "--batch=4,x"], "comma"),
                        (["condition", "--batch=1,2"], "--batch takes one value here"),
                        (["sampler", "--torch-compile"], "--torch-compile goes with --vs-torch"),
                        (["sampler", "--torch-prompt-embeds"], "--torch-prompt-embeds goes with --vs-torch"),
                        (["train", "--profile=/tmp/x"], "--profile goes with the sampler bench"),
                        (["sampler", "--rounds=3"], "--rounds goes with --vs-torch"),
                        (["sampler", "--vs-torch", "--rounds=0"], "--rounds takes a count of at least 1")):
    with pytest.raises(SystemExit) as exit_:
      bench.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err, argv


PROBE = """
import json, sys
import jax, jax.numpy as jnp
from jaxaug import bench

def block(x, w, m):  # a convolution, a GroupNorm-like reduction, an elementwise op, then a dot
  y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = y - y.mean(axis=(1, 2), keepdims=True)
  return jnp.tanh(y) @ m

rng = jax.random.split(jax.random.key(0), 3)
# the convolution is 36x the dot's FLOPs (2.4 G against 67 M), so that it is the top op however a busy machine
# (the suite's other workers) stretches one of the three calls; at 4.5x a CI run once saw the dot on top
inputs = (jax.random.normal(rng[0], (8, 32, 32, 64)), jax.random.normal(rng[1], (3, 3, 64, 128)),
          jax.random.normal(rng[2], (128, 32)))
compiled = jax.jit(block).lower(*inputs).compile()
jax.block_until_ready(compiled(*inputs))  # warm, as the sampler bench's programs are when it profiles them
print(json.dumps(bench.profiled(compiled, inputs, 3, sys.argv[1])))
"""


def test_profile_sums_a_real_trace_by_kind_of_work(tmp_path):
  import os
  import subprocess
  import sys

  env = {**os.environ, "XLA_FLAGS": bench.CPU_TRACE_FLAG}  # a CPU records its XLA ops only with this flag
  run = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], env=env, capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  summary = json.loads(run.stdout.strip().splitlines()[-1])
  assert summary["calls"] == 3 and summary["device_ms_per_call"] > 0
  share = summary["share"]
  assert {"convolution", "matmul"} <= set(share) and abs(sum(share.values()) - 1) < 1e-6
  assert share["convolution"] > share.get("elementwise", 0)  # 8x32x32 3x3 conv: 2.4 GFLOP, the tanh 1 M values
  top = summary["top_ops"]
  assert top[0]["kind"] == "convolution" and abs(top[0]["launches_per_call"] - 1) < 1e-9
  assert top[0]["source"].endswith("conv_general_dilated")  # the jax op (and in a model, its layer) behind it
  assert [t["ms_per_call"] for t in top] == sorted((t["ms_per_call"] for t in top), reverse=True)


def test_profile_of_a_gpu_trace_counts_kernels_once():
  """A GPU trace: kernels on a device's stream lines (tied to their HLO op, or only named), and the "XLA Ops"
  line that repeats them, which must not count twice."""
  hlo = """
%fused_conv (p: bf16[8,64]) -> bf16[8,64] {
  %p = bf16[8,64]{1,0} parameter(0)
  ROOT %c = bf16[8,64]{1,0} convolution(%p, %p), window={size=1}, dim_labels=bf_io->bf
}

ENTRY %main (a: bf16[8,64]) -> bf16[8,64] {
  %a = bf16[8,64]{1,0} parameter(0)
  %cudnn-conv.1 = (bf16[8,64]{1,0}, u8[0]{0}) custom-call(%a, %a), custom_call_target="__cudnn$convForward"
  %gemm.2 = bf16[8,64]{1,0} custom-call(%a, %a), custom_call_target="__cublas$lt$matmul"
  %loop_add_fusion = bf16[8,64]{1,0} fusion(%a), kind=kLoop, calls=%fused_conv
  ROOT %copy.3 = bf16[8,64]{0,1} copy(%a)
}
"""
  kinds = bench.op_kinds(hlo)
  assert kinds == {"p": "other", "c": "convolution", "a": "other", "cudnn-conv.1": "convolution",
                   "gemm.2": "matmul", "loop_add_fusion": "convolution", "copy.3": "layout"}
  meta = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
          {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
          {"ph": "M", "name": "thread_name", "pid": 1, "tid": 7, "args": {"name": "Stream #7(Compute)"}},
          {"ph": "M", "name": "thread_name", "pid": 1, "tid": 9, "args": {"name": "XLA Ops"}}]
  kernel = lambda ts, dur, name, op=None: {"ph": "X", "pid": 1, "tid": 7, "ts": ts, "dur": dur, "name": name,
                                           "args": {"hlo_op": op} if op else {}}
  events = meta + [kernel(0, 60, "sm90_xmma_fprop_implicit_gemm", "cudnn-conv.1"),
                   kernel(70, 20, "cutlass_gemm_bf16", "gemm.2"), kernel(90, 10, "flash_fprop_kernel"),
                   kernel(100, 10, "copy_kernel", "copy.3"),
                   {"ph": "X", "pid": 1, "tid": 9, "ts": 0, "dur": 60, "name": "cudnn-conv.1", "args": {}},
                   {"ph": "X", "pid": 2, "tid": 3, "ts": 0, "dur": 500, "name": "PjitFunction", "args": {}}]
  summary = bench.trace_summary(events, kinds, calls=2)
  assert summary["device_ms_per_call"] == 0.05 and summary["span_ms_per_call"] == 0.055
  assert summary["share"] == {"convolution": 0.6, "matmul": 0.2, "attention": 0.1, "layout": 0.1}
  assert [t["op"] for t in summary["top_ops"]] == ["cudnn-conv.1", "gemm.2", "flash_fprop_kernel", "copy.3"]
  assert "no device ops" in bench.trace_summary(meta, kinds, calls=1)["error"]
  host_only = [e for e in events if e.get("pid") == 2] + [{**events[4], "pid": 2, "args": {"hlo_op": "gemm.2"}}]
  assert "no /device: process" in bench.trace_summary(host_only, kinds, calls=1)["error"]  # never host time


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


def test_rounds_alternate_the_two_and_report_the_median_ratio(monkeypatch, capsys):
  """--rounds: the PyTorch baseline and jaxaug's compiled step are timed in turn (PyTorch first, as the GPU
  rule has it), and jax_over_torch is the median of the rounds' own ratios, not a ratio of medians."""
  calls, speeds = [], iter([2.0, 1.0, 4.0])  # PyTorch's images/s, round by round
  timed = bench._timed

  def baseline(args):
    calls.append("torch")
    return {"torch_version": "fake", "torch_dtype": "float32", "torch_device": "cpu",
            "runs": [{"batch": 1, "torch_images_per_s": next(speeds)}, {"batch": 2, "torch_images_per_s": None}]}

  def timing(fn, *args, repeats):
    calls.append("jax")
    return timed(fn, *args, repeats=repeats)

  monkeypatch.setattr(bench, "torch_baseline", baseline)
  monkeypatch.setattr(bench, "_timed", timing)
  record = bench.main(["sampler", "--vs-torch", "--rounds=3", "--resolution=32", "--steps=1", "--batch=1",
                       "--repeats=1", "--json=/dev/null"])
  result = record["result"]
  assert calls[0] == "torch" and calls.count("torch") == 3
  third = calls.index("torch", calls.index("torch", 1) + 1)
  assert "jax" in calls[1:calls.index("torch", 1)] and calls[third + 1:] == ["jax"]  # each round: torch, then jax
  rounds = result["rounds"]
  assert [r["round"] for r in rounds] == [1, 2, 3] and [r["torch_images_per_s"] for r in rounds] == [2.0, 1.0, 4.0]
  ratios = [r["jax_images_per_s"] / r["torch_images_per_s"] for r in rounds]
  assert result["jax_over_torch"] == pytest.approx(float(np.median(ratios)))
  assert "alternating rounds" in capsys.readouterr().out


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


def test_each_gpu_bench_group_fits_one_device_call():
  """launch/gpu_bench.sh: a group's stage limits, its env stage included, must fit the device tool's 600 s per
  call, or the last stages of a lease are cut off (the first `extra` group summed to 850 s)."""
  import re
  from pathlib import Path

  script = (Path(__file__).parents[1] / "launch" / "gpu_bench.sh").read_text()
  env = int(re.search(r"^stage env (\d+)", script, re.M).group(1))
  groups = re.findall(r"^  (\w+)\)(.*?)^    ;;", script, re.M | re.S)
  assert {name for name, _ in groups} == {"core", "extra", "small", "profile", "compile"}
  for name, body in groups:
    limits = [int(x) for x in re.findall(r"^    stage \w+ (\d+)", body, re.M)]
    assert limits and env + sum(limits) <= 600, (name, env, limits)
