"""Attention for the SD models, with the kernel as a field of the module: on a GPU the choice that most
changes the UNet's speed.

At 768 px the UNet's first level attends over 96 x 96 = 9,216 tokens: a materialised score matrix is an
85M-entry array per image row and head, written to and read from memory. The kernels compute the same
function and differ only in how:
- "cudnn": one fused cuDNN flash-attention kernel (`jax.nn.dot_product_attention`) that never materialises
  the scores; per layer it falls back to "xla" where the head size forbids it (not a multiple of 8, > 128).
- "xla": heads-major batched matmuls, scores and softmax in fp32 when the checkpoint asks for
  `upcast_attention` (SD 2.1) or the model runs in fp32, else in the model dtype, as PyTorch does.
  (Ours rather than `jax.nn.dot_product_attention(implementation="xla")`, which ran 1.7-2.2x slower
  on a 2-core CPU than these heads-major matmuls.)
- "einsum": the same matmuls with scores in the model dtype whatever `upcast_attention` says: half the
  score memory of "xla" in bf16, at the cost of the rounding SD 2.1 asked to avoid.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxaug.errors import UserError

IMPLEMENTATIONS = ("auto", "einsum", "xla", "cudnn")
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
# The form of the models' matmuls (projections, feed-forward, attention) and convolutions: "native", XLA's
# matmuls and convolutions with results in the model dtype; "fp32_results", matmuls that ask for fp32 results and
# round once to the model dtype, the convolutions written as such matmuls (layers.row_dots; in an fp32 model only
# where the kernel dwarfs the input, layers.conv_form). Both accumulate in fp32, so they differ only in summation
# order. On XLA:CPU only the second runs bf16 in bf16 (AVX512-BF16 or AMX): a bf16-result matmul and any bf16
# convolution are compiled as conversions to fp32, the fp32 op and a conversion back; and in fp32 its convolution
# is slow where the weights dominate (docs/benchmarks.md). GPUs and TPUs keep "native".
DOTS = ("auto", "native", "fp32_results")


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


def resolve_dots(name: str, dtype) -> str:
  """The matmul and convolution form to use; "auto" is fp32_results on a CPU (bf16 or fp32), else native."""
  if name not in DOTS:
    raise UserError(f"dots must be one of {', '.join(DOTS)}, not {name!r}")
  if name == "auto":
    known = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))
    return "fp32_results" if known and jax.default_backend() == "cpu" else "native"
  return name


def _fp32_result_dot(dtype):
  def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    del preferred_element_type  # nn.Dense passes none
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=jnp.float32).astype(dtype)
  return dot_general


def dense(features: int, dtype, dots: str, name: str, use_bias: bool = True) -> nn.Dense:
  """nn.Dense whose matmul takes the `dots` form (fp32_results only changes a non-fp32 model)."""
  fp32_results = dots == "fp32_results" and jnp.dtype(dtype) != jnp.dtype(jnp.float32)
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, name=name,
                  dot_general=_fp32_result_dot(dtype) if fp32_results else None)


def cudnn_head_ok(dim_head: int) -> bool:
  return dim_head % 8 == 0 and dim_head <= 128


def scale_is_exact_on_q(dtype, dim_head: int) -> bool:
  """Whether the scores' scale 1/sqrt(dim_head) can multiply q instead, with the same numbers: a power of two
  (SD's heads of 64: 1/8) in a dtype with fp32's exponent range, where it only shifts exponents.

  Why: on q the scale is one small multiply before the matmul; on the scores it is a pass over the largest
  array of the layer, which XLA:CPU's attention fusion even materialises as a broadcast constant."""
  return math.log2(dim_head) % 2 == 0 and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))


# fp32_results attention over more queries than this runs over blocks of QUERY_BLOCK queries (see
# dot_product_attention): SD's self-attention from 384 px (2,304 tokens: 480 -> 326 ms at batch 2) up; at
# 1,100 tokens blocking measured slower (24 -> 39 ms), so 256 px's 1,024 stay whole. Just over one block (fewer
# than two), the queries split into one block and the rest: XLA:CPU's attention over 258 to 512 queries costs
# about what 512 do, and the image tower's 257 (1 x 16 heads x 80) took 5.6-7.0 ms whole, 3.5-3.9 ms split.
BLOCKED_ABOVE, QUERY_BLOCK = 2048, 256


