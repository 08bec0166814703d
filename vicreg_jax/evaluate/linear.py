"""Linear probe on frozen features: the paper's protocol (App. C.2) on precomputed features.

Head ``W ~ N(0, init_std)``, bias 0; SGD with momentum and weight decay on all head
parameters as PyTorch's SGD does (``g += wd * p; buf = m * buf + g; p -= lr * buf``), batch
256, cosine annealing of the rate per epoch to 0 (``CosineAnnealingLR`` stepped each epoch).
The fast path for small datasets: features are extracted once, then only the head trains.
Each epoch's shuffled batches drop the remainder (static shapes); every example is still seen
across epochs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vicreg_jax.evaluate.knn import topk_accuracy


def _epoch_lr(lr: float, epochs: int, steps_per_epoch: int):
  def schedule(step):
    epoch = step // steps_per_epoch
    return lr * 0.5 * (1 + jnp.cos(math.pi * epoch / epochs))
  return schedule


def linear_probe(train_features, train_labels, test_features, test_labels, *, num_classes: int,
                 probe_config: ml_collections.ConfigDict, seed: int = 0) -> dict:
  """Trains a linear classifier; returns last/best top-1 and top-5 (percent) over epochs.

  Args:
    train_features: f32[n, d] frozen representations; train_labels: i32[n].
    test_features, test_labels: the held-out set evaluated after every epoch.
    probe_config: ``config.eval.linear`` (lr, momentum, weight_decay, batch_size, epochs,
      init_std).
  """
  x_train = jnp.asarray(train_features, jnp.float32)
  y_train = jnp.asarray(train_labels, jnp.int32)
  x_test = jnp.asarray(test_features, jnp.float32)
  n, d = x_train.shape
  batch = min(probe_config.batch_size, n)
  steps_per_epoch = n // batch
  key = jax.random.key(seed)
  params = {"w": probe_config.init_std * jax.random.normal(key, (d, num_classes)),
            "b": jnp.zeros((num_classes,))}
  tx = optax.chain(optax.add_decayed_weights(probe_config.weight_decay),
                   optax.sgd(_epoch_lr(probe_config.lr, probe_config.epochs, steps_per_epoch),
                             momentum=probe_config.momentum))
  opt_state = tx.init(params)

  def loss_fn(params, x, y):
    logits = x @ params["w"] + params["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def epoch(params, opt_state, perm):
    def step(carry, idx):
      params, opt_state = carry
      grads = jax.grad(loss_fn)(params, x_train[idx], y_train[idx])
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None
    batches = perm[:steps_per_epoch * batch].reshape(steps_per_epoch, batch)
    (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), batches)
    return params, opt_state

  history = []
  for e in range(probe_config.epochs):
    perm = jax.random.permutation(jax.random.fold_in(key, e + 1), n)
    params, opt_state = epoch(params, opt_state, perm)
    logits = x_test @ params["w"] + params["b"]
    history.append(topk_accuracy(logits, test_labels))
  best = max(history, key=lambda h: h["top1"])
  return {"top1": history[-1]["top1"], "top5": history[-1]["top5"],
          "best_top1": best["top1"], "best_top5": best["top5"], "epochs": len(history)}
