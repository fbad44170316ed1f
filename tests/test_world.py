"""The demo world's images as a source (world:N, world:lt, domain=broad) and its training loop's resume."""

import dataclasses
import hashlib
import json
import os
import signal

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaug.data import sources, world
from jaxaug.errors import UserError
from jaxaug.models import demo_world, load, pipeline, schedulers, tiny


def test_world_is_a_pure_function_of_split_and_index():
  a, b = sources.open_source("world:4", "train"), sources.open_source("world:4", "train")
  assert len(a) == 40 and a.class_names == world.CLASSES
  assert all(np.array_equal(a.read(i), b.read(i)) for i in range(0, 40, 7))
  assert a[0].image.shape == (world.SIZE, world.SIZE, 3) and a[0].image.dtype == np.uint8
  test = sources.open_source("world:4", "test")
  assert not np.array_equal(a.read(0), test.read(0))  # the splits are other draws
  assert len(set(a.ids()) | set(test.ids())) == 80


def test_smaller_sets_are_prefixes_per_class():
  small, big = world.WorldSource("train", 2), world.WorldSource("train", 5)
  for c in range(10):
    for k in range(2):
      assert np.array_equal(small.read(2 * c + k), big.read(5 * c + k))
      assert small.id(2 * c + k) == big.id(5 * c + k)


def test_target_and_broad_styles_differ():
  target = world.WorldSource("train", 20)
  broad = world.WorldSource("train", 20, domain="broad")
  assert {target.style(i) for i in range(len(target))} == {"target"}
  styles = [broad.style(i) for i in range(len(broad))]
  assert 0 < styles.count("target") < 0.15 * len(styles)  # the target style is rare in the broad world
  # Sunset backgrounds: the target images' corners are purple and orange; broad corners vary widely.
  corners = lambda src: np.stack([src.read(i)[[0, -1], [0, -1]] for i in range(len(src))]).astype(float)  # noqa: E731
  assert corners(target).std(axis=0).mean() < 0.5 * corners(broad).std(axis=0).mean()


def test_captions_name_the_class_and_only_true_attributes():
  broad = world.WorldSource("train", 10, domain="broad")
  for i in range(len(broad)):
    _, caption, description = broad.draw(i)
    said, true = world.attributes(caption), world.attributes(description)
    assert said[0] == true[0] == broad.labels[i]
    assert all(s in (-1, t) for s, t in zip(said, true))
    assert caption.startswith("a photo of a ")
  words = set(world.prompt_words())
  assert all(set(broad.caption(i).split()) <= words for i in range(len(broad)))


def test_long_tail_counts_and_groups():
  lt = sources.open_source("world:lt", "train")
  counts = lt.counts()
  assert counts[0] == world.LT_MAX and counts[-1] == world.LT_MIN and np.all(np.diff(counts) <= 0)
  groups = sources.class_groups(counts)
  assert all(len(groups[g]) for g in ("many", "medium", "few"))
  assert np.all(sources.open_source("world:lt", "test").counts() == world.LT_TEST)
  # Another tail: max down to min, geometric; the test split and the images themselves are the default's.
  harder = sources.open_source("world:lt?min=1", "train")
  assert list(harder.counts()) == [200, 111, 62, 34, 19, 11, 6, 3, 2, 1]
  assert harder.id(len(harder) - 1) == "world/target/train/arrow/0" and np.array_equal(harder.read(0), lt.read(0))
  assert list(sources.open_source("world:lt?max=40&min=1", "train").counts())[:2] == [40, 27]


@pytest.mark.parametrize("spec, split, message", [
    ("world:0", "train", "world:N with N images per class"),
    ("world:x", "train", "world:N with N images per class"),
    ("world:4?domain=moon", "train", "world domain 'moon' is unknown"),
    ("world:4", "validation", "has no split 'validation'"),
    ("world:4?colour=red", "train", "unknown option 'colour'"),
    ("world:lt?min=0", "train", "world:lt takes max=M and min=N with 1 <= N <= M"),
    ("world:lt?max=3&min=5", "train", "world:lt takes max=M and min=N with 1 <= N <= M"),
    ("world:lt?max=many", "train", "world:lt takes max=M and min=N with 1 <= N <= M"),
    ("world:4?min=1", "train", "max= and min= shape world:lt's tail"),
])
def test_bad_world_specs_are_one_line(spec, split, message):
  with pytest.raises(UserError, match=message):
    sources.open_source(spec, split)


