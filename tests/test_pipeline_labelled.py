"""Streaming labelled batches (tf.data) for the probe and fine-tuning: folders and tfds."""

import numpy as np
import pytest

from vicreg_jax import config as config_lib
from vicreg_jax import parallel
from vicreg_jax import data

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")
from vicreg_jax.data import tf_input  # pylint: disable=g-import-not-at-top,wrong-import-position

ID_STEP = 12  # image i has green value i * ID_STEP + ID_STEP / 2 everywhere
SIDE = 16


def write_split(root, count, offset):
  for cls in ("ant", "bee"):
    (root / cls).mkdir(parents=True)
  for i in range(count):
    img = np.zeros((20 + i % 3, 24, 3), np.uint8)
    img[..., 1] = ID_STEP * (i + offset) + ID_STEP // 2
    img[..., 0] = np.arange(24)[None, :] * 10  # a ramp, to see flips
    (root / ("ant", "bee")[i % 2] / f"im{i + offset:02d}.png").write_bytes(
        tf.io.encode_png(img).numpy())


@pytest.fixture(scope="module")
def folder_config(tmp_path_factory):
  root = tmp_path_factory.mktemp("imagenet")
  write_split(root / "train", 14, 0)
  write_split(root / "val", 5, 14)
  c = config_lib.base_config()
  c.data.source, c.data.path = "folder", str(root / "train")
  c.eval.transform = config_lib.eval_transform(SIDE, SIDE + 2)
  return c


def ids_labels(batches):
  ids, labels = [], []
  for b in batches:
    real = np.asarray(b["weight"]) > 0
    green = np.asarray(b["image"])[real][..., 1].reshape(int(real.sum()), -1)
    ids += list(np.round((np.median(green, axis=1) - ID_STEP / 2) / ID_STEP).astype(int))
    labels += list(np.asarray(b["label"])[real])
  return ids, labels


def test_folder_eval_split_once_in_order_with_padding(folder_config):
  mesh = parallel.make_mesh()
  source = data.create_labelled_source(folder_config, mesh, split="val", train=False,
                                       batch_size=8)
  batches = list(source.epoch(0))
  assert (source.num_examples, source.num_classes, source.steps_per_epoch) == (5, 2, 1)
  assert batches[0]["image"].shape == (8, SIDE, SIDE, 3)
  assert batches[0]["image"].dtype == np.uint8
  assert batches[0]["image"].sharding.spec == parallel.batch_sharding(mesh).spec
  ids, labels = ids_labels(batches)
  assert sorted(ids) == list(range(14, 19))  # classes in folder order: ant then bee
  assert labels == [0, 0, 0, 1, 1] and float(batches[0]["weight"].sum()) == 5


def test_eval_crop_is_resize_then_center_crop():
  img = np.random.default_rng(0).integers(0, 256, (30, 40, 3), np.uint8)
  transform = config_lib.eval_transform(16, 20)
  got = tf_input._eval_crop(tf.io.encode_png(img), transform).numpy()
  resized = tf.image.resize(img.astype(np.float32), (20, 27), "bilinear", antialias=True)
  want = np.clip(np.round(resized.numpy()[2:18, 6:22]), 0, 255).astype(np.uint8)
  np.testing.assert_array_equal(got, want)


