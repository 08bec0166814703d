"""PerViewBatchNorm: one stacked batch gives what Flax's BatchNorm gives on each view in turn."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from vicreg_jax import parallel
from vicreg_jax.models import batchnorm

OPTIONS = dict(momentum=0.9, epsilon=1e-5)
# float32: the stacked and the separate reductions add the same numbers in another order, so
# they agree to a few float32 roundings of values of order 1 (eps 1.2e-7).
F32_TOL = dict(rtol=1e-5, atol=1e-6)


def views(n: int, shape=(5, 5, 6), seed: int = 0) -> list[np.ndarray]:
  """Two views with clearly different statistics per channel (so sharing them shows)."""
  rng = np.random.default_rng(seed)
  return [(rng.standard_normal((n,) + shape) * s + m).astype(np.float32)
          for s, m in ((1.0, 0.5), (3.0, -2.0))]


def stack(a, b):
  """[n, ...] x 2 -> [2n, ...] view-minor (row 2i + v is example i of view v)."""
  return jnp.stack([a, b], axis=1).reshape((-1,) + a.shape[1:])


def unstack(x):
  return x.reshape((-1, 2) + x.shape[1:])[:, 0], x.reshape((-1, 2) + x.shape[1:])[:, 1]


def initial_variables(features: int) -> dict:
  """Non-trivial scale, bias and running averages, shared by both implementations."""
  rng = np.random.default_rng(1)
  f = lambda *a: jnp.asarray(rng.uniform(*a, features), jnp.float32)
  return {"params": {"scale": f(0.5, 2.0), "bias": f(-1.0, 1.0)},
          "batch_stats": {"mean": f(-1.0, 1.0), "var": f(0.5, 2.0)}}


def two_passes(dtype):
  """Loss, outputs and updated running averages with flax's BatchNorm, one view at a time."""
  layer = nn.BatchNorm(use_running_average=False, dtype=dtype, **OPTIONS)

  def run(variables, a, b):
    ya, after_a = layer.apply(variables, a, mutable=["batch_stats"])
    yb, after_b = layer.apply({**variables, **after_a}, b, mutable=["batch_stats"])
    return ya, yb, after_b["batch_stats"]

  return run


def one_pass(dtype):
  layer = batchnorm.PerViewBatchNorm(views=2, dtype=dtype, **OPTIONS)

  def run(variables, a, b):
    y, after = layer.apply(variables, stack(a, b), mutable=["batch_stats"])
    return *unstack(y), after["batch_stats"]

  return run


def value_and_grads(run):
  """Outputs, statistics and the gradients of a weighted sum w.r.t. params and both inputs."""
  def loss(params, stats, a, b):
    ya, yb, new_stats = run({"params": params, "batch_stats": stats}, a, b)
    weights = jnp.arange(ya.size, dtype=jnp.float32).reshape(ya.shape) / ya.size
    return jnp.sum((ya.astype(jnp.float32) - 2 * yb.astype(jnp.float32)) ** 2 * weights), (
        ya, yb, new_stats)

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 2, 3), has_aux=True))


@pytest.mark.parametrize("shape", [(5, 5, 6), (6,)], ids=["conv", "dense"])
def test_one_stacked_pass_equals_two_flax_passes_outputs_gradients_and_running_averages(shape):
  """Outputs, every gradient, and the twice-updated running mean/var (biased var, as flax)."""
  a, b = views(8, shape)
  variables = initial_variables(shape[-1])
  (want_loss, want_aux), want_grads = value_and_grads(two_passes(jnp.float32))(
      variables["params"], variables["batch_stats"], a, b)
  (got_loss, got_aux), got_grads = value_and_grads(one_pass(jnp.float32))(
      variables["params"], variables["batch_stats"], a, b)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  check = functools.partial(np.testing.assert_allclose, **F32_TOL)
  jax.tree.map(check, got_aux, want_aux)
  jax.tree.map(check, got_grads, want_grads)
  # Sharing the statistics across views would be far off (the views differ by design).
  ya, _ = unstack(nn.BatchNorm(use_running_average=False, **OPTIONS).apply(
      variables, stack(a, b), mutable=["batch_stats"])[0])
  assert not np.allclose(ya, want_aux[0], atol=0.1)


def test_bfloat16_compute_matches_flax_per_view_to_bfloat16_rounding():
  """bf16 in and out, float32 statistics: the modes differ by at most ~1 bf16 rounding."""
  a, b = (jnp.asarray(v, jnp.bfloat16) for v in views(8))
  variables = initial_variables(6)
  want = jax.jit(two_passes(jnp.bfloat16))(variables, a, b)
  got = jax.jit(one_pass(jnp.bfloat16))(variables, a, b)
  assert got[0].dtype == want[0].dtype == jnp.bfloat16
  assert {x.dtype for x in jax.tree.leaves(got[2])} == {jnp.dtype("float32")}
  for g, w in zip(got[:2], want[:2]):  # bf16 has 8 mantissa bits: 2^-8 = 3.9e-3
    np.testing.assert_allclose(np.float32(g), np.float32(w), rtol=8e-3, atol=8e-3)
  jax.tree.map(functools.partial(np.testing.assert_allclose, **F32_TOL), got[2], want[2])


def test_same_variables_as_flax_batchnorm_and_init_leaves_the_statistics_alone():
  x = jnp.ones((4, 3))
  flax_vars = nn.BatchNorm(use_running_average=False).init(jax.random.key(0), x)
  ours = batchnorm.PerViewBatchNorm(views=2).init(jax.random.key(0), x)
  assert jax.tree.map(lambda v: (v.shape, v.dtype), ours) == jax.tree.map(
      lambda v: (v.shape, v.dtype), flax_vars)
  jax.tree.map(np.testing.assert_array_equal, ours, flax_vars)
  with pytest.raises(ValueError, match="views"):
    batchnorm.PerViewBatchNorm(views=2).init(jax.random.key(0), jnp.ones((3, 3)))
  assert isinstance(batchnorm.batch_norm(2, train=False), nn.BatchNorm)
  assert isinstance(batchnorm.batch_norm(1, train=True), nn.BatchNorm)


def test_axis_name_averages_each_views_statistics_over_the_shards():
  """Under shard_map with ``axis_name`` the statistics are those of the whole batch."""
  a, b = views(8)
  x = stack(a, b)
  variables = initial_variables(6)
  layer = lambda name: batchnorm.PerViewBatchNorm(views=2, axis_name=name, **OPTIONS)
  forward = lambda module: (lambda v, x: module.apply(v, x, mutable=["batch_stats"]))
  whole = forward(layer(None))(variables, x)
  mesh = parallel.make_mesh(jax.devices()[:2])
  sharded = jax.jit(jax.shard_map(
      forward(layer(parallel.DATA_AXIS)), mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
      out_specs=(P(parallel.DATA_AXIS), P())))(variables, x)
  jax.tree.map(functools.partial(np.testing.assert_allclose, **F32_TOL), sharded, whole)
