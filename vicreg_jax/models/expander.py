"""The VICReg expander: an MLP from the representation to the embedding the loss sees.

Spec ``"8192-8192-8192"`` = Linear(bias) -> BatchNorm -> ReLU for every layer but the last,
and a last Linear without bias, as the official ``Projector``. Linear layers use PyTorch's
default initialisation (weights and biases U(+-1/sqrt(fan_in))); Flax's default would have 3x
the variance and change early loss values a lot.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vicreg_jax.models.batchnorm import batch_norm
from vicreg_jax.models.resnet import BN_EPSILON, BN_MOMENTUM

# PyTorch nn.Linear weight init (kaiming_uniform with a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_linear_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def torch_linear_bias_init(fan_in: int):
  """PyTorch nn.Linear bias init: U(+-1/sqrt(fan_in))."""
  bound = 1.0 / fan_in ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def parse_spec(spec: str) -> list[int]:
  """``"8192-8192-8192"`` -> [8192, 8192, 8192]; ValueError for anything else."""
  try:
    widths = [int(w) for w in spec.split("-")]
  except ValueError:
    widths = []
  if not widths or min(widths) < 1:
    raise ValueError(f"Expander spec must be dash-separated positive widths such as "
                     f"'8192-8192-8192'; got {spec!r}.")
  return widths


class Expander(nn.Module):
  """MLP head; output float32 [n, last width].

  Attributes:
    spec: dash-separated layer widths, e.g. ``"8192-8192-8192"``.
    dtype: computation dtype (parameters stay float32).
    bn_axis_name: mapped axis for BatchNorm statistics inside shard_map/pmap.
  """
  spec: str
  dtype: jnp.dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, *, train: bool, views: int = 1):
    """x: [n, representation_dim] -> f32[n, last width of ``spec``].

    ``views`` > 1: x stacks that many views view-minor and each BatchNorm normalises each
    view with its own statistics (as :meth:`ResNet.__call__`).
    """
    widths = parse_spec(self.spec)
    x = jnp.asarray(x, self.dtype)
    for i, width in enumerate(widths):
      last = i == len(widths) - 1
      x = nn.Dense(width, use_bias=not last, dtype=self.dtype,
                   kernel_init=torch_linear_kernel_init,
                   bias_init=torch_linear_bias_init(x.shape[-1]), name=f"linear{i}")(x)
      if not last:
        x = batch_norm(views, train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                       dtype=self.dtype, axis_name=self.bn_axis_name, name=f"bn{i}")(x)
        x = nn.relu(x)
    return x.astype(jnp.float32)
