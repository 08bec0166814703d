"""k-nearest-neighbour classification of frozen representations (the common SSL monitor).

Cosine similarity between L2-normalised features; the k most similar training examples vote
for their class with weight ``exp(similarity / temperature)`` (k = 20, temperature 0.07).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _l2_normalize(x):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("num_classes", "k", "temperature", "chunk"))
def knn_scores(train_features, train_labels, query_features, *, num_classes: int, k: int = 20,
               temperature: float = 0.07, chunk: int = 1024):
  """Class scores f32[m, num_classes] of each query from its k nearest training examples.

  Args:
    train_features: f32[n, d]; train_labels: i32[n]; query_features: f32[m, d].
    chunk: queries per block (bounds memory to chunk x n similarities).
  """
  train = _l2_normalize(train_features.astype(jnp.float32))
  queries = _l2_normalize(query_features.astype(jnp.float32))
  m = queries.shape[0]
  pad = (-m) % chunk
  blocks = jnp.pad(queries, ((0, pad), (0, 0))).reshape(-1, chunk, queries.shape[1])
  k = min(k, train.shape[0])

  def block_scores(q):
    sims, idx = jax.lax.top_k(q @ train.T, k)
    votes = jax.nn.one_hot(train_labels[idx], num_classes) * jnp.exp(sims / temperature)[..., None]
    return jnp.sum(votes, axis=1)

  return jax.lax.map(block_scores, blocks).reshape(-1, num_classes)[:m]


def topk_accuracy(scores, labels, ks=(1, 5)) -> dict[str, float]:
  """Top-k accuracies in percent from scores [m, c] and integer labels [m]."""
  ranked = np.argsort(-np.asarray(scores), axis=1)
  labels = np.asarray(labels)[:, None]
  return {f"top{k}": float(100 * np.mean(np.any(ranked[:, :k] == labels, axis=1))) for k in ks}


def knn_accuracy(train_features, train_labels, test_features, test_labels, *, num_classes: int,
                 k: int = 20, temperature: float = 0.07) -> dict[str, float]:
  """kNN top-1 / top-5 accuracy (percent) of ``test_features`` against ``train_features``."""
  scores = knn_scores(jnp.asarray(train_features), jnp.asarray(train_labels),
                      jnp.asarray(test_features), num_classes=num_classes, k=k,
                      temperature=temperature)
  return topk_accuracy(scores, test_labels)
