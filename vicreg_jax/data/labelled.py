"""Labelled image batches for the supervised protocols (linear probe, fine-tuning, kNN).

A labelled source yields, for epoch ``e``, ``steps_per_epoch`` global batches
``{"image": uint8 [B, S, S, 3], "label": int32 [B], "weight": float32 [B]}`` sharded over
the mesh (S = ``config.eval.transform.image_size``). Every selected example appears exactly
once per epoch; the last batch is padded with ``weight == 0`` rows, so accuracies and
losses count real examples only. ``train=True`` shuffles per epoch from ``(seed, e)`` and
crops randomly (RandomResizedCrop bilinear + flip, or pad-and-crop + flip for small images);
``train=False`` keeps the split's order and takes the evaluation crop (resize the shorter
side to ``resize_size``, centre crop ``image_size``).

In-memory datasets (``config.data.source`` memory) crop on the accelerator here; streaming
sources (tfds, folders) crop on the host in :mod:`vicreg_jax.data.pipeline`.
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vicreg_jax import parallel
from vicreg_jax.data import memory
from vicreg_jax.data.augment import UINT8_MAX, hflip

TRAIN_CROPS = ("random_resized", "pad_random")
# Stream of the labelled-data keys under fold_in(seed, .) (0 init, 1 step rng, 2 views).
LABELLED_KEY_STREAM = 3


class Subset(NamedTuple):
  """Which training examples carry labels (semi-supervised protocols).

  ``ids``: the example ids to keep (the lines of a SimCLR-style subset file), or None;
  otherwise ``fraction`` of the examples, drawn with ``seed``.
  """
  ids: frozenset[str] | None = None
  fraction: float = 1.0
  seed: int = 0


class LabelledSource(Protocol):
  """Epochs of labelled global batches (see the module docstring)."""

  num_examples: int     # real (selected) examples per epoch, over all processes
  num_classes: int
  steps_per_epoch: int  # ceil(num_examples / batch_size) (streaming: equal on every process)

  def epoch(self, index: int) -> Iterator[dict]:
    ...


def read_subset_file(path: str) -> frozenset[str]:
  """Example ids, one per line (blank lines ignored); SimCLR's ``1percent.txt`` format."""
  try:
    with open(path, encoding="utf-8") as f:
      ids = frozenset(line.strip() for line in f if line.strip())
  except OSError as err:
    raise FileNotFoundError(f"Subset file {path!r} cannot be read ({err.strerror}); pass "
                            "--config.eval.finetune.subset_file=<file of image ids> or set "
                            "it to '' and use subset_fraction.") from err
  if not ids:
    raise ValueError(f"Subset file {path} lists no ids.")
  return ids


def subset_from_config(finetune_config: ml_collections.ConfigDict) -> Subset:
  """The label subset of ``config.eval.finetune`` (file of ids, else fraction and seed)."""
  if finetune_config.subset_file:
    return Subset(ids=read_subset_file(finetune_config.subset_file),
                  seed=finetune_config.subset_seed)
  if not 0.0 < finetune_config.subset_fraction <= 1.0:
    raise ValueError(f"--config.eval.finetune.subset_fraction="
                     f"{finetune_config.subset_fraction} must be in (0, 1].")
  return Subset(fraction=finetune_config.subset_fraction, seed=finetune_config.subset_seed)


def select_indices(ids: list[str], subset: Subset | None) -> np.ndarray:
  """Sorted indices of the examples with ``ids`` that ``subset`` keeps.

  A fraction keeps ``max(1, round(fraction * n))`` examples drawn without replacement.
  Raises ValueError when an id file matches nothing (wrong naming scheme).
  """
  n = len(ids)
  if subset is None:
    return np.arange(n)
  if subset.ids is not None:
    keep = np.asarray([i for i, name in enumerate(ids) if name in subset.ids], np.int64)
    if not len(keep):
      raise ValueError(f"None of the {len(subset.ids)} subset ids (e.g. "
                       f"{sorted(subset.ids)[0]!r}) names an example of this split (ids look "
                       f"like {ids[0]!r}).")
    return keep
  count = max(1, round(subset.fraction * n))
  return np.sort(np.random.default_rng(subset.seed).choice(n, count, replace=False))


def center_window(height: int, width: int, transform: ml_collections.ConfigDict) -> np.ndarray:
  """Evaluation crop as a window of the original image: f32[4] = (y, x, h, w) pixels.

  Resizing the shorter side to ``resize_size`` then centre-cropping ``image_size`` keeps the
  central ``image_size / resize_size`` of the shorter side (and the same length of the
  other); resampling that window straight to ``image_size`` is the same operation.
  """
  side = min(height, width) * transform.image_size / transform.resize_size
  h, w = min(side, height), min(side, width)
  return np.asarray([(height - h) / 2, (width - w) / 2, h, w], np.float32)


