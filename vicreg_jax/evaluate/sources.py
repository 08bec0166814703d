"""The labelled sources evaluation reads: the one module that calls the data layer.

Evaluation crops of a split in batches of ``config.eval.feature_batch`` (kNN, the feature
probe, the kNN monitor), and the train / held-out sources of an epoch-based protocol.
"""

from __future__ import annotations

import ml_collections

from vicreg_jax import data


def feature_source(config: ml_collections.ConfigDict, mesh, split: str,
                   batch_size: int | None = None):
  """Un-augmented evaluation crops of ``split`` (batches of ``batch_size``, by default
  ``eval.feature_batch``)."""
  return data.create_labelled_source(config, mesh, split=split, train=False,
                                     batch_size=batch_size or config.eval.feature_batch)


def protocol_sources(config: ml_collections.ConfigDict, mesh, protocol: str):
  """``(train, held_out)`` sources of ``config.eval.<protocol>`` (``linear`` or ``finetune``).

  Training crops of ``eval.train_split`` (fine-tuning: its label subset,
  ``eval.finetune.subset_*``) and evaluation crops of ``eval.split``, both in batches of the
  protocol's ``batch_size``; the held-out source keeps the training source's class count.
  """
  settings = config.eval[protocol]
  subset = data.subset_from_config(settings) if protocol == "finetune" else None
  train = data.create_labelled_source(config, mesh, split=config.eval.train_split,
                                      train=True, batch_size=settings.batch_size,
                                      subset=subset)
  held_out = data.create_labelled_source(config, mesh, split=config.eval.split,
                                         train=False, batch_size=settings.batch_size,
                                         num_classes=train.num_classes)
  return train, held_out
