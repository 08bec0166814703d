"""Streaming tf.data pipeline, offline: mocked tfds ImageNet and a generated image folder."""

import jax
import numpy as np
import pytest

from vicreg_jax import config as config_lib
from vicreg_jax import parallel
from vicreg_jax.data import folders, geometry

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")
from vicreg_jax.data import tf_input  # pylint: disable=g-import-not-at-top,wrong-import-position

# Folder images carry their id in the green channel (id * ID_STEP + ID_STEP / 2, flat), so
# the file behind any crop can be read back from its pixels.
ID_STEP = 16
NUM_JPEGS = 12  # plus a gray and an RGBA PNG: 14 readable images


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


def ids(batches, view="view_a"):
  """Image ids of the examples of a list of batches, in stream order."""
  green = np.concatenate([b[view][..., 1] for b in batches]).reshape(-1, 24 * 24)
  return np.round((np.median(green, axis=1) - ID_STEP / 2) / ID_STEP).astype(int)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)

  def image(i, h, w, channels=3):
    img = np.full((h, w, channels), ID_STEP * i + ID_STEP // 2, np.uint8)
    if channels >= 3:  # texture in red so that different crops differ
      img[..., 0] = rng.integers(0, 256, (h, 1)) + np.arange(w) % 7
    return img

  for cls in ("cat", "dog"):
    (root / cls).mkdir()
  for i in range(NUM_JPEGS):
    img = image(i, 30 + i, 40)
    (root / ("cat", "dog")[i % 2] / f"{i:02d}.jpg").write_bytes(
        tf.io.encode_jpeg(img, quality=100, chroma_downsampling=False).numpy())
  (root / "cat" / "gray.png").write_bytes(tf.io.encode_png(image(12, 20, 20, 1)).numpy())
  (root / "dog" / "rgba.png").write_bytes(tf.io.encode_png(image(13, 20, 20, 4)).numpy())
  (root / "dog" / "notes.txt").write_text("not an image")
  (root / "cat" / "broken.jpg").write_bytes(b"garbage bytes")
  (root / "dog" / "truncated.jpg").write_bytes(tf.io.encode_jpeg(image(0, 20, 20)).numpy()[:40])
  return str(root)


def folder_dataset(folder, start_step=0, process_index=0, process_count=1, **kw):
  c = stream_config(source="folder", path=folder)
  for k, v in kw.items():
    c[k] = v
  return tf_input.build_dataset(c, start_step=start_step, process_index=process_index,
                                process_count=process_count)


def test_folder_stream_visits_every_image_once_per_epoch(image_folder):
  ds, n = folder_dataset(image_folder)
  assert n == 14  # 12 JPEGs, gray and RGBA PNGs; text, garbage and truncated files skipped
  batches = take(ds, 7)  # 56 examples: 4 epochs
  assert batches[0]["view_a"].shape == (8, 24, 24, 3) and batches[0]["view_a"].dtype == np.uint8
  stream = ids(batches)
  np.testing.assert_array_equal(stream, ids(batches, "view_b"))  # both views of one image
  epochs = stream.reshape(4, 14)
  for epoch in epochs:
    assert sorted(epoch) == list(range(14))
  assert len({tuple(e) for e in epochs}) == 4  # reshuffled every epoch
  assert not np.array_equal(batches[0]["view_a"], batches[0]["view_b"])  # own crop per view
  assert ids(take(folder_dataset(image_folder, seed=1)[0], 2)).tolist() != stream[:16].tolist()


def test_gray_and_rgba_pngs_become_rgb(image_folder):
  batches = take(folder_dataset(image_folder)[0], 2)
  views = np.concatenate([b["view_a"] for b in batches])
  gray = views[ids(batches) == 12]
  assert len(gray) == 1 and (gray[..., 0] == gray[..., 2]).all()
  assert len(views[ids(batches) == 13]) == 1


@pytest.mark.parametrize("start_step", [1, 2, 5])
def test_resume_equals_the_uninterrupted_stream(image_folder, start_step):
  """Also across epoch boundaries (14 images, 8 per step)."""
  full = take(folder_dataset(image_folder)[0], start_step + 2)
  resumed = take(folder_dataset(image_folder, start_step=start_step)[0], 2)
  for got, want in zip(resumed, full[start_step:]):
    for view in ("view_a", "view_b"):
      np.testing.assert_array_equal(got[view], want[view])


def test_process_shards_are_disjoint_equal_and_cover_classes(image_folder):
  shards = [folders.list_image_files(image_folder, i, 2) for i in range(2)]
  assert len(shards[0]) == len(shards[1]) == 7 and not set(shards[0]) & set(shards[1])
  for shard in shards:
    assert {p.split("/")[-2] for p in shard} == {"cat", "dog"}
  epoch = [ids(take(folder_dataset(image_folder, process_index=i, process_count=2)[0], 2))[:7]
           for i in range(2)]  # 4 per process and step; first 7 = one epoch of the shard
  assert sorted(epoch[0].tolist() + epoch[1].tolist()) == list(range(14))


def test_tf_crop_windows_follow_torchvision_like_the_device_sampler():
  n, h, w = 4000, 50, 80
  scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
  sample = lambda i: tf_input.sample_crop_window(tf.constant([h, w, 3]),
                                                 tf.stack([tf.constant(7, tf.int64), i]),
                                                 scale, ratio)
  win = next(tf.data.Dataset.range(n).map(sample).batch(n).as_numpy_iterator())
  y, x, hh, ww = win.T
  assert (y >= 0).all() and (x >= 0).all() and (y + hh <= h).all() and (x + ww <= w).all()
  ref = np.asarray(jax.vmap(lambda k: geometry.sample_crop_window(k, h, w, scale, ratio))(
      jax.random.split(jax.random.key(0), n)))
  for stat in (lambda v: v[:, 2] * v[:, 3] / (h * w), lambda v: np.log(v[:, 3] / v[:, 2])):
    a, b = stat(win.astype(float)), stat(ref)
    assert abs(a.mean() - b.mean()) < 4 * np.sqrt((a.var() + b.var()) / n)
    assert abs(a.std() - b.std()) < 0.1 * b.std()
  # Fallback: no crop of a 1 x 100 strip fits, so the centre 1 x 1 (aspect clamped).
  strip = tf_input.sample_crop_window(tf.constant([1, 100]), tf.constant([0, 0], tf.int64),
                                      scale, ratio)
  assert strip.numpy().tolist() == [0, 49, 1, 1]


def test_mock_imagenet_through_skip_decoding():
  c = stream_config(source="tfds", name="imagenet2012")
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    ds, n = tf_input.build_dataset(c, start_step=0, process_index=0, process_count=1)
    first = take(ds, 4)
    resumed = take(tf_input.build_dataset(c, start_step=3, process_index=0,
                                          process_count=1)[0], 1)
    other = take(tf_input.build_dataset(c, start_step=0, process_index=1,
                                        process_count=2)[0], 1)
  assert n == 20 and first[0]["view_a"].shape == (8, 24, 24, 3)
  assert first[0]["view_a"].std() > 0  # real decoded pixels
  np.testing.assert_array_equal(resumed[0]["view_b"], first[3]["view_b"])  # epoch 2, offset 4
  assert other[0]["view_a"].shape == (4, 24, 24, 3)  # per-process batch


def test_source_yields_global_sharded_arrays_with_device_prefetch(image_folder):
  c = stream_config(source="folder", path=image_folder)
  mesh = parallel.make_mesh()
  want = take(tf_input.build_dataset(c, start_step=0, process_index=0, process_count=1)[0], 4)
  for depth in (0, 2):
    c.data.device_prefetch = depth
    source = tf_input.StreamingViewSource(c, mesh)
    assert source.num_examples == 14 and source.steps_per_epoch == 1
    batches = source.iterate(0)
    for expected in want:
      batch = next(batches)
      assert batch["view_a"].shape == (8, 24, 24, 3)
      assert batch["view_a"].sharding.is_equivalent_to(parallel.batch_sharding(mesh), 4)
      np.testing.assert_array_equal(jax.device_get(batch["view_b"]), expected["view_b"])


def test_missing_data_is_a_clear_error(tmp_path):
  c = stream_config(source="tfds", name="imagenet2012", data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match=f"looked in {tmp_path}.*tfds build imagenet2012"):
    tf_input.build_dataset(c, start_step=0, process_index=0, process_count=1)
  c.data.name = "imagenet_typo"
  with pytest.raises(ValueError, match="not a tfds dataset name"):
    tf_input.build_dataset(c, start_step=0, process_index=0, process_count=1)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    folders.list_image_files(str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="not prepared"):
    tf_input.load_tfds_arrays("cifar10", "train", str(tmp_path))
  with pytest.raises(ValueError, match="divisible"):
    c.batch_size = 9
    tf_input.build_dataset(c, start_step=0, process_index=0, process_count=2)


def test_undecodable_records_are_dropped_and_only_a_whole_empty_epoch_ends_the_stream():
  """Epochs as the streams build them: a resumed stream's partial first epoch may decode
  nothing; a whole epoch that decodes nothing ends the stream (the sources then raise)."""
  size = 4
  epochs = [["x", "x"], ["1", "x", "2", "x"], ["x"] * size, ["3"] * size]  # first: resumed
  records = tf.data.Dataset.from_tensor_slices(sum(epochs, []))
  lengths = tf.constant([len(e) for e in epochs], tf.int64)
  starts = tf.cumsum(lengths, exclusive=True)

  def epoch(e):
    return tf_input._decoded_epoch(  # pylint: disable=protected-access
        records.skip(starts[e]).take(lengths[e]), lambda r: tf.strings.to_number(r, tf.int32),
        expected=lengths[e], epoch=e, empty=tf.constant(0))

  stream = tf_input._skip_undecodable(  # pylint: disable=protected-access
      tf.data.Dataset.range(len(epochs)).flat_map(epoch), "root", size)
  assert list(stream.as_numpy_iterator()) == [1, 2]
