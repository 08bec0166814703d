"""vicreg_jax: VICReg (Bardes, Ponce & LeCun, ICLR 2022) in JAX/Flax.

Public API. Importing this package never imports TensorFlow.
"""

from vicreg_jax.config import augment_recipe, base_config
from vicreg_jax.losses import (covariance_term, embedding_std, gather_batch, invariance_term,
                               variance_term, vicreg_loss)

__all__ = [
    "augment_recipe", "base_config",
    "covariance_term", "embedding_std", "gather_batch", "invariance_term", "variance_term",
    "vicreg_loss",
]
__version__ = "0.1.0"
