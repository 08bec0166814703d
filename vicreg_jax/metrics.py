"""Metric output of the training loop: console progress, JSONL file and TensorBoard scalars.

Only process 0 writes. TensorBoard event files are written with ``tensorboardX`` (no
TensorFlow needed) when it is installed; the JSONL file (``metrics.jsonl``, one object per
logged step) is always written. For a workdir in a bucket, the event files are written to a
local temporary folder and uploaded after each logged step (and at the end), so no network
writer outlives the run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Mapping

import jax

from vicreg_jax import paths

METRICS_FILE = "metrics.jsonl"
# The singular-value spectra of the latest collapse-diagnostics step (overwritten each time).
SPECTRA_FILE = "spectra.json"


def write_spectra(workdir: str, step: int, spectra: Mapping[str, list]) -> None:
  """Writes ``{"step", <name>: normalised singular values}`` to ``workdir/spectra.json``
  atomically (process 0 only)."""
  if jax.process_index() != 0:
    return
  paths.write_text(paths.join(workdir, SPECTRA_FILE), json.dumps(dict(spectra, step=step)))


def drop_superseded(path: str, start_step: int) -> int:
  """Removes the lines of ``path`` (JSONL) logged after ``start_step``; returns how many.

  A run resumed from an older checkpoint (the newer one was unreadable) repeats the steps
  after it: their earlier lines belong to a trajectory that no checkpoint holds any more.
  """
  if not paths.exists(path):
    return 0
  lines = paths.read_text(path).splitlines(keepends=True)
  kept = [line for line in lines if json.loads(line)["step"] <= start_step]
  if len(kept) < len(lines):
    paths.write_text(path, "".join(kept))
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
    self._tb_upload = None  # (local folder, bucket folder) of a workdir in a bucket
    if not self._active:
      return
    path = paths.join(workdir, METRICS_FILE)
    dropped = drop_superseded(path, start_step)
    if dropped:
      logging.warning("Dropped %d lines of %s logged after step %d (superseded by this "
                      "resumed run).", dropped, path, start_step)
    self._file = paths.TextAppender(path)
    try:
      import tensorboardX  # pylint: disable=g-import-not-at-top
    except ImportError:
      logging.info("tensorboardX is not installed; writing %s only.", METRICS_FILE)
      return
    logdir = paths.join(workdir, "tensorboard")
    if paths.is_url(logdir):
      self._tb_upload = (tempfile.mkdtemp(prefix="vicreg_jax_tensorboard_"), logdir)
      logdir = self._tb_upload[0]
    self._tb = tensorboardX.SummaryWriter(logdir,
                                          purge_step=start_step + 1 if start_step else None)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._active:
      return
    self._file.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}})
                     + "\n")
    self._file.flush()
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(name, float(value), step)
      self._upload_tensorboard()

  def _upload_tensorboard(self) -> None:
    """Copies the local event files of a bucket workdir to ``workdir/tensorboard``."""
    if self._tb_upload is None:
      return
    self._tb.flush()  # a no-op once closed
    local, remote = self._tb_upload
    for name in sorted(os.listdir(local)):
      paths.upload(os.path.join(local, name), paths.join(remote, name))

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()
      self._upload_tensorboard()
      if self._tb_upload is not None:
        shutil.rmtree(self._tb_upload[0])



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
