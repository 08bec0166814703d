"""The run's random streams: each consumer of ``config.seed`` folds in its own stream number.

``stream_key(seed, s) = fold_in(key(seed), s)``; the numbers are part of every checkpoint's
meaning (changing one changes the run), so they are fixed here and nowhere else.
"""

from __future__ import annotations

import jax

MODEL_INIT = 0  # parameter initialisation
TRAIN_STEP = 1  # the train step's augmentation keys (fold_in(., step))
VIEWS = 2       # in-memory view pairs: epoch order and crop windows
LABELLED = 3    # in-memory labelled batches: epoch order and crops


def stream_key(seed: int, stream: int) -> jax.Array:
  """The typed PRNG key of ``stream`` for ``seed``: ``fold_in(key(seed), stream)``."""
  return jax.random.fold_in(jax.random.key(seed), stream)
