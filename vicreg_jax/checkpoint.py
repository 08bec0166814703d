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
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from vicreg_jax import parallel
from vicreg_jax import paths

CHECKPOINT_DIR = "checkpoints"
# Unreadable steps are moved here (beside CHECKPOINT_DIR) when an older step is resumed.
DAMAGED_DIR = "checkpoints.damaged"

# What a resumed run may change. The run length (epochs, num_train_steps) may be extended or
# shortened: accepted and logged. Keys under these prefixes do not change the training
# trajectory (logging, checkpointing, evaluation, hosts, the state's layout over the
# devices, input prefetching): accepted silently. A change of anything else (model, loss,
# optimiser, batch size, data, augmentation, seed) would continue a different run, and is
# refused naming the keys that differ.
RUN_LENGTH_KEYS = ("epochs", "num_train_steps")
FREE_KEY_PREFIXES = ("checkpoint.", "log_every_steps", "eval.", "distributed.", "parallel.",
                     "nonfinite", "data.prefetch_batches", "data.device_prefetch",
                     "data.threads", "compilation_cache_dir", "transfer_guard")

# Marks, in a checkpoint's saved config, a backbone imported from released weights.
IMPORTED_KEY = "imported_from"


class IncompatibleCheckpointError(ValueError):
  """The workdir holds checkpoints of a run with an incompatible configuration."""


class DamagedCheckpointsError(ValueError):
  """Every checkpoint of a workdir is unreadable; starting over needs an explicit choice."""


def check_orbax_can_write(directory: str, flag: str = "--workdir") -> None:
  """Raises ValueError naming ``flag`` for a folder Orbax cannot checkpoint into.

  Orbax writes arrays through TensorStore, which it points at local paths and ``gs://``
  only (orbax-checkpoint 0.12 turns ``s3://b/x`` into the local path ``s3:/b/x``).
  """
  paths.check_supported(directory, flag)
  if paths.scheme(directory) == "s3":
    raise ValueError(
        f"{flag} {directory}: Orbax (orbax-checkpoint {ocp.__version__}) cannot write "
        "checkpoints to s3:// (it writes arrays to local paths and gs:// only). Use a gs:// or "
        "local/shared-filesystem workdir (an S3 bucket mounted with mountpoint-s3 or s3fs-fuse "
        "works as a local path); s3:// works for data and for --out of the export.")


def checkpoint_dir(workdir: str) -> str:
  """Where a pretraining run in ``workdir`` keeps its checkpoints: an absolute local path or
  a ``gs://`` URL (ValueError for ``s3://``, :func:`check_orbax_can_write`)."""
  check_orbax_can_write(workdir)
  return paths.join(paths.absolute(workdir), CHECKPOINT_DIR)


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


def _flatten(tree: dict, prefix: str = "") -> dict:
  """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and scalars are leaves)."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def config_changes(saved: dict, config: ml_collections.ConfigDict
                   ) -> tuple[list[str], list[str]]:
  """``(refused, accepted)``: ``"key: saved -> now"`` for each key whose value differs.

  Only keys present in both configs are compared (a knob added by a newer version of the
  package keeps its default); see ``RUN_LENGTH_KEYS`` and ``FREE_KEY_PREFIXES``.
  """
  old, new = _flatten(saved), _flatten(json.loads(config.to_json()))
  refused, accepted = [], []
  for key in sorted(old.keys() & new.keys()):
    if old[key] == new[key] or key.startswith(FREE_KEY_PREFIXES):
      continue
    line = f"config.{key}: {old[key]!r} -> {new[key]!r}"
    (accepted if key in RUN_LENGTH_KEYS else refused).append(line)
  return refused, accepted


def check_compatible(saved: dict, config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses to resume ``workdir``'s checkpoints (saved with ``saved``) under ``config``.

  Raises:
    IncompatibleCheckpointError naming the keys that differ (or an imported workdir).
  """
  if IMPORTED_KEY in saved:
    raise IncompatibleCheckpointError(
        f"{workdir} holds weights imported from {saved[IMPORTED_KEY]} for evaluation only "
        "(no expander or optimizer state); pretrain in another --workdir.")
  refused, accepted = config_changes(saved, config)
  if refused:
    raise IncompatibleCheckpointError(
        f"The checkpoints in {workdir} were written by a run with other settings: "
        + "; ".join(refused) + ". Resuming would continue a different run: use a new "
        "--workdir, or the original values to resume. Nothing was overwritten.")
  for line in accepted:
    logging.warning("Resuming %s with a changed run length (%s); the learning-rate "
                    "schedule follows the new length from here on.", workdir, line)


def _first_line(err: BaseException) -> str:
  text = str(err).strip()
  return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def set_aside(manager: ocp.CheckpointManager, workdir: str, steps: list[int]) -> str:
  """Moves unreadable ``steps`` out of the checkpoint folder into ``DAMAGED_DIR``.

  Orbax refuses to save a step at or below the newest existing one, so damaged newer steps
  left in place would leave the resumed run without checkpoints until it passed them.
  Process 0 moves (the folder is shared); all processes then re-read the step list.
  """
  target = paths.join(paths.dirname(checkpoint_dir(workdir)), DAMAGED_DIR)
  if jax.process_index() == 0:
    paths.makedirs(target)
    for step in steps:
      destination = paths.join(target, str(step))
      if paths.exists(destination):  # damaged twice at the same step: keep both
        destination += f".{len(paths.listdir(target))}"
      paths.move(paths.join(checkpoint_dir(workdir), str(step)), destination)
  multihost_utils.sync_global_devices("vicreg_jax.checkpoint.set_aside")
  manager.reload()
  return target


