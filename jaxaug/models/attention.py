"""Which kernel computes the UNet's attention: on a GPU the choice that most changes its speed.

diffusers' Flax attention builds the full (tokens x tokens) score matrix with einsum and a softmax in
the model's dtype ("einsum"). At 768 px the UNet's first level attends over 96 x 96 = 9,216 tokens: per
image row and head an 85M-entry matrix written to and read from memory. "cudnn" is one fused cuDNN
flash-attention kernel (`jax.nn.dot_product_attention`) that never materialises the scores. "xla" is
diffusers' arithmetic with fp32 scores and softmax, as SD 2.1's `upcast_attention` asks for in bf16.
(It is written here rather than taken from `jax.nn.dot_product_attention(implementation="xla")`,
which ran 1.7-2.2x slower on a 2-core CPU than these heads-major batched matmuls.)

The swap is a flax method interceptor around the UNet call: the checkpoint's parameters and the
diffusers module tree stay as they are, only the arithmetic inside each attention layer changes.
"""

from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxaug.errors import UserError
from jaxaug.models import hf

IMPLEMENTATIONS = ("auto", "einsum", "xla", "cudnn")
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def _cudnn_device() -> bool:
  """cuDNN's fused attention needs an NVIDIA GPU of compute capability 8.0 or newer (A100, H100, ...)."""
  device = jax.devices()[0]
  if device.platform != "gpu":
    return False
  major = str(getattr(device, "compute_capability", "0")).split(".")[0]
  return major.isdigit() and int(major) >= 8


def resolve(name: str, dtype) -> str:
  """The implementation to use; "auto" is cuDNN where it can run (NVIDIA GPU, bf16/fp16), else XLA."""
  if name not in IMPLEMENTATIONS:
    raise UserError(f"attention must be one of {', '.join(IMPLEMENTATIONS)}, not {name!r}")
  cudnn_ok = _cudnn_device() and jnp.dtype(dtype) in [jnp.dtype(d) for d in _CUDNN_DTYPES]
  if name == "cudnn" and not cudnn_ok:
    raise UserError(f"attention=cudnn needs an NVIDIA GPU (compute capability 8.0+) and dtype bf16; this run has "
                    f"{jax.devices()[0].device_kind} and {jnp.dtype(dtype).name} (use attention=auto or xla)")
  if name == "auto":
    return "cudnn" if cudnn_ok else "xla"
  return name


def _cudnn_head_ok(dim_head: int) -> bool:
  return dim_head % 8 == 0 and dim_head <= 128


def xla_attention(q, k, v):
  """Softmax attention over (B, T, N, H) inputs, heads-major, scores and softmax in fp32."""
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
  scores = jnp.einsum("bnth,bnsh->bnts", q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  return jnp.einsum("bnts,bnsh->bnth", probs, v).transpose(0, 2, 1, 3)


def cudnn_attention(q, k, v):
  return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")


KERNELS = {"xla": xla_attention, "cudnn": cudnn_attention}


def _attend(module, implementation: str, hidden, context):
  """diffusers' FlaxAttention.__call__ (inference: dropout is off) with one of KERNELS inside."""
  context = hidden if context is None else context
  b = hidden.shape[0]
  heads = (b, -1, module.heads, module.dim_head)  # (B, T, N, H): the layout dot_product_attention takes
  q = module.query(hidden).reshape(heads)
  k = module.key(context).reshape(heads)
  v = module.value(context).reshape(heads)
  if implementation == "cudnn" and not _cudnn_head_ok(module.dim_head):
    implementation = "xla"
  out = KERNELS[implementation](q, k, v)
  return module.proj_attn(out.reshape(b, -1, module.heads * module.dim_head))


@contextlib.contextmanager
def implementation(name: str):
  """Within this context every diffusers FlaxAttention layer computes with `name` (a resolved name)."""
  if name == "einsum":
    yield
    return

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name != "__call__" or not isinstance(context.module, hf.Attention):
      return next_fun(*args, **kwargs)
    hidden = args[0]
    ctx = args[1] if len(args) > 1 else kwargs.get("context")
    return _attend(context.module, name, hidden, ctx)

  with nn.intercept_methods(interceptor):
    yield
