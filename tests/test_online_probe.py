"""Online linear probe during pretraining: stop-gradient, learning, labels and validation."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_config
from vicreg_jax import config as config_lib
from vicreg_jax import models, parallel, train
from vicreg_jax.data import SyntheticViewSource, datasets, in_memory

PROBE = "online_probe"


def label_args(config):
  """The label arguments the training loop gives a view source for ``config``."""
  classes = config.model.online_probe_classes
  return dict(with_labels=classes > 0, num_classes=classes)


LR = 0.3  # a plain rate: the recipe's warm-up would keep the head still for these few steps


def recording_sgd() -> optax.GradientTransformation:
  """SGD whose state is the last step's gradients, so the tests read them exactly."""
  return optax.GradientTransformation(
      lambda params: jax.tree.map(jnp.zeros_like, params),
      lambda grads, state, params=None: (jax.tree.map(lambda g: -LR * g, grads), grads))


def probe_run(config, mesh):
  """``(state, compiled step)`` with :func:`recording_sgd`; the same program in each test,
  so the persistent compilation cache of ``conftest.py`` compiles it once."""
  model = models.create_model(config.model)
  state = train.create_train_state(config, model, recording_sgd(), mesh)
  step = train.make_train_step(config, model, recording_sgd(), lambda count: LR)
  return state, train.compile_train_step(step, mesh)


def probe_config(classes=10):
  return tiny_config(**{"model.online_probe_classes": classes, "batch_size": 64})


def test_probe_leaves_the_encoder_gradients_unchanged():
  """Same state and batch: the train step's non-probe gradients equal the probe-off ones."""
  mesh = parallel.make_mesh()
  config = probe_config()
  batch = next(in_memory.MemoryViewSource(config, mesh, **label_args(config)).iterate())
  state_on, step_on = probe_run(config, mesh)
  # The probe-off state is a copy of the same state without the head (the step donates it).
  without_head = lambda tree: {k: v for k, v in tree.items() if k != PROBE}
  state_off = jax.device_put(jax.device_get(state_on.replace(
      params=without_head(state_on.params), opt_state=without_head(state_on.opt_state))),
                             parallel.replicated(mesh))
  model_off = models.create_model(probe_config(0).model)
  step_off = train.compile_train_step(train.make_train_step(
      probe_config(0), model_off, recording_sgd(), lambda count: LR), mesh)
  state_off, metrics_off = step_off(state_off, batch)
  state_on, metrics_on = step_on(state_on, batch)
  grads_off, grads_on = jax.device_get((state_off.opt_state, state_on.opt_state))
  metrics_off, metrics_on = jax.device_get((metrics_off, metrics_on))

  assert set(grads_on) == set(grads_off) | {PROBE}
  assert float(optax.tree.norm(grads_on[PROBE])) > 0
  for name in grads_off:  # backbone and expander: VICReg's gradients
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-10),
                 grads_on[name], grads_off[name])
  # The "loss" metric stays VICReg's; the probe adds its own metrics.
  assert metrics_on["loss"] == pytest.approx(metrics_off["loss"], rel=1e-6)
  assert not {"online_probe_loss", "online_probe_top1"} & set(metrics_off)
  assert np.isfinite(metrics_on["online_probe_loss"]) and metrics_on["online_probe_loss"] > 0
  assert 0 <= metrics_on["online_probe_top1"] <= 100
  assert metrics_on["online_probe_top1"].dtype == np.float32

  # A label outside [0, classes) is a non-finite step (update dropped), never a wrong class.
  host = jax.device_get(batch)
  for bad in (-1, 10):
    label = host["label"].copy()
    label[0] = bad
    state_on, _ = step_on(state_on, parallel.host_to_global(mesh, dict(host, label=label)))
  assert int(state_on.nonfinite_steps) == 2, int(state_on.nonfinite_steps)


def test_parameter_tree_and_backbone_variables():
  """Probe off: today's tree; on: one float32 Dense head that export never sees."""
  shapes = {}
  for classes in (0, 7):
    config = tiny_config(**{"model.online_probe_classes": classes})
    model = models.create_model(config.model)
    x = jnp.zeros((2, 8, 8, 3), jnp.float32)
    shapes[classes] = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), x, x,
                                                            train=False))
    out = jax.eval_shape(lambda v, m=model: m.apply(v, x, x, train=False), shapes[classes])
    assert ("probe_logits" in out) == bool(classes)
  off, on = shapes[0], shapes[7]
  assert PROBE not in off["params"] and PROBE not in off["batch_stats"]
  assert PROBE not in on["batch_stats"]
  dim = models.representation_dim("resnet18", 1, 4)
  assert {k: (v.shape, v.dtype) for k, v in on["params"][PROBE].items()} == {
      "kernel": ((dim, 7), jnp.float32), "bias": ((7,), jnp.float32)}
  assert jax.tree.structure({k: v for k, v in on["params"].items() if k != PROBE}) == (
      jax.tree.structure(off["params"]))
  assert jax.tree.structure(models.backbone_variables(on)) == jax.tree.structure(
      models.backbone_variables(off))
  assert out["probe_logits"].shape == (2, 7) and out["probe_logits"].dtype == jnp.float32


