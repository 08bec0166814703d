"""Evaluation protocols: kNN, linear probe (images or features), semi-supervised fine-tuning.

Modules: ``features`` (the one encode function and feature extractor), ``accuracy`` (top-k),
``knn``, ``linear`` (probe on features), ``classifier`` (the one trainer behind the probe on
images and fine-tuning: ``train_classifier``), ``sources`` (the labelled sources read),
``monitor`` (kNN during pretraining), ``run`` (a workdir's evaluation, ``python -m
vicreg_jax.evaluate``) and ``report`` (trained vs random encoder after pretraining). ``run``,
``monitor`` and ``report`` are not loaded here (``run`` and ``report`` import Orbax).
"""

from vicreg_jax.config import eval_transform, probe_config
from vicreg_jax.evaluate.accuracy import topk_accuracy
from vicreg_jax.evaluate.classifier import finetune, linear_probe_images, train_classifier
from vicreg_jax.evaluate.features import extract_features
from vicreg_jax.evaluate.knn import knn_accuracy, knn_predict
from vicreg_jax.evaluate.linear import linear_probe

__all__ = ["eval_transform", "extract_features", "finetune", "knn_accuracy", "knn_predict",
           "linear_probe", "linear_probe_images", "probe_config", "topk_accuracy",
           "train_classifier"]