def test_folder_train_epochs_shuffle_crop_and_flip(folder_config):
  mesh = parallel.make_mesh()
  make = lambda: data.create_labelled_source(folder_config, mesh, split="train",
                                             train=True, batch_size=8)
  source = make()
  e0, e1 = list(source.epoch(0)), list(source.epoch(1))
  ids0, ids1 = ids_labels(e0)[0], ids_labels(e1)[0]
  assert sorted(ids0) == sorted(ids1) == list(range(14)) and ids0 != ids1
  assert ids_labels(list(make().epoch(0)))[0] == ids0  # reproducible
  images = np.concatenate([np.asarray(b["image"])[np.asarray(b["weight"]) > 0] for b in e0])
  rising = images[:, SIDE // 2, -1, 0].astype(int) > images[:, SIDE // 2, 0, 0]
  assert 0 < rising.sum() < len(rising)  # some flipped, some not


def test_folder_subsets(folder_config, tmp_path):
  mesh = parallel.make_mesh()
  subset = data.Subset(ids=frozenset({"im03.png", "im10.png"}))
  source = data.create_labelled_source(folder_config, mesh, split="train", train=False,
                                       batch_size=8, subset=subset)
  assert source.num_examples == 2 and sorted(ids_labels(source.epoch(0))[0]) == [3, 10]
  with pytest.raises(ValueError, match="names an example"):
    data.create_labelled_source(folder_config, mesh, split="train", train=False,
                                batch_size=8, subset=data.Subset(ids=frozenset({"x"})))
  fraction = data.create_labelled_source(folder_config, mesh, split="train", train=False,
                                         batch_size=8, subset=data.Subset(fraction=0.5))
  assert fraction.num_examples == 7


def test_missing_split_folder_and_pad_crop_size_are_clear(folder_config):
  with pytest.raises(FileNotFoundError, match="root/<split>"):
    data.create_labelled_source(folder_config, parallel.make_mesh(), split="test",
                                train=False, batch_size=8)
  config = folder_config.copy_and_resolve_references()
  config.eval.transform = config_lib.eval_transform(SIDE, SIDE, "pad_random")
  source = data.create_labelled_source(config, parallel.make_mesh(), split="val",
                                       train=True, batch_size=8)
  with pytest.raises(ValueError, match="train_crop='pad_random' needs images of 16 px.*"
                     "random_resized"):
    list(source.epoch(0))


def test_mock_tfds_eval_pass_with_labels_and_metadata_classes():
  c = config_lib.base_config()
  c.data.source, c.data.name = "tfds", "imagenet2012"
  c.eval.transform = config_lib.eval_transform(SIDE, SIDE + 4)
  with tfds.testing.mock_data(num_examples=19, policy=tfds.testing.MockPolicy.USE_CODE):
    source = data.create_labelled_source(c, parallel.make_mesh(), split="validation",
                                         train=False, batch_size=8)
    batches = list(source.epoch(0))
    assert (source.num_examples, source.num_classes, source.steps_per_epoch) == (19, 1000, 3)
    assert float(sum(b["weight"].sum() for b in batches)) == 19
    labels = np.concatenate([np.asarray(b["label"])[np.asarray(b["weight"]) > 0]
                             for b in batches])
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < 1000
    train = data.create_labelled_source(c, parallel.make_mesh(), split="train",
                                        train=True, batch_size=8,
                                        subset=data.Subset(fraction=0.5, seed=1))
    assert 0 < train.num_examples < 19
    assert next(iter(train.epoch(0)))["image"].shape == (8, SIDE, SIDE, 3)


def test_undecodable_images_become_padding_and_an_all_undecodable_split_is_refused(
    folder_config, tmp_path):
  """Files damaged inside (intact start and end markers) are dropped, their rows padded;
  a split none of whose images decodes is one ValueError naming the folder."""
  root = tmp_path / "root"
  write_split(root / "train", 4, 0)
  for i in range(3):
    (root / "train" / "ant" / f"bad{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage\xff\xd9")
  config = folder_config.copy_and_resolve_references()
  config.data.path = str(root / "train")
  source = data.create_labelled_source(config, parallel.make_mesh(), split="train",
                                       train=False, batch_size=8)
  batches = list(source.epoch(0))
  assert source.num_examples == 7 and len(batches) == 1
  assert sorted(ids_labels(batches)[0]) == [0, 1, 2, 3]
  for cls in ("ant", "bee"):
    for f in (root / "train" / cls).glob("im*.png"):
      f.unlink()
  source = data.create_labelled_source(config, parallel.make_mesh(), split="train",
                                       train=False, batch_size=8)
  with pytest.raises(ValueError, match=f"None of the 3 images of {root / 'train'} could be "
                     "decoded"):
    list(source.epoch(0))
