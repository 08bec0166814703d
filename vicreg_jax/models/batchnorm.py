"""BatchNorm with statistics per view, for both views of a pair stacked into one batch.

VICReg normalises each view with its own batch statistics (the official code runs the two
views through the network one after the other). :class:`PerViewBatchNorm` computes the same
numbers on one stacked batch, so the convolutions and matmuls run once on ``views * n``
examples instead of ``views`` times on ``n``.

Layout of a stacked batch: ``x[views * n, ..., c]`` with the view axis minor, i.e. row
``views * i + v`` is example ``i`` of view ``v`` (``jnp.stack(per_view, axis=1)`` reshaped).
A batch sharded over devices along its first axis thus keeps both views of the same
examples on each device, and the statistics reduce over the examples and positions of each
view (``x.reshape(n, views, ..., c)``, all axes but 1 and -1).

Numerics are those of ``flax.linen.BatchNorm`` as the models configure it, applied to each
view: float32 statistics (``E[x^2] - E[x]^2`` clipped at 0, the biased variance, also for
the running average), ``(x - mean) * (rsqrt(var + eps) * scale) + bias`` in float32, the
result in ``dtype``; running averages updated once per view in view order
(``ra = momentum * ra + (1 - momentum) * stat_v``), exactly as ``views`` sequential passes.
Variables: ``params`` ``scale``/``bias`` and ``batch_stats`` ``mean``/``var``, float32
``[c]``, the same tree as ``flax.linen.BatchNorm``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import dtypes

VIEW_AXIS = 1  # of x.reshape(n, views, ..., c)


class PerViewBatchNorm(nn.Module):
  """Training-mode BatchNorm over the last axis with separate statistics for each view.

  Attributes:
    views: number of views stacked view-minor in the batch (see the module docstring).
    momentum: running-average decay (Flax convention: weight of the old value).
    epsilon: added to the variance.
    dtype: dtype of the result (statistics and normalisation are float32).
    axis_name: mapped axis the statistics are averaged over inside shard_map/pmap.
    scale_init: initialiser of ``scale`` (``bias`` starts at zero).
  """
  views: int
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  axis_name: str | None = None
  scale_init: nn.initializers.Initializer = nn.initializers.ones

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [views * n, ..., c] (view-minor) -> normalised x, same shape, ``dtype``."""
    if x.shape[0] % self.views:
      raise ValueError(f"PerViewBatchNorm: batch of {x.shape[0]} rows is not {self.views} "
                       "views of equal size.")
    features = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
    scale = self.param("scale", self.scale_init, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)

    per_view = x.reshape((x.shape[0] // self.views, self.views) + x.shape[1:])
    mean, var = self._statistics(per_view)  # f32[views, c]
    if not self.is_initializing():
      for v in range(self.views):  # one update per view, in order, as sequential passes
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean[v]
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var[v]

    # Broadcast f32[views, c] against [n, views, 1, ..., 1, c].
    shape = (1, self.views) + (1,) * (per_view.ndim - 3) + (features,)
    y = per_view - mean.reshape(shape)
    y = y * (jax.lax.rsqrt(var + self.epsilon) * scale).reshape(shape) + bias
    out_dtype = dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype)
    return jnp.asarray(y, out_dtype).reshape(x.shape)

  def _statistics(self, per_view: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Biased mean and variance f32[views, c] of [n, views, ..., c] (fast variance)."""
    # As Flax: at least float32, from the layer's compute dtype.
    x = per_view.astype(jnp.promote_types(self.dtype or per_view.dtype, jnp.float32))
    axes = tuple(i for i in range(x.ndim - 1) if i != VIEW_AXIS)
    mean, mean_sq = jnp.mean(x, axes), jnp.mean(jnp.square(x), axes)
    if self.axis_name is not None and not self.is_initializing():
      mean, mean_sq = jax.lax.pmean(jnp.stack([mean, mean_sq]), self.axis_name)
    return mean, jnp.maximum(0.0, mean_sq - jnp.square(mean))


def batch_norm(views: int, train: bool, **kwargs) -> nn.Module:
  """The BatchNorm for a batch of ``views`` stacked views: ``flax.linen.BatchNorm`` for one
  view or with running averages (``train=False``: nothing per view to compute), else
  :class:`PerViewBatchNorm`. ``kwargs``: ``momentum``, ``epsilon``, ``dtype``, ``axis_name``,
  ``scale_init``, ``name``."""
  if views < 1:
    raise ValueError(f"views must be >= 1; got {views}.")
  if views == 1 or not train:
    return nn.BatchNorm(use_running_average=not train, **kwargs)
  return PerViewBatchNorm(views=views, **kwargs)