def probe_only_sgd() -> optax.GradientTransformation:
  """SGD on the probe head alone; the encoder and expander keep their initial values."""
  groups = lambda params: {k: "probe" if k == PROBE else "frozen" for k in params}
  return optax.multi_transform({"probe": optax.sgd(LR), "frozen": optax.set_to_zero()},
                              groups)


def test_probe_learns_digits_in_the_train_step():
  """The head gets a gradient that fits the labels: with the encoder frozen, on one fixed
  batch of digits (its views re-augmented each step), the head's loss falls and its top-1
  rises well above where it started.

  Co-training the encoder at this rate and scoring fresh batches made the outcome depend on
  the machine's rounding: the tiny random encoder's features are weak, and 30 steps reached
  10.3% top-1 (chance 10%) on one machine, over 15% on another.
  """
  mesh = parallel.make_mesh()
  config = probe_config()
  model = models.create_model(config.model)
  state = train.create_train_state(config, model, probe_only_sgd(), mesh)
  step = train.compile_train_step(
      train.make_train_step(config, model, probe_only_sgd(), lambda count: LR), mesh)
  batch = next(in_memory.MemoryViewSource(config, mesh, **label_args(config)).iterate())
  losses, top1 = [], []
  for _ in range(30):
    state, metrics = step(state, batch)
    losses.append(float(metrics["online_probe_loss"]))
    top1.append(float(metrics["online_probe_top1"]))
  print(f"probe loss {losses[0]:.3f} -> {losses[-1]:.3f}, top-1 {top1[0]:.1f} -> {top1[-1]:.1f}%")
  # Step 1's metrics are the initial head's; the last five, the trained head's.
  assert np.mean(losses[-5:]) < 0.95 * losses[0], losses  # a head without gradient: equal
  assert np.mean(top1[-5:]) > top1[0] + 5, top1           # measured here: 10.9 -> ~27%


def test_sources_yield_labels_of_the_chosen_images():
  mesh = parallel.make_mesh()
  # Whole-image crops at the native 8 px: each view is its digit, which names its label.
  config = tiny_config(**{"model.online_probe_classes": 10, "augment.crop_scale": (1.0, 1.0),
                          "augment.crop_ratio": (1.0, 1.0)})
  images, labels = datasets.load_arrays(config.data, config.data.split)
  label_of = {}
  for image, label in zip(images, labels):
    label_of.setdefault(image.tobytes(), set()).add(int(label))
  source = in_memory.MemoryViewSource(config, mesh, **label_args(config)).iterate()
  for _ in range(2):
    batch = next(source)
    assert batch["label"].dtype == jnp.int32 and batch["label"].shape == (config.batch_size,)
    assert batch["label"].sharding == batch["view_a"].sharding
    for view, label in zip(np.asarray(batch["view_a"]), np.asarray(batch["label"])):
      assert int(label) in label_of[view.tobytes()]
  assert "label" not in next(in_memory.MemoryViewSource(tiny_config(), mesh).iterate())

  batch = next(SyntheticViewSource(config, mesh, **label_args(config)).iterate())
  label = np.asarray(batch["label"])
  assert label.dtype == np.int32 and label.shape == (config.batch_size,)
  assert 0 <= label.min() and label.max() < 10
  assert batch["label"].sharding == batch["view_a"].sharding
  assert "label" not in next(SyntheticViewSource(tiny_config(), mesh).iterate())


def test_probe_needs_labels_in_range_and_an_in_memory_source(tmp_path):
  mesh = parallel.make_mesh()
  config = tiny_config(**{"model.online_probe_classes": 5})
  with pytest.raises(ValueError, match="online_probe_classes=5; set it to 10"):
    in_memory.MemoryViewSource(config, mesh, **label_args(config))
  images = np.zeros((32, 8, 8, 3), np.uint8)
  for name, arrays, match in (("unlabelled", dict(labels=np.full(32, -1)), "unlabelled"),
                              ("nolabels", {}, "no 'labels' array")):
    path = tmp_path / f"{name}.npz"
    np.savez(path, images=images, **arrays)
    config = tiny_config(**{"model.online_probe_classes": 10, "data.name": "npz",
                            "data.path": str(path)})
    with pytest.raises(ValueError, match=match):
      in_memory.MemoryViewSource(config, mesh, **label_args(config))
  config_lib.validate(tiny_config(**{"model.online_probe_classes": 10}))
  config_lib.validate(tiny_config(**{"model.online_probe_classes": 10,
                                     "data.source": "synthetic"}))
  for overrides, match in (({"data.source": "tfds"}, "data.source=memory"),
                           ({"data.source": "folder", "data.path": "/x"}, "data.source=memory"),
                           ({"model.online_probe_classes": -1}, ">= 0")):
    config = tiny_config(**{"model.online_probe_classes": 10, **overrides})
    with pytest.raises(ValueError, match=match):
      config_lib.validate(config)
