"""Device mesh, shardings and host-batch to global-array conversion for data parallelism.

One mesh with a single ``data`` axis over every device of every process. Parameters are
replicated (``P()``); batches are sharded along their leading axis (``P('data')``); the
optimizer state is replicated, or with ``config.parallel.shard_optimizer_state`` its large
leaves are split over the ``data`` axis (ZeRO stage 1, :func:`state_sharding`). Everything is
plain ``jax.jit`` over global ``jax.Array``s: no ``pmap``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(mode: str, coordinator_address: str = "",
                           num_processes: int = 1, process_id: int = 0,
                           heartbeat_timeout_s: int = 100) -> None:
  """Starts multi-process JAX before any computation.

  Args:
    mode: ``"none"`` (single process), ``"auto"`` (``jax.distributed.initialize()`` with the
      cluster auto-detection of TPU pods, SLURM, Open MPI and Kubernetes) or ``"manual"``
      (hand-started processes; needs the three arguments below).
    coordinator_address: ``host:port`` of process 0, e.g. ``127.0.0.1:12355``.
    num_processes: total number of processes.
    process_id: index of this process in ``[0, num_processes)``.
    heartbeat_timeout_s: seconds without a heartbeat after which JAX's coordination service
      declares a process dead and the others stop with an error (instead of hanging).
  """
  if mode == "none":
    return
  if not isinstance(heartbeat_timeout_s, int) or heartbeat_timeout_s < 1:
    raise ValueError(f"distributed.heartbeat_timeout_s must be a whole number of seconds "
                     f">= 1; got {heartbeat_timeout_s!r}.")
  if mode == "auto":
    jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_s)
  elif mode == "manual":
    if not coordinator_address or not 0 <= process_id < num_processes:
      raise ValueError(
          "distributed mode 'manual' needs coordinator_address='host:port', num_processes "
          f">= 1 and 0 <= process_id < num_processes; got {coordinator_address!r}, "
          f"{num_processes}, {process_id}.")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               heartbeat_timeout_seconds=heartbeat_timeout_s)
  else:
    raise ValueError(f"Unknown distributed mode {mode!r}; use 'none', 'auto' or 'manual'.")
  connect_collectives()


def connect_collectives() -> None:
  """Connects the processes for collectives now, while they are in step.

  The gloo collectives of CPU processes connect lazily, at the first cross-process
  collective over a given set of devices, and give every process 30 s to get there (a
  deadline JAX does not expose). Anything done before that first collective (compiling the
  train step, loading data) can drift the processes further apart than that on a busy
  machine, and the run then dies with "Gloo context initialization failed ... timed out".
  Right after ``jax.distributed.initialize`` the processes have just met, so one tiny sum
  over the mesh's devices here connects them; later collectives over the same devices reuse
  the connection and wait for a slower process. Free for a single process.
  """
  if jax.process_count() == 1:
    return
  mesh = make_mesh()
  ones = jax.make_array_from_process_local_data(
      batch_sharding(mesh), np.ones((jax.local_device_count(),), np.int32))
  total = jax.jit(jnp.sum, out_shardings=replicated(mesh))(ones)
  if int(total.addressable_data(0)) != jax.device_count():
    raise RuntimeError(f"cross-process sum over {jax.device_count()} devices gave {total}")


def make_mesh(devices: list[Any] | None = None) -> Mesh:
  """A 1-D mesh named ``data`` over all devices (all processes), with Auto axis semantics.

  Auto (not ``jax.make_mesh``'s Explicit default) lets XLA place the collectives that the
  global-batch VICReg statistics and SyncBN need without per-op sharding annotations.
  """
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a global batch: leading axis split over the ``data`` axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of parameters, optimizer state and scalars: a full copy on every device."""
  return NamedSharding(mesh, P())


def sharded_axis(shape: tuple[int, ...], devices: int, min_elements: int) -> int | None:
  """The axis along which a leaf of ``shape`` is split over ``devices`` devices, or None.

  A leaf of at least ``min_elements`` elements is split along its largest axis that
  ``devices`` divides (the first such axis on a tie); smaller leaves, and leaves without
  such an axis, stay replicated.
  """
  if math.prod(shape) < min_elements:
    return None
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % devices == 0:
      return axis
  return None


def state_sharding(mesh: Mesh, shape: tuple[int, ...], min_elements: int) -> NamedSharding:
  """Sharding of one optimizer-state (or gradient) leaf of ``shape`` under ZeRO stage 1:
  split over the ``data`` axis along :func:`sharded_axis`, else replicated."""
  axis = sharded_axis(shape, mesh.shape[DATA_AXIS], min_elements)
  if axis is None:
    return replicated(mesh)
  spec = [None] * len(shape)
  spec[axis] = DATA_AXIS
  return NamedSharding(mesh, P(*spec))


def state_shardings(mesh: Mesh, tree: Any, min_elements: int) -> Any:
  """:func:`state_sharding` of every leaf of ``tree`` (arrays or ``jax.ShapeDtypeStruct``)."""
  return jax.tree.map(lambda x: state_sharding(mesh, x.shape, min_elements), tree)


def check_batch_divisible(global_batch: int, mesh: Mesh) -> None:
  """Raises ValueError unless the global batch splits evenly over devices and processes."""
  devices = mesh.devices.size
  if global_batch % devices:
    raise ValueError(
        f"Global batch size {global_batch} is not divisible by the {devices} devices of the "
        f"mesh. Set --config.batch_size to a multiple of {devices} "
        f"(e.g. {max(devices, global_batch // devices * devices)}).")


def agree_on_all_processes(text: str, describe: Callable[[str], str]) -> None:
  """Raises ValueError on every process unless each process's ``text`` (e.g. its config)
  equals process 0's; on a process that differs, ``describe(process_0_text)`` says how.

  All processes raise together, so none is left waiting in a collective for a process that
  stopped. A single process returns at once.
  """
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  mine = np.frombuffer(text.encode(), np.uint8)
  length = int(multihost_utils.broadcast_one_to_all(np.int32(mine.size)))
  padded = np.zeros(length, np.uint8)
  padded[:min(length, mine.size)] = mine[:length]
  reference = bytes(np.asarray(multihost_utils.broadcast_one_to_all(padded))).decode()
  differs = np.asarray(multihost_utils.process_allgather(np.int32(reference != text)))
  if differs.any():
    detail = (describe(reference) if reference != text
              else "this process matches; the others say how they differ")
    raise ValueError(
        f"Processes {np.flatnonzero(differs).tolist()} run with another config or workdir than "
        f"process 0 ({detail}). Every process must run the same command; only "
        "--config.distributed.process_id may differ.")


def epoch_steps(global_batch: int, num_examples: int, mesh: Mesh, what: str) -> int:
  """Whole steps per epoch of a source held in memory (the remainder is dropped); raises
  ValueError, naming ``--config.batch_size``, when the batch does not divide over the mesh
  or exceeds the ``num_examples`` of ``what``."""
  check_batch_divisible(global_batch, mesh)
  if global_batch > num_examples:
    raise ValueError(f"--config.batch_size={global_batch} is larger than the {num_examples} "
                     f"examples of {what}; lower it.")
  return num_examples // global_batch


def process_batch_size(global_batch: int, mesh: Mesh) -> int:
  """Number of examples this process feeds per step (its share of the global batch)."""
  check_batch_divisible(global_batch, mesh)
  return global_batch // jax.process_count()


def host_to_global(mesh: Mesh, local_batch: Any) -> Any:
  """Turns this process's slice of a batch (pytree of numpy arrays) into global arrays.

  Each leaf has shape ``[global_batch / process_count, ...]`` on every process; the result
  has shape ``[global_batch, ...]``, sharded over the ``data`` axis.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x),
                      local_batch)


def replicate(mesh: Mesh, tree: Any) -> Any:
  """Places a pytree (identical on every process) fully replicated on the mesh."""
  return jax.device_put(tree, replicated(mesh))
