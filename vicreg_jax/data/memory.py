"""In-memory datasets on the devices: both views are cropped on the accelerator each step.

For data that fits in memory (scikit-learn's digits, CIFAR-10/100, STL-10, any ``.npz``) the
images are placed on the devices once; each step picks its slice of the epoch's permutation
and random-resized-crops both views there, so there is no per-step host work. Everything is a
deterministic function of ``(seed, step)``: resuming at any step reproduces the run.
TensorFlow is imported only for the tfds names, and only when they are loaded.
"""

from __future__ import annotations

import logging
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vicreg_jax import parallel
from vicreg_jax.data.augment import UINT8_MAX

TFDS_IN_MEMORY = ("cifar10", "cifar100", "stl10")
# scikit-learn's 1797 digits: a fixed permutation (seed DIGITS_SPLIT_SEED), test = first 359.
DIGITS_SPLIT_SIZES = {"train": 1438, "test": 359}
DIGITS_SPLIT_SEED = 0
DIGITS_MAX_VALUE = 16.0  # digits pixels are counts 0..16
CROP_ATTEMPTS = 10  # as torchvision's RandomResizedCrop
CUBIC_A = -0.5  # bicubic kernel parameter of PIL, TF and jax.image (PyTorch tensors: -0.75)
# Stream of the data keys: model init uses fold_in(seed, 0), the step rng fold_in(seed, 1).
DATA_KEY_STREAM = 2


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


