"""Workdir lock: a second run is refused; stale locks of dead processes are taken over;
unsupported URLs are refused rather than turned into local folders."""

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, run_main
from vicreg_jax import workdir


def test_second_run_is_refused_while_first_holds_the_lock(tmp_path):
  with workdir.exclusive(str(tmp_path)):
    with pytest.raises(workdir.WorkdirBusyError, match="Another run .* is using"):
      with workdir.exclusive(str(tmp_path)):
        pass
  assert not (tmp_path / workdir.LOCK_FILE).exists()  # released on exit


def test_stale_lock_of_dead_process_is_taken_over(tmp_path):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  (tmp_path / workdir.LOCK_FILE).write_text(
      json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
  with workdir.exclusive(str(tmp_path)):
    owner = json.loads((tmp_path / workdir.LOCK_FILE).read_text())
    assert owner["pid"] == os.getpid()


def test_lock_of_other_host_is_respected(tmp_path):
  (tmp_path / workdir.LOCK_FILE).write_text(json.dumps({"host": "elsewhere", "pid": 1}))
  with pytest.raises(workdir.WorkdirBusyError, match="elsewhere"):
    with workdir.exclusive(str(tmp_path)):
      pass


@pytest.mark.parametrize("url", ["hdfs://bucket/run", "az://b/r"])
def test_unsupported_url_schemes_are_refused_instead_of_becoming_local_folders(url):
  with pytest.raises(ValueError, match="--workdir " + re.escape(url) + ": unsupported URL"):
    workdir.check_writable(url)
  from vicreg_jax import checkpoint  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="--workdir " + re.escape(url)):
    checkpoint.checkpoint_dir(url)  # evaluation and export read workdirs through it


@pytest.mark.parametrize("url", ["s3://bucket/run", "S3://b/r"])
def test_s3_checkpoints_are_refused_naming_what_works(url):
  from vicreg_jax import checkpoint  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="cannot write checkpoints to s3://.*gs://"):
    checkpoint.checkpoint_dir(url)


def test_gs_workdir_is_kept_as_a_url():
  from vicreg_jax import checkpoint  # pylint: disable=g-import-not-at-top
  assert checkpoint.checkpoint_dir("gs://b/run/") == "gs://b/run/checkpoints"


def test_cli_refuses_an_unsupported_url_workdir_and_creates_nothing():
  result = run_main("hdfs://bucket/vicreg_run")
  assert result.returncode == 1, result.stderr[-2000:]
  assert "unsupported URL scheme" in result.stderr.strip().splitlines()[-1]
  assert not (ROOT / "hdfs:").exists()
