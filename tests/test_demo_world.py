"""What the trained demo world's images mean (issue: a trained demo world), checked with its judge classifier.

Every property is asserted on the shipped weights and shown to fail on random weights of the same
architecture, so none of them can pass on noise. Thresholds come from measured runs (numbers beside each),
with margin. The generations go through jaxaug's own conditioning, sampler and decoder.
"""

import functools
import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxaug import augment, condition
from jaxaug.data import world
from jaxaug.models import demo_world, load, sd, world_show
from jaxaug.models.tiny import resolve_model
from jaxaug.score_lib import metrics

GUIDANCE = 3.0
PER_CLASS = 6  # conditioning images per class (target-domain test split: the generator never saw them)
RANDOM_PER_CLASS = 2  # the same, for the random-weight checks


@pytest.fixture(scope="module")
def judge():
  return demo_world.Judge.load()


@pytest.fixture(scope="module")
def trained():
  return load(resolve_model("world"))


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
  return load(str(demo_world.write_random(tmp_path_factory.mktemp("world") / "random")))


def _conditioning_images(per_class: int):
  source = world.WorldSource("test", per_class)
  return np.stack([source.read(i) for i in range(len(source))]), source.labels


@pytest.fixture(scope="module")
def real():
  """Conditioning images: PER_CLASS per class from the target domain's test split; and their labels."""
  return _conditioning_images(PER_CLASS)


@pytest.fixture(scope="module")
def few():
  """The first RANDOM_PER_CLASS of them per class: enough to show that random weights fail (they give one class,
  and noise, whatever the condition), a third of the work of `real`."""
  return _conditioning_images(RANDOM_PER_CLASS)


_MEMO: dict = {}  # one worker runs this whole module (conftest.ONE_WORKER), so the memo is shared


def memo(fn):
  """Each measurement once per model in this module (the xfail tests reuse what the passing tests measured)."""
  signature = inspect.signature(fn)

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()  # conditioned(m, real) and conditioned(m, real, 3.0) are one measurement
    key = (fn.__name__, *(a if isinstance(a, (int, float, str)) else id(a) for a in bound.arguments.values()))
    if key not in _MEMO:
      _MEMO[key] = fn(*args, **kwargs)
    return _MEMO[key]
  return wrapper


def sample(model, vectors, prompts, guidance=GUIDANCE, seed=0):
  """uint8 images from unCLIP vectors (B, 2d) and prompts; vectors None: text only (the all-zero vector)."""
  return world_show.generate(model, vectors, prompts, guidance, seed)


embed = world_show.embed


def vectors_of(model, embeds, level=0, seed=0):
  pipe, params = model
  noise = jax.random.normal(jax.random.key(1000 + seed), embeds.shape)
  return sd.image_condition(pipe, params, embeds, level, noise)


