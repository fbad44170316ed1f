"""Checks that a checkpoint loads, and says what it is: `python -m jaxaug.models MODEL [--dtype=bf16] [--hash]`.

MODEL is a diffusers-format directory or a hub id. Useful before a long run: every component is read,
mapped onto the Flax modules and shape-checked, so a broken checkpoint fails here in seconds.
With --hash it prints the sha256 of every weight file instead (`sha256sum -c` format, relative to MODEL),
the values a generation run records in config.json and dataset_info.json.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxaug.errors import exit_on_user_error
from jaxaug.models import checkpoint, load

DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}


@exit_on_user_error
def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m jaxaug.models", description=__doc__.splitlines()[0])
  parser.add_argument("model", help="diffusers checkpoint directory or hub id")
  parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
  parser.add_argument("--hash", action="store_true", help="print the sha256 of every weight file (cached by size and "
                      "mtime) instead of loading")
  args = parser.parse_args(argv)
  if args.hash:
    return print_hashes(args.model)
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


def print_hashes(model: str) -> None:
  root = checkpoint.resolve(model)
  start, read = time.time(), []

  def progress(path, size):
    read.append(size)
    if size >= 10_000_000:
      print(f"hashing {path.relative_to(root)} ({size / 1e9:.2f} GB)", file=sys.stderr, flush=True)

  hashes = checkpoint.weight_hashes(root, progress)
  if not hashes:
    print(f"jaxaug: error: no .safetensors weight files under {root}", file=sys.stderr)
    raise SystemExit(2)
  for name, digest in hashes.items():
    print(f"{digest}  {name}")
  seconds = time.time() - start
  print(f"{len(hashes)} weight file(s) in {root}; {sum(read) / 1e9:.2f} GB hashed in {seconds:.1f}s "
        f"({len(hashes) - len(read)} from the cache)", file=sys.stderr)


if __name__ == "__main__":
  main()
