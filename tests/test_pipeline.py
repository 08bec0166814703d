"""Streaming tf.data pipeline, offline: mocked tfds ImageNet and a generated image folder."""

import io

import numpy as np
import pytest

from vicreg_jax import config as config_lib
from vicreg_jax import parallel
from vicreg_jax.data import pipeline

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")


def stream_config(**data):
  c = config_lib.base_config()
  c.augment = config_lib.augment_recipe("official", image_size=24)
  c.batch_size = 8
  c.data.shuffle_buffer = 16
  for k, v in data.items():
    c.data[k] = v
  return c


def take(ds, n):
  it = ds.as_numpy_iterator()
  return [next(it) for _ in range(n)]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  for cls in ("cat", "dog"):
    (root / cls).mkdir()
    for i in range(6):
      img = rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)
      (root / cls / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(img).numpy())
  gray = rng.integers(0, 256, (20, 20, 1), dtype=np.uint8)
  (root / "cat" / "gray.png").write_bytes(tf.io.encode_png(gray).numpy())
  rgba = rng.integers(0, 256, (20, 20, 4), dtype=np.uint8)
  (root / "dog" / "rgba.png").write_bytes(tf.io.encode_png(rgba).numpy())
  (root / "dog" / "notes.txt").write_text("not an image")
  (root / "cat" / "broken.jpg").write_bytes(b"garbage bytes")
  (root / "dog" / "truncated.jpg").write_bytes(
      tf.io.encode_jpeg(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).numpy()[:40])
  return str(root)


def test_folder_pipeline_shapes_determinism_and_resume(image_folder):
  c = stream_config(source="folder", path=image_folder)
  ds, n = pipeline.build_dataset(c, start_step=0, process_index=0, process_count=1)
  assert n == 14  # 12 JPEGs, gray and RGBA PNGs; text, garbage and truncated files skipped
  batches = take(ds, 4)
  assert batches[0]["view_a"].shape == (8, 24, 24, 3) and batches[0]["view_a"].dtype == np.uint8
  assert not np.array_equal(batches[0]["view_a"], batches[0]["view_b"])  # own crop per view
  again = take(pipeline.build_dataset(c, start_step=0, process_index=0, process_count=1)[0], 2)
  np.testing.assert_array_equal(again[1]["view_b"], batches[1]["view_b"])
  resumed = take(pipeline.build_dataset(c, start_step=2, process_index=0, process_count=1)[0], 2)
  for got, want in zip(resumed, batches[2:]):
    np.testing.assert_array_equal(got["view_a"], want["view_a"])


def test_folder_shards_are_disjoint_and_equal(image_folder):
  shards = [pipeline.list_image_files(image_folder, i, 2) for i in range(2)]
  assert len(shards[0]) == len(shards[1]) == 7 and not set(shards[0]) & set(shards[1])


def test_mock_imagenet_through_skip_decoding():
  c = stream_config(source="tfds", name="imagenet2012", num_examples=20)
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    ds, n = pipeline.build_dataset(c, start_step=0, process_index=0, process_count=1)
    first = take(ds, 3)
    resumed = take(pipeline.build_dataset(c, start_step=1, process_index=0,
                                          process_count=1)[0], 1)
  assert n == 20 and first[0]["view_a"].shape == (8, 24, 24, 3)
  assert first[0]["view_a"].std() > 0  # real decoded pixels
  np.testing.assert_array_equal(resumed[0]["view_b"], first[1]["view_b"])


def test_source_yields_global_sharded_arrays(image_folder):
  c = stream_config(source="folder", path=image_folder)
  mesh = parallel.make_mesh()
  batch = next(pipeline.StreamingViewSource(c, mesh, start_step=0))
  assert batch["view_a"].shape == (8, 24, 24, 3)
  assert batch["view_a"].sharding.is_equivalent_to(parallel.batch_sharding(mesh), 4)


def test_missing_data_is_a_clear_error(tmp_path):
  c = stream_config(source="tfds", name="imagenet2012", data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="tfds build imagenet2012"):
    pipeline.build_dataset(c, start_step=0, process_index=0, process_count=1)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    pipeline.list_image_files(str(tmp_path / "nope"))
