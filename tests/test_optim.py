"""LARS and the schedule against NumPy float64 transcriptions of the official PyTorch code."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vicreg_jax import config as config_lib
from vicreg_jax import optim


def official_lars(params, grads_per_step, lrs, *, wd=1e-6, momentum=0.9, eta=1e-3):
  """main_vicreg.py LARS.step(): decay and trust ratio skipped for 1-D parameters."""
  p = {k: np.asarray(v, np.float64).copy() for k, v in params.items()}
  mu = {k: np.zeros_like(v) for k, v in p.items()}
  for grads, lr in zip(grads_per_step, lrs):
    for k in p:
      dp = np.asarray(grads[k], np.float64).copy()
      if p[k].ndim != 1:
        dp = dp + wd * p[k]
        pn, un = np.linalg.norm(p[k]), np.linalg.norm(dp)
        q = eta * pn / un if (pn > 0 and un > 0) else 1.0
        dp = dp * q
      mu[k] = momentum * mu[k] + dp
      p[k] = p[k] - lr * mu[k]
  return p


def official_lr(step, *, base_lr, batch, epochs, steps_per_epoch):
  """main_vicreg.py adjust_learning_rate (warm-up 10 epochs, cosine to 0.001 x)."""
  max_steps = epochs * steps_per_epoch
  warmup = 10 * steps_per_epoch
  base = base_lr * batch / 256
  if step < warmup:
    return base * step / warmup
  step -= warmup
  max_steps -= warmup
  q = 0.5 * (1 + math.cos(math.pi * step / max_steps))
  end = base * 0.001
  return base * q + end * (1 - q)


@pytest.fixture(scope="module")
def problem():
  rng = np.random.default_rng(0)
  params = {"w": rng.standard_normal((6, 5)).astype(np.float32),
            "zero": np.zeros((3, 4), np.float32),     # norm 0 -> trust ratio 1
            "b": rng.standard_normal(5).astype(np.float32),
            "scale": np.ones(4, np.float32)}
  grads = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
           for _ in range(6)]
  lrs = [0.1, 0.3, 0.6, 0.9, 1.2, 1.5]  # warm-up: the rate changes every step
  return params, grads, lrs


def run_optax(tx, params, grads, lrs_unused=None):
  state = tx.init(params)
  p = jax.tree.map(jnp.asarray, params)
  for g in grads:
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
  return p


def test_lars_matches_official_update_with_changing_rate(problem):
  params, grads, lrs = problem
  schedule = lambda count: jnp.asarray(lrs)[count]
  got = run_optax(optim.lars(schedule), params, grads)
  want = official_lars(params, grads, lrs)
  for k in want:  # float32 vs float64: error relative to the leaf's largest entry
    err = np.max(np.abs(np.asarray(got[k], np.float64) - want[k])) / np.max(np.abs(want[k]))
    assert err <= 1e-6, (k, err)
  assert not np.allclose(want["zero"], 0)  # the zero leaf moved with ratio 1


def test_optax_lars_differs_when_the_rate_changes(problem):
  """optax.lars applies the rate before momentum: the test above can tell the difference."""
  params, grads, lrs = problem
  schedule = lambda count: jnp.asarray(lrs)[count]
  mask = optim.decay_and_adapt_mask
  got = run_optax(optax.lars(schedule, weight_decay=1e-6, weight_decay_mask=mask,
                             trust_ratio_mask=mask, trust_coefficient=1e-3, momentum=0.9),
                  params, grads)
  want = official_lars(params, grads, lrs)
  assert not np.allclose(np.asarray(got["b"], np.float64), want["b"], rtol=1e-3)


def test_schedule_matches_official_adjust_learning_rate():
  c = config_lib.base_config().optim
  spe, epochs, batch = 7, 30, 512
  schedule = optim.vicreg_schedule(c, global_batch=batch, steps_per_epoch=spe,
                                   total_steps=epochs * spe)
  for step in range(0, epochs * spe, 3):
    want = official_lr(step, base_lr=c.base_lr, batch=batch, epochs=epochs, steps_per_epoch=spe)
    np.testing.assert_allclose(float(schedule(step)), want, rtol=1e-5, atol=1e-7)
  assert optim.peak_learning_rate(0.2, 2048) == pytest.approx(1.6)


def test_schedule_rejects_empty_runs():
  c = config_lib.base_config().optim
  with pytest.raises(ValueError, match="num_train_steps"):
    optim.vicreg_schedule(c, global_batch=256, steps_per_epoch=10, total_steps=0)
  with pytest.raises(ValueError, match="batch_size"):
    optim.vicreg_schedule(c, global_batch=256, steps_per_epoch=0, total_steps=10)


def test_warmup_longer_than_run_is_clamped():
  c = config_lib.base_config().optim
  schedule = optim.vicreg_schedule(c, global_batch=256, steps_per_epoch=1, total_steps=4)
  values = [float(schedule(s)) for s in range(5)]
  assert values[0] == 0 and all(np.isfinite(values)) and max(values) <= c.base_lr + 1e-6
