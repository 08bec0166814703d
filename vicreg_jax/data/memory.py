"""In-memory datasets on the devices: both views are cropped on the accelerator each step.

For data that fits in memory (scikit-learn's digits, CIFAR-10/100, STL-10, any ``.npz``) the
images are placed on the devices once; each step picks its slice of the epoch's permutation
and random-resized-crops both views there, so there is no per-step host work. Everything is a
deterministic function of ``(seed, step)``: resuming at any step reproduces the run.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vicreg_jax import parallel

TFDS_IN_MEMORY = ("cifar10", "cifar100", "stl10")
DIGITS_TEST_FRACTION = 0.2
CROP_ATTEMPTS = 10  # as torchvision's RandomResizedCrop
# Stream of the data keys: model init uses fold_in(seed, 0), the step rng fold_in(seed, 1).
DATA_KEY_STREAM = 2


def to_rgb_uint8(images: np.ndarray) -> np.ndarray:
  """[n, h, w] / [n, h, w, 1|3|4] numeric images -> uint8 [n, h, w, 3]."""
  if images.ndim == 3:
    images = images[..., None]
  if images.shape[-1] == 4:
    images = images[..., :3]
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  if images.shape[-1] != 3:
    raise ValueError(f"Images must have 1, 3 or 4 channels; got shape {images.shape}.")
  if images.dtype != np.uint8:
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
  return images


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  images = digits.images * (255.0 / 16.0)  # values 0..16
  order = np.random.default_rng(0).permutation(len(images))
  n_test = int(round(DIGITS_TEST_FRACTION * len(images)))
  idx = order[n_test:] if split == "train" else order[:n_test]
  return to_rgb_uint8(images[idx]), digits.target[idx].astype(np.int32)


def _npz(path: str) -> tuple[np.ndarray, np.ndarray]:
  if not path:
    raise FileNotFoundError("data.name='npz' needs --config.data.path=<file.npz> with an "
                            "'images' array (and optionally 'labels').")
  with np.load(path) as f:
    if "images" not in f:
      raise ValueError(f"{path} has no 'images' array (found {list(f.keys())}).")
    images = to_rgb_uint8(f["images"])
    labels = f["labels"].astype(np.int32) if "labels" in f else np.zeros(len(images), np.int32)
  return images, labels


def _tfds(name: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
  from vicreg_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (imports TF)
  return pipeline.load_tfds_arrays(name, split, data_dir)


def load_arrays(data_config: ml_collections.ConfigDict, split: str
                ) -> tuple[np.ndarray, np.ndarray]:
  """Loads a whole split: (uint8 [n, h, w, 3], int32 [n] labels).

  ``data_config.name``: ``digits`` (bundled with scikit-learn; deterministic 80/20 train/test
  split), ``npz`` (``data_config.path``), or ``cifar10``/``cifar100``/``stl10`` from tfds.
  """
  if data_config.name == "digits":
    return _digits(split)
  if data_config.name == "npz":
    return _npz(data_config.path)
  if data_config.name in TFDS_IN_MEMORY:
    return _tfds(data_config.name, split, data_config.data_dir)
  raise ValueError(f"Unknown in-memory dataset {data_config.name!r}; use 'digits', 'npz' or "
                   f"one of {TFDS_IN_MEMORY}, or --config.data.source=tfds for streaming.")


def _fallback_window(height: int, width: int, ratio) -> tuple[int, int]:
  """torchvision's fallback: the whole image, cropped centrally to the nearest allowed aspect."""
  in_ratio = width / height
  if in_ratio < ratio[0]:
    return round(width / ratio[0]), width
  if in_ratio > ratio[1]:
    return height, round(height * ratio[1])
  return height, width


