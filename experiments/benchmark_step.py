"""Times the full compiled VICReg training step on synthetic data and prints a table.

Usage:
  python experiments/benchmark_step.py                                   # ImageNet ResNet-50
  python experiments/benchmark_step.py --batch_per_device 256 --steps 30
  python experiments/benchmark_step.py --config configs/demo.py --batch_per_device 32
  python experiments/benchmark_step.py --view_batching one_pass          # one row
  python experiments/benchmark_step.py --arch resnet50 --expander 2048-2048-2048 \
      --dtype float32 --image_size 64 --batch_per_device 32 --steps 3      # a CPU
  python experiments/benchmark_step.py --config configs/demo.py --small_map_convs_as_convs

The step is the one pretraining runs (device-side augmentation of both views, both views
through the network with per-view BatchNorm, float32 VICReg loss, LARS), on uint8 view pairs
already on the devices, so the input pipeline is excluded. One row per
``--view_batching`` mode (``config.model.view_batching``: both views in one stacked pass, or
each in its own pass), timed interleaved: ``--rounds`` rounds, each timing every mode for
``--steps`` steps in turn, so that a change of machine load hits all rows alike; step ms is
the median of the rounds' medians, with the lowest and highest round beside it. Reports
compile seconds, step ms, view pairs/s, the peak device memory of the process so far (NaN on
CPU; with several rows, a later row's peak includes the earlier rows'), XLA's scratch
memory of the compiled step, the share of the on-device augmentation, and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np

from timing import median_ms, peak_memory_gb, use_nn_conv_on_small_maps
from vicreg_jax import models, optim, parallel, train
from vicreg_jax.config import load_config_file
from vicreg_jax.data import augment


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/imagenet_resnet50.py:ep100")
  parser.add_argument("--batch_per_device", type=int, default=256)
  parser.add_argument("--arch", default=None, help="override config.model.arch")
  parser.add_argument("--expander", default=None, help="override config.model.expander")
  parser.add_argument("--dtype", default=None, help="override config.model.dtype")
  parser.add_argument("--loss_precision", default=None, help="override config.loss.precision")
  parser.add_argument("--image_size", type=int, default=None,
                      help="override config.augment.image_size (pixels)")
  parser.add_argument("--view_batching", default="one_pass,two_pass",
                      help="comma-separated config.model.view_batching modes, one row each")
  parser.add_argument("--steps", type=int, default=20, help="timed steps per mode per round")
  parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
  parser.add_argument("--shard_optimizer_state", action="store_true",
                      help="set config.parallel.shard_optimizer_state (ZeRO stage 1)")
  parser.add_argument("--small_map_convs_as_convs", action="store_true",
                      help="nn.Conv also on maps smaller than the kernel (undo the model's "
                           "slices + dot, to measure it)")
  args = parser.parse_args()
  modes = args.view_batching.split(",")
  if args.small_map_convs_as_convs:
    use_nn_conv_on_small_maps()

  config = load_config_file(args.config)
  for key, value in (("arch", args.arch), ("expander", args.expander), ("dtype", args.dtype)):
    if value is not None:
      config.model[key] = value
  if args.loss_precision is not None:
    config.loss.precision = args.loss_precision
  if args.image_size is not None:
    config.augment.image_size = args.image_size
  config.parallel.shard_optimizer_state = args.shard_optimizer_state
  mesh = parallel.make_mesh()
  config.batch_size = args.batch_per_device * mesh.devices.size
  size = config.augment.image_size

  rng = np.random.default_rng(0)
  batch = parallel.host_to_global(mesh, {
      name: rng.integers(0, 256, (config.batch_size, size, size, 3), dtype=np.uint8)
      for name in ("view_a", "view_b")})
  load_before = os.getloadavg()
  rows = {mode: ModeStep(config, mode, mesh, batch) for mode in modes}
  round_ms = {mode: [] for mode in modes}
  for _ in range(args.rounds):
    for mode in modes:
      round_ms[mode].append(rows[mode].time_ms(args.steps))

  aug = jax.jit(lambda key, a, b: augment.augment_pair(key, a, b, config.augment))
  key = jax.random.key(0)
  jax.block_until_ready(aug(key, batch["view_a"], batch["view_b"]))
  aug_ms = median_ms(lambda: aug(key, batch["view_a"], batch["view_b"]), args.steps)

  print(f"backend {jax.default_backend()}  device {jax.devices()[0].device_kind} x "
        f"{mesh.devices.size}  jax {jax.__version__}  load average "
        f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after  convs on maps under the "
        f"kernel: {'nn.Conv' if args.small_map_convs_as_convs else 'slices + dot'}")
  header = (f"{'arch':>10} {'expander':>16} {'dtype':>9} {'batch/dev':>9} {'px':>4} "
            f"{'views':>9} {'compile s':>9} {'step ms':>9} {'min-max ms':>15} {'pairs/s':>9} "
            f"{'peak GB':>8} {'temp GB':>8} {'aug %':>6}")
  print(header)
  print("-" * len(header))
  for mode in modes:
    step_ms = statistics.median(round_ms[mode])
    spread = f"{min(round_ms[mode]):.1f}-{max(round_ms[mode]):.1f}"
    print(f"{config.model.arch:>10} {config.model.expander:>16} {config.model.dtype:>9} "
          f"{args.batch_per_device:>9} {size:>4} {mode:>9} {rows[mode].compile_s:>9.1f} "
          f"{step_ms:>9.1f} {spread:>15} {config.batch_size / step_ms * 1e3:>9.0f} "
          f"{rows[mode].peak_gb:>8.1f} {rows[mode].temp_gb:>8.2f} "
          f"{100 * aug_ms / step_ms:>6.1f}")
  for mode in modes:
    loss = float(rows[mode].metrics["loss"])
    print(f"{mode}: loss {loss:.6f} (finite: {bool(np.isfinite(loss))})")


class ModeStep:
  """One view-batching mode's compiled step, its fresh state, compile time and memory."""

  def __init__(self, config, mode: str, mesh, batch):
    config = config.copy_and_resolve_references()
    config.model.view_batching = mode
    model = models.create_model(config.model)
    tx, schedule = optim.create_optimizer(config.optim, global_batch=config.batch_size,
                                          steps_per_epoch=1000, total_steps=100_000)
    self.state = train.create_train_state(config, model, tx, mesh)
    self.batch = batch
    step_fn = train.compile_train_step(
        train.make_train_step(config, model, tx, schedule, mesh), mesh,
        train.state_shardings(config, mesh, self.state))
    start = time.perf_counter()
    self.compiled = step_fn.lower(self.state, batch).compile()
    self.compile_s = time.perf_counter() - start
    self.temp_gb = self.compiled.memory_analysis().temp_size_in_bytes / 2**30
    for _ in range(3):
      self.state, self.metrics = self.compiled(self.state, batch)
    jax.block_until_ready(self.metrics)
    self.peak_gb = peak_memory_gb()

  def one_step(self):
    self.state, self.metrics = self.compiled(self.state, self.batch)
    return self.metrics

  def time_ms(self, steps: int) -> float:
    """Median ms of ``steps`` steps."""
    return median_ms(self.one_step, steps)


if __name__ == "__main__":
  main()
