"""Metric output of the training loop: console progress, JSONL file and TensorBoard scalars.

Only process 0 writes. TensorBoard event files are written with ``tensorboardX`` (no
TensorFlow needed) when it is installed; the JSONL file (``metrics.jsonl``, one object per
logged step) is always written.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Mapping

import jax

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
  """Appends scalar dicts to ``workdir/metrics.jsonl`` and TensorBoard (process 0 only)."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    self._file = None
    self._tb = None
    if not self._active:
      return
    self._file = open(os.path.join(workdir, METRICS_FILE), "a", encoding="utf-8")
    try:
      import tensorboardX  # pylint: disable=g-import-not-at-top
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:
      logging.info("tensorboardX is not installed; writing %s only.", METRICS_FILE)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._active:
      return
    self._file.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}})
                     + "\n")
    self._file.flush()
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(name, float(value), step)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()


class Progress:
  """Formats one console line per logged step: loss terms, lr, pairs/s and ETA."""

  def __init__(self, total_steps: int, global_batch: int, start_step: int):
    self._total = total_steps
    self._batch = global_batch
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def line(self, step: int, m: Mapping[str, float]) -> str:
    now = time.perf_counter()
    steps = max(step - self._last_step, 1)
    rate = steps * self._batch / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    eta = (self._total - step) * self._batch / rate
    probe = (f"  probe top-1 {m['online_probe_top1']:.1f}%" if "online_probe_top1" in m
             else "")
    return (f"step {step}/{self._total}  loss {m['loss']:.4f}  inv {m['invariance']:.4f}  "
            f"var {m['variance']:.4f}  cov {m['covariance']:.4f}  std {m['std_a']:.3f}  "
            f"lr {m['lr']:.4g}{probe}  {rate:.1f} pairs/s  ETA {eta / 60:.1f} min")

  @property
  def is_active(self) -> bool:
    return jax.process_index() == 0
