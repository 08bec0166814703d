"""Linear probe on frozen features (the paper's protocol, App. C.2) and feature extraction.

Protocol of the official ``evaluate.py`` in ``freeze`` mode, run on precomputed features
(the fast path for small datasets: the encoder runs once, then only the head trains):
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
import math
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vicreg_jax.evaluate.knn import topk_accuracy

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


def init_head(key: jax.Array, dim: int, num_classes: int, init_std: float) -> Params:
  """Linear head as the official ``nn.Linear``: kernel f32[dim, c] ~ N(0, init_std), bias 0."""
  return {"kernel": init_std * jax.random.normal(key, (dim, num_classes), jnp.float32),
          "bias": jnp.zeros((num_classes,), jnp.float32)}


def head_logits(params: Params, features: jax.Array) -> jax.Array:
  """Logits f32[n, c] of features f32[n, dim]."""
  return features @ params["kernel"] + params["bias"]


def probe_optimizer(probe_config: ml_collections.ConfigDict,
                    steps_per_epoch: int) -> optax.GradientTransformation:
  """Torch SGD (momentum, decay on all parameters) with the per-epoch cosine rate."""
  def per_epoch_cosine(count):
    epoch = count // steps_per_epoch
    return probe_config.lr * 0.5 * (1 + jnp.cos(math.pi * epoch / probe_config.epochs))
  # optax.sgd = trace(momentum) then the rate: PyTorch's order, so rate changes match too.
  return optax.chain(optax.add_decayed_weights(probe_config.weight_decay),
                     optax.sgd(per_epoch_cosine, momentum=probe_config.momentum))


def batch_loss(params: Params, features: jax.Array, labels: jax.Array,
               weights: jax.Array) -> jax.Array:
  """Mean cross-entropy over the real examples of a padded batch (``weights`` 1 real, 0 pad)."""
  losses = optax.softmax_cross_entropy_with_integer_labels(head_logits(params, features), labels)
  return jnp.sum(weights * losses) / jnp.sum(weights)


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
  tx = probe_optimizer(probe_config, steps_per_epoch=-(-n // batch_size))
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
