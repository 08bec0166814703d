"""Default hyper-parameters of the frozen-feature evaluation protocols (kNN and linear probe).

The linear probe is the paper's protocol (App. C.2; official ``evaluate.py`` run with
``--lr-head 0.02``); the kNN monitor is the common InstDisc/DINO one (k 20, temperature 0.07).
``probe_config().linear`` has the same fields as ``config.eval.linear`` of the training
config, so either can be passed to :func:`vicreg_jax.evaluate.linear_probe`.
"""

from __future__ import annotations

import ml_collections


def probe_config() -> ml_collections.ConfigDict:
  """Paper defaults: ``knn`` (k, temperature, query_batch) and ``linear`` (the probe's SGD)."""
  return ml_collections.ConfigDict(dict(
      knn=dict(
          k=20,
          temperature=0.07,       # votes weighted by exp(cosine similarity / temperature)
          query_batch=256,        # queries per block: memory is query_batch x num_train floats
      ),
      linear=dict(
          lr=0.02,                # not scaled with the batch size (official evaluate.py)
          momentum=0.9,
          weight_decay=1e-6,      # on the weights and the bias, as torch SGD applies it
          batch_size=256,
          epochs=100,             # cosine annealing to 0, stepped once per epoch
          init_std=0.01,          # head weights ~ N(0, init_std), bias 0
      ),
  ))
