"""Times each convolution of ResNet-50 at one image size, forward and both gradients: as
``lax.conv_general_dilated`` (``nn.Conv``), as the model's slices + dot
(``models/dot_conv.py``), and optionally PyTorch's on the same cores; prints a table.

Usage:
  python experiments/benchmark_convs.py                       # 64 px, 32 examples, + PyTorch
  python experiments/benchmark_convs.py --image_size 96 --no_torch

One row per distinct convolution (input map, channels, kernel, stride) of the official
ResNet-50 (v1.5: the stride on the 3x3 conv), float32, channels last for JAX and NCHW for
PyTorch. "model" says which of the two the model uses on this backend
(``dot_conv.applies``). Median of ``--repeats`` calls after one warm-up, in ms; "dx" is the
input gradient, "dw" the kernel gradient. The stem's dx is never computed in training (its
input is the image) and is shown for completeness.
"""

from __future__ import annotations

import argparse
import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from timing import median_ms, median_wall_ms
from vicreg_jax import models
from vicreg_jax.models import dot_conv

def resnet50_convs(image_size: int) -> list[tuple[int, int, int, int, int]]:
  """Distinct (map, cin, cout, kernel, stride) of ResNet-50's convolutions, in call order,
  read off the model itself (``nn.Conv`` and ``DotConv`` calls while tracing its init)."""
  convs = []

  def record(call, args, kwargs, context):
    module = context.module
    if context.method_name == "__call__" and isinstance(module, (nn.Conv, dot_conv.DotConv)):
      x = args[0]
      convs.append((x.shape[1], x.shape[-1], module.features, module.kernel_size[0],
                    module.strides[0]))
    return call(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(functools.partial(models.resnet("resnet50").init, train=False),
                   jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)))
  return list(dict.fromkeys(convs))


def jax_times(fn, x, w, repeats: int) -> list[float]:
  y = fn(x, w)
  g = jnp.ones_like(y)
  fwd = jax.jit(fn)
  dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: fn(x, w), x)[1](g)[0])
  dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: fn(x, w), w)[1](g)[0])
  jax.block_until_ready((fwd(x, w), dx(x, w, g), dw(x, w, g)))  # compile outside the timing
  return [median_ms(lambda: fwd(x, w), repeats), median_ms(lambda: dx(x, w, g), repeats),
          median_ms(lambda: dw(x, w, g), repeats)]


def torch_times(size, cin, cout, k, s, batch, repeats) -> list[float]:
  import torch  # pylint: disable=g-import-not-at-top
  x, w = torch.randn(batch, cin, size, size), torch.randn(cout, cin, k, k)
  g = torch.ones_like(torch.nn.functional.conv2d(x, w, stride=s, padding=k // 2))
  calls = [lambda: torch.nn.functional.conv2d(x, w, stride=s, padding=k // 2),
           lambda: torch.nn.grad.conv2d_input(x.shape, w, g, stride=s, padding=k // 2),
           lambda: torch.nn.grad.conv2d_weight(x, w.shape, g, stride=s, padding=k // 2)]
  return [median_wall_ms(call, repeats) for call in calls]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--image_size", type=int, default=64)
  parser.add_argument("--batch", type=int, default=32, help="examples (one view)")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch columns")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  print(f"backend {jax.default_backend()}  jax {jax.__version__}  batch {args.batch}  "
        f"{args.image_size} px  load average {os.getloadavg()[0]:.1f}")
  header = (f"{'map':>4} {'cin':>5} {'cout':>5} {'k':>2} {'s':>2} {'model':>7} | "
            f"{'conv fwd':>8} {'dx':>7} {'dw':>7} | {'dot fwd':>8} {'dx':>7} {'dw':>7}"
            + ("" if args.no_torch else f" | {'torch fwd':>9} {'dx':>7} {'dw':>7}"))
  print(header)
  print("-" * len(header))
  for size, cin, cout, k, s in resnet50_convs(args.image_size):
    x = jnp.asarray(rng.standard_normal((args.batch, size, size, cin)), jnp.float32)
    w = jnp.asarray(0.05 * rng.standard_normal((k, k, cin, cout)), jnp.float32)
    conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(s, s),
                             padding=[(k // 2, k // 2)] * 2,
                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
    dot = functools.partial(dot_conv.shifted_dot_conv, strides=(s, s))
    used = "dot" if dot_conv.applies((size, size), (k, k), (s, s), jax.default_backend()) else "conv"
    row = jax_times(conv, x, w, args.repeats) + jax_times(dot, x, w, args.repeats)
    line = (f"{size:>4} {cin:>5} {cout:>5} {k:>2} {s:>2} {used:>7} | {row[0]:8.1f} {row[1]:7.1f} "
            f"{row[2]:7.1f} | {row[3]:8.1f} {row[4]:7.1f} {row[5]:7.1f}")
    if not args.no_torch:
      t = torch_times(size, cin, cout, k, s, args.batch, args.repeats)
      line += f" | {t[0]:9.1f} {t[1]:7.1f} {t[2]:7.1f}"
    print(line, flush=True)


if __name__ == "__main__":
  main()
