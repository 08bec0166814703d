"""Input data: view-pair sources for pretraining and on-device augmentation ops.

``create_view_source(config, mesh, start_step=k)`` returns an iterator of global batches
``{"view_a", "view_b"}`` (uint8 [B, S, S, 3], sharded over the mesh) for steps k, k+1, ...,
a deterministic function of ``(config.seed, step)``, with attributes ``num_examples`` and
``steps_per_epoch``. Importing this package never imports TensorFlow; only the streaming
sources (``source="tfds"`` or ``"folder"``) do, when created.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import jax
import ml_collections
import numpy as np

from vicreg_jax import parallel
from vicreg_jax.data.augment import augment_pair, augment_view, sample_view_params
from vicreg_jax.data.memory import MemoryViewSource, load_arrays, random_resized_crop


class ViewSource(Protocol):
  """What pretraining iterates: one global batch of uint8 view pairs per step.

  ``next()`` gives ``{"view_a", "view_b"}``: uint8 [config.batch_size, S, S, 3] global
  ``jax.Array``s sharded with ``parallel.batch_sharding(mesh)`` (S =
  ``config.augment.image_size``), for steps ``start_step, start_step + 1, ...``, a
  deterministic function of ``(config.seed, step)``.
  """

  num_examples: int  # examples per epoch, over all processes
  steps_per_epoch: int  # num_examples // batch_size, at least 1

  def __iter__(self) -> Iterator[dict]:
    ...

  def __next__(self) -> dict:
    ...


class SyntheticViewSource:
  """One random uint8 batch placed on the devices once and yielded every step.

  For measuring the training step through the real CLI without any input pipeline
  (``--config.data.source=synthetic``); an epoch is ``data.num_examples`` (default 100
  batches) so that schedules behave as usual.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh, *, start_step: int = 0):
    del start_step  # every step sees the same batch
    size = config.augment.image_size
    rng = np.random.default_rng(config.seed)
    local = config.batch_size // jax.process_count()
    batch = {name: rng.integers(0, 256, (local, size, size, 3), dtype=np.uint8)
             for name in ("view_a", "view_b")}
    probe_classes = config.model.get("online_probe_classes", 0)
    if probe_classes:
      batch["label"] = rng.integers(0, probe_classes, local).astype(np.int32)
    self._batch = parallel.host_to_global(mesh, batch)
    self.num_examples = config.data.num_examples or 100 * config.batch_size
    self.steps_per_epoch = max(self.num_examples // config.batch_size, 1)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return self._batch


def create_view_source(config: ml_collections.ConfigDict, mesh, *, start_step: int = 0
                       ) -> ViewSource:
  """The view-pair source selected by ``config.data.source``, positioned at ``start_step``.

  ``memory``: the split in device memory, crops on the accelerator (:mod:`.memory`);
  ``tfds`` / ``folder``: tf.data decode and crop on the host (:mod:`.pipeline`, imports
  TensorFlow); ``synthetic``: one random batch, for benchmarks.
  """
  if config.data.source == "memory":
    return MemoryViewSource(config, mesh, start_step=start_step)
  if config.data.source == "synthetic":
    return SyntheticViewSource(config, mesh, start_step=start_step)
  if config.data.source in ("tfds", "folder"):
    from vicreg_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (imports TF)
    return pipeline.StreamingViewSource(config, mesh, start_step=start_step)
  raise ValueError(f"--config.data.source={config.data.source!r}; use 'memory', 'tfds', "
                   "'folder' or 'synthetic'.")


__all__ = ["MemoryViewSource", "SyntheticViewSource", "ViewSource", "augment_pair",
           "augment_view", "create_view_source", "load_arrays", "random_resized_crop",
           "sample_view_params"]