def dot_product_attention(q, k, v, *, fp32_scores: bool = True, mask=None, fp32_results: bool = False):
  """Softmax attention over (B, T, N, H) inputs, heads-major; `mask` (T, S) True where a query may look.

  With fp32_scores the scores and the softmax are fp32 whatever the inputs' dtype; the probabilities are
  cast back to it before they weight the values (as PyTorch's upcast attention does). fp32_results: both
  matmuls ask for fp32 results, rounded once to the inputs' dtype (see DOTS); between one and two
  QUERY_BLOCKs of queries, one block and then the rest; and beyond BLOCKED_ABOVE queries, one block of
  QUERY_BLOCK queries at a time (each query's softmax still sees every key, so only rounding changes): the scores
  of SD's 4,096-token self-attention at batch 2 are 671 MB in fp32 (3.4 GB at 768 px), and a CPU spends more
  time moving them than multiplying (2 x 5 heads x 4,096 tokens: 714 -> 394 ms on a 2-core Zen 4).
  """
  t = q.shape[1]
  if fp32_results and QUERY_BLOCK < t < 2 * QUERY_BLOCK and mask is None:
    head = _attention(q[:, :QUERY_BLOCK], k, v, fp32_scores, None, fp32_results)
    return jnp.concatenate([head, _attention(q[:, QUERY_BLOCK:], k, v, fp32_scores, None, fp32_results)], axis=1)
  if fp32_results and t > BLOCKED_ABOVE and mask is None:
    blocks = -(-t // QUERY_BLOCK)
    padded = jnp.pad(q, ((0, 0), (0, blocks * QUERY_BLOCK - t), (0, 0), (0, 0)))  # extra queries: dropped below
    by_block = padded.reshape(q.shape[0], blocks, QUERY_BLOCK, *q.shape[2:]).swapaxes(0, 1)
    out = jax.lax.map(lambda block: _attention(block, k, v, fp32_scores, None, fp32_results), by_block)
    return out.swapaxes(0, 1).reshape(q.shape[0], blocks * QUERY_BLOCK, *q.shape[2:])[:, :t]
  return _attention(q, k, v, fp32_scores, mask, fp32_results)


def _attention(q, k, v, fp32_scores: bool, mask, fp32_results: bool):
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
  score_dtype = jnp.float32 if fp32_scores else q.dtype
  asked = jnp.float32 if fp32_results else score_dtype
  scale = q.shape[-1] ** -0.5
  if scale_is_exact_on_q(q.dtype, q.shape[-1]):
    q, scale = q * jnp.asarray(scale, q.dtype), None
  scores = jnp.einsum("bnth,bnsh->bnts", q, k, preferred_element_type=asked).astype(score_dtype)
  if scale is not None:
    scores = scores * scale
  if mask is not None:
    scores = jnp.where(mask, scores, jnp.finfo(score_dtype).min)
  probs = jax.nn.softmax(scores.astype(jnp.promote_types(score_dtype, jnp.float32)), axis=-1).astype(v.dtype)
  out = jnp.einsum("bnts,bnsh->bnth", probs, v, preferred_element_type=jnp.float32 if fp32_results else None)
  return out.astype(v.dtype).transpose(0, 2, 1, 3)


def xla_attention(q, k, v):
  """The "xla" kernel with fp32 scores (what SD 2.1's upcast_attention asks for)."""
  return dot_product_attention(q, k, v, fp32_scores=True)


def cudnn_attention(q, k, v):
  return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")


def attend(kernel: str, q, k, v, *, upcast: bool, dots: str = "native"):
  """(B, T, N, H) attention with a resolved kernel name; cuDNN falls back to xla where the head forbids."""
  if kernel == "cudnn" and cudnn_head_ok(q.shape[-1]):
    return cudnn_attention(q, k, v)
  fp32_results = dots == "fp32_results"
  if kernel == "einsum":
    return dot_product_attention(q, k, v, fp32_scores=q.dtype == jnp.float32, fp32_results=fp32_results)
  return dot_product_attention(q, k, v, fp32_scores=upcast or q.dtype == jnp.float32, fp32_results=fp32_results)


class Attention(nn.Module):
  """Multi-head attention of SD's transformer blocks (to_q/to_k/to_v without bias, to_out.0 with bias).

  `kernel` is a resolved name from IMPLEMENTATIONS; `upcast` is the checkpoint's upcast_attention; `dots` a
  resolved form from DOTS.
  """
  heads: int
  dim_head: int
  kernel: str = "xla"
  upcast: bool = False
  dtype: jnp.dtype = jnp.float32
  dots: str = "native"

  @nn.compact
  def __call__(self, hidden, context=None):
    context = hidden if context is None else context
    b, inner = hidden.shape[0], self.heads * self.dim_head
    split = (b, -1, self.heads, self.dim_head)  # (B, T, N, H): the layout dot_product_attention takes
    q = dense(inner, self.dtype, self.dots, "to_q", use_bias=False)(hidden).reshape(split)
    k = dense(inner, self.dtype, self.dots, "to_k", use_bias=False)(context).reshape(split)
    v = dense(inner, self.dtype, self.dots, "to_v", use_bias=False)(context).reshape(split)
    out = attend(self.kernel, q, k, v, upcast=self.upcast, dots=self.dots).reshape(b, -1, inner)
    return dense(hidden.shape[-1], self.dtype, self.dots, "to_out_0")(out)
