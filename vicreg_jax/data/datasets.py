"""Whole datasets on the host: loading splits as uint8 arrays, example ids and label checks.

``load_arrays`` reads scikit-learn's digits, an ``.npz`` (keys chosen by :func:`_npz_keys`
only; pixels checked by :func:`check_pixels`) or a small tfds dataset (through :mod:`.tf_input`, imported only then) into
(uint8 [n, h, w, 3], int32 [n]). Nothing here touches the devices.
"""

from __future__ import annotations

import io
import zipfile

import ml_collections
import numpy as np

from vicreg_jax import config as config_lib
from vicreg_jax import paths
from vicreg_jax.data.augment import UINT8_MAX

TFDS_IN_MEMORY = ("cifar10", "cifar100", "stl10")
# scikit-learn's 1797 digits: a fixed permutation (seed DIGITS_SPLIT_SEED), test = first 359.
DIGITS_SPLIT_SIZES = {"train": 1438, "test": 359}
DIGITS_SPLIT_SEED = 0
DIGITS_MAX_VALUE = 16.0  # digits pixels are counts 0..16
NPZ_IMAGES, NPZ_LABELS = "images", "labels"  # .npz keys (or prefixed: "test_images", ...)


def check_pixels(images: np.ndarray, source: str) -> None:
  """Raises ValueError unless ``images`` follow the pixel contract (``source`` names them).

  uint8: any value; other integers: within [0, 255]; floats: finite and within [0, 1]. bool
  and every other dtype are refused. The message names ``source``, the dtype, the observed
  range and what to do.
  """
  dtype = images.dtype
  if dtype == np.uint8 or not images.size:
    return
  if dtype == np.bool_ or not (np.issubdtype(dtype, np.integer)
                               or np.issubdtype(dtype, np.floating)):
    raise ValueError(f"{source} is {dtype}; pixels must be uint8 (0..255), integers in "
                     "[0, 255] or floats in [0, 1] (for a boolean mask: "
                     "images.astype(np.uint8) * 255).")
  if np.issubdtype(dtype, np.floating):
    bad = int(np.count_nonzero(~np.isfinite(images)))
    if bad:
      raise ValueError(f"{source} is {dtype} with {bad} NaN/inf value(s); pixels must be "
                       "finite: fix or drop those images.")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
      raise ValueError(f"{source} is {dtype} with values in [{low:g}, {high:g}]; float "
                       "pixels must lie in [0, 1] (for 0..255 values divide by 255, or save "
                       "uint8).")
    return
  low, high = int(images.min()), int(images.max())
  if low < 0 or high > UINT8_MAX:
    raise ValueError(f"{source} is {dtype} with values in [{low}, {high}]; integer pixels "
                     f"must lie in [0, {UINT8_MAX:.0f}] (rescale them, or save uint8).")


def to_rgb_uint8(images: np.ndarray, source: str = "images") -> np.ndarray:
  """[n, h, w] / [n, h, w, 1|3|4] images -> uint8 [n, h, w, 3].

  Pixels must follow :func:`check_pixels` (``source`` names them in its errors): integers
  are read as [0, 255], floats as [0, 1]. Gray is replicated on three channels; alpha is
  dropped.
  """
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise ValueError(f"{source} must be [n, h, w] or [n, h, w, 1|3|4]; got shape "
                     f"{images.shape}.")
  check_pixels(images, source)
  images = images[..., :3]
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  if np.issubdtype(images.dtype, np.floating):
    images = images * UINT8_MAX
  if images.dtype != np.uint8:
    images = np.clip(np.rint(images), 0, UINT8_MAX).astype(np.uint8)
  return images


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  if split not in DIGITS_SPLIT_SIZES:
    raise ValueError(f"digits has splits {list(DIGITS_SPLIT_SIZES)}; got {split!r}.")
  digits = load_digits()
  order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(digits.images))
  n_test = DIGITS_SPLIT_SIZES["test"]
  idx = order[n_test:] if split == "train" else order[:n_test]
  return (to_rgb_uint8(digits.images[idx] / DIGITS_MAX_VALUE),
          digits.target[idx].astype(np.int32))


