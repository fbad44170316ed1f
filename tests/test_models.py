"""Loading checkpoints: the mapping, dtypes, plain SD, torch never imported, and clear errors for bad input."""

import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from jaxaug.errors import UserError
from jaxaug.models import attention, convert, layers, load, pipeline, sd, tiny
from jaxaug.sampler import SamplerSpec, denoise


@pytest.fixture(scope="module")
def unclip_dir(tmp_path_factory):
  return tiny.write_tiny(tmp_path_factory.mktemp("ckpt") / "unclip", "unclip")


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
  return tiny.write_tiny(tmp_path_factory.mktemp("ckpt") / "sd", "sd")


def _copy(src, tmp_path):
  dst = tmp_path / "ckpt"
  shutil.copytree(src, dst)
  return dst


def test_names_round_trip():
  params = {"down_blocks_0": {"attentions_1": {"transformer_blocks_0": {"ff": {"net_0": {"proj": {
      "kernel": np.zeros((3, 4))}}}}}}, "class_embedding": {"linear_1": {"bias": np.zeros(2)}},
      "conv_in": {"kernel": np.zeros((3, 3, 4, 8))}, "norm": {"scale": np.zeros(8)}}
  state = convert.flax_to_torch(params, pipeline.UNET_NAMING)
  assert set(state) == {"down_blocks.0.attentions.1.transformer_blocks.0.ff.net.0.proj.weight",
                        "class_embedding.linear_1.bias", "conv_in.weight", "norm.weight"}
  assert state["conv_in.weight"].shape == (8, 4, 3, 3)
  assert state["down_blocks.0.attentions.1.transformer_blocks.0.ff.net.0.proj.weight"].shape == (4, 3)
  back = convert.torch_to_flax(state, params, pipeline.UNET_NAMING, "test")
  assert traverse_util.flatten_dict(back).keys() == traverse_util.flatten_dict(params).keys()
  vae = {"attentions_0": {"to_out_0": {"kernel": np.zeros((2, 2))}, "to_q": {"bias": np.zeros(2)}}}
  vae_state = convert.flax_to_torch(vae, pipeline.VAE_NAMING)
  assert set(vae_state) == {"attentions.0.to_out.0.weight", "attentions.0.to_q.bias"}
  # diffusers before 0.14 named the VAE's attention query/key/value/proj_attn, stored as 1x1 convs: still read.
  old = {"attentions.0.proj_attn.weight": np.ones((2, 2, 1, 1)), "attentions.0.query.bias": np.ones(2)}
  back = convert.torch_to_flax(old, vae, pipeline.VAE_NAMING, "test")
  assert back["attentions_0"]["to_out_0"]["kernel"].shape == (2, 2)


def test_loaded_weights_equal_the_file(unclip_dir):
  _, params = load(str(unclip_dir))
  state = load_file(str(unclip_dir / "unet" / "diffusion_pytorch_model.safetensors"))
  flat = traverse_util.flatten_dict(params["unet"])
  conv = state["down_blocks.0.resnets.0.conv1.weight"]
  np.testing.assert_array_equal(flat[("down_blocks_0", "resnets_0", "conv1", "kernel")], conv.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(flat[("class_embedding", "linear_2", "kernel")], state["class_embedding.linear_2.weight"].T)
  assert len(flat) == len(state)


def test_param_shapes_cache_gives_the_traced_tree_and_survives_damage(unclip_dir, tmp_path, monkeypatch):
  monkeypatch.setenv("JAXAUG_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.setattr(pipeline, "_SHAPES", {})
  pipe = pipeline.describe(pipeline.read_architecture(unclip_dir), "tiny", str(unclip_dir))
  traced = pipeline._traced_param_shapes(pipe)
  assert pipeline.param_shapes(pipe) == traced  # traced, then written
  files = list((tmp_path / "cache" / "param_shapes").glob("*.json"))
  assert len(files) == 1
  pipeline._SHAPES.clear()
  assert pipeline.param_shapes(pipe) == traced  # read back from the file
  files[0].write_text('{"unet/conv_in/kernel": [[3, 3')  # torn
  pipeline._SHAPES.clear()
  assert pipeline.param_shapes(pipe) == traced and json.loads(files[0].read_text())  # traced again, rewritten
  wider = dataclasses.replace(pipe, unet_config=dataclasses.replace(
      pipe.unet_config, block_out_channels=tuple(2 * c for c in pipe.unet_config.block_out_channels)))
  assert pipeline.param_shapes(wider)["unet"]["conv_in"]["kernel"].shape[-1] == 2 * traced["unet"]["conv_in"][
      "kernel"].shape[-1]  # another config is another entry
  assert len(list((tmp_path / "cache" / "param_shapes").glob("*.json"))) == 2


def test_bf16_parameters_close_to_fp32(unclip_dir):
  pipe32, p32 = load(str(unclip_dir), jnp.float32)
  pipe16, p16 = load(str(unclip_dir), jnp.bfloat16)
  assert p16["unet"]["conv_in"]["kernel"].dtype == jnp.bfloat16
  assert p16["image_normalizer"]["mean"].dtype == np.float32  # noise-schedule arithmetic stays fp32
  x = jax.random.normal(jax.random.key(0), (1, 4, 16, 16))
  ctx = jax.random.normal(jax.random.key(1), (1, 77, 32))
  vec = jax.random.normal(jax.random.key(2), (1, 64))
  predict = jax.jit(sd.predict, static_argnums=0)  # eager op-by-op dispatch of a UNet takes ~10 s on CPU
  a = predict(pipe32, p32, x, jnp.array([500]), ctx, vec)
  b = predict(pipe16, p16, x, jnp.array([500]), ctx, vec)
  assert b.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(a - b))) < 0.1 * float(jnp.max(jnp.abs(a)))


