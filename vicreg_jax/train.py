"""Pretraining: train state, the jit-compiled data-parallel VICReg step, and the training loop.

One batch, from config to checkpoint: ``create_view_source`` yields global uint8 view pairs
sharded over the mesh; ``train_step`` (one ``jax.jit``, state donated) augments both views on
the device, runs each view through the network separately (per-view BatchNorm; global batch
statistics = SyncBN, since the arrays are global), computes ``vicreg_loss`` on the global
batch in float32, applies LARS and returns float32 metrics; the loop logs and checkpoints.
The state is replicated on the mesh, or with ``config.parallel.shard_optimizer_state`` its
optimizer state is split over the devices (:func:`state_shardings`).
"""

from __future__ import annotations

import collections
import json
import logging
import time
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vicreg_jax import checkpoint, export, losses, metrics as metrics_lib, parallel, paths
from vicreg_jax import config as config_lib
from vicreg_jax import data, models, optim, rng as rng_lib, signals
from vicreg_jax import workdir as workdir_lib
from vicreg_jax.evaluate import accuracy, monitor as monitor_lib
from vicreg_jax.data import augment

# Values recorded at the first non-finite step, in this order, to name the offending term.
NONFINITE_FIELDS = ("loss", "invariance", "variance", "covariance", "grad_norm", "update_norm")
# Steps dispatched ahead of the last one known complete. One keeps the host preparing the next
# step while the device runs the current one, and makes a stop take effect at the next step
# boundary (a deeper queue would run on after a SIGINT/SIGTERM).
MAX_STEPS_IN_FLIGHT = 1


@flax.struct.dataclass
class TrainState:
  """Everything that evolves during pretraining (all arrays, laid out by
  :func:`state_shardings`: replicated on the mesh, but the large optimizer-state leaves when
  ``config.parallel.shard_optimizer_state`` is on).

  Attributes:
    step: i32[] number of steps taken (= batches consumed).
    params: float32 parameter pytree of the VICReg model.
    batch_stats: BatchNorm running statistics.
    opt_state: LARS state (momentum, schedule count).
    rng: u32[2] raw key data; step ``s`` uses ``fold_in(rng, s)``.
    nonfinite_steps: i32[] steps whose update was dropped for a non-finite loss/gradient.
    first_nonfinite_step: i32[], -1 while every step was finite.
    nonfinite_record: f32[6] ``NONFINITE_FIELDS`` at the first non-finite step.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  nonfinite_steps: jax.Array
  first_nonfinite_step: jax.Array
  nonfinite_record: jax.Array


def loss_kwargs(loss_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Keyword arguments of :func:`vicreg_jax.vicreg_loss` from ``config.loss``."""
  return dict(loss_config)


def state_shardings(config: ml_collections.ConfigDict, mesh, state: TrainState) -> TrainState:
  """Where each array of ``state`` (arrays or ``jax.ShapeDtypeStruct``s) lives on ``mesh``.

  Everything is replicated, except, with ``config.parallel.shard_optimizer_state``, the
  optimizer-state leaves that :func:`vicreg_jax.parallel.sharded_axis` splits over the
  ``data`` axis (ZeRO stage 1).

  Raises:
    ValueError when sharding is asked for on several devices but no leaf can be split (no
    leaf of ``parallel.shard_min_elements`` elements has an axis the device count divides).
  """
  replicated = parallel.replicated(mesh)
  shardings = jax.tree.map(lambda _: replicated, state)
  if not config.parallel.shard_optimizer_state:
    return shardings
  opt_state = parallel.state_shardings(mesh, state.opt_state,
                                       config.parallel.shard_min_elements)
  devices = mesh.devices.size
  if devices > 1 and all(s.is_fully_replicated for s in jax.tree.leaves(opt_state)):
    raise ValueError(
        f"--config.parallel.shard_optimizer_state=True, but no optimizer-state leaf of at "
        f"least {config.parallel.shard_min_elements} elements has an axis divisible by the "
        f"{devices} devices, so nothing would be sharded. Lower "
        "--config.parallel.shard_min_elements, use a device count that divides the layer "
        "widths, or set --config.parallel.shard_optimizer_state=False.")
  return shardings.replace(opt_state=opt_state)


