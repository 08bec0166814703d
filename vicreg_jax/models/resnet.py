"""ResNets built as the official VICReg ``resnet.py`` builds them: v1.5 bottlenecks, no classifier.

Layer for layer the same function as the PyTorch model: symmetric padding (7x7/2 stem pad 3,
3x3 convs pad 1, 3x3/2 max-pool pad 1), kaiming-normal fan-out conv init, zero-initialised
last BatchNorm scale in every residual block, BatchNorm momentum 0.9 (PyTorch 0.1) and eps
1e-5. ``width_multiplier`` widens every layer like the official x2/x4/x5 models. Module
names mirror the PyTorch state-dict keys with ``_`` for ``.`` (``conv1``, ``bn1``,
``layer1_0_conv1``, ``layer1_0_downsample_0``) so that weights convert by renaming alone.

Output: the global-average-pooled representation, float32 [n, representation_dim].
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vicreg_jax.models import dot_conv
from vicreg_jax.models.batchnorm import batch_norm

# Blocks per stage of each official depth (He et al. 2016, Table 1).
STAGE_SIZES = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
    "resnet200": (3, 24, 36, 3),
}
BOTTLENECK_ARCHS = ("resnet50", "resnet101", "resnet152", "resnet200")
BOTTLENECK_EXPANSION = 4
BN_MOMENTUM = 0.9   # PyTorch BatchNorm default momentum 0.1 (Flax weights the old value)
BN_EPSILON = 1e-5   # PyTorch BatchNorm default
# PyTorch kaiming_normal_(mode="fan_out", nonlinearity="relu"), untruncated.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def check_arch(arch: str) -> None:
  """ValueError listing the valid names unless ``arch`` is one of them."""
  if arch not in STAGE_SIZES:
    raise ValueError(f"Unknown arch {arch!r}; choose one of {sorted(STAGE_SIZES)}.")


def representation_dim(arch: str, width_multiplier: int = 1, base_width: int = 64) -> int:
  """Width of the pooled representation (2048 for ResNet-50, 4096 for x2, 512 for ResNet-18)."""
  check_arch(arch)
  expansion = BOTTLENECK_EXPANSION if arch in BOTTLENECK_ARCHS else 1
  return base_width * width_multiplier * 8 * expansion


class _Layers:
  """Conv+BN and pooling for ``spatial_dims``-D inputs with PyTorch's explicit padding."""

  def __init__(self, spatial_dims: int, dtype, train: bool, bn_axis_name: str | None,
               views: int):
    self.d = spatial_dims
    self.dtype = dtype
    self.train = train
    self.bn_axis_name = bn_axis_name
    self.views = views

  def conv_bn(self, x, features: int, kernel: int, stride: int, conv_name: str, bn_name: str,
              zero_scale: bool = False):
    """Bias-free conv with PyTorch's symmetric padding, then BatchNorm (scale 0 or 1 at init)."""
    pad = (kernel - 1) // 2
    # Same parameter either way; DotConv avoids XLA:CPU's slow convolutions (see its module).
    as_dot = dot_conv.applies(x.shape[1:-1], (kernel,) * self.d, (stride,) * self.d,
                              jax.default_backend())
    conv = dot_conv.DotConv if as_dot else nn.Conv
    x = conv(features, (kernel,) * self.d, (stride,) * self.d,
             padding=((pad, pad),) * self.d, use_bias=False, dtype=self.dtype,
             kernel_init=conv_init, name=conv_name)(x)
    return batch_norm(self.views, self.train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                      dtype=self.dtype, axis_name=self.bn_axis_name,
                      scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
                      name=bn_name)(x)

  def max_pool(self, x):
    return nn.max_pool(x, (3,) * self.d, (2,) * self.d, padding=((1, 1),) * self.d)