def test_fit_resumes_where_it_stopped(tmp_path):
  """The world's training loop: killed after a checkpoint and rerun, it ends exactly where one run ends."""
  target = np.linspace(-1, 1, 8).astype(np.float32)

  def loss_fn(params, batch, key, extra):
    return jnp.mean((params["w"] * batch - target) ** 2), extra

  def batch_of(step):
    return np.random.default_rng(step).uniform(0.5, 1.5, 8).astype(np.float32)

  def dies_at_25(step):
    if step == 25:
      raise KeyboardInterrupt
    return batch_of(step)

  start = {"w": jnp.zeros(8)}
  whole, loss, _, _ = demo_world.fit("toy", start, loss_fn, batch_of, 40, 0.1, tmp_path / "a", 0, 10, ema=0.9)
  with pytest.raises(KeyboardInterrupt):
    demo_world.fit("toy", start, loss_fn, dies_at_25, 40, 0.1, tmp_path / "b", 0, 10, ema=0.9)
  resumed, resumed_loss, _, seconds = demo_world.fit("toy", start, loss_fn, batch_of, 40, 0.1, tmp_path / "b", 0, 10, ema=0.9)
  assert np.array_equal(resumed["w"], whole["w"]) and resumed_loss == loss and seconds > 0
  assert loss < 0.05
  again, _, _, _ = demo_world.fit("toy", start, loss_fn, dies_at_25, 40, 0.1, tmp_path / "b", 0, 10, ema=0.9)
  assert np.array_equal(again["w"], whole["w"])  # a finished stage is not run again

  # A stage made under other settings is refused by name, finished or not, instead of being reused.
  made = {"seed": 0, "toy_lr": 0.1}
  demo_world.fit("toy", start, loss_fn, batch_of, 40, 0.1, tmp_path / "c", 0, 10, made_with=made)
  with pytest.raises(UserError, match=r"toy.ckpt was trained with other settings \(toy_lr\)"):
    demo_world.fit("toy", start, loss_fn, batch_of, 40, 0.1, tmp_path / "c", 0, 10, made_with={**made, "toy_lr": 0.2})
  assert demo_world.stage_settings(demo_world.Settings(), "unet")["drop_text"] == demo_world.Settings().drop_text
  assert "unet_lr" not in demo_world.stage_settings(demo_world.Settings(), "judge")
  # Every setting is some stage's (so that changing it retrains that stage), or one that changes no result.
  everything = demo_world.Settings(unet_pairs=True)
  claimed = set().union(*(demo_world.stage_settings(everything, stage) for stage in demo_world.STAGES))
  assert {f.name for f in dataclasses.fields(everything)} - claimed == set(demo_world.NO_STAGE)

  # A checkpoint written before a setting existed counts as made with its default (what the code did then): it
  # resumes under the default and is refused under another value.
  made = demo_world.stage_settings(demo_world.Settings(), "vae")
  with pytest.raises(KeyboardInterrupt):
    demo_world.fit("toy", start, loss_fn, dies_at_25, 40, 0.1, tmp_path / "d", 0, 10, made_with=made)
  ckpt = tmp_path / "d" / "toy.ckpt"
  stored = flax.serialization.msgpack_restore(ckpt.read_bytes())
  older = {k: v for k, v in json.loads(stored["made_with"]).items() if k != "latent_grid"}
  stored["made_with"] = json.dumps(older, sort_keys=True)
  ckpt.write_bytes(flax.serialization.msgpack_serialize(stored))
  with pytest.raises(UserError, match=r"other settings \(latent_grid\)"):
    demo_world.fit("toy", start, loss_fn, batch_of, 40, 0.1, tmp_path / "d", 0, 10,
                   made_with=demo_world.stage_settings(demo_world.Settings(latent_grid=16), "vae"))
  _, resumed_loss, _, _ = demo_world.fit("toy", start, loss_fn, batch_of, 40, 0.1, tmp_path / "d", 0, 10, made_with=made)
  assert resumed_loss < 0.05
  demo_world.fit("toy", start, loss_fn, batch_of, 40, 0.1, tmp_path / "d", 0, 10)  # no settings to compare: reused


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_in_a_stage_saves_it_where_it_is_and_the_rerun_ends_as_one_run(tmp_path, capsys, request, signum):
  """SIGTERM / SIGINT mid-stage: the loop saves at the step it is on (not the last periodic checkpoint), exits
  128 + the signal with one line naming the stage and step; the rerun ends exactly as one uninterrupted run. A
  signal between stages exits at once, naming the stage."""
  target = np.linspace(-1, 1, 8).astype(np.float32)

  def loss_fn(params, batch, key, extra):
    return jnp.mean((params["w"] * batch - target) ** 2), extra

  def batch_of(step):
    return np.random.default_rng(step).uniform(0.5, 1.5, 8).astype(np.float32)

  def signalled_at_13(step):
    if step == 13:
      os.kill(os.getpid(), signum)
    return batch_of(step)

  start = {"w": jnp.zeros(8)}
  whole, loss, _, _ = demo_world.fit("toy", start, loss_fn, batch_of, 40, 0.1, tmp_path / "a", 0, 10, ema=0.9)
  # as a terminal starts the command: the signal not ignored (this suite may have been started with SIGINT ignored)
  inherited = signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
  request.addfinalizer(lambda: signal.signal(signum, inherited))
  before = signal.getsignal(signum)
  with pytest.raises(SystemExit) as stopped, demo_world.stop_on_signals():
    demo_world.fit("toy", start, loss_fn, signalled_at_13, 40, 0.1, tmp_path / "b", 0, 10, ema=0.9)
  assert stopped.value.code == 128 + signum and signal.getsignal(signum) is before
  err = capsys.readouterr().err.strip()
  assert err == (f"demo_world: interrupted by {signal.Signals(signum).name} in the toy stage, saved at step 14 of "
                 "40: rerun the same command to continue")
  import flax
  assert flax.serialization.msgpack_restore((tmp_path / "b" / "toy.ckpt").read_bytes())["step"] == 14
  resumed, resumed_loss, _, _ = demo_world.fit("toy", start, loss_fn, batch_of, 40, 0.1, tmp_path / "b", 0, 10, ema=0.9)
  assert np.array_equal(resumed["w"], whole["w"]) and resumed_loss == loss

  with pytest.raises(SystemExit) as stopped, demo_world.stop_on_signals():
    demo_world._Stop.stage = "stats"
    os.kill(os.getpid(), signum)
  assert stopped.value.code == 128 + signum
  assert f"interrupted by {signal.Signals(signum).name} during the stats stage" in capsys.readouterr().err


