"""kNN monitor during pretraining: accuracy of the current encoder every few steps.

With ``config.eval.knn_every_steps = N > 0`` the training loop calls :class:`KnnMonitor`
every N steps (and at the end): branch a's encoder (eval mode, BatchNorm running statistics)
embeds the first ``eval.monitor_examples`` images of ``eval.train_split`` (the bank) and of
``eval.split`` (the queries) with the evaluation crop, and the weighted kNN of
``eval.knn`` classifies the queries. The result is logged as ``knn_top1`` / ``knn_top5``.
The first examples in the split's order are used: for a folder sorted by class, set
``monitor_examples=0`` (all) or use a tfds / in-memory source, whose order is mixed.
"""

from __future__ import annotations

import itertools
import math

import ml_collections

from vicreg_jax.evaluate import features, knn, sources


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
