"""The classifier's state, losses, optimizers and its train and eval steps (pure functions, jitted by the caller).

Images arrive as uint8 [B, S, S, 3] (host-fitted squares); every transform after that runs here, on
the device. The step's randomness is `fold_in(rng, step)` split per image, so a batch's augmentation
depends only on (seed, step, position): not on device count, not on host count (each host reads its block of
the global batch, data/pipeline.py) and not on whether the run was resumed.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxaug import augment

# torchvision's ImageNet normalisation, which the pretrained weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LOSSES = ("cross_entropy", "balanced_softmax")
OPTIMIZERS = ("sgd", "adam")


@struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # raw uint32 key: orbax stores it as a plain array


def log_prior(loss: str, counts) -> jax.Array:
  """What the loss adds to the logits in training: log(real class counts) for Balanced Softmax, else 0."""
  counts = jnp.asarray(counts, jnp.float32)
  return jnp.log(counts) if loss == "balanced_softmax" else jnp.zeros_like(counts)


def classification_loss(logits, labels, prior, label_smoothing: float = 0.0):
  """Mean softmax cross-entropy of (logits + prior) against optionally smoothed one-hot labels.

  With prior = log(class counts) this is Balanced Softmax (Ren et al. 2020): the training
  posterior carries the long-tailed prior, so the logits themselves learn the balanced one.
  """
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits + prior, targets).mean()


def optimizer(name: str, *, lr: float, momentum: float, weight_decay: float, warmup_steps: int,
              total_steps: int, linear_probe: bool) -> optax.GradientTransformation:
  """SGD + momentum, torch-style weight decay and warmup-cosine to 0; or constant-rate Adam.

  For the linear probe only the `fc` head gets updates; the backbone's are zero (and keep no state).
  """
  if name == "sgd":
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, max(total_steps, warmup_steps + 1), 0.0)
    tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(schedule, momentum=momentum))
  else:
    tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))
  if linear_probe:
    tx = optax.multi_transform({"head": tx, "frozen": optax.set_to_zero()},
                               lambda params: {k: "head" if k == "fc" else "frozen" for k in params})
  return tx


def init_state(model, tx, seed: int, crop: int) -> TrainState:
  init_key, rng = jax.random.split(jax.random.PRNGKey(seed))
  variables = model.init(init_key, jnp.zeros((1, crop, crop, 3)), train=False)
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                    batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]), rng=rng)


def normalize(images):
  return (images - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def centre_crop(images, crop: int):
  top = (images.shape[1] - crop) // 2
  left = (images.shape[2] - crop) // 2
  return images[:, top:top + crop, left:left + crop]


TRANSFORMS = ("crop_flip_jitter", "flip_rotate", "none")


def train_images(key, images, *, crop: int, transform: str):
  """uint8 host squares -> normalised float images for training.

  crop_flip_jitter: random resized crop to `crop`, flip, colour jitter 0.4 (the ImageNet-LT recipe);
  flip_rotate: centre crop to `crop`, flip, rotation within +-15 degrees (DA-Fusion's few-shot recipe);
  none: centre crop.
  """
  images = augment.to_float(images)
  keys = jax.random.split(key, images.shape[0])
  if transform == "crop_flip_jitter":
    images = augment.train_augment(keys, images, size=crop)
  elif transform == "flip_rotate":
    images = augment.fewshot_augment(keys, centre_crop(images, crop))
  else:
    images = centre_crop(images, crop)
  return normalize(images)


def train_step(state: TrainState, batch, *, model, tx, prior, label_smoothing: float, crop: int, transform: str):
  """One optimizer step on a global batch {'image', 'label'} -> (state, {'loss', 'accuracy'})."""
  images = train_images(jax.random.fold_in(state.rng, state.step), batch["image"], crop=crop, transform=transform)

  def loss_fn(params):
    logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, images, train=True,
                                  mutable=["batch_stats"])
    return classification_loss(logits, batch["label"], prior, label_smoothing), (logits, updates["batch_stats"])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
  return state, {"loss": loss, "accuracy": accuracy}


def eval_step(state: TrainState, batch, *, model, crop: int):
  """Per-class correct and total counts [C] over the unmasked images of a global batch."""
  images = normalize(centre_crop(augment.to_float(batch["image"]), crop))
  logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, images, train=False)
  onehot = jax.nn.one_hot(batch["label"], logits.shape[-1]) * batch["mask"][:, None]
  correct = (jnp.argmax(logits, -1) == batch["label"])[:, None] * onehot
  return {"correct": correct.sum(0), "count": onehot.sum(0)}
