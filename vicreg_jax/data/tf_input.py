"""Everything TensorFlow: tfds builders, the TF crop sampler and the tf.data streaming sources.

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
``options.deterministic`` the stream is a function of the seed alone, so opening it at step
``k`` starts at epoch ``k * B // N`` and skips only the records of that epoch already used,
before decoding.

TensorFlow is imported here, at the top, and never sees the accelerators. This is the only
module of the package that imports it, and the only one imported lazily (by the factories
of :mod:`vicreg_jax.data` and the tfds branch of ``datasets.load_arrays``), so importing
``vicreg_jax.data`` works without TensorFlow installed.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vicreg_jax import parallel, paths
from vicreg_jax.data.augment import UINT8_MAX
from vicreg_jax.data.folders import list_image_files, list_labelled_files, split_folder
from vicreg_jax.data.geometry import CROP_ATTEMPTS, check_transform
from vicreg_jax.data.subsets import Subset, select_indices

tf.config.set_visible_devices([], "GPU")  # the accelerators belong to JAX
VIEW_NAMES = ("view_a", "view_b")


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
  try:
    return tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.DatasetNotFoundError as err:
    raise ValueError(f"{name!r} is not a tfds dataset name (see `tfds.list_builders()`); "
                     "for images in class sub-folders use --config.data.source=folder."
                     ) from err


def load_tfds_arrays(name: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """A whole small tfds split as stored: (images [n, h, w, c], labels [n]). Never downloads.

  ``datasets.load_arrays`` makes them uint8 RGB and int32.
  """
  builder = _builder(name, data_dir)
  try:
    ds = builder.as_dataset(split=split, batch_size=-1, as_supervised=True)
  except (AssertionError, FileNotFoundError) as err:
    raise _not_prepared(name, builder.data_dir, err) from err
  images, labels = tfds.as_numpy(ds)
  return images, labels


class Shard(NamedTuple):
  """One process's records for one epoch, before shuffling.

  records: finite tf.data.Dataset of tf.string (file paths or encoded images).
  read: records -> encoded image bytes (``tf.io.read_file`` or the identity).
  shuffle_buffer: records mixed per epoch.
  size: records per epoch on this process (equal on all processes).
  where: the folder or tfds name, for messages.
  """
  records: Any
  read: Callable[[Any], Any]
  shuffle_buffer: int
  size: int
  where: str


def _file_reader(root: str) -> Callable[[Any], Any]:
  """tf.string path -> the file's bytes: ``tf.io.read_file`` for a local folder, the
  ``paths`` helpers for a bucket (TensorFlow's own file systems do not read ``s3://``, nor
  honour the emulator settings of ``gs://``)."""
  if not paths.is_url(root):
    return tf.io.read_file

  def read(path):
    contents = tf.py_function(lambda p: paths.read_bytes(p.numpy().decode()), [path],
                              tf.string)
    contents.set_shape([])
    return contents
  return read


def _folder_shard(data: ml_collections.ConfigDict, process_index: int,
                  process_count: int) -> Shard:
  files = list_image_files(data.path, process_index, process_count)
  # File names are small: shuffle them all each epoch (folders are sorted by class).
  return Shard(tf.data.Dataset.from_tensor_slices(files), _file_reader(data.path), len(files),
               len(files), data.path)


def _tfds_shard(data: ml_collections.ConfigDict, process_index: int,
                process_count: int) -> Shard:
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
  return Shard(ds.map(lambda ex: ex["image"]), lambda x: x, data.shuffle_buffer, size,
               f"tfds {data.name} {data.split!r}")


def sample_crop_window(shape, seed, scale: Sequence[float], ratio: Sequence[float]):
  """torchvision's RandomResizedCrop window in TF: int32 [4] = (y, x, h, w).

  The same sampler as :func:`vicreg_jax.data.geometry.sample_crop_window` (area ~ U(scale),
  log-aspect ~ U(log ratio), first of 10 fitting attempts, else the centre crop clamped to
  ``ratio``), written with stateless TF ops for the host. ``tf.image.sample_distorted_
  bounding_box`` is not used: its crops are smaller (mean area fraction 0.40 vs 0.48 for
  scale (0.08, 1) on a square image, measured over 4000 draws).

  Args:
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


def _decode_rgb(contents):
  """Any image format -> uint8 [h, w, 3] (gray and RGBA become RGB)."""
  return tf.io.decode_image(contents, channels=3, expand_animations=False)


def _crop_view(contents, seed, augment_config: ml_collections.ConfigDict,
               method: str = "bicubic"):
  """One random-resized-crop view of encoded image bytes -> uint8 [S, S, 3].

  ``augment_config`` (or ``config.eval.transform``): ``image_size``, ``crop_scale``,
  ``crop_ratio``. JPEGs are decoded only inside the window (``decode_and_crop_jpeg``);
  other formats are decoded whole (gray and RGBA become RGB) and cropped. ``method``: the
  antialiased resize (bicubic for views; bilinear for the probe, as torchvision's default).
  """
  is_jpeg = tf.io.is_jpeg(contents)
  decode_all = lambda: _decode_rgb(contents)
  shape = tf.cond(is_jpeg, lambda: tf.io.extract_jpeg_shape(contents),
                  lambda: tf.shape(decode_all()))
  window = sample_crop_window(shape, seed, augment_config.crop_scale,
                              augment_config.crop_ratio)
  crop = tf.cond(is_jpeg,
                 lambda: tf.io.decode_and_crop_jpeg(contents, window, channels=3),
                 lambda: tf.image.crop_to_bounding_box(decode_all(), *tf.unstack(window)))
  s = augment_config.image_size
  resized = tf.image.resize(tf.cast(crop, tf.float32), (s, s), method=method, antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, UINT8_MAX), tf.uint8)


def _decoded_epoch(records, decode: Callable, *, expected, epoch, empty: dict):
  """One epoch of ``decode``d records, then its end-of-epoch marker.

  ``decode`` runs in parallel; records it fails on (files damaged inside, with intact start
  and end) are dropped without a log line each. Elements are ``(real, expected, epoch,
  element)``: ``(True, 0, epoch, decoded)`` per decoded record, then ``(False, expected,
  epoch, empty)`` with ``expected`` (int64) the records fed in. :func:`_skip_undecodable`
  consumes them.
  """
  none = tf.constant(0, tf.int64)
  decoded = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors(
      log_warning=False).map(lambda element: (True, none, epoch, element))
  return decoded.concatenate(tf.data.Dataset.from_tensors((False, expected, epoch, empty)))


def _skip_undecodable(epochs, where: str, epoch_size: int):
  """The decoded elements of a stream of :func:`_decoded_epoch` epochs, markers removed.

  At each epoch's end, one line on stderr counts the records of ``where`` that could not
  be decoded; the stream ends after a whole epoch (``epoch_size`` records; not the rest of
  one a resumed stream starts in) that decoded none: an endless stream of such epochs would
  never yield a batch.
  """
  def count(decoded, item):
    real, expected, epoch, element = item
    skipped = expected - decoded
    warn = tf.logical_and(tf.logical_not(real), skipped > 0)
    tf.cond(warn, lambda: tf.print(
        "WARNING: skipped", skipped, "of", expected, "images of", where, "in epoch", epoch,
        "that could not be decoded (damaged inside); remove or re-encode them."),
            tf.no_op)
    empty_epoch = tf.logical_not(real) & tf.equal(decoded, 0) & tf.equal(expected, epoch_size)
    return tf.where(real, decoded + 1, 0), (real, empty_epoch, element)

  ds = epochs.scan(tf.constant(0, tf.int64), count)
  ds = ds.take_while(lambda real, empty_epoch, element: tf.logical_not(empty_epoch))
  return ds.filter(lambda real, empty_epoch, element: real).map(
      lambda real, empty_epoch, element: element)


def _undecodable_error(where: str, records: int) -> ValueError:
  return ValueError(f"None of the {records} images of {where} could be decoded in a whole "
                    "epoch: they are damaged inside (their start and end bytes look intact). "
                    "Remove or re-encode them, e.g. with PIL.")


def _view_shard(config: ml_collections.ConfigDict, process_index: int,
                process_count: int) -> Shard:
  """This process's view records (folder files or tfds examples); checks the batch split."""
  if config.batch_size % process_count:
    raise ValueError(f"--config.batch_size={config.batch_size} is not divisible by the "
                     f"{process_count} processes.")
  return (_folder_shard if config.data.source == "folder" else _tfds_shard)(
      config.data, process_index, process_count)


def _num_examples(data: ml_collections.ConfigDict, shard: Shard, process_count: int) -> int:
  """Examples per epoch over all processes: ``data.num_examples`` or the shards' total."""
  return data.num_examples or shard.size * process_count


def _view_dataset(config: ml_collections.ConfigDict, shard: Shard, *, start_step: int,
                  process_index: int, process_count: int):
  """The endless tf.data stream of ``shard``'s view-pair batches from ``start_step`` on."""
  data = config.data
  batch = config.batch_size // process_count
  seed = tf.constant(config.seed, tf.int64)

  first = start_step * batch
  first_epoch, offset = first // shard.size, first % shard.size
  empty = {name: tf.zeros([config.augment.image_size] * 2 + [3], tf.uint8)
           for name in VIEW_NAMES}

  def epoch(e):
    """Epoch e of the shard (shuffled from (seed, e), global positions), decoded."""
    epoch_seed = tf.random.stateless_uniform([], seed=tf.stack([seed, e]), minval=None,
                                             maxval=None, dtype=tf.int64)
    # The resumed epoch skips the records already used, before reading and decoding: cheap.
    skip = tf.where(tf.equal(e, first_epoch), tf.constant(offset, tf.int64),
                    tf.constant(0, tf.int64))
    records = shard.records.shuffle(shard.shuffle_buffer, seed=epoch_seed).enumerate(
        e * shard.size).skip(skip)
    return _decoded_epoch(records, views, expected=shard.size - skip, epoch=e, empty=empty)

  def views(position, record):
    contents = shard.read(record)
    # Every (process, position, view) has its own crop seed; int64 so that 1000 ImageNet
    # epochs do not wrap around.
    element = (position * process_count + process_index) * len(VIEW_NAMES)
    return {name: _crop_view(contents, tf.stack([seed, element + v]), config.augment)
            for v, name in enumerate(VIEW_NAMES)}

  options = tf.data.Options()
  options.deterministic = True  # exact resume and reproducible runs
  options.autotune.enabled = True
  options.threading.max_intra_op_parallelism = 1  # parallelism comes from the maps
  if data.threads:
    options.threading.private_threadpool_size = data.threads
  # Last resort for files damaged inside (intact start and end): dropped, one line per epoch;
  # the stream stays deterministic, though such a drop shifts later batch boundaries. It
  # ends after an epoch that decoded nothing (the source then raises).
  ds = _skip_undecodable(tf.data.Dataset.counter(first_epoch).flat_map(epoch), shard.where,
                         shard.size)
  ds = ds.batch(batch, drop_remainder=True).prefetch(data.prefetch_batches)
  return ds.with_options(options)


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
    [batch_size // process_count, S, S, 3] (it ends only after an epoch in which no record
    could be decoded), and the global number of examples per epoch.
  """
  shard = _view_shard(config, process_index, process_count)
  return (_view_dataset(config, shard, start_step=start_step, process_index=process_index,
                        process_count=process_count),
          _num_examples(config.data, shard, process_count))


class StreamingViewSource:
  """Global ``{"view_a", "view_b"}`` uint8 [B, S, S, 3] batches from tf.data.

  Building the source lists this process's shard (``num_examples``, ``steps_per_epoch``);
  :meth:`iterate` opens the stream at a step. Each process's batches become global arrays
  sharded over the mesh (``parallel.host_to_global``); ``data.device_prefetch`` of them
  are kept in flight so that host-to-device copies overlap the training step. Streams carry
  no labels (``config.validate`` keeps the online probe to in-memory data).
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh):
    parallel.check_batch_divisible(config.batch_size, mesh)
    self._config, self._mesh = config, mesh
    self._shard = _view_shard(config, jax.process_index(), jax.process_count())
    self.num_examples = _num_examples(config.data, self._shard, jax.process_count())
    self.steps_per_epoch = max(self.num_examples // config.batch_size, 1)

  def iterate(self, start_step: int = 0) -> Iterator[dict]:
    """The batches of steps ``start_step, start_step + 1, ...`` (endless).

    Raises ValueError naming the folder or dataset after an epoch of this process's shard
    in which no record could be decoded.
    """
    host = _view_dataset(self._config, self._shard, start_step=start_step,
                         process_index=jax.process_index(),
                         process_count=jax.process_count()).as_numpy_iterator()
    ahead = collections.deque()
    while True:
      while len(ahead) <= self._config.data.device_prefetch:
        local = next(host, None)
        if local is None:
          raise _undecodable_error(self._shard.where, self._shard.size)
        ahead.append(parallel.host_to_global(self._mesh, local))
      yield ahead.popleft()


def _eval_crop(contents, transform: ml_collections.ConfigDict):
  """Resize the shorter side to ``resize_size`` (bilinear, antialiased), centre-crop
  ``image_size``: torchvision's ``Resize`` + ``CenterCrop``. -> uint8 [S, S, 3]."""
  image = _decode_rgb(contents)
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = transform.resize_size / tf.reduce_min(shape)
  new = tf.cast(tf.round(shape * scale), tf.int32)
  resized = tf.image.resize(tf.cast(image, tf.float32), new, method="bilinear", antialias=True)
  s = transform.image_size
  top = tf.cast(tf.round(tf.cast(new[0] - s, tf.float32) / 2), tf.int32)
  left = tf.cast(tf.round(tf.cast(new[1] - s, tf.float32) / 2), tf.int32)
  crop = resized[top:top + s, left:left + s]
  return tf.cast(tf.clip_by_value(tf.round(crop), 0, UINT8_MAX), tf.uint8)


def _train_crop(contents, seed, transform: ml_collections.ConfigDict):
  """Random crop (``random_resized`` bilinear, or ``pad_random``) then a random flip.

  Returns the uint8 [S, S, 3] crop and a bool: False for a ``pad_random`` image that is not
  S x S (its crop is then all zeros; the caller refuses it), True otherwise. Not an
  assertion: those errors would be taken for damaged files and dropped.
  """
  seeds = tf.random.experimental.stateless_split(seed, 2)
  s = transform.image_size
  size_ok = tf.constant(True)
  if transform.train_crop == "pad_random":
    image = _decode_rgb(contents)
    size_ok = tf.reduce_all(tf.equal(tf.shape(image)[:2], [s, s]))
    p = transform.pad
    padded = tf.pad(image, [[p, p], [p, p], [0, 0]])
    crop = tf.cond(size_ok, lambda: tf.image.stateless_random_crop(padded, [s, s, 3], seeds[0]),
                   lambda: tf.zeros([s, s, 3], tf.uint8))
  else:
    crop = _crop_view(contents, seeds[0], transform, method="bilinear")
  flip = tf.random.stateless_uniform([], seeds[1]) < transform.flip_prob
  return tf.where(flip, tf.reverse(crop, axis=[1]), crop), size_ok


class StreamingLabelledSource:
  """Labelled batches from tfds or image folders (``data.LabelledSource``).

  Each process reads every ``process_count``-th example (folders) or its
  ``tfds.split_for_jax_process`` share without dropping any, decodes and crops on the host
  (training: shuffled per epoch from ``(seed, epoch)``, random crop + flip seeded by
  ``(seed, epoch, position)``; evaluation: in order, resize + centre crop), and pads its
  last batches with ``weight == 0`` rows so that every process runs ``steps_per_epoch``
  steps. Example ids for label subsets: file names (folders), the ``file_name`` feature
  (tfds ImageNet, as SimCLR's subset lists) or ``tfds_id``. A subset by ``fraction`` keeps
  the examples whose hash of ``(seed, id)`` falls below it: deterministic, and exact for
  folders (drawn like in-memory data), approximate in size for tfds.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh, *, split: str, train: bool,
               batch_size: int, subset: Subset | None = None, num_classes: int = 0):
    parallel.check_batch_divisible(batch_size, mesh)
    # The crop name here; pad_random's image size is asserted per image when decoding.
    check_transform(config.eval.transform, (config.eval.transform.image_size,) * 2)
    pi, pc = jax.process_index(), jax.process_count()
    self._local = batch_size // pc
    self._config, self._train, self._mesh = config, train, mesh
    data = config.data
    if data.source == "folder":
      self._where = split_folder(data, split)
      files, labels, classes = list_labelled_files(self._where)
      keep = select_indices([paths.basename(f) for f in files], subset)
      files, labels = [files[i] for i in keep], [labels[i] for i in keep]
      self.num_examples = len(files)
      self.num_classes = num_classes or len(classes)
      self._records = tf.data.Dataset.from_tensor_slices((files[pi::pc], labels[pi::pc]))
      self._read = _file_reader(self._where)
      self._count = len(files[pi::pc])
      self._shuffle_buffer = max(self._count, 1)
      counts = [len(files[i::pc]) for i in range(pc)]
    else:
      self._where = f"tfds {data.name} {split!r}"
      records, self.num_classes = self._tfds_records(data, split, subset, pi, pc)
      self.num_classes = num_classes or self.num_classes
      self._records, self._read = records, lambda x: x
      self._count = int(records.reduce(np.int64(0), lambda n, _: n + 1).numpy())
      counts = multihost_utils.process_allgather(np.asarray(self._count)).reshape(-1)
      self.num_examples = int(np.sum(counts))
      self._shuffle_buffer = data.shuffle_buffer
    if not self.num_examples:
      raise ValueError(f"The {split!r} split of {data.name or data.path} has no examples "
                       "(after the label subset).")
    self.steps_per_epoch = -(-int(max(counts)) // self._local)

  @staticmethod
  def _tfds_records(data, split, subset, process_index, process_count):
    """This process's ``(image bytes, label, id)`` records of a tfds split, and the classes."""
    builder = _builder(data.name, data.data_dir)
    share = tfds.split_for_jax_process(split, process_index=process_index,
                                       process_count=process_count, drop_remainder=False)
    features = builder.info.features
    id_key = "file_name" if "file_name" in features else "tfds_id"
    try:
      ds = builder.as_dataset(split=share, shuffle_files=False,
                              decoders={"image": tfds.decode.SkipDecoding()},
                              read_config=tfds.ReadConfig(add_tfds_id=True))
    except (AssertionError, FileNotFoundError) as err:
      raise _not_prepared(data.name, builder.data_dir, err) from err
    ds = ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32), ex[id_key]))
    if subset is not None and subset.ids is not None:
      table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
          tf.constant(sorted(subset.ids)), tf.ones(len(subset.ids), tf.int32)), 0)
      ds = ds.filter(lambda image, label, name: table.lookup(name) > 0)
    elif subset is not None and subset.fraction < 1:
      buckets = 1 << 20
      ds = ds.filter(lambda image, label, name: tf.strings.to_hash_bucket_fast(
          tf.strings.join([str(subset.seed), name], "/"), buckets) < int(subset.fraction * buckets))
    return ds.map(lambda image, label, name: (image, label)), features["label"].num_classes

  def epoch(self, index: int):
    """The ``steps_per_epoch`` global batches of epoch ``index``."""
    config, transform = self._config, self._config.eval.transform
    seed = tf.constant(config.seed, tf.int64)
    ds = self._records
    if self._train:
      epoch_seed = tf.random.stateless_uniform([], seed=tf.stack([seed, index]), minval=None,
                                               maxval=None, dtype=tf.int64)
      ds = ds.shuffle(self._shuffle_buffer, seed=epoch_seed)
    process = jax.process_index()

    def example(position, record):
      contents, label = self._read(record[0]), record[1]
      if self._train:
        element = (index * self._count + position) * jax.process_count() + process
        image, size_ok = _train_crop(contents, tf.stack([seed, element]), transform)
      else:
        image, size_ok = _eval_crop(contents, transform), tf.constant(True)
      return {"image": image, "label": tf.cast(label, tf.int32), "weight": tf.constant(1.0),
              "size_ok": size_ok}

    s = transform.image_size
    padding = {"image": tf.zeros([s, s, 3], tf.uint8), "label": tf.constant(0, tf.int32),
               "weight": tf.constant(0.0), "size_ok": tf.constant(True)}
    rows = self.steps_per_epoch * self._local
    ds = _decoded_epoch(ds.enumerate(), example, expected=tf.constant(self._count, tf.int64),
                        epoch=tf.constant(index, tf.int64), empty=padding)
    # Undecodable records are dropped (one line per epoch): padding takes their rows.
    ds = _skip_undecodable(ds, self._where, self._count).concatenate(
        tf.data.Dataset.from_tensors(padding).repeat(rows)).take(rows)
    ds = ds.batch(self._local, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.prefetch(config.data.prefetch_batches).with_options(options)
    for step, local_batch in enumerate(ds.as_numpy_iterator()):
      # Real rows come first, so an epoch that decoded nothing starts with a padding row.
      if not step and self._count and not local_batch["weight"][0]:
        raise _undecodable_error(self._where, self._count)
      if not local_batch.pop("size_ok").all():
        raise ValueError(f"--config.eval.transform.train_crop='pad_random' needs images of "
                         f"{s} px, but {self._where} has others; use train_crop="
                         "'random_resized' or resize the images.")
      yield parallel.host_to_global(self._mesh, local_batch)
