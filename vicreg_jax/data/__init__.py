"""Input data: the source factories, their protocols, and the names callers use.

Layers, each importing only those above it: ``augment`` (on-device view ops),
``geometry`` (crop windows, resampling) and ``spectrogram`` (log-mel images of audio) in pure
JAX; ``datasets`` (whole splits on the host), ``audio_files`` (ESC-50 and audio class
folders, decoded on the host), ``subsets`` (label subsets) and ``folders`` (the image-folder
walker); the sources,
``in_memory`` (on the devices) and ``tf_input`` (tf.data streams, the only module importing
TensorFlow, imported here only when a streaming source is created). Importing this package
never imports TensorFlow.

Set-up goes one way: build a source (cheap: learns ``num_examples`` / ``steps_per_epoch``),
build the optimiser and state, restore, then open the source at the restored step::

  source = create_view_source(config, mesh, with_labels=False)
  batches = source.iterate(start_step)  # {"view_a", "view_b"}: uint8 [B, S, S, 3]
"""

from __future__ import annotations

from typing import Iterator, Protocol

import ml_collections

from vicreg_jax.data.augment import augment_pair, augment_view, sample_view_params
from vicreg_jax.data.datasets import load_arrays
from vicreg_jax.data.geometry import random_resized_crop
from vicreg_jax.data.in_memory import MemoryLabelledSource, MemoryViewSource, SyntheticViewSource
from vicreg_jax.data.subsets import Subset, select_indices, subset_from_config

STREAMING = ("tfds", "folder")


class ViewSource(Protocol):
  """What pretraining iterates: one global batch of uint8 view pairs per step.

  ``iterate(start_step)`` yields ``{"view_a", "view_b"}``: uint8 [config.batch_size, S, S,
  3] global ``jax.Array``s sharded with ``parallel.batch_sharding(mesh)`` (S =
  ``config.augment.image_size``), and ``"label"`` int32 [B] when built ``with_labels``, for
  steps ``start_step, start_step + 1, ...``, a deterministic function of ``(config.seed,
  step)``.
  """

  num_examples: int  # examples per epoch, over all processes
  steps_per_epoch: int  # num_examples // batch_size, at least 1

  def iterate(self, start_step: int = 0) -> Iterator[dict]:
    ...


class LabelledSource(Protocol):
  """Epochs of labelled global batches for the supervised protocols.

  ``epoch(e)`` yields ``steps_per_epoch`` batches ``{"image": uint8 [B, S, S, 3], "label":
  int32 [B], "weight": float32 [B]}`` sharded over the mesh (S =
  ``config.eval.transform.image_size``). Every selected example appears exactly once per
  epoch; the last batch is padded with ``weight == 0`` rows. ``train=True`` shuffles per
  epoch from ``(seed, e)`` and crops randomly (RandomResizedCrop bilinear + flip, or
  pad-and-crop + flip for small images); ``train=False`` keeps the split's order and takes
  the evaluation crop (shorter side to ``resize_size``, centre crop ``image_size``).
  """

  num_examples: int     # real (selected) examples per epoch, over all processes
  num_classes: int
  steps_per_epoch: int  # ceil(num_examples / batch_size) (streaming: equal on every process)

  def epoch(self, index: int) -> Iterator[dict]:
    ...


def create_view_source(config: ml_collections.ConfigDict, mesh, *, with_labels: bool = False,
                       num_classes: int = 0) -> ViewSource:
  """The view-pair source selected by ``config.data.source`` (open it with ``iterate``).

  ``memory``: the split in device memory, crops on the accelerator; ``tfds`` / ``folder``:
  tf.data decode and crop on the host (imports TensorFlow); ``synthetic``: one random
  batch, for benchmarks. ``with_labels``: batches carry ``"label"`` int32 [B] in ``[0,
  num_classes)`` (in-memory and synthetic sources only).
  """
  if config.data.source == "memory":
    return MemoryViewSource(config, mesh, with_labels=with_labels, num_classes=num_classes)
  if config.data.source == "audio":
    if with_labels:
      raise ValueError("--config.data.source=audio gives the views no labels; set "
                       "--config.model.online_probe_classes=0.")
    from vicreg_jax.data import audio_source  # pylint: disable=g-import-not-at-top
    return audio_source.AudioViewSource(config, mesh)
  if config.data.source == "synthetic":
    return SyntheticViewSource(config, mesh, with_labels=with_labels, num_classes=num_classes)
  if config.data.source in STREAMING:
    if with_labels:
      raise ValueError(f"--config.data.source={config.data.source!r} streams no labels; "
                       "use data.source=memory for the online probe.")
    from vicreg_jax.data import tf_input  # pylint: disable=g-import-not-at-top  (imports TF)
    return tf_input.StreamingViewSource(config, mesh)
  raise ValueError(f"--config.data.source={config.data.source!r}; use 'memory', 'tfds', "
                   "'folder' or 'synthetic'.")


def view_shapes(config: ml_collections.ConfigDict, batch: int) -> tuple[tuple, tuple]:
  """Shapes of a batch of (view a, view b) as the encoders see them: images ``[B, S, S,
  3]`` twice, or for ``data.source=audio`` a waveform ``[B, t, 1]`` and a log-mel image
  ``[B, n_mels, frames, 1]``."""
  if config.data.source == "audio":
    from vicreg_jax.data import audio_source  # pylint: disable=g-import-not-at-top
    return audio_source.view_shapes(config.audio, batch)
  size = config.augment.image_size
  return (batch, size, size, 3), (batch, size, size, 3)


def create_labelled_source(config: ml_collections.ConfigDict, mesh, *, split: str,
                           train: bool, batch_size: int, subset: Subset | None = None,
                           num_classes: int = 0) -> LabelledSource:
  """The labelled source for ``config.data.source`` (memory on the devices, else tf.data).

  ``num_classes``: 0 to infer it from the data (memory: max label + 1; tfds: the dataset's
  metadata; folder: the number of class sub-folders).
  """
  if config.data.source == "memory":
    return MemoryLabelledSource(config, mesh, split=split, train=train, batch_size=batch_size,
                                subset=subset, num_classes=num_classes)
  if config.data.source in STREAMING:
    from vicreg_jax.data import tf_input  # pylint: disable=g-import-not-at-top  (imports TF)
    return tf_input.StreamingLabelledSource(config, mesh, split=split, train=train,
                                            batch_size=batch_size, subset=subset,
                                            num_classes=num_classes)
  raise ValueError(f"Evaluation needs labelled data; --config.data.source="
                   f"{config.data.source!r} has none. Use 'memory', 'tfds' or 'folder'.")


__all__ = ["LabelledSource", "MemoryLabelledSource", "MemoryViewSource", "Subset",
           "SyntheticViewSource", "ViewSource", "augment_pair", "augment_view",
           "create_labelled_source", "create_view_source", "load_arrays", "view_shapes",
           "random_resized_crop", "sample_view_params", "select_indices",
           "subset_from_config"]
