"""The plan: policies, same-class sources, determinism, and the split of units over hosts."""

import numpy as np
import pytest

from jaxaug.errors import UserError
from jaxaug.plan import host_units, make_plan

LABELS = np.array([0] * 5 + [1] * 1 + [2] * 12)


def test_fill_to_fills_each_class():
  plan = make_plan(LABELS, 3, ("embed_cutmix_dropout",), "fill_to", 10, seed=0, unit_size=4)
  assert np.bincount(plan.label, minlength=3).tolist() == [5, 9, 0]
  assert plan.num_units == 4 and plan.unit_items(3).tolist() == [12, 13]


def test_per_class_per_method_and_same_class_sources():
  plan = make_plan(LABELS, 3, ("cutmix", "mixup"), "per_class", 16, seed=3, unit_size=8)
  assert len(plan) == 2 * 3 * 16
  assert (LABELS[plan.source[:, 0]] == plan.label).all() and (LABELS[plan.source[:, 1]] == plan.label).all()
  many = plan.label != 1  # class 1 has a single image: both sources are it
  assert (plan.source[many, 0] != plan.source[many, 1]).all()
  assert (plan.source[~many, 0] == plan.source[~many, 1]).all()
  assert plan.method.tolist() == [0] * 48 + [1] * 48



def test_sources_are_uniform_over_the_class():
  plan = make_plan(LABELS, 3, ("mixup",), "per_class", 1200, seed=0, unit_size=8)
  for col in (0, 1):
    counts = np.bincount(plan.source[plan.label == 2, col], minlength=len(LABELS))[LABELS == 2]
    # 1200 draws over 12 images: 100 each, binomial sd ~9.6; allow 4 sd.
    assert np.all(np.abs(counts - 100) < 40), counts


def test_per_image_walks_every_image():
  plan = make_plan(LABELS, 3, ("mixup",), "per_image", 2, seed=0, unit_size=8)
  assert len(plan) == 2 * len(LABELS)
  assert np.bincount(plan.source[:, 0], minlength=len(LABELS)).tolist() == [2] * len(LABELS)


def test_deterministic_and_seed_dependent():
  a = make_plan(LABELS, 3, ("mixup",), "per_class", 16, seed=1, unit_size=8)
  b = make_plan(LABELS, 3, ("mixup",), "per_class", 16, seed=1, unit_size=8)
  c = make_plan(LABELS, 3, ("mixup",), "per_class", 16, seed=2, unit_size=8)
  assert np.array_equal(a.source, b.source) and not np.array_equal(a.source, c.source)


def test_hosts_split_units_without_overlap():
  plan = make_plan(LABELS, 3, ("mixup",), "per_class", 16, seed=0, unit_size=5)
  done = {0, 3}
  shares = [host_units(plan, done, p, 3) for p in range(3)]
  flat = sorted(u for s in shares for u in s)
  assert flat == sorted(set(range(plan.num_units)) - done)


def test_bad_plans():
  with pytest.raises(UserError, match="unknown plan policy"):
    make_plan(LABELS, 3, ("mixup",), "per_pixel", 1, 0, 4)
  with pytest.raises(UserError, match="class 3 has no real images"):
    make_plan(LABELS, 4, ("mixup",), "per_class", 1, 0, 4)
