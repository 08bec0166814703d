"""Test set-up and shared helpers: 8 simulated CPU devices, one compilation cache, tiny runs.

The devices are set before JAX initialises a backend. One persistent compilation cache
(per test session, shared by the xdist workers) serves the in-process tests and every CLI subprocess, so repeated runs of
the same program (resume tests, exports, evaluations) skip XLA compilation.
"""

import os
import pathlib
import random
import socket
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite is bound by XLA:CPU compilation (a tiny train step compiles in ~9 s and runs in
# ~5 ms), most of which is LLVM optimising ~1,300 fusions. LLVM at -O1 instead of XLA's
# default -O2 halves compile time (tiny step 8.7 -> 5.5 s, its init 8.5 -> 1.6 s) for a step
# ~1.3x slower; the suite took 14:09 instead of 18:08 on an idle 2-core machine (2026-12-07).
# Values may differ from -O2 in the last bits of transcendental functions; every comparison
# in the suite is between runs compiled alike (subprocesses inherit XLA_FLAGS) or has a
# tolerance. Users' programs keep XLA's defaults.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=1"
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):  # xdist workers inherit it
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

import jax  # noqa: E402

NUM_DEVICES = 8
ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs"
TINY_RECIPE = f"{CONFIG_DIR}/demo.py:tiny"
# A hang guard for CLI subprocesses, not a speed check: a tiny run takes seconds on an idle
# machine but minutes on two cores shared with other jobs.
SUBPROCESS_TIMEOUT = 900
# Made once by the first process that imports this file (pytest, or its xdist controller) and
# inherited by the xdist workers, so every worker and subprocess shares one cache.
if "VICREG_JAX_TEST_XLA_CACHE" not in os.environ:
  os.environ["VICREG_JAX_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="vicreg_jax_test_xla_cache_")
XLA_CACHE_DIR = os.environ["VICREG_JAX_TEST_XLA_CACHE"]

jax.config.update("jax_num_cpu_devices", NUM_DEVICES)
jax.config.update("jax_compilation_cache_dir", XLA_CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def tiny_config(**overrides):
  """``configs/demo.py:tiny`` (a few steps of a tiny ResNet-18) with dotted overrides."""
  from vicreg_jax import config as config_lib  # after the devices are set, above
  return config_lib.load_config_file(TINY_RECIPE, **overrides)


def load_experiment(name: str):
  """The script ``experiments/<name>.py`` as a module, with ``experiments/`` on ``sys.path``
  (as when the script runs: it imports its sibling ``grid``)."""
  import importlib  # pylint: disable=g-import-not-at-top
  folder = str(ROOT / "experiments")
  if folder not in sys.path:
    sys.path.insert(0, folder)
  return importlib.import_module(name)


def cli_env(devices: int = 1, cache: bool = True) -> dict:
  """Environment of a CLI subprocess: ``devices`` CPU devices, this checkout, and the shared
  compilation cache (``cache=False``: not the tests' cache; also pass
  ``--config.compilation_cache_dir=`` for a CLI run that must compile)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices),
             TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
  if cache:
    env.update(JAX_COMPILATION_CACHE_DIR=XLA_CACHE_DIR,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return env


def run_cli(module: str, *args, devices: int = 1, timeout: int = SUBPROCESS_TIMEOUT):
  """Runs ``python -m <module> <args>`` to completion; returns the CompletedProcess."""
  return subprocess.run([sys.executable, "-m", module, *map(str, args)], env=cli_env(devices),
                        capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def main_cmd(workdir, *flags) -> list[str]:
  """The pretraining CLI on the tiny recipe, as a subprocess command line."""
  return [sys.executable, "-m", "vicreg_jax.main", f"--config={TINY_RECIPE}",
          f"--workdir={workdir}", *map(str, flags)]


def run_main(workdir, *flags, devices: int = 1):
  """Runs :func:`main_cmd` to completion; returns the CompletedProcess."""
  return subprocess.run(main_cmd(workdir, *flags), env=cli_env(devices), capture_output=True,
                        text=True, timeout=SUBPROCESS_TIMEOUT, cwd=ROOT)


def complete_steps(workdir) -> list[int]:
  """The checkpoint steps present in ``workdir``."""
  d = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in d.glob("*") if p.name.isdigit()) if d.exists() else []


def free_port() -> int:
  """A free port below the kernel's ephemeral range, for a coordinator.

  A port from ``bind(0)`` lies in the ephemeral range, where any outgoing connection (for
  example process 1 retrying to reach a coordinator that is not listening yet) may be given
  it between this choice and process 0's bind; ports below the range are never handed out.
  """
  with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="utf-8") as f:
    first_ephemeral = int(f.read().split()[0])
  for port in random.Random().sample(range(first_ephemeral // 2, first_ephemeral), 200):
    with socket.socket() as s:
      try:
        s.bind(("127.0.0.1", port))
      except OSError:
        continue
    return port
  raise AssertionError(f"no free port below {first_ephemeral}")
