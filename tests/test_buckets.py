"""Workdirs and data in buckets, end to end against local emulators (fake-gcs-server for
``gs://``, moto for ``s3://``) on 127.0.0.1: pretraining, SIGKILL and a bit-exact resume,
evaluation and export with ``--workdir gs://...``, two processes writing one checkpoint; the
lock on both stores, data read from both, and ``s3://`` checkpoints refused."""

import json
import re
import signal
import subprocess
import time

import jax
import numpy as np
import pytest
from flax import serialization

import emulators
from conftest import ROOT, SUBPROCESS_TIMEOUT, TINY_RECIPE, cli_env, main_cmd, run_cli, run_main
from vicreg_jax import paths, workdir

BUCKET = "vicreg"
RUN = ["--config.num_train_steps=8", "--config.checkpoint.every_steps=2"]


def _serve(emulator):
  try:
    with emulator(BUCKET) as env, emulators.environment(env):
      yield env
  except RuntimeError as err:  # raised before the yield: the emulator did not start
    pytest.skip(f"emulator could not start: {err}")


@pytest.fixture(scope="module")
def gcs():
  yield from _serve(emulators.fake_gcs)


def exported(folder):
  data = paths.read_bytes(paths.join(str(folder), "backbone.msgpack"))
  return jax.tree.leaves(serialization.msgpack_restore(data))


def logged_steps(workdir_url):
  path = paths.join(workdir_url, "metrics.jsonl")
  if not paths.exists(path):
    return []
  return [json.loads(line)["step"] for line in paths.read_text(path).splitlines()]


