"""Linear probe on frozen features: the fast path for small datasets (paper App. C.2 optimisation).

Features of un-augmented images are extracted once (:mod:`vicreg_jax.evaluate.features`),
then only the head trains, with the optimisation of the probe on images
(:func:`vicreg_jax.evaluate.classifier.train_classifier`):
head ``W ~ N(0, init_std)``, bias 0; softmax cross-entropy; PyTorch SGD with momentum and
weight decay on every head parameter, bias included (``d = g + wd * p;
buf = momentum * buf + d; p -= lr * buf``); shuffled batches of ``batch_size`` with a
smaller last batch (no ``drop_last``); the rate follows ``CosineAnnealingLR(T_max=epochs)``
stepped once per epoch, i.e. constant within epoch ``e`` at
``lr * (1 + cos(pi * e / epochs)) / 2``. Top-1/top-5 on the held-out set after every epoch;
the best of each over epochs is reported as the official ``best_acc``, with the last.
Progress goes to an ``on_epoch`` callback, as for the probe on images.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vicreg_jax import optim
from vicreg_jax.evaluate import classifier
from vicreg_jax.evaluate.accuracy import topk_accuracy
from vicreg_jax.evaluate.classifier import head_logits, init_head

Params = dict[str, jax.Array]


def batch_loss(params: Params, features: jax.Array, labels: jax.Array,
               weights: jax.Array) -> jax.Array:
  """Mean cross-entropy over the real examples of a padded batch (``weights`` 1 real, 0 pad)."""
  return classifier.weighted_cross_entropy(head_logits(params, features), labels, weights)


def train_step(tx: optax.GradientTransformation, params: Params, opt_state: optax.OptState,
               features: jax.Array, labels: jax.Array, weights: jax.Array):
  """One SGD step on a batch: features f32[b, dim], labels i32[b], weights f32[b].

  Returns ``(params, opt_state, loss)``, the loss f32[] being the batch's before the step.
  """
  loss, grads = jax.value_and_grad(batch_loss)(params, features, labels, weights)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def train_epoch(tx: optax.GradientTransformation, batch_size: int, params: Params,
                opt_state: optax.OptState, features: jax.Array, labels: jax.Array,
                order: jax.Array):
  """One pass over the training set in the order ``order`` i32[n] (a permutation).

  Returns ``(params, opt_state, loss)``: loss f32[] is the mean of the batches' losses.
  """
  n = order.shape[0]
  steps = -(-n // batch_size)
  # Static shapes: the last batch is padded and its padding rows weigh 0 in the loss.
  slots = jnp.arange(steps * batch_size)
  indices = jnp.pad(order, (0, steps * batch_size - n)).reshape(steps, batch_size)
  weights = (slots < n).astype(jnp.float32).reshape(steps, batch_size)

  def step(carry, batch):
    idx, w = batch
    params, opt_state, loss = train_step(tx, *carry, features[idx], labels[idx], w)
    return (params, opt_state), loss

  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (indices, weights))
  return params, opt_state, jnp.mean(losses)


def linear_probe(train_features, train_labels, test_features, test_labels, *, num_classes: int,
                 probe_config: ml_collections.ConfigDict, seed: int = 0,
                 on_epoch: Callable[[int, Params, list], None] | None = None) -> dict:
  """Trains a linear classifier on frozen features; evaluates it after every epoch.

  Args:
    train_features: f32[n, d] frozen representations (NumPy or JAX); train_labels: i32[n].
    test_features: f32[m, d]; test_labels: i32[m], the held-out set.
    num_classes: c.
    probe_config: ``probe_config().linear`` or ``config.eval.linear`` (lr, momentum,
      weight_decay, batch_size, epochs, init_std).
    seed: initialisation and shuffling; the result is a deterministic function of it.
    on_epoch: called after every epoch with ``(epochs done, head params, history)``
      (progress, e.g. ``evaluate.run.EpochLog``).

  Returns:
    ``top1``/``top5`` after the last epoch, ``best_top1``/``best_top5`` (each the maximum
    over epochs, as the official ``best_acc``), ``epochs`` and per-epoch ``history``
    (``{"epoch", "loss", "top1", "top5"}``, the loss being the epoch's mean training loss);
    percent.

  Raises:
    FloatingPointError: the training loss of an epoch is not finite.
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
    params, opt_state, loss = epoch_fn(params, opt_state, x_train, y_train, order)
    loss = float(loss)
    if not math.isfinite(loss):
      raise FloatingPointError(f"Non-finite loss in epoch {epoch + 1} of the linear probe; "
                               "lower eval.linear.lr.")
    history.append({"epoch": epoch + 1, "loss": loss,
                    **topk_accuracy(logits_fn(params, x_test), test_labels)})
    if on_epoch is not None:
      on_epoch(epoch + 1, params, history)
  return {**history[-1],
          "best_top1": max(h["top1"] for h in history),
          "best_top5": max(h["top5"] for h in history),
          "epochs": len(history), "history": history}
