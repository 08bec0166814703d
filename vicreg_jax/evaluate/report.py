"""After pretraining: kNN and linear-probe accuracy of the trained encoder vs a random one.

Both encoders have the same architecture; the random one is freshly initialised with another
seed. Both go through the evaluation protocols of ``config.eval`` (:mod:`vicreg_jax.evaluate.run`:
evaluation crops for kNN, the linear probe on images or, with ``eval.linear.on_features``,
on features extracted once). Results are printed as a table and written to
``workdir/eval.json`` (``EVAL_FILE``).
"""

from __future__ import annotations

import json

import jax
import ml_collections

from vicreg_jax import models, paths
from vicreg_jax.evaluate import run

EVAL_FILE = "eval.json"


def evaluate_encoder(config: ml_collections.ConfigDict, mesh, backbone, variables: dict
                     ) -> dict[str, float]:
  """kNN and linear-probe accuracies (percent) of one encoder."""
  knn = run.run_knn(config, mesh, backbone, variables)
  probe = run.run_linear(config, mesh, backbone, variables)
  return {"knn_top1": knn["top1"], "linear_top1": probe["top1"],
          "linear_best_top1": probe["best_top1"]}


def compare_with_random_init(config: ml_collections.ConfigDict, workdir: str,
                             variables: dict, mesh) -> dict:
  """Evaluates the trained model's encoder and a random one; prints and saves the table.

  ``variables``: the VICReg model's ``{"params", "batch_stats"}`` (e.g. of the final
  ``TrainState``); ``mesh``: the program's device mesh (the one training ran on).
  """
  branch = config.eval.branch
  backbone = models.create_backbone(config.model, branch)
  trained = models.backbone_variables(variables, branch)
  random_init = run.random_encoder(backbone, config.seed + 1, models.in_channels(trained))
  rows = {"VICReg-pretrained": evaluate_encoder(config, mesh, backbone, trained),
          "random init": evaluate_encoder(config, mesh, backbone, random_init)}
  if jax.process_index() == 0:
    print(f"\n{'encoder':>18} {'kNN top-1':>10} {'linear top-1':>13} {'(best epoch)':>13}")
    for name, r in rows.items():
      print(f"{name:>18} {r['knn_top1']:>9.1f}% {r['linear_top1']:>12.1f}% "
            f"{r['linear_best_top1']:>12.1f}%")
    paths.write_text(paths.join(workdir, EVAL_FILE), json.dumps(rows, indent=2))
  return rows
