"""Streaming input with tf.data: tfds datasets or image folders -> global uint8 view pairs.

The host only decodes and crops: each view gets its own random-resized-crop window
(torchvision's sampler: area ``crop_scale``, log-aspect in ``crop_ratio``, 10 attempts, then
a centre crop), decoded straight from the JPEG bytes with
``decode_and_crop_jpeg`` (other formats are decoded whole, then cropped), resized
bicubically (antialiased) to S x S and returned as uint8. Flip, colour jitter, grayscale,
blur and solarize run on the accelerator in the train step (``augment.augment_pair``).

Order and randomness: each process reads its own equal shard (``tfds.split_for_jax_process``
with ``drop_remainder``, or every n-th file of a folder). Epoch ``e`` of a shard is shuffled
with a seed drawn from ``(config.seed, e)`` (tfds: a ``data.shuffle_buffer`` window over the
prepared, already shuffled records; folders: a full permutation of the file names), and the
crop windows of an example are seeded by ``(config.seed, its global stream position)``. With
``options.deterministic`` the stream is a function of the seed alone, so ``start_step=k``
starts at epoch ``k * B // N`` and skips only the records of that epoch already used, before
decoding.

This is the only module that imports TensorFlow, inside functions, and TF never sees the
accelerators: importing it, or ``vicreg_jax.data``, works without TensorFlow installed.
"""

from __future__ import annotations

import collections
import logging
import os
from typing import Any, Callable, NamedTuple, Sequence

import jax
import ml_collections
import numpy as np

from vicreg_jax import parallel
from vicreg_jax.data.augment import UINT8_MAX
from vicreg_jax.data.memory import CROP_ATTEMPTS, to_rgb_uint8

IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")
# Trailers of complete files: JPEG end-of-image marker, PNG IEND chunk (+ CRC).
COMPLETE_TAIL = {b"\xff\xd8\xff": (b"\xff\xd9", 2), b"\x89PNG": (b"IEND\xaeB`\x82", 8)}
VIEW_NAMES = ("view_a", "view_b")


