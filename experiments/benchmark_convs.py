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

import jax
import jax.numpy as jnp
import numpy as np

from timing import median_ms
from vicreg_jax.models import dot_conv
from vicreg_jax.models.resnet import STAGE_SIZES

STEM_KERNEL, STEM_STRIDE, STEM_WIDTH = 7, 2, 64
STAGE_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4


def resnet50_convs(image_size: int) -> list[tuple[int, int, int, int, int]]:
  """Distinct (map, cin, cout, kernel, stride) of ResNet-50's convolutions, in order."""
  convs = [(image_size, 3, STEM_WIDTH, STEM_KERNEL, STEM_STRIDE)]
  size = -(-image_size // 2) // 2  # stem stride 2, max pool stride 2 (padding 3 / 1)
  cin = STEM_WIDTH
  for stage, (blocks, width) in enumerate(zip(STAGE_SIZES["resnet50"], STAGE_WIDTHS)):
    for block in range(blocks):
      stride = 2 if stage > 0 and block == 0 else 1
      out = -(-size // stride)
      convs += [(size, cin, width, 1, 1), (size, width, width, 3, stride),
                (out, width, width * EXPANSION, 1, 1)]
      if block == 0:
        convs.append((size, cin, width * EXPANSION, 1, stride))
      cin, size = width * EXPANSION, out
  return list(dict.fromkeys(convs))


def jax_times(fn, x, w, repeats: int) -> list[float]:
  y = fn(x, w)
  g = jnp.ones_like(y)
  fwd = jax.jit(fn)
  dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: fn(x, w), x)[1](g)[0])
  dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: fn(x, w), w)[1](g)[0])
  return [median_ms(lambda: fwd(x, w), repeats), median_ms(lambda: dx(x, w, g), repeats),
          median_ms(lambda: dw(x, w, g), repeats)]


def torch_times(size, cin, cout, k, s, batch, repeats) -> list[float]:
  import time  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  x, w = torch.randn(batch, cin, size, size), torch.randn(cout, cin, k, k)
  g = torch.ones_like(torch.nn.functional.conv2d(x, w, stride=s, padding=k // 2))
  calls = [lambda: torch.nn.functional.conv2d(x, w, stride=s, padding=k // 2),
           lambda: torch.nn.grad.conv2d_input(x.shape, w, g, stride=s, padding=k // 2),
           lambda: torch.nn.grad.conv2d_weight(x, w.shape, g, stride=s, padding=k // 2)]
  times = []
  for call in calls:
    call()
    runs = []
    for _ in range(repeats):
      start = time.perf_counter()
      call()
      runs.append(time.perf_counter() - start)
    times.append(1e3 * float(np.median(runs)))
  return times


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