def test_attention_kernel_is_a_field_every_unet_attention_layer_uses(unclip_dir, monkeypatch):
  import dataclasses

  pipe, params = load(str(unclip_dir), jnp.bfloat16)
  assert pipe.attention == "xla"  # auto on CPU
  layers = {k[:k.index("to_q")] for k in traverse_util.flatten_dict(params["unet"]) if "to_q" in k}
  calls = []
  real = attention.dot_product_attention
  monkeypatch.setattr(attention, "dot_product_attention",
                      lambda q, k, v, **kw: calls.append(kw["fp32_scores"]) or real(q, k, v, **kw))
  x, ctx, vec = jnp.zeros((1, 4, 16, 16)), jnp.zeros((1, 77, 32)), jnp.zeros((1, 64))
  # The kernel is chosen while the UNet is traced: tracing (eval_shape) records every call without computing.
  predict = lambda pipe: jax.eval_shape(lambda p: sd.predict(pipe, p, x, jnp.array([500]), ctx, vec), params)
  predict(pipe)
  assert len(calls) == len(layers) > 0 and all(calls)  # xla honours the checkpoint's upcast_attention in bf16
  assert pipe.unet_config.upcast_attention
  calls.clear()
  predict(dataclasses.replace(pipe, attention="einsum"))
  assert len(calls) == len(layers) and not any(calls)  # einsum: scores in the model dtype
  calls.clear()
  predict(dataclasses.replace(pipe, unet_config=dataclasses.replace(pipe.unet_config, upcast_attention=False)))
  assert len(calls) == len(layers) and not any(calls)  # SD 1.x / 2.0 base: no upcast


def _dot_operand_dtypes(compiled_text: str) -> list[str]:
  """The element type of every dot's first operand in a compiled XLA program (e.g. ['bf16', 'f32', ...]),
  looked up in the computation the dot is in (operand names repeat across computations)."""
  found = []
  for block in re.split(r"\n(?=\S)", compiled_text):  # a computation starts at column 0
    types = dict(re.findall(r"%([\w.-]+) = (\w+)\[", block))
    found += [types.get(name, "?") for name in re.findall(r" dot\(%([\w.-]+)", block)]
  return found


def test_bf16_matmuls_run_in_bf16_on_the_cpu_only_with_fp32_results(unclip_dir):
  """XLA:CPU compiles a bf16-result matmul, and any bf16 convolution, as fp32 ones between conversions; a
  matmul asking for fp32 results keeps its bf16 operands (AVX512-BF16 / AMX). dots=auto picks that form for
  bf16 on a CPU in every model, convolutions included (as row dots), and their outputs stay within rounding
  of the native form's."""
  pipe, params = load(str(unclip_dir), jnp.bfloat16)
  assert pipe.dots == "fp32_results"  # auto, bf16, this CPU
  assert load(str(unclip_dir), jnp.float16)[0].dots == "native"
  x = jax.random.normal(jax.random.key(0), (2, 4, 16, 16))
  ctx = jax.random.normal(jax.random.key(1), (2, 77, 32))
  vec = jax.random.normal(jax.random.key(2), (2, 64))
  side = pipe.clip_image.size
  pixels = jax.random.normal(jax.random.key(3), (2, side, side, 3))
  ids = sd.tokenize(pipe, ["a photo of a red circle", ""])
  # (the call, its fewest convolutions, its transformer layers: 6 matmuls each)
  parts = {"unet": (lambda form, p: sd.predict(form, p, x, jnp.array([500, 20]), ctx, vec), 10, 4),
           "vae": (lambda form, p: sd.decode(form, p, x), 8, 0),
           "image": (lambda form, p: sd.encode_image(form, p, pixels), 1, pipe.image_config.num_hidden_layers),
           "text": (lambda form, p: sd.encode_text(form, p, ids), 0, pipe.text_config.num_hidden_layers)}
  for part, (call, convolutions_at_least, layers_) in parts.items():
    outs, operands, convolutions = {}, {}, {}
    for dots in ("fp32_results", "native"):
      run = jax.jit(functools.partial(call, dataclasses.replace(pipe, dots=dots)))
      compiled = run.lower(params).compile().as_text()
      operands[dots] = _dot_operand_dtypes(compiled)
      convolutions[dots] = len(re.findall(r"\bconvolution\(", compiled))
      outs[dots] = np.asarray(run(params), np.float32)
    assert convolutions["native"] >= convolutions_at_least and convolutions["fp32_results"] == 0, (part, convolutions)
    # natively only fp32-score attention products keep bf16 operands; fp32_results adds a dot per convolution
    # (more for 3x3) and per transformer matmul
    least = operands["native"].count("bf16") + convolutions["native"] + 6 * layers_
    assert operands["fp32_results"].count("bf16") >= least, (part, operands)
    scale = np.abs(outs["native"]).max()
    assert np.abs(outs["fp32_results"] - outs["native"]).max() < 0.05 * scale, part
  with pytest.raises(UserError, match="dots must be one of auto, native, fp32_results"):
    load(str(unclip_dir), jnp.bfloat16, dots="fast")


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, ((1, 1), (1, 1))), (3, 2, ((1, 1), (1, 1))),
                                                   (3, 2, "VALID"), (1, 1, "VALID"), (3, 1, ((0, 1), (2, 0)))])
