"""vicreg_jax: VICReg (Bardes, Ponce & LeCun, ICLR 2022) in JAX/Flax.

Public API. Importing this package never imports TensorFlow.
"""

from vicreg_jax.config import augment_recipe, base_config

__all__ = ["augment_recipe", "base_config"]
__version__ = "0.1.0"
