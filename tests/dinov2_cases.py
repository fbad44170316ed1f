"""The DINOv2 parity cases that tests/make_golden.py records with PyTorch transformers and tests/test_dinov2.py
checks: the hub's configs (facebook/dinov2-{small,base,large,giant}, -with-registers-small), random weights
and inputs drawn in numpy from fixed seeds on both sides, so only the expected features are stored.

ViT-S and ViT-B run at full depth; ViT-L and ViT-g keep their widths, heads and feed-forward (SwiGLU for g)
with 2 of their 24 / 40 layers, to stay a few seconds on a CPU. ViT-g's case also sets image_size 224, so its
position embeddings are used as trained (the path without resampling); every other case resamples the
37 x 37 grid of 518 px training.
"""

from __future__ import annotations

import numpy as np

_BASE = {"model_type": "dinov2", "mlp_ratio": 4, "image_size": 518, "patch_size": 14, "layer_norm_eps": 1e-6,
         "layerscale_value": 1.0, "hidden_act": "gelu", "qkv_bias": True, "use_swiglu_ffn": False}
HUB = {
    "vits14": {**_BASE, "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6},
    "vitb14": {**_BASE, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12},
    "vitl14": {**_BASE, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16},
    "vitg14": {**_BASE, "hidden_size": 1536, "num_hidden_layers": 40, "num_attention_heads": 24,
               "use_swiglu_ffn": True},
}
HUB["vits14_reg"] = {**HUB["vits14"], "model_type": "dinov2_with_registers", "num_register_tokens": 4}

# name: (config, input height, width, batch, seed of weights, the `positions` modes recorded); the inputs'
# seeds are the cases' order.
CASES = {
    "vits14": (HUB["vits14"], 224, 224, 2, 1, ("transformers", "dinov2")),
    "vits14_wide": (HUB["vits14"], 196, 252, 1, 1, ("transformers",)),  # the weights of "vits14"
    "vits14_reg": (HUB["vits14_reg"], 224, 224, 2, 3, ("transformers", "dinov2")),
    "vitb14": (HUB["vitb14"], 224, 224, 1, 4, ("transformers",)),
    "vitl14_2layers": ({**HUB["vitl14"], "num_hidden_layers": 2}, 224, 224, 1, 5, ("transformers",)),
    "vitg14_2layers_224": ({**HUB["vitg14"], "num_hidden_layers": 2, "image_size": 224}, 224, 224, 1, 6,
                           ("transformers", "dinov2")),
}
TOKENS = slice(0, 8)  # the tokens (and channels) of last_hidden_state recorded too: [CLS], registers, patches

# Small configs for the saved layouts (save_pretrained's names and shapes).
LAYOUT_BASE = {**_BASE, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 28}
LAYOUTS = {
    "Dinov2Model": LAYOUT_BASE,
    "Dinov2Model_swiglu": {**LAYOUT_BASE, "use_swiglu_ffn": True},
    "Dinov2WithRegistersModel": {**LAYOUT_BASE, "model_type": "dinov2_with_registers", "num_register_tokens": 4},
    "Dinov2ForImageClassification": LAYOUT_BASE,
}

# torch.nn.functional.interpolate(bicubic, align_corners=False) of a random 37 x 37 grid:
# (rows, cols, antialias, offset); offset 0 is `size=(rows, cols)`, else `scale_factor=((rows + offset) / 37, ...)`.
RESAMPLES = [(16, 16, False, 0.0), (16, 16, False, 0.1), (16, 16, True, 0.0), (14, 18, False, 0.0),
             (14, 18, False, 0.1), (14, 18, True, 0.0), (40, 45, False, 0.1), (40, 45, True, 0.0),
             (37, 20, True, 0.0), (37, 37, False, 0.1), (37, 37, True, 0.1)]
RESAMPLE_GRID = 37


def pixels(case: str) -> np.ndarray:
  """The case's input, (B, H, W, 3) float32, standing for normalised pixels."""
  _, height, width, batch, _, _ = CASES[case]
  return np.random.default_rng(1000 + list(CASES).index(case)).standard_normal((batch, height, width, 3), np.float32)


def resample_source() -> np.ndarray:
  """(C, 37, 37) the grid that RESAMPLES resize."""
  return np.random.default_rng(99).standard_normal((3, RESAMPLE_GRID, RESAMPLE_GRID), np.float32)