@memo
def conditioned(model, real, guidance=GUIDANCE, method="rand_img_cond", seed=0):
  """One generation per real image through jaxaug's conditioning step (image 2: the next image of its class)."""
  images, labels = real
  pipe, params = model
  per = len(images) // len(world.CLASSES)
  partner = np.asarray([(i // per) * per + (i + 1) % per for i in range(len(images))])
  keys = condition.item_keys(seed, jnp.arange(len(images)))
  cond = condition.condition(pipe, params, (augment.get_method(method),), jnp.zeros(len(images), jnp.int32), keys,
                             jnp.asarray(images), jnp.asarray(images[partner]), 0)
  return sample(model, cond.vector, [f"a photo of a {world.CLASSES[c]}" for c in labels], guidance, seed)


def agreement(judge, images, labels) -> float:
  return float(np.mean(judge.predict(images) == np.asarray(labels)))


# --- the judge itself: a classifier of real world images (both styles) ------------------------------------


def test_judge_knows_the_world(judge):
  for domain in ("target", "broad"):
    source = world.WorldSource("test", 20, domain=domain)
    images = np.stack([source.read(i) for i in range(len(source))])
    assert agreement(judge, images, source.labels) >= 0.97, domain  # measured 1.000 / 0.995


# --- 1. class agreement ---------------------------------------------------------------------------------


def test_class_agreement(judge, trained, untrained, real, few):
  assert agreement(judge, conditioned(trained, real), real[1]) >= 0.9  # measured 0.967 (58 of 60)
  assert agreement(judge, conditioned(untrained, few), few[1]) < 0.3  # measured 0.1 (one class for all; 0.1 on 60 too)


# --- 2. domain: image conditioning lands in the target domain, text alone in the broad style ----------


def thumbnails(images) -> np.ndarray:
  """4x4 mean colours (48-d): the domain (background, palette) as a feature space that owes nothing to the
  generator, nor to the judge, which was trained to ignore colour."""
  x = np.asarray(images, np.float64) / 255
  n, h, w, _ = x.shape
  return x.reshape(n, 4, h // 4, 4, w // 4, 3).mean(axis=(2, 4)).reshape(n, -1)


def _domain_gap(model, judge, real):
  reference = world.WorldSource("test", 30)
  ref = thumbnails(np.stack([reference.read(i) for i in range(len(reference)) if reference._within[i] >= PER_CLASS]))
  prompts = [f"a photo of a {world.CLASSES[c]}" for c in real[1]]
  with_image = metrics.fd(thumbnails(conditioned(model, real)), ref)
  text_only = metrics.fd(thumbnails(sample(model, None, prompts)), ref)
  return with_image, text_only


def test_image_conditioning_pulls_toward_the_target_domain(judge, trained, untrained, real, few):
  with_image, text_only = _domain_gap(trained, judge, real)
  assert with_image < 0.5 * text_only, (with_image, text_only)  # measured 0.15 against 2.62
  with_image, text_only = _domain_gap(untrained, judge, few)
  assert not with_image < 0.5 * text_only, (with_image, text_only)  # measured 1.71 against 1.72 (1.62, 1.60 on 60)


# --- 3. mixing two classes gives one or the other, more of b as lambda falls --------------------------

PAIRS, LAMS = world_show.PAIRS, world_show.LAMS  # the class pairs and lambdas the mixing picture shows


def _mixing(model, judge, level: str, lams: tuple = LAMS, per_pair: int = 8):
  """Share of generations labelled b, and labelled a or b, at each lambda (one measurement per lambda), from
  `per_pair` image pairs per class pair."""
  found = np.asarray([_mixed(model, judge, level, lam, per_pair) for lam in lams])
  return found[:, 0], found[:, 1]


@memo
def _mixed(model, judge, level: str, lam: float, per_pair: int = 8):
  # At lambda 1 and 0 both levels give the unmixed image's embedding exactly (1 * e + 0 * e' and round(1 * x +
  # 0 * x') are e and x), so the ends are measured once for both levels.
  if lam in (0.0, 1.0) and level != "end":
    return _mixed(model, judge, "end", lam, per_pair)
  source = world.WorldSource("test", 8)
  images = np.stack([source.read(i) for i in range(len(source))])
  firsts, seconds = [], []
  for a, b in PAIRS:
    firsts += [world.CLASSES.index(a) * 8 + i for i in range(per_pair)]
    seconds += [world.CLASSES.index(b) * 8 + i for i in range(per_pair)]
  x1, x2 = images[firsts], images[seconds]
  a_labels, b_labels = source.labels[firsts], source.labels[seconds]
  if level == "pixel":
    e = embed(model, np.round(lam * x1.astype(np.float32) + (1 - lam) * x2.astype(np.float32)).astype(np.uint8))
  elif level == "embed":
    e = lam * embed(model, x1) + (1 - lam) * embed(model, x2)
  else:  # an end: the unmixed image
    e = embed(model, x1 if lam == 1.0 else x2)
  predicted = judge.predict(sample(model, vectors_of(model, e), [""] * len(x1)))
  return float(np.mean(predicted == b_labels)), float(np.mean((predicted == b_labels) | (predicted == a_labels)))


def _b_grows(share_b) -> bool:
  """More of b as lambda falls: from at most 10% at lambda 1 to at least 40% at lambda 0, no step back > 0.1."""
  return bool(share_b[0] <= 0.1 and share_b[-1] >= 0.4 and np.all(np.diff(share_b) >= -0.1))


@pytest.mark.parametrize("level", ["embed", "pixel"])
def test_mixing_moves_from_a_to_b(judge, trained, untrained, level):
  # measured share labelled b at lambda 1 .. 0: embed 0.025 0.075 0.175 0.45 0.6; pixel 0.025 0 0.25 0.55 0.6;
  # random weights 0.2 at every lambda (everything is labelled one class).
  share_b, share_ab = _mixing(trained, judge, level)
  assert _b_grows(share_b), (share_b, share_ab)
  assert share_ab[0] >= 0.7 and share_ab[-1] >= 0.5, share_ab  # the unmixed ends: measured 0.825 and 0.6-0.625
  # Random weights fail already at the ends (0.2 labelled b at lambda 1 and at 0: everything is one class, which
  # is b for one of the five pairs), so only the ends are made, from 2 pairs per class pair.
  assert not _b_grows(_mixing(untrained, judge, level, (1.0, 0.0), per_pair=2)[0])


@pytest.mark.xfail(strict=True, reason="not yet: mid-lambda mixtures often land in a third class (a or b: 0.33-0.58 "
                                       "at lambda 0.25-0.75, measured); the issue asks for a or b throughout")
def test_mixtures_stay_a_or_b(judge, trained):
  _, share_ab = _mixing(trained, judge, "embed")
  assert share_ab.min() >= 0.8, share_ab


# --- 4. guidance ------------------------------------------------------------------------------------------


def test_guidance_sharpens_class_identity(judge, trained, untrained, real, few):
  found = [agreement(judge, conditioned(trained, real, g), real[1]) for g in (1.0, 3.0)]
  assert found[1] >= found[0] + 0.05 and found[1] >= 0.9, found  # measured 0.833 -> 0.967
  assert max(agreement(judge, conditioned(untrained, few, g), few[1]) for g in (1.0, 3.0)) < 0.3


@pytest.mark.xfail(strict=True, reason="not yet: at guidance 7 agreement falls back to 0.833 (measured; shapes break "
                                       "into pieces, in both domains, in every UNet and fine-tuning tried, longer "
                                       "training, a shifted schedule and 16x16 latents included, and with DDIM or "
                                       "DPM-Solver++ too, or guidance left out of the last steps or rescaled; "
                                       "the one UNet in which it rises, trained with the "
                                       "consistency term from its first step, falls short at guidance 3 and in the "
                                       "image path alone: docs/demo-world.md); "
                                       "the issue asks that it not fall over {1, 3, 7}")
def test_agreement_does_not_fall_at_guidance_7(judge, trained, real):
  found = [agreement(judge, conditioned(trained, real, g), real[1]) for g in (3.0, 7.0)]
  assert found[1] >= found[0] - 1 / 60, found


# --- 5. noise level ---------------------------------------------------------------------------------------


def _diversity(model, judge, level: int) -> float:
  """Mean pairwise distance, in the judge's feature space, among 8 generations from each of 10 images."""
  source = world.WorldSource("test", 1)
  images = np.stack([source.read(i) for i in range(len(source))])
  e = jnp.repeat(embed(model, images), 8, axis=0)
  prompts = [f"a photo of a {world.CLASSES[c]}" for c in np.repeat(source.labels, 8)]
  vectors = vectors_of(model, e, level, seed=level)
  feats = judge.features(sample(model, vectors, prompts, seed=level)).reshape(10, 8, -1)
  spread = [np.mean(np.linalg.norm(f[:, None] - f[None], axis=-1)[np.triu_indices(8, 1)]) for f in feats]
  return float(np.mean(spread))


def test_diversity_grows_with_noise_level(judge, trained, untrained):
  # measured trained 3.58 / 4.32 / 4.26 at levels 0 / 500 / 900 (grows, then flat); random 4.78 / 4.79 / 4.74.
  # Two other seed sets for the trained model (every seed + 10000 s): 3.54 / 4.38 / 4.89 and 3.47 / 4.15 / 4.49,
  # so min(500, 900) / level 0 = 1.19-1.24 against the 1.1 asked. With 4 generations per image instead of 8 the
  # measure is too noisy (trained 4.08 / 3.75 / 4.78; random weights then "grow" 1.35x at level 500): keep 8.
  found = [_diversity(trained, judge, level) for level in (0, 500, 900)]
  assert min(found[1], found[2]) > 1.1 * found[0], found
  random = [_diversity(untrained, judge, level) for level in (0, 500)]
  if random[1] > 1.1 * random[0]:  # only then can level 900 decide (measured: it does not get here)
    random.append(_diversity(untrained, judge, 900))
  assert not min(random[1:]) > 1.1 * random[0], random


# --- the pictures of guidance and mixing (python -m jaxaug.models.demo_world show) ------------------------


def _row_shares(printed: str, picture: str) -> dict[str, float]:
  """{row label: share} from show's lines, e.g. 'world show: guidance: guidance 3: 100%'."""
  found = re.findall(rf"world show: {picture}: (.+?): (\d+)%", printed)
  return {label: int(share) / 100 for label, share in found}


def _framed(picture: Image.Image, row: int, columns: int) -> int:
  """How many tiles of a row (0 = the first under the title) carry the red misread frame."""
  pixels = np.asarray(picture)
  y = world_show.HEAD_H + row * world_show.TILE + 1
  return sum(tuple(pixels[y, world_show.LABEL_W + c * world_show.TILE + 1]) == world_show.MISREAD
             for c in range(columns))


def test_show_draws_what_the_judge_reads(judge, trained, tmp_path, capsys):
  guidance, mixing = world_show.show(tmp_path, trained, judge)
  shares = _row_shares(capsys.readouterr().out, "guidance")
  picture = Image.open(guidance).convert("RGB")
  assert picture.size == (world_show.LABEL_W + 10 * world_show.TILE, world_show.HEAD_H + 5 * world_show.TILE)
  assert Image.open(mixing).size == (world_show.LABEL_W + 10 * world_show.TILE, world_show.HEAD_H + 7 * world_show.TILE)
  assert list(shares) == [f"guidance {g:g}" for g in world_show.GUIDANCES]
  # One image per class: guidance 3 reads as its class 10 of 10 times (measured; 9 of 10 allowed), guidance 12
  # 5 of 10 (the shapes break apart: docs/demo-world.md)
  assert shares["guidance 3"] >= 0.9 and shares["guidance 12"] <= 0.7, shares
  for row, g in enumerate(world_show.GUIDANCES, start=1):  # each row frames exactly the images the judge misreads
    assert _framed(picture, row, 10) == round(10 * (1 - shares[f"guidance {g:g}"])), g
  assert _framed(picture, 0, 10) == 0  # the real images all read right
