"""Streaming input with tf.data: tfds datasets or image folders -> per-process uint8 view pairs.

The host only decodes and crops: each view gets its own random-resized-crop window
(``tf.image.stateless_sample_distorted_bounding_box``: area ``crop_scale``, aspect
``crop_ratio``, whole image as fallback), decoded straight from the JPEG bytes with
``decode_and_crop_jpeg`` (other formats are decoded whole), resized bicubically to S x S and
returned as uint8. Flip, colour, blur and solarize run on the accelerator in the train step.

Every random draw is seeded by ``(config.seed, element position)``, the order by
``config.seed``, and the pipeline is deterministic, so ``start_step=k`` skips exactly the
examples of the first k steps (before decoding) and resumes the same stream. Each process
reads its own shard (``tfds.split_for_jax_process`` / every n-th file) and the host batches
become global arrays with ``parallel.host_to_global``.

This is the only module that imports TensorFlow, inside functions; TF never sees the GPUs.
"""

from __future__ import annotations

import logging
import os

import jax
import ml_collections
import numpy as np

from vicreg_jax import parallel

IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")
# Trailers of complete files: JPEG end-of-image marker, PNG IEND chunk (+ CRC).
COMPLETE_TAIL = {b"\xff\xd8\xff": (b"\xff\xd9", 2), b"\x89PNG": (b"IEND\xaeB`\x82", 8)}
# Element-seed stream of the crops (views 0 and 1 of element i use 2i and 2i + 1).
VIEWS = 2


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  return tf


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def _missing(name: str, data_dir: str, err: Exception) -> FileNotFoundError:
  where = data_dir or "the default tfds data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
  return FileNotFoundError(
      f"tfds dataset {name!r} is not prepared in {where} ({type(err).__name__}: {err}). "
      f"Prepare it once with `tfds build {name} --data_dir=<dir>` (ImageNet needs the "
      "manual download placed in <dir>/downloads/manual), then pass "
      "--config.data.data_dir=<dir>. Nothing is downloaded automatically.")


def load_tfds_arrays(name: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """A whole small tfds split in memory: (uint8 images, int32 labels). Never downloads."""
  _tf()
  tfds = _tfds()
  from vicreg_jax.data.memory import to_rgb_uint8  # pylint: disable=g-import-not-at-top
  try:
    images, labels = tfds.as_numpy(tfds.load(name, split=split, data_dir=data_dir or None,
                                             download=False, batch_size=-1,
                                             as_supervised=True))
  except (AssertionError, tfds.core.DatasetNotFoundError, FileNotFoundError) as err:
    raise _missing(name, data_dir, err) from err
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
  skipped and counted in the log, so the stream's positions stay exact for resuming.
  Shares are equal-sized (the remainder is dropped) and disjoint between processes.
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
  if not files:
    raise FileNotFoundError(f"No images (JPEG/PNG/GIF/BMP) found in {root}/<class>/.")
  per_process = len(files) // process_count
  return files[process_index * per_process:(process_index + 1) * per_process]


def _crop_view(tf, contents, seed, augment_config):
  """One random-resized-crop view of encoded image bytes -> uint8 [S, S, 3]."""
  is_jpeg = tf.io.is_jpeg(contents)
  decode_all = lambda: tf.io.decode_image(contents, channels=3, expand_animations=False)
  shape = tf.cond(is_jpeg, lambda: tf.io.extract_jpeg_shape(contents),
                  lambda: tf.shape(decode_all()))
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=0.0, aspect_ratio_range=tuple(augment_config.crop_ratio),
      area_range=tuple(augment_config.crop_scale), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  y, x, h, w = begin[0], begin[1], size[0], size[1]
  crop = tf.cond(is_jpeg,
                 lambda: tf.io.decode_and_crop_jpeg(contents, tf.stack([y, x, h, w]), channels=3),
                 lambda: tf.image.crop_to_bounding_box(decode_all(), y, x, h, w))
  s = augment_config.image_size
  resized = tf.image.resize(tf.cast(crop, tf.float32), (s, s), method="bicubic", antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _encoded_images(config, process_index, process_count):
  """(dataset of encoded image bytes for this process, global number of examples)."""
  tf = _tf()
  data = config.data
  if data.source == "folder":
    files = list_image_files(data.path, process_index, process_count)
    ds = tf.data.Dataset.from_tensor_slices(files).map(tf.io.read_file)
    return ds, len(files) * process_count
  tfds = _tfds()
  try:
    builder = tfds.builder(data.name, data_dir=data.data_dir or None)
  except tfds.core.DatasetNotFoundError as err:
    raise _missing(data.name, data.data_dir, err) from err
  split = tfds.split_for_jax_process(data.split, process_index=process_index,
                                     process_count=process_count, drop_remainder=True)
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()})
  except (AssertionError, FileNotFoundError) as err:
    raise _missing(data.name, data.data_dir, err) from err
  num_examples = data.num_examples or builder.info.splits[data.split].num_examples
  return ds.map(lambda ex: ex["image"]), num_examples


def build_dataset(config: ml_collections.ConfigDict, *, start_step: int, process_index: int,
                  process_count: int):
  """tf.data pipeline of this process's ``{"view_a", "view_b"}`` uint8 batches from a step.

  Returns ``(dataset, global number of examples)``.
  """
  tf = _tf()
  batch = config.batch_size // process_count
  ds, num_examples = _encoded_images(config, process_index, process_count)
  ds = ds.shuffle(config.data.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
  ds = ds.repeat().enumerate().skip(start_step * batch)  # skip before decoding: cheap

  def views(position, contents):
    base = tf.cast(position, tf.int32) * VIEWS
    return {name: _crop_view(tf, contents, tf.stack([config.seed, base + v]), config.augment)
            for v, name in enumerate(("view_a", "view_b"))}

  options = tf.data.Options()
  options.deterministic = True  # exact resume
  options.autotune.enabled = True
  if config.data.threads:
    options.threading.private_threadpool_size = config.data.threads
  # Last resort for files damaged inside (intact start and end): dropped with a warning; the
  # stream stays deterministic, though such a drop shifts later batch boundaries.
  ds = ds.map(views, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors(log_warning=True)
  ds = ds.batch(batch, drop_remainder=True)
  return ds.prefetch(config.data.prefetch_batches).with_options(options), num_examples


class StreamingViewSource:
  """Iterator of global ``{"view_a", "view_b"}`` uint8 [B, S, S, 3] batches from tf.data."""

  def __init__(self, config: ml_collections.ConfigDict, mesh, *, start_step: int = 0):
    ds, self.num_examples = build_dataset(config, start_step=start_step,
                                          process_index=jax.process_index(),
                                          process_count=jax.process_count())
    self.steps_per_epoch = max(self.num_examples // config.batch_size, 1)
    self._mesh = mesh
    self._it = ds.as_numpy_iterator()

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return parallel.host_to_global(self._mesh, next(self._it))
