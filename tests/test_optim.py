"""LARS and the schedule against NumPy float64 transcriptions of the official PyTorch code."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vicreg_jax import config as config_lib
from vicreg_jax import optim


def official_lars(params, grads_per_step, lrs, *, wd=1e-6, momentum=0.9, eta=1e-3):
  """main_vicreg.py LARS.step() in float64: decay and trust ratio skipped for 1-D parameters."""
  p = {k: np.asarray(v, np.float64).copy() for k, v in params.items()}
  mu = {k: np.zeros_like(v) for k, v in p.items()}
  for grads, lr in zip(grads_per_step, lrs):
    for k in p:
      dp = np.asarray(grads[k], np.float64).copy()
      if p[k].ndim != 1:
        dp = dp + wd * p[k]
        param_norm, update_norm = np.linalg.norm(p[k]), np.linalg.norm(dp)
        q = eta * param_norm / update_norm if (param_norm > 0 and update_norm > 0) else 1.0
        dp = dp * q
      mu[k] = momentum * mu[k] + dp
      p[k] = p[k] - lr * mu[k]
  return p


def official_lr(step, *, base_lr, batch, epochs, steps_per_epoch, warmup_epochs=10,
                end_ratio=0.001):
  """main_vicreg.py adjust_learning_rate (defaults: warm-up 10 epochs, cosine to 0.001 x)."""
  max_steps = epochs * steps_per_epoch
  warmup_steps = warmup_epochs * steps_per_epoch
  base = base_lr * batch / 256
  if step < warmup_steps:
    return base * step / warmup_steps
  step -= warmup_steps
  max_steps -= warmup_steps
  q = 0.5 * (1 + math.cos(math.pi * step / max_steps))
  end = base * end_ratio
  return base * q + end * (1 - q)


@pytest.fixture(scope="module")
def problem():
  """A Flax-like params tree (kernels, a zero kernel, bias, BN scale) and 8 steps of grads."""
  rng = np.random.default_rng(0)
  params = {"conv": {"kernel": rng.standard_normal((3, 3, 2, 4)).astype(np.float32)},
            "dense": {"kernel": rng.standard_normal((6, 5)).astype(np.float32),
                      "bias": rng.standard_normal(5).astype(np.float32)},
            "zero": {"kernel": np.zeros((3, 4), np.float32)},  # norm 0 -> trust ratio 1
            "bn": {"scale": np.ones(4, np.float32)}}
  grads = [jax.tree.map(lambda v: rng.standard_normal(v.shape).astype(np.float32), params)
           for _ in range(8)]
  # Warm-up over 4 steps then cosine: the rate changes at every step, starting from 0.
  lrs = [official_lr(s, base_lr=0.3, batch=512, epochs=12, steps_per_epoch=1, warmup_epochs=4)
         for s in range(8)]
  return params, grads, lrs


def run_optax(tx, params, grads):
  """Applies ``tx`` to ``params`` for each gradient, jitted as in the train step."""

  @jax.jit
  def step(p, state, g):
    updates, state = tx.update(g, state, p)
    return optax.apply_updates(p, updates), state

  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  for g in grads:
    p, state = step(p, state, g)
  return p


def flat(tree):
  return {jax.tree_util.keystr(path): np.asarray(v, np.float64)
          for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def deviation_from_official_wd(got, params, grads, lrs, wd):
  """Largest |got - official| per leaf, relative to the leaf's largest entry."""
  got, want = flat(got), official_lars(flat(params), [flat(g) for g in grads], lrs, wd=wd)
  return max(np.max(np.abs(got[k] - want[k])) / np.max(np.abs(want[k])) for k in want)


def deviation_from_official(got, params, grads, lrs):
  return deviation_from_official_wd(got, params, grads, lrs, wd=1e-6)


def array_schedule(lrs):
  return lambda count: jnp.asarray(lrs, jnp.float32)[count]


def test_lars_matches_official_update_with_changing_rate(problem):
  params, grads, lrs = problem
  got = run_optax(optim.lars(array_schedule(lrs)), params, grads)
  assert deviation_from_official(got, params, grads, lrs) <= 1e-6  # float32 vs float64
  assert np.all(np.asarray(got["zero"]["kernel"]) != 0)  # the zero leaf moved (ratio 1)


# Large enough that a missing or wrongly masked decay moves the parameters far beyond the
# float32 tolerance of the parity test (1e-6 deviates by ~1e-9 only: it cannot tell).
STRONG_DECAY = 0.05


def lars_variant(schedule, *, decay_mask, weight_decay=STRONG_DECAY):
  """Our LARS chain with another decay mask (mutations the parity test must catch)."""
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask=decay_mask),
      optax.masked(optax.scale_by_trust_ratio(trust_coefficient=1e-3),
                   optim.decay_and_adapt_mask),
      optax.trace(decay=0.9, nesterov=False),
      optax.scale_by_learning_rate(schedule))