# Initialisation runs once, so optimising its machine code only delays the start: on CPU,
# XLA's default (LLVM -O2) took 6.3 s to compile and run the demo's init and 7.5 s for
# ResNet-50 + 2048^3, against 2.0 s and 5.3 s at -O0 (2-core sandbox, 2026-12-07). The values
# are the same up to the last bits of the random normal's log/erfinv approximations (a few
# leaves differ by <= 1.4e-7 relative). Not applied on other backends (not measured there).
ONE_SHOT_CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def create_train_state(config: ml_collections.ConfigDict, model,
                       tx: optax.GradientTransformation, mesh) -> TrainState:
  """A fresh state at step 0 laid out on ``mesh`` by :func:`state_shardings`: parameters
  from the seed's ``rng.MODEL_INIT`` stream, step keys from its ``rng.TRAIN_STEP`` stream."""
  shape_a, shape_b = data.view_shapes(config, 2)

  def init(key):
    variables = model.init(key, jnp.zeros(shape_a), jnp.zeros(shape_b), train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
        rng=jax.random.key_data(rng_lib.stream_key(config.seed, rng_lib.TRAIN_STEP)),
        nonfinite_steps=jnp.zeros((), jnp.int32),
        first_nonfinite_step=jnp.full((), -1, jnp.int32),
        nonfinite_record=jnp.zeros((len(NONFINITE_FIELDS),), jnp.float32))

  key = rng_lib.stream_key(config.seed, rng_lib.MODEL_INIT)
  shardings = state_shardings(config, mesh, jax.eval_shape(init, key))
  on_cpu = mesh.devices.flat[0].platform == "cpu"
  return jax.jit(init, out_shardings=shardings,
                 compiler_options=ONE_SHOT_CPU_COMPILER_OPTIONS if on_cpu else None)(key)


def _probe_loss_and_top1(logits: jax.Array, labels: jax.Array, num_classes: int
                         ) -> tuple[jax.Array, jax.Array]:
  """Online probe: mean softmax cross-entropy and top-1 accuracy (percent) over the batch.

  The loss is NaN when any label is outside ``[0, num_classes)``: the gather in the
  cross-entropy would wrap negative labels around and train a wrong class.
  """
  labels = labels.astype(jnp.int32)
  valid = jnp.all((labels >= 0) & (labels < num_classes))
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), jnp.clip(labels, 0, num_classes - 1)))
  hits = accuracy.topk_hits(logits, labels, jnp.ones(labels.shape, jnp.float32), ks=(1,))
  return jnp.where(valid, loss, jnp.nan), 100 * hits["top1"] / labels.shape[0]