@pytest.mark.parametrize("image,channels,form", [((9, 7), (5, 6), "one dot"), ((5, 4), (6, 40), "rows sliced"),
                                                 ((4, 3), (16, 96), "rows batched")])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_row_dots_compute_the_convolution(kernel, stride, padding, image, channels, form, dtype):
  x = jax.random.normal(jax.random.key(0), (2, *image, channels[0])).astype(dtype)
  w = jax.random.normal(jax.random.key(1), (kernel, kernel, *channels)).astype(dtype)
  if kernel == 3:  # the three shapes take the three forms (one dot only at stride 1)
    assert layers.kernel_dwarfs_input(x, w) == (form == "rows batched")
    assert (w.size <= layers.ONE_DOT_UP_TO * x.size) == (form == "one dot")
  numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
  # the convolution of the same values, exactly summed in fp32 and rounded once to the dtype
  want = jax.lax.conv_general_dilated(x.astype(jnp.float32), w.astype(jnp.float32), (stride, stride), padding,
                                      dimension_numbers=numbers)
  run = jax.jit(lambda x, w: layers.row_dots(x, w, (stride, stride), padding, lhs_dilation=(1, 1),
                                             rhs_dilation=(1, 1), dimension_numbers=numbers))
  got = run(x, w)
  assert got.shape == want.shape and got.dtype == dtype
  np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=2e-5,
                             rtol=0 if dtype == jnp.float32 else 2.0 ** -8)
  if dtype == jnp.bfloat16:  # its copies of the input and the kernel stay 16-bit (XLA:CPU widens bf16 copies)
    assert not _widened(run.lower(x, w).compile().as_text())
  # what it does not rewrite (a dilated kernel) is XLA's convolution, the same numbers
  dilated = dict(rhs_dilation=(2, 2), dimension_numbers=numbers, padding=((2, 2), (2, 2)))
  np.testing.assert_array_equal(layers.row_dots(x, w, (1, 1), **dilated),
                                jax.lax.conv_general_dilated(x, w, (1, 1), **dilated))


def _widened(hlo: str) -> list[str]:
  """The instructions of a compiled program that convert a bf16 value to fp32."""
  dtypes = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", hlo))
  return [line.strip() for line in hlo.splitlines()
          if (m := re.search(r"= f32\[[^\]]*\]\S* convert\(%([\w.\-]+)\)", line)) and dtypes.get(m.group(1)) == "bf16"]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_upsampling_folded_into_its_conv(dtype):
  """fp32_results folds Upsample's conv into the upsampling: the same parameters and numbers, no upsampled copy
  and no convolution in the program; it keeps upsample-then-conv where the kernel dwarfs the input."""
  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 12)).astype(dtype)
  folded, written = layers.Upsample(20, dtype, "fp32_results"), layers.Upsample(20, dtype, "native")
  assert layers.folds_upsampling(x, 20)
  params = folded.init(jax.random.key(1), x)
  assert jax.tree.map(np.asarray, params).keys() == written.init(jax.random.key(1), x).keys()
  chex_equal = jax.tree.map(lambda a, b: bool((a == b).all()), params, written.init(jax.random.key(1), x))
  assert all(jax.tree.leaves(chex_equal))  # the same initial weights: a checkpoint loads into either
  params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(2), a.shape), params)
  want = np.asarray(jax.jit(written.apply)(params, x), np.float32)
  run = jax.jit(folded.apply)
  got = run(params, x)
  assert got.shape == (2, 10, 14, 20) and got.dtype == dtype
  hlo = run.lower(params, x).compile().as_text()
  assert "convolution(" not in hlo and "[2,10,14,12]" not in hlo  # no conv, no upsampled input
  # fp32: the folded taps' sums in another order; bf16: the folded kernel is rounded once to bf16
  np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=1e-5 if dtype == jnp.float32 else 0.05,
                             rtol=1e-5 if dtype == jnp.float32 else 2.0 ** -6)
  # the weights dominate: upsample then conv (SD's UNet upsampling 8x8 latents at 1280 channels, two images)
  assert not layers.folds_upsampling(jax.ShapeDtypeStruct((2, 8, 8, 1280), dtype), 1280)
  assert layers.folds_upsampling(jax.ShapeDtypeStruct((1, 32, 32, 512), dtype), 512)  # the VAE's first


@pytest.mark.parametrize("shape", [(2, 5, 7, 64), (1, 16, 16, 64), (2, 77, 64)])  # rows not a multiple of 16
def test_group_norm_matches_its_definition(shape):
  x = np.random.default_rng(0).normal(3.0, 2.0, shape).astype(np.float32)
  norm = layers.GroupNorm(32, 1e-6)
  params = {"params": {"scale": np.linspace(0.5, 2, 64, dtype=np.float32),
                       "bias": np.linspace(-1, 1, 64, dtype=np.float32)}}
  got = np.asarray(jax.jit(norm.apply)(params, x))
  g = x.astype(np.float64).reshape(shape[0], -1, 32, 2)
  want = (g - g.mean(axis=(1, 3), keepdims=True)) / np.sqrt(g.var(axis=(1, 3), keepdims=True) + 1e-6)
  want = want.reshape(shape) * params["params"]["scale"] + params["params"]["bias"]
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_fp32_convolutions_are_row_dots_only_where_the_kernel_dwarfs_the_input(unclip_dir):
  """In fp32 on a CPU, XLA's convolution is the faster where activations dominate and the slower where the
  weights do; fp32_results (auto here) takes each where it is faster, with the convolution's numbers."""
  assert load(str(unclip_dir), jnp.float32)[0].dots == "fp32_results"  # auto, fp32, this CPU
  for shape, dwarfed in (((1, 2, 2, 64), True), ((1, 16, 16, 64), False)):
    x = jax.random.normal(jax.random.key(0), shape)
    forms = {}
    for dots in ("fp32_results", "native"):
      module = layers.conv(128, 3, jnp.float32, "conv", dots=dots)
      params = module.init(jax.random.key(1), x)
      run = jax.jit(module.apply)
      forms[dots] = ("convolution(" in run.lower(params, x).compile().as_text(), np.asarray(run(params, x)))
    assert (forms["fp32_results"][0], forms["native"][0]) == (not dwarfed, True), shape
    np.testing.assert_allclose(forms["fp32_results"][1], forms["native"][1], atol=1e-5)


