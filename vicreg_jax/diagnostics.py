"""Collapse diagnostics of a batch of vectors: singular values, effective rank, correlation.

Pure, jittable functions of ``x: f32[n, d]`` (n examples of d features, e.g. a batch of
representations or embeddings) with a row weight ``w: f32[n]`` (1 real, 0 padding). The
spectrum is that of the column-centred matrix: a collapsed encoder maps every input to
nearly one point (all singular values near 0, std near 0), a dimensionally collapsed one to
a low-dimensional subspace (few large singular values: low effective rank), a healthy one
spreads the batch over many directions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Keeps divisions finite for an all-zero batch (complete collapse) or an all-zero feature.
_EPS = 1e-12


def _centred(x: jax.Array, weight: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(x minus the weighted column means, with padding rows zeroed, f32[n, d]; n_real)``."""
  x = x.astype(jnp.float32)
  w = weight.astype(jnp.float32)[:, None]
  n_real = jnp.sum(w)
  mean = jnp.sum(x * w, axis=0) / n_real
  return (x - mean) * w, n_real


def singular_values(x: jax.Array, weight: jax.Array) -> jax.Array:
  """Singular values f32[min(n, d)] of the centred real rows, in descending order (padding
  rows add zeros)."""
  xc, _ = _centred(x, weight)
  return jnp.linalg.svd(xc, compute_uv=False)


def effective_rank(s: jax.Array) -> jax.Array:
  """RankMe (Garrido et al., ICML 2023): exp of the entropy of ``s / sum(s)``; in [1, len(s)].

  1 for a rank-one batch, the number of equal singular values for a flat spectrum, 1 for an
  all-zero batch.
  """
  p = s / (jnp.sum(s) + _EPS)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def rank_fraction(s: jax.Array, n_real: jax.Array, dim: int, threshold: float) -> jax.Array:
  """Fraction of the ``min(n_real - 1, dim)`` possible directions whose singular value
  exceeds ``threshold`` times the largest one (0 for an all-zero batch)."""
  possible = jnp.maximum(jnp.minimum(n_real - 1, dim), 1)
  above = jnp.sum(s > threshold * s[0]) * (s[0] > 0)
  return above / possible


def mean_abs_correlation(x: jax.Array, weight: jax.Array) -> jax.Array:
  """Mean |off-diagonal| entry of the d x d correlation matrix of the real rows (0 to 1):
  the redundancy between features that VICReg's covariance term pushes down."""
  xc, _ = _centred(x, weight)
  norms = jnp.sqrt(jnp.sum(xc * xc, axis=0)) + _EPS
  corr = (xc.T @ xc) / (norms[:, None] * norms[None, :])
  d = corr.shape[0]
  return (jnp.sum(jnp.abs(corr)) - jnp.sum(jnp.abs(jnp.diagonal(corr)))) / (d * (d - 1))


def mean_std(x: jax.Array, weight: jax.Array) -> jax.Array:
  """Mean over features of the (unbiased) standard deviation over the real rows."""
  xc, n_real = _centred(x, weight)
  return jnp.mean(jnp.sqrt(jnp.sum(xc * xc, axis=0) / jnp.maximum(n_real - 1, 1)))


def diagnose(x: jax.Array, weight: jax.Array, threshold: float) -> dict[str, jax.Array]:
  """All diagnostics of one batch ``x: f32[n, d]``.

  Returns ``effective_rank``, ``rank_fraction`` (singular values above ``threshold`` x the
  largest), ``mean_abs_corr``, ``std`` (f32 scalars) and ``spectrum`` (f32[min(n, d)], the
  singular values divided by their sum, descending).
  """
  s = singular_values(x, weight)
  _, n_real = _centred(x, weight)
  return {"effective_rank": effective_rank(s),
          "rank_fraction": rank_fraction(s, n_real, x.shape[1], threshold),
          "mean_abs_corr": mean_abs_correlation(x, weight),
          "std": mean_std(x, weight),
          "spectrum": s / (jnp.sum(s) + _EPS)}
