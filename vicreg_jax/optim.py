"""The official VICReg optimizer: LARS as an optax chain, and the warm-up + cosine schedule.

Per step (``main_vicreg.py``): ``g += wd * p`` and ``g *= eta * ||p|| / ||g||`` for every
parameter with more than one dimension (biases and BatchNorm scales/offsets are excluded from
both), then ``mu = momentum * mu + g`` and ``p -= lr * mu``: the learning rate is applied
AFTER momentum. ``optax.lars`` applies it before, which differs whenever the rate changes.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax

# Batch size the official base learning rates refer to (lr = base_lr * batch / 256).
REFERENCE_BATCH = 256


def decay_and_adapt_mask(params: Any) -> Any:
  """True for parameters that get weight decay and the trust ratio (``ndim != 1``)."""
  return jax.tree.map(lambda p: p.ndim != 1, params)


def lars(learning_rate: float | optax.Schedule, *, weight_decay: float = 1e-6,
         momentum: float = 0.9, trust_coefficient: float = 1e-3) -> optax.GradientTransformation:
  """LARS exactly as the official VICReg code: masked decay and trust ratio, lr after momentum.

  Args:
    learning_rate: a float or an optax schedule (step -> lr).
    weight_decay: L2 coefficient added to the gradient of multi-dimensional parameters.
    momentum: heavy-ball momentum (no Nesterov).
    trust_coefficient: eta in ``eta * ||p|| / ||g||`` (ratio 1 where either norm is 0).
  """
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask=decay_and_adapt_mask),
      optax.masked(optax.scale_by_trust_ratio(trust_coefficient=trust_coefficient),
                   decay_and_adapt_mask),
      optax.trace(decay=momentum, nesterov=False),
      optax.scale_by_learning_rate(learning_rate),
  )


def peak_learning_rate(base_lr: float, global_batch: int) -> float:
  """Linear scaling rule of the official code: ``base_lr * global_batch / 256``."""
  return base_lr * global_batch / REFERENCE_BATCH


def vicreg_schedule(optim_config: ml_collections.ConfigDict, *, global_batch: int,
                    steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """Per-step lr: linear warm-up from 0 over ``warmup_epochs``, cosine to ``end_lr_ratio``x peak.

  Equals the official ``adjust_learning_rate``. Warm-up longer than the run is clamped to
  the run (the whole run is then warm-up).
  """
  if total_steps <= 0:
    raise ValueError(f"total_steps={total_steps}; set --config.epochs or "
                     "--config.num_train_steps to a positive number.")
  if steps_per_epoch <= 0:
    raise ValueError(f"steps_per_epoch={steps_per_epoch}; the dataset is smaller than one "
                     "batch. Lower --config.batch_size.")
  peak = peak_learning_rate(optim_config.base_lr, global_batch)
  warmup = int(optim_config.warmup_epochs * steps_per_epoch)
  if warmup >= total_steps:
    return optax.linear_schedule(0.0, float(peak), total_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=float(peak), warmup_steps=warmup, decay_steps=total_steps,
      end_value=float(peak * optim_config.end_lr_ratio))


def create_optimizer(optim_config: ml_collections.ConfigDict, *, global_batch: int,
                     steps_per_epoch: int, total_steps: int
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """LARS with the VICReg schedule, both from ``config.optim``."""
  schedule = vicreg_schedule(optim_config, global_batch=global_batch,
                             steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  tx = lars(schedule, weight_decay=optim_config.weight_decay, momentum=optim_config.momentum,
            trust_coefficient=optim_config.trust_coefficient)
  return tx, schedule