def _tfds(name: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
  from vicreg_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (imports TF)
  return pipeline.load_tfds_arrays(name, split, data_dir)


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
    return _tfds(data_config.name, split, data_config.data_dir)
  raise ValueError(f"Unknown in-memory dataset {data_config.name!r}; use 'digits', 'npz' or "
                   f"one of {TFDS_IN_MEMORY}, or --config.data.source=tfds for streaming.")


def _fallback_window(height: int, width: int, ratio: Sequence[float]) -> tuple[int, int]:
  """torchvision's fallback: the whole image, cropped centrally to the nearest allowed aspect."""
  in_ratio = width / height
  if in_ratio < ratio[0]:
    return round(width / ratio[0]), width
  if in_ratio > ratio[1]:
    return height, round(height * ratio[1])
  return height, width


def sample_crop_window(key: jax.Array, height: int, width: int, scale: Sequence[float],
                       ratio: Sequence[float]) -> jax.Array:
  """One RandomResizedCrop window of a ``height x width`` image: f32[4] = (y, x, h, w) pixels.

  As torchvision's ``RandomResizedCrop.get_params``: area ~ U(scale) of the image and
  log-aspect (w / h) ~ U(log ratio), sides rounded to pixels; the first of 10 attempts that
  fits is used, else the centre crop of :func:`_fallback_window`. The attempts are drawn
  together and the first fitting one selected, so there is no loop in the program.
  """
  k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
  area = height * width * jax.random.uniform(k_area, (CROP_ATTEMPTS,), minval=scale[0],
                                             maxval=scale[1])
  aspect = jnp.exp(jax.random.uniform(k_ratio, (CROP_ATTEMPTS,), minval=np.log(ratio[0]),
                                      maxval=np.log(ratio[1])))
  w = jnp.round(jnp.sqrt(area * aspect))
  h = jnp.round(jnp.sqrt(area / aspect))
  fits = (w <= width) & (h <= height) & (w >= 1) & (h >= 1)
  first = jnp.argmax(fits)  # index of the first True (0 when none, then unused)
  fb_h, fb_w = _fallback_window(height, width, ratio)
  any_fit = jnp.any(fits)
  h = jnp.where(any_fit, h[first], fb_h)
  w = jnp.where(any_fit, w[first], fb_w)
  # Top-left corner uniform over the valid integer positions (torchvision's randint).
  y = jnp.where(any_fit, jnp.floor(jax.random.uniform(k_y) * (height - h + 1)), (height - h) // 2)
  x = jnp.where(any_fit, jnp.floor(jax.random.uniform(k_x) * (width - w + 1)), (width - w) // 2)
  return jnp.stack([y, x, h, w]).astype(jnp.float32)


def cubic_kernel(t: jax.Array) -> jax.Array:
  """Keys' cubic convolution kernel with a = CUBIC_A (PIL's and TF's bicubic); support |t| < 2."""
  t = jnp.abs(t)
  near = ((CUBIC_A + 2) * t - (CUBIC_A + 3)) * t * t + 1
  far = ((t - 5) * t + 8) * t * CUBIC_A - 4 * CUBIC_A
  return jnp.where(t <= 1, near, jnp.where(t < 2, far, 0.0))


def linear_kernel(t: jax.Array) -> jax.Array:
  """The triangle kernel of bilinear resampling (PIL's and torchvision's); support |t| < 1."""
  return jnp.maximum(1.0 - jnp.abs(t), 0.0)


RESAMPLE_KERNELS = {"bicubic": cubic_kernel, "bilinear": linear_kernel}


def resample_matrix(start: jax.Array, length: jax.Array, in_size: int, out_size: int,
                    kernel: str = "bicubic") -> jax.Array:
  """f32[out_size, in_size]: resampling of input pixels [start, start + length).

  ``kernel``: ``"bicubic"`` (views) or ``"bilinear"`` (the probe's crops). As PIL's resize of the cropped image: output pixel i is centred at input coordinate
  ``start + (i + 0.5) * length / out_size``; when shrinking, the kernel is widened by the
  shrink factor (antialiasing); pixels outside the window get weight 0 and each row is
  renormalised, so the border of the crop never mixes in its neighbours.
  """
  stretch = length / out_size  # input pixels per output pixel
  centres = start + (jnp.arange(out_size) + 0.5) * stretch
  pixels = jnp.arange(in_size) + 0.5
  support = jnp.maximum(stretch, 1.0)
  weights = RESAMPLE_KERNELS[kernel]((pixels[None, :] - centres[:, None]) / support)
  inside = (pixels >= start) & (pixels < start + length)
  weights = jnp.where(inside[None, :], weights, 0.0)
  return weights / jnp.sum(weights, axis=1, keepdims=True)


def crop_and_resize(image: jax.Array, window: jax.Array, size: int,
                    kernel: str = "bicubic") -> jax.Array:
  """Crops ``window`` (y, x, h, w) of [H, W, 3] and resizes it to float32 [size, size, 3].

  Two small matmuls with :func:`resample_matrix` (static shapes for any window); values
  keep the input's range but bicubic overshoot is not clipped.
  """
  rows = resample_matrix(window[0], window[2], image.shape[0], size, kernel)
  cols = resample_matrix(window[1], window[3], image.shape[1], size, kernel)
  image = image.astype(jnp.float32)
  return jnp.einsum("ih,hwc,jw->ijc", rows, image, cols, precision=jax.lax.Precision.HIGHEST)


def random_resized_crop(key: jax.Array, image: jax.Array, out_size: int,
                        scale: Sequence[float], ratio: Sequence[float]) -> jax.Array:
  """uint8 [H, W, 3] -> uint8 [out_size, out_size, 3]: one random window, resized. Jittable."""
  window = sample_crop_window(key, image.shape[0], image.shape[1], scale, ratio)
  crop = crop_and_resize(image, window, out_size)
  return jnp.clip(jnp.round(crop), 0, UINT8_MAX).astype(jnp.uint8)


def random_resized_crops(key: jax.Array, images: jax.Array, out_size: int,
                         scale: Sequence[float], ratio: Sequence[float]) -> jax.Array:
  """:func:`random_resized_crop` of each image with its own key: [n, H, W, 3] -> [n, S, S, 3]."""
  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(lambda k, img: random_resized_crop(k, img, out_size, scale, ratio))(keys, images)


def _check_probe_labels(data_config: ml_collections.ConfigDict, labels: np.ndarray,
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


class MemoryViewSource:
  """Iterator of global ``{"view_a", "view_b"}`` uint8 [B, S, S, 3] batches, one per step
  (with ``"label"`` i32[B] too when ``config.model.online_probe_classes`` > 0).

  Step ``s`` takes slice ``s % steps_per_epoch`` of the permutation drawn from
  ``fold_in(order_key, s // steps_per_epoch)`` (the remainder of each epoch is dropped) and
  crops both views with keys from ``fold_in(crop_key, s)``, all inside one jitted function
  whose output is sharded over the mesh (``parallel.batch_sharding``). The whole split stays
  replicated on every device. Attributes: ``num_examples``, ``steps_per_epoch``.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh, *, start_step: int = 0):
    images, labels = load_arrays(config.data, config.data.split)
    probe_classes = config.model.get("online_probe_classes", 0)
    if probe_classes:
      _check_probe_labels(config.data, labels, probe_classes)
    self.num_examples = len(images)
    parallel.check_batch_divisible(config.batch_size, mesh)
    if config.batch_size > self.num_examples:
      raise ValueError(f"--config.batch_size={config.batch_size} is larger than the "
                       f"{self.num_examples} examples of {config.data.name}; lower it.")
    self.steps_per_epoch = self.num_examples // config.batch_size
    self._step = start_step
    self._images = parallel.replicate(mesh, images)
    self._labels = parallel.replicate(mesh, labels.astype(np.int32))
    aug = config.augment
    batch, spe, seed = config.batch_size, self.steps_per_epoch, config.seed

    data_key = jax.random.fold_in(jax.random.key(seed), DATA_KEY_STREAM)
    order_key, crop_key = jax.random.split(data_key)

    def make_batch(images, labels, step):
      key = jax.random.fold_in(crop_key, step)
      perm = jax.random.permutation(jax.random.fold_in(order_key, step // spe), images.shape[0])
      idx = jax.lax.dynamic_slice(perm, ((step % spe) * batch,), (batch,))
      chosen = images[idx]
      key_a, key_b = jax.random.split(key)
      views = {name: random_resized_crops(k, chosen, aug.image_size, aug.crop_scale,
                                          aug.crop_ratio)
               for name, k in (("view_a", key_a), ("view_b", key_b))}
      return {**views, "label": labels[idx]} if probe_classes else views

    self._make_batch = jax.jit(make_batch, out_shardings=parallel.batch_sharding(mesh))
    logging.info("In-memory dataset %s: %d images of %s, %d steps per epoch.",
                 config.data.name, self.num_examples, images.shape[1:], self.steps_per_epoch)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = self._make_batch(self._images, self._labels, jnp.asarray(self._step, jnp.int32))
    self._step += 1
    return batch
