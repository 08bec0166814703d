"""In-memory view source: crops, determinism, resume position, sharding, loading errors."""

import jax
import numpy as np
import pytest

from vicreg_jax import config as config_lib
from vicreg_jax import parallel
from vicreg_jax.data import datasets, geometry, in_memory


def digits_config(**kw):
  c = config_lib.base_config()
  c.data.source, c.data.name = "memory", "digits"
  c.augment = config_lib.augment_recipe("cifar", image_size=8)
  c.batch_size = 64
  for k, v in kw.items():
    c[k] = v
  return c


def test_digits_split_is_deterministic_and_disjoint():
  x_train, y_train = datasets.load_arrays(digits_config().data, "train")
  x_test, _ = datasets.load_arrays(digits_config().data, "test")
  assert x_train.shape[1:] == (8, 8, 3) and x_train.dtype == np.uint8
  assert (len(x_train), len(x_test)) == (datasets.DIGITS_SPLIT_SIZES["train"],
                                         datasets.DIGITS_SPLIT_SIZES["test"]) == (1438, 359)
  assert set(np.unique(y_train)) == set(range(10))
  assert x_train.min() == 0 and x_train.max() == 255
  assert (x_train[..., 0] == x_train[..., 2]).all()  # gray on three channels
  x_again, _ = datasets.load_arrays(digits_config().data, "train")
  np.testing.assert_array_equal(x_again, x_train)
  flat = lambda x: {a.tobytes() for a in x}
  assert len(flat(x_train) & flat(x_test)) < 5  # only the few duplicate digits can repeat
  with pytest.raises(ValueError, match="splits"):
    datasets.load_arrays(digits_config().data, "validation")


