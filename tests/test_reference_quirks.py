"""reference_quirks: embed_cutmix and dropout as the paper's released code ran them, and nothing else changes.

Vector-level checks against values worked out by hand from method.md's description of the released code:
its embed_cutmix cut int((1 - lam) * 2) rows of the guided pair (unconditional zeros, conditional), and its
dropout was F.dropout(p=0.4) * 0.6 on the whole 2048-d vector.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaug import augment, condition
from jaxaug.models import load, sd, tiny

# Jitted (pipeline, methods and noise level static): eager dispatch of the image tower takes seconds per call.
_conditioned = jax.jit(condition.condition, static_argnums=(0, 2, 7))

E1 = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
E2 = np.array([[5.0, 6.0, 7.0, 8.0]], np.float32)


@pytest.fixture(scope="module")
def unclip(tmp_path_factory):
  return load(str(tiny.write_tiny(tmp_path_factory.mktemp("ckpt") / "unclip", "unclip")))


def _keys(n, seed=0):
  return condition.item_keys(seed, jnp.arange(n))


@pytest.mark.parametrize("lam,rows", [(1.0, 0), (0.9, 0), (0.51, 0), (0.5, 1), (0.3, 1), (1e-6, 1), (0.0, 2)])
def test_reference_cut_takes_int_of_two_rows(lam, rows):
  assert int(augment.reference_cut_rows(jnp.float32(lam))) == rows


def test_reference_embed_cutmix_keeps_image_one(monkeypatch):
  # Intended, lam = 0.3: the first round(0.7 * 4) = 3 dimensions come from e2 -> [5, 6, 7, 4].
  monkeypatch.setattr(augment, "_draw_lam", lambda key, alpha: jnp.float32(0.3))
  intended, lam = augment.apply_embed(augment.get_method("embed_cutmix"), _keys(1), E1, E2)
  np.testing.assert_array_equal(intended, [[5.0, 6.0, 7.0, 4.0]])
  assert float(lam[0]) == pytest.approx(0.25)
  # As released, lam = 0.3: int(0.7 * 2) = 1 row of (0, e2) replaces the unconditional row -> (0, e1): e1 kept.
  quirky, lam = augment.apply_embed(augment.get_method("embed_cutmix", reference_quirks=True), _keys(1), E1, E2)
  np.testing.assert_array_equal(quirky, E1)
  assert float(lam[0]) == 1.0
  # Only lam = 0 exactly would take both rows of image 2's pair.
  monkeypatch.setattr(augment, "_draw_lam", lambda key, alpha: jnp.float32(0.0))
  quirky, lam = augment.apply_embed(augment.get_method("embed_cutmix", reference_quirks=True), _keys(1), E1, E2)
  np.testing.assert_array_equal(quirky, E2)
  assert float(lam[0]) == 0.0


def test_reference_embed_cutmix_is_image_one_for_real_draws():
  rng = np.random.default_rng(0)
  e1, e2 = rng.normal(size=(64, 32)).astype(np.float32), rng.normal(size=(64, 32)).astype(np.float32)
  method = augment.get_method("embed_cutmix_dropout", reference_quirks=True)
  e, lam = augment.apply_embed(method, _keys(64), e1, e2)
  np.testing.assert_array_equal(e, e1)  # no cut, and the dropout is left to the whole vector
  np.testing.assert_array_equal(lam, np.ones(64))


def test_vector_dropout_zeroes_the_whole_vector_without_rescaling():
  keys = _keys(1, seed=3)
  vector = jnp.arange(1.0, 9.0)[None]  # 4 image dims + 4 noise-level dims
  keep = np.asarray(jax.random.bernoulli(augment.drop_keys(keys)[0], 0.6, (8,)))
  want = np.where(keep, np.arange(1.0, 9.0), 0.0)[None]
  np.testing.assert_array_equal(augment.vector_dropout(keys, vector), want)
  # Over a 2048-d vector about 40% of the entries, in both halves, are zero; the rest are untouched.
  big = jnp.ones((16, 2048))
  dropped = np.asarray(augment.vector_dropout(_keys(16), big))
  assert set(np.unique(dropped)) == {0.0, 1.0}
  for half in (dropped[:, :1024], dropped[:, 1024:]):
    assert 0.37 < np.mean(half == 0) < 0.43


def _condition(pipe, params, names, quirks, x1, x2, keys):
  methods = tuple(augment.get_method(n, reference_quirks=quirks) for n in names)
  return _conditioned(pipe, params, methods, jnp.arange(len(names), dtype=jnp.int32), keys, x1, x2, 0)


def test_quirks_change_exactly_embed_cutmix_and_dropout(unclip):
  pipe, params = unclip
  names = tuple(augment.METHODS)
  n, d = len(names), pipe.image_embed_dim
  rng = np.random.default_rng(1)
  x1 = rng.integers(0, 256, (n, 40, 40, 3), dtype=np.uint8)
  x2 = rng.integers(0, 256, (n, 40, 40, 3), dtype=np.uint8)
  keys = _keys(n, seed=7)
  intended = _condition(pipe, params, names, False, x1, x2, keys)
  quirky = _condition(pipe, params, names, True, x1, x2, keys)
  # The reference vector: image 1's (pixel-augmented) embedding, noised, with its noise-level half.
  _, k_embed, k_noise = (jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys) for i in range(3))
  both = condition.clip_normalize(pipe, jnp.concatenate([quirky.image, condition.clip_resize(pipe, x1 / 255.0)]))
  e1 = sd.encode_image(pipe, params, both)[:n]
  noise = jax.vmap(lambda k: jax.random.normal(k, (d,)))(k_noise)
  undropped = np.asarray(sd.image_condition(pipe, params, e1, 0, noise))
  for i, name in enumerate(names):
    method = augment.METHODS[name]
    changed = method.embed == "embed_cutmix" or method.dropout
    same = np.allclose(intended.vector[i], quirky.vector[i], atol=1e-6)
    assert same != changed, name
    np.testing.assert_array_equal(intended.image[i], quirky.image[i])  # pixels never change
    if method.embed == "embed_cutmix" or (method.dropout and method.embed is None):
      # No embedding mix left: the vector is image 1's, then (with dropout) 40% of all 2048 entries zeroed.
      vec = np.asarray(quirky.vector[i])
      if method.dropout:
        keep = np.asarray(jax.random.bernoulli(augment.drop_keys(k_embed)[i], 0.6, (2 * d,)))
        np.testing.assert_allclose(vec, np.where(keep, undropped[i], 0.0), atol=1e-5)
        assert np.any(vec[d:] == 0) and np.any(vec[d:] != 0)  # the noise-level half is hit too
      else:
        np.testing.assert_allclose(vec, undropped[i], atol=1e-5)
      assert float(quirky.lam[i]) == float(intended.lam[i] if method.pixel else 1.0)
  # The intended dropout never touches the noise-level half.
  for i, name in enumerate(names):
    np.testing.assert_allclose(intended.vector[i, d:], undropped[i, d:], atol=1e-6)


def test_generation_records_the_flag_and_refuses_a_changed_one(tmp_path):
  from jaxaug import generate
  from jaxaug.data import synthetic
  from jaxaug.errors import UserError

  config = generate.get_demo_config()
  config.methods, config.data.source, config.plan.amount, config.plan.unit_size = "dropout", "demo:1", 1, 4
  config.sampler.steps, config.resolution, config.batch.per_device = 1, 32, 4
  config.output.dir, config.output.image_files, config.reference_quirks = str(tmp_path / "out"), False, True
  generate.run(config)
  source = synthetic.SyntheticSource(tmp_path / "out")
  assert all(source.provenance(i)["reference_quirks"] is True for i in range(len(source)))
  config.reference_quirks = False
  with pytest.raises(UserError, match=r"reference_quirks changed"):
    generate.prepare(config)
  # A set made before the switch existed (no reference_quirks in its fingerprint) resumes without quirks.
  stored = json.loads((tmp_path / "out" / "config.json").read_text())
  del stored["fingerprint"]["reference_quirks"]
  (tmp_path / "out" / "config.json").write_text(json.dumps(stored))
  generate.prepare(config)
  config.reference_quirks = True
  with pytest.raises(UserError, match=r"reference_quirks changed"):
    generate.prepare(config)
