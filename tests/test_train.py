"""The pretraining step and loop: sharding invariance, learning, checkpoints, resume."""

import contextlib
import json
import os

import jax
import numpy as np
import pytest

from conftest import tiny_config
from vicreg_jax import checkpoint, models, optim, parallel, train



def build(config, mesh):
  model = models.create_model(config.model)
  tx, schedule = optim.create_optimizer(config.optim, global_batch=config.batch_size,
                                        steps_per_epoch=4, total_steps=40)
  state = train.create_train_state(config, model, tx, mesh)
  step = train.compile_train_step(train.make_train_step(config, model, tx, schedule), mesh)
  return state, step


def random_batches(config, n):
  rng = np.random.default_rng(0)
  shape = (config.batch_size, config.augment.image_size, config.augment.image_size, 3)
  return [{k: rng.integers(0, 256, shape, dtype=np.uint8) for k in ("view_a", "view_b")}
          for _ in range(n)]


def rel_diff(a, b):
  leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b))
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / (np.max(np.abs(np.asarray(y))) + 1e-12))
             for x, y in leaves)


def test_sharded_step_equals_single_device_step():
  """8-way data parallel steps give the parameters of 1-device steps on the same batches."""
  config = tiny_config()
  batches = random_batches(config, 2)
  params = {}
  for n_dev in (1, 8):
    mesh = parallel.make_mesh(jax.devices()[:n_dev])
    state, step = build(config, mesh)
    for b in batches:
      state, metrics = step(state, parallel.host_to_global(mesh, b))
    assert np.isfinite(float(metrics["loss"]))
    params[n_dev] = jax.device_get(state.params)
    stats = jax.device_get(state.batch_stats)
  assert rel_diff(params[8], params[1]) <= 1e-5
  assert jax.tree.leaves(stats)  # BN statistics are part of the state


def test_one_pass_and_two_pass_steps_give_the_same_state_on_8_devices():
  """Both views in one stacked pass (per-view BatchNorm) or in two passes: after 2 sharded
  steps, parameters, BN running averages and optimizer state agree to float32 rounding."""
  batches = random_batches(tiny_config(), 2)
  mesh = parallel.make_mesh()
  states = {}
  for mode in ("one_pass", "two_pass"):
    state, step = build(tiny_config(**{"model.view_batching": mode}), mesh)
    for b in batches:
      state, _ = step(state, parallel.host_to_global(mesh, b))
    states[mode] = jax.device_get(state)
  one, two = states["one_pass"], states["two_pass"]
  assert jax.tree.structure(one) == jax.tree.structure(two)
  assert rel_diff((one.params, one.batch_stats), (two.params, two.batch_stats)) <= 1e-5
  # The momentum of the expander's pre-BatchNorm biases is float noise in both modes (their
  # gradient is analytically zero), so the optimizer state is compared on the tree's scale.
  trace = lambda s: jax.tree.leaves(s.opt_state)
  scale = max(np.max(np.abs(x)) for x in trace(two) if np.issubdtype(x.dtype, np.floating))
  for x, y in zip(trace(one), trace(two)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6 * scale)


def test_nonfinite_update_is_dropped_and_recorded():
  config = tiny_config()
  mesh = parallel.make_mesh()
  state, step = build(config, mesh)
  before = jax.device_get(state.params)
  poisoned = jax.tree.map(lambda p: p * np.nan, state.params)
  state = state.replace(params=jax.tree.map(lambda p, q: p.at[...].set(q), state.params, poisoned))
  batch = parallel.host_to_global(mesh, random_batches(config, 1)[0])
  new_state, metrics = step(state, batch)
  assert int(new_state.first_nonfinite_step) == 0 and int(new_state.nonfinite_steps) == 1
  message = train.nonfinite_message(new_state)
  assert "step 0" in message and "loss=nan" in message
  del before


def test_loop_learns_checkpoints_and_resumes_exactly(tmp_path, monkeypatch):
  """A run stopped after k steps and restarted ends with the uninterrupted run's parameters."""
  config = tiny_config(num_train_steps=8)
  full = train.train_and_evaluate(config, str(tmp_path / "full"))

  class StopAfter:
    """Pretends a SIGTERM arrives after 3 steps."""
    checks = 0

    def is_set(self):
      StopAfter.checks += 1
      return StopAfter.checks > 3

  monkeypatch.setattr(train.signals, "graceful_stop", lambda: contextlib.nullcontext(StopAfter()))
  first = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert int(first.state.step) < 8 and not first.finished
  assert not (tmp_path / "resumed" / "export").exists()  # only a finished run exports
  monkeypatch.undo()
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert int(resumed.state.step) == 8
  for x, y in zip(jax.tree.leaves(jax.device_get(full.state)),
                  jax.tree.leaves(jax.device_get(resumed.state))):
    np.testing.assert_array_equal(x, y)  # bit for bit on CPU

  lines = [json.loads(l) for l in open(tmp_path / "full" / "metrics.jsonl")]
  assert [l["step"] for l in lines] == [2, 4, 6, 8]
  assert all(np.isfinite(l["loss"]) for l in lines)
  assert sorted(os.listdir(tmp_path / "full" / checkpoint.CHECKPOINT_DIR))[-1] == "8"


def test_batch_not_divisible_by_devices_fails_before_compiling(tmp_path):
  with pytest.raises(ValueError, match="multiple of 8"):
    train.train_and_evaluate(tiny_config(batch_size=12), str(tmp_path))


def test_loss_decreases_on_the_tiny_config():
  """20 LARS steps on digits views lower the VICReg loss (same model, data and step as the CLI)."""
  from vicreg_jax import data  # pylint: disable=g-import-not-at-top
  config = tiny_config(batch_size=64)
  mesh = parallel.make_mesh()
  model = models.create_model(config.model)
  tx = optim.lars(0.5)
  state = train.create_train_state(config, model, tx, mesh)
  step = train.compile_train_step(
      train.make_train_step(config, model, tx, lambda s: 0.5), mesh)
  source = data.create_view_source(config, mesh).iterate(0)
  losses = []
  for _ in range(20):
    state, metrics = step(state, next(source))
    losses.append(float(metrics["loss"]))
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1, losses


def test_init_compiled_for_a_quick_start_gives_the_default_initial_state(monkeypatch):
  """On CPU the one-shot init is compiled with LLVM at -O0: the same initial state as XLA's
  default compilation, up to the last bits of the random normal's approximations."""
  config = tiny_config()
  mesh = parallel.make_mesh()
  model = models.create_model(config.model)
  tx = optim.lars(0.5)
  quick = jax.device_get(train.create_train_state(config, model, tx, mesh))
  assert train.ONE_SHOT_CPU_COMPILER_OPTIONS["xla_backend_optimization_level"] == 0
  monkeypatch.setattr(train, "ONE_SHOT_CPU_COMPILER_OPTIONS", None)
  default = jax.device_get(train.create_train_state(config, model, tx, mesh))
  for a, b in zip(jax.tree.leaves(quick), jax.tree.leaves(default)):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=1e-6, atol=1e-7 * max(1.0, float(np.max(np.abs(b)))))