def test_gs_workdir_killed_resumes_bit_exact_then_evaluates_and_exports(gcs, tmp_path):
  del gcs
  local = run_main(tmp_path / "local", *RUN)
  assert local.returncode == 0, local.stderr[-2000:]
  url = f"gs://{BUCKET}/run"
  proc = subprocess.Popen(main_cmd(url, *RUN), env=cli_env(1), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + SUBPROCESS_TIMEOUT
  while proc.poll() is None and max(logged_steps(url), default=0) < 4 and time.time() < deadline:
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert max(logged_steps(url)) < 8  # really interrupted
  assert paths.exists(paths.join(url, workdir.LOCK_FILE))  # left behind by the killed run
  again = run_main(url, *RUN)  # same command: takes the stale lock over and resumes
  assert again.returncode == 0, again.stderr[-2000:]
  assert re.search(r"Resuming at step [2-6] of 8", again.stdout + again.stderr), again.stderr[-2000:]
  for a, b in zip(exported(tmp_path / "local" / "export"), exported(f"{url}/export")):
    np.testing.assert_array_equal(a, b)  # bit for bit the same as the local run
  assert logged_steps(url) == [2, 4, 6, 8]
  assert not paths.exists(paths.join(url, workdir.LOCK_FILE))
  assert [n for n in paths.listdir(f"{url}/tensorboard") if n.startswith("events.out")]
  assert not (ROOT / "gs:").exists()

  evaluated = run_cli("vicreg_jax.evaluate", f"--config={TINY_RECIPE}", f"--workdir={url}",
                      "--protocols=knn")
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  assert json.loads(paths.read_text(f"{url}/eval/knn.json"))["step"] == 8

  out = f"gs://{BUCKET}/exported"
  again = run_cli("vicreg_jax.export", f"--workdir={url}", f"--out={out}", "--step=4")
  assert again.returncode == 0, again.stderr[-2000:]
  assert json.loads(paths.read_text(f"{out}/backbone.json"))["step"] == 4
  assert sorted(paths.listdir(out)) == ["backbone.json", "backbone.msgpack",
                                        "backbone.safetensors"]


def test_gs_lock_is_exclusive(gcs):
  del gcs
  url = f"gs://{BUCKET}/locked"
  with workdir.exclusive(url):
    assert json.loads(paths.read_text(f"{url}/{workdir.LOCK_FILE}"))["pid"] > 0
    with pytest.raises(workdir.WorkdirBusyError, match=f"delete {url}/run.lock"):
      paths.write_text(f"{url}/{workdir.LOCK_FILE}",
                       json.dumps({"host": "elsewhere", "pid": 1}))
      with workdir.exclusive(url):
        pass
  assert not paths.exists(f"{url}/{workdir.LOCK_FILE}")


@pytest.fixture(scope="module")
def s3():
  yield from _serve(emulators.moto_s3)


def _upload_tree(local, url):
  for f in sorted(p for p in local.rglob("*") if p.is_file()):
    paths.upload(str(f), f"{url}/{f.relative_to(local).as_posix()}")


@pytest.mark.parametrize("store", ["gcs", "s3"])
def test_npz_and_image_folder_are_read_from_the_bucket(store, request, tmp_path):
  request.getfixturevalue(store)
  import ml_collections  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from vicreg_jax.data import datasets, folders, tf_input  # pylint: disable=g-import-not-at-top
  url = f"{'gs' if store == 'gcs' else 's3'}://{BUCKET}/data-{tmp_path.name}"
  rng = np.random.default_rng(0)
  images, labels = rng.integers(0, 256, (5, 8, 8, 3), np.uint8), np.arange(5, dtype=np.int32)
  np.savez(tmp_path / "d.npz", images=images, labels=labels)
  for cls in ("cat", "dog"):
    (tmp_path / "train" / cls).mkdir(parents=True)
    for i in range(2):
      Image.fromarray(rng.integers(0, 256, (6, 6, 3), np.uint8)).save(
          tmp_path / "train" / cls / f"{i}.png")
  (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
  _upload_tree(tmp_path, url)

  config = ml_collections.ConfigDict({"name": "npz", "path": f"{url}/d.npz"})
  got_images, got_labels = datasets.load_arrays(config, "train")
  np.testing.assert_array_equal(got_images, images)
  np.testing.assert_array_equal(got_labels, labels)

  files, got, classes = folders.list_image_folder(f"{url}/train", "")
  want_files, want, want_classes = folders.list_image_folder(str(tmp_path / "train"), "")
  assert (got, classes) == (want, want_classes) and len(files) == 4
  assert [f[len(url):] for f in files] == [f[len(str(tmp_path)):] for f in want_files]
  read = tf_input._file_reader(url)  # pylint: disable=protected-access
  assert read(files[3]).numpy() == (tmp_path / "train" / "dog" / "1.png").read_bytes()
  data = ml_collections.ConfigDict({"path": f"{url}/train", "split": "train"})
  assert folders.split_folder(data, "val") == f"{url}/val"


def test_s3_lock_is_exclusive_and_s3_checkpoints_are_refused(s3, tmp_path):
  del s3
  url = f"s3://{BUCKET}/run"
  with workdir.exclusive(url):
    with pytest.raises(workdir.WorkdirBusyError, match=f"aws s3 rm {url}/run.lock"):
      with workdir.exclusive(url):
        pass
  assert not paths.exists(f"{url}/{workdir.LOCK_FILE}")
  refused = run_main(url)
  assert refused.returncode == 1
  assert "cannot write checkpoints to s3://" in refused.stderr.strip().splitlines()[-1]
  assert not paths.exists(url) and not (ROOT / "s3:").exists()


def test_two_processes_write_one_checkpoint_to_the_bucket_and_one_resumes_it(gcs):
  del gcs
  from test_reliability import run_two_processes  # pylint: disable=g-import-not-at-top
  url = f"gs://{BUCKET}/two"
  flags = ["--config.checkpoint.every_steps=2"]
  run_two_processes(lambda *distributed: main_cmd(url, "--config.num_train_steps=2", *flags,
                                                  *distributed))
  assert paths.isdir(f"{url}/checkpoints/2/state")
  more = run_main(url, "--config.num_train_steps=4", *flags, devices=4)
  assert more.returncode == 0, more.stderr[-2000:]
  assert "Resuming at step 2 of 4" in more.stdout + more.stderr, more.stderr[-2000:]
  assert logged_steps(url) == [2, 4]
  assert json.loads(paths.read_text(f"{url}/export/backbone.json"))["step"] == 4
