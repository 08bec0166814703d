"""Semi-supervised fine-tuning (paper App. C.2): encoder and head trained on a label subset.

Protocol of the official ``evaluate.py`` in ``finetune`` mode: the encoder in train mode
(BatchNorm batch statistics over the global batch), a linear head N(0, 0.01) / bias 0, PyTorch
SGD with momentum 0.9 and weight decay 0, separate rates for the encoder and the head, both
annealed by a per-epoch cosine over 20 epochs, batch 256. Standard rates: 1% of the labels
backbone 0.03 / head 0.08; 10%: 0.01 / 0.1 (``config.FINETUNE_RATES``). The subset
is a file of image ids (SimCLR's ``1percent.txt``/``10percent.txt``) or a fraction drawn
with a seed (:func:`vicreg_jax.data.labelled.subset_from_config`).
"""

from __future__ import annotations

import jax
import ml_collections

from vicreg_jax import optim
from vicreg_jax.evaluate import classifier


def finetune(backbone, variables: dict, train_source, eval_source, *, mesh,
             finetune_config: ml_collections.ConfigDict, mean, std, seed: int = 0,
             checkpointer: classifier.Checkpointer | None = None,
             on_epoch: classifier.EpochCallback | None = None) -> tuple[dict, dict]:
  """Fine-tunes encoder + head on ``train_source`` (the label subset); scores each epoch.

  Args:
    backbone: the encoder module; variables: its ``{"params", "batch_stats"}``.
    train_source: labelled source of the subset (``train=True``); eval_source: held-out
      split (``train=False``); batches of ``finetune_config.batch_size``.
    mesh: the device mesh the sources shard over.
    finetune_config: ``config.eval.finetune`` (backbone_lr, head_lr, momentum,
      weight_decay, epochs, init_std). ``backbone_lr=0`` keeps the encoder's weights (its
      BatchNorm statistics still follow the data, as in PyTorch's train mode).
    mean, std: per-channel input normalisation (``config.augment``).
    seed: head initialisation.
    checkpointer: resumes from its latest epoch and saves after every epoch.
    on_epoch: ``(epochs done, state, history)`` callback after every epoch.

  Returns:
    ``(summary, variables)``: :func:`classifier.summarize`'s accuracies (percent) and the
    fine-tuned encoder's ``{"params", "batch_stats"}``.
  """
  tx = optim.classifier_sgd(
      finetune_config.head_lr, finetune_config.backbone_lr, momentum=finetune_config.momentum,
      weight_decay=finetune_config.weight_decay, epochs=finetune_config.epochs,
      steps_per_epoch=train_source.steps_per_epoch)
  dim = classifier.representation_width(backbone, variables)
  head = classifier.init_head(jax.random.key(seed), dim, train_source.num_classes,
                              finetune_config.init_std)
  state = classifier.create_state(variables, head, tx, mesh)
  steps = classifier.make_steps(backbone, tx, finetune=True, mean=mean, std=std, mesh=mesh)
  state, summary = classifier.fit(state, steps, train_source, eval_source,
                                  epochs=finetune_config.epochs,
                                  checkpointer=checkpointer, on_epoch=on_epoch)
  tuned = {"params": state.params["backbone"], "batch_stats": state.batch_stats}
  return summary, tuned
