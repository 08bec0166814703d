"""Stride-1 convolutions on maps smaller than their kernel, computed as shifted slices + one dot.

Why: at 64 px ResNet-50's last stage works on 2x2 maps (1x1 at 32 px). For a stride-1
convolution whose input map is smaller than its kernel (3x3 on 2x2), XLA:CPU's algebraic
simplifier swaps the convolution's operands into a form that has no fast CPU kernel and runs
as a 1-5 GFLOP/s loop. Measured on 2 CPU cores (``experiments/README.md``, "CPU vs
PyTorch"): [32, 2, 2, 512] x 3x3x512 took 1395 ms forward and 2626 ms forward+backward as
``nn.Conv``, 28.5 / 82.7 ms as the shifted slices + one dot below, with the same values
(4.6e-7 relative); the whole 64-px ResNet-50 training step became ~2x faster.

The rewrite: zero-pad the input, take one shifted window of the map per kernel tap,
concatenate the windows along channels ([n, *map, taps * c]) and multiply once by the kernel
reshaped to [taps * c, features]. Taps whose window lies entirely in the zero padding (every
tap but the centre on a 1x1 map) are left out: they add exact zeros, and their kernel
gradient is exactly zero either way. The rewrite is the same function as the convolution (up
to float summation order), so it is used on every backend; it only applies to maps smaller
than the kernel (ResNet's last stage below ~96 px), and its speed on GPU/TPU is unmeasured.

The parameter is ``nn.Conv``'s: one ``kernel`` of shape [*kernel_size, c, features] in
``param_dtype`` float32, drawn by the same initializer under the same name, so parameter
trees, checkpoints and weight conversion do not depend on which of the two computed it.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import dtypes


def applies(map_shape: Sequence[int], kernel_size: Sequence[int],
            strides: Sequence[int]) -> bool:
  """Whether a conv is computed by :class:`SmallMapConv`: stride 1, kernel > 1, map < kernel.

  Args:
    map_shape: static spatial shape of the input, e.g. (h, w) or (t,).
    kernel_size: kernel extent per spatial dimension.
    strides: stride per spatial dimension.
  """
  return (all(s == 1 for s in strides) and all(k > 1 for k in kernel_size)
          and all(m < k for m, k in zip(map_shape, kernel_size, strict=True)))


def shifted_dot_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 'same' convolution (symmetric zero padding (k - 1) // 2) as slices + one dot.

  Args:
    x: [n, *map, c] input (channels last), any float dtype.
    kernel: [*kernel_size, c, features] with odd ``kernel_size``, same dtype as ``x``.

  Returns:
    [n, *map, features]: ``lax.conv_general_dilated`` with stride 1 and padding
    ((k - 1) // 2, (k - 1) // 2) per dimension, up to float summation order.
  """
  map_shape, kernel_size = x.shape[1:-1], kernel.shape[:-2]
  # Taps at offset |t - k // 2| >= m only ever see zero padding: keep the others.
  centre = [k // 2 for k in kernel_size]
  pads = [min(c, m - 1) for c, m in zip(centre, map_shape)]
  kept = [range(c - p, c + p + 1) for c, p in zip(centre, pads)]
  xp = jnp.pad(x, ((0, 0), *((p, p) for p in pads), (0, 0)))
  windows = [
      xp[(slice(None), *(slice(t - c + p, t - c + p + m)
                         for t, c, p, m in zip(taps, centre, pads, map_shape)))]
      for taps in itertools.product(*kept)]
  patches = jnp.concatenate(windows, axis=-1)  # [n, *map, taps * c], tap-major like the kernel
  taps_kernel = kernel[tuple(slice(r.start, r.stop) for r in kept)]
  return jnp.matmul(patches, taps_kernel.reshape(-1, kernel.shape[-1]))


class SmallMapConv(nn.Module):
  """Bias-free stride-1 'same' convolution for maps smaller than the kernel (see module doc).

  Takes ``nn.Conv``'s arguments as ResNet passes them, so that either can build a layer; the
  ones it cannot honour raise ValueError.

  Attributes:
    features: output channels.
    kernel_size: odd kernel extent per spatial dimension.
    strides: must be all 1.
    padding: must be ((k - 1) // 2, (k - 1) // 2) per dimension.
    use_bias: must be False.
    dtype: computation dtype (None: from the inputs); the kernel is stored in float32.
    kernel_init: initializer of the [*kernel_size, c, features] kernel.
  """
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int]
  padding: Sequence[tuple[int, int]]
  use_bias: bool = False
  dtype: Any = None
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [n, *map, c] with map smaller than the kernel -> [n, *map, features] in ``dtype``."""
    kernel_size = tuple(self.kernel_size)
    same = tuple(((k - 1) // 2,) * 2 for k in kernel_size)
    if (self.use_bias or any(k % 2 == 0 for k in kernel_size)
        or tuple(map(tuple, self.padding)) != same
        or not applies(x.shape[1:-1], kernel_size, self.strides)):
      raise ValueError(
          f"SmallMapConv computes bias-free, odd-kernel, stride-1 convolutions with padding "
          f"{same} on maps smaller than the kernel; got kernel {kernel_size}, strides "
          f"{tuple(self.strides)}, padding {self.padding}, use_bias={self.use_bias}, input "
          f"{x.shape}. Use nn.Conv for this layer (models.small_map_conv.applies decides).")
    kernel = self.param("kernel", self.kernel_init, (*kernel_size, x.shape[-1], self.features),
                        jnp.float32)
    x, kernel = dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    return shifted_dot_conv(x, kernel)
