"""Crop geometry in pure JAX: crop windows, resampling and the labelled train/eval crops.

Windows are f32[4] = (y, x, h, w) in pixels of the source image; resampling is two small
matmuls (static shapes for any window), so every function here jits and vmaps. Used on the
accelerator by the in-memory sources; the TF sampler of :mod:`.tf_input` draws the same
windows on the host.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vicreg_jax.data.augment import UINT8_MAX, hflip

CROP_ATTEMPTS = 10  # as torchvision's RandomResizedCrop
CUBIC_A = -0.5  # bicubic kernel parameter of PIL, TF and jax.image (PyTorch tensors: -0.75)
TRAIN_CROPS = ("random_resized", "pad_random")


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
    crop = jax.vmap(lambda img: crop_and_resize(img, window, size, kernel="bilinear"))(
        images)
    return jnp.clip(jnp.round(crop), 0, UINT8_MAX).astype(jnp.uint8)
  crop_keys, flip_keys = jnp.split(jax.random.split(key, 2 * n), 2)
  if transform.train_crop == "pad_random":
    crops = jax.vmap(lambda k, img: pad_random_crop(k, img, transform.pad))(crop_keys, images)
  else:
    def rrc(k, img):
      window = sample_crop_window(k, height, width, transform.crop_scale,
                                         transform.crop_ratio)
      crop = crop_and_resize(img, window, size, kernel="bilinear")
      return jnp.clip(jnp.round(crop), 0, UINT8_MAX).astype(jnp.uint8)
    crops = jax.vmap(rrc)(crop_keys, images)
  flips = jax.vmap(lambda k: jax.random.bernoulli(k, transform.flip_prob))(flip_keys)
  return jnp.where(flips[:, None, None, None], jax.vmap(hflip)(crops), crops)
