"""kNN and linear probe: exact against NumPy references; accuracies on synthetic features."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vicreg_jax import evaluate, optim
from vicreg_jax.evaluate import linear

NUM_CLASSES = 5


def brute_force_knn(train, labels, queries, k, temperature, num_classes):
  """Per-query loops in float64: cosine similarities, k best, exp(sim / T) votes."""
  train = train / np.linalg.norm(train, axis=1, keepdims=True)
  queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  scores = np.zeros((len(queries), num_classes))
  for i, q in enumerate(queries):
    sims = train @ q
    for j in np.argsort(-sims)[:k]:
      scores[i, labels[j]] += np.exp(sims[j] / temperature)
  return scores


def clusters(rng, n, *, centers, noise):
  """Gaussian clusters f32[n, d] around ``centers`` [c, d] and their labels i32[n]."""
  y = rng.integers(0, len(centers), n)
  x = centers[y] + noise * rng.standard_normal((n, centers.shape[1]))
  return x.astype(np.float32), y.astype(np.int32)


@pytest.fixture(scope="module")
def separable():
  """Train and test sets from the same well-separated clusters (d = 16)."""
  rng = np.random.default_rng(1)
  centers = 3 * rng.standard_normal((NUM_CLASSES, 16))
  return (clusters(rng, 600, centers=centers, noise=0.3),
          clusters(rng, 200, centers=centers, noise=0.3))


@pytest.fixture(scope="module")
def probe_cfg():
  cfg = evaluate.probe_config().linear
  cfg.epochs = 8
  return cfg


def test_knn_predict_matches_brute_force():
  rng = np.random.default_rng(0)
  centers = 3 * rng.standard_normal((NUM_CLASSES, 16))
  train, labels = clusters(rng, 300, centers=centers, noise=3.0)  # overlapping: votes split
  queries, _ = clusters(rng, 37, centers=centers, noise=3.0)
  pred, scores = evaluate.knn_predict(train, labels, queries, num_classes=NUM_CLASSES, k=20,
                                      temperature=0.07, query_batch=16)  # 37 = 2 x 16 + 5
  want = brute_force_knn(train, labels, queries, 20, 0.07, NUM_CLASSES)
  assert pred.dtype == jnp.int32 and scores.shape == (37, NUM_CLASSES)
  np.testing.assert_allclose(np.asarray(scores), want, rtol=1e-4)
  np.testing.assert_array_equal(np.asarray(pred), np.argmax(want, axis=1))


def test_knn_separates_clusters_and_not_random_labels(separable):
  (x_train, y_train), (x_test, y_test) = separable
  knn = evaluate.knn_accuracy(x_train, y_train, x_test, y_test, num_classes=NUM_CLASSES,
                              **evaluate.probe_config().knn)
  assert knn["top1"] >= 99 and knn["top5"] == 100
  shuffled = np.random.default_rng(2).permutation(y_train)
  chance = evaluate.knn_accuracy(x_train, shuffled, x_test, y_test, num_classes=NUM_CLASSES)
  assert chance["top1"] < 40  # 20% expected


def test_topk_accuracy_breaks_ties_like_argmax():
  scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
  accuracy = evaluate.topk_accuracy(scores, np.array([0, 2]), ks=(1, 2))
  assert accuracy == {"top1": 50.0, "top2": 100.0}


def test_linear_probe_separable_random_labels_and_determinism(separable, probe_cfg):
  (x_train, y_train), (x_test, y_test) = separable
  probe = evaluate.linear_probe(x_train, y_train, x_test, y_test, num_classes=NUM_CLASSES,
                                probe_config=probe_cfg)
  assert probe["top1"] >= 95 and probe["epochs"] == len(probe["history"]) == probe_cfg.epochs
  assert all(h["top5"] >= h["top1"] for h in probe["history"])
  assert probe["best_top1"] == max(h["top1"] for h in probe["history"])
  again = evaluate.linear_probe(jnp.asarray(x_train), y_train, x_test, y_test,
                                num_classes=NUM_CLASSES, probe_config=probe_cfg)
  assert again == probe  # deterministic for a seed, NumPy or JAX inputs
  shuffled = np.random.default_rng(3).permutation(y_train)
  chance = evaluate.linear_probe(x_train, shuffled, x_test, y_test, num_classes=NUM_CLASSES,
                                 probe_config=probe_cfg, seed=1)
  assert chance["top1"] < 40  # 20% expected


def test_head_init_std_and_zero_bias():
  head = linear.init_head(jax.random.key(0), 512, 100, init_std=0.01)
  assert abs(float(jnp.std(head["kernel"])) - 0.01) < 2e-4
  assert abs(float(jnp.mean(head["kernel"]))) < 2e-4 and not np.any(np.asarray(head["bias"]))


def torch_sgd(params, grads_per_step, *, lr, momentum, weight_decay, epochs, steps_per_epoch):
  """torch.optim.SGD + CosineAnnealingLR stepped per epoch, in float64 NumPy."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  buf = {}
  for step, grads in enumerate(grads_per_step):
    rate = lr * 0.5 * (1 + math.cos(math.pi * (step // steps_per_epoch) / epochs))
    for k in p:
      d = np.asarray(grads[k], np.float64) + weight_decay * p[k]
      buf[k] = momentum * buf[k] + d if k in buf else d
      p[k] = p[k] - rate * buf[k]
  return p


def test_probe_optimizer_matches_torch_sgd_with_per_epoch_cosine():
  cfg = evaluate.probe_config().linear
  cfg.update(epochs=3, weight_decay=0.1)  # visible decay, also on the bias
  rng = np.random.default_rng(4)
  params = {"kernel": rng.standard_normal((4, 3)).astype(np.float32),
            "bias": rng.standard_normal(3).astype(np.float32)}
  grads = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
           for _ in range(6)]
  tx = optim.torch_sgd(cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                       epochs=cfg.epochs, steps_per_epoch=2)
  got, state = params, tx.init(params)
  for g in grads:
    updates, state = tx.update(g, state, got)
    got = jax.tree.map(lambda p, u: p + u, got, updates)
  want = torch_sgd(params, grads, lr=cfg.lr, momentum=cfg.momentum,
                   weight_decay=cfg.weight_decay, epochs=cfg.epochs, steps_per_epoch=2)
  for k in want:
    np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=1e-5, atol=1e-7)


def test_padded_last_batch_weighs_only_real_examples():
  rng = np.random.default_rng(5)
  head = linear.init_head(jax.random.key(1), 8, 3, init_std=1.0)
  x, y = rng.standard_normal((5, 8)).astype(np.float32), np.array([0, 1, 2, 1, 0])
  padded = linear.batch_loss(head, np.pad(x, ((0, 3), (0, 0))), np.pad(y, (0, 3)),
                             np.array([1.0] * 5 + [0.0] * 3))
  np.testing.assert_allclose(padded, linear.batch_loss(head, x, y, np.ones(5)), rtol=1e-6)


def test_extract_features_pads_the_last_batch():
  images = np.random.default_rng(6).standard_normal((10, 2, 2, 3)).astype(np.float32)
  weights = np.arange(12 * 4, dtype=np.float32).reshape(12, 4)
  batch_shapes = []

  def encoder(batch):
    batch_shapes.append(batch.shape[0])
    return batch.reshape(batch.shape[0], -1) @ weights

  features = evaluate.extract_features(encoder, images, batch_size=4)
  assert batch_shapes == [4, 4, 4] and features.dtype == np.float32
  np.testing.assert_allclose(features, images.reshape(10, -1) @ weights, rtol=1e-6)


