"""What the trained demo world's images mean (issue: a trained demo world), checked with its judge classifier.

Every property is asserted on the shipped weights and shown to fail on random weights of the same
architecture, so none of them can pass on noise. Thresholds come from measured runs (numbers beside each),
with margin. The generations go through jaxaug's own conditioning, sampler and decoder.
"""

import json
import re

import numpy as np
import pytest
from PIL import Image

from jaxaug.data import world
from jaxaug.models import demo_world, load, world_measure, world_show
from jaxaug.models.tiny import resolve_model

PER_CLASS = world_measure.PER_CLASS  # conditioning images per class (target-domain test split: never seen)
RANDOM_PER_CLASS = 2  # the same, for the random-weight checks: enough to show that random weights fail (they
# give one class, and noise, whatever the condition), a third of the work


@pytest.fixture(scope="module")
def judge():
  return demo_world.Judge.load()


@pytest.fixture(scope="module")
def trained(judge):
  """The shipped world's probe: each measurement made once for the whole module (one worker runs each module:
  conftest.ModuleUnits), so the expected failures and the report reuse what the passing tests measured."""
  return world_measure.Probe(load(resolve_model("world")), judge)


@pytest.fixture(scope="module")
def untrained(judge, tmp_path_factory):
  return world_measure.Probe(load(str(demo_world.write_random(tmp_path_factory.mktemp("world") / "random"))), judge)


# --- the judge itself: a classifier of real world images (both styles) ------------------------------------


def test_judge_knows_the_world(judge):
  for domain in ("target", "broad"):
    source = world.WorldSource("test", 20, domain=domain)
    images = np.stack([source.read(i) for i in range(len(source))])
    assert world_measure.share_read(judge, images, source.labels) >= 0.97, domain  # measured 1.000 / 0.995


# --- 1. class agreement ---------------------------------------------------------------------------------


def test_class_agreement(trained, untrained):
  assert world_measure.agreement_holds(trained.agreement(PER_CLASS))  # measured 0.967 (58 of 60)
  assert untrained.agreement(RANDOM_PER_CLASS) < 0.3  # measured 0.1 (one class for all; 0.1 on 60 too)


# --- 2. domain: image conditioning lands in the target domain, text alone in the broad style ----------


def test_image_conditioning_pulls_toward_the_target_domain(trained, untrained):
  found = trained.domain_gap(PER_CLASS)
  assert world_measure.domain_holds(*found), found  # measured 0.15 against 2.62
  found = untrained.domain_gap(RANDOM_PER_CLASS)
  assert not world_measure.domain_holds(*found), found  # measured 1.71 against 1.72 (1.62, 1.60 on 60)


# --- 3. mixing two classes gives one or the other, more of b as lambda falls --------------------------


@pytest.mark.parametrize("level", ["embed", "pixel"])
def test_mixing_moves_from_a_to_b(trained, untrained, level):
  # measured share labelled b at lambda 1 .. 0: embed 0.025 0.075 0.175 0.45 0.6; pixel 0.025 0 0.25 0.55 0.6;
  # random weights 0.2 at every lambda (everything is labelled one class).
  share_b, share_ab = trained.mixing(level)
  assert world_measure.b_grows(share_b), (share_b, share_ab)
  assert world_measure.ends_hold(share_ab), share_ab  # the unmixed ends: measured 0.825 and 0.6-0.625
  # Random weights fail already at the ends (0.2 labelled b at lambda 1 and at 0: everything is one class, which
  # is b for one of the five pairs), so only the ends are made, from 2 pairs per class pair.
  assert not world_measure.b_grows(untrained.mixing(level, (1.0, 0.0), per_pair=2)[0])


@pytest.mark.xfail(strict=True, reason="not yet: mid-lambda mixtures often land in a third class (a or b: 0.33-0.58 "
                                       "at lambda 0.25-0.75, measured); the issue asks for a or b throughout")
def test_mixtures_stay_a_or_b(trained):
  _, share_ab = trained.mixing("embed")
  assert world_measure.mixtures_hold(share_ab), share_ab


# --- 4. guidance ------------------------------------------------------------------------------------------


def test_guidance_sharpens_class_identity(trained, untrained):
  found = [trained.agreement(PER_CLASS, g) for g in (1.0, 3.0)]
  assert world_measure.guidance_sharpens(*found) and world_measure.agreement_holds(found[1]), found  # 0.833 -> 0.967
  assert max(untrained.agreement(RANDOM_PER_CLASS, g) for g in (1.0, 3.0)) < 0.3


@pytest.mark.xfail(strict=True, reason="not yet: at guidance 7 agreement falls back to 0.833 (measured; shapes break "
                                       "into pieces, in both domains, in every UNet and fine-tuning tried, longer "
                                       "training, a wider UNet, a shifted schedule and 16x16 latents included, and "
                                       "with DDIM or DPM-Solver++ too, or guidance left out of the last steps or "
                                       "rescaled, or a decoder fine-tuned to read perturbed latents; the one UNet in "
                                       "which it rises, trained with the consistency term from its first step, falls "
                                       "short at guidance 3 and in the image path alone: docs/demo-world.md); the "
                                       "issue asks that it not fall over {1, 3, 7}")
