"""Times the jitted VICReg loss (value + gradient) over a grid of (n, d) and prints a table.

Usage:
  python experiments/benchmark_loss.py                      # CPU-sized default grid
  python experiments/benchmark_loss.py --grid 2048x8192,4096x65536 --torch

For each shape and covariance path it reports the median wall time of the compiled
value-and-grad (warm-up excluded, ``block_until_ready``), the compiled program's memory
(arguments + outputs + temporaries, from XLA's memory analysis) and the relative difference
of the loss value (and, for small shapes, of d loss / d z_a) against float64 NumPy. ``--torch`` adds the official PyTorch
formula (all-gather-free single-device version of ``main_vicreg.py``) on the same device.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from timing import median_ms, median_wall_ms
from vicreg_jax import losses

PRECISIONS = {
    "highest": "highest",
    "bf16_3x": "bf16_3x",
    "tf32_3x": jax.lax.DotAlgorithmPreset.TF32_TF32_F32_X3,
    "xla_default": jax.lax.Precision.DEFAULT,
}
# Float64 reference gradients are computed on the host only up to this many entries.
MAX_GRAD_CHECK_ENTRIES = 2048 * 8192


def parse_grid(text: str) -> list[tuple[int, int]]:
  return [tuple(int(v) for v in item.split("x")) for item in text.split(",")]


def reference(a: np.ndarray, b: np.ndarray, with_grad: bool):
  """Float64 VICReg value (official conventions) and, optionally, d loss / d a."""
  a, b = a.astype(np.float64), b.astype(np.float64)
  n, d = a.shape
  total = 25.0 * np.mean((a - b) ** 2)
  grad = 50.0 * (a - b) / (n * d)
  for x, sign in ((a, 1.0), (b, 0.0)):
    xc = x - x.mean(0)
    var = (xc ** 2).sum(0) / (n - 1)
    std = np.sqrt(var + 1e-4)
    total += 25.0 * np.maximum(1.0 - std, 0).mean() / 2
    g = xc @ xc.T if n < d else None
    frob = (g ** 2).sum() if n < d else ((xc.T @ xc) ** 2).sum()
    v = (xc ** 2).sum(0)
    total += (frob - (v ** 2).sum()) / ((n - 1) ** 2 * d)
    if with_grad and sign:
      gx = (g @ xc if n < d else xc @ (xc.T @ xc)) - xc * v
      grad += 4 * gx / ((n - 1) ** 2 * d) - 12.5 * ((std < 1) / (std * d)) * xc / (n - 1)
  return float(total), (grad if with_grad else None)


def torch_official_ms(a: np.ndarray, b: np.ndarray, repeats: int) -> float:
  """Median ms of value+grad of the official formula in PyTorch (fp32, d x d covariance)."""
  import torch  # pylint: disable=g-import-not-at-top
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  x = torch.tensor(a, device=dev, requires_grad=True)
  y = torch.tensor(b, device=dev, requires_grad=True)
  n, d = a.shape
  mask = ~torch.eye(d, dtype=torch.bool, device=dev)

  def step():
    x.grad = y.grad = None
    inv = torch.nn.functional.mse_loss(x, y)
    xc, yc = x - x.mean(0), y - y.mean(0)
    std_x = torch.sqrt(xc.var(0) + 1e-4)
    std_y = torch.sqrt(yc.var(0) + 1e-4)
    var = (torch.relu(1 - std_x).mean() + torch.relu(1 - std_y).mean()) / 2
    cov = ((xc.T @ xc / (n - 1))[mask].pow(2).sum() / d
           + (yc.T @ yc / (n - 1))[mask].pow(2).sum() / d)
    (25 * inv + 25 * var + cov).backward()
    if dev == "cuda":
      torch.cuda.synchronize()

  return median_wall_ms(step, repeats)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--grid", default="256x2048,1024x512,512x4096",
                      help="comma-separated NxD shapes")
  parser.add_argument("--methods", default="covariance,gram")
  parser.add_argument("--precision", default="highest,bf16_3x", help=",".join(PRECISIONS))
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--max_cov_dim", type=int, default=32768,
                      help="skip the d x d path above this d (its matrix is 4 d^2 bytes)")
  parser.add_argument("--torch", action="store_true", help="also time the PyTorch formula")
  args = parser.parse_args()

  print(f"backend: {jax.default_backend()}  device: {jax.devices()[0].device_kind}")
  header = (f"{'n':>6} {'d':>6} {'method':>10} {'precision':>9} {'ms':>9} {'compile s':>9} "
            f"{'memory MB':>10} {'val err':>9} {'grad err':>9}")
  print(header)
  print("-" * len(header))
  rng = np.random.default_rng(0)
  for n, d in parse_grid(args.grid):
    a = rng.standard_normal((n, d), dtype=np.float32)
    b = (a + 0.5 * rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)
    ref, ref_grad = reference(a, b, with_grad=n * d <= MAX_GRAD_CHECK_ENTRIES)
    xa, xb = jnp.asarray(a), jnp.asarray(b)
    for method in args.methods.split(","):
      if method == "covariance" and d > args.max_cov_dim:
        continue
      for prec_name in args.precision.split(","):
        loss_fn = functools.partial(losses.vicreg_loss, cov_method=method,
                                    precision=PRECISIONS[prec_name])
        fn = jax.jit(jax.value_and_grad(lambda x, y, f=loss_fn: f(x, y)[0], argnums=(0, 1)))
        start = time.perf_counter()
        try:
          compiled = fn.lower(xa, xb).compile()
        except Exception as err:  # pylint: disable=broad-except
          # An unsupported precision on this backend is reported, not fatal to the sweep.
          print(f"{n:>6} {d:>6} {method:>10} {prec_name:>9}  unsupported: {str(err)[:60]}")
          continue
        compile_s = time.perf_counter() - start
        mem = compiled.memory_analysis()
        mem_mb = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                  + mem.temp_size_in_bytes) / 2**20 if mem is not None else float("nan")
        value, (grad_a, _) = compiled(xa, xb)
        grad_err = (np.abs(np.asarray(grad_a, np.float64) - ref_grad).max()
                    / np.abs(ref_grad).max() if ref_grad is not None else float("nan"))
        ms = median_ms(lambda: compiled(xa, xb), args.repeats)
        print(f"{n:>6} {d:>6} {method:>10} {prec_name:>9} {ms:>9.2f} {compile_s:>9.1f} "
              f"{mem_mb:>10.0f} {abs(float(value) / ref - 1):>9.1e} {grad_err:>9.1e}")
    if args.torch and d <= args.max_cov_dim:
      print(f"{n:>6} {d:>6} {'torch':>10} {'fp32':>9} "
            f"{torch_official_ms(a, b, args.repeats):>9.2f}")


if __name__ == "__main__":
  main()
