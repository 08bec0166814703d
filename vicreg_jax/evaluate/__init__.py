"""Evaluation protocols: kNN, linear probe (images or features), semi-supervised fine-tuning.

The fine-tuning function is ``vicreg_jax.evaluate.finetune.finetune`` (also
``vicreg_jax.finetune``); the name ``finetune`` here is its module. The command-line runner (:mod:`vicreg_jax.evaluate.run`, ``python -m vicreg_jax.evaluate``)
imports Orbax and is not loaded here.
"""

from vicreg_jax.config import eval_transform, probe_config
from vicreg_jax.evaluate import finetune  # the module (see above)
from vicreg_jax.evaluate.accuracy import topk_accuracy
from vicreg_jax.evaluate.knn import knn_accuracy, knn_predict
from vicreg_jax.evaluate.linear import extract_features, linear_probe, linear_probe_images

__all__ = ["eval_transform", "extract_features", "finetune", "knn_accuracy", "knn_predict",
           "linear_probe", "linear_probe_images", "probe_config", "topk_accuracy"]
