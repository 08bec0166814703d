"""Per-image view augmentations as pure JAX functions, run on the accelerator in the step.

Recipe (``config.augment.view_a`` / ``view_b``; official = BYOL's asymmetric set): horizontal
flip, colour jitter (brightness, contrast, saturation, hue with torchvision semantics, the
four in a random order per image, the whole jitter applied with probability), grayscale,
Gaussian blur (sigma ~ U[blur_sigma], kernel side ~ blur_kernel_fraction of the image),
solarize, then normalisation. Every image gets its own key; random draws are separated from
the pixel ops (:func:`sample_image_params`, :func:`sample_view_params`) so that their rates
can be tested directly and the ops checked on fixed parameters.

Images: float32 [h, w, 3] in [0, 1] for the per-image ops; the batch entry points
(:func:`augment_view`, :func:`augment_pair`) also accept uint8 [0, 255]. All shapes are
static and every op is computed for every image, then selected (``jnp.where``): under
``vmap`` and SPMD there is no data-dependent control flow.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections

# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale and PIL's convert("L").
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# brightness, contrast, saturation, hue: the colour-jitter ops permuted per image.
NUM_JITTER_OPS = 4
UINT8_MAX = 255.0

Params = dict[str, jax.Array]


def to_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [0, 1]; float inputs (assumed in [0, 1]) are only cast."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / UINT8_MAX
  return images.astype(jnp.float32)


def sample_image_params(key: jax.Array, recipe: ml_collections.ConfigDict) -> Params:
  """All random draws of one view of one image.

  Returns scalars: booleans ``flip``, ``jitter``, ``grayscale``, ``blur``, ``solarize``
  (each True with its ``*_prob``); jitter factors ``brightness``, ``contrast``,
  ``saturation`` ~ U[1 - s, 1 + s] and ``hue`` ~ U[-hue, hue] (fraction of a turn);
  ``sigma`` ~ U[blur_sigma] in pixels; and ``order``: int32 [4], a permutation of the
  jitter ops (0 brightness, 1 contrast, 2 saturation, 3 hue).
  """
  keys = iter(jax.random.split(key, 11))
  bernoulli = lambda p: jax.random.bernoulli(next(keys), p)
  uniform = lambda lo, hi: jax.random.uniform(next(keys), minval=lo, maxval=hi)
  return {
      "flip": bernoulli(recipe.flip_prob),
      "jitter": bernoulli(recipe.jitter_prob),
      # max(0, .) as torchvision: a strength above 1 never makes a negative factor.
      "brightness": uniform(max(0.0, 1 - recipe.brightness), 1 + recipe.brightness),
      "contrast": uniform(max(0.0, 1 - recipe.contrast), 1 + recipe.contrast),
      "saturation": uniform(max(0.0, 1 - recipe.saturation), 1 + recipe.saturation),
      "hue": uniform(-recipe.hue, recipe.hue),
      "order": jax.random.permutation(next(keys), NUM_JITTER_OPS),
      "grayscale": bernoulli(recipe.grayscale_prob),
      "blur": bernoulli(recipe.blur_prob),
      "sigma": uniform(*recipe.blur_sigma),
      "solarize": bernoulli(recipe.solarize_prob),
  }


def sample_view_params(key: jax.Array, n: int, recipe: ml_collections.ConfigDict) -> Params:
  """The draws of :func:`sample_image_params` for ``n`` images, one key each: [n] ([n, 4])."""
  return jax.vmap(lambda k: sample_image_params(k, recipe))(jax.random.split(key, n))


def hflip(img: jax.Array) -> jax.Array:
  """Mirrors left-right: [h, w, c] -> [h, w, c]."""
  return img[:, ::-1, :]


def grayscale(img: jax.Array) -> jax.Array:
  """Luma replicated on 3 channels: [h, w, 3] -> [h, w, 3]."""
  luma = jnp.tensordot(img, jnp.asarray(LUMA_WEIGHTS, img.dtype), axes=([-1], [0]))
  return jnp.repeat(luma[..., None], 3, axis=-1)


def _blend(img: jax.Array, other: jax.Array, factor: jax.Array) -> jax.Array:
  """torchvision's ``_blend``: factor * img + (1 - factor) * other, clipped to [0, 1]."""
  return jnp.clip(other + factor * (img - other), 0.0, 1.0)


