"""Evaluation of frozen representations: kNN monitor, linear probe, feature extraction."""

from vicreg_jax.evaluate.config import probe_config
from vicreg_jax.evaluate.knn import knn_accuracy, knn_predict, topk_accuracy
from vicreg_jax.evaluate.linear import extract_features, linear_probe

__all__ = ["extract_features", "knn_accuracy", "knn_predict", "linear_probe", "probe_config",
           "topk_accuracy"]
