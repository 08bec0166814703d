"""On-device augmentation ops vs NumPy references, and the recipe's rates over many draws."""

import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vicreg_jax import config as config_lib
from vicreg_jax.data import augment

RNG = np.random.default_rng(0)
IMG = RNG.uniform(0, 1, (12, 10, 3)).astype(np.float32)


def np_gray(img):
  return np.repeat((img @ np.array([0.299, 0.587, 0.114]))[..., None], 3, -1)


@pytest.mark.parametrize("factor", [0.6, 1.3])
def test_brightness_contrast_saturation_match_torchvision_formulas(factor):
  np.testing.assert_allclose(augment.adjust_brightness(IMG, factor), np.clip(IMG * factor, 0, 1),
                             atol=1e-6)
  mean = np_gray(IMG)[..., 0].mean()
  np.testing.assert_allclose(augment.adjust_contrast(IMG, factor),
                             np.clip(mean + factor * (IMG - mean), 0, 1), atol=1e-6)
  g = np_gray(IMG)
  np.testing.assert_allclose(augment.adjust_saturation(IMG, factor),
                             np.clip(g + factor * (IMG - g), 0, 1), atol=1e-6)


@pytest.mark.parametrize("delta", [-0.1, 0.05, 0.3])
def test_hue_matches_colorsys(delta):
  want = np.array([[colorsys.hsv_to_rgb((colorsys.rgb_to_hsv(*px)[0] + delta) % 1,
                                        *colorsys.rgb_to_hsv(*px)[1:]) for px in row]
                   for row in IMG])
  np.testing.assert_allclose(augment.adjust_hue(IMG, delta), want, atol=1e-5)


def test_grayscale_solarize_flip():
  np.testing.assert_allclose(augment.grayscale(IMG), np_gray(IMG), atol=1e-6)
  np.testing.assert_allclose(augment.solarize(IMG, 0.5), np.where(IMG >= 0.5, 1 - IMG, IMG))


def test_blur_matches_direct_convolution_with_renormalised_edges():
  sigma, radius = 1.3, 3
  got = np.asarray(augment.gaussian_blur(jnp.asarray(IMG), sigma, radius))
  h, w, _ = IMG.shape
  want = np.zeros_like(IMG, dtype=np.float64)
  for i in range(h):
    for j in range(w):
      ys, xs = np.arange(max(0, i - radius), min(h, i + radius + 1)), np.arange(
          max(0, j - radius), min(w, j + radius + 1))
      ky = np.exp(-0.5 * ((ys - i) / sigma) ** 2)
      kx = np.exp(-0.5 * ((xs - j) / sigma) ** 2)
      k = np.outer(ky / ky.sum(), kx / kx.sum())
      want[i, j] = np.einsum("yx,yxc->c", k, IMG[ys][:, xs])
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert augment.kernel_radius(224, 0.1) == 11  # 23-px kernel at ImageNet size


def test_jitter_applies_ops_in_the_sampled_order():
  p = {"brightness": 1.3, "contrast": 0.7, "saturation": 1.2, "hue": 0.1}
  ops = {0: lambda x: augment.adjust_brightness(x, 1.3), 1: lambda x: augment.adjust_contrast(x, 0.7),
         2: lambda x: augment.adjust_saturation(x, 1.2), 3: lambda x: augment.adjust_hue(x, 0.1)}
  for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
    want = IMG
    for i in order:
      want = ops[i](want)
    got = augment._color_jitter(jnp.asarray(IMG), dict(p, order=jnp.asarray(order)))  # pylint: disable=protected-access
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("recipe_name", ["official", "symmetric"])
def test_recipe_rates_within_binomial_error(recipe_name):
  cfg = config_lib.augment_recipe(recipe_name)
  n = 20000
  for view in ("view_a", "view_b"):
    recipe = cfg[view]
    p = jax.device_get(augment.sample_view_params(jax.random.key(1), n, recipe))
    for draw, rate in (("flip", recipe.flip_prob), ("jitter", recipe.jitter_prob),
                       ("grayscale", recipe.grayscale_prob), ("blur", recipe.blur_prob),
                       ("solarize", recipe.solarize_prob)):
      tol = 4 * np.sqrt(max(rate * (1 - rate), 1e-12) / n)
      assert abs(p[draw].mean() - rate) <= tol + 1e-12, (view, draw)
    assert p["sigma"].min() >= 0.1 and p["sigma"].max() <= 2.0
    assert np.abs(p["hue"]).max() <= 0.1 and np.abs(p["brightness"] - 1).max() <= 0.4
    assert (np.sort(p["order"], axis=1) == np.arange(4)).all()  # a permutation per image
  assert cfg.view_a.blur_prob == (1.0 if recipe_name == "official" else 0.5)


def test_augment_pair_shapes_and_normalisation():
  cfg = config_lib.augment_recipe("official", image_size=16)
  images = jnp.asarray(RNG.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8))
  a, b = jax.jit(lambda k, x, y: augment.augment_pair(k, x, y, cfg))(jax.random.key(0), images,
                                                                       images)
  assert a.shape == b.shape == (6, 16, 16, 3) and a.dtype == jnp.float32
  assert not np.allclose(a, b)  # independent draws per view
  lo = (0 - np.array(cfg.mean)) / np.array(cfg.std)
  hi = (1 - np.array(cfg.mean)) / np.array(cfg.std)
  assert (np.asarray(a) >= lo - 1e-5).all() and (np.asarray(a) <= hi + 1e-5).all()