def _tf():
  """TensorFlow, imported on first use, with the accelerators hidden from it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  return tf


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def _not_prepared(name: str, where: str, err: Exception) -> FileNotFoundError:
  return FileNotFoundError(
      f"tfds dataset {name!r} is not prepared: looked in {where} ({type(err).__name__}: "
      f"{str(err).splitlines()[0]}). Prepare it once with `tfds build {name} "
      "--data_dir=<dir>` (ImageNet: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
      "in <dir>/downloads/manual first), then pass --config.data.data_dir=<dir>; or use "
      "--config.data.source=folder --config.data.path=<root>/train for a folder of class "
      "sub-folders. Nothing is ever downloaded.")


def _builder(name: str, data_dir: str):
  """The tfds builder of ``name`` in ``data_dir`` (never downloads; clear errors)."""
  tfds = _tfds()
  try:
    return tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.DatasetNotFoundError as err:
    raise ValueError(f"{name!r} is not a tfds dataset name (see `tfds.list_builders()`); "
                     "for images in class sub-folders use --config.data.source=folder."
                     ) from err


def load_tfds_arrays(name: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """A whole small tfds split in memory: (uint8 [n, h, w, 3], int32 [n]). Never downloads."""
  _tf()
  builder = _builder(name, data_dir)
  try:
    ds = builder.as_dataset(split=split, batch_size=-1, as_supervised=True)
  except (AssertionError, FileNotFoundError) as err:
    raise _not_prepared(name, builder.data_dir, err) from err
  images, labels = _tfds().as_numpy(ds)
  return to_rgb_uint8(images), labels.astype(np.int32)


def _is_complete_image(path: str) -> bool:
  """Image magic bytes at the start and, for JPEG/PNG, the end marker (catches truncation)."""
  with open(path, "rb") as f:
    head = f.read(4)
    magic = next((m for m in IMAGE_MAGIC if head.startswith(m)), None)
    if magic is None:
      return False
    if magic not in COMPLETE_TAIL:
      return True
    tail, size = COMPLETE_TAIL[magic]
    f.seek(0, os.SEEK_END)
    f.seek(max(f.tell() - size, 0))
    # JPEG writers may pad after EOI; accept the marker anywhere in the last bytes.
    return tail in f.read()


def list_image_files(root: str, process_index: int = 0, process_count: int = 1) -> list[str]:
  """This process's share of the readable images under ``root/<class>/``.

  Files that are not images or are truncated (checked from their first and last bytes) are
  skipped and counted in the log, so that the stream's positions stay exact for resuming.
  Process ``i`` takes every ``process_count``-th file from the ``i``-th (so every class
  is spread over all processes); shares are disjoint and of equal size (the remainder of
  the sorted list is dropped).
  """
  if not os.path.isdir(root):
    raise FileNotFoundError(f"Image folder {root!r} does not exist; set --config.data.path "
                            "to a folder with one sub-folder of images per class.")
  files, skipped = [], 0
  for cls in sorted(os.listdir(root)):
    folder = os.path.join(root, cls)
    if not os.path.isdir(folder):
      continue
    for name in sorted(os.listdir(folder)):
      path = os.path.join(folder, name)
      if _is_complete_image(path):
        files.append(path)
      else:
        skipped += 1
  if skipped:
    logging.warning("Skipped %d non-image or truncated files in %s.", skipped, root)
  per_process = len(files) // process_count
  if not per_process:
    raise FileNotFoundError(f"No images (JPEG/PNG/GIF/BMP) for {process_count} process(es) "
                            f"in {root}/<class>/ ({len(files)} found).")
  return files[process_index:per_process * process_count:process_count]


class Shard(NamedTuple):
  """One process's records for one epoch, before shuffling.

  records: finite tf.data.Dataset of tf.string (file paths or encoded images).
  read: records -> encoded image bytes (``tf.io.read_file`` or the identity).
  shuffle_buffer: records mixed per epoch.
  size: records per epoch on this process (equal on all processes).
  """
  records: Any
  read: Callable[[Any], Any]
  shuffle_buffer: int
  size: int


def _folder_shard(data: ml_collections.ConfigDict, process_index: int,
                  process_count: int) -> Shard:
  tf = _tf()
  files = list_image_files(data.path, process_index, process_count)
  # File names are small: shuffle them all each epoch (folders are sorted by class).
  return Shard(tf.data.Dataset.from_tensor_slices(files), tf.io.read_file, len(files),
               len(files))


def _tfds_shard(data: ml_collections.ConfigDict, process_index: int,
                process_count: int) -> Shard:
  tfds = _tfds()
  builder = _builder(data.name, data.data_dir)
  split = tfds.split_for_jax_process(data.split, process_index=process_index,
                                     process_count=process_count, drop_remainder=True)
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()})
  except (AssertionError, FileNotFoundError) as err:
    raise _not_prepared(data.name, builder.data_dir, err) from err
  size = int(ds.cardinality())
  if size < 0:  # unknown cardinality (not written by tfds): fall back to the metadata
    size = builder.info.splits[data.split].num_examples // process_count
  return Shard(ds.map(lambda ex: ex["image"]), lambda x: x, data.shuffle_buffer, size)


def sample_crop_window(tf, shape, seed, scale: Sequence[float], ratio: Sequence[float]):
  """torchvision's RandomResizedCrop window in TF: int32 [4] = (y, x, h, w).

  The same sampler as :func:`vicreg_jax.data.memory.sample_crop_window` (area ~ U(scale),
  log-aspect ~ U(log ratio), first of 10 fitting attempts, else the centre crop clamped to
  ``ratio``), written with stateless TF ops for the host. ``tf.image.sample_distorted_
  bounding_box`` is not used: its crops are smaller (mean area fraction 0.40 vs 0.48 for
  scale (0.08, 1) on a square image, measured over 4000 draws).

  Args:
    tf: the TensorFlow module.
    shape: int [>= 2] tensor, image height and width first.
    seed: int64 [2] stateless seed.
    scale, ratio: area fraction and aspect (w / h) ranges.
  """
  height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  seeds = tf.random.experimental.stateless_split(seed, 4)
  area = height * width * tf.random.stateless_uniform([CROP_ATTEMPTS], seeds[0], *scale)
  aspect = tf.exp(tf.random.stateless_uniform([CROP_ATTEMPTS], seeds[1], np.log(ratio[0]),
                                              np.log(ratio[1])))
  w = tf.round(tf.sqrt(area * aspect))
  h = tf.round(tf.sqrt(area / aspect))
  fits = (w <= width) & (h <= height) & (w >= 1) & (h >= 1)
  first = tf.argmax(tf.cast(fits, tf.int32))
  in_ratio = width / height
  fallback_h = tf.where(in_ratio < ratio[0], tf.round(width / ratio[0]), height)
  fallback_w = tf.where(in_ratio > ratio[1], tf.round(height * ratio[1]), width)
  any_fit = tf.reduce_any(fits)
  h = tf.where(any_fit, h[first], fallback_h)
  w = tf.where(any_fit, w[first], fallback_w)
  corner = lambda s, free: tf.floor(tf.random.stateless_uniform([], s) * (free + 1))
  y = tf.where(any_fit, corner(seeds[2], height - h), tf.floor((height - h) / 2))
  x = tf.where(any_fit, corner(seeds[3], width - w), tf.floor((width - w) / 2))
  return tf.cast(tf.stack([y, x, h, w]), tf.int32)


def _crop_view(tf, contents, seed, augment_config: ml_collections.ConfigDict):
  """One random-resized-crop view of encoded image bytes -> uint8 [S, S, 3].

  JPEGs are decoded only inside the window (``decode_and_crop_jpeg``); other formats are
  decoded whole (gray and RGBA become RGB) and cropped.
  """
  is_jpeg = tf.io.is_jpeg(contents)
  decode_all = lambda: tf.io.decode_image(contents, channels=3, expand_animations=False)
  shape = tf.cond(is_jpeg, lambda: tf.io.extract_jpeg_shape(contents),
                  lambda: tf.shape(decode_all()))
  window = sample_crop_window(tf, shape, seed, augment_config.crop_scale,
                              augment_config.crop_ratio)
  crop = tf.cond(is_jpeg,
                 lambda: tf.io.decode_and_crop_jpeg(contents, window, channels=3),
                 lambda: tf.image.crop_to_bounding_box(decode_all(), *tf.unstack(window)))
  s = augment_config.image_size
  resized = tf.image.resize(tf.cast(crop, tf.float32), (s, s), method="bicubic", antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, UINT8_MAX), tf.uint8)


def build_dataset(config: ml_collections.ConfigDict, *, start_step: int, process_index: int,
                  process_count: int):
  """tf.data pipeline of this process's ``{"view_a", "view_b"}`` uint8 batches from a step.

  Args:
    config: the full config (``data``, ``augment``, ``seed``, ``batch_size``).
    start_step: first training step to produce (resume position).
    process_index, process_count: this process and the number of processes; each reads
      a disjoint shard and produces ``batch_size // process_count`` examples per step.

  Returns:
    ``(dataset, num_examples)``: an infinite dataset of dicts of uint8
    [batch_size // process_count, S, S, 3], and the global number of examples per epoch.
  """
  tf = _tf()
  data = config.data
  if config.batch_size % process_count:
    raise ValueError(f"--config.batch_size={config.batch_size} is not divisible by the "
                     f"{process_count} processes.")
  batch = config.batch_size // process_count
  shard = (_folder_shard if data.source == "folder" else _tfds_shard)(
      data, process_index, process_count)
  seed = tf.constant(config.seed, tf.int64)

  def epoch(e):
    """Epoch e of the shard: shuffled from (seed, e), with global positions."""
    epoch_seed = tf.random.stateless_uniform([], seed=tf.stack([seed, e]), minval=None,
                                             maxval=None, dtype=tf.int64)
    return shard.records.shuffle(shard.shuffle_buffer, seed=epoch_seed).enumerate(
        e * shard.size)

  first = start_step * batch
  records = tf.data.Dataset.counter(first // shard.size).flat_map(epoch)
  records = records.skip(first % shard.size)  # before reading and decoding: cheap

  def views(position, record):
    contents = shard.read(record)
    # Every (process, position, view) has its own crop seed; int64 so that 1000 ImageNet
    # epochs do not wrap around.
    element = (position * process_count + process_index) * len(VIEW_NAMES)
    return {name: _crop_view(tf, contents, tf.stack([seed, element + v]), config.augment)
            for v, name in enumerate(VIEW_NAMES)}

  options = tf.data.Options()
  options.deterministic = True  # exact resume and reproducible runs
  options.autotune.enabled = True
  options.threading.max_intra_op_parallelism = 1  # parallelism comes from the maps
  if data.threads:
    options.threading.private_threadpool_size = data.threads
  # Last resort for files damaged inside (intact start and end): dropped with a warning; the
  # stream stays deterministic, though such a drop shifts later batch boundaries.
  ds = records.map(views, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors(log_warning=True)
  ds = ds.batch(batch, drop_remainder=True).prefetch(data.prefetch_batches)
  return ds.with_options(options), data.num_examples or shard.size * process_count


class StreamingViewSource:
  """Iterator of global ``{"view_a", "view_b"}`` uint8 [B, S, S, 3] batches from tf.data.

  Each process's batches become global arrays sharded over the mesh
  (``parallel.host_to_global``); ``data.device_prefetch`` of them are kept in flight so
  that host-to-device copies overlap the training step. Attributes: ``num_examples``,
  ``steps_per_epoch``.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh, *, start_step: int = 0):
    parallel.check_batch_divisible(config.batch_size, mesh)
    ds, self.num_examples = build_dataset(config, start_step=start_step,
                                          process_index=jax.process_index(),
                                          process_count=jax.process_count())
    self.steps_per_epoch = max(self.num_examples // config.batch_size, 1)
    self._mesh = mesh
    self._host = ds.as_numpy_iterator()
    self._ahead = collections.deque()
    self._depth = config.data.device_prefetch

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    while len(self._ahead) <= self._depth:
      self._ahead.append(parallel.host_to_global(self._mesh, next(self._host)))
    return self._ahead.popleft()
