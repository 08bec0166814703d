"""Online linear probe during pretraining: stop-gradient, learning, labels and validation."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vicreg_jax import config as config_lib
from vicreg_jax import losses, models, parallel, train
from vicreg_jax.data import memory

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"


def tiny_config(**overrides):
  return config_lib.load_config_file(f"{CONFIG_DIR}/demo.py:tiny", **overrides)


def test_probe_leaves_the_encoder_gradients_unchanged():
  config = tiny_config(**{"model.online_probe_classes": 10})
  with_probe = models.create_model(config.model)
  without = models.create_model(tiny_config().model)
  rng = np.random.default_rng(0)
  x_a, x_b = (jnp.asarray(rng.standard_normal((16, 8, 8, 3)), jnp.float32) for _ in range(2))
  labels = jnp.asarray(rng.integers(0, 10, 16))
  variables = with_probe.init(jax.random.key(0), x_a, x_b, train=False)
  assert "online_probe" in variables["params"]
  plain = {c: {k: v for k, v in variables[c].items() if k != "online_probe"}
           for c in variables}
  assert set(without.init(jax.random.key(0), x_a, x_b, train=False)["params"]) == set(
      plain["params"])

  def loss(model, params, probe):
    out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x_a, x_b,
                         train=True, mutable=["batch_stats"])
    value, _ = losses.vicreg_loss(out["embedding_a"], out["embedding_b"])
    if probe:
      value += jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out["probe_logits"],
                                                                        labels))
    return value

  grads = jax.grad(lambda p: loss(with_probe, p, True))(variables["params"])
  want = jax.grad(lambda p: loss(without, p, False))(plain["params"])
  assert float(optax.tree.norm(grads["online_probe"])) > 0
  for name in want:
    for a, b in zip(jax.tree.leaves(grads[name]), jax.tree.leaves(want[name])):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_probe_learns_digits_in_the_train_step():
  config = tiny_config(**{"model.online_probe_classes": 10, "batch_size": 64})
  mesh = parallel.make_mesh()
  model = models.create_model(config.model)
  tx = optax.sgd(0.3)  # a plain rate: the recipe's warm-up would keep the head still
  state = train.init_train_state(config, model, tx, mesh)
  step = train.compile_train_step(train.make_train_step(config, model, tx, lambda s: 0.3), mesh)
  source = memory.MemoryViewSource(config, mesh)
  history = []
  for _ in range(30):
    state, metrics = step(state, next(source))
    history.append(jax.device_get(metrics))
  first = np.mean([m["online_probe_loss"] for m in history[:5]])
  last = np.mean([m["online_probe_loss"] for m in history[-5:]])
  top1 = np.mean([m["online_probe_top1"] for m in history[-5:]])
  assert last < 0.95 * first and top1 > 15, (first, last, top1)  # chance: 10%


def test_probe_needs_labels_in_range_and_an_in_memory_source():
  config = tiny_config(**{"model.online_probe_classes": 5})
  with pytest.raises(ValueError, match="online_probe_classes=5; set it to 10"):
    memory.MemoryViewSource(config, parallel.make_mesh())
  for overrides, match in ((({"data.source": "tfds"}), "data.source=memory"),
                           (({"model.online_probe_classes": -1}), ">= 0")):
    config = tiny_config(**{"model.online_probe_classes": 10, **overrides})
    with pytest.raises(ValueError, match=match):
      config_lib.validate(config)