def test_drawn_data_and_statistics_are_made_again_when_their_settings_change(tmp_path, capsys):
  """data.npz and stats.npz are derived, not trained: kept with the settings they were made under and made again,
  with a line saying why, when those change, instead of handing the next stages another world's arrays."""
  small = demo_world.Settings(images=20)
  data = demo_world.make_data(small, tmp_path)
  assert (len(data["images"]), int(data["broad"].sum())) == (30, 20) and capsys.readouterr().out == ""
  assert np.array_equal(demo_world.make_data(small, tmp_path)["images"], data["images"])  # from the file
  assert capsys.readouterr().out == ""
  data = demo_world.make_data(demo_world.Settings(images=40), tmp_path)
  assert int(data["broad"].sum()) == 40
  assert capsys.readouterr().out.strip() == ("demo_world: data.npz was made with other settings (images): making it "
                                             "again")

  from transformers import CLIPTokenizer
  vocab = tiny.write_tokenizer(tmp_path / "tok", world.prompt_words(), demo_world.MAX_TOKENS)
  tokenizer, cfg = CLIPTokenizer.from_pretrained(str(tmp_path / "tok")), demo_world.configs(vocab)
  settings = demo_world.Settings(images=40)

  def stats(settings, seed):
    return demo_world.compute_stats(settings, data, cfg, tiny.random_params("unclip", cfg, seed), tokenizer, tmp_path)

  first = stats(settings, 0)
  assert np.array_equal(stats(dataclasses.replace(settings, unet_lr=1.0, judge_steps=1), 1)["embeds"], first["embeds"])
  assert capsys.readouterr().out == ""  # a UNet's or the judge's settings are not the statistics'
  other = stats(dataclasses.replace(settings, clip_steps=4000), 1)  # another CLIP: other embeddings
  assert not np.array_equal(other["embeds"], first["embeds"])
  assert "stats.npz was made with other settings (clip_steps): making it again" in capsys.readouterr().out
  legacy = {k: v for k, v in np.load(tmp_path / "stats.npz").items() if k != "made_with"}
  np.savez(tmp_path / "stats.npz", **legacy)  # a work directory from before the settings were recorded
  assert np.array_equal(stats(settings, 0)["embeds"], other["embeds"]) and capsys.readouterr().out == ""