def test_lars_matches_official_with_strong_weight_decay_and_detects_a_broken_decay(problem):
  params, grads, lrs = problem
  official = lambda got: deviation_from_official_wd(got, params, grads, lrs, STRONG_DECAY)
  got = run_optax(optim.lars(array_schedule(lrs), weight_decay=STRONG_DECAY), params, grads)
  assert official(got) <= 1e-6
  # Mutations: no decay, decay on every leaf (1-D ones too), decay on the 1-D leaves only.
  mutants = {
      "no decay": optim.lars(array_schedule(lrs), weight_decay=0.0),
      "decay everywhere": lars_variant(array_schedule(lrs), decay_mask=None),
      "inverted mask": lars_variant(
          array_schedule(lrs),
          decay_mask=lambda p: jax.tree.map(lambda m: not m, optim.decay_and_adapt_mask(p))),
  }
  for name, tx in mutants.items():
    assert official(run_optax(tx, params, grads)) > 1e-4, name


def test_optax_lars_with_the_same_masks_does_not_match(problem):
  """optax.lars applies the rate before momentum: the parity test above can tell."""
  params, grads, lrs = problem
  mask = optim.decay_and_adapt_mask
  got = run_optax(optax.lars(array_schedule(lrs), weight_decay=1e-6, weight_decay_mask=mask,
                             trust_ratio_mask=mask, trust_coefficient=1e-3, momentum=0.9),
                  params, grads)
  assert deviation_from_official(got, params, grads, lrs) > 1e-2


def test_mask_excludes_exactly_the_one_dimensional_leaves(problem):
  params, _, _ = problem
  assert optim.decay_and_adapt_mask(params) == {
      "conv": {"kernel": True}, "dense": {"kernel": True, "bias": False},
      "zero": {"kernel": True}, "bn": {"scale": False}}


def schedule_config(**overrides):
  c = config_lib.base_config().optim
  c.update(overrides)
  return c


def test_schedule_matches_official_adjust_learning_rate():
  c = schedule_config()
  spe, epochs, batch = 7, 30, 512
  schedule = optim.vicreg_schedule(c, global_batch=batch, steps_per_epoch=spe,
                                   total_steps=epochs * spe)
  steps = np.arange(epochs * spe)
  got = np.asarray(jax.vmap(schedule)(steps))
  want = [official_lr(int(s), base_lr=c.base_lr, batch=batch, epochs=epochs,
                      steps_per_epoch=spe) for s in steps]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert float(schedule(10 * spe)) == pytest.approx(c.base_lr * batch / 256)  # peak


def test_schedule_without_warmup_starts_at_the_peak():
  schedule = optim.vicreg_schedule(schedule_config(warmup_epochs=0), global_batch=256,
                                   steps_per_epoch=5, total_steps=50)
  assert float(schedule(0)) == pytest.approx(0.3)
  assert float(schedule(50)) == pytest.approx(0.3e-3)


def test_peak_learning_rate_scales_linearly_with_the_global_batch():
  assert optim.peak_learning_rate(0.2, 2048) == pytest.approx(1.6)
  assert optim.peak_learning_rate(0.5, 256) == pytest.approx(0.5)


def test_create_optimizer_uses_the_scaled_schedule(problem):
  params, grads, _ = problem
  tx, schedule = optim.create_optimizer(schedule_config(), global_batch=512,
                                        steps_per_epoch=1, total_steps=20)
  assert float(schedule(10)) == pytest.approx(0.6)
  assert jax.tree.structure(run_optax(tx, params, grads[:1])) == jax.tree.structure(params)


@pytest.mark.parametrize("overrides, kwargs, key", [
    ({}, dict(steps_per_epoch=10, total_steps=0), "num_train_steps"),
    ({}, dict(steps_per_epoch=0, total_steps=10), "batch_size"),
    ({"warmup_epochs": -1}, dict(steps_per_epoch=10, total_steps=10), "warmup_epochs"),
    ({"end_lr_ratio": 2.0}, dict(steps_per_epoch=10, total_steps=10), "end_lr_ratio"),
])
def test_schedule_rejects_invalid_settings_naming_the_key(overrides, kwargs, key):
  with pytest.raises(ValueError, match=key):
    optim.vicreg_schedule(schedule_config(**overrides), global_batch=256, **kwargs)


def test_warmup_longer_than_run_is_compressed_to_the_run():
  schedule = optim.vicreg_schedule(schedule_config(), global_batch=256, steps_per_epoch=1,
                                   total_steps=4)
  np.testing.assert_allclose([float(schedule(s)) for s in range(5)],
                             [0.0, 0.075, 0.15, 0.225, 0.3], rtol=1e-6)
