"""Times the full compiled VICReg training step on synthetic data and prints a table.

Usage:
  python experiments/benchmark_step.py                                   # ImageNet ResNet-50
  python experiments/benchmark_step.py --batch_per_device 256 --steps 30
  python experiments/benchmark_step.py --config configs/demo.py --batch_per_device 32
  python experiments/benchmark_step.py --view_batching one_pass          # one row
  python experiments/benchmark_step.py --arch resnet50 --expander 2048-2048-2048 \
      --dtype float32 --image_size 64 --batch_per_device 32 --steps 3      # a CPU
  python experiments/benchmark_step.py --config configs/demo.py --nn_conv_everywhere
  python experiments/benchmark_step.py --compilation_cache_dir /tmp/xla_cache  # twice: cached
  python experiments/benchmark_step.py --profile_dir /tmp/prof   # + experiments/summarize_trace.py

The step is the one pretraining runs (device-side augmentation of both views, both views
through the network with per-view BatchNorm, float32 VICReg loss, LARS), on uint8 view pairs
already on the devices, so the input pipeline is excluded. One row per
``--view_batching`` mode (``config.model.view_batching``: both views in one stacked pass, or
each in its own pass), timed interleaved: ``--rounds`` rounds, each timing every mode for
``--steps`` steps in turn, so that a change of machine load hits all rows alike. Each round
times a mode twice: ``--steps`` steps dispatched back to back with one wait at the end, as
training runs ("step ms", the median over rounds with the lowest and highest round beside
it, and view pairs/s from it), then the same number of steps waiting for each one
("blocking ms", the median step; it adds a host round trip per step). Reports the tracing +
lowering and XLA compile seconds (the latter a cache load when ``--compilation_cache_dir``
already holds the step: "cache hit"), the peak device memory of the process so far (NaN on
CPU; with several rows, a later row's peak includes the earlier rows'), XLA's scratch
memory of the compiled step, the share of the on-device augmentation (augmenting a batch
alone, back to back, over the step) and the load average. ``--profile_dir`` then traces
``--profile_steps`` back-to-back steps of the first mode with ``jax.profiler`` inside one
annotation named ``PROFILE_WINDOW``, which ``experiments/summarize_trace.py`` reads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np

from timing import median_ms, peak_memory_gb, pipelined_ms, use_nn_conv_everywhere
from vicreg_jax import cli, models, optim, parallel, train
from vicreg_jax.config import load_config_file
from vicreg_jax.data import augment

# The trace annotation around the profiled steps: summarize_trace.py's default window.
PROFILE_WINDOW = "benchmark_step.profiled_steps"
# Steps run after compiling, before any timing (first-run allocations, autotuning).
WARMUP_STEPS = 3
# With a cache folder, store every compiled program (JAX's default skips those under 1 s).
CACHE_MIN_COMPILE_S = 0.0
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


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
  parser.add_argument("--steps", type=int, default=20,
                      help="timed steps per mode per round (back to back, then blocking)")
  parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
  parser.add_argument("--compilation_cache_dir", default="",
                      help="JAX's persistent compilation cache in this folder ('': off); a "
                           "second run with the same folder loads the step from it")
  parser.add_argument("--profile_dir", default="",
                      help="after timing, write a jax.profiler trace (with a perfetto "
                           "*.trace.json.gz) of --profile_steps steps of the first mode here")
  parser.add_argument("--profile_steps", type=int, default=3,
                      help="steps in the --profile_dir trace")
  parser.add_argument("--shard_optimizer_state", action="store_true",
                      help="set config.parallel.shard_optimizer_state (ZeRO stage 1)")
  parser.add_argument("--nn_conv_everywhere", action="store_true",
                      help="nn.Conv for every layer (undo models/dot_conv.py's slices + dot "
                           "on maps under the kernel and, on CPU, 1x1 convs; to measure it)")
  args = parser.parse_args()
  modes = args.view_batching.split(",")
  if args.nn_conv_everywhere:
    use_nn_conv_everywhere()
  if args.compilation_cache_dir:
    cli.enable_compilation_cache(args.compilation_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
  cache_hits = []
  jax.monitoring.register_event_listener(
      lambda event, **_: cache_hits.append(event) if event == CACHE_HIT_EVENT else None)

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
  rows = {mode: ModeStep(config, mode, mesh, batch, cache_hits) for mode in modes}
  round_ms = {mode: [] for mode in modes}
  blocking_ms = {mode: [] for mode in modes}
  for _ in range(args.rounds):
    for mode in modes:
      round_ms[mode].append(pipelined_ms(rows[mode].one_step, args.steps))
      blocking_ms[mode].append(median_ms(rows[mode].one_step, args.steps))

  aug = jax.jit(lambda key, a, b: augment.augment_pair(key, a, b, config.augment))
  key = jax.random.key(0)
  jax.block_until_ready(aug(key, batch["view_a"], batch["view_b"]))
  aug_ms = statistics.median(
      pipelined_ms(lambda: aug(key, batch["view_a"], batch["view_b"]), args.steps)
      for _ in range(args.rounds))

  print(f"backend {jax.default_backend()}  device {jax.devices()[0].device_kind} x "
        f"{mesh.devices.size}  jax {jax.__version__}  load average "
        f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after  convs on maps under the "
        f"kernel and 1x1 on CPU: {'nn.Conv' if args.nn_conv_everywhere else 'dots'}")
  print(f"compilation cache: {args.compilation_cache_dir or 'off'}  steps per round "
        f"{args.steps}  rounds {args.rounds}  augmentation alone {aug_ms:.2f} ms/batch")
  header = (f"{'arch':>10} {'expander':>16} {'dtype':>9} {'batch/dev':>9} {'px':>4} "
            f"{'views':>9} {'trace s':>7} {'compile s':>9} {'cache hit':>9} {'step ms':>9} "
            f"{'min-max ms':>15} {'pairs/s':>9} {'blocking ms':>11} {'peak GB':>8} "
            f"{'temp GB':>8} {'aug %':>6}")
  print(header)
  print("-" * len(header))
  for mode in modes:
    row = rows[mode]
    step_ms = statistics.median(round_ms[mode])
    spread = f"{min(round_ms[mode]):.1f}-{max(round_ms[mode]):.1f}"
    print(f"{config.model.arch:>10} {config.model.expander:>16} {config.model.dtype:>9} "
          f"{args.batch_per_device:>9} {size:>4} {mode:>9} {row.trace_s:>7.1f} "
          f"{row.compile_s:>9.1f} {'yes' if row.cache_hit else 'no':>9} {step_ms:>9.1f} "
          f"{spread:>15} {config.batch_size / step_ms * 1e3:>9.0f} "
          f"{statistics.median(blocking_ms[mode]):>11.1f} {row.peak_gb:>8.1f} "
          f"{row.temp_gb:>8.2f} {100 * aug_ms / step_ms:>6.1f}")
  for mode in modes:
    loss = float(rows[mode].metrics["loss"])
    print(f"{mode}: loss {loss:.6f} (finite: {bool(np.isfinite(loss))})")
  if args.profile_dir:
    profile(rows[modes[0]], args.profile_steps, args.profile_dir)
    print(f"profile of {args.profile_steps} {modes[0]} steps: {args.profile_dir} (read it with "
          f"experiments/summarize_trace.py {args.profile_dir})")


def profile(row: ModeStep, steps: int, log_dir: str) -> None:
  """Traces ``steps`` back-to-back steps (one wait at the end) inside ``PROFILE_WINDOW``
  (its ``steps`` argument says how many), and writes the compiled step's HLO text beside
  the trace as ``<module>.hlo.txt`` (op names for summarize_trace.py where the trace has
  none)."""
  os.makedirs(log_dir, exist_ok=True)
  hlo = row.compiled.as_text()
  module = hlo.split(None, 2)[1].rstrip(",")  # first line: "HloModule <name>, ..."
  with open(os.path.join(log_dir, f"{module}.hlo.txt"), "w", encoding="utf-8") as f:
    f.write(hlo)
  jax.block_until_ready(row.one_step())
  with jax.profiler.trace(log_dir, create_perfetto_trace=True):
    with jax.profiler.TraceAnnotation(PROFILE_WINDOW, steps=steps):
      for _ in range(steps):
        metrics = row.one_step()
      jax.block_until_ready(metrics)


class ModeStep:
  """One view-batching mode's compiled step, its fresh state, compile time and memory."""

  def __init__(self, config, mode: str, mesh, batch, cache_hits: list[str]):
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
    lowered = step_fn.lower(self.state, batch)
    self.trace_s = time.perf_counter() - start
    hits_before = len(cache_hits)
    start = time.perf_counter()
    self.compiled = lowered.compile()
    self.compile_s = time.perf_counter() - start
    self.cache_hit = len(cache_hits) > hits_before
    self.temp_gb = self.compiled.memory_analysis().temp_size_in_bytes / 2**30
    for _ in range(WARMUP_STEPS):
      self.state, self.metrics = self.compiled(self.state, batch)
    jax.block_until_ready(self.metrics)
    self.peak_gb = peak_memory_gb()

  def one_step(self):
    self.state, self.metrics = self.compiled(self.state, self.batch)
    return self.metrics


if __name__ == "__main__":
  main()
