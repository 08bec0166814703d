"""Input data: view-pair sources for pretraining and on-device augmentation ops.

``create_view_source(config, mesh, start_step=k)`` returns an iterator of global batches
``{"view_a", "view_b"}`` (uint8 [B, S, S, 3], sharded over the mesh) for steps k, k+1, ...,
a deterministic function of ``(config.seed, step)``, with attributes ``num_examples`` and
``steps_per_epoch``. Importing this package never imports TensorFlow; only the streaming
sources (``source="tfds"`` or ``"folder"``) do, when created.
"""

from __future__ import annotations

import ml_collections

from vicreg_jax.data.augment import augment_pair, augment_view
from vicreg_jax.data.memory import MemoryViewSource, load_arrays


def create_view_source(config: ml_collections.ConfigDict, mesh, *, start_step: int = 0):
  """The view-pair source selected by ``config.data.source``, positioned at ``start_step``."""
  if config.data.source == "memory":
    return MemoryViewSource(config, mesh, start_step=start_step)
  if config.data.source in ("tfds", "folder"):
    from vicreg_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (imports TF)
    return pipeline.StreamingViewSource(config, mesh, start_step=start_step)
  raise ValueError(f"--config.data.source={config.data.source!r}; use 'memory', 'tfds' or "
                   "'folder'.")


__all__ = ["MemoryViewSource", "augment_pair", "augment_view", "create_view_source",
           "load_arrays"]
