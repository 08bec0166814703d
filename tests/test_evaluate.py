"""kNN and linear probe: exact kNN votes vs brute force; accuracies on synthetic features."""

import numpy as np

from vicreg_jax import config as config_lib
from vicreg_jax import evaluate


def brute_force_knn(train, labels, queries, k, temperature, num_classes):
  train = train / np.linalg.norm(train, axis=1, keepdims=True)
  queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  scores = np.zeros((len(queries), num_classes))
  for i, q in enumerate(queries):
    sims = train @ q
    top = np.argsort(-sims)[:k]
    for j in top:
      scores[i, labels[j]] += np.exp(sims[j] / temperature)
  return scores


def clusters(rng, n, d=16, num_classes=5, noise=0.3):
  centers = rng.standard_normal((num_classes, d)) * 3
  y = rng.integers(0, num_classes, n)
  return (centers[y] + noise * rng.standard_normal((n, d))).astype(np.float32), y.astype(np.int32)


def test_knn_scores_match_brute_force():
  rng = np.random.default_rng(0)
  train, labels = clusters(rng, 300, noise=3.0)
  queries, _ = clusters(rng, 37, noise=3.0)
  got = np.asarray(evaluate.knn_scores(train, labels, queries, num_classes=5, k=20,
                                       temperature=0.07, chunk=16))
  want = brute_force_knn(train, labels, queries, 20, 0.07, 5)
  np.testing.assert_allclose(got, want, rtol=2e-4)


def test_knn_and_probe_separate_clusters_and_not_random_labels():
  rng = np.random.default_rng(1)
  x_train, y_train = clusters(rng, 600)
  x_test, y_test = clusters(np.random.default_rng(1), 600)  # same centres
  x_test, y_test = x_test[:200] + 0.1, y_test[:200]
  knn = evaluate.knn_accuracy(x_train, y_train, x_test, y_test, num_classes=5)
  probe_cfg = config_lib.base_config().eval.linear
  probe_cfg.epochs = 10
  probe = evaluate.linear_probe(x_train, y_train, x_test, y_test, num_classes=5,
                                probe_config=probe_cfg)
  assert knn["top1"] >= 99 and probe["top1"] >= 95 and probe["top5"] >= probe["top1"]
  shuffled = rng.permutation(y_train)
  chance = evaluate.linear_probe(x_train, shuffled, x_test, y_test, num_classes=5,
                                 probe_config=probe_cfg)
  assert chance["top1"] < 45  # 20% expected
  again = evaluate.linear_probe(x_train, y_train, x_test, y_test, num_classes=5,
                                probe_config=probe_cfg)
  assert again == probe  # deterministic for a seed
