"""What the demo world's generator does with guidance and with two classes mixed, as two pictures.

`python -m jaxaug.models.demo_world show --out=DIR` draws, from target-domain test images the generator never
saw, (1) one generation per class at guidance 1, 3, 7 and 12, conditioned on the image and its class prompt,
and (2) embed_mixup between five class pairs at lambda 1 to 0 with an empty prompt (the image path alone). The
judge labels every generation; a red frame marks one it reads as another class (for mixing: as neither a nor
b). The numbers in docs/demo-world.md are measured by tests/test_demo_world.py on more images; these pictures
show what those numbers count.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw

from jaxaug import augment, condition
from jaxaug.data import world
from jaxaug.errors import UserError
from jaxaug.models import sd
from jaxaug.sampler import SamplerSpec, denoise

STEPS = 20  # as the demo and the tests
GUIDANCES = (1.0, 3.0, 7.0, 12.0)
PAIRS = (("circle", "star"), ("square", "heart"), ("triangle", "ring"), ("cross", "crescent"), ("diamond", "arrow"))
LAMS = (1.0, 0.75, 0.5, 0.25, 0.0)
GUIDANCE = 3.0  # the demo's operating guidance (configs/demo.py), the tests' and the mixing rows'
TILE = 64  # the world's 32 px images drawn at twice their size
LABEL_W = 150
HEAD_H = 24  # the title line
MISREAD = (220, 30, 30)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _generate(pipe, params, spec, ids, empty_ids, vectors, noise):
  context, uncond = sd.encode_text(pipe, params, ids), sd.encode_text(pipe, params, empty_ids)
  latents = denoise(pipe, params, spec, noise, context, uncond, vectors)
  return jnp.round(sd.to_pixels(sd.decode(pipe, params, latents)) * 255).astype(jnp.uint8)


def generate(model, vectors, prompts: list[str], guidance: float, seed: int = 0,
             scheduler: str | None = None) -> np.ndarray:
  """uint8 images from unCLIP vectors (B, 2d) and prompts, STEPS steps of the scheduler (None: the checkpoint's,
  PNDM), one noise seed for all; vectors None: text only (the all-zero vector)."""
  pipe, params = model
  if vectors is None:
    vectors = sd.unconditional_image_vector(len(prompts), 2 * pipe.image_embed_dim)
  side = world.SIZE // pipe.vae_factor
  noise = jax.random.normal(jax.random.key(seed), (len(prompts), pipe.latent_channels, side, side))
  spec = SamplerSpec("unclip", scheduler, STEPS, guidance).check(pipe)
  return np.asarray(_generate(pipe, params, spec, sd.tokenize(pipe, prompts), sd.tokenize(pipe, [""] * len(prompts)),
                              jnp.asarray(vectors), noise))


@functools.partial(jax.jit, static_argnums=0)
def _embed(pipe, params, images):
  pixels = condition.clip_normalize(pipe, condition.clip_resize(pipe, augment.to_float(images)))
  return sd.encode_image(pipe, params, pixels)


def embed(model, images) -> jnp.ndarray:
  """CLIP image embeddings (B, d) of uint8 images, preprocessed as the conditioning step does."""
  return _embed(model[0], model[1], jnp.asarray(images))


def vectors(model, embeds) -> jnp.ndarray:
  """The unCLIP vectors of image embeddings at noise level 0 (the paper's runs)."""
  pipe, params = model
  return sd.image_condition(pipe, params, embeds, 0, jnp.zeros_like(embeds))


def unseen_images(per_class: int, per_class_at_least: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Target-domain test images (the generator never saw them) and labels: per class, those whose index within
  the class is in [per_class_at_least, per_class)."""
  source = world.WorldSource("test", per_class)
  keep = [i for i in range(len(source)) if source._within[i] >= per_class_at_least]
  return np.stack([source.read(i) for i in keep]), np.asarray(source.labels)[keep]


def guidance_rows(model, judge, per_class: int = 1) -> list[tuple[str, np.ndarray, np.ndarray]]:
  """(label, images, misread) rows: the real images, then their generations at each of GUIDANCES."""
  images, labels = unseen_images(per_class)
  conditions = vectors(model, embed(model, images))
  prompts = [f"a photo of a {world.CLASSES[c]}" for c in labels]
  rows = [("real (condition)", images, judge.predict(images) != labels)]
  for g in GUIDANCES:
    made = generate(model, conditions, prompts, g)
    misread = judge.predict(made) != labels
    rows.append((f"guidance {g:g}: {1 - misread.mean():.0%}", made, misread))
  return rows


def mixing_rows(model, judge, per_pair: int = 2) -> list[tuple[str, np.ndarray, np.ndarray]]:
  """(label, images, neither a nor b) rows: per lambda, embed_mixup of a and b (empty prompt), pairs side by
  side; then the b images."""
  images, labels = unseen_images(per_pair)
  index = {c: np.flatnonzero(labels == world.CLASSES.index(c)) for pair in PAIRS for c in pair}
  firsts = np.concatenate([index[a] for a, _ in PAIRS])
  seconds = np.concatenate([index[b] for _, b in PAIRS])
  e1, e2 = embed(model, images[firsts]), embed(model, images[seconds])
  rows = [("a", images[firsts], np.zeros(len(firsts), bool))]
  for lam in LAMS:
    made = generate(model, vectors(model, lam * e1 + (1 - lam) * e2), [""] * len(firsts), GUIDANCE)
    read = judge.predict(made)
    neither = (read != labels[firsts]) & (read != labels[seconds])
    rows.append((f"lambda {lam:g}: {1 - neither.mean():.0%} a or b", made, neither))
  rows.append(("b", images[seconds], np.zeros(len(seconds), bool)))
  return rows


def render(rows, title: str) -> Image.Image:
  """The rows as one picture: a label column, then the tiles; a red frame on each marked tile."""
  width = LABEL_W + max(len(images) for _, images, _ in rows) * TILE
  sheet = Image.new("RGB", (width, HEAD_H + len(rows) * TILE), "white")
  draw = ImageDraw.Draw(sheet)
  draw.text((6, 6), title, fill="black")
  for r, (label, images, marked) in enumerate(rows):
    y = HEAD_H + r * TILE
    draw.text((6, y + TILE // 2 - 6), label, fill="black")
    for c, (image, mark) in enumerate(zip(images, marked)):
      x = LABEL_W + c * TILE
      sheet.paste(Image.fromarray(image).resize((TILE, TILE), Image.NEAREST), (x, y))
      if mark:
        draw.rectangle([x, y, x + TILE - 1, y + TILE - 1], outline=MISREAD, width=3)
  return sheet


def show(out: str | Path, model, judge) -> list[Path]:
  """Writes guidance.png and mixing.png to `out` and prints each row's share; returns the two paths.

  `model`: a loaded world pipeline, (pipe, params) as `jaxaug.models.load` gives it."""
  out = Path(out)
  try:
    out.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise UserError(f"cannot write to {out}: {error.strerror or error}") from None
  mixing_title = (f"embed_mixup of a and b, empty prompt, guidance {GUIDANCE:g}; red: read as neither a nor b; "
                  "pairs: " + ", ".join(f"{a}/{b}" for a, b in PAIRS))
  pictures = {
      "guidance.png": (guidance_rows(model, judge), "one test image per class, its class prompt; red: the judge "
                                                    "reads another class"),
      "mixing.png": (mixing_rows(model, judge), mixing_title),
  }
  paths = []
  for name, (rows, title) in pictures.items():
    for label, _, _ in rows:
      if "%" in label:  # the generated rows, with their shares
        print(f"world show: {name[:-4]}: {label}", flush=True)
    render(rows, title).save(out / name)
    paths.append(out / name)
  print(f"world show: wrote {', '.join(str(p) for p in paths)}")
  return paths