def test_schedule_timesteps_as_diffusers_spaces_them(unclip_dir):
  from jaxaug.models import schedulers

  base = {"num_train_timesteps": 1000, "steps_offset": 1, "skip_prk_steps": True}
  def steps(kind, spacing=None, n=3):
    return schedulers.Scheduler.from_config(kind, {**base, "timestep_spacing": spacing}).timesteps(n).tolist()
  assert steps("pndm") == [667, 334, 334, 1]  # leading, offset 1, the PLMS warm-up repeats a step
  assert steps("ddim") == [667, 334, 1]
  assert steps("ddim", "trailing") == [999, 666, 332]
  assert steps("ddim", "linspace") == [999, 500, 0]
  assert steps("dpm++") == [999, 666, 333]  # DPM-Solver's own default spacing is linspace
  assert steps("dpm++", "leading") == [751, 501, 251]
  with pytest.raises(UserError, match="timestep_spacing 'sideways'"):
    steps("ddim", "sideways")
  with pytest.raises(UserError, match="skip_prk_steps=false"):
    schedulers.Scheduler.from_config("pndm", {"skip_prk_steps": False})
  with pytest.raises(UserError, match="use_karras_sigmas=true"):
    schedulers.Scheduler.from_config("dpm++", {"use_karras_sigmas": True})


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_attention_kernels_agree_with_the_exact_softmax(dtype):
  q, k, v = (jax.random.normal(key, (2, 50, 3, 16), dtype) for key in jax.random.split(jax.random.key(0), 3))
  q32, k32, v32 = (np.asarray(x, np.float64) for x in (q, k, v))
  scores = np.einsum("bthd,bshd->bhts", q32, k32) / 4.0
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  want = np.einsum("bhts,bshd->bthd", probs / probs.sum(-1, keepdims=True), v32)
  got = attention.xla_attention(q, k, v)
  assert got.dtype == dtype
  assert np.abs(np.asarray(got, np.float64) - want).max() < (1e-5 if dtype == jnp.float32 else 2e-2)
  ref = jax.nn.dot_product_attention(q, k, v, implementation="xla")  # jax's own, for the same function
  assert np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64)).max() < (1e-5 if dtype == jnp.float32 else 2e-2)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_attention_scale_on_q_changes_no_number(dtype, monkeypatch):
  """A power-of-two scale multiplies q instead of the scores (heads of 64, 16): the same bits, with or
  without fp32 scores or results; any other head (80) and fp16 keep it on the scores."""
  assert attention.scale_is_exact_on_q(dtype, 64) and attention.scale_is_exact_on_q(dtype, 16)
  assert not attention.scale_is_exact_on_q(dtype, 80) and not attention.scale_is_exact_on_q(jnp.float16, 64)
  q, k, v = (jax.random.normal(key, (2, 40, 3, 64), dtype) for key in jax.random.split(jax.random.key(3), 3))
  runs = {}
  for on_q in (True, False):
    monkeypatch.setattr(attention, "scale_is_exact_on_q", lambda dtype, dim, on_q=on_q: on_q)
    runs[on_q] = [np.asarray(jax.jit(functools.partial(attention.dot_product_attention, fp32_scores=scores,
                                                       fp32_results=results))(q, k, v), np.float32)
                  for scores in (True, False) for results in (True, False)]
  for folded, plain in zip(runs[True], runs[False]):
    np.testing.assert_array_equal(folded, plain)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_long_fp32_results_attention_runs_over_query_blocks(dtype):
  """Beyond BLOCKED_ABOVE queries the fp32_results form never holds the whole (T, S) score array, and gives
  the whole softmax's numbers (each block sums in its own order: within fp32 or bf16 rounding)."""
  t = attention.BLOCKED_ABOVE + 100  # not a multiple of the block
  q, k, v = (jax.random.normal(key, (1, t, 2, 16), dtype) for key in jax.random.split(jax.random.key(4), 3))
  blocked = jax.jit(functools.partial(attention.dot_product_attention, fp32_results=True))
  whole = jax.jit(functools.partial(attention.dot_product_attention, fp32_results=False))
  assert f"{t},{t}]" not in blocked.lower(q, k, v).compile().as_text()
  assert f"{t},{t}]" in whole.lower(q, k, v).compile().as_text()  # the check can see the array
  got, want = (np.asarray(f(q, k, v), np.float32) for f in (blocked, whole))
  assert got.shape == (1, t, 2, 16)
  np.testing.assert_allclose(got, want, atol=1e-6 if dtype == jnp.float32 else 2e-2)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_fp32_results_attention_just_over_a_block_splits_its_queries(dtype):
  """Between QUERY_BLOCK and twice that many queries (a ViT-H/14 image tower's 257) the fp32_results form runs
  one block of QUERY_BLOCK queries and one of the rest, with the whole softmax's numbers."""
  t = attention.QUERY_BLOCK + 1
  q, k, v = (jax.random.normal(key, (1, t, 2, 16), dtype) for key in jax.random.split(jax.random.key(5), 3))
  split = jax.jit(functools.partial(attention.dot_product_attention, fp32_results=True))
  whole = jax.jit(functools.partial(attention.dot_product_attention, fp32_results=False))
  hlo = split.lower(q, k, v).compile().as_text()
  assert f"2,{attention.QUERY_BLOCK},{t}]" in hlo and f"2,1,{t}]" in hlo and f"2,{t},{t}]" not in hlo
  assert f"2,{t},{t}]" in whole.lower(q, k, v).compile().as_text()  # the check can see the whole array
  got, want = (np.asarray(f(q, k, v), np.float32) for f in (split, whole))
  assert got.shape == (1, t, 2, 16)
  np.testing.assert_allclose(got, want, atol=1e-6 if dtype == jnp.float32 else 2e-2)


