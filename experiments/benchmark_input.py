"""Host-stage throughput of the streaming pipeline (decode + 2 random-resized crops) per core.

Usage: python experiments/benchmark_input.py [--images 64] [--batches 30]

Writes scikit-learn's two bundled photos as random ImageNet-sized crops (~400x350, JPEG
quality 90) into a temporary class folder, then times ``pipeline.build_dataset`` at 224 px
with 1 and with all CPU threads, reporting view pairs/s and pairs/s per core. The device
side (flip, jitter, grayscale, blur, solarize) is timed by benchmark_step.py (``aug %``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def write_jpegs(root: str, count: int) -> None:
  import sklearn.datasets  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
  photos = [tf.io.decode_jpeg(tf.io.read_file(os.path.join(folder, name))).numpy()
            for name in ("china.jpg", "flower.jpg")]  # bundled; decoded without PIL
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(root, "photos"), exist_ok=True)
  for i in range(count):
    photo = photos[i % len(photos)]
    y, x = rng.integers(0, photo.shape[0] - 350), rng.integers(0, photo.shape[1] - 400)
    crop = photo[y:y + 350, x:x + 400]
    with open(os.path.join(root, "photos", f"{i}.jpg"), "wb") as f:
      f.write(tf.io.encode_jpeg(crop, quality=90).numpy())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=64)
  parser.add_argument("--batches", type=int, default=30)
  parser.add_argument("--batch_size", type=int, default=32)
  args = parser.parse_args()

  from vicreg_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from vicreg_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  cores = os.cpu_count()
  print(f"{'threads':>8} {'pairs/s':>9} {'pairs/s/core':>13}   (224 px, 2 views, {cores} cores)")
  with tempfile.TemporaryDirectory() as root:
    write_jpegs(root, args.images)
    for threads in sorted({1, cores}):
      c = config_lib.base_config()
      c.data.source, c.data.path, c.data.threads = "folder", root, threads
      c.data.shuffle_buffer = args.images
      c.batch_size = args.batch_size
      ds, _ = pipeline.build_dataset(c, start_step=0, process_index=0, process_count=1)
      it = ds.as_numpy_iterator()
      next(it)  # warm-up
      start = time.perf_counter()
      for _ in range(args.batches):
        next(it)
      rate = args.batches * args.batch_size / (time.perf_counter() - start)
      print(f"{threads:>8} {rate:>9.1f} {rate / threads:>13.1f}")
      del it, ds  # stop prefetching before the temporary folder goes away


if __name__ == "__main__":
  main()
