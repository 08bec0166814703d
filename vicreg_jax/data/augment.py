"""Per-image view augmentations as pure JAX functions, run on the accelerator in the step.

Recipe (``config.augment.view_a`` / ``view_b``; official = BYOL's asymmetric set): horizontal
flip, colour jitter (brightness, contrast, saturation, hue as torchvision computes them on PIL
images, the four in a random order per image, the whole jitter applied with probability),
grayscale, Gaussian blur (PIL's ``ImageFilter.GaussianBlur(radius=sigma)`` with sigma ~
U[blur_sigma], as the official ``augmentations.py``), solarize (PIL's ``ImageOps.solarize``,
threshold 128), then normalisation. The ops compute in float32 without rounding to uint8
between them, where PIL stores every intermediate image as uint8. Every image gets its own key; random draws are separated from
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
# uint8 arithmetic wraps modulo 256 (torchvision's hue shift is a uint8 addition).
UINT8_LEVELS = 256

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
  """Rotates the hue by ``delta`` (|delta| <= 0.5 of a turn) as torchvision does on PIL images.

  torchvision's ``adjust_hue`` converts to PIL's HSV mode, which stores hue and saturation
  as truncated bytes (``int(h * 255)``, ``int(s * 255)``; hue 255 = one turn), adds the byte
  ``uint8(delta * 255)`` (truncated toward zero) to the hue with uint8 wrap-around, and
  converts back. The same quantisation is done here on float32; the value channel and the
  RGB result are not rounded. [h, w, 3] in [0, 1] -> [h, w, 3].
  """
  h, s, v = rgb_to_hsv(img)
  hue_byte = jnp.mod(jnp.floor(h * UINT8_MAX) + jnp.trunc(delta * UINT8_MAX), UINT8_LEVELS)
  return hsv_to_rgb(hue_byte / UINT8_MAX, jnp.floor(s * UINT8_MAX) / UINT8_MAX, v)


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


def box_radius(sigma: jax.Array, passes: int) -> jax.Array:
  """Fractional box radius whose ``passes`` box filters have variance ``sigma**2``.

  Pillow's ``_gaussian_blur_radius`` (``BoxBlur.c``; extended box filter of Gwosdek et al.,
  SSVM 2011): radius ``l + a`` with integer part ``l`` and end-tap weight ``a`` in [0, 1).
  sigma: f32[] > 0 in pixels -> f32[].
  """
  sigma2 = jnp.square(sigma) / passes
  length = jnp.sqrt(12.0 * sigma2 + 1.0)
  l = jnp.floor((length - 1.0) / 2.0)
  a = (2 * l + 1) * (l * (l + 1) - 3 * sigma2) / (6 * (sigma2 - jnp.square(l + 1)))
  return l + a


def box_blur_matrix(size: int, radius: jax.Array) -> jax.Array:
  """f32[size, size] one pass of Pillow's extended box filter along an axis of ``size >= 2``.

  Output pixel i = (sum of x[i + d] for |d| <= l, plus a * (x[i - l - 1] + x[i + l + 1]))
  / (2 * radius + 1), with ``l = floor(radius)``, ``a = radius - l`` and indices clamped to
  the image (edge pixels replicated, as ``ImagingLineBoxBlur``). Row i holds the weights of
  output pixel i.
  """
  l = jnp.floor(radius)
  a = radius - l
  out = jnp.arange(size)[:, None]
  offset = (jnp.arange(size)[None, :] - out).astype(jnp.float32)
  taps = jnp.where(jnp.abs(offset) <= l, 1.0, jnp.where(jnp.abs(offset) == l + 1, a, 0.0))

  def weight_up_to(d):
    """Total tap weight of the offsets <= d (f32 array of offsets)."""
    return (jnp.clip(d + l + 1, 0.0, 2 * l + 1) + a * (d >= -l - 1) + a * (d >= l + 1))

  total = 2 * radius + 1
  first = weight_up_to(-out.astype(jnp.float32))                # offsets landing at or before 0
  last = total - weight_up_to((size - 2 - out).astype(jnp.float32))  # at or after size - 1
  column = jnp.arange(size)[None, :]
  weights = jnp.where(column == 0, first, jnp.where(column == size - 1, last, taps))
  return weights / total


def blur_matrix(size: int, sigma: jax.Array, passes: int) -> jax.Array:
  """f32[size, size] 1-D operator of PIL's GaussianBlur(radius=sigma): ``passes`` box passes."""
  return jnp.linalg.matrix_power(box_blur_matrix(size, box_radius(sigma, passes)), passes)


def gaussian_blur(img: jax.Array, sigma: jax.Array, passes: int) -> jax.Array:
  """PIL's ``ImageFilter.GaussianBlur(radius=sigma)`` of [h, w, c] (h, w >= 2), unrounded.

  Pillow approximates a Gaussian of standard deviation ``sigma`` by ``passes`` (3) extended
  box filters per axis with replicated edges, rounding to uint8 after each pass; here the
  same linear operator is applied without the rounding, as two small dense matmuls
  ([h, h] and [w, w] per image): faster than a separable convolution on every backend we
  measured (matmul units; depthwise convs are slow on CPU, see
  experiments/benchmark_input.py).
  """
  h, w, _ = img.shape
  img = jnp.einsum("ij,jwc->iwc", blur_matrix(h, sigma, passes), img)
  return jnp.einsum("kw,iwc->ikc", blur_matrix(w, sigma, passes), img)


def solarize(img: jax.Array, threshold: float) -> jax.Array:
  """Inverts pixels at or above ``threshold``: [h, w, c] in [0, 1] -> same.

  PIL's ``ImageOps.solarize(img, 128)`` inverts uint8 levels >= 128; PIL would first round
  an unrounded value x to a level, and round(255 x) >= 128 exactly when x >= 127.5 / 255 =
  0.5, the recipe's threshold.
  """
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
  if recipe.blur_prob > 0:
    img = jnp.where(p["blur"], gaussian_blur(img, p["sigma"], recipe.blur_passes), img)
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