def sample_windows(key, n, h, w, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  keys = jax.random.split(key, n)
  fn = jax.jit(jax.vmap(lambda k: geometry.sample_crop_window(k, h, w, scale, ratio)))
  return np.asarray(fn(keys))


def torchvision_areas(rng, n, h, w, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  """Area fractions of RandomResizedCrop.get_params (10 attempts, then the whole image)."""
  out = np.ones(n)
  for i in range(n):
    for _ in range(10):
      area = h * w * rng.uniform(*scale)
      aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
      cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
      if 0 < cw <= w and 0 < ch <= h:
        out[i] = cw * ch / (h * w)
        break
  return out


def test_crop_windows_respect_bounds_and_match_torchvision_areas():
  n, h, w = 20000, 40, 60
  y, x, hh, ww = sample_windows(jax.random.key(0), n, h, w).T
  assert (y >= 0).all() and (x >= 0).all() and (y + hh <= h).all() and (x + ww <= w).all()
  assert (y == np.round(y)).all() and (hh >= 1).all()  # whole pixels
  area = hh * ww / (h * w)
  assert area.min() >= 0.06 and area.max() <= 1.0
  assert (np.abs(np.log(ww / hh)) <= np.log(4 / 3) + 0.1).mean() > 0.99  # pixel rounding
  # On a square image, wide and tall crops are equally likely; the area distribution (with
  # its rejections of large crops) matches a direct simulation of torchvision's sampler.
  sq = sample_windows(jax.random.key(1), n, 50, 50)
  log_aspect = np.log(sq[:, 3] / sq[:, 2])
  assert abs(np.mean(log_aspect > 0) - np.mean(log_aspect < 0)) < 8 * np.sqrt(0.25 / n) + 0.02
  want = torchvision_areas(np.random.default_rng(2), n, 50, 50)
  got = sq[:, 2] * sq[:, 3] / 2500
  assert abs(got.mean() - want.mean()) < 4 * want.std() / np.sqrt(n) * np.sqrt(2)
  # Crops start anywhere they fit: the corner's mean is in the middle of its range.
  free = 50 - sq[:, 2]
  assert abs(np.mean(sq[:, 0] - free / 2)) < 4 * np.std(free) / np.sqrt(12 * n) + 0.3


def test_crop_area_and_log_aspect_are_uniform_when_every_attempt_fits():
  n, side, scale = 20000, 1000, (0.08, 0.5)  # largest crop: 0.5 * 4/3 of the area fits
  win = sample_windows(jax.random.key(3), n, side, side, scale=scale)
  area = win[:, 2] * win[:, 3] / side ** 2
  log_aspect = np.log(win[:, 3] / win[:, 2])
  for sample, lo, hi in ((area, *scale), (log_aspect, np.log(3 / 4), np.log(4 / 3))):
    deciles = np.quantile(sample, np.linspace(0.1, 0.9, 9))
    np.testing.assert_allclose(deciles, np.linspace(lo, hi, 11)[1:-1], atol=0.02 * (hi - lo))


def test_fallback_is_centre_crop_with_clamped_aspect():
  fallback = geometry._fallback_window  # pylint: disable=protected-access
  assert fallback(10, 100, (3 / 4, 4 / 3)) == (10, 13)
  assert fallback(100, 10, (3 / 4, 4 / 3)) == (13, 10)
  # A 1 x 100 strip admits no crop in (3/4, 4/3) of at least 8% of its area: centre fallback.
  y, x, h, w = sample_windows(jax.random.key(0), 16, 1, 100)[0]
  assert (y, x, h, w) == (0, 49, 1, 1)


@pytest.mark.parametrize("window,size", [((3, 5, 8, 8), 8), ((0, 0, 20, 30), 7),
                                         ((2, 4, 13, 9), 24), ((5, 1, 15, 27), 11)])
def test_crop_and_resize_equals_resizing_the_cropped_image(window, size):
  img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
  y, x, h, w = window
  want = jax.image.resize(img[y:y + h, x:x + w].astype(np.float32), (size, size, 3), "cubic",
                          antialias=True)
  got = geometry.crop_and_resize(img, np.array(window, np.float32), size)
  np.testing.assert_allclose(got, want, atol=1e-2)


def test_crop_resamples_exactly_the_window():
  img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
  same_size = geometry.crop_and_resize(img, np.array([3.0, 5.0, 8.0, 8.0]), 8)
  np.testing.assert_allclose(same_size, img[3:11, 5:13], atol=1e-3)  # scale 1: identity
  # Shrinking a window 2x averages it (antialiased) and never reads outside the window.
  striped = np.zeros((20, 30, 3), np.uint8)
  striped[:, 10:20] = 200
  inside = geometry.crop_and_resize(striped, np.array([0.0, 10.0, 20.0, 10.0]), 5)
  np.testing.assert_allclose(inside, 200, atol=1e-3)
  crop = jax.jit(lambda k, x: geometry.random_resized_crop(k, x, 16, (0.08, 1.0), (3 / 4, 4 / 3)))(
      jax.random.key(0), img)
  assert crop.shape == (16, 16, 3) and crop.dtype == np.uint8


def test_source_is_deterministic_resumable_and_sharded():
  mesh = parallel.make_mesh()
  c = digits_config()
  source = in_memory.MemoryViewSource(c, mesh)
  stream = source.iterate(0)
  batches = [jax.device_get(next(stream)) for _ in range(4)]
  assert batches[0]["view_a"].shape == (64, 8, 8, 3) and batches[0]["view_a"].dtype == np.uint8
  assert not np.array_equal(batches[0]["view_a"], batches[0]["view_b"])
  assert not np.array_equal(batches[0]["view_a"], batches[1]["view_a"])
  resumed = in_memory.MemoryViewSource(c, mesh).iterate(2)
  for want in batches[2:]:
    got = jax.device_get(next(resumed))
    np.testing.assert_array_equal(got["view_a"], want["view_a"])
  batch = next(in_memory.MemoryViewSource(c, mesh).iterate(0))
  assert batch["view_a"].sharding.is_equivalent_to(parallel.batch_sharding(mesh), 4)
  assert source.steps_per_epoch == len(datasets.load_arrays(c.data, "train")[0]) // 64


def test_other_seed_gives_other_batches():
  mesh = parallel.make_mesh()
  a = jax.device_get(next(in_memory.MemoryViewSource(digits_config(), mesh).iterate()))
  b = jax.device_get(next(in_memory.MemoryViewSource(digits_config(seed=1), mesh).iterate()))
  assert not np.array_equal(a["view_a"], b["view_a"])


def test_npz_and_bad_inputs(tmp_path):
  gray = np.random.default_rng(0).integers(0, 256, (5, 6, 7), dtype=np.uint8)
  np.savez(tmp_path / "d.npz", images=gray, labels=np.arange(5),
           test_images=np.ones((2, 6, 7, 3), np.float32))
  c = digits_config()
  c.data.name, c.data.path = "npz", str(tmp_path / "d.npz")
  x, y = datasets.load_arrays(c.data, "train")
  assert x.shape == (5, 6, 7, 3) and (x[..., 0] == x[..., 2]).all() and list(y) == list(range(5))
  np.testing.assert_array_equal(x[..., 1], gray)
  x_test, y_test = datasets.load_arrays(c.data, "test")  # test_images: floats in [0, 1]
  assert (x_test == 255).all() and list(y_test) == [0, 0]
  rgba = np.arange(2 * 4 * 4 * 4).reshape(2, 4, 4, 4).astype(np.uint8)
  np.testing.assert_array_equal(datasets.to_rgb_uint8(rgba), rgba[..., :3])
  with pytest.raises(ValueError, match="channels|shape"):
    datasets.to_rgb_uint8(np.zeros((2, 4, 4, 2), np.uint8))
  c.data.name = "imagenet21k"
  with pytest.raises(ValueError, match="Unknown in-memory dataset"):
    datasets.load_arrays(c.data, "train")
  c.data.name, c.data.path = "npz", ""
  with pytest.raises(FileNotFoundError, match="data.path"):
    datasets.load_arrays(c.data, "train")
  with pytest.raises(ValueError, match="larger than"):
    in_memory.MemoryViewSource(digits_config(batch_size=4096), parallel.make_mesh())
  with pytest.raises(ValueError, match="divisible"):
    in_memory.MemoryViewSource(digits_config(batch_size=60), parallel.make_mesh())


def test_create_view_source_dispatches_on_data_source():
  from vicreg_jax import data  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh()
  source = data.create_view_source(digits_config(), mesh)
  assert isinstance(source, in_memory.MemoryViewSource) and source.steps_per_epoch == 1438 // 64
  np.testing.assert_array_equal(
      jax.device_get(next(source.iterate(3))["view_b"]),
      jax.device_get(next(in_memory.MemoryViewSource(digits_config(), mesh).iterate(3))["view_b"]))
  c = digits_config()
  c.data.source = "s3"
  with pytest.raises(ValueError, match="data.source"):
    data.create_view_source(c, mesh)


def test_synthetic_source_for_benchmarks():
  from vicreg_jax import data  # pylint: disable=g-import-not-at-top
  c = digits_config()
  c.data.source = "synthetic"
  mesh = parallel.make_mesh()
  source = data.create_view_source(c, mesh)
  batch = next(source.iterate(5))
  assert batch["view_b"].shape == (64, 8, 8, 3) and batch["view_b"].dtype == np.uint8
  assert batch["view_a"].sharding.is_equivalent_to(parallel.batch_sharding(mesh), 4)
  assert source.steps_per_epoch == 100
