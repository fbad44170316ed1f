"""What a world's images mean, measured: the properties the demo-world issue asks of its generator.

One `Probe` per world (a loaded pipeline and the judge) measures, on target-domain test images the generator
never saw: class agreement, the pull toward the target domain, mixing two classes, guidance, and the spread
that the unCLIP noise level gives. Each measurement is made once per probe and kept, so a report, a test and
another test share it. `tests/test_demo_world.py` asserts the checks below on the shipped weights (and their
failure on random ones); `python -m jaxaug.models.demo_world measure` prints them for any world, at any
operating guidance and scheduler, over several noise seeds (docs/demo-world.md, "Measuring a world").
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxaug import augment, condition
from jaxaug.data import world
from jaxaug.models import sd, world_show
from jaxaug.score_lib import metrics

GUIDANCE = world_show.GUIDANCE  # the demo's operating guidance, and the tests'
PER_CLASS = 6  # conditioning images per class (target-domain test split)
GUIDANCES = (1.0, 3.0, 7.0)  # the guidance property
NOISE_LEVELS = (0, 500, 900)
LAMS, PAIRS = world_show.LAMS, world_show.PAIRS  # the lambdas and class pairs the mixing picture shows
MIX_PER_PAIR = 8  # image pairs per class pair
SPREAD_DRAWS = 8  # generations per image for the spread (4 is too noisy: random weights then "grow")


# --- the checks: each threshold was set from measured runs, with margin (tests/test_demo_world.py has the
# numbers), and fails on random weights of the same architecture ------------------------------------------


def agreement_holds(share: float) -> bool:
  """At least 90% of image-conditioned generations read as their class (the issue's number)."""
  return share >= 0.9


def domain_holds(with_image: float, text_only: float) -> bool:
  """Image conditioning lands in the target domain: FD to its real images under half of text alone's."""
  return with_image < 0.5 * text_only


def b_grows(share_b) -> bool:
  """More of b as lambda falls: from at most 10% at lambda 1 to at least 40% at lambda 0, no step back > 0.1."""
  share_b = np.asarray(share_b)
  return bool(share_b[0] <= 0.1 and share_b[-1] >= 0.4 and np.all(np.diff(share_b) >= -0.1))


def ends_hold(share_ab) -> bool:
  """The unmixed ends (the image path alone, empty prompt) keep their class: 70% at lambda 1, 50% at 0."""
  return bool(share_ab[0] >= 0.7 and share_ab[-1] >= 0.5)


def mixtures_hold(share_ab) -> bool:
  """Every lambda reads as a or b at least 80% of the time (the issue: mixing gives a or b)."""
  return bool(np.min(share_ab) >= 0.8)


def guidance_sharpens(at_1: float, at_3: float) -> bool:
  return at_3 >= at_1 + 0.05


def guidance_holds(at_3: float, at_7: float, images: int) -> bool:
  """Guidance 7 no worse than 3, one image's worth of slack."""
  return at_7 >= at_3 - 1 / images


def spread_grows(spread) -> bool:
  """The noise levels 500 and 900 (those of them given) spread generations at least 1.1x as wide as level 0."""
  return bool(min(spread[1:]) > 1.1 * spread[0])


# --- the measurements ---------------------------------------------------------------------------------------


def thumbnails(images) -> np.ndarray:
  """4x4 mean colours (48-d): the domain (background, palette) as a feature space that owes nothing to the
  generator, nor to the judge, which was trained to ignore colour."""
  x = np.asarray(images, np.float64) / 255
  n, h, w, _ = x.shape
  return x.reshape(n, 4, h // 4, 4, w // 4, 3).mean(axis=(2, 4)).reshape(n, -1)


def prompts_of(labels) -> list[str]:
  return [f"a photo of a {world.CLASSES[c]}" for c in labels]


@dataclasses.dataclass
class Probe:
  """Measurements of one world. `guidance`: the operating guidance of every measurement that does not name
  its own; `scheduler`: None for the checkpoint's own (PNDM for the demo world), 20 steps as the demo."""
  model: tuple  # (pipe, params), as jaxaug.models.load gives it
  judge: object  # demo_world.Judge
  guidance: float = GUIDANCE
  scheduler: str | None = None
  verbose: bool = False
  _kept: dict = dataclasses.field(default_factory=dict, repr=False)

  def _once(self, key: tuple, make):
    if key not in self._kept:
      start = time.time()
      self._kept[key] = make()
      if self.verbose:
        print(f"world measure: {' '.join(str(k) for k in key)}: {time.time() - start:.0f} s", flush=True)
    return self._kept[key]

  def _g(self, guidance: float | None) -> float:
    return self.guidance if guidance is None else float(guidance)

  def sample(self, vectors, prompts: list[str], guidance: float | None = None, seed: int = 0) -> np.ndarray:
    """uint8 images from unCLIP vectors (B, 2d) and prompts; vectors None: text only (the all-zero vector)."""
    return world_show.generate(self.model, vectors, prompts, self._g(guidance), seed, self.scheduler)

  def embed(self, images) -> jnp.ndarray:
    return world_show.embed(self.model, images)

  def vectors(self, embeds, level: int = 0, seed: int = 0) -> jnp.ndarray:
    pipe, params = self.model
    noise = jax.random.normal(jax.random.key(1000 + seed), embeds.shape)
    return sd.image_condition(pipe, params, embeds, level, noise)

  def images(self, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    return self._once(("images", per_class), lambda: world_show.unseen_images(per_class))

  def conditioned(self, per_class: int = PER_CLASS, guidance: float | None = None, seed: int = 0,
                  method: str = "rand_img_cond") -> np.ndarray:
    """One generation per test image through jaxaug's conditioning step (image 2: the next image of its class)
    and its class prompt."""
    g = self._g(guidance)

    def make():
      images, labels = self.images(per_class)
      pipe, params = self.model
      partner = np.asarray([(i // per_class) * per_class + (i + 1) % per_class for i in range(len(images))])
      keys = condition.item_keys(seed, jnp.arange(len(images)))
      cond = condition.condition(pipe, params, (augment.get_method(method),), jnp.zeros(len(images), jnp.int32),
                                 keys, jnp.asarray(images), jnp.asarray(images[partner]), 0)
      return self.sample(cond.vector, prompts_of(labels), g, seed)
    return self._once(("conditioned", per_class, g, seed, method), make)

  def agreement(self, per_class: int = PER_CLASS, guidance: float | None = None, seed: int = 0) -> float:
    """Share of image-conditioned generations the judge reads as their class."""
    return share_read(self.judge, self.conditioned(per_class, guidance, seed), self.images(per_class)[1])

  def text_only(self, per_class: int = PER_CLASS, guidance: float | None = None, seed: int = 0) -> np.ndarray:
    """The class prompt alone (the all-zero image vector): the txt2img baseline's images."""
    g = self._g(guidance)
    return self._once(("text only", per_class, g, seed),
                      lambda: self.sample(None, prompts_of(self.images(per_class)[1]), g, seed))

  def text_agreement(self, per_class: int = PER_CLASS, seed: int = 0) -> float:
    return share_read(self.judge, self.text_only(per_class, None, seed), self.images(per_class)[1])

  def domain_gap(self, per_class: int = PER_CLASS, seed: int = 0) -> tuple[float, float]:
    """FD in thumbnail space to real target test images (beyond the first PER_CLASS per class, which condition):
    image-conditioned, and text only."""
    reference = thumbnails(world_show.unseen_images(30, per_class_at_least=PER_CLASS)[0])
    return (metrics.fd(thumbnails(self.conditioned(per_class, None, seed)), reference),
            metrics.fd(thumbnails(self.text_only(per_class, None, seed)), reference))

  def mixed(self, level: str, lam: float, per_pair: int = MIX_PER_PAIR, seed: int = 0) -> tuple[float, float]:
    """(share read as b, share read as a or b) of generations from an empty prompt and a mixture of image a and
    image b at `lam` (a's weight): level 'embed' mixes CLIP image embeddings (embed_mixup), 'pixel' the images."""
    # At lambda 1 and 0 both levels give the unmixed image's embedding exactly (1 * e + 0 * e' and round(1 * x +
    # 0 * x') are e and x), so the ends are measured once for both levels.
    kind = "end" if lam in (0.0, 1.0) else level
    return self._once(("mixed", kind, lam, per_pair, seed),
                      lambda: self._mix(kind, lam, per_pair, seed))

  def _mix(self, level: str, lam: float, per_pair: int, seed: int) -> tuple[float, float]:
    images, labels = world_show.unseen_images(MIX_PER_PAIR)
    firsts, seconds = [], []
    for a, b in PAIRS:
      firsts += [world.CLASSES.index(a) * MIX_PER_PAIR + i for i in range(per_pair)]
      seconds += [world.CLASSES.index(b) * MIX_PER_PAIR + i for i in range(per_pair)]
    x1, x2 = images[firsts], images[seconds]
    if level == "pixel":
      e = self.embed(np.round(lam * x1.astype(np.float32) + (1 - lam) * x2.astype(np.float32)).astype(np.uint8))
    elif level == "embed":
      e = lam * self.embed(x1) + (1 - lam) * self.embed(x2)
    else:  # an end: the unmixed image
      e = self.embed(x1 if lam == 1.0 else x2)
    read = self.judge.predict(self.sample(self.vectors(e, seed=seed), [""] * len(x1), None, seed))
    is_b = read == labels[seconds]
    return float(np.mean(is_b)), float(np.mean(is_b | (read == labels[firsts])))

  def mixing(self, level: str, lams: tuple = LAMS, per_pair: int = MIX_PER_PAIR,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Share read as b, and as a or b, at each lambda."""
    found = np.asarray([self.mixed(level, lam, per_pair, seed) for lam in lams])
    return found[:, 0], found[:, 1]

  def spread(self, level: int, seed: int = 0) -> float:
    """Mean pairwise distance, in the judge's feature space, among SPREAD_DRAWS generations from each of 10
    images (one per class) at unCLIP noise level `level`."""
    def make():
      images, labels = world_show.unseen_images(1)
      e = jnp.repeat(self.embed(images), SPREAD_DRAWS, axis=0)
      draw_seed = level + 10000 * seed
      vectors = self.vectors(e, level, seed=draw_seed)
      made = self.sample(vectors, prompts_of(np.repeat(labels, SPREAD_DRAWS)), None, draw_seed)
      feats = self.judge.features(made).reshape(len(images), SPREAD_DRAWS, -1)
      pairs = np.triu_indices(SPREAD_DRAWS, 1)
      return float(np.mean([np.mean(np.linalg.norm(f[:, None] - f[None], axis=-1)[pairs]) for f in feats]))
    return self._once(("spread", level, seed), make)


def share_read(judge, images, labels) -> float:
  """Share of images the judge reads as their label."""
  return float(np.mean(judge.predict(images) == np.asarray(labels)))


# --- the report -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
  """One property: what was measured per seed (a number or a tuple of numbers) and whether each seed holds."""
  name: str
  asked: str
  measured: tuple
  holds: tuple  # bool per seed; None where the row is a reading, not a check


def _fmt(value) -> str:
  if isinstance(value, (tuple, list, np.ndarray)):
    return " ".join(_fmt(v) for v in value)
  return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def report(probe: Probe, seeds: tuple[int, ...] = (0,)) -> list[Row]:
  """Every property over the noise seeds, at the probe's guidance: the tests' measurements when seeds is (0,)
  and the guidance 3."""
  n = PER_CLASS * len(world.CLASSES)
  rows = []

  def row(name, asked, per_seed, check=None):
    measured = tuple(per_seed(s) for s in seeds)
    rows.append(Row(name, asked, measured, tuple(check(m) for m in measured) if check else (None,) * len(seeds)))

  g = f"{probe.guidance:g}"
  row(f"agreement at guidance {g}", ">= 0.9", lambda s: probe.agreement(seed=s), agreement_holds)
  row(f"text only at guidance {g}", "(a reading)", lambda s: probe.text_agreement(seed=s))
  row("FD to target: image-conditioned, text only", "image < 0.5 x text", lambda s: probe.domain_gap(seed=s),
      lambda m: domain_holds(*m))
  for level in ("embed", "pixel"):
    row(f"{level} mixing: share b, lambda 1 .. 0", "grows, <= 0.1 to >= 0.4",
        lambda s, lv=level: tuple(probe.mixing(lv, seed=s)[0]), b_grows)
    row(f"{level} mixing: a or b, lambda 1 .. 0", "ends >= 0.7, 0.5",
        lambda s, lv=level: tuple(probe.mixing(lv, seed=s)[1]), ends_hold)
  row("embed mixing: a or b, the least over lambda", ">= 0.8", lambda s: min(probe.mixing("embed", seed=s)[1]),
      lambda m: mixtures_hold([m]))
  row("agreement at guidance 1 / 3 / 7", "1 -> 3 up >= 0.05; 7 >= 3 - 1 image",
      lambda s: tuple(probe.agreement(guidance=x, seed=s) for x in GUIDANCES),
      lambda m: guidance_sharpens(m[0], m[1]) and guidance_holds(m[1], m[2], n))
  row(f"spread at noise level {' / '.join(map(str, NOISE_LEVELS))}", "500 and 900 > 1.1 x level 0",
      lambda s: tuple(probe.spread(level, s) for level in NOISE_LEVELS), spread_grows)
  return rows


def table(rows: list[Row], seeds: tuple[int, ...]) -> str:
  """The report as a markdown table: one column per seed, then the mean, what is asked and how many seeds hold."""
  head = ["property", *[f"seed {s}" for s in seeds], "mean", "asked", "holds"]
  lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  for r in rows:
    mean = np.mean(np.asarray(r.measured, np.float64), axis=0)
    holds = "" if r.holds[0] is None else f"{sum(r.holds)} of {len(r.holds)}"
    lines.append("| " + " | ".join([r.name, *[_fmt(m) for m in r.measured], _fmt(mean), r.asked, holds]) + " |")
  return "\n".join(lines)
