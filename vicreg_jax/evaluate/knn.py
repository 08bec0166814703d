"""k-nearest-neighbour classification of frozen representations (the common SSL monitor).

Cosine similarity between L2-normalised features; the k most similar training examples vote
for their class with weight ``exp(similarity / temperature)`` (InstDisc, DINO; k = 20,
temperature 0.07). Queries are processed in blocks so memory stays at
``query_batch x num_train`` similarities whatever the number of queries.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from vicreg_jax.evaluate.accuracy import topk_accuracy


def l2_normalize(x: jax.Array) -> jax.Array:
  """Rows of ``x`` f32[n, d] scaled to unit norm; all-zero rows stay zero (no NaN)."""
  squared = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(squared, jnp.finfo(x.dtype).tiny))


@functools.partial(jax.jit, static_argnames=("num_classes", "k", "query_batch"))
def knn_predict(train_features: jax.Array, train_labels: jax.Array, query_features: jax.Array,
                *, num_classes: int, k: int = 20, temperature: float = 0.07,
                query_batch: int = 256) -> tuple[jax.Array, jax.Array]:
  """Weighted kNN votes of each query; returns ``(top-1 class i32[m], scores f32[m, c])``.

  Args:
    train_features: f32[n, d] representations of the labelled set (any scale).
    train_labels: i32[n] in ``[0, num_classes)``.
    query_features: f32[m, d] representations to classify.
    num_classes: c, the number of classes.
    k: neighbours per query (clamped to n).
    temperature: votes weigh ``exp(cosine similarity / temperature)``.
    query_batch: queries per block; bounds memory to ``query_batch x n`` similarities.
  """
  train = l2_normalize(jnp.asarray(train_features, jnp.float32))
  queries = l2_normalize(jnp.asarray(query_features, jnp.float32))
  m, d = queries.shape
  block = min(query_batch, m)
  blocks = jnp.pad(queries, ((0, -m % block), (0, 0))).reshape(-1, block, d)
  k = min(k, train.shape[0])

  def block_scores(q):
    # Exact f32 similarities: reduced-precision matmuls (TF32/bf16 passes) reorder neighbours.
    sims, idx = jax.lax.top_k(jnp.matmul(q, train.T, precision=jax.lax.Precision.HIGHEST), k)
    votes = jax.nn.one_hot(train_labels[idx], num_classes) * jnp.exp(sims / temperature)[..., None]
    return jnp.sum(votes, axis=1)

  scores = jax.lax.map(block_scores, blocks).reshape(-1, num_classes)[:m]
  return jnp.argmax(scores, axis=1).astype(jnp.int32), scores


def knn_accuracy(train_features, train_labels, test_features, test_labels, *, num_classes: int,
                 k: int = 20, temperature: float = 0.07,
                 query_batch: int = 256) -> dict[str, float]:
  """kNN top-1 / top-5 accuracy (percent) of ``test_features`` against ``train_features``.

  Arguments as :func:`knn_predict` (NumPy or JAX arrays), plus ``test_labels`` i32[m]; pass
  ``**probe_config().knn`` or the training config's ``eval.knn_*`` values.
  """
  _, scores = knn_predict(jnp.asarray(train_features), jnp.asarray(train_labels),
                          jnp.asarray(test_features), num_classes=num_classes, k=k,
                          temperature=temperature, query_batch=query_batch)
  return topk_accuracy(scores, test_labels)
