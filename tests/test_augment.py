"""On-device augmentation ops vs independent NumPy references, vs PIL (the official code's
ops) on real photos, and the recipe's rates."""

import colorsys
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from sklearn.datasets import load_sample_image

from vicreg_jax import config as config_lib
from vicreg_jax.data import augment

RNG = np.random.default_rng(0)
IMG = RNG.uniform(0, 1, (12, 10, 3)).astype(np.float32)
PIL_BLUR_PASSES = 3  # ImageFilter.GaussianBlur -> Image.gaussian_blur(radius), 3 box passes


# --- NumPy references (float64, per pixel where the op is defined per pixel) ---------------

def np_gray(img):
  return np.repeat((img @ np.array([0.299, 0.587, 0.114]))[..., None], 3, -1)


def np_brightness(img, f):
  return np.clip(img * f, 0, 1)


def np_contrast(img, f):
  mean = np_gray(img)[..., 0].mean()
  return np.clip(f * img + (1 - f) * mean, 0, 1)


def np_saturation(img, f):
  g = np_gray(img)
  return np.clip(f * img + (1 - f) * g, 0, 1)


def np_hue(img, delta):
  """torchvision's adjust_hue on a PIL image, unrounded: hue and saturation as truncated
  bytes (hue 255 = one turn), the byte shift int(delta * 255) added modulo 256."""
  out = np.empty_like(img, dtype=np.float64)
  for idx in np.ndindex(img.shape[:2]):
    h, s, v = colorsys.rgb_to_hsv(*img[idx])
    hue_byte = (math.floor(h * 255) + int(delta * 255)) % 256
    out[idx] = colorsys.hsv_to_rgb(hue_byte / 255, math.floor(s * 255) / 255, v)
  return out


def pil_box_radius(sigma, passes):
  """Pillow BoxBlur.c _gaussian_blur_radius."""
  sigma2 = sigma * sigma / passes
  l = math.floor((math.sqrt(12.0 * sigma2 + 1.0) - 1.0) / 2.0)
  a = (2 * l + 1) * (l * (l + 1) - 3 * sigma2) / (6 * (sigma2 - (l + 1) * (l + 1)))
  return l + a


def np_box_pass(line, radius, rounded):
  """One pass of BoxBlur.c's ImagingLineBoxBlur along axis 0, indices clamped to the line;
  ``rounded``: its fixed-point weights and uint8 rounding (float64 otherwise)."""
  l, n = int(radius), line.shape[0]
  if rounded:
    ww = int((1 << 24) / np.float32(radius * 2 + 1))
    near, far, out = ww, ((1 << 24) - (2 * l + 1) * ww) // 2, np.zeros(line.shape, np.int64)
  else:
    near, far, out = 1 / (2 * radius + 1), (radius - l) / (2 * radius + 1), np.zeros(line.shape)
  for i in range(n):
    near_sum = sum(line[min(max(i + d, 0), n - 1)] for d in range(-l, l + 1))
    far_sum = line[max(i - l - 1, 0)] + line[min(i + l + 1, n - 1)]
    out[i] = near_sum * near + far_sum * far
  return (out + (1 << 23)) >> 24 if rounded else out


def np_blur(img, sigma, passes=PIL_BLUR_PASSES, rounded=False):
  """PIL's GaussianBlur(radius=sigma): ``passes`` box passes along x, then along y."""
  radius = pil_box_radius(sigma, passes)
  out = img.astype(np.int64 if rounded else np.float64)
  for axis in (1, 0):
    out = np.moveaxis(out, axis, 0)
    for _ in range(passes):
      out = np_box_pass(out, radius, rounded)
    out = np.moveaxis(out, 0, axis)
  return out


def np_solarize(img, threshold):
  return np.where(img >= threshold, 1 - img, img)


NP_JITTER = (np_brightness, np_contrast, np_saturation, np_hue)
JITTER_KEYS = ("brightness", "contrast", "saturation", "hue")


def np_view(img, p, recipe):
  """The official per-view order: flip, jitter (in p['order']), grayscale, blur, solarize."""
  img = img.astype(np.float64)
  if p["flip"]:
    img = img[:, ::-1]
  if p["jitter"]:
    for i in p["order"]:
      img = NP_JITTER[i](img, p[JITTER_KEYS[i]])
  if p["grayscale"]:
    img = np_gray(img)
  if p["blur"]:
    img = np_blur(img, p["sigma"], recipe.blur_passes)
  if p["solarize"]:
    img = np_solarize(img, recipe.solarize_threshold)
  return img