def make_train_step(config: ml_collections.ConfigDict, model, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, mesh=None
                    ) -> Callable[[TrainState, dict], tuple]:
  """Returns the pure ``train_step(state, batch) -> (state, metrics)``.

  With ``config.parallel.shard_optimizer_state`` (which needs ``mesh``), the gradients and
  updates are constrained to the optimizer state's sharding: each device needs only its
  slice of the summed gradients (a reduce-scatter; XLA:CPU lowers it as an all-reduce and a
  slice) and updates only its slice of the parameters, which the replicated parameters of
  :func:`compile_train_step` then all-gather.

  ``batch``: ``{"view_a", "view_b"}`` uint8[B, S, S, 3] global arrays, augmented here, and
  ``"label"`` i32[B] with the online probe (``config.model.online_probe_classes`` > 0); with
  ``data.source=audio`` the views arrive made (f32 waveform [B, t, 1], log-mel [B, mels,
  frames, 1]) and go to the encoders as they are.

  Online probe: the loss that is differentiated is VICReg's plus the probe's softmax
  cross-entropy on view a (mean over the global batch). The probe sees stop-gradient
  representations, so the encoder and expander gradients are exactly VICReg's and only
  ``params["online_probe"]`` learns from the labels (with the same optimizer). The metrics
  add ``online_probe_loss`` and ``online_probe_top1`` (percent of the batch's view a); the
  ``loss`` metric stays the VICReg loss, comparable with runs without the probe. A label
  outside ``[0, online_probe_classes)`` makes the probe loss NaN (never a silently wrong
  class), which the non-finite guard below catches.

  A step whose loss (VICReg + probe), gradient or update is not finite leaves params, BN
  statistics and optimizer state unchanged and is counted; with ``config.nonfinite ==
  "stop"`` the state freezes from the first one on, so the loop can stop with the last good
  state. Its record's ``loss`` is the total (VICReg + probe) that was not finite.
  """
  kwargs = loss_kwargs(config.loss)
  freeze_after_nonfinite = config.nonfinite == "stop"
  probe_classes = config.model.get("online_probe_classes", 0)
  audio_views = config.data.source == "audio"
  shard_updates = config.parallel.shard_optimizer_state
  if shard_updates and mesh is None:
    raise ValueError("config.parallel.shard_optimizer_state needs the mesh: "
                     "make_train_step(..., mesh=mesh).")

  def like_optimizer_state(tree):
    """Constrains a parameter-shaped tree to the sharding of its optimizer-state leaves."""
    if not shard_updates:
      return tree
    return jax.lax.with_sharding_constraint(tree, parallel.state_shardings(
        mesh, tree, config.parallel.shard_min_elements))

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    if audio_views:  # made by the audio source: waveform and log-mel, already augmented
      view_a, view_b = batch["view_a"], batch["view_b"]
    else:
      with jax.named_scope("augment"):  # scope names: the parts of a profile
        view_a, view_b = augment.augment_pair(key, batch["view_a"], batch["view_b"],
                                              config.augment)

    def loss_fn(params):
      out, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                 view_a, view_b, train=True, mutable=["batch_stats"])
      with jax.named_scope("loss"):
        total, terms = losses.vicreg_loss(out["embedding_a"], out["embedding_b"], **kwargs)
      if probe_classes:
        probe_loss, probe_top1 = _probe_loss_and_top1(out["probe_logits"], batch["label"],
                                                      probe_classes)
        terms = dict(terms, online_probe_loss=probe_loss, online_probe_top1=probe_top1)
        total = total + probe_loss  # the "loss" metric (in terms) stays VICReg's
      return total, (terms, updates["batch_stats"])

    (total, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    with jax.named_scope("optimizer"):
      grads = like_optimizer_state(grads)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      updates = like_optimizer_state(updates)
      params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    update_norm = optax.tree.norm(updates)

    finite = jnp.isfinite(total) & jnp.isfinite(grad_norm) & jnp.isfinite(update_norm)
    first_bad = state.first_nonfinite_step < 0
    apply = finite & (first_bad | (not freeze_after_nonfinite))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(apply, n, o), new, old)
    record = jnp.stack([total, terms["invariance"], terms["variance"], terms["covariance"],
                        grad_norm, update_norm]).astype(jnp.float32)
    newly_bad = (~finite) & first_bad
    new_state = state.replace(
        step=state.step + 1,
        params=keep(params, state.params),
        batch_stats=keep(batch_stats, state.batch_stats),
        opt_state=keep(opt_state, state.opt_state),
        nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32),
        first_nonfinite_step=jnp.where(newly_bad, state.step, state.first_nonfinite_step),
        nonfinite_record=jnp.where(newly_bad, record, state.nonfinite_record))
    step_metrics = dict(terms, lr=schedule(state.step), grad_norm=grad_norm,
                        param_norm=optax.tree.norm(new_state.params),
                        nonfinite_steps=new_state.nonfinite_steps.astype(jnp.float32))
    return new_state, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), step_metrics)

  return train_step


def compile_train_step(train_step, mesh, shardings: TrainState | None = None) -> Callable:
  """``jax.jit`` of the step: state donated and kept in ``shardings`` (from
  :func:`state_shardings`; None: all replicated), metrics replicated."""
  replicated = parallel.replicated(mesh)
  return jax.jit(train_step, donate_argnums=0,
                 out_shardings=(replicated if shardings is None else shardings, replicated))


def nonfinite_message(state: TrainState) -> str:
  """Names the first non-finite step and which recorded quantities were not finite."""
  record = np.asarray(state.nonfinite_record)
  bad = [f"{name}={value}" for name, value in zip(NONFINITE_FIELDS, record)
         if not np.isfinite(value)]
  return (f"Non-finite value at step {int(state.first_nonfinite_step)}: {', '.join(bad)}. "
          "The update was not applied; the checkpoints hold the last good state. Lower "
          "--config.optim.base_lr, check the input data, or set --config.nonfinite=skip.")


