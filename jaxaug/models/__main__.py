"""Checks that a checkpoint loads, and says what it is: `python -m jaxaug.models MODEL [--dtype=bf16]`.

MODEL is a diffusers-format directory or a hub id. Useful before a long run: every component is read,
mapped onto the Flax modules and shape-checked, so a broken checkpoint fails here in seconds.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxaug.errors import exit_on_user_error
from jaxaug.models import load

DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}


@exit_on_user_error
def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m jaxaug.models", description=__doc__.splitlines()[0])
  parser.add_argument("model", help="diffusers checkpoint directory or hub id")
  parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
  args = parser.parse_args(argv)
  start = time.time()
  pipe, params = load(args.model, DTYPES[args.dtype])
  print(f"{pipe.name}: {pipe.kind} pipeline, scheduler {pipe.scheduler_name}, loaded in {time.time() - start:.1f}s")
  for name, tree in params.items():
    leaves = jax.tree.leaves(tree)
    count = sum(int(np.prod(x.shape)) for x in leaves)
    print(f"  {name:18s} {count / 1e6:9.2f} M parameters  {leaves[0].dtype}")
  if pipe.kind == "unclip":
    print(f"  image embedding {pipe.image_embed_dim}-d, CLIP input {pipe.clip_image.size}px")
  print(f"  latents {pipe.latent_channels} channels, VAE downsamples x{pipe.vae_factor}")


if __name__ == "__main__":
  main()