def test_train_takes_other_settings_by_name(tmp_path, capsys):
  changed = demo_world.Settings().overridden(["clip_steps=4000", "drop_text=0.5"])
  assert (changed.clip_steps, changed.drop_text, changed.vae_steps) == (4000, 0.5, demo_world.Settings().vae_steps)
  assert demo_world.stage_settings(changed, "unet")["clip_steps"] == 4000  # a UNet on another CLIP is another stage
  for bad, message in [("clip_step=3", "NAME one of seed, images"), ("clip_steps", "expected NAME=VALUE"),
                       ("clip_steps=3.5", "clip_steps takes int values"), ("drop_text=half", "takes float values"),
                       ("seed=3", "the seed is --seed=3"),
                       ("latent_grid=12", "8x8 or 16x16"), ("unet_pairs=yes", "unet_pairs takes bool values"),
                       ("unet_channels=80", "multiple of 32"), ("unet_channels=96 latent_grid=16", "multiple of 32"),
                       ("unet_channels=65 latent_grid=16", "multiple of 32")]:
    with pytest.raises(SystemExit) as stopped:
      demo_world.main(["train", f"--out={tmp_path / 'w'}", *[a for one in bad.split() for a in ("--set", one)]])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and message in err and len(err.splitlines()) == 1, err
  assert not list(tmp_path.iterdir())  # refused before anything is written


def test_shipped_world_matches_its_recorded_hashes():
  root = demo_world.WORLD_DIR
  recorded = dict(line.split("  ")[::-1] for line in (root / "SHA256SUMS").read_text().splitlines())
  files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
  assert sorted(recorded) == files
  for name in files:
    assert hashlib.sha256((root / name).read_bytes()).hexdigest() == recorded[name], name
  size = sum((root / name).stat().st_size for name in files)
  assert size < 12 * 2**20  # small enough to ship in the wheel
  record = json.loads((root / "training.json").read_text())
  defaults = json.loads(json.dumps(demo_world.Settings().__dict__))
  assert record["settings"] == {k: v for k, v in defaults.items() if k in record["settings"]}  # made with the defaults
  # Settings added since are the pairs stage's, off by default, the schedule's shift, 1 by default (SD 2.1's
  # schedule, which the shipped scheduler config has), the latent grid, 8 by default (the shipped layout), the
  # pairs in the UNet stage, off by default, and the UNet's width, 64 by default (the shipped one).
  added = {k for k in defaults if k not in record["settings"]}
  assert added <= {k for k in defaults if k.startswith("pair_")} | {"unet_snr_shift", "latent_grid", "unet_pairs",
                                                                     "unet_channels"}
  assert defaults["pair_steps"] == 0 and defaults["unet_snr_shift"] == 1.0 and defaults["latent_grid"] == 8
  assert defaults["unet_pairs"] is False and defaults["unet_channels"] == 64
  unet = json.loads((root / "unet" / "config.json").read_text())
  assert unet["sample_size"] == world.SIZE // 4 and unet["block_out_channels"] == [64, 128]
  assert json.loads((root / "scheduler" / "scheduler_config.json").read_text())["trained_betas"] is None


def test_the_snr_shift_multiplies_every_timesteps_snr_and_travels_in_the_checkpoint(tmp_path):
  """unet_snr_shift: 1 is SD 2.1's schedule itself (no trained_betas); 16 multiplies the SNR of every timestep by 16,
  in the training task and in the checkpoint's scheduler, which load() samples with."""
  assert demo_world.scheduler_config(demo_world.Settings(unet_snr_shift=1.0)) == tiny.pndm_config()
  settings = demo_world.Settings(unet_snr_shift=16.0)
  config = demo_world.scheduler_config(settings)
  sd21, shifted = (schedulers.alphas_cumprod(c).astype(np.float64) for c in (tiny.pndm_config(), config))
  ratio = (shifted / (1 - shifted)) / (sd21 / (1 - sd21))
  np.testing.assert_allclose(ratio, 16.0, rtol=1e-2)  # float32 betas: 1e-3 near t = 0, where 1 - alpha-bar ~ 5e-5
  assert np.all(np.diff(shifted) < 0)
  stats = dict(contexts=np.zeros((2, demo_world.MAX_TOKENS, 64), np.float32), norm_mean=np.zeros((1, 64), np.float32),
               norm_std=np.ones((1, 64), np.float32), scale=np.float32(1.0))
  vocab = tiny.write_tokenizer(tmp_path / "tokenizer", world.prompt_words(), demo_world.MAX_TOKENS)
  cfg = demo_world.configs(vocab)
  task = demo_world._unet_task(settings, stats, cfg)
  np.testing.assert_array_equal(np.asarray(task.alphas), shifted.astype(np.float32))
  tiny.save_checkpoint(tmp_path, "unclip", cfg, tiny.random_params("unclip", cfg, 0), np.float16, scheduler=config)
  pipe, _ = load(str(tmp_path))
  for name in ("pndm", "ddim"):  # the checkpoint's own class, and another read from the same config
    np.testing.assert_array_equal(pipe.make_scheduler(name).alphas_cumprod, shifted.astype(np.float32))


