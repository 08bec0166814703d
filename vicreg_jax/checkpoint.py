"""Orbax checkpoints of the pretraining state: save, resume from the latest good step, metadata.

A checkpoint step holds two items: ``state`` (params, batch_stats, opt_state, step, rng,
nonfinite count: every array needed to continue bit for bit) and ``meta`` (JSON: the config,
the data position and the package version). The data position is the step itself because
every view source is a deterministic function of ``(seed, step)``. All processes call every
function here; Orbax coordinates the writes.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"
# Keys whose change makes an old checkpoint unusable (different parameter shapes or meaning).
INCOMPATIBLE_KEYS = ("model",)


class IncompatibleCheckpointError(ValueError):
  """The workdir holds checkpoints of a run with an incompatible configuration."""


def checkpoint_dir(workdir: str) -> str:
  """Where a pretraining run in ``workdir`` keeps its checkpoints."""
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def create_manager(workdir: str, ckpt_config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """A CheckpointManager in ``workdir/checkpoints`` with retention and async from the config."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=ckpt_config.max_to_keep,
      save_interval_steps=ckpt_config.every_steps,
      enable_async_checkpointing=ckpt_config.async_save,
  )
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         config: ml_collections.ConfigDict, *, force: bool = False) -> bool:
  """Saves ``state`` at ``step`` if the interval (or ``force``, or a preemption) says so."""
  meta = {"config": json.loads(config.to_json()), "data_position": int(step)}
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)


def abstract_state(state: Any) -> Any:
  """Shape/dtype/sharding skeleton of ``state`` for restoring onto the same devices."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def saved_config(manager: ocp.CheckpointManager, step: int) -> dict:
  """The config dict stored with ``step``."""
  restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
  return restored.meta["config"]


def check_compatible(saved: dict, config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises IncompatibleCheckpointError if the workdir's checkpoints were made with an incompatible config."""
  current = json.loads(config.to_json())
  for key in INCOMPATIBLE_KEYS:
    if saved.get(key) != current.get(key):
      raise IncompatibleCheckpointError(
          f"The checkpoints in {workdir} were written with config.{key}={saved.get(key)} but "
          f"this run has config.{key}={current.get(key)}. Use a new --workdir, or the "
          "original settings to resume. Nothing was overwritten.")


def restore_latest(manager: ocp.CheckpointManager, target: Any,
                   config: ml_collections.ConfigDict, workdir: str) -> tuple[Any, int]:
  """Restores the newest readable checkpoint into the structure/sharding of ``target``.

  Steps that fail to read (truncated or deleted files) are skipped with a warning, falling
  back to the previous one. Returns ``(state, step)``, or ``(None, 0)`` if there is none.
  """
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      check_compatible(saved_config(manager, step), config, workdir)
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state(target))))
      return restored.state, step
    except IncompatibleCheckpointError:
      raise
    except (OSError, KeyError, RuntimeError, ValueError) as err:
      logging.warning("Checkpoint step %d in %s is unreadable (%s: %s); trying an older one.",
                      step, workdir, type(err).__name__, err)
  return None, 0