def _open_npz(path: str):
  """``np.load`` of an ``.npz`` archive; FileNotFoundError / ValueError naming the path."""
  if not path:
    raise FileNotFoundError("data.name='npz' needs --config.data.path=<file.npz> with an "
                            f"{NPZ_IMAGES!r} array (and {NPZ_LABELS!r} for evaluation).")
  if paths.isdir(path):
    raise ValueError(f"--config.data.path={path!r} is a directory; pass the .npz file "
                     f"itself (np.savez(path, {NPZ_IMAGES}=..., {NPZ_LABELS}=...)).")
  if not paths.exists(path):
    raise FileNotFoundError(f"--config.data.path={path!r} does not exist; pass an .npz file.")
  if paths.is_url(path):  # read whole into memory: np.load needs seeks
    path = io.BytesIO(paths.read_bytes(path))
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path} is not an .npz archive; write one with np.savez(path, "
                     f"{NPZ_IMAGES}=..., {NPZ_LABELS}=...).")
  return np.load(path, allow_pickle=False)


def _npz_array(f, path: str, key: str) -> np.ndarray:
  """Array ``key`` of an open ``.npz``; object arrays (pickles) are refused naming the key."""
  try:
    return f[key]
  except ValueError as err:  # object arrays need pickle, which is never allowed
    raise ValueError(f"{path}[{key!r}] cannot be read without pickle ({err}); save it as a "
                     "numeric array.") from err


def _npz_keys(names, split: str, train_fallback: bool) -> tuple[str, str] | None:
  """The (images, labels) keys of ``split`` among an ``.npz``'s ``names``: ``{split}_images``
  / ``{split}_labels`` if the former is present, else (with ``train_fallback``) ``images`` /
  ``labels``; None when neither applies."""
  if f"{split}_{NPZ_IMAGES}" in names:
    return f"{split}_{NPZ_IMAGES}", f"{split}_{NPZ_LABELS}"
  if train_fallback and NPZ_IMAGES in names:
    return NPZ_IMAGES, NPZ_LABELS
  return None


def _npz(path: str, split: str, *, train_fallback: bool, labels_needed_by: str
         ) -> tuple[np.ndarray, np.ndarray]:
  """The split's images and labels (all 0 when the file has no labels array and none are
  needed). See :func:`load_arrays`."""
  with _open_npz(path) as f:
    names = list(f.keys())
    keys = _npz_keys(names, split, train_fallback)
    if keys is None and NPZ_IMAGES in names:
      raise ValueError(
          f"{path} has no '{split}_{NPZ_IMAGES}' array for the held-out split {split!r} "
          f"(found {names}); add '{split}_{NPZ_IMAGES}' and '{split}_{NPZ_LABELS}', or "
          f"evaluate on the training images with --config.eval.allow_train_as_test=True.")
    if keys is None:
      raise ValueError(f"{path} has no {NPZ_IMAGES!r} or '{split}_{NPZ_IMAGES}' array "
                       f"(found {names}).")
    images_key, labels_key = keys
    images = to_rgb_uint8(_npz_array(f, path, images_key), f"{path}[{images_key!r}]")
    if labels_key in names:
      labels = _npz_array(f, path, labels_key)
      if not np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_:
        raise ValueError(f"{path}[{labels_key!r}] is {labels.dtype}; labels must be integers "
                         "0..C-1 (map class names to indices, e.g. "
                         "np.unique(names, return_inverse=True)[1]).")
      labels = labels.astype(np.int32)
    elif labels_needed_by:
      raise ValueError(f"{path} has no {labels_key!r} array, which {labels_needed_by} needs "
                       "(without one every label would read as 0); add it (integers 0..C-1).")
    else:
      labels = np.zeros(len(images), np.int32)
  if len(labels) != len(images):
    raise ValueError(f"{path}: {len(images)} images but {len(labels)} labels.")
  return images, labels


def load_ids(data_config: ml_collections.ConfigDict, split: str, n: int) -> list[str]:
  """Example ids of a split (for label-subset files): an ``.npz``'s ``{split}_ids`` (or
  ``ids``) array if present, else the example indices ``"0"``, ``"1"``, ..."""
  if data_config.name == "npz" and data_config.path:
    with _open_npz(data_config.path) as f:
      for key in (f"{split}_ids", "ids"):
        if key in f:
          ids = [str(x) for x in _npz_array(f, data_config.path, key)]
          if len(ids) != n:
            raise ValueError(f"{data_config.path}: {key} has {len(ids)} entries for {n} images.")
          return ids
  return [str(i) for i in range(n)]


