"""On-device augmentation ops vs independent NumPy references, and the recipe's rates."""

import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vicreg_jax import config as config_lib
from vicreg_jax.data import augment

RNG = np.random.default_rng(0)
IMG = RNG.uniform(0, 1, (12, 10, 3)).astype(np.float32)


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
  out = np.empty_like(img, dtype=np.float64)
  for idx in np.ndindex(img.shape[:2]):
    h, s, v = colorsys.rgb_to_hsv(*img[idx])
    out[idx] = colorsys.hsv_to_rgb((h + delta) % 1, s, v)
  return out


def np_blur(img, sigma, radius):
  """Direct 2-D convolution, Gaussian taps renormalised over the pixels inside the image."""
  h, w, _ = img.shape
  out = np.zeros_like(img, dtype=np.float64)
  for i in range(h):
    for j in range(w):
      ys = np.arange(max(0, i - radius), min(h, i + radius + 1))
      xs = np.arange(max(0, j - radius), min(w, j + radius + 1))
      k = np.outer(np.exp(-0.5 * ((ys - i) / sigma) ** 2), np.exp(-0.5 * ((xs - j) / sigma) ** 2))
      out[i, j] = np.einsum("yx,yxc->c", k / k.sum(), img[ys][:, xs])
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
    img = np_blur(img, p["sigma"], augment.kernel_radius(min(img.shape[:2]),
                                                          recipe.blur_kernel_fraction))
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


@pytest.mark.parametrize("delta", [-0.1, 0.05, 0.3])
def test_hue_matches_colorsys(delta):
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


@pytest.mark.parametrize("sigma,radius", [(1.3, 3), (0.1, 2), (2.0, 5)])
def test_blur_matches_direct_convolution_with_renormalised_edges(sigma, radius):
  got = augment.gaussian_blur(jnp.asarray(IMG), sigma, radius)
  np.testing.assert_allclose(got, np_blur(IMG, sigma, radius), atol=1e-5)


def test_kernel_size_follows_the_image_side():
  assert 2 * augment.kernel_radius(224, 0.1) + 1 == 23  # BYOL/SimCLR at ImageNet size
  assert 2 * augment.kernel_radius(96, 0.1) + 1 == 9
  assert augment.kernel_radius(8, 0.1) == 0  # too small to blur: the op is left out


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
  recipe.blur_kernel_fraction = 0.5  # a 5-tap kernel on this 12 x 10 image
  run = jax.jit(lambda img, p: augment.apply_view(img, p, recipe))
  base = {"brightness": 1.2, "contrast": 0.8, "saturation": 1.1, "hue": -0.05, "sigma": 1.5,
          "order": np.array([2, 0, 3, 1])}
  for flags in ((1, 1, 0, 1, 1), (0, 1, 1, 0, 0), (1, 0, 0, 1, 1), (0, 0, 0, 0, 0)):
    p = dict(base, **dict(zip(("flip", "jitter", "grayscale", "blur", "solarize"),
                              map(bool, flags))))
    got = run(jnp.asarray(IMG), jax.tree.map(jnp.asarray, p))
    np.testing.assert_allclose(got, np_view(IMG, p, recipe), atol=1e-5, err_msg=str(flags))


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