def test_agreement_does_not_fall_at_guidance_7(trained):
  found = [trained.agreement(PER_CLASS, g) for g in (3.0, 7.0)]
  assert world_measure.guidance_holds(*found, images=PER_CLASS * len(world.CLASSES)), found


# --- 5. noise level ---------------------------------------------------------------------------------------


def test_diversity_grows_with_noise_level(trained, untrained):
  # measured trained 3.58 / 4.32 / 4.26 at levels 0 / 500 / 900 (grows, then flat); random 4.78 / 4.79 / 4.74.
  # Two other seed sets for the trained model (seeds 1 and 2 of `measure`): 3.54 / 4.38 / 4.89 and
  # 3.47 / 4.15 / 4.49, so min(500, 900) / level 0 = 1.19-1.24 against the 1.1 asked. With 4 generations per
  # image instead of 8 the measure is too noisy (trained 4.08 / 3.75 / 4.78; random weights then "grow" 1.35x at
  # level 500): keep 8.
  found = [trained.spread(level) for level in world_measure.NOISE_LEVELS]
  assert world_measure.spread_grows(found), found
  random = [untrained.spread(level) for level in (0, 500)]
  if random[1] > 1.1 * random[0]:  # only then can level 900 decide (measured: it does not get here)
    random.append(untrained.spread(900))
  assert not world_measure.spread_grows(random), random


def test_the_operating_guidance_is_the_demos():
  """The tests, measure and show judge the world at the guidance the no-flag demo runs it at."""
  from jaxaug import config_files

  assert world_measure.GUIDANCE == world_show.GUIDANCE == config_files.load("demo").sampler.guidance


# --- the report: python -m jaxaug.models.demo_world measure ----------------------------------------------


def test_report_is_what_the_tests_measure(trained):
  """The report at the tests' seed and guidance is these tests' own measurements (kept by the probe, so it costs
  nothing here), and says of each property what the tests say: every check holds but the two expected failures."""
  rows = {r.name: r for r in world_measure.report(trained, (0,))}
  assert rows["agreement at guidance 3"].measured == (trained.agreement(PER_CLASS),)
  assert rows["agreement at guidance 1 / 3 / 7"].measured == (tuple(trained.agreement(PER_CLASS, g)
                                                                    for g in (1.0, 3.0, 7.0)),)
  assert rows["embed mixing: share b, lambda 1 .. 0"].measured == (tuple(trained.mixing("embed")[0]),)
  failing = {name for name, r in rows.items() if r.holds == (False,)}
  assert failing == {"embed mixing: a or b, the least over lambda", "agreement at guidance 1 / 3 / 7"}, failing
  assert rows["text only at guidance 3"].holds == (None,)  # a reading, not a check
  text = world_measure.table(list(rows.values()), (0,))
  assert text.splitlines()[0] == "| property | seed 0 | mean | asked | holds |"
  assert "| agreement at guidance 3 | 0.967 | 0.967 | >= 0.9 | 1 of 1 |" in text  # 58 of 60


def test_measure_command(trained, tmp_path, capsys, monkeypatch):
  """The command prints the report's table and writes its JSON; the probe it builds is swapped for the module's
  (same world, same judge), so the measurements are the ones already made."""
  made = []

  def probe(model, judge, guidance, scheduler, verbose):
    made.append((guidance, scheduler))
    return trained
  monkeypatch.setattr(world_measure, "Probe", probe)
  out = tmp_path / "measure.json"
  demo_world.main(["measure", "--seeds=0", f"--json={out}"])
  printed = capsys.readouterr().out
  assert made == [(3.0, None)]
  assert "| agreement at guidance 3 | 0.967 |" in printed
  record = json.loads(out.read_text())
  assert record["guidance"] == 3.0 and record["seeds"] == [0] and record["model"].endswith("world_weights")
  by_name = {r["name"]: r for r in record["rows"]}
  assert by_name["agreement at guidance 3"]["measured"] == [trained.agreement(PER_CLASS)]
  assert by_name["agreement at guidance 1 / 3 / 7"]["holds"] == [False]


@pytest.mark.parametrize("argv, message", [
    (["--seeds=0,x"], "--seeds=0,x: give noise seeds as integers, e.g. --seeds=0,1,2,3"),
    (["--seeds="], "--seeds=: give noise seeds as integers, e.g. --seeds=0,1,2,3"),
    (["--guidance=0.5"], "--guidance=0.5: the operating guidance must be at least 1"),
    (["--scheduler=heun"], "unknown scheduler 'heun'"),
    (["--model=/nonexistent"], "--model=/nonexistent: not a world checkpoint (no model_index.json)"),
    (["--json=/nonexistent/m.json"], "--json=/nonexistent/m.json: no directory /nonexistent to write it to"),
])
def test_measure_refuses_bad_input_in_one_line(argv, message, capsys):
  with pytest.raises(SystemExit) as stop:
    demo_world.main(["measure", *argv])
  assert stop.value.code == 2
  err = capsys.readouterr().err.strip()
  assert message in err and "\n" not in err, err


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
  guidance, mixing = world_show.show(tmp_path, trained.model, judge)
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
