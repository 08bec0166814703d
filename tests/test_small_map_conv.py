"""Convolutions on maps smaller than the kernel as slices + one dot: same values, gradients, params.

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
from vicreg_jax.models import small_map_conv

TOL = 1e-5


def assert_close(actual, reference):
  reference = np.asarray(reference, np.float64)
  scale = np.max(np.abs(reference))
  np.testing.assert_allclose(np.asarray(actual, np.float64), reference, rtol=0, atol=TOL * scale)


def conv_f64(x, kernel):
  """Stride-1 convolution with symmetric zero padding (k - 1) // 2, from its definition."""
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  map_shape, kernel_size = x.shape[1:-1], kernel.shape[:-2]
  y = np.zeros((*x.shape[:-1], kernel.shape[-1]))
  for out in itertools.product(*map(range, map_shape)):
    for tap in itertools.product(*map(range, kernel_size)):
      src = tuple(o + t - (k - 1) // 2 for o, t, k in zip(out, tap, kernel_size))
      if all(0 <= s < m for s, m in zip(src, map_shape)):
        y[(slice(None), *out)] += x[(slice(None), *src)] @ kernel[tap]
  return y


def lax_conv(x, kernel):
  d = x.ndim - 2
  pads = [((k - 1) // 2,) * 2 for k in kernel.shape[:-2]]
  spec = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}[d]
  return jax.lax.conv_general_dilated(x, kernel, (1,) * d, pads, dimension_numbers=spec)


# (map shape, kernel size, in channels, out channels): 2-D and 1-D, 1x1 and 2x2 maps.
CASES = [((1, 1), (3, 3), 8, 5), ((2, 2), (3, 3), 16, 7), ((2, 2), (3, 3), 64, 32),
         ((1, 2), (3, 3), 3, 4), ((3, 3), (5, 5), 4, 6), ((1,), (3,), 8, 5), ((2,), (3,), 64, 16),
         ((2,), (5,), 5, 3)]


@pytest.mark.parametrize("map_shape,kernel_size,cin,cout", CASES)
def test_values_and_gradients_equal_the_convolution(map_shape, kernel_size, cin, cout):
  rng = np.random.default_rng(sum(map_shape) * 1000 + cin)
  x = jnp.asarray(rng.standard_normal((3, *map_shape, cin)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((*kernel_size, cin, cout)), jnp.float32)
  cotangent = jnp.asarray(rng.standard_normal((3, *map_shape, cout)), jnp.float32)
  assert small_map_conv.applies(map_shape, kernel_size, (1,) * len(map_shape))

  y = jax.jit(small_map_conv.shifted_dot_conv)(x, kernel)
  assert y.shape == (3, *map_shape, cout) and y.dtype == jnp.float32
  assert_close(y, conv_f64(x, kernel))

  def grads(conv):
    return jax.jit(jax.grad(lambda a, b: jnp.sum(conv(a, b) * cotangent), argnums=(0, 1)))(
        x, kernel)

  for ours, reference in zip(grads(small_map_conv.shifted_dot_conv), grads(lax_conv)):
    assert_close(ours, reference)


def test_applies_only_to_stride_1_kernels_larger_than_the_map():
  assert small_map_conv.applies((2, 2), (3, 3), (1, 1))
  assert small_map_conv.applies((1,), (3,), (1,))
  assert not small_map_conv.applies((4, 4), (3, 3), (1, 1))   # normal conv path
  assert not small_map_conv.applies((3, 3), (3, 3), (1, 1))
  assert not small_map_conv.applies((2, 4), (3, 3), (1, 1))   # smaller in one dimension only
  assert not small_map_conv.applies((2, 2), (3, 3), (2, 2))
  assert not small_map_conv.applies((1, 1), (1, 1), (1, 1))


def test_module_has_nn_conv_parameter_and_rejects_what_it_cannot_compute():
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 2, 2, 6)), jnp.float32)
  args = dict(features=4, kernel_size=(3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
              use_bias=False, kernel_init=conv_init, name="conv")
  key = jax.random.key(3)
  ours = small_map_conv.SmallMapConv(**args).init(key, x)
  theirs = nn.Conv(**args).init(key, x)
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  np.testing.assert_array_equal(ours["params"]["kernel"], theirs["params"]["kernel"])
  with pytest.raises(ValueError, match="nn.Conv"):
    small_map_conv.SmallMapConv(**args).init(key, jnp.zeros((2, 4, 4, 6)))
  with pytest.raises(ValueError, match="nn.Conv"):
    small_map_conv.SmallMapConv(**{**args, "padding": ((0, 0), (0, 0))}).init(key, x)


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
  monkeypatch.setattr(small_map_conv, "applies", lambda *_: False)  # every layer as nn.Conv
  conv_jaxpr, theirs = run()

  # 20 convs; 6 stride-1 3x3 ones see maps under 3x3 (layer3_0_conv2, layer3_1_*, layer4_0_conv2,
  # layer4_1_*); the 4x4 maps of layer2 (and layer3_0_conv1's stride 2) keep nn.Conv.
  assert conv_jaxpr.count("conv_general_dilated") == 20
  assert ours_jaxpr.count("conv_general_dilated") == 14
  assert_close(ours[0][1], theirs[0][1])
  for a, b in zip(jax.tree.leaves(ours[1]), jax.tree.leaves(theirs[1])):
    assert_close(a, b)
