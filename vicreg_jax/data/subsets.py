"""Label subsets of a split (semi-supervised protocols): which example ids keep their labels.

A :class:`Subset` is a file of ids (SimCLR's ``1percent.txt``) or a fraction drawn with a
seed; :func:`select_indices` applies it to a split's ids. Pure host-side logic, no arrays
on the devices.
"""

from __future__ import annotations

from typing import NamedTuple

import ml_collections
import numpy as np

from vicreg_jax import paths


class Subset(NamedTuple):
  """Which training examples carry labels (semi-supervised protocols).

  ``ids``: the example ids to keep (the lines of a SimCLR-style subset file), or None;
  otherwise ``fraction`` of the examples, drawn with ``seed``.
  """
  ids: frozenset[str] | None = None
  fraction: float = 1.0
  seed: int = 0


def read_subset_file(path: str) -> frozenset[str]:
  """Example ids, one per line (blank lines ignored); SimCLR's ``1percent.txt`` format."""
  try:
    ids = frozenset(line.strip() for line in paths.read_text(path).splitlines()
                    if line.strip())
  except OSError as err:
    raise FileNotFoundError(f"Subset file {path!r} cannot be read ({err.strerror or err}); pass "
                            "--config.eval.finetune.subset_file=<file of image ids> or set "
                            "it to '' and use subset_fraction.") from err
  if not ids:
    raise ValueError(f"Subset file {path} lists no ids.")
  return ids


def subset_from_config(finetune_config: ml_collections.ConfigDict) -> Subset:
  """The label subset of ``config.eval.finetune`` (file of ids, else fraction and seed)."""
  if finetune_config.subset_file:
    return Subset(ids=read_subset_file(finetune_config.subset_file),
                  seed=finetune_config.subset_seed)
  if not 0.0 < finetune_config.subset_fraction <= 1.0:
    raise ValueError(f"--config.eval.finetune.subset_fraction="
                     f"{finetune_config.subset_fraction} must be in (0, 1].")
  return Subset(fraction=finetune_config.subset_fraction, seed=finetune_config.subset_seed)


def select_indices(ids: list[str], subset: Subset | None) -> np.ndarray:
  """Sorted indices of the examples with ``ids`` that ``subset`` keeps.

  A fraction keeps ``max(1, round(fraction * n))`` examples drawn without replacement.
  Raises ValueError when an id file matches nothing (wrong naming scheme).
  """
  n = len(ids)
  if subset is None:
    return np.arange(n)
  if subset.ids is not None:
    keep = np.asarray([i for i, name in enumerate(ids) if name in subset.ids], np.int64)
    if not len(keep):
      raise ValueError(f"None of the {len(subset.ids)} subset ids (e.g. "
                       f"{sorted(subset.ids)[0]!r}) names an example of this split (ids look "
                       f"like {ids[0]!r}).")
    return keep
  count = max(1, round(subset.fraction * n))
  return np.sort(np.random.default_rng(subset.seed).choice(n, count, replace=False))
