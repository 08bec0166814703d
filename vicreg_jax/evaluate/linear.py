"""Linear probe on a frozen encoder (the paper's protocol, App. C.2) and feature extraction.

:func:`linear_probe_images` is the protocol of the official ``evaluate.py`` in ``freeze``
mode on images: random-resized crops + flips for training, resize + centre crop for
evaluation, the encoder (eval mode) run every step, sharded over all devices
(:mod:`vicreg_jax.evaluate.classifier`). :func:`linear_probe` is the fast path for small
datasets: features of un-augmented images are extracted once, then only the head trains,
with the same optimisation:
head ``W ~ N(0, init_std)``, bias 0; softmax cross-entropy; PyTorch SGD with momentum and
weight decay on every head parameter, bias included (``d = g + wd * p;
buf = momentum * buf + d; p -= lr * buf``); shuffled batches of ``batch_size`` with a
smaller last batch (no ``drop_last``); the rate follows ``CosineAnnealingLR(T_max=epochs)``
stepped once per epoch, i.e. constant within epoch ``e`` at
``lr * (1 + cos(pi * e / epochs)) / 2``. Top-1/top-5 on the held-out set after every epoch;
the best of each over epochs is reported as the official ``best_acc``, with the last.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from vicreg_jax import optim
from vicreg_jax.evaluate import classifier
from vicreg_jax.evaluate.classifier import head_logits, init_head
from vicreg_jax.evaluate.accuracy import topk_accuracy

Params = dict[str, jax.Array]


def extract_features(apply_fn: Callable[[jax.Array], jax.Array], images, *,
                     batch_size: int) -> np.ndarray:
  """Runs a frozen encoder over ``images`` in batches; returns f32[n, d] on the host.

  Args:
    apply_fn: ``images [b, ...] -> features [b, d]``, the encoder in eval mode (BatchNorm
      running statistics), ideally jitted: every call gets exactly ``batch_size`` images
      (the last batch is zero-padded and the padding rows dropped), so it compiles once.
    images: [n, ...] NumPy or JAX array, already preprocessed for the encoder.
    batch_size: images per call.
  """
  n = len(images)
  if n == 0 or batch_size <= 0:
    raise ValueError(f"extract_features needs images (got {n}) and batch_size > 0 "
                     f"(got {batch_size}).")
  features = []
  for start in range(0, n, batch_size):
    batch = np.asarray(images[start:start + batch_size])
    real = len(batch)
    batch = np.pad(batch, [(0, batch_size - real)] + [(0, 0)] * (batch.ndim - 1))
    features.append(np.asarray(apply_fn(batch), np.float32)[:real])
  return np.concatenate(features)


def batch_loss(params: Params, features: jax.Array, labels: jax.Array,
               weights: jax.Array) -> jax.Array:
  """Mean cross-entropy over the real examples of a padded batch (``weights`` 1 real, 0 pad)."""
  return classifier.weighted_cross_entropy(head_logits(params, features), labels, weights)


def train_step(tx: optax.GradientTransformation, params: Params, opt_state: optax.OptState,
               features: jax.Array, labels: jax.Array, weights: jax.Array):
  """One SGD step on a batch: features f32[b, dim], labels i32[b], weights f32[b]."""
  grads = jax.grad(batch_loss)(params, features, labels, weights)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def train_epoch(tx: optax.GradientTransformation, batch_size: int, params: Params,
                opt_state: optax.OptState, features: jax.Array, labels: jax.Array,
                order: jax.Array):
  """One pass over the training set in the order ``order`` i32[n] (a permutation)."""
  n = order.shape[0]
  steps = -(-n // batch_size)
  # Static shapes: the last batch is padded and its padding rows weigh 0 in the loss.
  slots = jnp.arange(steps * batch_size)
  indices = jnp.pad(order, (0, steps * batch_size - n)).reshape(steps, batch_size)
  weights = (slots < n).astype(jnp.float32).reshape(steps, batch_size)

  def step(carry, batch):
    idx, w = batch
    return train_step(tx, *carry, features[idx], labels[idx], w), None

  (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), (indices, weights))
  return params, opt_state


def linear_probe(train_features, train_labels, test_features, test_labels, *, num_classes: int,
                 probe_config: ml_collections.ConfigDict, seed: int = 0) -> dict:
  """Trains a linear classifier on frozen features; evaluates it after every epoch.

  Args:
    train_features: f32[n, d] frozen representations (NumPy or JAX); train_labels: i32[n].
    test_features: f32[m, d]; test_labels: i32[m], the held-out set.
    num_classes: c.
    probe_config: ``probe_config().linear`` or ``config.eval.linear`` (lr, momentum,
      weight_decay, batch_size, epochs, init_std).
    seed: initialisation and shuffling; the result is a deterministic function of it.

  Returns:
    ``top1``/``top5`` after the last epoch, ``best_top1``/``best_top5`` (each the maximum
    over epochs, as the official ``best_acc``), ``epochs`` and per-epoch ``history``; percent.
  """
  if probe_config.epochs <= 0 or probe_config.batch_size <= 0:
    raise ValueError(f"Linear probe: epochs={probe_config.epochs} and "
                     f"batch_size={probe_config.batch_size} must be > 0 (eval.linear.*).")
  x_train = jnp.asarray(train_features, jnp.float32)
  y_train = jnp.asarray(train_labels, jnp.int32)
  x_test = jnp.asarray(test_features, jnp.float32)
  n, dim = x_train.shape
  batch_size = min(probe_config.batch_size, n)
  tx = optim.torch_sgd(probe_config.lr, momentum=probe_config.momentum,
                       weight_decay=probe_config.weight_decay, epochs=probe_config.epochs,
                       steps_per_epoch=-(-n // batch_size))
  init_key, shuffle_key = jax.random.split(jax.random.key(seed))
  params = init_head(init_key, dim, num_classes, probe_config.init_std)
  opt_state = tx.init(params)
  epoch_fn = jax.jit(functools.partial(train_epoch, tx, batch_size))
  logits_fn = jax.jit(head_logits)

  history = []
  for epoch in range(probe_config.epochs):
    order = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n)
    params, opt_state = epoch_fn(params, opt_state, x_train, y_train, order)
    history.append(topk_accuracy(logits_fn(params, x_test), test_labels))
  return {**history[-1],
          "best_top1": max(h["top1"] for h in history),
          "best_top5": max(h["top5"] for h in history),
          "epochs": len(history), "history": history}


def batch_features(apply_fn: Callable[[jax.Array], jax.Array], batches: Iterable[dict]
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Features f32[n, d] and labels i32[n] of labelled batches (e.g. ``source.epoch(0)``).

  ``apply_fn``: ``uint8 images [B, S, S, 3] -> features [B, d]``, jitted with a replicated
  output so every process gets the whole batch; padding rows are dropped.
  """
  features, labels = [], []
  for batch in batches:
    # Labels and weights are sharded over all processes' devices: gather them on each host.
    real = multihost_utils.process_allgather(batch["weight"], tiled=True) > 0
    features.append(np.asarray(apply_fn(batch["image"]), np.float32)[real])
    labels.append(multihost_utils.process_allgather(batch["label"], tiled=True)[real])
  return np.concatenate(features), np.concatenate(labels)