class TrainResult(NamedTuple):
  """What :func:`train_and_evaluate` hands back.

  ``state`` is None when the workdir already held the finished run (nothing was trained);
  ``step`` is the step the run ended at: ``total_steps`` once finished, less when stopped.
  """
  state: TrainState | None
  metrics: dict[str, float]
  model: Any
  step: int
  total_steps: int
  mesh: Any = None  # the device mesh the run used (the program's one mesh)

  @property
  def finished(self) -> bool:
    return self.step >= self.total_steps


def _say(message: str) -> None:
  """One console line of process 0 about what the run is doing."""
  if jax.process_index() == 0:
    print(message, flush=True)


def check_resumable(manager, config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses, before anything is built or compiled, to resume checkpoints of another run.

  Reads only the latest step's saved config. If that cannot be read, the step is damaged:
  nothing is decided here and :func:`checkpoint.restore_latest` names the damage and falls
  back to an older step (where it checks compatibility again).
  """
  latest = manager.latest_step()
  if latest is None:
    return
  try:
    saved = checkpoint.saved_config(manager, latest)
  except Exception:  # pylint: disable=broad-except  (damage: handled by restore_latest)
    return
  checkpoint.check_compatible(saved, config, workdir)


def _already_exported(workdir: str, step: int) -> bool:
  """Whether ``workdir/export`` holds the backbone of ``step``."""
  path = paths.join(workdir, export.EXPORT_DIR, "backbone.json")
  if not paths.exists(path):
    return False
  return json.loads(paths.read_text(path)).get("step") == step


def _run_identity(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """What every process of a run must agree on: the config (but its process id) and the
  workdir, as given on the command line."""
  settings = json.loads(config.to_json())
  settings.get("distributed", {}).pop("process_id", None)
  return {"config": settings, "workdir": workdir}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainResult:
  """Pretrains (resuming from ``workdir`` if it holds checkpoints); returns the final state.

  Validates the config, the device count, that every process runs the same config and
  workdir, and that the workdir can be written before anything is created or compiled, and
  holds the workdir lock (process 0) for the whole run.
  A SIGINT/SIGTERM (or a preemption notice) saves a checkpoint at the next step boundary and
  returns a result that is not ``finished``; only a finished run exports its backbone.
  """
  config_lib.validate(config)
  parallel.initialize_distributed(**config.distributed)
  mesh = parallel.make_mesh()
  parallel.check_batch_divisible(config.batch_size, mesh)
  run = _run_identity(config, workdir)
  parallel.agree_on_all_processes(json.dumps(run, sort_keys=True), lambda process_0: "; ".join(
      checkpoint.settings_changes(json.loads(process_0), run)))
  workdir_lib.check_writable(workdir)
  paths.makedirs(workdir)
  with workdir_lib.exclusive(workdir, enabled=jax.process_index() == 0):
    manager = checkpoint.create_manager(workdir, config.checkpoint)
    try:
      return _train(config, workdir, mesh, manager)
    finally:
      manager.wait_until_finished()
      manager.close()


def _train(config: ml_collections.ConfigDict, workdir: str, mesh, manager) -> TrainResult:
  """Set-up in one direction: config check, dataset size, optimiser, state, restore, stream."""
  check_resumable(manager, config, workdir)
  probe_classes = config.model.get("online_probe_classes", 0)
  _say(f"Loading data ({config.data.source}: {config.data.name or config.data.path})...")
  source = data.create_view_source(config, mesh, with_labels=probe_classes > 0,
                                   num_classes=probe_classes)
  total_steps = config.num_train_steps or config.epochs * source.steps_per_epoch
  model = models.create_model(config.model)
  latest = manager.latest_step()
  if latest == total_steps and _already_exported(workdir, total_steps):
    _say(f"Already finished at step {total_steps}; outputs in {workdir} (checkpoints/, "
         f"{metrics_lib.METRICS_FILE}, {export.EXPORT_DIR}/). Nothing to do.")
    return TrainResult(None, {}, model, total_steps, total_steps, mesh)
  tx, schedule = optim.create_optimizer(
      config.optim, global_batch=config.batch_size, steps_per_epoch=source.steps_per_epoch,
      total_steps=total_steps)
  state = create_train_state(config, model, tx, mesh)
  start_step = 0
  if latest is not None:  # None: a fresh workdir (step 0 only when imported)
    _say(f"Restoring step {latest} from {checkpoint.checkpoint_dir(workdir)}...")
    restored, start_step = checkpoint.restore_latest(manager, state, config, workdir)
    state = restored if restored is not None else state
    _say(f"Resuming at step {start_step} of {total_steps}.")
  batches = source.iterate(start_step)
  batch = next(batches)
  _say("Compiling the training step...")
  started = time.perf_counter()
  step_fn = compile_train_step(make_train_step(config, model, tx, schedule, mesh), mesh,
                               state_shardings(config, mesh, state)).lower(state, batch).compile()
  _say(f"Compiled in {time.perf_counter() - started:.0f} s; training steps {start_step + 1} "
       f"to {total_steps}.")
  knn_every = config.eval.knn_every_steps
  knn_monitor = monitor_lib.KnnMonitor(config, mesh, model) if knn_every > 0 else None
  diagnostics_every = config.eval.diagnostics_every_steps
  diagnostics_monitor = (monitor_lib.DiagnosticsMonitor(config, mesh, model)
                         if diagnostics_every > 0 else None)
  writer = metrics_lib.MetricWriter(workdir, start_step=start_step)
  progress = metrics_lib.Progress(total_steps, config.batch_size, start_step)
  last = {}
  in_flight = collections.deque()  # metrics of dispatched steps, oldest first
  done = start_step
  try:
    with signals.graceful_stop() as stop, jax.transfer_guard(config.transfer_guard):
      while done < total_steps:
        state, step_metrics = step_fn(state, batch if done == start_step else next(batches))
        done += 1
        in_flight.append(step_metrics)
        if len(in_flight) > MAX_STEPS_IN_FLIGHT:  # bounds the reaction time to a stop
          jax.block_until_ready(in_flight.popleft())
        stop_now = stop.is_set() or manager.reached_preemption(done)
        save_now = stop_now or done == total_steps or manager.should_save(done)
        log_now = done % config.log_every_steps == 0 or done == total_steps or stop_now
        if (save_now or log_now) and config.nonfinite == "stop":
          # Checked before saving, so no checkpoint is ever written after a non-finite step.
          if int(jax.device_get(state.first_nonfinite_step)) >= 0:
            raise FloatingPointError(nonfinite_message(state))
        if knn_monitor is not None and (done % knn_every == 0 or done == total_steps):
          knn_metrics = knn_monitor(state)
          writer.write(done, knn_metrics)
          if progress.is_active:
            print(f"step {done}/{total_steps}  kNN top-1 {knn_metrics['knn_top1']:.2f}%  "
                  f"top-5 {knn_metrics['knn_top5']:.2f}%", flush=True)
        if diagnostics_monitor is not None and (done % diagnostics_every == 0
                                                or done == total_steps):
          diagnosed, spectra = diagnostics_monitor(state)
          writer.write(done, diagnosed)
          metrics_lib.write_spectra(workdir, done, spectra)
          if progress.is_active:
            print(f"step {done}/{total_steps}  effective rank: representation "
                  f"{diagnosed['representation_effective_rank']:.1f}, embedding "
                  f"{diagnosed['embedding_effective_rank']:.1f}", flush=True)
        if log_now:
          last = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
          writer.write(done, last)
          if progress.is_active:
            print(progress.line(done, last), flush=True)
        if save_now:
          checkpoint.save(manager, done, state, config, force=True)
        if stop_now:
          manager.wait_until_finished()
          logging.warning("Stopped at step %d of %d and saved it to %s; rerun the same "
                          "command to resume.", done, total_steps,
                          checkpoint.checkpoint_dir(workdir))
          break
  finally:
    writer.close()
  if done == total_steps:
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    out = export.export_backbone(variables, config.model, paths.join(workdir, export.EXPORT_DIR),
                                 step=total_steps)
    if config.data.source == "audio":  # two different encoders: both are results
      out += ", " + export.export_backbone(
          variables, config.model, paths.join(workdir, export.EXPORT_DIR_B), step=total_steps,
          branch="b")
    manager.wait_until_finished()
    _say(f"Finished step {total_steps}. Checkpoints: {checkpoint.checkpoint_dir(workdir)}; "
         f"metrics: {paths.join(workdir, metrics_lib.METRICS_FILE)} (TensorBoard: "
         f"{paths.join(workdir, 'tensorboard')}); backbone: {out}.")
  return TrainResult(state, last, model, done, total_steps, mesh)
