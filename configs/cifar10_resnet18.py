"""CIFAR-10, ResNet-18 with the small-image stem, held in device memory.

Batch 256 with base_lr 0.5 (the paper's value for batch 256), the CIFAR augmentation recipe
(crop scale 0.2-1, no blur), 2048-2048-2048 expander, 1000 epochs as small-scale peers use.
Evaluation uses the small-image crops: pad 4 + random 32-px crop + flip for training, the
whole 32-px image for testing.
Needs CIFAR-10 prepared for tfds (``tfds build cifar10`` once, with network).
"""

from vicreg_jax.config import augment_recipe, base_config, eval_transform


def get_config(variant: str = ""):
  del variant
  c = base_config()
  c.data.source = "memory"
  c.data.name = "cifar10"
  c.augment = augment_recipe("cifar", image_size=32)
  c.model.arch = "resnet18"
  c.model.small_stem = True
  c.model.expander = "2048-2048-2048"
  c.batch_size = 256
  c.epochs = 1000
  c.optim.base_lr = 0.5
  c.checkpoint.every_steps = 2000
  c.eval.transform = eval_transform(32, 32, "pad_random", pad=4)
  c.eval.split = "test"            # the labelled held-out split of this dataset
  return c