def test_the_16x16_latent_grid_is_the_same_components_with_one_level_more(tmp_path):
  """latent_grid=16: the VAE maps 32 px to 16x16 latents (factor 2), the UNet puts a 16x16 level in front of the
  shipped two, and the checkpoint loads as an ordinary one whose pipeline samples at that grid."""
  vocab = tiny.write_tokenizer(tmp_path / "tokenizer", world.prompt_words(), demo_world.MAX_TOKENS)
  eight, sixteen = demo_world.configs(vocab), demo_world.configs(vocab, 16)
  assert sixteen["unet"]["block_out_channels"][1:] == eight["unet"]["block_out_channels"]
  assert sixteen["unet"]["down_block_types"][1:] == eight["unet"]["down_block_types"]
  assert sixteen["text_encoder"] == eight["text_encoder"] and sixteen["image_encoder"] == eight["image_encoder"]
  tiny.save_checkpoint(tmp_path, "unclip", sixteen, tiny.random_params("unclip", sixteen, 0), np.float16)
  pipe, params = load(str(tmp_path))
  assert pipe.vae_factor == 2 and world.SIZE // pipe.vae_factor == 16
  images = jnp.zeros((1, 3, world.SIZE, world.SIZE))
  # jitted, as the pipeline runs them (eager, each op would compile on its own)
  latents = jax.jit(lambda p, x: pipe.vae.apply({"params": p}, x, method="encode").mean)(params["vae"], images)
  assert latents.shape == (1, 16, 16, 4)  # the posterior's moments are channels-last
  sample, t, context, vector = pipeline.unet_inputs(pipe.unet, 1, 16, 16)
  out = jax.jit(pipe.unet.apply)({"params": params["unet"]}, sample, t, context, vector)
  assert out.shape == (1, 4, 16, 16)


def test_a_wider_unet_is_the_same_levels_with_more_channels(tmp_path):
  """unet_channels: the UNet's levels keep their layout and attention, with that many channels at 8x8 (twice at
  4x4); the checkpoint loads as an ordinary one."""
  vocab = tiny.write_tokenizer(tmp_path / "tokenizer", world.prompt_words(), demo_world.MAX_TOKENS)
  shipped, wider = demo_world.configs(vocab), demo_world.configs(vocab, 8, 96)
  assert shipped["unet"]["block_out_channels"] == [64, 128] and wider["unet"]["block_out_channels"] == [96, 192]
  assert {k: v for k, v in wider["unet"].items() if k != "block_out_channels"} == \
      {k: v for k, v in shipped["unet"].items() if k != "block_out_channels"}
  assert demo_world.configs(vocab, 16, 128)["unet"]["block_out_channels"] == [64, 128, 256]
  tiny.save_checkpoint(tmp_path, "unclip", wider, tiny.random_params("unclip", wider, 0), np.float16)
  pipe, params = load(str(tmp_path))
  assert params["unet"]["conv_in"]["kernel"].shape[-1] == 96
  sample, t, context, vector = pipeline.unet_inputs(pipe.unet, 1, 8, 8)
  assert jax.jit(pipe.unet.apply)({"params": params["unet"]}, sample, t, context, vector).shape == (1, 4, 8, 8)


def test_show_refuses_what_is_not_a_world_in_one_line(tmp_path, capsys):
  (tmp_path / "file").write_text("a file, not a directory")
  for args, message in [([f"--out={tmp_path / 'o'}", f"--model={tmp_path}"], "not a world checkpoint"),
                        ([f"--out={tmp_path / 'file' / 'o'}"], "cannot write to")]:
    with pytest.raises(SystemExit) as stopped:
      demo_world.main(["show", *args])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and message in err and len(err.splitlines()) == 1, err
  assert not (tmp_path / "o").exists()


