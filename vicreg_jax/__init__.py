"""vicreg_jax: VICReg (Bardes, Ponce & LeCun, ICLR 2022) in JAX/Flax.

Public API. Importing this package never imports TensorFlow; the training, checkpoint and
export entry points (which pull in Orbax) load on first use.

Loss:      vicreg_loss, invariance_term, variance_term, covariance_term, embedding_std,
           gather_batch
Collapse:  diagnose, effective_rank (diagnostics of a batch of representations/embeddings)
Models:    resnet, create_model, create_backbone, backbone_variables, representation_dim
Optimizer: lars, vicreg_schedule, create_optimizer, peak_learning_rate
Config:    base_config, augment_recipe, load_config_file, validate_config
Training:  train_and_evaluate, TrainState
Data:      create_view_source, create_labelled_source, augment_pair, augment_view,
           load_arrays
Audio:     log_mel_spectrogram, mel_filterbank (on-device log-mel images in [0, 1])
Evaluate:  extract_features, knn_accuracy, knn_predict, linear_probe, train_classifier
           (linear_probe_images and finetune are its two modes), probe_config,
           eval_transform, evaluate_workdir
Export:    export_backbone, load_exported, torch_to_flax, flax_to_torch,
           load_torch_state_dict, infer_resnet_options
"""

import importlib

from vicreg_jax.config import augment_recipe, base_config, load_config_file
from vicreg_jax.config import validate as validate_config
from vicreg_jax.diagnostics import diagnose, effective_rank
from vicreg_jax.losses import (covariance_term, embedding_std, gather_batch, invariance_term,
                               variance_term, vicreg_loss)
from vicreg_jax.data import (augment_pair, augment_view, create_labelled_source,
                             create_view_source, load_arrays)
from vicreg_jax.data.spectrogram import log_mel_spectrogram, mel_filterbank
from vicreg_jax.evaluate import (eval_transform, extract_features, finetune, knn_accuracy,
                                 knn_predict, linear_probe, linear_probe_images, probe_config,
                                 train_classifier)
from vicreg_jax.models import (Expander, ResNet, VICReg, backbone_variables, create_backbone, create_model,
                               representation_dim, resnet)
from vicreg_jax.optim import create_optimizer, lars, peak_learning_rate, vicreg_schedule

_LAZY = {
    "train_and_evaluate": "vicreg_jax.train", "TrainState": "vicreg_jax.train",
    "evaluate_workdir": "vicreg_jax.evaluate.run",
    "export_backbone": "vicreg_jax.export", "load_exported": "vicreg_jax.export",
    "torch_to_flax": "vicreg_jax.interop", "flax_to_torch": "vicreg_jax.interop",
    "load_torch_state_dict": "vicreg_jax.interop", "infer_resnet_options": "vicreg_jax.interop",
}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'vicreg_jax' has no attribute {name!r}")


__all__ = [
    "augment_recipe", "base_config", "load_config_file", "validate_config",
    "covariance_term", "embedding_std", "gather_batch", "invariance_term", "variance_term",
    "vicreg_loss", "diagnose", "effective_rank",
    "augment_pair", "augment_view", "create_labelled_source", "create_view_source",
    "load_arrays", "log_mel_spectrogram", "mel_filterbank",
    "eval_transform", "extract_features", "finetune", "knn_accuracy", "knn_predict",
    "linear_probe", "linear_probe_images", "probe_config", "train_classifier",
    "Expander", "ResNet", "VICReg", "backbone_variables", "create_backbone", "create_model", "representation_dim", "resnet",
    "create_optimizer", "lars", "peak_learning_rate", "vicreg_schedule",
    *_LAZY,
]
__version__ = "0.1.0"