# --- single ops ------------------------------------------------------------------------------

@pytest.mark.parametrize("factor", [0.6, 1.3])
def test_brightness_contrast_saturation_match_torchvision_formulas(factor):
  for op, ref in ((augment.adjust_brightness, np_brightness),
                  (augment.adjust_contrast, np_contrast),
                  (augment.adjust_saturation, np_saturation)):
    np.testing.assert_allclose(op(IMG, factor), ref(IMG, factor), atol=1e-6, err_msg=op.__name__)


@pytest.mark.parametrize("delta", [-0.1, -0.0021, 0.05, 0.3, 0.49])
def test_hue_matches_colorsys_with_pil_byte_quantisation(delta):
  np.testing.assert_allclose(augment.adjust_hue(IMG, delta), np_hue(IMG, delta), atol=1e-5)


def test_hue_keeps_gray_and_black_pixels():
  flat = np.array([[[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0]]], np.float32)
  np.testing.assert_allclose(augment.adjust_hue(flat, 0.3), flat, atol=1e-6)


def test_grayscale_solarize_flip_normalize():
  np.testing.assert_allclose(augment.grayscale(IMG), np_gray(IMG), atol=1e-6)
  np.testing.assert_allclose(augment.solarize(IMG, 0.5), np_solarize(IMG, 0.5))
  np.testing.assert_array_equal(augment.hflip(IMG), IMG[:, ::-1])
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  np.testing.assert_allclose(augment.normalize(jnp.asarray(IMG), mean, std),
                             (IMG - np.array(mean)) / np.array(std), atol=1e-6)


@pytest.mark.parametrize("sigma", [0.1, 0.7, 1.3, 1.5, 2.0, 6.0])
def test_blur_matches_the_box_blur_transcription(sigma):
  """Unrounded PIL operator; sigma 6 has boxes wider than the 10-px side (all edge clamps)."""
  got = augment.gaussian_blur(jnp.asarray(IMG), sigma, PIL_BLUR_PASSES)
  np.testing.assert_allclose(got, np_blur(IMG, sigma), atol=1e-5)


@pytest.mark.parametrize("sigma", [0.1, 1.0, 1.5, 2.0])
def test_box_blur_transcription_with_rounding_is_pil_bit_for_bit(sigma):
  """The reference above is PIL's algorithm: with its fixed-point rounding it equals PIL."""
  img = RNG.integers(0, 256, (9, 13, 3), dtype=np.uint8)
  want = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=sigma)))
  np.testing.assert_array_equal(np_blur(img, sigma, rounded=True), want)


@pytest.mark.parametrize("sigma", [0.1, 1.0, 1.41, 1.5, 2.0])
def test_blur_is_three_boxes_with_variance_sigma_squared(sigma):
  """Interior rows of the 1-D operator: PIL's radius formula gives variance exactly sigma^2."""
  assert float(augment.box_radius(jnp.float32(sigma), 3)) == pytest.approx(
      pil_box_radius(sigma, 3), rel=1e-6)
  row = np.asarray(augment.blur_matrix(41, jnp.float32(sigma), 3), np.float64)[20]
  offsets = np.arange(41) - 20
  assert row.sum() == pytest.approx(1.0, abs=1e-6)
  assert (row * offsets ** 2).sum() == pytest.approx(sigma ** 2, rel=1e-4)


def test_jitter_applies_ops_in_the_sampled_order():
  p = {"brightness": 1.3, "contrast": 0.7, "saturation": 1.2, "hue": 0.1}
  results = []
  for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
    want = IMG.astype(np.float64)
    for i in order:
      want = NP_JITTER[i](want, p[JITTER_KEYS[i]])
    got = augment.color_jitter(jnp.asarray(IMG), dict(p, order=jnp.asarray(order)))
    np.testing.assert_allclose(got, want, atol=1e-5)
    results.append(np.asarray(got))
  assert not np.allclose(results[0], results[1], atol=1e-3)  # the order matters here


@pytest.mark.parametrize("recipe_name", ["official", "symmetric"])
def test_whole_view_matches_numpy_composition(recipe_name):
  """apply_view on fixed draws: ops in the official order, skipped exactly when not drawn."""
  recipe = config_lib.augment_recipe(recipe_name).view_b
  run = jax.jit(lambda img, p: augment.apply_view(img, p, recipe))
  base = {"brightness": 1.2, "contrast": 0.8, "saturation": 1.1, "hue": -0.05, "sigma": 1.5,
          "order": np.array([2, 0, 3, 1])}
  for flags in ((1, 1, 0, 1, 1), (0, 1, 1, 0, 0), (1, 0, 0, 1, 1), (0, 0, 0, 0, 0)):
    p = dict(base, **dict(zip(("flip", "jitter", "grayscale", "blur", "solarize"),
                              map(bool, flags))))
    got = run(jnp.asarray(IMG), jax.tree.map(jnp.asarray, p))
    np.testing.assert_allclose(got, np_view(IMG, p, recipe), atol=1e-5, err_msg=str(flags))