def sample_crop_windows(key: jax.Array, n: int, height: int, width: int, scale, ratio
                        ) -> jax.Array:
  """RandomResizedCrop windows ``[n, 4]`` = (y, x, h, w) in pixels, float32.

  Area ~ U(scale) of the image, log-aspect ~ U(log ratio); the first of 10 attempts that
  fits is used, else a centre crop with the aspect clamped to ``ratio`` (torchvision).
  """
  k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
  area = height * width * jax.random.uniform(k_area, (n, CROP_ATTEMPTS), minval=scale[0],
                                             maxval=scale[1])
  aspect = jnp.exp(jax.random.uniform(k_ratio, (n, CROP_ATTEMPTS), minval=np.log(ratio[0]),
                                      maxval=np.log(ratio[1])))
  w = jnp.round(jnp.sqrt(area * aspect))
  h = jnp.round(jnp.sqrt(area / aspect))
  fits = (w <= width) & (h <= height) & (w >= 1) & (h >= 1)
  first = jnp.argmax(fits, axis=1)
  any_fit = jnp.any(fits, axis=1)
  pick = lambda a: jnp.take_along_axis(a, first[:, None], axis=1)[:, 0]
  fb_h, fb_w = _fallback_window(height, width, ratio)
  w = jnp.where(any_fit, pick(w), fb_w)
  h = jnp.where(any_fit, pick(h), fb_h)
  y = jnp.where(any_fit, jnp.floor(jax.random.uniform(k_y, (n,)) * (height - h + 1)),
                (height - h) // 2)
  x = jnp.where(any_fit, jnp.floor(jax.random.uniform(k_x, (n,)) * (width - w + 1)),
                (width - w) // 2)
  return jnp.stack([y, x, h, w], axis=1).astype(jnp.float32)


def crop_and_resize(image: jax.Array, window: jax.Array, size: int) -> jax.Array:
  """Resamples ``window`` (y, x, h, w) of uint8 [H, W, 3] to float32 [size, size, 3] in [0, 255]."""
  y, x, h, w = window[0], window[1], window[2], window[3]
  scale = jnp.stack([size / h, size / w])
  translation = -jnp.stack([y, x]) * scale
  return jax.image.scale_and_translate(image.astype(jnp.float32), (size, size, 3), (0, 1),
                                       scale, translation, method="cubic", antialias=True)


def random_resized_crop(key: jax.Array, images: jax.Array, size: int, scale, ratio
                        ) -> jax.Array:
  """uint8 [n, H, W, 3] -> uint8 [n, size, size, 3], one random window per image."""
  windows = sample_crop_windows(key, images.shape[0], images.shape[1], images.shape[2],
                                scale, ratio)
  crops = jax.vmap(lambda img, win: crop_and_resize(img, win, size))(images, windows)
  return jnp.clip(jnp.round(crops), 0, 255).astype(jnp.uint8)


class MemoryViewSource:
  """Iterator of global ``{"view_a", "view_b"}`` uint8 [B, S, S, 3] batches, one per step."""

  def __init__(self, config: ml_collections.ConfigDict, mesh, *, start_step: int = 0):
    images, _ = load_arrays(config.data, config.data.split)
    self.num_examples = len(images)
    if config.batch_size > self.num_examples:
      raise ValueError(f"--config.batch_size={config.batch_size} is larger than the "
                       f"{self.num_examples} examples of {config.data.name}; lower it.")
    self.steps_per_epoch = self.num_examples // config.batch_size
    self._step = start_step
    self._images = parallel.replicate(mesh, images)
    aug = config.augment
    batch, spe, seed = config.batch_size, self.steps_per_epoch, config.seed

    data_key = jax.random.fold_in(jax.random.key(seed), DATA_KEY_STREAM)
    order_key, crop_key = jax.random.split(data_key)

    def make_batch(images, step):
      key = jax.random.fold_in(crop_key, step)
      perm = jax.random.permutation(jax.random.fold_in(order_key, step // spe), images.shape[0])
      idx = jax.lax.dynamic_slice(perm, ((step % spe) * batch,), (batch,))
      chosen = images[idx]
      key_a, key_b = jax.random.split(key)
      return {name: random_resized_crop(k, chosen, aug.image_size, aug.crop_scale, aug.crop_ratio)
              for name, k in (("view_a", key_a), ("view_b", key_b))}

    self._make_batch = jax.jit(make_batch, out_shardings=parallel.batch_sharding(mesh))
    logging.info("In-memory dataset %s: %d images of %s, %d steps per epoch.",
                 config.data.name, self.num_examples, images.shape[1:], self.steps_per_epoch)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = self._make_batch(self._images, jnp.asarray(self._step, jnp.int32))
    self._step += 1
    return batch