def test_attention_choice_errors(unclip_dir):
  with pytest.raises(UserError, match="attention must be one of auto, einsum, xla, cudnn"):
    load(str(unclip_dir), jnp.float32, "flash")
  with pytest.raises(UserError, match="attention=cudnn needs an NVIDIA GPU"):
    load(str(unclip_dir), jnp.bfloat16, "cudnn")


def test_plain_sd_txt2img_and_img2img(sd_dir):
  pipe, params = load(str(sd_dir))
  assert pipe.kind == "sd" and pipe.image_encoder is None
  ids = sd.tokenize(pipe, ["a photo of a red circle"])
  ctx, unc = sd.encode_text(pipe, params, ids), sd.encode_text(pipe, params, sd.tokenize(pipe, [""]))
  noise = jax.random.normal(jax.random.key(0), (1, 4, 8, 8))
  txt = denoise(pipe, params, SamplerSpec("txt2img", "ddim", 2, 7.5).check(pipe), noise, ctx, unc)
  image = jnp.full((1, 3, 16, 16), 0.3)
  start = sd.encode(pipe, params, image, jax.random.key(1))
  assert start.shape == (1, 4, 8, 8)
  img = denoise(pipe, params, SamplerSpec("img2img", "ddim", 4, 7.5, strength=0.5).check(pipe), noise, ctx, unc,
                start_latents=start)
  assert jnp.all(jnp.isfinite(txt)) and jnp.all(jnp.isfinite(img))
  assert float(jnp.max(jnp.abs(txt - img))) > 1e-3  # img2img started from the image, not from noise
  with pytest.raises(UserError, match="needs an SD 2.1-unCLIP checkpoint"):
    SamplerSpec("unclip").check(pipe)


def test_sampler_spec_errors(unclip_dir):
  pipe, _ = load(str(unclip_dir))
  with pytest.raises(UserError, match="unknown scheduler 'euler'"):
    SamplerSpec(scheduler="euler").check(pipe)
  with pytest.raises(UserError, match="unknown sampler mode"):
    SamplerSpec(mode="video").check(pipe)
  with pytest.raises(UserError, match="strength"):
    SamplerSpec(mode="img2img", strength=1.5).check(pipe)


def _break_missing_component(root):
  shutil.rmtree(root / "vae")


def _break_missing_weights(root):
  (root / "unet" / "diffusion_pytorch_model.safetensors").unlink()


def _break_wrong_shape(root):
  path = root / "unet" / "diffusion_pytorch_model.safetensors"
  state = load_file(str(path))
  state["conv_in.weight"] = np.zeros((16, 4, 3, 3), np.float32)
  save_file(state, str(path), metadata={"format": "pt"})


def _break_missing_tensor(root):
  path = root / "text_encoder" / "model.safetensors"
  state = load_file(str(path))
  del state["text_model.final_layer_norm.weight"]
  save_file(state, str(path), metadata={"format": "pt"})


def _break_architecture(root):
  cfg = json.loads((root / "unet" / "config.json").read_text())
  cfg["time_embedding_type"] = "fourier"
  (root / "unet" / "config.json").write_text(json.dumps(cfg))


def _break_pipeline_class(root):
  idx = json.loads((root / "model_index.json").read_text())
  idx["_class_name"] = "KandinskyPipeline"
  (root / "model_index.json").write_text(json.dumps(idx))


