"""Default hyper-parameters of the evaluation protocols: kNN, linear probe, fine-tuning.

The linear probe is the paper's protocol (App. C.2; official ``evaluate.py`` run with
``--lr-head 0.02``); the kNN monitor is the common InstDisc/DINO one (k 20, temperature 0.07);
semi-supervised fine-tuning is App. C.2's (20 epochs, wd 0, separate backbone/head rates).
``probe_config().linear`` has the same fields as ``config.eval.linear`` of the training
config, so either can be passed to :func:`vicreg_jax.evaluate.linear_probe`.
"""

from __future__ import annotations

import ml_collections


# Fine-tuning rates (backbone, head) of App. C.2 for the standard label fractions.
FINETUNE_RATES = {0.01: (0.03, 0.08), 0.1: (0.01, 0.1)}


def eval_transform(image_size: int = 224, resize_size: int = 256,
                   train_crop: str = "random_resized", pad: int = 4
                   ) -> ml_collections.ConfigDict:
  """Image preprocessing of the supervised protocols (linear probe on images, fine-tuning).

  Args:
    image_size: side of the square crops fed to the encoder, pixels.
    resize_size: evaluation resizes the shorter side to this, then centre-crops
      ``image_size`` (official: 256 then 224; small images: equal sizes, no crop).
    train_crop: ``"random_resized"`` (RandomResizedCrop, bilinear, as the official
      ``evaluate.py``) or ``"pad_random"`` (zero-pad by ``pad`` then a random
      ``image_size`` crop: the CIFAR protocol; needs images of ``image_size`` pixels).
    pad: padding of ``"pad_random"``, pixels.
  """
  return ml_collections.ConfigDict(dict(
      image_size=image_size,
      resize_size=resize_size,
      train_crop=train_crop,
      crop_scale=(0.08, 1.0),     # random_resized: area fraction (official default)
      crop_ratio=(3 / 4, 4 / 3),  # random_resized: aspect w / h
      pad=pad,
      flip_prob=0.5,
  ))


def probe_config() -> ml_collections.ConfigDict:
  """Paper defaults: ``knn`` (k, temperature, query_batch), ``linear`` (the probe's SGD) and
  ``finetune`` (semi-supervised fine-tuning on a label subset)."""
  return ml_collections.ConfigDict(dict(
      knn=dict(
          k=20,
          temperature=0.07,       # votes weighted by exp(cosine similarity / temperature)
          query_batch=256,        # queries per block: memory is query_batch x num_train floats
      ),
      linear=dict(
          lr=0.02,                # not scaled with the batch size (official evaluate.py)
          momentum=0.9,
          weight_decay=1e-6,      # on the weights and the bias, as torch SGD applies it
          batch_size=256,
          epochs=100,             # cosine annealing to 0, stepped once per epoch
          init_std=0.01,          # head weights ~ N(0, init_std), bias 0
          # False: the paper's protocol on augmented images, the encoder run every step;
          # True: the fast path, features of un-augmented images extracted once.
          on_features=False,
      ),
      finetune=dict(
          backbone_lr=FINETUNE_RATES[0.01][0],  # 1% labels; 10%: 0.01 / 0.1
          head_lr=FINETUNE_RATES[0.01][1],
          momentum=0.9,
          weight_decay=0.0,
          batch_size=256,
          epochs=20,              # cosine annealing to 0 of both rates, stepped per epoch
          init_std=0.01,
          subset_file="",         # file of image ids, one per line (SimCLR's 1%/10% lists)
          subset_fraction=0.01,   # without subset_file: this fraction of the train split
          subset_seed=0,
      ),
  ))