def _block(layers: _Layers, x, width: int, stride: int, bottleneck: bool, prefix: str):
  """One residual block; ``width`` is the inner width (the output is ``width * expansion``)."""
  out_features = width * (BOTTLENECK_EXPANSION if bottleneck else 1)
  # (features, kernel, stride) of conv1, conv2[, conv3]; v1.5: the stride is on the 3x3 conv.
  convs = ([(width, 1, 1), (width, 3, stride), (out_features, 1, 1)] if bottleneck
           else [(width, 3, stride), (width, 3, 1)])
  y = x
  for i, (features, kernel, conv_stride) in enumerate(convs, start=1):
    last = i == len(convs)
    y = layers.conv_bn(y, features, kernel, conv_stride, f"{prefix}_conv{i}", f"{prefix}_bn{i}",
                       zero_scale=last)
    y = y if last else nn.relu(y)
  residual = x
  if stride != 1 or x.shape[-1] != out_features:
    residual = layers.conv_bn(x, out_features, 1, stride, f"{prefix}_downsample_0",
                              f"{prefix}_downsample_1")
  return nn.relu(y + residual)


class ResNet(nn.Module):
  """Official-layout ResNet trunk without classifier.

  Attributes:
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3).
    bottleneck: bottleneck (ResNet-50+) or basic (ResNet-18/34) blocks.
    width_multiplier: official widen factor (1, 2, 4, 5).
    base_width: stage-1 width before the multiplier (64 official).
    small_stem: 3x3 stride-1 stem without max-pool, for 32-px images.
    spatial_dims: 2 for images [n, h, w, c], 1 for signals [n, t, c].
    dtype: computation dtype (parameters stay float32).
    bn_axis_name: mapped axis for BatchNorm statistics inside shard_map/pmap (None under jit).
  """
  stage_sizes: Sequence[int]
  bottleneck: bool
  width_multiplier: int = 1
  base_width: int = 64
  small_stem: bool = False
  spatial_dims: int = 2
  dtype: jnp.dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, *, train: bool, views: int = 1):
    """x: [n, h, w, c] (or [n, t, c] when 1-D), any channels -> f32[n, representation_dim].

    ``views`` > 1: x stacks that many views view-minor (row ``views * i + v`` is example
    ``i`` of view ``v``) and every BatchNorm normalises each view with its own statistics,
    as separate calls would (:mod:`vicreg_jax.models.batchnorm`).
    """
    layers = _Layers(self.spatial_dims, self.dtype, train, self.bn_axis_name, views)
    width = self.base_width * self.width_multiplier
    x = jnp.asarray(x, self.dtype)
    if self.small_stem:
      x = nn.relu(layers.conv_bn(x, width, 3, 1, "conv1", "bn1"))
    else:
      x = layers.max_pool(nn.relu(layers.conv_bn(x, width, 7, 2, "conv1", "bn1")))
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        stride = 2 if i > 0 and j == 0 else 1
        x = _block(layers, x, width * 2**i, stride, self.bottleneck, f"layer{i + 1}_{j}")
    # Pool in float32: a bf16 mean over 7x7 positions would round the representation.
    return jnp.mean(x.astype(jnp.float32), axis=tuple(range(1, 1 + self.spatial_dims)))


def resnet(arch: str, *, width_multiplier: int = 1, base_width: int = 64,
           small_stem: bool = False, spatial_dims: int = 2, dtype=jnp.float32,
           bn_axis_name: str | None = None) -> ResNet:
  """Builds ``resnet18/34/50/101/152/200`` (ValueError for other names)."""
  check_arch(arch)
  if spatial_dims not in (1, 2):
    raise ValueError(f"spatial_dims must be 1 (signals) or 2 (images); got {spatial_dims}.")
  return ResNet(stage_sizes=STAGE_SIZES[arch], bottleneck=arch in BOTTLENECK_ARCHS,
                width_multiplier=width_multiplier, base_width=base_width,
                small_stem=small_stem, spatial_dims=spatial_dims, dtype=dtype,
                bn_axis_name=bn_axis_name)