def _break_corrupt_file(root):
  (root / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00garbage")


@pytest.mark.parametrize("breaker, expect", [
    (_break_missing_component, "has no 'vae/' folder"),
    (_break_missing_weights, "no safetensors weights in"),
    (_break_wrong_shape, "weight 'conv_in.weight' has shape (16, 4, 3, 3)"),
    (_break_missing_tensor, "text_model.final_layer_norm.weight"),
    (_break_architecture, "time_embedding_type='fourier'"),
    (_break_pipeline_class, "unknown pipeline 'KandinskyPipeline'"),
    (_break_corrupt_file, "is damaged"),
])
def test_bad_checkpoint_is_one_clear_line(unclip_dir, tmp_path, breaker, expect):
  root = _copy(unclip_dir, tmp_path)
  breaker(root)
  with pytest.raises(UserError, match=None) as err:
    load(str(root))
  assert expect in str(err.value)
  assert "\n" not in str(err.value)


def _run_cli(*args, env=None):
  return subprocess.run([sys.executable, "-m", "jaxaug.models", *args], capture_output=True, text=True,
                        timeout=300, env={**os.environ, **(env or {})})


def test_cli_exit_status_and_no_traceback(unclip_dir, tmp_path):
  ok = _run_cli(str(unclip_dir))
  assert ok.returncode == 0, ok.stderr
  assert "unclip pipeline" in ok.stdout and "unet" in ok.stdout
  root = _copy(unclip_dir, tmp_path)
  _break_wrong_shape(root)
  for args, env in (([str(root)], None), ([str(tmp_path / "absent")], None),
                    (["someone/not-a-real-model"], {"HF_HUB_OFFLINE": "1"})):
    bad = _run_cli(*args, env=env)
    assert bad.returncode == 2, bad.stderr
    assert "Traceback" not in bad.stderr
    lines = [l for l in bad.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("jaxaug: error:"), bad.stderr


def test_generation_imports_no_upstream_model_code(tmp_path):
  """The models are jaxaug's own: a whole generate run (loading, text and image encoders, sampling, decoding)
  with torch made unimportable succeeds, and neither diffusers nor any Flax code of transformers has been
  imported; transformers is there for the CLIP tokenizer only (read here, with an empty jaxaug cache, by transformers
  itself; later commands rebuild its tokenizers pipeline from the cache: test_a_second_load_does_not_import...)."""
  flags = [f"--config.model={tiny.cached_tiny('unclip')}", "--config.methods=cutmix,embed_mixup_dropout", "--config.plan.amount=1", "--config.sampler.steps=2",
           "--config.resolution=32", "--config.data.source=demo:2", "--config.data.source_size=48",
           f"--config.output.dir={tmp_path / 'out'}", "--config.output.image_files=false"]
  code = ("import runpy, sys\n"
          "sys.modules['torch'] = None\n"  # any `import torch` now fails: nothing in the run may need it
          f"sys.argv = ['jaxaug.generate'] + {flags!r}\n"
          "try:\n  runpy.run_module('jaxaug.generate', run_name='__main__')\nexcept SystemExit as e:\n"
          "  assert not e.code, e.code\n"
          "mods = sorted(sys.modules)\n"
          "print('UPSTREAM', [m for m in mods if sys.modules[m] is not None and m.split('.')[0] in ('diffusers', "
          "'torch') or "
          "(m.startswith('transformers') and 'flax' in m)])\n"
          "print('TOKENIZER', 'transformers.models.clip.tokenization_clip' in mods or "
          "'transformers.models.clip.tokenization_clip_fast' in mods)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONUNBUFFERED": "1", "JAXAUG_CACHE_DIR": str(tmp_path / "cache")})
  assert out.returncode == 0, out.stderr[-3000:]
  assert "UPSTREAM []" in out.stdout, out.stdout
  assert "TOKENIZER True" in out.stdout, out.stdout
  assert (tmp_path / "out" / "done_units.jsonl").is_file()


# The configs of stabilityai/stable-diffusion-2-1-unclip as published (the keys jaxaug must read or accept).
_REAL_UNET = {
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.15.0.dev0", "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False,
    "class_embed_type": "projection", "conv_in_kernel": 3, "conv_out_kernel": 3, "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05,
    "norm_num_groups": 32, "num_class_embeds": None, "only_cross_attention": False, "out_channels": 4,
    "projection_class_embeddings_input_dim": 2048, "resnet_time_scale_shift": "default", "sample_size": 96,
    "time_cond_proj_dim": None, "time_embedding_type": "positional", "timestep_post_act": None,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "upcast_attention": True, "use_linear_projection": True}
_REAL_VAE = {
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.15.0.dev0", "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3,
    "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 768,
    "up_block_types": ["UpDecoderBlock2D"] * 4}
_REAL_TEXT = {
    "_name_or_path": "hf-models/stable-diffusion-v2-768x768/text_encoder", "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": "gelu",
    "hidden_size": 1024, "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 4096,
    "layer_norm_eps": 1e-05, "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": 16,
    "num_hidden_layers": 23, "pad_token_id": 1, "projection_dim": 512, "torch_dtype": "float16",
    "transformers_version": "4.27.0.dev0", "vocab_size": 49408}
_REAL_IMAGE = {
    "_name_or_path": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "architectures": ["CLIPVisionModelWithProjection"],
    "attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "gelu", "hidden_size": 1280, "image_size": 224,
    "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 5120, "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model", "num_attention_heads": 16, "num_channels": 3, "num_hidden_layers": 32,
    "patch_size": 14, "projection_dim": 1024, "torch_dtype": "float16", "transformers_version": "4.27.0.dev0"}


def test_real_sd21_unclip_configs_build_the_full_size_models():
  """Read the real configs, do not assume: every key is read or knowingly accepted, and the modules they
  build have SD 2.1-unCLIP's parameter counts (what `python -m jaxaug.models.tiny --size=full` writes)."""
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # noqa: E731
  unet = pipeline.unet_module(_REAL_UNET, jnp.float32, "real/unet")
  assert unet.config.heads == (5, 10, 20, 20) and unet.config.upcast_attention
  assert count(pipeline.init_shapes(unet, *pipeline.unet_inputs(unet, 1, 8, 8))) == 870_173_124
  vae = pipeline.vae_module(_REAL_VAE, jnp.float32, "real/vae")
  assert count(pipeline.init_shapes(vae, jnp.zeros((1, 3, 16, 16)))) == 83_653_863
  text = pipeline.text_module(_REAL_TEXT, jnp.float32)
  assert count(pipeline.init_shapes(text, jnp.zeros((1, 8), jnp.int32))) == 340_387_840
  image = pipeline.image_module(_REAL_IMAGE, jnp.float32)
  assert count(pipeline.init_shapes(image, jnp.zeros((1, 224, 224, 3)))) == 632_076_800
  with pytest.raises(UserError, match="unsupported hidden_act 'relu'"):
    pipeline.text_module({**_REAL_TEXT, "hidden_act": "relu"}, jnp.float32)
  with pytest.raises(UserError, match="unsupported down block 'AttnDownBlock2D'"):
    pipeline.unet_module({**_REAL_UNET, "down_block_types": ["AttnDownBlock2D"] * 4}, jnp.float32, "real/unet")


# Issue 21 item 9: a damaged tokenizer file is one line naming it (tokenizers answered with a bare traceback).
_TOKENIZER_DAMAGE = {
    "vocab_not_json": ("vocab.json", "{not json", "tokenizer/vocab.json is not valid JSON"),
    "vocab_empty": ("vocab.json", "", "tokenizer/vocab.json is not valid JSON"),
    "vocab_not_utf8": ("vocab.json", b"\xff\xfe{", "tokenizer/vocab.json is not valid JSON (not UTF-8 text)"),
    "vocab_list": ("vocab.json", "[1, 2]", "tokenizer/vocab.json is not a CLIP vocabulary"),
    "vocab_bad_id": ("vocab.json", '{"a": "x"}', "token 'a' has id 'x', not a non-negative integer"),
    "vocab_missing": ("vocab.json", None, "missing {root}/tokenizer/vocab.json"),
    "merges_bad_line": ("merges.txt", "#version: 0.2\nr e d\n", "merges.txt is not the BPE merges of this vocab.json "
                        "(line 2 is 'r e d', not two tokens 'a b')"),
    "merges_other_vocab": ("merges.txt", "#version: 0.2\nq9 zz\n", "line 2 needs token 'q9', which vocab.json "
                           "does not have"),
    "merges_empty": ("merges.txt", "", "merges.txt is not the BPE merges of this vocab.json (it has no merges)"),
    "merges_not_utf8": ("merges.txt", b"#version: 0.2\n\xff\xfe\n", "tokenizer/merges.txt is not UTF-8 text"),
    "merges_missing": ("merges.txt", None, "missing {root}/tokenizer/merges.txt"),
    "config_not_json": ("tokenizer_config.json", "{not json", "tokenizer/tokenizer_config.json is not valid JSON"),
    "config_list": ("tokenizer_config.json", "[1]", "tokenizer/tokenizer_config.json is not a JSON object"),
    "config_missing": ("tokenizer_config.json", None, "missing {root}/tokenizer/tokenizer_config.json, which gives "
                       "model_max_length; the text encoder takes at most 77 tokens"),
    "config_too_long": ("tokenizer_config.json", '{"model_max_length": 100}', "tokenizer_config.json gives no usable "
                        "model_max_length (found 100); the text encoder takes at most 77 tokens"),
    "special_not_json": ("special_tokens_map.json", "{not", "tokenizer/special_tokens_map.json is not valid JSON"),
    "special_list": ("special_tokens_map.json", "[1]", "tokenizer/special_tokens_map.json is not a JSON object"),
    "special_int": ("special_tokens_map.json", '{"bos_token": 5}', "tokenizer cannot be read as a CLIP tokenizer "
                    "(TypeError: Special token bos_token has to be either str or AddedToken"),
    "added_list": ("added_tokens.json", "[1]", "tokenizer/added_tokens.json is not a JSON object"),
    "tokenizer_json_empty": ("tokenizer.json", "{}", "tokenizer cannot be read as a CLIP tokenizer (KeyError"),
}


def _damage_tokenizer(root, case):
  name, content, expect = _TOKENIZER_DAMAGE[case]
  path = root / "tokenizer" / name
  if content is None:
    path.unlink()
  elif isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content)
  return expect.format(root=root)


