"""Monitors during pretraining: kNN accuracy and collapse diagnostics of the current encoder.

With ``config.eval.knn_every_steps = N > 0`` the training loop calls :class:`KnnMonitor`
every N steps (and at the end): branch a's encoder (eval mode, BatchNorm running statistics)
embeds the first ``eval.monitor_examples`` images of ``eval.train_split`` (the bank) and of
``eval.split`` (the queries) with the evaluation crop, and the weighted kNN of
``eval.knn`` classifies the queries. The result is logged as ``knn_top1`` / ``knn_top5``.
The first examples in the split's order are used: for a folder sorted by class, set
``monitor_examples=0`` (all) or use a tfds / in-memory source, whose order is mixed.

With ``config.eval.diagnostics_every_steps = N > 0`` the loop calls
:class:`DiagnosticsMonitor` every N steps (and at the end): a fixed probe batch (the first
``eval.diagnostics_examples`` evaluation crops of ``eval.train_split``) goes through branch
a's encoder and expander in eval mode, and :func:`vicreg_jax.diagnostics.diagnose` measures
the representation and the embedding on the device.
"""

from __future__ import annotations

import itertools
import math

import jax
import ml_collections
import numpy as np

from vicreg_jax import diagnostics, parallel
from vicreg_jax.data import augment
from vicreg_jax.evaluate import features, knn, sources

# The two outputs of branch a that the diagnostics measure, in the metric names' prefix.
DIAGNOSED = ("representation", "embedding")


class KnnMonitor:
  """``monitor(state) -> {"knn_top1", "knn_top5"}`` (percent) for a pretraining state."""

  def __init__(self, config: ml_collections.ConfigDict, mesh, model):
    self._config = config
    self._bank = sources.feature_source(config, mesh, config.eval.train_split)
    self._queries = sources.feature_source(config, mesh, config.eval.split)
    limit = config.eval.monitor_examples
    self._batches = (math.ceil(limit / config.eval.feature_batch) if limit > 0 else None)
    self._encode = features.make_encode_fn(model, config.augment.mean, config.augment.std,
                                           mesh, method="encode")

  def _features(self, state, source):
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return features.batch_features(lambda images: self._encode(variables, images),
                                   itertools.islice(source.epoch(0), self._batches))

  def __call__(self, state) -> dict[str, float]:
    bank, bank_labels = self._features(state, self._bank)
    queries, query_labels = self._features(state, self._queries)
    result = knn.knn_accuracy(bank, bank_labels, queries, query_labels,
                              num_classes=self._bank.num_classes, **self._config.eval.knn)
    return {f"knn_{k}": v for k, v in result.items()}


class DiagnosticsMonitor:
  """``monitor(state) -> (metrics, spectra)``: collapse diagnostics of a pretraining state.

  ``metrics``: ``{representation,embedding}_{effective_rank, rank_fraction, mean_abs_corr,
  std}`` (floats); ``spectra``: ``{"representation", "embedding"}`` normalised singular
  values (descending lists) of the probe batch.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh, model):
    e = config.eval
    source = sources.feature_source(config, mesh, e.train_split,
                                    batch_size=e.diagnostics_examples)
    self._batch = next(iter(source.epoch(0)))
    mean, std, threshold = config.augment.mean, config.augment.std, e.diagnostics_threshold

    def diagnose(variables, images, weight):
      x = augment.normalize(augment.to_float(images), mean, std)
      outputs = model.apply(variables, x, train=False, method="represent_and_embed")
      return {name: diagnostics.diagnose(out, weight, threshold)
              for name, out in zip(DIAGNOSED, outputs)}

    self._diagnose = jax.jit(diagnose, out_shardings=parallel.replicated(mesh))

  def __call__(self, state) -> tuple[dict[str, float], dict[str, list[float]]]:
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    result = jax.device_get(self._diagnose(variables, self._batch["image"],
                                           self._batch["weight"]))
    metrics = {f"{name}_{key}": float(value) for name in DIAGNOSED
               for key, value in result[name].items() if key != "spectrum"}
    spectra = {name: np.asarray(result[name]["spectrum"]).tolist() for name in DIAGNOSED}
    return metrics, spectra
