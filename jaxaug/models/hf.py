"""The one place that imports diffusers and transformers.

Their Flax code is deprecated (removed in diffusers 0.40 and transformers 5.0), so the versions are
pinned in pyproject.toml and every import goes through here: replacing them later is a local change.
Their deprecation chatter is silenced for our users; torch is never imported.
"""

import logging
import os
import warnings

os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# Keep the libraries from importing torch even where it is installed.
os.environ.setdefault("USE_TORCH", "0")
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_FLAX", "1")

with warnings.catch_warnings():
  warnings.simplefilter("ignore")
  from diffusers.utils import logging as _diffusers_logging
  from transformers.utils import logging as _transformers_logging

  _diffusers_logging.set_verbosity_error()
  _transformers_logging.set_verbosity_error()

  from diffusers import FlaxAutoencoderKL as AutoencoderKL
  from diffusers import FlaxDDIMScheduler as DDIMScheduler
  from diffusers import FlaxDDPMScheduler as DDPMScheduler
  from diffusers import FlaxDPMSolverMultistepScheduler as DPMSolverMultistepScheduler
  from diffusers import FlaxPNDMScheduler as PNDMScheduler
  from diffusers import FlaxUNet2DConditionModel as UNet2DConditionModel
  from transformers import CLIPTextConfig, CLIPTokenizer, CLIPVisionConfig
  from transformers.models.clip.modeling_flax_clip import FlaxCLIPTextTransformer as CLIPTextTransformer
  from transformers.models.clip.modeling_flax_clip import FlaxCLIPVisionTransformer as CLIPVisionTransformer



class _TorchMatchingLinen:
  """flax.linen as diffusers' Flax attention module sees it, with two numerics set to PyTorch's.

  diffusers 0.39's Flax transformer block differs from its PyTorch twin in two places: GEGLU uses the
  tanh approximation of GELU (PyTorch: exact erf), and the block's input GroupNorm has eps 1e-5
  (PyTorch: 1e-6). Both shift a UNet output by ~5e-4 at fp32; with this the parity tests hold at 1e-5.
  """

  def __getattr__(self, name):
    return getattr(_linen, name)

  @staticmethod
  def gelu(x, approximate=True):  # diffusers calls nn.gelu(x); PyTorch's GEGLU uses the exact form
    del approximate
    return _linen.gelu(x, approximate=False)

  @staticmethod
  def GroupNorm(*args, epsilon=None, **kwargs):  # noqa: N802 (mirrors the class it stands for)
    del epsilon
    return _linen.GroupNorm(*args, epsilon=1e-6, **kwargs)


import flax.linen as _linen  # noqa: E402
from diffusers.models import attention_flax as _attention_flax  # noqa: E402

_attention_flax.nn = _TorchMatchingLinen()
Attention = _attention_flax.FlaxAttention  # the UNet's attention layer (see attention.py)

logging.getLogger("diffusers").setLevel(logging.ERROR)
logging.getLogger("transformers").setLevel(logging.ERROR)

__all__ = [
    "Attention",
    "AutoencoderKL",
    "CLIPTextConfig",
    "CLIPTextTransformer",
    "CLIPTokenizer",
    "CLIPVisionConfig",
    "CLIPVisionTransformer",
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverMultistepScheduler",
    "PNDMScheduler",
    "UNet2DConditionModel",
]
