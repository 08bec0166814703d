"""Whole datasets on the host: loading splits as uint8 arrays, example ids and label checks.

``load_arrays`` reads scikit-learn's digits, an ``.npz`` (keys chosen by :func:`_npz_keys`
only) or a small tfds dataset (through :mod:`.tf_input`, imported only then) into
(uint8 [n, h, w, 3], int32 [n]). Nothing here touches the devices.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from vicreg_jax.data.augment import UINT8_MAX

TFDS_IN_MEMORY = ("cifar10", "cifar100", "stl10")
# scikit-learn's 1797 digits: a fixed permutation (seed DIGITS_SPLIT_SEED), test = first 359.
DIGITS_SPLIT_SIZES = {"train": 1438, "test": 359}
DIGITS_SPLIT_SEED = 0
DIGITS_MAX_VALUE = 16.0  # digits pixels are counts 0..16


def to_rgb_uint8(images: np.ndarray) -> np.ndarray:
  """[n, h, w] / [n, h, w, 1|3|4] images -> uint8 [n, h, w, 3].

  Integer arrays are read as [0, 255], float arrays as [0, 1]. Gray is replicated on three
  channels; alpha is dropped.
  """
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise ValueError(f"Images must be [n, h, w] or [n, h, w, 1|3|4]; got shape {images.shape}.")
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


def _npz_keys(f, split: str) -> tuple[str, str]:
  """The (images, labels) keys of ``split`` in an open ``.npz``: ``{split}_images`` /
  ``{split}_labels`` if the former is present, else ``images`` / ``labels``."""
  prefix = f"{split}_" if f"{split}_images" in f else ""
  return f"{prefix}images", f"{prefix}labels"


def _npz(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """The split's images and labels (all 0 when the file has no labels array)."""
  if not path:
    raise FileNotFoundError("data.name='npz' needs --config.data.path=<file.npz> with an "
                            "'images' array (and optionally 'labels').")
  with np.load(path) as f:
    images_key, labels_key = _npz_keys(f, split)
    if images_key not in f:
      raise ValueError(f"{path} has no 'images' or '{split}_images' array "
                       f"(found {list(f.keys())}).")
    images = to_rgb_uint8(f[images_key])
    labels = (f[labels_key].astype(np.int32) if labels_key in f
              else np.zeros(len(images), np.int32))
  if len(labels) != len(images):
    raise ValueError(f"{path}: {len(images)} images but {len(labels)} labels.")
  return images, labels


def load_ids(data_config: ml_collections.ConfigDict, split: str, n: int) -> list[str]:
  """Example ids of a split (for label-subset files): an ``.npz``'s ``{split}_ids`` (or
  ``ids``) array if present, else the example indices ``"0"``, ``"1"``, ..."""
  if data_config.name == "npz" and data_config.path:
    with np.load(data_config.path) as f:
      for key in (f"{split}_ids", "ids"):
        if key in f:
          ids = [str(x) for x in f[key]]
          if len(ids) != n:
            raise ValueError(f"{data_config.path}: {key} has {len(ids)} entries for {n} images.")
          return ids
  return [str(i) for i in range(n)]


def load_arrays(data_config: ml_collections.ConfigDict, split: str
                ) -> tuple[np.ndarray, np.ndarray]:
  """Loads a whole split: (uint8 [n, h, w, 3], int32 [n] labels).

  ``data_config.name``: ``digits`` (bundled with scikit-learn; a fixed 80/20 train/test
  split of sizes ``DIGITS_SPLIT_SIZES``), ``npz`` (``data_config.path``), or
  ``cifar10``/``cifar100``/``stl10`` from tfds (``data_config.data_dir``; never downloads).
  """
  if data_config.name == "digits":
    return _digits(split)
  if data_config.name == "npz":
    return _npz(data_config.path, split)
  if data_config.name in TFDS_IN_MEMORY:
    from vicreg_jax.data import tf_input  # pylint: disable=g-import-not-at-top  (imports TF)
    images, labels = tf_input.load_tfds_arrays(data_config.name, split, data_config.data_dir)
    return to_rgb_uint8(images), labels.astype(np.int32)
  raise ValueError(f"Unknown in-memory dataset {data_config.name!r}; use 'digits', 'npz' or "
                   f"one of {TFDS_IN_MEMORY}, or --config.data.source=tfds for streaming.")


def check_labels(data_config: ml_collections.ConfigDict, labels: np.ndarray,
                 num_classes: int) -> None:
  """Raises ValueError unless the split has labels, all in ``[0, num_classes)``.

  Checked once on the host, before anything trains: an ``.npz`` without labels reads as all
  zeros, and inside the step a label of -1 would train class ``num_classes - 1``.
  """
  what = f"{data_config.name} split {data_config.split!r}"
  if data_config.name == "npz":
    with np.load(data_config.path) as f:
      _, key = _npz_keys(f, data_config.split)
      if key not in f:
        raise ValueError(f"{data_config.path} has no {key!r} array for the online probe "
                         "(without one every label reads as 0); add it or set "
                         "--config.model.online_probe_classes=0.")
  if not labels.size:
    return
  low, high = int(labels.min()), int(labels.max())
  if low < 0:
    raise ValueError(f"{what} has unlabelled examples (label {low}); the online probe needs "
                     "labels: use a labelled split or set "
                     "--config.model.online_probe_classes=0.")
  if high >= num_classes:
    raise ValueError(f"Labels of {what} span [{low}, {high}] but "
                     f"--config.model.online_probe_classes={num_classes}; set it to "
                     f"{high + 1}.")
