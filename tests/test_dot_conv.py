"""Convolutions as (strided) slices + one dot (maps under the kernel, 1x1 kernels): same values,
gradients and parameters as the convolution.

Tolerance: float32 results agree with the float64 / ``lax.conv_general_dilated`` reference to
within 1e-5 of the reference's largest magnitude (sums of at most 9 * 64 products here; the
float32 rounding is ~1e-7 relative, a wrong tap or transposed kernel is O(1)).
"""

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vicreg_jax import models
from vicreg_jax.models.resnet import conv_init
from vicreg_jax.models import dot_conv

TOL = 1e-5
# The whole network, output and every gradient: the convolutions' float32 rounding (1e-7
# relative) grows through BatchNorm's backward pass over 4 examples on 1x1 maps, where
# gradients are differences of nearly equal sums; the largest measured is ~1.5e-5 of a leaf's
# scale. A layer built wrongly (a wrong tap, stride or kernel layout) differs by O(1).
RESNET_TOL = 1e-4


def assert_close(actual, reference):
  reference = np.asarray(reference, np.float64)
  scale = np.max(np.abs(reference))
  np.testing.assert_allclose(np.asarray(actual, np.float64), reference, rtol=0, atol=TOL * scale)


def conv_f64(x, kernel, strides):
  """Convolution with symmetric zero padding (k - 1) // 2, from its definition."""
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  map_shape, kernel_size = x.shape[1:-1], kernel.shape[:-2]
  out_shape = [(m + 2 * ((k - 1) // 2) - k) // s + 1
               for m, k, s in zip(map_shape, kernel_size, strides)]
  y = np.zeros((x.shape[0], *out_shape, kernel.shape[-1]))
  for out in itertools.product(*map(range, out_shape)):
    for tap in itertools.product(*map(range, kernel_size)):
      src = tuple(o * s + t - (k - 1) // 2 for o, s, t, k in zip(out, strides, tap, kernel_size))
      if all(0 <= i < m for i, m in zip(src, map_shape)):
        y[(slice(None), *out)] += x[(slice(None), *src)] @ kernel[tap]
  return y


def lax_conv(x, kernel, strides):
  d = x.ndim - 2
  pads = [((k - 1) // 2,) * 2 for k in kernel.shape[:-2]]
  spec = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}[d]
  return jax.lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=spec)


# (map shape, kernel size, strides, in channels, out channels), 2-D and 1-D: stride-1 kernels
# on 1x1 and 2x2 maps; strided ones down to maps under the kernel (and one above: the
# function computes any odd-kernel convolution); 1x1 kernels, strided or not.
CASES = [((1, 1), (3, 3), (1, 1), 8, 5), ((2, 2), (3, 3), (1, 1), 16, 7),
         ((2, 2), (3, 3), (1, 1), 64, 32), ((1, 2), (3, 3), (1, 1), 3, 4),
         ((3, 3), (5, 5), (1, 1), 4, 6), ((1,), (3,), (1,), 8, 5), ((2,), (3,), (1,), 64, 16),
         ((2,), (5,), (1,), 5, 3), ((4, 4), (3, 3), (2, 2), 16, 8), ((2, 2), (3, 3), (2, 2), 8, 4),
         ((5, 5), (3, 3), (2, 2), 4, 3), ((7, 7), (3, 3), (2, 2), 6, 5), ((3,), (3,), (2,), 8, 5),
         ((6, 6), (1, 1), (1, 1), 16, 8), ((6, 6), (1, 1), (2, 2), 16, 8), ((5,), (1,), (2,), 8, 4)]


@pytest.mark.parametrize("map_shape,kernel_size,strides,cin,cout", CASES)
def test_values_and_gradients_equal_the_convolution(map_shape, kernel_size, strides, cin, cout):
  rng = np.random.default_rng(sum(map_shape) * 1000 + cin * 10 + strides[0])
  x = jnp.asarray(rng.standard_normal((3, *map_shape, cin)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((*kernel_size, cin, cout)), jnp.float32)
  reference = conv_f64(x, kernel, strides)
  cotangent = jnp.asarray(rng.standard_normal(reference.shape), jnp.float32)
  ours_fn = functools.partial(dot_conv.shifted_dot_conv, strides=strides)

  y = jax.jit(ours_fn)(x, kernel)
  assert y.shape == reference.shape and y.dtype == jnp.float32
  assert_close(y, reference)

  def grads(conv):
    return jax.jit(jax.grad(lambda a, b: jnp.sum(conv(a, b) * cotangent), argnums=(0, 1)))(
        x, kernel)

  for ours, theirs in zip(grads(ours_fn), grads(functools.partial(lax_conv, strides=strides))):
    assert_close(ours, theirs)


def test_applies_to_maps_under_the_kernel_everywhere_and_to_1x1_kernels_on_cpu():
  for backend in ("cpu", "gpu", "tpu"):
    assert dot_conv.applies((2, 2), (3, 3), (1, 1), backend)
    assert dot_conv.applies((1,), (3,), (1,), backend)
    assert dot_conv.applies((4, 4), (3, 3), (2, 2), backend)    # output 2x2 under 3x3
    assert dot_conv.applies((2, 2), (3, 3), (2, 2), backend)    # output 1x1
    assert not dot_conv.applies((4, 4), (3, 3), (1, 1), backend)  # normal conv path
    assert not dot_conv.applies((3, 3), (3, 3), (1, 1), backend)
    assert not dot_conv.applies((2, 4), (3, 3), (1, 1), backend)  # under in one dimension only
    assert not dot_conv.applies((6, 6), (3, 3), (2, 2), backend)  # output 3x3
    assert not dot_conv.applies((64, 64), (7, 7), (2, 2), backend)
  assert dot_conv.applies((16, 16), (1, 1), (1, 1), "cpu")
  assert dot_conv.applies((16,), (1,), (2,), "cpu")
  assert not dot_conv.applies((16, 16), (1, 1), (1, 1), "gpu")
  assert not dot_conv.applies((16, 16), (1, 1), (2, 2), "tpu")


def test_module_has_nn_conv_parameter_and_rejects_what_it_cannot_compute():
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 4, 4, 6)), jnp.float32)
  args = dict(features=4, kernel_size=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
              use_bias=False, kernel_init=conv_init, name="conv")
  key = jax.random.key(3)
  ours = dot_conv.DotConv(**args).init(key, x)
  theirs = nn.Conv(**args).init(key, x)
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  np.testing.assert_array_equal(ours["params"]["kernel"], theirs["params"]["kernel"])
  assert_close(dot_conv.DotConv(**args).apply(ours, x), nn.Conv(**args).apply(theirs, x))
  with pytest.raises(ValueError, match="nn.Conv"):
    dot_conv.DotConv(**{**args, "padding": ((0, 0), (0, 0))}).init(key, x)
  with pytest.raises(ValueError, match="nn.Conv"):
    dot_conv.DotConv(**{**args, "use_bias": True}).init(key, x)


@pytest.mark.parametrize("spatial_dims", [2, 1])
def test_resnet_output_and_gradients_are_unchanged(spatial_dims, monkeypatch):
  """ResNet-18 at 32 px (standard stem): layer3 runs on 2x2 maps, layer4 on 1x1."""
  model = models.resnet("resnet18", base_width=4, spatial_dims=spatial_dims)
  x = jnp.asarray(np.random.default_rng(2).standard_normal((4, *(32,) * spatial_dims, 3)),
                  jnp.float32)
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0, impl="rbg"), x)

  def run():
    """Jaxpr, output and parameter gradients, traced afresh (jit caches by function)."""
    def loss(params):
      out, _ = model.apply({**variables, "params": params}, x, train=True,
                           mutable=["batch_stats"])
      return jnp.sum(out**2), out
    grad_fn = jax.value_and_grad(loss, has_aux=True)
    return str(jax.make_jaxpr(loss)(variables["params"])), jax.jit(grad_fn)(variables["params"])

  ours_jaxpr, ours = run()
  monkeypatch.setattr(dot_conv, "applies", lambda *_: False)  # every layer as nn.Conv
  conv_jaxpr, theirs = run()

  # 20 convs. As dots on CPU: the 3 1x1 downsamples, and every 3x3 conv of layer3 and layer4
  # (maps or, for the strided first ones, outputs of 2x2 and 1x1, under 3x3). Kept: the stem,
  # layer1 (8x8) and layer2's four 3x3 convs (its stride-2 one outputs 4x4).
  assert jax.default_backend() == "cpu"
  assert conv_jaxpr.count("conv_general_dilated") == 20
  assert ours_jaxpr.count("conv_general_dilated") == 9
  # Leaves that are exactly 0 in both (e.g. the gradient of a bias that BatchNorm cancels)
  # are compared absolutely.
  worst = max(np.max(np.abs(np.asarray(a, np.float64) - b)) / (np.max(np.abs(b)) or 1.0)
              for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)))
  print(f"largest difference, relative to its leaf's scale: {worst:.1e}")
  assert worst <= RESNET_TOL
