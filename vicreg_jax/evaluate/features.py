"""Encoder features for evaluation: the one encode function and the one feature extractor.

:func:`encode` is the evaluation input path shared by the kNN monitor, the evaluation runner
and the classifier (probe and fine-tuning): uint8 images, normalised with ``config.augment``'s
mean/std, through the encoder (eval mode: BatchNorm running statistics; train mode for
fine-tuning), as float32. :func:`batch_features` runs a jitted encode over labelled batches
and keeps the real rows; :func:`extract_features` is its adapter for an array of images.
"""

from __future__ import annotations

from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from vicreg_jax import parallel
from vicreg_jax.data import augment


def encode(module, variables: dict, images: jax.Array, *, mean, std, train: bool = False,
           method: str | None = None) -> tuple[jax.Array, dict]:
  """Features of uint8 images; returns ``(features f32[B, d], batch_stats)``.

  Args:
    module: the encoder (a backbone, or the VICReg model with ``method="encode"``).
    variables: its ``{"params", "batch_stats"}``.
    images: uint8 [B, S, S, 3].
    mean, std: per-channel normalisation (``config.augment``).
    train: False: eval mode, the running statistics are used and returned unchanged; True:
      batch statistics (over the batch it is given), the updated running averages are returned.
    method: the module's method to apply (default ``__call__``).
  """
  x = augment.normalize(augment.to_float(images), mean, std)
  if train:
    out, updates = module.apply(variables, x, train=True, mutable=["batch_stats"],
                                method=method)
    return out.astype(jnp.float32), updates["batch_stats"]
  out = module.apply(variables, x, train=False, method=method)
  return out.astype(jnp.float32), variables.get("batch_stats", {})


def make_encode_fn(module, mean, std, mesh, *, method: str | None = None
                   ) -> Callable[[dict, jax.Array], jax.Array]:
  """Jitted ``(variables, uint8 images [B, S, S, 3]) -> f32[B, d]`` in eval mode (:func:`encode`),
  output replicated on ``mesh`` so every process gets the whole batch."""
  def features(variables, images):
    return encode(module, variables, images, mean=mean, std=std, method=method)[0]
  return jax.jit(features, out_shardings=parallel.replicated(mesh))


def _on_host(x) -> np.ndarray:
  """``x`` whole on every host: global (sharded) arrays are gathered, NumPy taken as is."""
  if isinstance(x, jax.Array):
    return multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(x)


def batch_features(apply_fn: Callable[[jax.Array], jax.Array], batches: Iterable[dict]
                   ) -> tuple[np.ndarray, np.ndarray | None]:
  """The feature extractor: features f32[n, d] and labels i32[n] of the real rows of batches.

  Args:
    apply_fn: ``images [B, ...] -> features [B, d]`` whole on every process (e.g. a
      :func:`make_encode_fn` bound to its variables); ideally jitted, batches keep one shape.
    batches: ``{"image" [B, ...], "weight" [B] (real rows > 0, padding 0), "label" i32[B]
      (optional)}``, global arrays sharded over the processes (``source.epoch(0)``) or NumPy.

  Returns:
    ``(features, labels)`` on the host; labels is None when the batches carry none.
  """
  features, labels = [], []
  for batch in batches:
    real = _on_host(batch["weight"]) > 0
    features.append(np.asarray(apply_fn(batch["image"]), np.float32)[real])
    if "label" in batch:
      labels.append(_on_host(batch["label"])[real])
  return np.concatenate(features), (np.concatenate(labels) if labels else None)


def extract_features(apply_fn: Callable[[jax.Array], jax.Array], images, *,
                     batch_size: int) -> np.ndarray:
  """:func:`batch_features` of an array of images; returns f32[n, d] on the host.

  Args:
    apply_fn: ``images [b, ...] -> features [b, d]``, the encoder in eval mode, ideally
      jitted: every call gets exactly ``batch_size`` images (the last batch is zero-padded and
      the padding rows dropped), so it compiles once.
    images: [n, ...] NumPy or JAX array, already preprocessed for the encoder.
    batch_size: images per call.
  """
  n = len(images)
  if n == 0 or batch_size <= 0:
    raise ValueError(f"extract_features needs images (got {n}) and batch_size > 0 "
                     f"(got {batch_size}).")

  def batches():
    for start in range(0, n, batch_size):
      batch = np.asarray(images[start:start + batch_size])
      yield {"image": np.pad(batch, [(0, batch_size - len(batch))] + [(0, 0)] * (batch.ndim - 1)),
             "weight": np.arange(batch_size) < len(batch)}

  return batch_features(apply_fn, batches())[0]