PROMPTS = ["a photo of a red circle", "", "  A Photo\tOF  the BLUE stripes!! ", "café ☃ naïve 12,345 it's",
           " ".join(["green checker"] * 60)]  # the last one is truncated


@pytest.mark.parametrize("special", [{}, {"pad_token": "!"}, {"padding_side": "left", "truncation_side": "left"}])
def test_remembered_tokenizer_gives_transformers_ids(unclip_dir, tmp_path, monkeypatch, special):
  """The cached pipeline (no transformers import) and transformers' CLIPTokenizer give the same ids; SD 2.x pads
  with '!', and a tokenizer_config may pad or truncate on the left."""
  from transformers import CLIPTokenizer

  from jaxaug.models import tokenizer

  monkeypatch.setenv("JAXAUG_CACHE_DIR", str(tmp_path / "cache"))
  d = _copy(unclip_dir, tmp_path) / "tokenizer"
  for name in ("tokenizer_config.json", "special_tokens_map.json"):
    keys = special if name == "tokenizer_config.json" else {k: v for k, v in special.items() if k == "pad_token"}
    (d / name).write_text(json.dumps({**json.loads((d / name).read_text()), **keys}))
  want = CLIPTokenizer.from_pretrained(str(d))(PROMPTS, padding="max_length", max_length=77, truncation=True,
                                               return_tensors="np").input_ids
  first, again = tokenizer.load(d), tokenizer.load(d)
  assert (first.cached, again.cached) == (False, True)
  for tok in (first, again):
    ids = tok(PROMPTS)
    assert ids.dtype == np.int32 and np.array_equal(ids, want), (special, ids[:, :8], want[:, :8])
  vocab = json.loads((d / "vocab.json").read_text())
  pad = vocab[special.get("pad_token", "<|endoftext|>")]
  ends = (0, 1) if special.get("padding_side") == "left" else (-1, -2)
  assert want[1, ends[0]] == want[1, ends[1]] == pad  # the cases differ where they should
  (next((tmp_path / "cache" / "tokenizers").glob("*.json"))).write_text('{"backend": "{not')  # damaged: rebuilt
  rebuilt = tokenizer.load(d)
  assert not rebuilt.cached and np.array_equal(rebuilt(PROMPTS), want)