def load_arrays(data_config: ml_collections.ConfigDict, split: str, *,
                train_fallback: bool = True, labels_needed_by: str = ""
                ) -> tuple[np.ndarray, np.ndarray]:
  """Loads a whole split: (uint8 [n, h, w, 3], int32 [n] labels).

  ``data_config.name``: ``digits`` (bundled with scikit-learn; a fixed 80/20 train/test
  split of sizes ``DIGITS_SPLIT_SIZES``), ``npz`` (``data_config.path``), or
  ``cifar10``/``cifar100``/``stl10`` from tfds (``data_config.data_dir``; never downloads).

  An ``.npz`` holds ``{split}_images`` (+ ``{split}_labels``) per split, or ``images`` (+
  ``labels``): the training images, read for ``split`` only with ``train_fallback``. Pixels
  follow :func:`check_pixels`; labels are integers. ``labels_needed_by`` (e.g. "the online
  probe"): refuse an ``.npz`` without the labels array instead of reading every label as 0.
  """
  if data_config.name == "digits":
    return _digits(split)
  if data_config.name == "npz":
    return _npz(data_config.path, split, train_fallback=train_fallback,
                labels_needed_by=labels_needed_by)
  if data_config.name in TFDS_IN_MEMORY:
    from vicreg_jax.data import tf_input  # pylint: disable=g-import-not-at-top  (imports TF)
    images, labels = tf_input.load_tfds_arrays(data_config.name, split, data_config.data_dir)
    return to_rgb_uint8(images, f"tfds {data_config.name} {split!r}"), labels.astype(np.int32)
  raise ValueError(f"Unknown in-memory dataset {data_config.name!r}; use 'digits', 'npz' or "
                   f"one of {TFDS_IN_MEMORY}, or --config.data.source=tfds for streaming.")


def train_fallback_allowed(config: ml_collections.ConfigDict, split: str) -> bool:
  """Whether ``split`` may read an ``.npz``'s training arrays (``images``/``labels``).

  Every split may, except the held-out ``eval.split`` (unless it is the pretraining split
  itself or ``eval.allow_train_as_test`` says so): evaluating on the training images would
  report training accuracy as held-out accuracy.
  """
  return (split != config.eval.split or split == config.data.split
          or config.eval.allow_train_as_test)


def check_labels(labels: np.ndarray, num_classes: int, *, what: str, unlabelled_fix: str,
                 range_fix: str) -> None:
  """Raises ValueError unless every label (int [n]) lies in ``[0, num_classes)``.

  Checked once on the host, before anything trains: inside the step a label of -1 would
  train class ``num_classes - 1``, and tfds marks unlabelled examples -1. ``what`` names the
  split; ``unlabelled_fix`` says what to do about negative labels, ``range_fix`` about labels
  >= ``num_classes`` (``{needed}`` becomes the class count the labels need).
  """
  if not labels.size:
    return
  low, high = int(labels.min()), int(labels.max())
  if high < 0:
    raise ValueError(f"{what} has no labels (all {low}: tfds marks unlabelled examples "
                     f"-1); {unlabelled_fix}")
  if low < 0:
    raise ValueError(f"{what} has unlabelled examples (label {low}); {unlabelled_fix}")
  if high >= num_classes:
    raise ValueError(f"Labels of {what} span [{low}, {high}], outside [0, {num_classes}); "
                     + range_fix.format(needed=high + 1))


def check_eval_labels(config: ml_collections.ConfigDict, labels: np.ndarray, split: str,
                      num_classes: int) -> None:
  """:func:`check_labels` for an evaluation split (``eval.split`` or ``eval.train_split``)."""
  key = "split" if split == config.eval.split else "train_split"
  _, instead = config_lib.UNLABELLED_SPLITS.get(config.data.name, ((), ""))
  use = (f"use --config.eval.{key}={instead}" if instead and instead != split
         else f"set --config.eval.{key} to a labelled split")
  check_labels(labels, num_classes, what=f"{config.data.name or config.data.path} split "
               f"{split!r}", unlabelled_fix=f"evaluation needs labels: {use}.",
               range_fix=f"the training split {config.eval.train_split!r} has {num_classes} "
               "classes; the held-out split must use the same class indices.")
