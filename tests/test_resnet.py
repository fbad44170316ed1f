"""ResNet / ResNeXt: torchvision's sizes, torchvision-layout weights in, torchvision's forward out, the frozen probe."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from jaxaug.errors import UserError
from jaxaug.models import resnet

# torchvision.models.<arch>(num_classes=1000): sum(p.numel() for p in model.parameters())
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "resnext50_32x4d": 25_028_904}
TORCHVISION_SHAPES = {  # block, layers, groups, width_per_group as torchvision builds them
    "resnet18": ("basic", (2, 2, 2, 2), 1, 64),
    "resnext50_32x4d": ("bottleneck", (3, 4, 6, 3), 32, 4),
}


def _variables(model, size=32):
  return jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))()


@pytest.mark.parametrize("arch", sorted(TORCHVISION_PARAMS))
def test_parameter_count_matches_torchvision(arch):
  model = resnet.create(arch, 1000)
  shapes = jax.eval_shape(lambda: _variables(model, 224))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"])) == TORCHVISION_PARAMS[arch]


# ---------------------------------------------------------------------------
# An independent numpy model of torchvision's ResNet: its state dict and its forward (NCHW).


def torchvision_state(arch, rng, num_classes=1000):
  """A random state dict with torchvision's names and shapes (BatchNorm statistics included)."""
  block, layers, groups, width_per_group = TORCHVISION_SHAPES[arch]
  state = {}

  def conv(name, out, inp, k):
    state[f"{name}.weight"] = (rng.normal(size=(out, inp, k, k)) * np.sqrt(2 / (inp * k * k))).astype(np.float32)

  def bn(name, c):
    state[f"{name}.weight"] = rng.uniform(0.5, 1.0, c).astype(np.float32)
    state[f"{name}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
    state[f"{name}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
    state[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    state[f"{name}.num_batches_tracked"] = np.array(7, np.int64)

  conv("conv1", 64, 3, 7)
  bn("bn1", 64)
  inplanes, expansion = 64, 1 if block == "basic" else 4
  for i, (blocks, planes) in enumerate(zip(layers, (64, 128, 256, 512)), 1):
    for b in range(blocks):
      stride = 2 if i > 1 and b == 0 else 1
      p = f"layer{i}.{b}"
      if block == "basic":
        conv(f"{p}.conv1", planes, inplanes, 3), bn(f"{p}.bn1", planes)
        conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
      else:
        width = int(planes * width_per_group / 64) * groups
        conv(f"{p}.conv1", width, inplanes, 1), bn(f"{p}.bn1", width)
        conv(f"{p}.conv2", width, width // groups, 3), bn(f"{p}.bn2", width)
        conv(f"{p}.conv3", planes * expansion, width, 1), bn(f"{p}.bn3", planes * expansion)
      if b == 0 and (stride != 1 or inplanes != planes * expansion):
        conv(f"{p}.downsample.0", planes * expansion, inplanes, 1), bn(f"{p}.downsample.1", planes * expansion)
      inplanes = planes * expansion
  state["fc.weight"] = rng.normal(0, 0.01, (num_classes, inplanes)).astype(np.float32)
  state["fc.bias"] = rng.normal(0, 0.01, num_classes).astype(np.float32)
  return state


def _conv(x, w, stride=1, pad=0, groups=1):
  n, _, h, wd = x.shape
  out, cg, k, _ = w.shape
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
  cols = np.stack([x[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] for i in range(k) for j in range(k)], 2)
  cols = cols.reshape(n, groups, cg, k * k, ho, wo)
  return np.einsum("ngcphw,gocp->ngohw", cols, w.reshape(groups, out // groups, cg, k * k)).reshape(n, out, ho, wo)


def _bn(state, name, x):
  s = lambda k: state[f"{name}.{k}"][None, :, None, None]  # noqa: E731
  return (x - s("running_mean")) / np.sqrt(s("running_var") + 1e-5) * s("weight") + s("bias")


def _maxpool(x):
  n, c, h, w = x.shape
  x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
  return np.max([x[:, :, i:i + 2 * ho:2, j:j + 2 * wo:2] for i in range(3) for j in range(3)], axis=0)


def torchvision_forward(arch, state, x):
  """torchvision's eval-mode forward, NCHW float64."""
  block, layers, groups, _ = TORCHVISION_SHAPES[arch]
  relu = lambda v: np.maximum(v, 0)  # noqa: E731
  x = _maxpool(relu(_bn(state, "bn1", _conv(x, state["conv1.weight"], 2, 3))))
  for i, blocks in enumerate(layers, 1):
    for b in range(blocks):
      p, stride = f"layer{i}.{b}", 2 if i > 1 and b == 0 else 1
      if block == "basic":
        y = relu(_bn(state, f"{p}.bn1", _conv(x, state[f"{p}.conv1.weight"], stride, 1)))
        y = _bn(state, f"{p}.bn2", _conv(y, state[f"{p}.conv2.weight"], 1, 1))
      else:
        y = relu(_bn(state, f"{p}.bn1", _conv(x, state[f"{p}.conv1.weight"])))
        y = relu(_bn(state, f"{p}.bn2", _conv(y, state[f"{p}.conv2.weight"], stride, 1, groups)))
        y = _bn(state, f"{p}.bn3", _conv(y, state[f"{p}.conv3.weight"]))
      if f"{p}.downsample.0.weight" in state:
        x = _bn(state, f"{p}.downsample.1", _conv(x, state[f"{p}.downsample.0.weight"], stride))
      x = relu(y + x)
  return x.mean((2, 3)) @ state["fc.weight"].T + state["fc.bias"]


@pytest.mark.parametrize("arch", sorted(TORCHVISION_SHAPES))
def test_torchvision_weights_give_torchvision_outputs(arch, tmp_path):
  rng = np.random.default_rng(0)
  state = {k: v.astype(np.float64) for k, v in torchvision_state(arch, rng, num_classes=10).items()}
  path = str(tmp_path / "weights.safetensors")
  save_file({k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in state.items()}, path)

  model = resnet.create(arch, 10)
  fresh = _variables(model)
  loaded = resnet.load_pretrained(path, arch, fresh)
  # The head is not loaded (it is sized for the task); put torchvision's in to compare logits.
  assert np.array_equal(loaded["params"]["fc"]["kernel"], fresh["params"]["fc"]["kernel"])
  backbone = [k for k in state if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
  head_size = sum(x.size for x in jax.tree.leaves(fresh["params"]["fc"]))
  loaded_size = sum(x.size for x in jax.tree.leaves(loaded)) - head_size
  assert loaded_size == sum(state[k].size for k in backbone)
  loaded["params"]["fc"] = {"kernel": jnp.asarray(state["fc.weight"].T, jnp.float32),
                            "bias": jnp.asarray(state["fc.bias"], jnp.float32)}

  x = rng.normal(size=(2, 32, 32, 3))
  got = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(loaded, jnp.asarray(x, jnp.float32)))
  want = torchvision_forward(arch, state, x.transpose(0, 3, 1, 2))
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_prefixed_timm_style_file_loads_and_wrong_files_are_user_errors(tmp_path):
  state = torchvision_state("resnet18", np.random.default_rng(1))
  path = str(tmp_path / "prefixed.safetensors")
  save_file({f"module.{k}": v for k, v in state.items()}, path)
  model = resnet.create("resnet18", 5)
  loaded = resnet.load_pretrained(path, "resnet18", _variables(model))
  np.testing.assert_array_equal(loaded["params"]["conv1"]["kernel"], state["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(loaded["batch_stats"]["layer2_0"]["downsample_bn"]["var"],
                                state["layer2.0.downsample.1.running_var"])

  with pytest.raises(UserError, match="resnet50"):  # resnet18 weights into a resnet50
    resnet.load_pretrained(path, "resnet50", jax.eval_shape(lambda: _variables(resnet.create("resnet50", 5))))
  with pytest.raises(UserError, match="not found"):
    resnet.load_pretrained(str(tmp_path / "missing.safetensors"), "resnet18", _variables(model))
  (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
  with pytest.raises(UserError, match="cannot read"):
    resnet.load_pretrained(str(tmp_path / "junk.safetensors"), "resnet18", _variables(model))
  with pytest.raises(UserError, match="unknown model"):
    resnet.create("resnet7", 5)


def test_frozen_backbone_passes_gradient_only_to_the_head_and_keeps_statistics():
  model = resnet.create("resnet_tiny", 4, frozen_backbone=True)
  variables = _variables(model, 16)
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3)) * 3 + 1

  def loss(params):
    logits, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                                  mutable=["batch_stats"])
    return logits.sum(), updates

  grads, updates = jax.grad(loss, has_aux=True)(variables["params"])
  assert all(not np.any(g) for k, g in jax.tree_util.tree_leaves_with_path(grads) if k[0].key != "fc")
  assert np.any(grads["fc"]["kernel"])
  jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], variables["batch_stats"])


def test_bf16_compute_keeps_float32_parameters_and_logits():
  x = jax.random.normal(jax.random.key(2), (2, 16, 16, 3))
  f32 = resnet.create("resnet_tiny", 3)
  bf16 = resnet.create("resnet_tiny", 3, dtype=jnp.bfloat16)
  variables = _variables(f32, 16)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(_variables(bf16, 16)))
  out = bf16.apply(variables, x, train=False)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, f32.apply(variables, x, train=False), atol=0.1)
