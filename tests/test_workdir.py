"""Workdir lock: a second run is refused; stale locks of dead processes are taken over."""

import json
import os
import socket
import subprocess
import sys

import pytest

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
