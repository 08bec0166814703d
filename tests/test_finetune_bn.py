"""Fine-tuning's BatchNorm statistics per group of examples (``eval.finetune.bn_group_size``).

One train step of the classifier engine against a reference that applies the backbone in
train mode to each group separately (plain Flax applies, no vmap): features, loss, updated
parameters and running averages (the first group's, as DDP's rank-0 buffers).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vicreg_jax import config as config_lib
from vicreg_jax import models, optim, parallel
from vicreg_jax.data import augment
from vicreg_jax.evaluate import classifier

BATCH, GROUP, NUM_CLASSES, SIDE = 16, 4, 5, 8
MEAN, STD = config_lib.IMAGENET_MEAN, config_lib.IMAGENET_STD


@pytest.fixture(scope="module")
def setup():
  """A tiny ResNet (one basic block per stage, base width 4, every kind of BatchNorm of a
  ResNet-18), its variables, a head, SGD and one batch of 8-px images whose last row is
  padding (weight 0)."""
  backbone = models.ResNet(stage_sizes=(1, 1, 1, 1), bottleneck=False, base_width=4,
                           small_stem=True)
  variables = jax.jit(lambda key: backbone.init(key, jnp.zeros((1, SIDE, SIDE, 3)),
                                                train=False))(jax.random.key(0))
  head = classifier.init_head(jax.random.key(1), classifier.representation_width(
      backbone, variables), NUM_CLASSES, 0.01)
  tx = optim.classifier_sgd(0.5, 0.1, momentum=0.9, weight_decay=0.0, epochs=1,
                            steps_per_epoch=1)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (BATCH, SIDE, SIDE, 3), dtype=np.uint8),
           "label": rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32),
           "weight": (np.arange(BATCH) < BATCH - 1).astype(np.float32)}
  return backbone, variables, head, tx, batch


def engine_step(setup, bn_group_size):
  """One jitted fine-tune step of the engine on the 8-device mesh: ``(state, loss)``."""
  backbone, variables, head, tx, batch = setup
  mesh = parallel.make_mesh()
  state = classifier.create_state(variables, head, tx, mesh)
  train_step, _ = classifier.make_steps(backbone, tx, finetune=True, mean=MEAN, std=STD,
                                        mesh=mesh, bn_group_size=bn_group_size)
  state, metrics = train_step(state, parallel.host_to_global(mesh, batch))
  return jax.device_get(state), float(metrics["loss"])


@pytest.fixture(scope="module")
def engine(setup):
  """``{bn_group_size: engine_step}`` for groups of GROUP, the global batch (0) and BATCH."""
  return {size: engine_step(setup, size) for size in (GROUP, 0, BATCH)}


def reference_step(setup):
  """The same step with the backbone applied to each group of GROUP examples separately."""
  backbone, variables, head, tx, batch = setup

  x = augment.normalize(augment.to_float(jnp.asarray(batch["image"])), MEAN, STD)

  def loss_fn(params):
    reps, stats = [], []
    for start in range(0, BATCH, GROUP):
      out, updates = backbone.apply(
          {"params": params["backbone"], "batch_stats": variables["batch_stats"]},
          x[start:start + GROUP], train=True, mutable=["batch_stats"])
      reps.append(out)
      stats.append(updates["batch_stats"])
    logits = jnp.concatenate(reps) @ params["head"]["kernel"] + params["head"]["bias"]
    losses = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["label"][:, None], 1)
    return jnp.sum(batch["weight"] * losses[:, 0]) / jnp.sum(batch["weight"]), stats[0]

  @jax.jit
  def step(params):
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    return jax.tree.map(jnp.add, params, updates), stats, loss

  params, stats, loss = step({"backbone": variables["params"], "head": head})
  return params, stats, float(loss)


def assert_trees_close(actual, expected, **tolerance):
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tolerance), actual, expected)


def test_group_statistics_match_separate_applies_and_differ_from_the_global_batch(setup,
                                                                                   engine):
  state, loss = engine[GROUP]
  params, stats, want_loss = reference_step(setup)
  assert loss == pytest.approx(want_loss, rel=1e-5)
  assert_trees_close(state.batch_stats, stats, rtol=1e-5, atol=1e-6)
  assert_trees_close(state.params, params, rtol=1e-4, atol=1e-6)

  global_state, global_loss = engine[0]
  assert abs(global_loss - loss) > 1e-4
  assert np.abs(global_state.batch_stats["bn1"]["mean"]
                - state.batch_stats["bn1"]["mean"]).max() > 1e-3


def test_one_group_of_the_whole_batch_is_the_global_batch(engine):
  """k = B normalises over the global batch, as bn_group_size=0 (today's SyncBN path)."""
  state, loss = engine[BATCH]
  global_state, global_loss = engine[0]
  assert loss == pytest.approx(global_loss, rel=1e-6)
  assert_trees_close(state.batch_stats, global_state.batch_stats, rtol=1e-5, atol=1e-6)


def test_group_sizes_that_do_not_divide_the_batch_are_refused_naming_the_key(setup):
  with pytest.raises(ValueError, match="eval.finetune.bn_group_size=5 does not divide"):
    engine_step(setup, 5)
  backbone, _, _, tx, _ = setup
  with pytest.raises(ValueError, match="eval.finetune.bn_group_size"):
    classifier.make_steps(backbone, tx, finetune=False, mean=MEAN, std=STD,
                          mesh=parallel.make_mesh(), bn_group_size=GROUP)
  for size in (-1, 48):  # batch 256: not a divisor
    c = config_lib.base_config()
    c.eval.finetune.bn_group_size = size
    with pytest.raises(ValueError, match="eval.finetune.bn_group_size"):
      config_lib.validate_eval(c.eval)
  c.eval.finetune.bn_group_size = 0
  config_lib.validate_eval(c.eval)
