"""The demo world's generator: an SD 2.1-unCLIP pipeline trained here, small enough to ship and run on a laptop.

    python -m jaxaug.models.demo_world train --out=DIR [--work=DIR] [--seed=0] [--scale=1.0] [--set NAME=VALUE ...]
    python -m jaxaug.models.demo_world show --out=DIR [--model=DIR]     # pictures: guidance, mixing (world_show.py)
    python -m jaxaug.models.demo_world measure [--model=DIR] [--guidance=3] [--seeds=0,1,2,3] [--scheduler=NAME]
        [--json=FILE]                     # what its images mean, the tests' properties as a table (world_measure.py)

trains, in order and each resumable (rerun the same command after a kill), with jaxaug's own Flax modules
and the SD 2.1-unCLIP structure:
  1. vae     an AutoencoderKL (32 px images -> 8x8x4 latents), L1 + L2 reconstruction and a small KL;
  2. clip    a CLIP text tower and image tower trained contrastively on the broad world's (image, caption)
             pairs (captions name the class and, sometimes, the colour and background);
  3. stats   the image normaliser (per-dimension mean / std of the image embeddings), the latent scaling
             factor (1 / std of the latents), each image's text context;
  4. unet    the v-prediction UNet with text cross-attention and the unCLIP projection class embedding of
             the noised image embedding, with conditioning dropout (text and image independently) for
             classifier-free guidance and for the txt2img baseline (all-zero image vector);
  5. judge   a small ResNet classifier on real world images (broad and target): tests and the demo use it to
             ask what generated images show, in a feature space independent of the generator.
The output is an ordinary diffusers-format checkpoint (DIR/model_index.json and its component folders,
fp16 safetensors) plus DIR/judge.safetensors and DIR/training.json (times, final losses, settings).
`jaxaug.models.load(DIR)` and PyTorch diffusers' StableUnCLIPImg2ImgPipeline both load it. The copy
shipped in the package (`--config.model=world`, WORLD_DIR) was made by this command with its defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import signal
import sys
import threading
import time
import types
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from jaxaug import augment, interrupt, xla_options
from jaxaug.data import world
from jaxaug.errors import UserError, exit_on_user_error
from jaxaug.models import pipeline, resnet, schedulers, sd, tiny

WORLD_DIR = tiny.WORLD_DIR  # the shipped checkpoint
MAX_TOKENS = 16  # the world's captions are short; cross-attention runs over this many tokens

TEXT = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=MAX_TOKENS, hidden_act="gelu", projection_dim=64, layer_norm_eps=1e-5)
VISION = dict(hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=3,
              image_size=world.SIZE, patch_size=8, num_channels=3, hidden_act="gelu", projection_dim=64,
              layer_norm_eps=1e-5)
VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3,
           up_block_types=["UpDecoderBlock2D"] * 3, block_out_channels=[32, 64, 64], layers_per_block=1,
           act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=world.SIZE, scaling_factor=1.0,
           force_upcast=True)
UNET = dict(sample_size=world.SIZE // 4, in_channels=4, out_channels=4,
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], block_out_channels=[64, 128], layers_per_block=1,
            attention_head_dim=[2, 4])
JUDGE_ARCH = "resnet_tiny"


@dataclasses.dataclass(frozen=True)
class Settings:
  """How much of each stage to train (the defaults made the shipped weights); `scale` multiplies all steps."""
  seed: int = 0
  images: int = 30_000  # broad-world training images (TARGET_SHARE of them in the target style)
  vae_steps: int = 700
  vae_batch: int = 24
  vae_lr: float = 1e-3
  vae_kl: float = 2e-5
  clip_steps: int = 2000
  clip_batch: int = 128
  clip_lr: float = 1e-3
  unet_steps: int = 5000
  unet_batch: int = 48
  unet_lr: float = 1e-3
  min_snr: float = 5.0
  unet_ema: float = 0.999
  # The UNet's noise schedule: SD's (scaled_linear) with every timestep's signal-to-noise ratio multiplied by this
  # (1: SD's own, the shipped weights). SD's schedule was made for 64x64 latents; on the world's 8x8 a shape is
  # 16 latent pixels, not about a thousand, so at a given timestep it is far less visible than an object is to SD,
  # and is decided late in sampling, where guidance also acts hardest. A shift > 1 (less noise at every timestep)
  # gives the small latents SD's balance back; it is written to the checkpoint as the scheduler's trained_betas.
  # Measured at 16: guidance 7 fell less (0.929 -> 0.867 over 4 seeds), guidance 1 and the image path alone
  # weaker (docs/demo-world.md), so the shipped recipe keeps SD's schedule.
  unet_snr_shift: float = 1.0
  # The latent grid (configs): 8 (the shipped world) or 16, where a star's arm is two latent pixels wide instead
  # of one, so that shapes are settled earlier in sampling than the last steps, where guidance 7 breaks them.
  # Measured at 16: guidance 7 fell less (0.921 -> 0.871 over 4 seeds), guidance 1 and the image path alone weaker
  # (docs/demo-world.md), so the shipped recipe keeps 8.
  latent_grid: int = 8
  # The UNet's width: channels of its 8x8 level (its 4x4 level has twice as many; a 16x16 level, half). 64 is
  # the shipped UNet. Measured at 96: better wherever the image path alone counts, and guidance 7 fell further
  # (0.962 -> 0.733 over 4 seeds; docs/demo-world.md), as with longer training: not capacity, so 64 stays.
  unet_channels: int = UNET["block_out_channels"][0]
  # Conditioning dropout, independently: the text (empty prompt) and the image (all-zero vector), so 5% of the
  # examples train the unconditional branch. Exclusive drops of 0.25 / 0.15 / 0.15 (text / image / both) were
  # tried for guidance 7 and the image-only path, and were worse on every measure; so were fine-tunings with
  # more unconditional and image-only examples, or with plain v loss, at guidance 7 (docs/demo-world.md).
  drop_text: float = 0.2
  drop_image: float = 0.25
  noised_share: float = 0.3  # share of UNet examples whose image embedding is noised at a random level
  # An optional last stage, "pairs" (off at 0 steps; not in the shipped weights): the UNet fine-tuned with
  # pair_batch more examples per batch at low noise (t < pair_below), each seen through both branches (its
  # condition, and the empty prompt with the all-zero vector) on the true v, plus pair_consistency x the two
  # outputs' mean squared difference. Guidance multiplies that difference in the last sampling steps, which is
  # where the shapes break at guidance 7. Measured at weight 1: guidance 7 no longer falls, but the image path
  # alone loses its class (docs/demo-world.md), so the shipped recipe does without it.
  pair_steps: int = 0
  pair_batch: int = 16
  pair_below: int = 300
  pair_lr: float = 3e-4
  pair_consistency: float = 1.0
  # The same examples and term in the UNet stage itself, from its first step, instead of a fine-tuning after it:
  # a UNet that never learns to carry the class through the last, low-noise steps (1.4x the UNet stage's time).
  # Measured: agreement rises with guidance through 7 and 10 (0.462 / 0.812 / 0.937 at 1 / 3 / 7 over 4 seeds),
  # but 0.812 at the demo's guidance 3 and a weak image path alone (docs/demo-world.md): not the shipped recipe.
  unet_pairs: bool = False
  judge_steps: int = 1200
  judge_batch: int = 64
  judge_lr: float = 3e-3
  checkpoint_every: int = 250

  def __post_init__(self):
    if self.latent_grid not in (8, 16):
      raise UserError(f"latent_grid={self.latent_grid}: the world's latents are 8x8 or 16x16")
    step = 64 if self.latent_grid == 16 else 32  # at 16 the first level has half the channels
    if self.unet_channels < step or self.unet_channels % step:
      raise UserError(f"unet_channels={self.unet_channels}: every UNet level's width must be a multiple of 32 (its "
                      "GroupNorm's groups): 32, 64, 96, ..., and 64, 128, ... at latent_grid=16 (its first level "
                      "has half)")

  def overridden(self, pairs: list[str]) -> "Settings":
    """NAME=VALUE pairs (`train --set`), each a field of these settings, cast to the field's type: a world
    trained otherwise, for trying a recipe without editing the defaults that made the shipped weights."""
    types_ = {f.name: type(getattr(self, f.name)) for f in dataclasses.fields(self)}
    changes = {}
    for pair in pairs:
      name, sep, value = pair.partition("=")
      if not sep or name not in types_:
        raise UserError(f"--set {pair}: expected NAME=VALUE with NAME one of {', '.join(types_)}")
      if name == "seed":  # one way to say it, so that `--seed=1 --set seed=2` cannot mean two things
        raise UserError(f"--set {pair}: the seed is --seed={value}")
      try:
        changes[name] = _parse_bool(value) if types_[name] is bool else types_[name](value)
      except ValueError:
        raise UserError(f"--set {pair}: {name} takes {types_[name].__name__} values") from None
    return dataclasses.replace(self, **changes)

  def scaled(self, scale: float) -> "Settings":
    steps = {f.name: max(1, int(round(getattr(self, f.name) * scale))) for f in dataclasses.fields(self)
             if f.name.endswith("_steps") and getattr(self, f.name)}  # a stage that is off stays off
    return dataclasses.replace(self, **steps)


def _parse_bool(value: str) -> bool:
  """bool("false") is True: a switch is spelled true or false (or 1 / 0)."""
  known = {"true": True, "1": True, "false": False, "0": False}
  if value.lower() not in known:
    raise ValueError(value)
  return known[value.lower()]


# ---------------------------------------------------------------------------
# Architecture and data


def configs(vocab_size: int, latent_grid: int = 8, unet_channels: int = UNET["block_out_channels"][0]) -> dict:
  """The components' configs; latent_grid 8 (the shipped world: VAE factor 4, UNet levels 8x8 and 4x4 of
  unet_channels and twice that) or 16 (VAE factor 2, and the UNet a 16x16 level of half the width in front of the
  same two levels)."""
  c = unet_channels
  if latent_grid == 8:
    return tiny.component_configs("unclip", TEXT, VISION, VAE, dict(UNET, block_out_channels=[c, 2 * c]), vocab_size)
  vae = dict(VAE, down_block_types=VAE["down_block_types"][:2], up_block_types=VAE["up_block_types"][:2],
             block_out_channels=VAE["block_out_channels"][:2])
  unet = dict(UNET, sample_size=world.SIZE // 2, down_block_types=["DownBlock2D"] + UNET["down_block_types"],
              up_block_types=UNET["up_block_types"] + ["UpBlock2D"], block_out_channels=[c // 2, c, 2 * c],
              attention_head_dim=[1, 2, 4])
  return tiny.component_configs("unclip", TEXT, VISION, vae, unet, vocab_size)


def make_data(settings: Settings, work: Path) -> dict:
  """The broad world's training images, labels and captions, drawn once and cached in work/data.npz (drawn again
  if `images` changed: every draw is a pure function of its index, so nothing else changes them)."""
  return _cached(work / "data.npz", {"images": settings.images}, lambda: _draw_data(settings))


def _draw_data(settings: Settings) -> dict:
  began = time.time()
  per_class = settings.images // len(world.CLASSES)
  source = world.WorldSource("train", per_class, domain="broad")
  target = world.WorldSource("train", max(1, per_class // 10), domain="target")
  images, captions, full = [], [], []
  for src in (source, target):  # the judge also sees target images; the generator uses the broad ones only
    for i in tqdm(range(len(src)), desc=f"drawing the {src.domain} world", leave=False, mininterval=2):
      image, caption, description = src.draw(i)
      images.append(image)
      captions.append(caption)
      full.append(description)
  data = dict(images=np.stack(images), labels=np.concatenate([source.labels, target.labels]),
              captions=np.asarray(captions), descriptions=np.asarray(full),
              broad=np.arange(len(images)) < len(source))
  data["seconds"] = np.float64(time.time() - began)
  return data


def _cached(path: Path, made_with: dict, make) -> dict:
  """Arrays derived from earlier results (the drawn data, the statistics), kept in `path` with the settings they
  were made under, and made again, with a line saying why, when those settings changed: reusing them would
  silently train the next stages on another world's latents or embeddings. (A file from before the settings were
  recorded is taken as it is.)"""
  if path.is_file():
    with np.load(path) as f:
      found = {k: f[k] for k in f.files}
    was = found.pop("made_with", None)
    changed = [] if was is None else _changed(json.loads(str(was)), made_with)
    if not changed:
      return found
    print(f"demo_world: {path.name} was made with other settings ({', '.join(changed)}): making it again", flush=True)
  made = make()
  _atomic(path, lambda f: np.savez(f, **made, made_with=np.asarray(json.dumps(made_with, sort_keys=True))))
  return made


def _changed(was: dict, made_with: dict) -> list[str]:
  """The settings in which a stored result's record differs from this run's; a setting added since the record was
  written counts as its default (what the code did before it existed)."""
  was = {**{k: v for k, v in dataclasses.asdict(Settings()).items() if k in made_with}, **was}
  return sorted(k for k in set(made_with) | set(was) if was.get(k) != made_with.get(k))


class _Stop:
  """SIGINT / SIGTERM during `train`. Inside a stage's step loop (`fit`) the signal is noted and the loop saves
  its state at the step it is on, then exits; anywhere else (drawing the data, the statistics, writing the
  checkpoint) it exits at once, since those write their results atomically. Either way: one line, 128 + the
  signal's number, and rerunning the same command continues. A second signal exits at once."""

  stage = "starting"
  signum: int | None = None
  in_loop = False

  @classmethod
  def handle(cls, signum, frame):
    if cls.in_loop and cls.signum is None:
      cls.signum = signum  # the loop saves and exits after this step
      return
    cls.exit(signum, f"during the {cls.stage} stage; every finished stage is kept")

  @staticmethod
  def exit(signum: int, where: str):
    print(f"\ndemo_world: interrupted by {signal.Signals(signum).name} {where}: rerun the same command to "
          "continue", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def stop_on_signals():
  """`_Stop`'s handling for SIGINT and SIGTERM while the block runs (main thread only), then the previous; a signal
  the process was started with ignored stays ignored (`interrupt.handled`)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  saved = {s: signal.signal(s, _Stop.handle) for s in interrupt.handled()}
  _Stop.signum, _Stop.in_loop = None, False
  try:
    yield
  finally:
    for s, handler in saved.items():
      signal.signal(s, handler)
    _Stop.signum = None


def _atomic(path: Path, write):
  tmp = path.with_name(f".{path.name}.tmp")
  with open(tmp, "wb") as f:
    write(f)
  tmp.replace(path)


def _to_unit(images: np.ndarray) -> np.ndarray:
  return images.astype(np.float32) / 255.0


def _clip_pixels(images):
  mean, std = jnp.asarray(tiny.CLIP_MEAN), jnp.asarray(tiny.CLIP_STD)
  return (images - mean) / std


# ---------------------------------------------------------------------------
# One training loop for every stage: deterministic batches, checkpoints, progress


def fit(stage: str, params, loss_fn, batch_of, steps: int, lr: float, work: Path, seed: int,
        checkpoint_every: int, ema: float | None = None, state_extra=None, made_with: dict | None = None):
  """Adam with warmup and cosine decay on `loss_fn(params, batch, key, extra) -> (loss, extra)`; resumable.

  `batch_of(step)` returns the step's batch (numpy, deterministic in the step). Returns (params or their
  EMA, final loss averaged over the last 10% of steps, extra state, training seconds summed over resumes).
  `made_with` (the settings the stage depends on) is stored in its checkpoint: a resume under other
  settings is refused by name instead of silently finishing, or reusing, a stage trained otherwise.
  """
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, min(200, steps // 10)), steps, lr * 0.05)
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
  state = dict(params=params, opt=opt.init(params), ema=params if ema else None, extra=state_extra,
               losses=np.zeros(steps, np.float32), step=0, seconds=0.0)
  work.mkdir(parents=True, exist_ok=True)
  path = work / f"{stage}.ckpt"
  if path.is_file():
    stored = flax.serialization.msgpack_restore(path.read_bytes())
    stored.setdefault("seconds", 0.0)
    was = stored.pop("made_with", None)
    changed = _changed(json.loads(was), made_with) if was is not None and made_with is not None else []
    if changed:
      raise UserError(f"{path} was trained with other settings ({', '.join(changed)}): rerun with the settings it "
                      "was made with to resume, or remove it to train that stage again")
    state = flax.serialization.from_state_dict(state, stored)
    if int(state["step"]) >= steps:
      out = state["ema"] if ema else state["params"]
      return out, _tail(state["losses"]), state["extra"], float(state["seconds"])

  @jax.jit
  def train_step(params, opt_state, ema_params, extra, batch, key, step):
    (loss, extra), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key, extra)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if ema:
      decay = jnp.minimum(ema, (1.0 + step) / (10.0 + step))
      ema_params = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema_params, params)
    return params, opt_state, ema_params, extra, loss

  p, o, e, x = state["params"], state["opt"], state["ema"], state["extra"]
  losses = np.asarray(state["losses"]).copy()
  start, seconds, began = int(state["step"]), float(state["seconds"]), time.time()
  bar = tqdm(range(start, steps), desc=f"{stage:>5}", initial=start, total=steps, mininterval=5, file=sys.stdout)
  _Stop.stage, _Stop.in_loop = stage, True
  try:
    for step in bar:
      key = jax.random.fold_in(jax.random.key(seed), step)
      p, o, e, x, loss = train_step(p, o, e, x, batch_of(step), key, step)
      losses[step] = float(loss)
      if step % 50 == 0:
        bar.set_postfix(loss=f"{losses[max(0, step - 49):step + 1].mean():.4f}")
      stopped = _Stop.signum is not None
      if (step + 1) % checkpoint_every == 0 or step + 1 == steps or stopped:
        _save(path, p, o, e, x, losses, step + 1, seconds + time.time() - began, made_with)
      if stopped:
        bar.close()
        _Stop.exit(_Stop.signum, f"in the {stage} stage, saved at step {step + 1} of {steps}")
  finally:
    _Stop.in_loop = False
  return (e if ema else p), _tail(losses), x, seconds + time.time() - began


def _save(path: Path, p, o, e, x, losses, step: int, spent: float, made_with: dict | None):
  """A stage's resumable state after `step` steps, atomically."""
  record = dict(params=p, opt=o, ema=e, extra=x, losses=losses, step=step, seconds=spent)
  if made_with is not None:
    record["made_with"] = json.dumps(made_with, sort_keys=True)
  blob = flax.serialization.to_bytes(record)
  _atomic(path, lambda f: f.write(blob))