def restore_latest(manager: ocp.CheckpointManager, target: Any,
                   config: ml_collections.ConfigDict, workdir: str) -> tuple[Any, int]:
  """Restores the newest readable checkpoint into the structure/sharding of ``target``.

  A step that fails to read (truncated or deleted files; Orbax may raise any exception) is
  named with its reason in one warning line, and the previous one is tried. Once an older
  step is restored, the unreadable newer ones are moved to ``DAMAGED_DIR`` (see
  :func:`set_aside`). Returns ``(state, step)``, or ``(None, 0)`` for a workdir without
  checkpoints.

  Raises:
    IncompatibleCheckpointError: the checkpoints belong to a run with other settings.
    DamagedCheckpointsError: there are checkpoints but none is readable; nothing is changed,
      so that a run never silently starts over.
  """
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      check_compatible(saved_config(manager, step), config, workdir)
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state(target))))
    except IncompatibleCheckpointError:
      raise
    except Exception as err:  # pylint: disable=broad-except  (Orbax raises bare Exception)
      damaged.append((step, _first_line(err)))
      logging.warning("Checkpoint step %d in %s is unreadable (%s); trying an older one.",
                      step, workdir, damaged[-1][1])
      continue
    if damaged:
      moved_to = set_aside(manager, workdir, [s for s, _ in damaged])
      logging.warning("Resuming from step %d; moved the unreadable step(s) %s to %s (inspect "
                      "or delete them).", step, [s for s, _ in damaged], moved_to)
    return restored.state, step
  if damaged:
    directory = checkpoint_dir(workdir)
    raise DamagedCheckpointsError(
        f"Every checkpoint in {directory} is unreadable ("
        + "; ".join(f"step {s}: {reason}" for s, reason in damaged) + "). Nothing was "
        f"changed. To start over from step 0, move them aside (mv {directory} "
        f"{paths.join(paths.dirname(directory), DAMAGED_DIR)}) and rerun.")
  return None, 0


def _no_checkpoints(directory: str) -> FileNotFoundError:
  return FileNotFoundError(f"No checkpoints in {directory}; pass the --workdir of a pretraining "
                           "run, or import weights into it first (python -m vicreg_jax.export "
                           "--import_weights ... --workdir ...).")


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
    FileNotFoundError if the workdir has no checkpoints; ValueError for a missing step;
    DamagedCheckpointsError (one line, naming the other steps) for an unreadable one.
  """
  directory = checkpoint_dir(workdir)
  if not paths.isdir(directory):  # checked first: the manager would create the folder
    raise _no_checkpoints(directory)
  manager = ocp.CheckpointManager(directory, item_handlers={
      "state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})
  steps = manager.all_steps()
  if not steps:
    manager.close()
    raise _no_checkpoints(directory)
  step = max(steps) if step is None else step
  if step not in steps:
    manager.close()
    raise ValueError(f"Step {step} is not in {workdir}; available steps: {sorted(steps)}.")
  # Replicated on this run's devices, whatever the devices and processes that saved it.
  replicated = parallel.replicated(mesh)
  try:
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=replicated),
        manager.item_metadata(step)["state"])
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
  except Exception as err:  # pylint: disable=broad-except  (Orbax raises bare Exception)
    others = sorted((s for s in steps if s != step), reverse=True)
    hint = (f"pass --step with an older one: {others}" if others else
            "it is the only checkpoint of this workdir")
    raise DamagedCheckpointsError(
        f"Checkpoint step {step} in {workdir} is unreadable ({_first_line(err)}); {hint}."
    ) from err
  finally:
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


def settings_changes(saved: dict, settings: dict) -> list[str]:
  """``"key: saved -> now"`` for each key (dotted) whose value differs between two settings
  dicts (JSON-like, e.g. an evaluation protocol's); a key missing on one side reads None."""
  old, new = _flatten(saved), _flatten(settings)
  return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
          for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]


class EpochCheckpointer:
  """Per-epoch state of an evaluation protocol in ``directory`` (the latest one kept).

  Implements ``evaluate.classifier.Checkpointer``: ``restore(state)`` returns the latest
  saved ``(state, history)`` shaped and sharded like ``state`` (or ``(state, [])``), and
  refuses a state saved with other ``settings`` (the protocol's config and encoder);
  ``save(epoch, state, history)`` writes synchronously, so a crash loses at most the
  epoch in progress.
  """

  def __init__(self, directory: str, settings: dict | None = None):
    check_orbax_can_write(directory, "--output_dir")
    self._directory = paths.absolute(directory)
    self._settings = json.loads(json.dumps(settings or {}))  # JSON-normalised for comparing
    self._manager = ocp.CheckpointManager(
        self._directory, options=ocp.CheckpointManagerOptions(max_to_keep=1))

  def restore(self, state: Any) -> tuple[Any, list]:
    step = self._manager.latest_step()
    if step is None:
      return state, []
    saved = self._manager.restore(step, args=ocp.args.Composite(history=ocp.args.JsonRestore()))
    changes = settings_changes(saved.history.get("settings", {}), self._settings)
    if changes:
      raise IncompatibleCheckpointError(
          f"{self._directory} holds an evaluation run with other settings ("
          + "; ".join(changes) + "); delete that folder to start over, rerun with the same "
          "settings to resume, or pass --output_dir to keep both.")
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
