"""Sources whose whole split sits in device memory: views, labelled batches and a synthetic one.

For data that fits in memory (scikit-learn's digits, CIFAR-10/100, STL-10, any ``.npz``) the
images are placed on the devices once, replicated; each step picks its slice of the epoch's
permutation and crops there (:mod:`.geometry`), so there is no per-step host work.
Everything is a deterministic function of ``(seed, step)`` (streams ``rng.VIEWS`` and
``rng.LABELLED``): opening a source at any step reproduces the run from there.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vicreg_jax import parallel, rng
from vicreg_jax.data import datasets, geometry
from vicreg_jax.data.subsets import Subset, select_indices


class MemoryViewSource:
  """Global ``{"view_a", "view_b"}`` uint8 [B, S, S, 3] batches, one per step (with
  ``"label"`` int32 [B] too when ``with_labels``).

  Step ``s`` takes slice ``s % steps_per_epoch`` of the permutation drawn from
  ``fold_in(order_key, s // steps_per_epoch)`` (the remainder of each epoch is dropped) and
  crops both views with keys from ``fold_in(crop_key, s)``, all inside one jitted function
  whose output is sharded over the mesh (``parallel.batch_sharding``). Building the source
  loads the split; :meth:`iterate` opens it at a step. Attributes: ``num_examples``,
  ``steps_per_epoch``.

  Args:
    config: full config (``data``, ``augment``, ``batch_size``, ``seed``).
    mesh: device mesh; ``batch_size`` must divide over its devices.
    with_labels: add each example's label (checked to lie in ``[0, num_classes)``).
    num_classes: the classes the labels must name (with ``with_labels``).
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh, *, with_labels: bool = False,
               num_classes: int = 0):
    images, labels = datasets.load_arrays(
        config.data, config.data.split,
        labels_needed_by="the online probe (or set --config.model.online_probe_classes=0)"
        if with_labels else "")
    if with_labels:
      datasets.check_labels(
          labels, num_classes, what=f"{config.data.name} split {config.data.split!r}",
          unlabelled_fix="the online probe needs labels: use a labelled split or set "
          "--config.model.online_probe_classes=0.",
          range_fix=f"--config.model.online_probe_classes={num_classes}; set it to "
          "{needed}.")
    self.num_examples = len(images)
    self.steps_per_epoch = parallel.epoch_steps(config.batch_size, self.num_examples, mesh,
                                                config.data.name)
    self._images = parallel.replicate(mesh, images)
    self._labels = parallel.replicate(mesh, labels.astype(np.int32))
    aug = config.augment
    batch, spe = config.batch_size, self.steps_per_epoch
    order_key, crop_key = jax.random.split(rng.stream_key(config.seed, rng.VIEWS))

    def make_batch(images, labels, step):
      key = jax.random.fold_in(crop_key, step)
      perm = jax.random.permutation(jax.random.fold_in(order_key, step // spe), images.shape[0])
      idx = jax.lax.dynamic_slice(perm, ((step % spe) * batch,), (batch,))
      chosen = images[idx]
      key_a, key_b = jax.random.split(key)
      views = {name: geometry.random_resized_crops(k, chosen, aug.image_size, aug.crop_scale,
                                                   aug.crop_ratio)
               for name, k in (("view_a", key_a), ("view_b", key_b))}
      return {**views, "label": labels[idx]} if with_labels else views

    self._make_batch = jax.jit(make_batch, out_shardings=parallel.batch_sharding(mesh))
    self._replicated = parallel.replicated(mesh)
    logging.info("In-memory dataset %s: %d images of %s, %d steps per epoch.",
                 config.data.name, self.num_examples, images.shape[1:], self.steps_per_epoch)

  def iterate(self, start_step: int = 0) -> Iterator[dict]:
    """The batches of steps ``start_step, start_step + 1, ...`` (endless)."""
    for step in itertools.count(start_step):
      # An explicit host->device copy of the step number (the loop runs under a guard).
      yield self._make_batch(self._images, self._labels,
                             jax.device_put(np.int32(step), self._replicated))


class SyntheticViewSource:
  """One random uint8 batch placed on the devices once and yielded every step.

  For measuring the training step through the real CLI without any input pipeline
  (``--config.data.source=synthetic``); an epoch is ``data.num_examples`` (default 100
  batches) so that schedules behave as usual. ``with_labels``: int32 [B] labels in
  ``[0, num_classes)`` too.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh, *, with_labels: bool = False,
               num_classes: int = 0):
    size = config.augment.image_size
    generator = np.random.default_rng(config.seed)
    local = config.batch_size // jax.process_count()
    batch = {name: generator.integers(0, 256, (local, size, size, 3), dtype=np.uint8)
             for name in ("view_a", "view_b")}
    if with_labels:
      batch["label"] = generator.integers(0, num_classes, local).astype(np.int32)
    self._batch = parallel.host_to_global(mesh, batch)
    self.num_examples = config.data.num_examples or 100 * config.batch_size
    self.steps_per_epoch = max(self.num_examples // config.batch_size, 1)

  def iterate(self, start_step: int = 0) -> Iterator[dict]:
    """The same batch for every step (``start_step`` changes nothing)."""
    del start_step
    return itertools.repeat(self._batch)


class MemoryLabelledSource:
  """A labelled split held on the devices; each batch is cropped there (``data.LabelledSource``).

  Args:
    config: full config (``data`` names the dataset, ``eval.transform`` the crops, ``seed``).
    mesh: device mesh; ``batch_size`` must divide over its devices.
    split: which split of ``config.data`` to load.
    train: random crops and a per-epoch shuffle (True) or evaluation crops in order.
    batch_size: global batch size.
    subset: label subset of the split (ids are the example indices as strings, or the
      ``{split}_ids`` array of an ``.npz``), or None for all examples.
    num_classes: 0 to infer it (max label + 1).
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh, *, split: str, train: bool,
               batch_size: int, subset: Subset | None = None, num_classes: int = 0):
    images, labels = datasets.load_arrays(
        config.data, split, train_fallback=datasets.train_fallback_allowed(config, split),
        labels_needed_by="evaluation")
    geometry.check_transform(config.eval.transform, images.shape[1:])
    parallel.check_batch_divisible(batch_size, mesh)
    ids = datasets.load_ids(config.data, split, len(images))
    keep = select_indices(ids, subset)
    images, labels = images[keep], labels[keep]
    self.num_examples = len(images)
    self.num_classes = num_classes or int(labels.max()) + 1
    datasets.check_eval_labels(config, labels, split, self.num_classes)
    self.steps_per_epoch = math.ceil(self.num_examples / batch_size)
    self._batch_size, self._train = batch_size, train
    self._images = parallel.replicate(mesh, images)
    self._labels = parallel.replicate(mesh, labels.astype(np.int32))
    self._order_key, self._crop_key = jax.random.split(
        rng.stream_key(config.seed, rng.LABELLED))
    transform = config.eval.transform

    num_examples = self.num_examples

    def make_batch(images, labels, positions, step_key):
      # Padding positions (>= num_examples) read the last example and weigh 0.
      index = jnp.minimum(positions, num_examples - 1)
      return {"image": geometry.transform_images(step_key, images[index], transform,
                                                 train=train),
              "label": labels[index],
              "weight": (positions < num_examples).astype(jnp.float32)}

    self._make_batch = jax.jit(make_batch, out_shardings=parallel.batch_sharding(mesh))

  def epoch(self, index: int) -> Iterator[dict]:
    """The ``steps_per_epoch`` batches of epoch ``index``."""
    n, b = self.num_examples, self._batch_size
    if self._train:
      order = np.asarray(jax.random.permutation(jax.random.fold_in(self._order_key, index), n))
    else:
      order = np.arange(n)
    order = np.concatenate([order, np.full(self.steps_per_epoch * b - n, n)])
    for step in range(self.steps_per_epoch):
      step_key = jax.random.fold_in(jax.random.fold_in(self._crop_key, index), step)
      yield self._make_batch(self._images, self._labels,
                             jnp.asarray(order[step * b:(step + 1) * b], jnp.int32), step_key)
