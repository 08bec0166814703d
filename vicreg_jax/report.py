"""After pretraining: kNN and linear-probe accuracy of the trained encoder vs a random one.

Both encoders have the same architecture; the random one is freshly initialised with another
seed. Features come from branch a's backbone in eval mode (BatchNorm running statistics) on
whole images resized to the training view size. Results are printed as a table and written
to ``workdir/eval.json``.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vicreg_jax import evaluate
from vicreg_jax.data import augment, memory


def preprocess(images: np.ndarray, augment_config: ml_collections.ConfigDict) -> jax.Array:
  """uint8 [n, h, w, 3] -> normalised float32 [n, S, S, 3] at the training view size."""
  size = augment_config.image_size
  x = augment.to_float(jnp.asarray(images))
  x = jax.image.resize(x, (x.shape[0], size, size, 3), method="cubic", antialias=True)
  return augment.normalize(jnp.clip(x, 0.0, 1.0), augment_config.mean, augment_config.std)


def extract_features(model, variables: dict, images: np.ndarray,
                     config: ml_collections.ConfigDict) -> np.ndarray:
  """Representations f32[n, dim] of branch a's encoder, in batches of ``eval.feature_batch``."""
  encode = jax.jit(lambda x: model.apply(variables, preprocess(x, config.augment), train=False,
                                         method="encode"))
  return evaluate.extract_features(encode, images, batch_size=config.eval.feature_batch)


def evaluate_encoder(model, variables, config, train_set, test_set) -> dict[str, float]:
  """kNN and linear-probe accuracies (percent) of one encoder."""
  (x_train, y_train), (x_test, y_test) = train_set, test_set
  f_train = extract_features(model, variables, x_train, config)
  f_test = extract_features(model, variables, x_test, config)
  num_classes = int(max(y_train.max(), y_test.max())) + 1
  knn = evaluate.knn_accuracy(f_train, y_train, f_test, y_test, num_classes=num_classes,
                              **config.eval.knn)
  probe = evaluate.linear_probe(f_train, y_train, f_test, y_test, num_classes=num_classes,
                                probe_config=config.eval.linear, seed=config.seed)
  return {"knn_top1": knn["top1"], "linear_top1": probe["top1"],
          "linear_best_top1": probe["best_top1"]}


def compare_with_random_init(config: ml_collections.ConfigDict, workdir: str, result) -> dict:
  """Evaluates ``result`` (a TrainResult) and a random encoder; prints and saves the table."""
  train_set = memory.load_arrays(config.data, "train")
  test_set = memory.load_arrays(config.data, config.eval.split)
  trained = {"params": result.state.params, "batch_stats": result.state.batch_stats}
  size = config.augment.image_size
  dummy = jnp.zeros((2, size, size, 3))
  random_init = result.model.init(jax.random.key(config.seed + 1), dummy, dummy, train=False)
  rows = {"VICReg-pretrained": evaluate_encoder(result.model, trained, config, train_set, test_set),
          "random init": evaluate_encoder(result.model, random_init, config, train_set, test_set)}
  if jax.process_index() == 0:
    print(f"\n{'encoder':>18} {'kNN top-1':>10} {'linear top-1':>13} {'(best epoch)':>13}")
    for name, r in rows.items():
      print(f"{name:>18} {r['knn_top1']:>9.1f}% {r['linear_top1']:>12.1f}% "
            f"{r['linear_best_top1']:>12.1f}%")
    with open(os.path.join(workdir, "eval.json"), "w", encoding="utf-8") as f:
      json.dump(rows, f, indent=2)
  return rows
