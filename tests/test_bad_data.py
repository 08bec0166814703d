"""Bad input data: the pixel and label contract of .npz files, unusable paths and layouts,
unlabelled or missing evaluation splits, and image folders that cannot be decoded, through
the library and the real CLIs (one line naming the path and the fix, exit 1, no traceback)."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, SUBPROCESS_TIMEOUT, TINY_RECIPE, cli_env
from vicreg_jax import config as config_lib
from vicreg_jax import parallel
from vicreg_jax.data import datasets, folders, in_memory

TINY = f"--config={TINY_RECIPE}"
N, SIDE = 32, 8


def npz_config(path):
  c = config_lib.load_config_file(f"{ROOT}/configs/demo.py:tiny")
  c.data.name, c.data.path = "npz", str(path)
  return c


def write_npz(path, **arrays):
  np.savez(path, **arrays)
  return path


def images(dtype=np.uint8, high=255):
  return (np.random.default_rng(0).random((N, SIDE, SIDE, 3)) * high).astype(dtype)


@pytest.mark.parametrize("pixels, match", [
    (images(np.float32, 255), r"float32 with values in \[0\.\d+, 254\.\d+\].*divide by 255"),
    (np.full((N, SIDE, SIDE, 3), np.nan, np.float32), "float32 with 6144 NaN/inf"),
    (images(np.int16, 1000), r"int16 with values in \[0, 9\d\d\].*\[0, 255\]"),
    (images(np.int32, 2) - 1, r"int32 with values in \[-1, 0\]"),
    (np.ones((N, SIDE, SIDE), bool), "bool; pixels must be uint8"),
])
def test_pixels_outside_the_contract_are_refused_naming_file_key_dtype_and_range(
    tmp_path, pixels, match):
  path = write_npz(tmp_path / "d.npz", train_images=pixels)
  with pytest.raises(ValueError, match=rf"d.npz\['train_images'\] is .*{match}"):
    datasets.load_arrays(npz_config(path).data, "train")


def test_pixels_inside_the_contract_load():
  floats = datasets.to_rgb_uint8(np.linspace(0, 1, 4 * 4, dtype=np.float32).reshape(1, 4, 4))
  assert floats.min() == 0 and floats.max() == 255
  ints = datasets.to_rgb_uint8(np.full((1, 4, 4, 3), 255, np.int64))
  assert ints.dtype == np.uint8 and (ints == 255).all()


def test_unusable_npz_paths_and_labels_are_one_line_naming_the_path(tmp_path):
  (tmp_path / "dir.npz").mkdir()
  (tmp_path / "text.npz").write_text("not an archive")
  write_npz(tmp_path / "names.npz", images=images(), labels=np.array(["cat", "dog"] * (N // 2)))
  for path, error, match in (
      (tmp_path / "dir.npz", ValueError, "is a directory; pass the .npz file"),
      (tmp_path / "text.npz", ValueError, "text.npz is not an .npz archive.*np.savez"),
      (tmp_path / "missing.npz", FileNotFoundError, "missing.npz' does not exist"),
      (tmp_path / "names.npz", ValueError, r"names.npz\['labels'\] is <U3; labels must be "
                                           "integers")):
    with pytest.raises(error, match=match):
      datasets.load_arrays(npz_config(path).data, "train")


def test_a_flat_image_folder_names_its_images_and_the_layout(tmp_path):
  for i in range(3):
    (tmp_path / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0x\xff\xd9")
  with pytest.raises(FileNotFoundError, match=r"has 3 images but no class sub-folders; the "
                     rf"layout is {tmp_path}/<class>/\*.jpg"):
    folders.list_image_files(str(tmp_path))


def test_evaluation_refuses_missing_unlabelled_and_out_of_range_labels(tmp_path):
  mesh = parallel.make_mesh()
  labels = np.arange(N) % 4
  cases = (
      (dict(images=images()), "train", "no 'labels' array, which evaluation needs"),
      (dict(images=images(), labels=np.full(N, -1)), "train",
       r"split 'train' has no labels \(all -1.*--config.eval.train_split"),
      (dict(images=images(), labels=labels), "test",
       "no 'test_images'.*add 'test_images' and 'test_labels'.*allow_train_as_test=True"),
      (dict(images=images(), labels=labels, test_images=images(), test_labels=labels + 4),
       "test", r"span \[4, 7\], outside \[0, 4\).*'train' has 4 classes"),
  )
  for i, (arrays, split, match) in enumerate(cases):
    c = npz_config(write_npz(tmp_path / f"{i}.npz", **arrays))
    c.eval.transform = config_lib.eval_transform(SIDE, SIDE)
    with pytest.raises(ValueError, match=match):
      make = lambda s, **kw: in_memory.MemoryLabelledSource(c, mesh, split=s, train=False,
                                                            batch_size=8, **kw)
      make(split, num_classes=make("train").num_classes if split == "test" else 0)


def test_imagenet_test_split_names_validation(tmp_path):
  c = npz_config(tmp_path / "x.npz")
  c.data.name = "imagenet2012"
  with pytest.raises(ValueError, match="use --config.eval.split=validation"):
    datasets.check_eval_labels(c, np.full(5, -1), "test", 1000)


# --- Through the real CLIs ------------------------------------------------------------------

def run(*args):
  env = cli_env()
  env.pop("TF_CPP_MIN_LOG_LEVEL")  # TensorFlow's own warnings count in the log size
  return subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True,
                        timeout=SUBPROCESS_TIMEOUT, cwd=ROOT)


def assert_user_error(result, *fragments):
  assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in last, last


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A workdir pretrained for 2 steps on a labelled .npz (train split only)."""
  d = tmp_path_factory.mktemp("npz_run")
  path = write_npz(d / "train.npz", images=images(), labels=np.arange(N) % 4)
  result = run("vicreg_jax.main", TINY, f"--workdir={d / 'w'}",
               "--config.data.name=npz", f"--config.data.path={path}",
               "--config.num_train_steps=2")
  assert result.returncode == 0, result.stderr[-3000:]
  return d


