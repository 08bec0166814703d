"""Top-k accuracy: the one ranking of class scores behind kNN, the linear probe and fine-tuning.

Ties rank the lower class first (as ``argmax``; ``-0.0`` ties ``0.0``), NaN scores rank
last; a k at least the number of classes counts every example as correct. Accuracies are percent, ``100 * (hits / count)`` on the host.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp

TOPK = (1, 5)


def topk_hits(scores: jax.Array, labels: jax.Array, weights: jax.Array,
              ks: tuple[int, ...] = TOPK) -> dict[str, jax.Array]:
  """Weighted counts f32[] of rows whose label is among their k best scores, for k in ``ks``.

  Args:
    scores: f32[m, c] class scores or logits.
    labels: i32[m] true classes.
    weights: f32[m], 1 for real rows and 0 for padding.
    ks: which k to count, as ``{"top<k>": count}``.
  """
  # lax.top_k orders -0.0 below 0.0 and NaN first: rank by the values instead.
  keys = jnp.where(jnp.isnan(scores), -jnp.inf, jnp.where(scores == 0, 0.0, scores))
  _, ranked = jax.lax.top_k(keys, min(max(ks), scores.shape[-1]))
  hits = ranked == labels[:, None]
  return {f"top{k}": jnp.sum(weights * jnp.any(hits[:, :k], axis=1)) for k in ks}


def percent(hits: dict[str, jax.Array], count: float) -> dict[str, float]:
  """Hit counts (``topk_hits``, summed over batches) as percent of ``count`` real rows."""
  return {name: 100 * (float(value) / count) for name, value in hits.items()}


def topk_accuracy(scores, labels, ks: tuple[int, ...] = TOPK) -> dict[str, float]:
  """Top-k accuracies in percent, ``{"top1": ..., "top5": ...}``.

  Args:
    scores: f32[m, c] class scores or logits (NumPy or JAX).
    labels: i32[m] true classes.
    ks: which k to report.
  """
  scores = jnp.asarray(scores)
  hits = _jitted_topk_hits(scores, jnp.asarray(labels), jnp.ones(scores.shape[:1]), ks)
  return percent(jax.device_get(hits), scores.shape[0])


_jitted_topk_hits = jax.jit(topk_hits, static_argnames="ks")
