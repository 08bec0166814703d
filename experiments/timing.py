"""Helpers shared by the benchmark scripts: wall time of a JAX call, peak memory, A/B."""

import statistics
import time

import jax

from vicreg_jax.models import dot_conv


def median_ms(fn, repeats: int) -> float:
  """Median milliseconds of ``fn()`` over ``repeats`` calls, waiting for device results."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def median_wall_ms(fn, repeats: int) -> float:
  """Median milliseconds of ``fn()`` over ``repeats`` calls after one warm-up call, for a
  call that returns when its work is done (PyTorch on CPU, or one that synchronises)."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def pipelined_ms(fn, repeats: int) -> float:
  """Milliseconds per call of ``fn()`` dispatched ``repeats`` times back to back, waiting
  once for the last result (as training runs: no host round trip between calls). A device
  runs the programs it is given in order, so the last result being ready means all are."""
  start = time.perf_counter()
  for _ in range(repeats):
    result = fn()
  jax.block_until_ready(result)
  return 1e3 * (time.perf_counter() - start) / repeats


def peak_memory_gb() -> float:
  """Peak bytes in use on the first device, in GiB (NaN where the backend does not say)."""
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use", float("nan")) / 2**30


def use_nn_conv_everywhere() -> None:
  """Experiment only: ResNets built after this call use ``nn.Conv`` for every layer, i.e.
  without ``models/dot_conv.py`` (same parameters and values), to measure what that rewrite
  saves. Patches the module for the rest of the process."""
  dot_conv.applies = lambda *_: False
