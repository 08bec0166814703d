"""Evaluation of frozen representations: kNN monitor and linear probe."""

from vicreg_jax.evaluate.knn import knn_accuracy, knn_scores, topk_accuracy
from vicreg_jax.evaluate.linear import linear_probe

__all__ = ["knn_accuracy", "knn_scores", "linear_probe", "topk_accuracy"]