def _tail(losses) -> float:
  losses = np.asarray(losses)
  return float(losses[-max(1, len(losses) // 10):].mean())


STAGES = ("vae", "clip", "stats", "judge", "unet", "pairs")
NO_STAGE = ("checkpoint_every",)  # settings no stage's result depends on (how often it is saved)


def stage_settings(settings: Settings, stage: str) -> dict:
  """The settings a stage's result depends on (its own fields, the data's, and for the UNet its inputs'), found
  by name prefix: a new setting must start with its stage's prefix or be in NO_STAGE (a test checks)."""
  vae, clip = ("vae_", "latent_grid"), ("clip_",)
  unet = vae + clip + ("unet_", "drop_", "min_snr", "noised_share")
  if settings.unet_pairs:
    unet += ("pair_batch", "pair_below", "pair_consistency")
  own = {"vae": vae, "clip": clip, "stats": vae + clip, "judge": ("judge_",), "unet": unet,
         "pairs": unet + ("pair_",)}[stage]
  return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
          if f.name in ("seed", "images") or f.name.startswith(own)}


def _rng(settings: Settings, stage: int, step: int) -> np.random.Generator:
  return np.random.default_rng([settings.seed, stage, step])


# ---------------------------------------------------------------------------
# Stages


def train_vae(settings: Settings, data: dict, cfg: dict, work: Path):
  vae = pipeline.vae_module(cfg["vae"], jnp.float32, "world/vae")
  params = vae.init(jax.random.key(settings.seed), jnp.zeros((1, 3, world.SIZE, world.SIZE)))["params"]
  images = data["images"][data["broad"]]

  def batch_of(step):
    idx = _rng(settings, 1, step).integers(0, len(images), settings.vae_batch)
    return np.transpose(_to_unit(images[idx]) * 2 - 1, (0, 3, 1, 2))

  def loss_fn(params, x, key, extra):
    post = vae.apply({"params": params}, x, method="encode")
    z = post.sample(key)
    out = vae.apply({"params": params}, jnp.transpose(z, (0, 3, 1, 2)), method="decode")
    rec = jnp.mean(jnp.abs(out - x)) + jnp.mean((out - x) ** 2)
    kl = 0.5 * jnp.mean(jnp.sum(post.mean ** 2 + jnp.exp(post.logvar) - 1 - post.logvar, axis=(1, 2, 3)))
    return rec + settings.vae_kl * kl, extra

  return fit("vae", params, loss_fn, batch_of, settings.vae_steps, settings.vae_lr, work, settings.seed,
             settings.checkpoint_every, made_with=stage_settings(settings, "vae"))


def tokenize(tokenizer, captions) -> np.ndarray:
  return tokenizer(list(captions), padding="max_length", max_length=MAX_TOKENS, truncation=True,
                   return_tensors="np").input_ids.astype(np.int32)


def train_clip(settings: Settings, data: dict, cfg: dict, tokenizer, work: Path):
  text = pipeline.text_module(cfg["text_encoder"], jnp.float32)
  image = pipeline.image_module(cfg["image_encoder"], jnp.float32)
  dim = TEXT["projection_dim"]
  k1, k2, k3 = jax.random.split(jax.random.key(settings.seed + 1), 3)
  params = {"text_encoder": text.init(k1, jnp.zeros((1, MAX_TOKENS), jnp.int32))["params"],
            "image_encoder": image.init(k2, jnp.zeros((1, world.SIZE, world.SIZE, 3)))["params"],
            "text_projection": nn_dense_init(k3, TEXT["hidden_size"], dim),
            "logit_scale": jnp.asarray(np.log(1 / 0.07), jnp.float32)}
  # A 2-D sine-cosine start for the patch positions: a ViT this small learns where things are far sooner.
  embeddings = params["image_encoder"]["vision_model"]["embeddings"]
  embeddings["position_embedding"]["embedding"] = jnp.asarray(_sincos_positions(
      world.SIZE // VISION["patch_size"], VISION["hidden_size"]))
  mask = data["broad"]
  images, ids = data["images"][mask], tokenize(tokenizer, data["captions"][mask])
  said = np.asarray([world.attributes(c) for c in data["captions"][mask]])
  true = np.asarray([world.attributes(c) for c in data["descriptions"][mask]])

  def batch_of(step):
    idx = _rng(settings, 2, step).integers(0, len(images), settings.clip_batch)
    # Image i and caption j match when the caption names nothing untrue of the image: "a photo of a star"
    # fits every star, so the world's many partial captions are positives, not false negatives.
    s, t = said[idx][None], true[idx][:, None]
    match = np.all((s == t) | (s == -1), axis=-1).astype(np.float32)
    return _to_unit(images[idx]), ids[idx], match

  def loss_fn(params, batch, key, extra):
    pixels, tokens, match = batch
    img = image.apply({"params": params["image_encoder"]}, _clip_pixels(pixels))
    hidden = text.apply({"params": params["text_encoder"]}, tokens)
    pooled = hidden[jnp.arange(hidden.shape[0]), jnp.argmax(tokens, axis=-1)]  # the end token (largest id)
    txt = pooled @ params["text_projection"]
    img, txt = (v / jnp.linalg.norm(v, axis=-1, keepdims=True) for v in (img, txt))
    logits = jnp.exp(jnp.minimum(params["logit_scale"], np.log(100.0))) * img @ txt.T
    loss = 0.5 * (optax.softmax_cross_entropy(logits, match / match.sum(1, keepdims=True)).mean()
                  + optax.softmax_cross_entropy(logits.T, (match / match.sum(0, keepdims=True)).T).mean())
    return loss, extra

  return fit("clip", params, loss_fn, batch_of, settings.clip_steps, settings.clip_lr, work, settings.seed + 1,
             settings.checkpoint_every, made_with=stage_settings(settings, "clip"))


def _sincos_positions(side: int, dim: int) -> np.ndarray:
  """(1 + side * side, dim): zeros for the class token, then 2-D sine-cosine codes of the patch grid."""
  quarter = dim // 4
  freqs = 1.0 / 10000 ** (np.arange(quarter) / quarter)
  y, x = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
  codes = [f(c.reshape(-1, 1) * freqs) for c in (x, y) for f in (np.sin, np.cos)]
  grid = np.concatenate(codes, axis=1)
  out = np.zeros((1 + side * side, dim), np.float32)
  out[1:, :grid.shape[1]] = grid
  return out


def nn_dense_init(key, fan_in: int, fan_out: int):
  return jax.random.normal(key, (fan_in, fan_out)) / np.sqrt(fan_in)


def _batched(fn, arrays, batch: int = 512):
  out = [np.asarray(fn(*(a[i:i + batch] for a in arrays))) for i in range(0, len(arrays[0]), batch)]
  return np.concatenate(out)


def compute_stats(settings: Settings, data: dict, cfg: dict, params: dict, tokenizer, work: Path) -> dict:
  """Normaliser, latent scale, and the UNet stage's inputs (latent moments, embeddings, text contexts), cached in
  work/stats.npz and computed again when the VAE's or CLIP's settings changed."""
  return _cached(work / "stats.npz", stage_settings(settings, "stats"),
                 lambda: _compute_stats(data, cfg, params, tokenizer))


def _compute_stats(data: dict, cfg: dict, params: dict, tokenizer) -> dict:
  began = time.time()
  vae = pipeline.vae_module(cfg["vae"], jnp.float32, "world/vae")
  image = pipeline.image_module(cfg["image_encoder"], jnp.float32)
  text = pipeline.text_module(cfg["text_encoder"], jnp.float32)
  images = data["images"][data["broad"]]
  captions = data["captions"][data["broad"]]

  @jax.jit
  def moments(x):
    post = vae.apply({"params": params["vae"]}, jnp.transpose(_to_unit_j(x) * 2 - 1, (0, 3, 1, 2)), method="encode")
    return jnp.concatenate([post.mean, jnp.exp(0.5 * post.logvar)], axis=-1)

  @jax.jit
  def embed(x):
    return image.apply({"params": params["image_encoder"]}, _clip_pixels(_to_unit_j(x)))

  latent = _batched(moments, (images,))
  embeds = _batched(embed, (images,))
  unique, caption_index = np.unique(captions, return_inverse=True)
  unique = np.concatenate([unique, [""]])  # the last row: the empty prompt (dropped text)
  contexts = _batched(jax.jit(lambda t: text.apply({"params": params["text_encoder"]}, t)),
                      (tokenize(tokenizer, unique),))
  mean_latent = latent[..., :4]
  stats = dict(latent=latent.astype(np.float32), embeds=embeds.astype(np.float32),
               caption_index=caption_index.astype(np.int32), contexts=contexts.astype(np.float32),
               norm_mean=embeds.mean(0, keepdims=True).astype(np.float32),
               norm_std=embeds.std(0, keepdims=True).astype(np.float32),
               scale=np.float32(1.0 / mean_latent.std()), seconds=np.float64(time.time() - began))
  return stats


def _to_unit_j(x):
  return x.astype(jnp.float32) / 255.0


def scheduler_config(settings: Settings) -> dict:
  """The UNet's scheduler (diffusers' PNDMScheduler config): SD 2.1's, with its SNR shifted by unet_snr_shift."""
  config = tiny.pndm_config()
  if settings.unet_snr_shift != 1.0:
    bar = schedulers.alphas_cumprod(config).astype(np.float64)
    shifted = settings.unet_snr_shift * bar / (1 - bar)
    bar = shifted / (1 + shifted)
    betas = 1 - bar / np.concatenate([[1.0], bar[:-1]])
    config["trained_betas"] = [float(b) for b in betas.astype(np.float32)]
  return config


def _unet_task(settings: Settings, stats: dict, cfg: dict) -> types.SimpleNamespace:
  """What the UNet stages share: the module, the noise schedules, and the stats as device arrays."""
  return types.SimpleNamespace(
      unet=pipeline.unet_module(cfg["unet"], jnp.float32, "world/unet"),
      alphas=jnp.asarray(schedulers.alphas_cumprod(scheduler_config(settings))),
      noising=types.SimpleNamespace(noising_alphas_cumprod=schedulers.alphas_cumprod(tiny.NOISING_SCHEDULER)),
      normalizer={"image_normalizer": {"mean": jnp.asarray(stats["norm_mean"]), "std": jnp.asarray(stats["norm_std"])}},
      contexts=jnp.asarray(stats["contexts"]), empty=len(stats["contexts"]) - 1, scale=float(stats["scale"]))


def _unet_examples(settings: Settings, stats: dict, empty: int, rng: np.random.Generator, b: int) -> dict:
  """b training examples: latents, conditions dropped independently (text, image), noise levels, timesteps."""
  idx = rng.integers(0, len(stats["latent"]), b)
  text_row = np.where(rng.uniform(size=b) < settings.drop_text, empty, stats["caption_index"][idx])
  keep_image = rng.uniform(size=b) >= settings.drop_image
  level = np.where(rng.uniform(size=b) < settings.noised_share, rng.integers(0, 1000, b), 0)
  return dict(latent=stats["latent"][idx], embeds=stats["embeds"][idx], text=text_row.astype(np.int32),
              keep=keep_image, level=level.astype(np.int32), t=rng.integers(0, 1000, b).astype(np.int32))


def _noised(task, batch: dict, key):
  """(x_t, the v target, the unCLIP vector or zeros where the image is dropped, alpha-bar per example)."""
  k_lat, k_noise, k_img = jax.random.split(key, 3)
  mean, std = batch["latent"][..., :4], batch["latent"][..., 4:]
  z = (mean + std * jax.random.normal(k_lat, mean.shape)) * task.scale
  z = jnp.transpose(z, (0, 3, 1, 2))
  noise = jax.random.normal(k_noise, z.shape)
  a = task.alphas[batch["t"]][:, None, None, None]
  x_t = jnp.sqrt(a) * z + jnp.sqrt(1 - a) * noise
  v = jnp.sqrt(a) * noise - jnp.sqrt(1 - a) * z
  vector = sd.image_condition(task.noising, task.normalizer, batch["embeds"], batch["level"],
                              jax.random.normal(k_img, batch["embeds"].shape))
  vector = jnp.where(batch["keep"][:, None], vector, 0.0)
  return x_t, v, vector, a[:, 0, 0, 0]


def _min_snr_loss(settings: Settings, out, v, a):
  # Min-SNR-gamma weighting (Hang et al. 2023) in its v-prediction form: no timestep dominates, so the
  # small budget goes further.
  snr = a / (1 - a)
  weight = jnp.minimum(snr, settings.min_snr) / (snr + 1)
  return jnp.mean(weight * jnp.mean((out - v) ** 2, axis=(1, 2, 3)))


def train_unet(settings: Settings, stats: dict, cfg: dict, work: Path):
  task = _unet_task(settings, stats, cfg)
  params = task.unet.init(jax.random.key(settings.seed + 2), *pipeline.unet_inputs(task.unet, 1, settings.latent_grid,
                                                                                   settings.latent_grid))["params"]
  if settings.unet_pairs:  # the pairs' examples and consistency term from the first step (see Settings)
    batch_of, loss_fn = _paired(settings, stats, task, 4)
  else:
    def batch_of(step):
      return _unet_examples(settings, stats, task.empty, _rng(settings, 4, step), settings.unet_batch)

    def loss_fn(params, batch, key, extra):
      x_t, v, vector, a = _noised(task, batch, key)
      out = task.unet.apply({"params": params}, x_t, batch["t"], task.contexts[batch["text"]], vector)
      return _min_snr_loss(settings, out, v, a), extra

  return fit("unet", params, loss_fn, batch_of, settings.unet_steps, settings.unet_lr, work, settings.seed + 2,
             settings.checkpoint_every, ema=settings.unet_ema, made_with=stage_settings(settings, "unet"))


def train_pairs(settings: Settings, stats: dict, cfg: dict, work: Path, unet_params):
  """The optional "pairs" stage (see Settings): the UNet stage's batches plus pair_batch low-noise examples through
  both branches, with the consistency term on their two outputs."""
  batch_of, loss_fn = _paired(settings, stats, _unet_task(settings, stats, cfg), 6)
  return fit("pairs", unet_params, loss_fn, batch_of, settings.pair_steps, settings.pair_lr, work, settings.seed + 7,
             settings.checkpoint_every, ema=settings.unet_ema, made_with=stage_settings(settings, "pairs"))


def _paired(settings: Settings, stats: dict, task, rng_stage: int):
  """(batch_of, loss_fn) of the UNet's batches plus pair_batch low-noise examples (t < pair_below) through both
  branches, on the true v, with pair_consistency x the two outputs' mean squared difference."""
  b, p = settings.unet_batch, settings.pair_batch

  def batch_of(step):
    rng = _rng(settings, rng_stage, step)
    main = _unet_examples(settings, stats, task.empty, rng, b)
    paired = _unet_examples(dataclasses.replace(settings, drop_text=0.0, drop_image=0.0), stats, task.empty, rng, p)
    paired["t"] = rng.integers(0, settings.pair_below, p).astype(np.int32)
    return {k: np.concatenate([main[k], paired[k]]) for k in main}

  def loss_fn(params, batch, key, extra):
    x_t, v, vector, a = _noised(task, batch, key)
    text = jnp.concatenate([batch["text"], jnp.full((p,), task.empty, jnp.int32)])
    out = task.unet.apply({"params": params}, jnp.concatenate([x_t, x_t[b:]]), jnp.concatenate([batch["t"], batch["t"][b:]]),
                          task.contexts[text], jnp.concatenate([vector, jnp.zeros_like(vector[b:])]))
    cond, uncond = out[b:b + p], out[b + p:]
    paired = jnp.mean((cond - v[b:]) ** 2) + jnp.mean((uncond - v[b:]) ** 2)  # plain v: min-SNR would mute them
    consistency = jnp.mean((cond - uncond) ** 2)
    return _min_snr_loss(settings, out[:b], v[:b], a[:b]) + p / b * (paired + settings.pair_consistency * consistency), extra

  return batch_of, loss_fn


def judge_module(num_classes: int = len(world.CLASSES)):
  return resnet.create(JUDGE_ARCH, num_classes)


def train_judge(settings: Settings, data: dict, work: Path):
  model = judge_module()
  variables = model.init(jax.random.key(settings.seed + 3), jnp.zeros((1, world.SIZE, world.SIZE, 3)), train=False)
  images, labels = data["images"], data["labels"]

  def batch_of(step):
    idx = _rng(settings, 5, step).integers(0, len(images), settings.judge_batch)
    return _to_unit(images[idx]), labels[idx]

  def loss_fn(params, batch, key, stats):
    x, y = batch
    x = judge_augment(key, x)
    logits, new = model.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new["batch_stats"]

  return fit("judge", variables["params"], loss_fn, batch_of, settings.judge_steps, settings.judge_lr, work,
             settings.seed + 3, settings.checkpoint_every, state_extra=variables["batch_stats"],
             made_with=stage_settings(settings, "judge"))


def _blur(image, sigma):
  """Separable Gaussian blur of one HWC image (5 taps, edge-padded)."""
  taps = jnp.exp(-0.5 * (jnp.arange(-2, 3) / jnp.maximum(sigma, 1e-3)) ** 2)
  taps = taps / taps.sum()
  padded = jnp.pad(image, ((2, 2), (2, 2), (0, 0)), mode="edge")
  h = sum(taps[i] * padded[i:i + image.shape[0]] for i in range(5))
  return sum(taps[i] * h[:, i:i + image.shape[1]] for i in range(5))


def judge_augment(key, images):
  """What makes the judge see shapes, not pixels: random blur, colour jitter and noise on the real images.

  Without it the judge, trained to a near-zero loss on clean drawings, keys on exact edge profiles and
  labels a VAE round trip of a real image (the best any generator with this decoder can do) near chance.
  """
  k_sigma, k_jitter, k_noise, k_amount = jax.random.split(key, 4)
  n = images.shape[0]
  sigmas = jax.random.uniform(k_sigma, (n,), minval=0.0, maxval=1.5)
  x = jax.vmap(_blur)(images, sigmas)
  x = augment.color_jitter(jax.random.split(k_jitter, n), x)
  amount = jax.random.uniform(k_amount, (n, 1, 1, 1), maxval=0.08)
  return jnp.clip(x + amount * jax.random.normal(k_noise, x.shape), 0.0, 1.0)


# ---------------------------------------------------------------------------
# The judge: load and apply


def _flat(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    name = f"{prefix}{k}"
    out.update(_flat(v, name + "/") if isinstance(v, dict) else {name: np.asarray(v, np.float32)})
  return out


def _unflat(flat: dict) -> dict:
  tree: dict = {}
  for name, value in flat.items():
    *path, leaf = name.split("/")
    node = tree
    for p in path:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def save_judge(path: Path, params, batch_stats):
  flat = {f"params/{k}": v for k, v in _flat(flax.core.unfreeze(params)).items()}
  flat.update({f"batch_stats/{k}": v for k, v in _flat(flax.core.unfreeze(batch_stats)).items()})
  # One metadata key: safetensors writes several in hash order, which changes from run to run, and the
  # shipped file's bytes (its SHA256SUMS line) must not.
  save_file(flat, str(path), metadata={"judge": json.dumps({"arch": JUDGE_ARCH, "classes": world.CLASSES})})


@dataclasses.dataclass(frozen=True, eq=False)
class Judge:
  """The world's reference classifier: labels and penultimate features of uint8 world images."""
  model: resnet.ResNet
  variables: dict

  @classmethod
  def load(cls, root: str | Path = WORLD_DIR) -> "Judge":
    tree = _unflat(load_file(str(Path(root) / "judge.safetensors")))
    return cls(judge_module(), {"params": tree["params"], "batch_stats": tree["batch_stats"]})

  def _pixels(self, images):
    images = np.asarray(images)
    if images.shape[1:3] != (world.SIZE, world.SIZE):
      from PIL import Image
      images = np.stack([np.asarray(Image.fromarray(im).resize((world.SIZE, world.SIZE), Image.BICUBIC))
                         for im in images])
    return jnp.asarray(_to_unit(images))

  def logits(self, images) -> np.ndarray:
    return np.asarray(_judge_apply(self.variables, self._pixels(images))[0])

  def predict(self, images) -> np.ndarray:
    return self.logits(images).argmax(-1)

  def features(self, images) -> np.ndarray:
    """The penultimate layer (global-average-pooled), for Fréchet distances independent of the generator."""
    return np.asarray(_judge_apply(self.variables, self._pixels(images))[1])


@jax.jit
def _judge_apply(variables, x):
  """(logits, the head's input features) of the judge."""
  feats = {}

  def grab(next_fun, args, kwargs, context):
    if context.module.name == "fc":
      feats["x"] = args[0]
    return next_fun(*args, **kwargs)

  with flax.linen.intercept_methods(grab):
    logits = judge_module().apply(variables, x, train=False)
  return logits, feats["x"]


def write_random(out: str | Path, seed: int = 0, like: str | Path = WORLD_DIR) -> Path:
  """The world's architecture and tokenizer with random weights: the yardstick that the semantic tests of the
  trained world must fail on (tests/test_demo_world.py)."""
  out = Path(out)
  shutil.copytree(Path(like) / "tokenizer", out / "tokenizer")
  vocab = len(json.loads((out / "tokenizer" / "vocab.json").read_text()))
  cfg = configs(vocab)
  tiny.save_checkpoint(out, "unclip", cfg, tiny.random_params("unclip", cfg, seed), np.float32)
  return out


# ---------------------------------------------------------------------------
# The command


def train(out: str | Path, work: str | Path | None = None, settings: Settings = Settings()) -> Path:
  """Trains the whole world (resumable from `work`) and writes the checkpoint to `out`."""
  with stop_on_signals():
    return _train(Path(out), work, settings)


def _train(out: Path, work: str | Path | None, settings: Settings) -> Path:
  work = Path(work) if work else out.with_name(out.name + ".work")
  work.mkdir(parents=True, exist_ok=True)
  start = time.time()
  times, losses = {}, {}
  log = lambda msg: print(f"demo_world: {msg}", flush=True)  # noqa: E731
  tok_dir = work / "tokenizer"
  vocab = tiny.write_tokenizer(tok_dir, world.prompt_words(), MAX_TOKENS)
  from transformers import CLIPTokenizer
  tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
  cfg = configs(vocab, settings.latent_grid, settings.unet_channels)

  _Stop.stage = "data"
  data = make_data(settings, work)
  times["data"] = float(data["seconds"])
  log(f"{int(data['broad'].sum())} broad-world images ({int((~data['broad']).sum())} more target-domain ones "
      f"for the judge) drawn in {times['data']:.0f} s")

  def stage(name, train_fn, *args):
    _Stop.stage = name
    params_, losses[name], extra, times[name] = train_fn(*args)
    log(f"{name} done: {times[name]:.0f} s of training, final loss {losses[name]:.4f}")
    return params_, extra

  vae_params, _ = stage("vae", train_vae, settings, data, cfg, work)
  clip, _ = stage("clip", train_clip, settings, data, cfg, tokenizer, work)
  params = {"vae": vae_params, "text_encoder": clip["text_encoder"], "image_encoder": clip["image_encoder"]}
  _Stop.stage = "stats"
  stats = compute_stats(settings, data, cfg, params, tokenizer, work)
  times["stats"] = float(stats["seconds"])
  params["unet"], _ = stage("unet", train_unet, settings, stats, cfg, work)
  if settings.pair_steps:
    params["unet"], _ = stage("pairs", train_pairs, settings, stats, cfg, work, params["unet"])
  params["image_normalizer"] = {"mean": stats["norm_mean"], "std": stats["norm_std"]}
  judge_params, judge_stats = stage("judge", train_judge, settings, data, work)

  _Stop.stage = "writing"
  tmp = out.with_name(f".{out.name}.tmp")
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(tok_dir, tmp / "tokenizer")
  cfg["vae"]["scaling_factor"] = float(stats["scale"])
  tiny.save_checkpoint(tmp, "unclip", cfg, jax.tree.map(np.asarray, params), np.float16,
                       scheduler=scheduler_config(settings))
  save_judge(tmp / "judge.safetensors", judge_params, judge_stats)
  times = {k: round(v, 1) for k, v in times.items()}
  record = dict(settings=dataclasses.asdict(settings), seconds=times, total_seconds=round(sum(times.values()), 1),
                final_losses={k: round(v, 5) for k, v in losses.items()}, latent_scale=float(stats["scale"]),
                jax=jax.__version__, device=jax.devices()[0].device_kind,
                host_cpu=xla_options.host_cpu())
  (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
  write_sums(tmp)
  shutil.rmtree(out, ignore_errors=True)
  tmp.rename(out)
  log(f"wrote {out}: {record['total_seconds']:.0f} s in all (this invocation {time.time() - start:.0f} s); "
      f"final losses {record['final_losses']}")
  return out


def write_sums(root: Path) -> None:
  """root/SHA256SUMS over every file (`sha256sum -c` format): what the shipped copy is pinned to."""
  import hashlib

  files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
  lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root)}" for p in files]
  (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def _measure(args) -> None:
  """`measure`: the report over the seeds, printed as a table (and written as JSON with --json)."""
  from jaxaug.models import load, world_measure, world_show
  from jaxaug.sampler import SamplerSpec

  try:
    seeds = tuple(int(s) for s in args.seeds.split(","))
  except ValueError:
    raise UserError(f"--seeds={args.seeds}: give noise seeds as integers, e.g. --seeds=0,1,2,3") from None
  if args.guidance < 1:
    raise UserError(f"--guidance={args.guidance:g}: the operating guidance must be at least 1 (1: one branch)")
  if args.json and not Path(args.json).resolve().parent.is_dir():  # found now, not after minutes of measuring
    raise UserError(f"--json={args.json}: no directory {Path(args.json).resolve().parent} to write it to")
  model = load(args.model)
  SamplerSpec("unclip", args.scheduler, world_show.STEPS, args.guidance).check(model[0])
  scheduler = args.scheduler or "the checkpoint's"
  print(f"world measure: {args.model}, guidance {args.guidance:g}, scheduler {scheduler}, {world_show.STEPS} steps, "
        f"seeds {', '.join(map(str, seeds))}", flush=True)
  start = time.time()
  probe = world_measure.Probe(model, Judge.load(), guidance=args.guidance, scheduler=args.scheduler, verbose=True)
  rows = world_measure.report(probe, seeds)
  print(world_measure.table(rows, seeds))
  if args.json:
    record = {"model": str(args.model), "guidance": args.guidance, "scheduler": args.scheduler,
              "steps": world_show.STEPS, "seeds": list(seeds), "seconds": round(time.time() - start, 1),
              "rows": [dataclasses.asdict(r) for r in rows]}
    _atomic(Path(args.json), lambda f: f.write((json.dumps(record, indent=1) + "\n").encode()))
    print(f"world measure: wrote {args.json}")


@exit_on_user_error
def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m jaxaug.models.demo_world", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  t = sub.add_parser("train", help="train the whole world (resumable: rerun the same command)")
  t.add_argument("--out", required=True, help="checkpoint directory to write")
  t.add_argument("--work", default=None, help="resumable training state (default: OUT.work beside OUT)")
  t.add_argument("--seed", type=int, default=0)
  t.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps (e.g. 0.01 for a smoke run)")
  t.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                 help="change one training setting (repeatable), e.g. --set clip_steps=4000; kept in training.json")
  s = sub.add_parser("show", help="draw what the generator does with guidance and with two classes mixed")
  s.add_argument("--out", required=True, help="directory to write guidance.png and mixing.png to")
  s.add_argument("--model", default=str(WORLD_DIR),
                 help="a world checkpoint (default: the shipped one); the shipped judge reads every world's images")
  m = sub.add_parser("measure", help="measure what a world's images mean (the tests' properties), over noise seeds")
  m.add_argument("--model", default=str(WORLD_DIR), help="a world checkpoint (default: the shipped one)")
  m.add_argument("--guidance", type=float, default=3.0,
                 help="the operating guidance of every property but the guidance one (1, 3, 7); default 3, the demo's")
  m.add_argument("--seeds", default="0", help="noise seeds, comma-separated (0: the tests' own); e.g. 0,1,2,3")
  m.add_argument("--scheduler", default=None, help="pndm, ddim or dpm++ (default: the checkpoint's, PNDM), 20 steps")
  m.add_argument("--json", default=None, help="also write the report to this file")
  args = parser.parse_args(argv)
  if args.command in ("show", "measure"):
    if not (Path(args.model) / "model_index.json").is_file():
      raise UserError(f"--model={args.model}: not a world checkpoint (no model_index.json)")
    if args.command == "measure":
      return _measure(args)
    from jaxaug.models import load, world_show

    world_show.show(args.out, load(args.model), Judge.load())
    return
  train(args.out, args.work, Settings(seed=args.seed).overridden(args.set).scaled(args.scale))


if __name__ == "__main__":
  main()
