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
# The singular-value spectra of the latest collapse-diagnostics step (overwritten each time).
SPECTRA_FILE = "spectra.json"


def write_spectra(workdir: str, step: int, spectra: Mapping[str, list]) -> None:
  """Writes ``{"step", <name>: normalised singular values}`` to ``workdir/spectra.json``
  atomically (process 0 only)."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, SPECTRA_FILE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(dict(spectra, step=step), f)
  os.replace(path + ".tmp", path)


def drop_superseded(path: str, start_step: int) -> int:
  """Removes the lines of ``path`` (JSONL) logged after ``start_step``; returns how many.

  A run resumed from an older checkpoint (the newer one was unreadable) repeats the steps
  after it: their earlier lines belong to a trajectory that no checkpoint holds any more.
  """
  if not os.path.exists(path):
    return 0
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  kept = [line for line in lines if json.loads(line)["step"] <= start_step]
  if len(kept) < len(lines):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      f.writelines(kept)
    os.replace(path + ".tmp", path)
  return len(lines) - len(kept)


class MetricWriter:
  """Appends scalar dicts to ``workdir/metrics.jsonl`` and TensorBoard (process 0 only).

  ``start_step``: the step the run starts (or resumes) from; earlier logged steps after it
  are dropped from the JSONL file and purged from TensorBoard (``purge_step``), so every
  step appears once, from the trajectory the checkpoints hold.
  """

  def __init__(self, workdir: str, start_step: int = 0):
    self._active = jax.process_index() == 0
    self._file = None
    self._tb = None
    if not self._active:
      return
    path = os.path.join(workdir, METRICS_FILE)
    dropped = drop_superseded(path, start_step)
    if dropped:
      logging.warning("Dropped %d lines of %s logged after step %d (superseded by this "
                      "resumed run).", dropped, path, start_step)
    self._file = open(path, "a", encoding="utf-8")
    try:
      import tensorboardX  # pylint: disable=g-import-not-at-top
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"),
                                            purge_step=start_step + 1 if start_step else None)
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
