"""Times the full compiled VICReg training step on synthetic data and prints a table.

Usage:
  python experiments/benchmark_step.py                                   # ImageNet ResNet-50
  python experiments/benchmark_step.py --batch_per_device 256 --steps 30
  python experiments/benchmark_step.py --config configs/demo.py --batch_per_device 32
  python experiments/benchmark_step.py --config configs/demo.py --small_map_convs_as_convs

The step is the one pretraining runs (device-side augmentation of both views, two forward
passes with per-view BatchNorm, float32 VICReg loss, LARS), on uint8 view pairs already on
the devices, so the input pipeline is excluded. Reports compile seconds, median step ms,
view pairs/s, peak device memory and, separately, the share of the on-device augmentation.
"""

from __future__ import annotations

import argparse
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
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--shard_optimizer_state", action="store_true",
                      help="set config.parallel.shard_optimizer_state (ZeRO stage 1)")
  parser.add_argument("--small_map_convs_as_convs", action="store_true",
                      help="nn.Conv also on maps smaller than the kernel (undo the model's "
                           "slices + dot, to measure it)")
  args = parser.parse_args()
  if args.small_map_convs_as_convs:
    use_nn_conv_on_small_maps()

  config = load_config_file(args.config)
  for key, value in (("arch", args.arch), ("expander", args.expander), ("dtype", args.dtype)):
    if value is not None:
      config.model[key] = value
  if args.loss_precision is not None:
    config.loss.precision = args.loss_precision
  config.parallel.shard_optimizer_state = args.shard_optimizer_state
  mesh = parallel.make_mesh()
  config.batch_size = args.batch_per_device * mesh.devices.size
  size = config.augment.image_size

  model = models.create_model(config.model)
  tx, schedule = optim.create_optimizer(config.optim, global_batch=config.batch_size,
                                        steps_per_epoch=1000, total_steps=100_000)
  state = train.create_train_state(config, model, tx, mesh)
  rng = np.random.default_rng(0)
  batch = parallel.host_to_global(mesh, {
      name: rng.integers(0, 256, (config.batch_size, size, size, 3), dtype=np.uint8)
      for name in ("view_a", "view_b")})

  step_fn = train.compile_train_step(train.make_train_step(config, model, tx, schedule, mesh),
                                     mesh, train.state_shardings(config, mesh, state))
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  for _ in range(3):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)

  def one_step():
    nonlocal state
    state, m = compiled(state, batch)
    return m

  step_ms = median_ms(one_step, args.steps)
  aug = jax.jit(lambda key, a, b: augment.augment_pair(key, a, b, config.augment))
  key = jax.random.key(0)
  jax.block_until_ready(aug(key, batch["view_a"], batch["view_b"]))
  aug_ms = median_ms(lambda: aug(key, batch["view_a"], batch["view_b"]), args.steps)

  print(f"backend {jax.default_backend()}  device {jax.devices()[0].device_kind} x "
        f"{mesh.devices.size}  jax {jax.__version__}  convs on maps under the kernel: "
        f"{'nn.Conv' if args.small_map_convs_as_convs else 'slices + dot'}")
  header = (f"{'arch':>10} {'expander':>16} {'dtype':>9} {'batch/dev':>9} {'px':>4} "
            f"{'compile s':>9} {'step ms':>9} {'pairs/s':>9} {'peak GB':>8} {'aug %':>6}")
  print(header)
  print("-" * len(header))
  print(f"{config.model.arch:>10} {config.model.expander:>16} {config.model.dtype:>9} "
        f"{args.batch_per_device:>9} {size:>4} {compile_s:>9.1f} {step_ms:>9.1f} "
        f"{config.batch_size / step_ms * 1e3:>9.0f} {peak_memory_gb():>8.1f} "
        f"{100 * aug_ms / step_ms:>6.1f}")
  print(f"loss {float(metrics['loss']):.4f} (finite: {bool(np.isfinite(metrics['loss']))})")


if __name__ == "__main__":
  main()