def pad_random_crop(key: jax.Array, image: jax.Array, pad: int) -> jax.Array:
  """Zero-pads [S, S, 3] by ``pad`` and takes a random [S, S, 3] crop (CIFAR protocol)."""
  size = image.shape[:2]
  padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  offset = jax.random.randint(key, (2,), 0, 2 * pad + 1)
  return jax.lax.dynamic_slice(padded, (offset[0], offset[1], 0), (*size, 3))


def check_transform(transform: ml_collections.ConfigDict, image_shape: tuple[int, ...]) -> None:
  """Raises ValueError for an unknown train crop or a pad crop of the wrong image size."""
  if transform.train_crop not in TRAIN_CROPS:
    raise ValueError(f"--config.eval.transform.train_crop={transform.train_crop!r}; use one "
                     f"of {TRAIN_CROPS}.")
  if transform.train_crop == "pad_random" and tuple(image_shape[:2]) != (
      transform.image_size,) * 2:
    raise ValueError(f"train_crop='pad_random' needs images of {transform.image_size} px; "
                     f"these are {image_shape[:2]}. Use train_crop='random_resized' or set "
                     "--config.eval.transform.image_size to the image size.")


def transform_images(key: jax.Array, images: jax.Array, transform: ml_collections.ConfigDict,
                     *, train: bool) -> jax.Array:
  """uint8 [n, H, W, 3] -> uint8 [n, S, S, 3]: the train (random) or evaluation crop."""
  size = transform.image_size
  n, height, width = images.shape[:3]
  if not train:
    window = jnp.asarray(center_window(height, width, transform))
    crop = jax.vmap(lambda img: memory.crop_and_resize(img, window, size, kernel="bilinear"))(
        images)
    return jnp.clip(jnp.round(crop), 0, UINT8_MAX).astype(jnp.uint8)
  crop_keys, flip_keys = jnp.split(jax.random.split(key, 2 * n), 2)
  if transform.train_crop == "pad_random":
    crops = jax.vmap(lambda k, img: pad_random_crop(k, img, transform.pad))(crop_keys, images)
  else:
    def rrc(k, img):
      window = memory.sample_crop_window(k, height, width, transform.crop_scale,
                                         transform.crop_ratio)
      crop = memory.crop_and_resize(img, window, size, kernel="bilinear")
      return jnp.clip(jnp.round(crop), 0, UINT8_MAX).astype(jnp.uint8)
    crops = jax.vmap(rrc)(crop_keys, images)
  flips = jax.vmap(lambda k: jax.random.bernoulli(k, transform.flip_prob))(flip_keys)
  return jnp.where(flips[:, None, None, None], jax.vmap(hflip)(crops), crops)


class MemoryLabelledSource:
  """A labelled split held on the devices; each batch is cropped there (see module doc).

  Args:
    config: full config (``data`` names the dataset, ``eval.transform`` the crops, ``seed``).
    mesh: device mesh; ``batch_size`` must divide over its devices.
    split: which split of ``config.data`` to load.
    train: random crops and a per-epoch shuffle (True) or evaluation crops in order.
    batch_size: global batch size.
    subset: label subset of the split (ids are the example indices as strings, or the
      ``{split}_ids`` array of an ``.npz``), or None for all examples.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh, *, split: str, train: bool,
               batch_size: int, subset: Subset | None = None, num_classes: int = 0):
    images, labels = memory.load_arrays(config.data, split)
    check_transform(config.eval.transform, images.shape[1:])
    parallel.check_batch_divisible(batch_size, mesh)
    ids = memory.load_ids(config.data, split, len(images))
    keep = select_indices(ids, subset)
    images, labels = images[keep], labels[keep]
    self.num_examples = len(images)
    self.num_classes = num_classes or int(labels.max()) + 1
    self.steps_per_epoch = math.ceil(self.num_examples / batch_size)
    self._batch_size, self._train = batch_size, train
    self._images = parallel.replicate(mesh, images)
    self._labels = parallel.replicate(mesh, labels.astype(np.int32))
    key = jax.random.fold_in(jax.random.key(config.seed), LABELLED_KEY_STREAM)
    self._order_key, self._crop_key = jax.random.split(key)
    transform = config.eval.transform

    num_examples = self.num_examples

    def make_batch(images, labels, positions, step_key):
      # Padding positions (>= num_examples) read the last example and weigh 0.
      index = jnp.minimum(positions, num_examples - 1)
      return {"image": transform_images(step_key, images[index], transform, train=train),
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
  if config.data.source in ("tfds", "folder"):
    from vicreg_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (imports TF)
    return pipeline.StreamingLabelledSource(config, mesh, split=split, train=train,
                                            batch_size=batch_size, subset=subset,
                                            num_classes=num_classes)
  raise ValueError(f"Evaluation needs labelled data; --config.data.source="
                   f"{config.data.source!r} has none. Use 'memory', 'tfds' or 'folder'.")
