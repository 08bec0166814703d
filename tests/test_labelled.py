"""Labelled in-memory sources: epochs, padding, crops and label subsets."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vicreg_jax import config as config_lib
from vicreg_jax import parallel
from vicreg_jax import data
from vicreg_jax.data import geometry

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"
N_TRAIN, N_TEST, SIDE = 50, 21, 12


@pytest.fixture(scope="module")
def npz_config(tmp_path_factory):
  """An .npz whose image i is constant with value i in all channels (ids readable back)."""
  path = tmp_path_factory.mktemp("npz") / "data.npz"
  rng = np.random.default_rng(0)
  make = lambda n, offset: np.broadcast_to(
      (np.arange(n) + offset).astype(np.uint8)[:, None, None, None], (n, SIDE, SIDE, 3))
  np.savez(path, train_images=make(N_TRAIN, 0), train_labels=rng.integers(0, 4, N_TRAIN),
           train_ids=[f"img{i}" for i in range(N_TRAIN)],
           test_images=make(N_TEST, 100), test_labels=rng.integers(0, 4, N_TEST))
  c = config_lib.load_config_file(f"{CONFIG_DIR}/demo.py:tiny")
  c.data.name, c.data.path = "npz", str(path)
  c.eval.transform = config_lib.eval_transform(SIDE, SIDE)
  return c


def pixel_ids(batch):
  """Example ids of the real rows of a batch (the constant pixel value)."""
  real = np.asarray(batch["weight"]) > 0
  return np.asarray(batch["image"])[real, SIDE // 2, SIDE // 2, 0].astype(int)


def test_eval_epoch_covers_every_example_once_in_order(npz_config):
  mesh = parallel.make_mesh()
  source = data.create_labelled_source(npz_config, mesh, split="test", train=False,
                                       batch_size=8)
  batches = list(source.epoch(0))
  assert source.num_examples == N_TEST and len(batches) == source.steps_per_epoch == 3
  assert batches[0]["image"].shape == (8, SIDE, SIDE, 3) and batches[0]["image"].dtype == jnp.uint8
  assert batches[0]["image"].sharding.spec == parallel.batch_sharding(mesh).spec
  ids = np.concatenate([pixel_ids(b) for b in batches])
  np.testing.assert_array_equal(ids, np.arange(N_TEST) + 100)
  assert float(sum(b["weight"].sum() for b in batches)) == N_TEST
  # Same-size evaluation crop leaves the image unchanged.
  assert len(np.unique(np.asarray(batches[0]["image"])[0])) == 1


def test_train_epochs_shuffle_differently_and_reproducibly(npz_config):
  mesh = parallel.make_mesh()
  make = lambda: data.create_labelled_source(npz_config, mesh, split="train", train=True,
                                             batch_size=8)
  order = lambda source, e: np.concatenate([pixel_ids(b) for b in source.epoch(e)])
  first, again = make(), make()
  e0, e1 = order(first, 0), order(first, 1)
  assert sorted(e0) == list(range(N_TRAIN)) and sorted(e1) == list(range(N_TRAIN))
  assert not np.array_equal(e0, e1)
  np.testing.assert_array_equal(e0, order(again, 0))


def test_center_window_is_resize_then_center_crop():
  transform = config_lib.eval_transform(224, 256)
  y, x, h, w = geometry.center_window(300, 400, transform)
  assert h == w == pytest.approx(300 * 224 / 256)
  assert y == pytest.approx((300 - h) / 2) and x == pytest.approx((400 - w) / 2)


def test_pad_random_crop_is_a_shifted_window_of_the_padded_image():
  image = jnp.arange(6 * 6 * 3, dtype=jnp.uint8).reshape(6, 6, 3) + 1
  crops = [np.asarray(geometry.pad_random_crop(jax.random.key(s), image, 2)) for s in range(20)]
  padded = np.pad(np.asarray(image), ((2, 2), (2, 2), (0, 0)))
  windows = {(i, j) for i in range(5) for j in range(5)}
  for crop in crops:
    assert any(np.array_equal(crop, padded[i:i + 6, j:j + 6]) for i, j in windows)
  assert len({c.tobytes() for c in crops}) > 3


def test_random_resized_train_crops_flip_and_vary():
  transform = config_lib.eval_transform(8, 8)
  ramp = jnp.broadcast_to(jnp.arange(16, dtype=jnp.uint8)[None, :, None] * 15, (16, 16, 3))
  images = jnp.stack([ramp] * 64)
  out = np.asarray(geometry.transform_images(jax.random.key(0), images, transform, train=True))
  assert out.shape == (64, 8, 8, 3)
  rising = out[:, 4, -1, 0] > out[:, 4, 0, 0]
  assert 0.25 < rising.mean() < 0.75  # about half flipped
  assert len({o.tobytes() for o in out}) > 32


def test_check_transform_errors():
  with pytest.raises(ValueError, match="train_crop"):
    geometry.check_transform(config_lib.eval_transform(8, 8, "random_crop"), (8, 8, 3))
  with pytest.raises(ValueError, match="needs images of 32 px"):
    geometry.check_transform(config_lib.eval_transform(32, 32, "pad_random"), (8, 8, 3))


def test_subsets_by_fraction_and_by_ids(npz_config, tmp_path):
  ids = [f"img{i}" for i in range(N_TRAIN)]
  picked = data.select_indices(ids, data.Subset(fraction=0.1, seed=3))
  assert len(picked) == 5 and np.all(np.diff(picked) > 0)
  np.testing.assert_array_equal(picked, data.select_indices(ids, data.Subset(
      fraction=0.1, seed=3)))
  assert not np.array_equal(picked, data.select_indices(ids, data.Subset(
      fraction=0.1, seed=4)))

  subset_file = tmp_path / "subset.txt"
  subset_file.write_text("img3\n\nimg7\nimg41\n")
  npz_config.eval.finetune.subset_file = str(subset_file)
  subset = data.subset_from_config(npz_config.eval.finetune)
  source = data.create_labelled_source(npz_config, parallel.make_mesh(), split="train",
                                       train=False, batch_size=8, subset=subset)
  assert source.num_examples == 3
  np.testing.assert_array_equal(pixel_ids(next(source.epoch(0))), [3, 7, 41])

  with pytest.raises(ValueError, match="names an example"):
    data.select_indices(ids, data.Subset(ids=frozenset({"n0144_1.JPEG"})))
  npz_config.eval.finetune.subset_file = str(tmp_path / "missing.txt")
  with pytest.raises(FileNotFoundError, match="subset_file"):
    data.subset_from_config(npz_config.eval.finetune)
  npz_config.eval.finetune.subset_file = ""
  npz_config.eval.finetune.subset_fraction = 0.0
  with pytest.raises(ValueError, match="subset_fraction"):
    data.subset_from_config(npz_config.eval.finetune)