# --- vs PIL (the official augmentations.py ops) on real photos at 224 px ----------------------
# torchvision is not needed: its PIL path is these Pillow calls. PIL rounds (brightness,
# contrast and saturation truncate) to uint8 after every op and every blur pass; ours do not,
# so the tolerances below are in uint8 levels, measured on the unrounded output.

def photos_224():
  """scikit-learn's two bundled photos: centre square, bicubic resize to 224 px, uint8."""
  out = []
  for name in ("china.jpg", "flower.jpg"):
    img = Image.fromarray(load_sample_image(name))
    side = min(img.size)
    left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((224, 224), Image.BICUBIC)
    out.append(np.asarray(img))
  return out


def pil_adjust_hue(img, delta):
  """torchvision F.adjust_hue on a PIL image (np.uint8(delta * 255): truncation, wrap-around)."""
  h, s, v = img.convert("HSV").split()
  hue = np.asarray(h, np.uint8) + np.uint8(int(delta * 255) % 256)  # uint8 wraps mod 256
  return Image.merge("HSV", (Image.fromarray(hue.astype(np.uint8), "L"), s, v)).convert("RGB")


_jit_blur = jax.jit(augment.gaussian_blur, static_argnums=2)
EXACT = 1e-4  # identical up to float32 rounding of x / 255 * 255

# op: (PIL, ours on float [0, 1], parameters, max |diff|, mean |diff|) in uint8 levels.
PIL_CASES = {
    "brightness": (lambda im, f: ImageEnhance.Brightness(im).enhance(f),
                   augment.adjust_brightness, (0.6, 0.8, 1.2, 1.4), 1.0, 0.4),
    "contrast": (lambda im, f: ImageEnhance.Contrast(im).enhance(f),
                 augment.adjust_contrast, (0.6, 0.8, 1.2, 1.4), 1.5, 0.4),
    "saturation": (lambda im, f: ImageEnhance.Color(im).enhance(f),
                   augment.adjust_saturation, (0.8, 0.9, 1.1, 1.2), 1.5, 0.45),
    "hue": (pil_adjust_hue, augment.adjust_hue,
            (-0.1, -0.05, -0.013, 0.002, 0.02, 0.07, 0.1), 6.0, 0.2),
    "grayscale": (lambda im, _: ImageOps.grayscale(im).convert("RGB"),
                  lambda x, _: augment.grayscale(x), (None,), 0.51, 0.25),
    # 6 passes, each rounded by PIL to +-0.5 level: at most 3 levels apart.
    "blur": (lambda im, sigma: im.filter(ImageFilter.GaussianBlur(radius=sigma)),
             lambda x, sigma: _jit_blur(x, jnp.float32(sigma), PIL_BLUR_PASSES),
             (0.1, 0.5, 1.0, 1.41, 1.5, 2.0), 3.0, 0.35),
    "solarize": (lambda im, _: ImageOps.solarize(im, 128),
                 lambda x, _: augment.solarize(x, 0.5), (None,), EXACT, EXACT),
    "flip": (lambda im, _: ImageOps.mirror(im), lambda x, _: augment.hflip(x), (None,),
             EXACT, EXACT),
}


def pil_differences(op):
  """(max, mean) |ours * 255 - PIL| in uint8 levels over both photos and the op's parameters."""
  pil_op, our_op, params, _, _ = PIL_CASES[op]
  diffs = []
  for photo in photos_224():
    for param in params:
      want = np.asarray(pil_op(Image.fromarray(photo), param), np.float64)
      got = np.asarray(our_op(jnp.asarray(photo, jnp.float32) / 255.0, param), np.float64)
      diffs.append(np.abs(got * 255.0 - want))
  return max(d.max() for d in diffs), float(np.mean(diffs))


@pytest.mark.parametrize("op", sorted(PIL_CASES))
def test_op_matches_pil_on_real_photos(op):
  max_tol, mean_tol = PIL_CASES[op][3:]
  worst, mean = pil_differences(op)
  assert worst <= max_tol and mean <= mean_tol, (op, worst, mean)


