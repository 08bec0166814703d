"""ZeRO stage 1 (``config.parallel.shard_optimizer_state``): same training, 1/N of the state."""

import jax
import numpy as np
import pytest

from conftest import tiny_config
from test_train import random_batches
from vicreg_jax import checkpoint, models, optim, parallel, train

# Leaves of the tiny network from 3x3x16x16 kernels up are sharded at this threshold; the
# biases, BatchNorm parameters and the step count stay replicated.
MIN_ELEMENTS = 512
SHARDED = {"parallel.shard_optimizer_state": True, "parallel.shard_min_elements": MIN_ELEMENTS}


def build(config, mesh):
  """State and compiled step as ``train._train`` makes them (same optimiser as test_train)."""
  model = models.create_model(config.model)
  tx, schedule = optim.create_optimizer(config.optim, global_batch=config.batch_size,
                                        steps_per_epoch=4, total_steps=40)
  state = train.create_train_state(config, model, tx, mesh)
  step = train.compile_train_step(train.make_train_step(config, model, tx, schedule, mesh),
                                  mesh, train.state_shardings(config, mesh, state))
  return state, step


def assert_close(actual, expected, rtol, atol):
  """Leaf by leaf, within ``rtol`` of the leaf's largest magnitude (or ``atol``, if larger).

  Relative to the leaf's scale, not per element: BatchNorm biases start at 0 and stay sums of
  cancelling gradient terms (~1e-9 after 3 steps), where a per-element rtol compares rounding
  noise with itself (it failed at random by 1.1e-5 on such an element).
  """
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(actual),
                          jax.tree.leaves(expected)):
    scale = float(np.max(np.abs(y))) if np.size(y) else 0.0
    np.testing.assert_allclose(x, y, rtol=0, atol=max(atol, rtol * scale),
                               err_msg=jax.tree_util.keystr(path))


def test_axis_choice():
  assert parallel.sharded_axis((3, 3, 64, 128), 8, 1) == 3       # the largest axis
  assert parallel.sharded_axis((2048, 8192), 256, 1) == 1
  assert parallel.sharded_axis((3, 3, 64, 36), 8, 1) == 2       # the largest that divides
  assert parallel.sharded_axis((8192,), 8, 2**16) is None        # below the threshold
  assert parallel.sharded_axis((3, 5, 7), 8, 1) is None          # nothing divides
  assert parallel.sharded_axis((), 8, 1) is None                 # scalars


def test_sharded_step_equals_replicated_step():
  """3 steps with the LARS momentum split over 8 devices give the replicated step's
  parameters, BN statistics and momentum, and each device holds 1/8 of the large leaves.

  Not bit for bit: the trust ratio's norms are summed per slice and then across devices (and
  the gradient reduction may be ordered differently), so float32 rounding differs: 1e-5 of
  each leaf's scale. The momentum of the expander's linear biases, whose exact gradient is 0 (a
  BatchNorm follows), is rounding noise of ~1e-7 in both: atol 1e-6.
  """
  mesh = parallel.make_mesh()
  batches = [parallel.host_to_global(mesh, b) for b in random_batches(tiny_config(), 3)]
  states = {}
  for shard in (False, True):
    config = tiny_config(**{**SHARDED, "parallel.shard_optimizer_state": shard})
    state, step = build(config, mesh)
    for batch in batches:
      state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    states[shard] = state

  sharded, replicated = states[True], states[False]
  full = per_device = 0
  for leaf in jax.tree.leaves(sharded.opt_state):
    axis = parallel.sharded_axis(leaf.shape, 8, MIN_ELEMENTS)
    shard_shapes = {s.data.shape for s in leaf.addressable_shards}
    expected = list(leaf.shape)
    if axis is not None:
      expected[axis] //= 8
    assert shard_shapes == {tuple(expected)}, (leaf.shape, shard_shapes)
    full += leaf.nbytes
    per_device += leaf.addressable_shards[0].data.nbytes
  assert per_device < 0.25 * full  # most of the momentum's bytes are in sharded leaves
  assert all(leaf.sharding.is_fully_replicated
             for leaf in jax.tree.leaves((sharded.params, sharded.batch_stats)))

  host = jax.device_get((sharded, replicated))
  assert_close(host[0].params, host[1].params, rtol=1e-5, atol=0)
  assert_close(host[0].batch_stats, host[1].batch_stats, rtol=1e-5, atol=0)
  assert_close(host[0].opt_state, host[1].opt_state, rtol=1e-5, atol=1e-6)


def test_nothing_to_shard_is_refused_before_compiling():
  config = tiny_config(**{"parallel.shard_optimizer_state": True})  # 2**16: none that big
  model = models.create_model(config.model)
  with pytest.raises(ValueError, match="nothing would be sharded"):
    train.create_train_state(config, model, optim.lars(0.1), parallel.make_mesh())
  with pytest.raises(ValueError, match="needs the mesh"):
    train.make_train_step(config, model, optim.lars(0.1), lambda s: 0.1)


@pytest.mark.parametrize("value", [0, -3])
def test_bad_threshold_is_refused(value):
  from vicreg_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="shard_min_elements"):
    config_lib.validate(tiny_config(**{"parallel.shard_min_elements": value}))


def test_sharded_state_saves_restores_and_continues_exactly(tmp_path):
  """2 sharded steps, an Orbax save and a restore into a fresh sharded state, then 2 more
  steps: bit for bit the 4 uninterrupted steps (the step compiled above, from the cache).
  The same checkpoint also restores into the replicated layout of the default."""
  config = tiny_config(**SHARDED)
  mesh = parallel.make_mesh()
  batches = [parallel.host_to_global(mesh, b) for b in random_batches(config, 4)]
  state, step = build(config, mesh)
  fresh = jax.tree.map(lambda x: x.copy(), state)  # the step donates its input
  for batch in batches:
    state, _ = step(state, batch)

  resumed = fresh
  for batch in batches[:2]:
    resumed, _ = step(resumed, batch)
  manager = checkpoint.create_manager(str(tmp_path), config.checkpoint)
  try:
    checkpoint.save(manager, 2, resumed, config, force=True)
    manager.wait_until_finished()
    target, _ = build(config, mesh)
    restored, at = checkpoint.restore_latest(manager, target, config, str(tmp_path))
    plain = tiny_config()
    layout = train.state_shardings(plain, mesh, target)
    as_default, _ = checkpoint.restore_latest(
        manager, jax.tree.map(jax.device_put, target, layout), plain, str(tmp_path))
  finally:
    manager.close()
  assert at == 2
  for x, y, z in zip(jax.tree.leaves(restored), jax.tree.leaves(resumed),
                     jax.tree.leaves(as_default)):
    assert x.sharding == y.sharding and z.sharding.is_fully_replicated
    np.testing.assert_array_equal(jax.device_get(x), jax.device_get(y))
    np.testing.assert_array_equal(jax.device_get(z), jax.device_get(y))
  for batch in batches[2:]:
    restored, _ = step(restored, batch)
  for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert x.sharding == y.sharding
    np.testing.assert_array_equal(jax.device_get(x), jax.device_get(y))
