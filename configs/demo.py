"""The README's main job: VICReg on scikit-learn's bundled handwritten digits, offline, on CPU.

A small ResNet-18 (small-image stem) pretrains on the 8x8 digits upsampled to 16 px for a
few minutes on 2 CPU cores, then reports kNN and linear-probe accuracy of the trained
encoder against the same encoder at random initialisation.
Variant ``tiny``: a few steps of an even smaller network, for tests.
"""

from vicreg_jax.config import augment_recipe, base_config, eval_transform


def get_config(variant: str = ""):
  c = base_config()
  c.data.source = "memory"
  c.data.name = "digits"
  c.augment = augment_recipe("cifar", image_size=16)
  c.model.arch = "resnet18"
  c.model.small_stem = True
  c.model.base_width = 8
  c.model.expander = "512-512-512"
  c.model.dtype = "float32"        # bf16 is emulated (slow) on most CPUs
  c.batch_size = 256
  c.epochs = 60
  # Small-image LARS (solo-learn scripts/pretrain/cifar/vicreg.yaml, as configs/cifar10_resnet18.py;
  # the ImageNet values 0.5 / 1e-3 / 1e-6 learn slower here: experiments/README.md).
  c.optim.base_lr = 0.3            # solo-learn: lr 0.3 at batch 256
  c.optim.trust_coefficient = 0.02  # solo-learn: eta 0.02 (official ImageNet 1e-3)
  c.optim.weight_decay = 1e-4      # solo-learn: weight_decay 1e-4 (official ImageNet 1e-6)
  c.log_every_steps = 10
  c.checkpoint.every_steps = 100
  c.eval.compare_random = True
  c.eval.split = "test"            # the labelled held-out split of this dataset
  c.eval.transform = eval_transform(16, 16)  # whole 8-px digits upsampled, as the views
  c.eval.linear.on_features = True  # fast path: features once, then 100 head epochs
  if variant == "tiny":
    c.augment = augment_recipe("cifar", image_size=8)
    c.model.base_width = 4
    c.model.expander = "32-32-32"
    c.batch_size = 16
    c.num_train_steps = 6
    c.log_every_steps = 2
    c.checkpoint.every_steps = 2
    c.checkpoint.async_save = False
    c.eval.compare_random = False
    c.eval.transform = eval_transform(8, 8)
  elif variant:
    raise ValueError(f"Unknown variant {variant!r} of demo; use '' or 'tiny'.")
  return c