def linear_probe_images(backbone, variables: dict, train_source, eval_source, *, mesh,
                        probe_config: ml_collections.ConfigDict, mean, std, seed: int = 0,
                        checkpointer: classifier.Checkpointer | None = None,
                        on_epoch: classifier.EpochCallback | None = None) -> dict:
  """The paper's linear probe on images: frozen encoder, head trained on augmented crops.

  Args:
    backbone: the encoder module (``models.create_backbone``); its representation width is
      the head's input.
    variables: the encoder's ``{"params", "batch_stats"}``.
    train_source, eval_source: labelled sources (``data.create_labelled_source`` with
      ``train=True`` / ``False``), batches of ``probe_config.batch_size``.
    mesh: the device mesh the sources shard over.
    probe_config: ``config.eval.linear`` (lr, momentum, weight_decay, epochs, init_std).
    mean, std: per-channel normalisation of the encoder's inputs (``config.augment``).
    seed: head initialisation.
    checkpointer: resumes from its latest epoch and saves after every epoch.
    on_epoch: ``(epochs done, state, history)`` callback after every epoch.

  Returns:
    ``top1``/``top5`` (last epoch), ``best_top1``/``best_top5``, ``epochs``, ``history``
    (percent).
  """
  tx = optim.classifier_sgd(probe_config.lr, None, momentum=probe_config.momentum,
                                 weight_decay=probe_config.weight_decay,
                                 epochs=probe_config.epochs,
                                 steps_per_epoch=train_source.steps_per_epoch)
  dim = classifier.representation_width(backbone, variables)
  head = init_head(jax.random.key(seed), dim, train_source.num_classes, probe_config.init_std)
  state = classifier.create_state(variables, head, tx, mesh)
  steps = classifier.make_steps(backbone, tx, finetune=False, mean=mean, std=std, mesh=mesh)
  _, summary = classifier.fit(state, steps, train_source, eval_source,
                              epochs=probe_config.epochs, checkpointer=checkpointer,
                              on_epoch=on_epoch)
  return summary
