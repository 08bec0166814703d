"""Optimizers: the official VICReg LARS + warm-up/cosine schedule, and the evaluation SGD.

Per step (``main_vicreg.py``): ``g += wd * p`` and ``g *= eta * ||p|| / ||g||`` for every
parameter whose ``ndim != 1`` (biases and BatchNorm scales/offsets are excluded from both),
then ``mu = momentum * mu + g`` and ``p -= lr * mu``: the learning rate is applied AFTER
momentum. ``optax.lars`` applies it before (its momentum buffer accumulates lr-scaled
updates), which differs whenever the rate changes, i.e. during warm-up and the cosine decay.

Evaluation (linear probe, fine-tuning; the official ``evaluate.py``): PyTorch SGD
(``d = g + wd * p; buf = momentum * buf + d; p -= lr * buf``) with each group's rate annealed
by ``CosineAnnealingLR(T_max=epochs)`` stepped once per epoch.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

# Batch size the official base learning rates refer to (lr = base_lr * batch / 256).
REFERENCE_BATCH = 256


def decay_and_adapt_mask(tree: Any) -> Any:
  """True for leaves that get weight decay and the trust ratio: ``ndim != 1``.

  The official filter is ``p.ndim == 1`` (excluded). optax calls this on the parameters in
  ``init`` and on the updates in ``update``; both have the parameters' shapes.
  """
  return jax.tree.map(lambda p: p.ndim != 1, tree)


# torch.optim.AdamW defaults, used with optim.name="adamw".
ADAM_B2 = 0.999
ADAM_EPS = 1e-8


def lars(learning_rate: float | optax.Schedule, *, weight_decay: float = 1e-6,
         momentum: float = 0.9, trust_coefficient: float = 1e-3) -> optax.GradientTransformation:
  """LARS exactly as the official VICReg code: masked decay and trust ratio, lr after momentum.

  The trust ratio is per leaf (layer-wise) and has no epsilon; it is 1 where ``||p||`` or
  ``||g||`` is 0, as in the official code. The optimizer state is the float32 momentum buffer
  (one per parameter) plus the step count of the schedule.

  Args:
    learning_rate: a float or an optax schedule (step -> lr), applied after momentum.
    weight_decay: L2 coefficient added to the gradient of parameters with ``ndim != 1``.
    momentum: heavy-ball momentum (no Nesterov, no dampening).
    trust_coefficient: eta in ``eta * ||p|| / ||g||``.
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

  Equals the official ``adjust_learning_rate``: ``lr(s) = peak * s / W`` for ``s < W``, then
  ``peak * q + end * (1 - q)`` with ``q = (1 + cos(pi * (s - W) / (total_steps - W))) / 2``
  and ``end = end_lr_ratio * peak``; ``W = int(warmup_epochs * steps_per_epoch)`` steps.
  Steps at or past ``total_steps`` keep the end value.

  Clamping rule: when the warm-up is not shorter than the run (``W >= total_steps``, e.g. a
  few-step smoke test with the default 10 warm-up epochs), the warm-up is compressed to the
  run: the rate rises linearly from 0 towards the peak over ``total_steps`` and there is no
  cosine phase. The official code would instead end the run part-way up its warm-up ramp.

  Args:
    optim_config: ``config.optim`` (base_lr, warmup_epochs, end_lr_ratio).
    global_batch: examples per step over all devices and hosts (scales the peak rate).
    steps_per_epoch: optimizer steps per epoch (> 0).
    total_steps: length of the run in optimizer steps (> 0).

  Raises:
    ValueError naming the ``--config`` key to change.
  """
  if total_steps <= 0:
    raise ValueError(f"total_steps={total_steps}; set --config.epochs or "
                     "--config.num_train_steps to a positive number.")
  if steps_per_epoch <= 0:
    raise ValueError(f"steps_per_epoch={steps_per_epoch}; the dataset is smaller than one "
                     "batch. Lower --config.batch_size.")
  if optim_config.warmup_epochs < 0:
    raise ValueError(f"--config.optim.warmup_epochs={optim_config.warmup_epochs} must be >= 0.")
  if not 0 <= optim_config.end_lr_ratio <= 1:
    raise ValueError(f"--config.optim.end_lr_ratio={optim_config.end_lr_ratio} must be in "
                     "[0, 1] (final lr as a fraction of the peak).")
  # Python floats: optax branches on ``peak_value == 0`` eagerly.
  peak = float(peak_learning_rate(optim_config.base_lr, global_batch))
  warmup = int(optim_config.warmup_epochs * steps_per_epoch)
  if warmup >= total_steps:
    return optax.linear_schedule(0.0, peak, total_steps)
  # optax's decay_steps counts the warm-up, like the official max_steps.
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=total_steps,
      end_value=peak * optim_config.end_lr_ratio)


def create_optimizer(optim_config: ml_collections.ConfigDict, *, global_batch: int,
                     steps_per_epoch: int, total_steps: int
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """``config.optim.name``'s optimiser with the VICReg schedule; returns ``(tx, schedule)``.

  ``"lars"`` (official): :func:`lars` with ``weight_decay``, ``momentum`` and
  ``trust_coefficient``. ``"adamw"`` (the paper's ESC-50 runs, Appendix D.2: "AdamW, lr
  5e-4"): ``optax.adamw`` with ``b1 = momentum``, PyTorch's ``b2`` 0.999 and eps 1e-8, and
  decoupled ``weight_decay`` on the same parameters LARS decays (``ndim != 1``). Both follow
  the same warm-up + cosine schedule (peak ``base_lr * batch / 256``). The schedule is
  returned too so the train step can log the current rate.
  """
  schedule = vicreg_schedule(optim_config, global_batch=global_batch,
                             steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  name = optim_config.get("name", "lars")
  if name == "adamw":
    tx = optax.adamw(schedule, b1=optim_config.momentum, b2=ADAM_B2, eps=ADAM_EPS,
                     weight_decay=optim_config.weight_decay,
                     mask=lambda params: jax.tree.map(lambda p: p.ndim != 1, params))
    return tx, schedule
  if name != "lars":
    raise ValueError(f"--config.optim.name={name!r}; use 'lars' or 'adamw'.")
  tx = lars(schedule, weight_decay=optim_config.weight_decay, momentum=optim_config.momentum,
            trust_coefficient=optim_config.trust_coefficient)
  return tx, schedule


def per_epoch_cosine(lr: float, epochs: int, steps_per_epoch: int) -> optax.Schedule:
  """``lr * (1 + cos(pi * epoch / epochs)) / 2`` with ``epoch = step // steps_per_epoch``."""
  def schedule(count):
    epoch = count // steps_per_epoch
    return lr * 0.5 * (1 + jnp.cos(math.pi * epoch / epochs))
  return schedule


def torch_sgd(lr: float, *, momentum: float, weight_decay: float, epochs: int,
              steps_per_epoch: int) -> optax.GradientTransformation:
  """PyTorch SGD (decay added to the gradient, then momentum, then the rate) with the
  per-epoch cosine rate; optax.sgd traces momentum before scaling, PyTorch's order."""
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.sgd(per_epoch_cosine(lr, epochs, steps_per_epoch), momentum=momentum))


def classifier_sgd(head_lr: float, backbone_lr: float | None, *, momentum: float,
                   weight_decay: float, epochs: int, steps_per_epoch: int
                   ) -> optax.GradientTransformation:
  """:func:`torch_sgd` per group of ``{"backbone", "head"}`` parameters, each with its rate;
  ``backbone_lr=None`` freezes the encoder (no state)."""
  sgd = lambda lr: torch_sgd(lr, momentum=momentum, weight_decay=weight_decay, epochs=epochs,
                             steps_per_epoch=steps_per_epoch)
  backbone_tx = optax.set_to_zero() if backbone_lr is None else sgd(backbone_lr)
  return optax.multi_transform({"backbone": backbone_tx, "head": sgd(head_lr)},
                               {"backbone": "backbone", "head": "head"})
