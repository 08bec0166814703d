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

from vicreg_jax import parallel

CHECKPOINT_DIR = "checkpoints"
# Keys whose change makes an old checkpoint unusable (different parameter shapes or meaning).
INCOMPATIBLE_KEYS = ("model",)


# Marks, in a checkpoint's saved config, a backbone imported from released weights.
IMPORTED_KEY = "imported_from"


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
  if IMPORTED_KEY in saved:
    raise IncompatibleCheckpointError(
        f"{workdir} holds weights imported from {saved[IMPORTED_KEY]} for evaluation only "
        "(no expander or optimizer state); pretrain in another --workdir.")
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


def restore_variables(workdir: str, step: int | None, mesh) -> tuple[dict, dict, int]:
  """The model variables of a pretraining (or imported) workdir, replicated on ``mesh``.

  Args:
    workdir: a pretraining ``--workdir`` (or one written by ``export --import_weights``).
    step: checkpoint step; None for the latest.
    mesh: this program's device mesh (``parallel.make_mesh()``).

  Returns:
    ``(variables, config, step)``: ``{"params", "batch_stats"}`` of the whole VICReg model
    (arrays replicated on the mesh), the run's config as a dict, and the step restored.

  Raises:
    FileNotFoundError if the workdir has no checkpoints; ValueError for a missing step.
  """
  directory = checkpoint_dir(workdir)
  manager = ocp.CheckpointManager(directory, item_handlers={
      "state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f"No checkpoints in {directory}; pass the --workdir of a "
                            "pretraining run, or import weights into it first "
                            "(python -m vicreg_jax.export --import_weights ... --workdir ...).")
  step = max(steps) if step is None else step
  if step not in steps:
    raise ValueError(f"Step {step} is not in {workdir}; available steps: {sorted(steps)}.")
  # Replicated on this run's devices, whatever the devices and processes that saved it.
  replicated = parallel.replicated(mesh)
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=replicated),
                        manager.item_metadata(step)["state"])
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
  manager.close()
  state = restored.state
  variables = {name: state[name] for name in ("params", "batch_stats") if name in state}
  return variables, restored.meta["config"], step


def save_imported(workdir: str, backbone_variables: dict, config: ml_collections.ConfigDict,
                  source: str) -> str:
  """Writes an encoder's variables as step 0 of ``workdir/checkpoints`` for evaluation.

  The state holds ``params``/``batch_stats`` with the encoder under ``backbone`` (as in a
  pretraining state), so :func:`restore_variables` and the evaluation CLI read it like a
  pretraining workdir. Pretraining refuses to resume from it.
  """
  directory = checkpoint_dir(workdir)
  manager = ocp.CheckpointManager(directory)
  if manager.all_steps():
    raise FileExistsError(f"{directory} already holds checkpoints; import into an empty "
                          "--workdir.")
  state = {name: {"backbone": value} for name, value in backbone_variables.items()}
  meta = {"config": {**json.loads(config.to_json()), IMPORTED_KEY: source}, "data_position": 0}
  manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta)))
  manager.wait_until_finished()
  manager.close()
  return directory


class EpochCheckpointer:
  """Per-epoch state of an evaluation protocol in ``directory`` (the latest one kept).

  Implements ``evaluate.classifier.Checkpointer``: ``restore(state)`` returns the latest
  saved ``(state, history)`` shaped and sharded like ``state`` (or ``(state, [])``), and
  refuses a state saved with other ``settings`` (the protocol's config and encoder);
  ``save(epoch, state, history)`` writes synchronously, so a crash loses at most the
  epoch in progress.
  """

  def __init__(self, directory: str, settings: dict | None = None):
    self._directory = os.path.abspath(directory)
    self._settings = json.loads(json.dumps(settings or {}))  # JSON-normalised for comparing
    self._manager = ocp.CheckpointManager(
        self._directory, options=ocp.CheckpointManagerOptions(max_to_keep=1))

  def restore(self, state: Any) -> tuple[Any, list]:
    step = self._manager.latest_step()
    if step is None:
      return state, []
    saved = self._manager.restore(step, args=ocp.args.Composite(history=ocp.args.JsonRestore()))
    if saved.history.get("settings") != self._settings:
      raise IncompatibleCheckpointError(
          f"{self._directory} holds an evaluation run with other settings "
          f"({saved.history.get('settings')}); delete that folder to start over, or rerun "
          "with the same settings to resume.")
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state(state))))
    logging.info("Resumed evaluation after epoch %d.", step)
    return restored.state, saved.history["epochs"]

  def save(self, epoch: int, state: Any, history: list) -> None:
    self._manager.save(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        history=ocp.args.JsonSave({"epochs": history, "settings": self._settings})))
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