def test_solarize_threshold_is_pils_128_on_the_rounded_value():
  """Unrounded levels near 127.5: ours inverts what PIL inverts after rounding to uint8."""
  levels = np.array([126.6, 127.4, 127.49, 127.51, 127.6, 128.0, 128.4, 200.0])
  rgb = lambda x: np.repeat(x[None, :, None], 3, axis=2)
  want = np.asarray(ImageOps.solarize(Image.fromarray(rgb(np.round(levels).astype(np.uint8))),
                                      128), np.float64)
  got = np.asarray(augment.solarize(jnp.asarray(rgb(levels / 255.0), jnp.float32), 0.5))
  np.testing.assert_allclose(got * 255.0, want, atol=0.5)


# --- random draws ----------------------------------------------------------------------------

def binomial_tol(rate, n, sigmas=4):
  return sigmas * np.sqrt(rate * (1 - rate) / n) + 1e-12


@pytest.mark.parametrize("recipe_name", ["official", "symmetric"])
def test_recipe_rates_within_binomial_error(recipe_name):
  cfg = config_lib.augment_recipe(recipe_name)
  n = 20000
  for view, key in (("view_a", 1), ("view_b", 2)):
    recipe = cfg[view]
    p = jax.device_get(augment.sample_view_params(jax.random.key(key), n, recipe))
    for draw in ("flip", "jitter", "grayscale", "blur", "solarize"):
      rate = recipe[f"{draw}_prob"]
      assert abs(p[draw].mean() - rate) <= binomial_tol(rate, n), (view, draw, p[draw].mean())
    assert p["sigma"].min() >= 0.1 and p["sigma"].max() <= 2.0
    assert abs(p["sigma"].mean() - 1.05) < 4 * 1.9 / np.sqrt(12 * n)  # U[0.1, 2]
    assert np.abs(p["hue"]).max() <= 0.1 and np.abs(p["brightness"] - 1).max() <= 0.4
    assert np.abs(p["saturation"] - 1).max() <= 0.2 and np.abs(p["contrast"] - 1).max() <= 0.4
    assert (np.sort(p["order"], axis=1) == np.arange(4)).all()  # a permutation per image
    first = np.bincount(p["order"][:, 0], minlength=4) / n  # each op first 1/4 of the time
    assert np.abs(first - 0.25).max() <= binomial_tol(0.25, n)
  want = {"official": (1.0, 0.1, 0.0, 0.2), "symmetric": (0.5, 0.5, 0.1, 0.1)}[recipe_name]
  assert (cfg.view_a.blur_prob, cfg.view_b.blur_prob, cfg.view_a.solarize_prob,
          cfg.view_b.solarize_prob) == want


def test_draws_are_independent_between_images_and_views():
  recipe = config_lib.augment_recipe("official").view_b
  n = 20000
  p = jax.device_get(augment.sample_view_params(jax.random.key(3), n, recipe))
  # Neighbouring images and different ops of one image are uncorrelated.
  assert abs(np.corrcoef(p["brightness"][:-1], p["brightness"][1:])[0, 1]) < 4 / np.sqrt(n)
  assert abs(np.corrcoef(p["brightness"], p["contrast"])[0, 1]) < 4 / np.sqrt(n)
  both = np.mean(p["flip"] & p["solarize"])
  assert abs(both - 0.5 * 0.2) <= binomial_tol(0.1, n)


def test_augment_pair_shapes_and_normalisation():
  cfg = config_lib.augment_recipe("official", image_size=16)
  one = RNG.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
  images = jnp.asarray(np.repeat(one, 6, axis=0))  # identical images, so draws tell them apart
  pair = jax.jit(lambda k, x, y: augment.augment_pair(k, x, y, cfg))
  a, b = pair(jax.random.key(0), images, images)
  assert a.shape == b.shape == (6, 16, 16, 3) and a.dtype == b.dtype == jnp.float32
  assert not np.allclose(a, b)  # independent draws per view
  assert not np.allclose(a[0], a[1])  # and per image
  lo = (0 - np.array(cfg.mean)) / np.array(cfg.std)
  hi = (1 - np.array(cfg.mean)) / np.array(cfg.std)
  assert (np.asarray(a) >= lo - 1e-5).all() and (np.asarray(a) <= hi + 1e-5).all()
  # Float input in [0, 1] gives the same views as the uint8 input it came from.
  a_float, _ = pair(jax.random.key(0), images / 255.0, images)
  np.testing.assert_allclose(a_float, a, atol=1e-4)
