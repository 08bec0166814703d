"""Convolutions that XLA:CPU runs slowly, computed as (strided) slices + one dot instead.

Why (measured on 2 CPU cores, jax 0.10.2, ``experiments/README.md``, "CPU vs PyTorch"):

* **Maps smaller than the kernel.** At 64 px ResNet-50's last stage works on 2x2 maps (1x1 at
  32 px). For a stride-1 convolution whose input map is smaller than its kernel (3x3 on 2x2),
  XLA:CPU's algebraic simplifier swaps the convolution's operands into a form that has no fast
  CPU kernel and runs as a 1-5 GFLOP/s loop: [32, 2, 2, 512] x 3x3x512 took 1395 ms forward
  and 2626 ms forward+backward as ``nn.Conv``, 28.5 / 82.7 ms as slices + one dot. The input
  gradient of a *strided* convolution whose output map is smaller than the kernel is such a
  convolution too: [32, 4, 4, 512] 3x3 stride 2 -> 2x2 took 6 ms forward but 300 ms for its
  input gradient, 3.7 ms as slices + dot.
* **1x1 convolutions on CPU.** A 1x1 convolution is a matrix product over the channels; as
  ``nn.Conv`` XLA:CPU ran it ~2x and its kernel gradient 1.5-3x slower than the same product
  written as a dot (e.g. [32, 16, 16, 256] -> 64: forward 3.9 vs 1.5 ms, kernel gradient 12.4
  vs 4.0 ms; the values are identical). On GPU/TPU the convolution libraries handle 1x1
  convolutions well and this rewrite is unmeasured there, so it is applied on CPU only.

The rewrite: zero-pad the input, take one (strided) window of the map per kernel tap,
concatenate the windows along channels ([n, *out_map, taps * c]) and multiply once by the
kernel reshaped to [taps * c, features]. Taps whose windows lie entirely in the zero padding
(every tap but the centre on a 1x1 map) are left out: they add exact zeros, and their kernel
gradient is exactly zero either way. It is the same function as the convolution (up to float
summation order). On larger maps XLA:CPU's own stride-1 3x3 convolutions are faster than
these windows (16x16: 5.9 vs 15.4 ms forward), so they stay ``nn.Conv``.

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


def _out_shape(map_shape: Sequence[int], kernel_size: Sequence[int],
               strides: Sequence[int]) -> tuple[int, ...]:
  """Output map of a convolution with PyTorch's symmetric padding (k - 1) // 2."""
  return tuple((m + 2 * ((k - 1) // 2) - k) // s + 1
               for m, k, s in zip(map_shape, kernel_size, strides, strict=True))


def applies(map_shape: Sequence[int], kernel_size: Sequence[int], strides: Sequence[int],
            backend: str) -> bool:
  """Whether a conv is computed by :class:`DotConv` rather than ``nn.Conv`` (module doc).

  True for a kernel > 1 whose input map (stride 1) or output map (strided) is smaller than the
  kernel in every dimension, on any backend; and for a 1x1 kernel on CPU.

  Args:
    map_shape: static spatial shape of the input, e.g. (h, w) or (t,).
    kernel_size: kernel extent per spatial dimension.
    strides: stride per spatial dimension.
    backend: the JAX backend the model is traced for (``jax.default_backend()``).
  """
  if all(k == 1 for k in kernel_size):
    return backend == "cpu"
  if any(k == 1 for k in kernel_size):
    return False
  small = map_shape if all(s == 1 for s in strides) else _out_shape(map_shape, kernel_size,
                                                                    strides)
  return all(m < k for m, k in zip(small, kernel_size, strict=True))


def shifted_dot_conv(x: jax.Array, kernel: jax.Array,
                     strides: Sequence[int] | None = None) -> jax.Array:
  """Convolution with symmetric zero padding (k - 1) // 2 as (strided) slices + one dot.

  Args:
    x: [n, *map, c] input (channels last), any float dtype.
    kernel: [*kernel_size, c, features] with odd ``kernel_size``, same dtype as ``x``.
    strides: stride per spatial dimension (default 1).

  Returns:
    [n, *out_map, features]: ``lax.conv_general_dilated`` with these strides and padding
    ((k - 1) // 2, (k - 1) // 2) per dimension, up to float summation order.
  """
  map_shape, kernel_size = x.shape[1:-1], kernel.shape[:-2]
  strides = tuple(strides) if strides is not None else (1,) * len(map_shape)
  pads = [(k - 1) // 2 for k in kernel_size]
  out_shape = _out_shape(map_shape, kernel_size, strides)
  # Tap t reads input positions t - pad + stride * o: keep the taps that reach the map (a
  # contiguous range per dimension).
  kept = []
  for m, k, s, p, out in zip(map_shape, kernel_size, strides, pads, out_shape):
    reach = [t for t in range(k) if any(0 <= t - p + s * o < m for o in range(out))]
    kept.append(range(reach[0], reach[-1] + 1))
  xp = jnp.pad(x, ((0, 0), *((p, p) for p in pads), (0, 0)))
  windows = [
      xp[(slice(None), *(slice(t, t + s * (out - 1) + 1, s)
                         for t, s, out in zip(taps, strides, out_shape)))]
      for taps in itertools.product(*kept)]
  patches = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
  taps_kernel = kernel[tuple(slice(r.start, r.stop) for r in kept)]
  return jnp.matmul(patches, taps_kernel.reshape(-1, kernel.shape[-1]))


class DotConv(nn.Module):
  """Bias-free convolution with symmetric padding as slices + one dot (see module doc).

  Takes ``nn.Conv``'s arguments as ResNet passes them, so that either can build a layer; the
  ones it cannot honour raise ValueError. :func:`applies` says where ResNet uses it.

  Attributes:
    features: output channels.
    kernel_size: odd kernel extent per spatial dimension.
    strides: stride per spatial dimension.
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
    """x: [n, *map, c] -> [n, *out_map, features] in ``dtype``."""
    kernel_size = tuple(self.kernel_size)
    same = tuple(((k - 1) // 2,) * 2 for k in kernel_size)
    if (self.use_bias or any(k % 2 == 0 for k in kernel_size)
        or tuple(map(tuple, self.padding)) != same):
      raise ValueError(
          f"DotConv computes bias-free, odd-kernel convolutions with padding {same}; got "
          f"kernel {kernel_size}, padding {self.padding}, use_bias={self.use_bias}. Use "
          f"nn.Conv for this layer (models.dot_conv.applies decides).")
    kernel = self.param("kernel", self.kernel_init, (*kernel_size, x.shape[-1], self.features),
                        jnp.float32)
    x, kernel = dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    return shifted_dot_conv(x, kernel, self.strides)
