"""Times the multi-modal (waveform <-> log-mel) VICReg training step and prints a table.

Usage:
  python experiments/benchmark_audio.py                                  # ESC-50 recipe
  python experiments/benchmark_audio.py --config configs/audio_demo.py --batch_per_device 16
  python experiments/benchmark_audio.py --dtype float32 --steps 10

The step is the one pretraining runs on ``data.source=audio``: both views made on the
device from random clips already there (time crops, gain, noise; the log-mel spectrogram
of view b), a 1-D ResNet on the waveform and a 2-D ResNet on the log-mel image, the VICReg
loss and the optimiser (AdamW in the recipes). The input decoding is excluded. Reports
compile seconds, median step ms, clip pairs/s, peak device memory and the share of the
view making (crops + spectrogram) and of the spectrogram alone.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from timing import median_ms, peak_memory_gb
from vicreg_jax import models, optim, parallel, train
from vicreg_jax.config import load_config_file
from vicreg_jax.data import audio_source, audio_views


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/esc50_multimodal.py")
  parser.add_argument("--batch_per_device", type=int, default=64)
  parser.add_argument("--dtype", default=None, help="override config.model.dtype")
  parser.add_argument("--steps", type=int, default=20)
  args = parser.parse_args()

  config = load_config_file(args.config)
  if args.dtype is not None:
    config.model.dtype = args.dtype
  mesh = parallel.make_mesh()
  config.batch_size = args.batch_per_device * mesh.devices.size
  audio = config.audio
  samples = audio_source.clip_samples(audio)
  rng = np.random.default_rng(0)
  clips = parallel.host_to_global(mesh, {"clips": (0.1 * rng.standard_normal(
      (config.batch_size, samples))).astype(np.float32)})["clips"]

  model = models.create_model(config.model)
  tx, schedule = optim.create_optimizer(config.optim, global_batch=config.batch_size,
                                        steps_per_epoch=1000, total_steps=100_000)
  state = train.create_train_state(config, model, tx, mesh)
  make_views = jax.jit(lambda key, c: audio_views.audio_view_pair(key, c, audio),
                       out_shardings=parallel.batch_sharding(mesh))
  step_fn = train.compile_train_step(train.make_train_step(config, model, tx, schedule), mesh)

  def views(step):
    view_a, view_b = make_views(jax.random.key(step), clips)
    return {"view_a": view_a, "view_b": view_b}

  batch = views(0)
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  for _ in range(3):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)

  def one_step():  # views + step, as pretraining runs them
    nonlocal state
    state, m = compiled(state, views(1))
    return m

  step_ms = median_ms(one_step, args.steps)
  views_ms = median_ms(lambda: views(2), args.steps)
  crop_b = audio_views.seconds_to_samples(audio.crop_seconds_b, audio.sample_rate)
  mel = jax.jit(lambda w: audio_views.log_mel(w, audio),
                out_shardings=parallel.batch_sharding(mesh))
  waves = jnp.asarray(clips)[:, :crop_b]
  jax.block_until_ready(mel(waves))
  mel_ms = median_ms(lambda: mel(waves), args.steps)

  shape_a, shape_b = audio_source.view_shapes(audio, args.batch_per_device)
  print(f"backend {jax.default_backend()}  device {jax.devices()[0].device_kind} x "
        f"{mesh.devices.size}  jax {jax.__version__}")
  header = (f"{'dtype':>9} {'batch/dev':>9} {'wave':>12} {'log-mel':>16} {'compile s':>9} "
            f"{'step ms':>9} {'pairs/s':>9} {'peak GB':>8} {'views %':>8} {'mel %':>6}")
  print(header)
  print("-" * len(header))
  print(f"{config.model.dtype:>9} {args.batch_per_device:>9} {str(shape_a[1:]):>12} "
        f"{str(shape_b[1:]):>16} {compile_s:>9.1f} {step_ms:>9.1f} "
        f"{config.batch_size / step_ms * 1e3:>9.0f} {peak_memory_gb():>8.1f} "
        f"{100 * views_ms / step_ms:>8.1f} {100 * mel_ms / step_ms:>6.1f}")
  print(f"loss {float(metrics['loss']):.4f} (finite: {bool(np.isfinite(metrics['loss']))})")


if __name__ == "__main__":
  main()