def evaluate(workdir, path, *flags):
  return run("vicreg_jax.evaluate", TINY, f"--workdir={workdir}", "--protocols=knn",
             "--config.data.name=npz", f"--config.data.path={path}", *flags)


def test_evaluation_cli_refuses_unlabelled_and_train_as_test_unless_asked(trained):
  w = trained / "w"
  unlabelled = write_npz(trained / "unlabelled.npz", images=images(),
                         test_images=images())
  assert_user_error(evaluate(w, unlabelled), "unlabelled.npz has no 'labels' array")
  negative = write_npz(trained / "negative.npz", images=images(), labels=np.full(N, -1),
                       test_images=images(), test_labels=np.full(N, -1))
  assert_user_error(evaluate(w, negative), "split 'train' has no labels (all -1")
  train_only = trained / "train.npz"
  assert_user_error(evaluate(w, train_only), "no 'test_images'", "'test_labels'",
                    "--config.eval.allow_train_as_test=True")
  asked = evaluate(w, train_only, "--config.eval.allow_train_as_test=True")
  assert asked.returncode == 0, asked.stderr[-3000:]
  assert "knn: top-1" in asked.stdout


def test_training_cli_names_bad_npz_paths_and_pixels(tmp_path):
  (tmp_path / "dir.npz").mkdir()
  (tmp_path / "fake.npz").write_text("not an archive")
  write_npz(tmp_path / "floats.npz", images=images(np.float32, 255))
  for name, fragments in (("dir.npz", ["is a directory"]),
                          ("fake.npz", ["fake.npz is not an .npz archive"]),
                          ("floats.npz", ["floats.npz['images'] is float32", "divide by 255"])):
    result = run("vicreg_jax.main", TINY, f"--workdir={tmp_path / name}.w",
                 "--config.data.name=npz", f"--config.data.path={tmp_path / name}")
    assert_user_error(result, *fragments)


def test_training_cli_stops_on_a_folder_whose_images_all_fail_to_decode(tmp_path):
  """JPEGs with intact start and end markers and garbage inside pass the folder's
  pre-check; every epoch of them is dropped, so without a check no batch ever came (the
  run never ended and logged two lines per record)."""
  folder = tmp_path / "allfake" / "train" / "a"
  folder.mkdir(parents=True)
  for i in range(40):
    (folder / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage\xff\xd9")
  # Bounded: before the fix the run never ended (the subprocess timeout fails the test).
  result = run("vicreg_jax.main", TINY, f"--workdir={tmp_path / 'w'}",
               "--config.data.source=folder", f"--config.data.path={folder.parent}")
  assert_user_error(result, f"None of the 40 images of {folder.parent} could be decoded")
  log = result.stdout + result.stderr
  assert log.count("skipped 40 of 40 images") == 1, log[-3000:]
  # libjpeg prints one line per damaged file of the epoch, TensorFlow none.
  assert len(log) < 10_000, len(log)