def adjust_brightness(img: jax.Array, factor: jax.Array) -> jax.Array:
  """Scales the pixels (blend with black); factor >= 0."""
  return _blend(img, jnp.zeros_like(img), factor)


def adjust_contrast(img: jax.Array, factor: jax.Array) -> jax.Array:
  """Blends with the image's mean luma (one scalar per image); factor >= 0."""
  return _blend(img, jnp.mean(grayscale(img)[..., 0]), factor)


def adjust_saturation(img: jax.Array, factor: jax.Array) -> jax.Array:
  """Blends with the per-pixel luma; factor >= 0 (0: grayscale)."""
  return _blend(img, grayscale(img), factor)


def rgb_to_hsv(img: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """[h, w, 3] RGB in [0, 1] -> (hue in [0, 1), saturation, value), each [h, w]."""
  r, g, b = img[..., 0], img[..., 1], img[..., 2]
  v = jnp.max(img, axis=-1)
  c = v - jnp.min(img, axis=-1)
  # Guarded divisions: gray pixels (c == 0) and black ones (v == 0) get hue and saturation 0.
  s = jnp.where(v > 0, c / jnp.where(v > 0, v, 1.0), 0.0)
  safe_c = jnp.where(c > 0, c, 1.0)
  h = jnp.where(v == r, (g - b) / safe_c,
                jnp.where(v == g, 2.0 + (b - r) / safe_c, 4.0 + (r - g) / safe_c))
  h = jnp.where(c > 0, (h / 6.0) % 1.0, 0.0)
  return h, s, v


def hsv_to_rgb(h: jax.Array, s: jax.Array, v: jax.Array) -> jax.Array:
  """Inverse of :func:`rgb_to_hsv`: three [h, w] arrays -> [h, w, 3]."""
  sector = jnp.floor(h * 6.0)
  f = h * 6.0 - sector
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  sector = sector.astype(jnp.int32) % 6
  r = jnp.choose(sector, [v, q, p, p, t, v], mode="clip")
  g = jnp.choose(sector, [t, v, v, q, p, p], mode="clip")
  b = jnp.choose(sector, [p, p, t, v, v, q], mode="clip")
  return jnp.stack([r, g, b], axis=-1)


def adjust_hue(img: jax.Array, delta: jax.Array) -> jax.Array:
  """Rotates the hue by ``delta`` (fraction of a turn, |delta| <= 0.5)."""
  h, s, v = rgb_to_hsv(img)
  return hsv_to_rgb((h + delta) % 1.0, s, v)


def color_jitter(img: jax.Array, p: Params) -> jax.Array:
  """The four jitter ops of one image in its order ``p["order"]`` (torchvision's randperm).

  Under vmap each position's ``switch`` evaluates all four ops and selects. Running hue only
  once (cheap ops before and after it) measured slower on an H100 (9.0% vs 7.7% of a
  ResNet-50 step): the extra selects cost more than the HSV conversions they save.
  """
  ops = (lambda x: adjust_brightness(x, p["brightness"]),
         lambda x: adjust_contrast(x, p["contrast"]),
         lambda x: adjust_saturation(x, p["saturation"]),
         lambda x: adjust_hue(x, p["hue"]))
  for i in range(NUM_JITTER_OPS):
    img = jax.lax.switch(p["order"][i], ops, img)
  return img


def kernel_radius(side: int, fraction: float) -> int:
  """Radius of the odd blur kernel for an image side: ``int(fraction * side) // 2``.

  As SimCLR/BYOL (kernel ``int(0.1 * 224) = 22`` made odd: 23 taps, radius 11).
  """
  return int(fraction * side) // 2


def blur_matrix(size: int, sigma: jax.Array, radius: int) -> jax.Array:
  """f32[size, size] 1-D Gaussian blur operator (row i: weights of output pixel i).

  Taps beyond ``radius`` are zero; near the border the rows are renormalised over the pixels
  inside the image (no padding, so edges are not darkened as with zero padding).
  """
  pos = jnp.arange(size)
  offset = (pos[:, None] - pos[None, :]).astype(jnp.float32)
  weights = jnp.where(jnp.abs(offset) <= radius,
                      jnp.exp(-0.5 * jnp.square(offset / sigma)), 0.0)
  return weights / jnp.sum(weights, axis=1, keepdims=True)


def gaussian_blur(img: jax.Array, sigma: jax.Array, radius: int) -> jax.Array:
  """Separable Gaussian blur of [h, w, c] as two small dense matmuls.

  Dense [h, h] and [w, w] operators do ~10x the FLOPs of a 23-tap separable convolution
  but run faster on every backend we measured (matmul units; depthwise convs are slow on
  CPU, see experiments/benchmark_input.py).
  """
  h, w, _ = img.shape
  img = jnp.einsum("ij,jwc->iwc", blur_matrix(h, sigma, radius), img)
  return jnp.einsum("kw,iwc->ikc", blur_matrix(w, sigma, radius), img)


def solarize(img: jax.Array, threshold: float) -> jax.Array:
  """Inverts pixels at or above ``threshold`` (PIL's ImageOps.solarize on [0, 1])."""
  return jnp.where(img >= threshold, 1.0 - img, img)


def apply_view(img: jax.Array, p: Params, recipe: ml_collections.ConfigDict) -> jax.Array:
  """All ops of one view on one image with fixed draws ``p`` (from sample_image_params).

  float32 [h, w, 3] in [0, 1] -> same shape and range, not normalised. Ops whose
  probability is 0 in the recipe are left out of the program.
  """
  img = jnp.where(p["flip"], hflip(img), img)
  if recipe.jitter_prob > 0:
    img = jnp.where(p["jitter"], color_jitter(img, p), img)
  if recipe.grayscale_prob > 0:
    img = jnp.where(p["grayscale"], grayscale(img), img)
  radius = kernel_radius(min(img.shape[:2]), recipe.blur_kernel_fraction)
  if recipe.blur_prob > 0 and radius > 0:
    img = jnp.where(p["blur"], gaussian_blur(img, p["sigma"], radius), img)
  if recipe.solarize_prob > 0:
    img = jnp.where(p["solarize"], solarize(img, recipe.solarize_threshold), img)
  return img


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """(x - mean) / std per channel; x: float [..., 3] in [0, 1]."""
  return (images - jnp.asarray(mean, images.dtype)) / jnp.asarray(std, images.dtype)


def augment_view(key: jax.Array, images: jax.Array, recipe: ml_collections.ConfigDict,
                 augment_config: ml_collections.ConfigDict) -> jax.Array:
  """One view of a batch, one key per image.

  Args:
    key: PRNG key of this view of the batch.
    images: uint8 [b, h, w, 3] in [0, 255] or float [b, h, w, 3] in [0, 1].
    recipe: ``augment_config.view_a`` or ``view_b``.
    augment_config: ``config.augment`` (normalisation ``mean`` / ``std``).

  Returns:
    Normalised float32 [b, h, w, 3].
  """
  params = sample_view_params(key, images.shape[0], recipe)
  out = jax.vmap(lambda img, p: apply_view(img, p, recipe))(to_float(images), params)
  return normalize(out, augment_config.mean, augment_config.std)


def augment_pair(key: jax.Array, view_a: jax.Array, view_b: jax.Array,
                 augment_config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """Both views of a batch with their own recipes and independent keys per view and image.

  ``view_a`` / ``view_b``: uint8 [b, h, w, 3] crops (or float in [0, 1]); returns two
  normalised float32 [b, h, w, 3].
  """
  key_a, key_b = jax.random.split(key)
  return (augment_view(key_a, view_a, augment_config.view_a, augment_config),
          augment_view(key_b, view_b, augment_config.view_b, augment_config))
