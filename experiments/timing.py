"""Helpers shared by the benchmark scripts: median wall time of a JAX call, peak memory."""

import statistics
import time

import jax


def median_ms(fn, repeats: int) -> float:
  """Median milliseconds of ``fn()`` over ``repeats`` calls, waiting for device results."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def peak_memory_gb() -> float:
  """Peak bytes in use on the first device, in GiB (NaN where the backend does not say)."""
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use", float("nan")) / 2**30