def test_a_second_load_does_not_import_transformers(unclip_dir, tmp_path, monkeypatch):
  monkeypatch.setenv("JAXAUG_CACHE_DIR", str(tmp_path / "cache"))
  pipe, _ = load(str(unclip_dir))  # the first: transformers reads the folder (this process has imported it)
  assert not pipe.tokenizer.cached
  code = ("import sys; from jaxaug.models import load, sd; p, _ = load(sys.argv[1]); "
          "print(p.tokenizer.cached, 'transformers' in sys.modules, sd.tokenize(p, ['a red circle']).tolist()[0])")
  run = subprocess.run([sys.executable, "-c", code, str(unclip_dir)], env=os.environ, capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert run.stdout.split(maxsplit=2) == ["True", "False", f"{sd.tokenize(pipe, ['a red circle']).tolist()[0]}\n"]


@pytest.mark.parametrize("case", sorted(_TOKENIZER_DAMAGE))
def test_damaged_tokenizer_file_is_one_line_naming_it(unclip_dir, tmp_path, case):
  root = _copy(unclip_dir, tmp_path)
  expect = _damage_tokenizer(root, case)
  with pytest.raises(UserError) as err:
    load(str(root))
  message = str(err.value)
  assert expect in message and "\n" not in message, message
  assert "re-download" in message


@pytest.mark.parametrize("case", ["vocab_not_json", "merges_bad_line", "config_missing", "special_list"])
def test_damaged_tokenizer_on_the_generate_command_line(unclip_dir, tmp_path, case):
  """The filed case: `python -m jaxaug.generate --config.model=DIR` with a damaged tokenizer/ file: exit 2, one line."""
  root = _copy(unclip_dir, tmp_path)
  expect = _damage_tokenizer(root, case)
  out = tmp_path / "out"
  run = subprocess.run([sys.executable, "-m", "jaxaug.generate", f"--config.model={root}", f"--config.output.dir={out}",
                        "--config.methods=cutmix", "--config.plan.amount=1", "--config.sampler.steps=2",
                        "--config.resolution=32", "--config.data.source=demo:3", "--config.data.source_size=48",
                        "--config.output.image_files=false"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
  assert run.returncode == 2, run.stderr[-3000:]
  assert "Traceback" not in run.stderr
  lines = [l for l in run.stderr.splitlines() if l.strip() and not l.startswith(("I0", "W0", "I1", "W1"))]
  assert len(lines) == 1 and lines[0].startswith("jaxaug: error:") and expect in lines[0], run.stderr[-3000:]
  assert not out.exists()


# Issue 21 item 14: transformers 5 saves a bare CLIPTextModel without the `text_model.` prefix and reads both layouts;
# CLIPVisionModelWithProjection keeps `vision_model.`, but transformers reads it without the prefix as well.
_TOWERS = {"text_encoder": "text_model.", "image_encoder": "vision_model."}


def _relayout(root, layout):
  """Rewrites both CLIP towers' weights: prefix stripped from every name, or from every other name (a mix)."""
  for component, prefix in _TOWERS.items():
    path = root / component / "model.safetensors"
    state = load_file(str(path))
    names = sorted(state)
    strip = set(names if layout == "stripped" else names[::2])
    save_file({k.removeprefix(prefix) if k in strip else k: v for k, v in state.items()}, str(path),
              metadata={"format": "pt"})


@pytest.mark.parametrize("layout", ["stripped", "mixed"])
def test_clip_towers_load_with_or_without_the_base_prefix(unclip_dir, tmp_path, layout):
  root = _copy(unclip_dir, tmp_path)
  _relayout(root, layout)
  text_names = list(load_file(str(root / "text_encoder" / "model.safetensors")))
  assert len(text_names) == 36
  assert sum(not n.startswith("text_model.") for n in text_names) == (36 if layout == "stripped" else 18)
  assert layout == "mixed" or "embeddings.token_embedding.weight" in text_names  # as transformers 5 saves it
  pipe_a, a = load(str(unclip_dir))
  pipe_b, b = load(str(root))
  for component in _TOWERS:
    flat_a, flat_b = traverse_util.flatten_dict(a[component]), traverse_util.flatten_dict(b[component])
    assert flat_a.keys() == flat_b.keys()
    for path in flat_a:
      np.testing.assert_array_equal(flat_a[path], flat_b[path], err_msg=str(path))
  ids = sd.tokenize(pipe_a, ["a photo of a red circle", ""])
  np.testing.assert_array_equal(sd.tokenize(pipe_b, ["a photo of a red circle", ""]), ids)
  np.testing.assert_array_equal(sd.encode_text(pipe_b, b, ids), sd.encode_text(pipe_a, a, ids))
  pixels = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  np.testing.assert_array_equal(sd.encode_image(pipe_b, b, pixels), sd.encode_image(pipe_a, a, pixels))


def test_clip_weight_under_both_names_is_refused(unclip_dir, tmp_path):
  root = _copy(unclip_dir, tmp_path)
  path = root / "text_encoder" / "model.safetensors"
  state = load_file(str(path))
  state["final_layer_norm.weight"] = state["text_model.final_layer_norm.weight"] + 1
  save_file(state, str(path), metadata={"format": "pt"})
  with pytest.raises(UserError) as err:
    load(str(root))
  message = str(err.value)
  assert "weight 'text_model.final_layer_norm.weight' is in the checkpoint twice" in message and "\n" not in message


def _torch_layout_zeros(target, naming, strip):
  """A full-size state dict without memory: zero-stride arrays of each weight's checkpoint shape."""
  state = {}
  for path, leaf in traverse_util.flatten_dict(target).items():
    shape = tuple(leaf.shape)
    if path[-1] == "kernel":
      shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
    state[convert.flax_to_torch_key(path, naming).removeprefix(strip)] = np.broadcast_to(np.float32(0), shape)
  return state


def test_full_size_clip_towers_load_without_the_base_prefix():
  """SD 2.1-unCLIP's own towers: the 372 text names (and the vision tower's) that were refused as missing."""
  text = pipeline.text_module(_REAL_TEXT, jnp.float32)
  target = pipeline.init_shapes(text, jnp.zeros((1, 8), jnp.int32))
  state = _torch_layout_zeros(target, convert.CLIP_TEXT, "text_model.")
  assert len(state) == 372 and not any(k.startswith("text_model.") for k in state)
  loaded = convert.torch_to_flax(state, target, convert.CLIP_TEXT, "real/text_encoder")
  assert len(traverse_util.flatten_dict(loaded)) == 372
  image = pipeline.image_module(_REAL_IMAGE, jnp.float32)
  target = pipeline.init_shapes(image, jnp.zeros((1, 224, 224, 3)))
  state = _torch_layout_zeros(target, convert.CLIP_VISION, "vision_model.")
  assert "visual_projection.weight" in state and not any(k.startswith("vision_model.") for k in state)
  loaded = convert.torch_to_flax(state, target, convert.CLIP_VISION, "real/image_encoder")
  assert len(traverse_util.flatten_dict(loaded)) == len(state)
