"""Mesh construction and batch placement on simulated CPU devices."""

import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import conftest
from test_reliability import wait_for_checkpoint
from vicreg_jax import parallel


def test_mesh_spans_all_devices_with_auto_axes():
  mesh = parallel.make_mesh()
  assert mesh.devices.size == jax.device_count() == 8
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)


def test_host_to_global_shards_leading_axis():
  mesh = parallel.make_mesh()
  local = {"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3)}
  out = parallel.host_to_global(mesh, local)
  assert out["x"].shape == (16, 3)
  assert {s.data.shape for s in out["x"].addressable_shards} == {(2, 3)}
  np.testing.assert_array_equal(np.asarray(out["x"]), local["x"])


def test_indivisible_batch_names_the_fix():
  with pytest.raises(ValueError, match="multiple of 8"):
    parallel.check_batch_divisible(12, parallel.make_mesh())


# Process 1 reaches its first collective LATE seconds after process 0, as a process does
# that compiles slowly on a busy core; the gloo connection deadline is 30 s.
LATE_PROCESS_SCRIPT = """
import sys, time
import jax, jax.numpy as jnp, numpy as np
from vicreg_jax import parallel
process_id, address, late = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
parallel.initialize_distributed("manual", address, num_processes=2, process_id=process_id)
mesh = parallel.make_mesh()
if process_id == 1:
  time.sleep(late)
x = parallel.host_to_global(mesh, np.full((jax.local_device_count(),), process_id + 1.0))
print(float(jax.jit(jnp.sum, out_shardings=parallel.replicated(mesh))(x).addressable_data(0)))
"""


def test_a_process_late_to_its_first_collective_is_waited_for():
  address = f"127.0.0.1:{conftest.free_port()}"
  procs = [subprocess.Popen([sys.executable, "-c", LATE_PROCESS_SCRIPT, str(i), address, "35"],
                            env=conftest.cli_env(2, cache=False), cwd=conftest.ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  try:
    outs = [p.communicate(timeout=conftest.SUBPROCESS_TIMEOUT) for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
  assert [o[0].split()[-1] for o in outs] == ["6.0", "6.0"]  # 2 devices x 1 + 2 devices x 2


def test_processes_with_different_configs_all_stop_naming_the_key(tmp_path):
  # Process 1 was started with another learning rate: both stop before compiling (none is
  # left waiting for the other), process 1 naming the key and process 0 the process.
  address = f"127.0.0.1:{conftest.free_port()}"
  lrs = ["0.3", "0.4"]
  procs = [subprocess.Popen(
      conftest.main_cmd(tmp_path / "run", f"--config.optim.base_lr={lrs[i]}",
                        "--config.distributed.mode=manual",
                        f"--config.distributed.coordinator_address={address}",
                        "--config.distributed.num_processes=2",
                        f"--config.distributed.process_id={i}"),
      env=conftest.cli_env(2), cwd=conftest.ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=conftest.SUBPROCESS_TIMEOUT) for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == [1, 1], [o[1][-1500:] for o in outs]
  last = [o[1].strip().splitlines()[-1] for o in outs]
  assert all("Processes [1] run with another config" in line for line in last), last
  assert "config.optim.base_lr: 0.3 -> 0.4" in last[1]
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_dead_process_stops_the_others_instead_of_hanging(tmp_path):
  # (Here rather than in test_reliability.py: the xdist worker running that file is the
  # suite's longest.) Process 1 is SIGKILLed mid-run: process 0 must end (JAX's coordination service misses
  # its heartbeats: --config.distributed.heartbeat_timeout_s, 20 s here instead of JAX's
  # default 100 s, which took ~1 minute) with an error naming the cause, its checkpoints intact
  # for a rerun. (Process 0 dying ends process 1 at once: it loses the coordinator.)
  # The run shards its optimizer state over the 4 devices of both processes (ZeRO-1), so
  # this also checks that a sharded state trains and checkpoints across processes.
  port = conftest.free_port()
  procs = [subprocess.Popen(
      conftest.main_cmd(tmp_path, "--config.num_train_steps=100000", "--config.checkpoint.every_steps=2",
               "--config.parallel.shard_optimizer_state=True",
               "--config.parallel.shard_min_elements=512",
               "--config.distributed.mode=manual", "--config.distributed.heartbeat_timeout_s=20",
               f"--config.distributed.coordinator_address=127.0.0.1:{port}",
               "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"),
      env=conftest.cli_env(2), cwd=conftest.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  try:
    wait_for_checkpoint(procs[0], tmp_path, 2)
    procs[1].kill()
    started = time.time()
    _, err = procs[0].communicate(timeout=conftest.SUBPROCESS_TIMEOUT)
  finally:
    for p in procs:
      p.kill()
  assert procs[0].returncode != 0
  assert "heartbeat" in err or "another task died" in err, err[-3000:]
  print(f"process 0 stopped {time.time() - started:.0f} s after process 1 died")
  assert conftest.complete_steps(tmp_path)  # a rerun of the same command resumes from these
