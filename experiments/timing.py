"""Timing helper shared by the benchmark scripts: median wall time of a JAX call."""

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