def test_the_pairs_stage_pulls_the_two_branches_together_at_low_noise(tmp_path):
  """The optional "pairs" stage (off by default: the shipped recipe has none, and --scale keeps it off): its
  consistency term shrinks the difference between the conditional and the unconditional branch on low-noise
  inputs, which the same stage with a zero weight does not."""
  assert demo_world.Settings().pair_steps == 0 and demo_world.Settings().scaled(0.01).pair_steps == 0
  assert demo_world.stage_settings(demo_world.Settings(), "pairs")["pair_consistency"] == 1.0
  assert "pair_steps" not in demo_world.stage_settings(demo_world.Settings(), "unet")
  vocab = tiny.write_tokenizer(tmp_path / "tok", world.prompt_words(), demo_world.MAX_TOKENS)
  cfg = demo_world.configs(vocab)
  rng = np.random.default_rng(0)
  n, d, width = 64, cfg["image_encoder"]["projection_dim"], cfg["text_encoder"]["hidden_size"]
  stats = dict(latent=np.concatenate([rng.normal(size=(n, 8, 8, 4)), np.full((n, 8, 8, 4), 0.1)], -1).astype(np.float32),
               embeds=rng.normal(size=(n, d)).astype(np.float32), caption_index=rng.integers(0, 4, n).astype(np.int32),
               contexts=rng.normal(size=(5, demo_world.MAX_TOKENS, width)).astype(np.float32),
               norm_mean=np.zeros((1, d), np.float32), norm_std=np.ones((1, d), np.float32), scale=np.float32(1.0))
  task = demo_world._unet_task(demo_world.Settings(), stats, cfg)
  # jitted: run eagerly, the init and the apply below compile each of their hundreds of ops on its own (20 s)
  start = jax.jit(task.unet.init)(jax.random.key(0), *pipeline.unet_inputs(task.unet, 1, 8, 8))["params"]
  probe = demo_world._unet_examples(demo_world.Settings(drop_text=0.0, drop_image=0.0), stats, task.empty, rng, 16)
  probe["t"] = np.full(16, 100, np.int32)

  @jax.jit
  def branch_gap(params):
    x_t, _, vector, _ = demo_world._noised(task, probe, jax.random.key(1))
    run = lambda text, vec: task.unet.apply({"params": params}, x_t, probe["t"], task.contexts[text], vec)
    return jnp.mean((run(probe["text"], vector) - run(np.full(16, task.empty), jnp.zeros_like(vector))) ** 2)

  gaps = {}
  for weight in (0.0, 30.0):
    settings = demo_world.Settings(unet_batch=8, pair_batch=8, pair_steps=12, pair_lr=1e-3, pair_consistency=weight,
                                   unet_ema=0.5, checkpoint_every=100)
    params, loss, _, _ = demo_world.train_pairs(settings, stats, cfg, tmp_path / f"w{weight}", start)
    assert np.isfinite(loss) and (tmp_path / f"w{weight}" / "pairs.ckpt").is_file()
    gaps[weight] = float(branch_gap(params))
  assert gaps[30.0] < 0.5 * gaps[0.0], gaps  # measured 3.2e-5 against 2.4e-4 (8.7e-2 at the start)

  # unet_pairs: the same examples and term in the UNet stage from its first step; the stage then depends on them.
  assert not demo_world.Settings().unet_pairs and "pair_below" not in demo_world.stage_settings(demo_world.Settings(), "unet")
  settings = demo_world.Settings(unet_pairs=True, unet_batch=8, pair_batch=8, pair_consistency=30.0)
  assert demo_world.stage_settings(settings, "unet")["pair_below"] == settings.pair_below
  batch_of, loss_fn = demo_world._paired(settings, stats, task, 4)
  batch = batch_of(0)
  assert len(batch["t"]) == 16 and batch["t"][8:].max() < settings.pair_below
  assert np.all(batch["keep"][8:]) and np.all(batch["text"][8:] != task.empty)  # the pairs keep their condition
  loss, _ = jax.jit(loss_fn)(start, batch, jax.random.key(2), None)
  x_t, v, vector, a = jax.jit(lambda b, k: demo_world._noised(task, b, k))(batch, jax.random.key(2))
  out = jax.jit(task.unet.apply)({"params": start}, x_t[:8], batch["t"][:8], task.contexts[batch["text"][:8]],
                                vector[:8])
  plain = demo_world._min_snr_loss(settings, out, v[:8], a[:8])
  assert float(loss) > float(plain)  # the pairs' v errors and the consistency term come on top
