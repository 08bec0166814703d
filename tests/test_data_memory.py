"""In-memory view source: crops, determinism, resume position, sharding, loading errors."""

import jax
import numpy as np
import pytest

from vicreg_jax import config as config_lib
from vicreg_jax import parallel
from vicreg_jax.data import memory


def digits_config(**kw):
  c = config_lib.base_config()
  c.data.source, c.data.name = "memory", "digits"
  c.augment = config_lib.augment_recipe("cifar", image_size=8)
  c.batch_size = 64
  for k, v in kw.items():
    c[k] = v
  return c


def test_digits_split_is_deterministic_and_disjoint():
  x_train, y_train = memory.load_arrays(digits_config().data, "train")
  x_test, _ = memory.load_arrays(digits_config().data, "test")
  assert x_train.shape[1:] == (8, 8, 3) and x_train.dtype == np.uint8
  assert len(x_train) + len(x_test) == 1797 and len(x_test) == 359
  assert set(np.unique(y_train)) == set(range(10))
  assert x_train.max() == 255
  x_again, _ = memory.load_arrays(digits_config().data, "train")
  np.testing.assert_array_equal(x_again, x_train)


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


def test_crop_windows_respect_bounds_and_distribution():
  n, h, w = 20000, 40, 60
  win = np.asarray(memory.sample_crop_windows(jax.random.key(0), n, h, w, (0.08, 1.0),
                                              (3 / 4, 4 / 3)))
  y, x, hh, ww = win.T
  assert (y >= 0).all() and (x >= 0).all() and (y + hh <= h).all() and (x + ww <= w).all()
  area = hh * ww / (h * w)
  assert area.min() >= 0.06 and area.max() <= 1.0
  aspect = np.log(ww / hh)
  inside = np.abs(aspect) <= np.log(4 / 3) + 0.1  # rounding to whole pixels
  assert inside.mean() > 0.99
  # On a square image, wide and tall crops are equally likely (log-aspect ~ uniform);
  # on a wide image, rejection of tall high-area crops skews this, as in torchvision.
  sq = np.asarray(memory.sample_crop_windows(jax.random.key(1), n, 50, 50, (0.08, 1.0),
                                             (3 / 4, 4 / 3)))
  wide = np.log(sq[:, 3] / sq[:, 2])
  assert abs(np.mean(wide > 0) - np.mean(wide < 0)) < 8 * np.sqrt(0.25 / n) + 0.02
  want = torchvision_areas(np.random.default_rng(2), n, 50, 50)
  got = sq[:, 2] * sq[:, 3] / 2500
  assert abs(got.mean() - want.mean()) < 4 * want.std() / np.sqrt(n) * np.sqrt(2)


def test_fallback_is_centre_crop_with_clamped_aspect():
  assert memory._fallback_window(10, 100, (3 / 4, 4 / 3)) == (10, 13)  # pylint: disable=protected-access
  assert memory._fallback_window(100, 10, (3 / 4, 4 / 3)) == (13, 10)  # pylint: disable=protected-access


def test_source_is_deterministic_resumable_and_sharded():
  mesh = parallel.make_mesh()
  c = digits_config()
  source = memory.MemoryViewSource(c, mesh, start_step=0)
  batches = [jax.device_get(next(source)) for _ in range(4)]
  assert batches[0]["view_a"].shape == (64, 8, 8, 3) and batches[0]["view_a"].dtype == np.uint8
  assert not np.array_equal(batches[0]["view_a"], batches[0]["view_b"])
  assert not np.array_equal(batches[0]["view_a"], batches[1]["view_a"])
  resumed = memory.MemoryViewSource(c, mesh, start_step=2)
  for want in batches[2:]:
    got = jax.device_get(next(resumed))
    np.testing.assert_array_equal(got["view_a"], want["view_a"])
  batch = next(memory.MemoryViewSource(c, mesh, start_step=0))
  assert batch["view_a"].sharding.is_equivalent_to(parallel.batch_sharding(mesh), 4)
  assert source.steps_per_epoch == len(memory.load_arrays(c.data, "train")[0]) // 64


def test_other_seed_gives_other_batches():
  mesh = parallel.make_mesh()
  a = jax.device_get(next(memory.MemoryViewSource(digits_config(), mesh)))
  b = jax.device_get(next(memory.MemoryViewSource(digits_config(seed=1), mesh)))
  assert not np.array_equal(a["view_a"], b["view_a"])


def test_npz_and_bad_inputs(tmp_path):
  gray = np.random.default_rng(0).integers(0, 256, (5, 6, 7), dtype=np.uint8)
  np.savez(tmp_path / "d.npz", images=gray, labels=np.arange(5))
  c = digits_config()
  c.data.name, c.data.path = "npz", str(tmp_path / "d.npz")
  x, y = memory.load_arrays(c.data, "train")
  assert x.shape == (5, 6, 7, 3) and (x[..., 0] == x[..., 2]).all() and list(y) == list(range(5))
  rgba = np.zeros((2, 4, 4, 4), np.uint8)
  assert memory.to_rgb_uint8(rgba).shape == (2, 4, 4, 3)
  c.data.name = "imagenet21k"
  with pytest.raises(ValueError, match="Unknown in-memory dataset"):
    memory.load_arrays(c.data, "train")
  c.data.name, c.data.path = "npz", ""
  with pytest.raises(FileNotFoundError, match="data.path"):
    memory.load_arrays(c.data, "train")
  with pytest.raises(ValueError, match="larger than"):
    memory.MemoryViewSource(digits_config(batch_size=4096), parallel.make_mesh())


def test_synthetic_source_for_benchmarks():
  from vicreg_jax import data  # pylint: disable=g-import-not-at-top
  c = digits_config()
  c.data.source = "synthetic"
  mesh = parallel.make_mesh()
  source = data.create_view_source(c, mesh, start_step=5)
  batch = next(source)
  assert batch["view_b"].shape == (64, 8, 8, 3) and batch["view_b"].dtype == np.uint8
  assert batch["view_a"].sharding.is_equivalent_to(parallel.batch_sharding(mesh), 4)
  assert source.steps_per_epoch == 100
