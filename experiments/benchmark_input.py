"""Input-pipeline throughput: host decode + crop per CPU core, device augmentation per batch.

Usage:
  python experiments/benchmark_input.py                      # host stage + device stage
  python experiments/benchmark_input.py --device_only        # no TensorFlow needed (GPU box)
  python experiments/benchmark_input.py --device_batch 64 --repeats 3   # quick CPU run

Host stage: scikit-learn's two bundled photos are cut into random ImageNet-sized crops
(``--jpeg_width`` x ``--jpeg_height``, JPEG quality 90) written to a temporary class folder,
then ``tf_input.build_dataset`` (decode_and_crop_jpeg of two random-resized-crop windows,
bicubic resize to 224) is timed with 1 and with all CPU threads: view pairs/s and pairs/s
per core. If torchvision is importable, the same two crops + the full colour recipe with PIL
(the official VICReg transforms) is timed on the same files for comparison.

Device stage: ``augment.augment_pair`` (flip, jitter, grayscale, blur, solarize, normalise;
official recipe) on ``--device_batch`` uint8 view pairs at 224 px on the default JAX backend,
and the Gaussian blur alone as the dense matmuls we use vs a separable depthwise convolution.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from timing import median_ms
from vicreg_jax import config as config_lib
from vicreg_jax.data import augment

SAMPLE_PHOTOS = ("china.jpg", "flower.jpg")  # bundled with scikit-learn
JPEG_QUALITY = 90


def write_jpegs(root: str, count: int, width: int, height: int) -> list[str]:
  """``count`` random crops of the bundled photos as JPEGs in ``root/photos/``."""
  import sklearn.datasets  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
  photos = [tf.io.decode_jpeg(tf.io.read_file(os.path.join(folder, name))).numpy()
            for name in SAMPLE_PHOTOS]
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(root, "photos"), exist_ok=True)
  paths = []
  for i in range(count):
    photo = photos[i % len(photos)]
    y, x = rng.integers(0, photo.shape[0] - height), rng.integers(0, photo.shape[1] - width)
    paths.append(os.path.join(root, "photos", f"{i}.jpg"))
    with open(paths[-1], "wb") as f:
      f.write(tf.io.encode_jpeg(photo[y:y + height, x:x + width], quality=JPEG_QUALITY).numpy())
  return paths


def host_pairs_per_s(root: str, threads: int, args) -> float:
  """View pairs/s of the tf.data host stage with a private pool of ``threads``."""
  from vicreg_jax.data import tf_input  # pylint: disable=g-import-not-at-top
  c = config_lib.base_config()
  c.data.source, c.data.path, c.data.threads = "folder", root, threads
  c.batch_size = args.host_batch
  ds, _ = tf_input.build_dataset(c, start_step=0, process_index=0, process_count=1)
  it = ds.as_numpy_iterator()
  next(it)  # warm-up: graph tracing, thread pools
  start = time.perf_counter()
  for _ in range(args.host_batches):
    next(it)
  return args.host_batches * args.host_batch / (time.perf_counter() - start)


def torchvision_pairs_per_s(paths: list[str], args) -> float | None:
  """The official torchvision/PIL two-view recipe on the same files, in this process."""
  try:
    import torchvision.transforms as T  # pylint: disable=g-import-not-at-top
    from PIL import Image, ImageFilter, ImageOps  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  recipe = config_lib.augment_recipe("official")
  rng = np.random.default_rng(0)

  def blur_solarize(view):
    def apply(img):
      if rng.uniform() < view.blur_prob:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(*view.blur_sigma)))
      if rng.uniform() < view.solarize_prob:
        img = ImageOps.solarize(img)
      return img
    return apply

  def transform(view):
    return T.Compose([
        T.RandomResizedCrop(recipe.image_size, scale=recipe.crop_scale,
                            interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(view.flip_prob),
        T.RandomApply([T.ColorJitter(view.brightness, view.contrast, view.saturation,
                                     view.hue)], p=view.jitter_prob),
        T.RandomGrayscale(view.grayscale_prob), blur_solarize(view), T.ToTensor(),
        T.Normalize(recipe.mean, recipe.std)])

  views = [transform(recipe.view_a), transform(recipe.view_b)]
  count = args.host_batches * args.host_batch
  start = time.perf_counter()
  for i in range(count):
    img = Image.open(paths[i % len(paths)]).convert("RGB")
    for view in views:
      view(img)
  return count / (time.perf_counter() - start)


def blur_depthwise(img: jax.Array, sigma: jax.Array, passes: int, radius: int) -> jax.Array:
  """The same blur kernel as two depthwise convs of ``2 * radius + 1`` taps (zero padding, so
  edges differ), for timing: [h, w, c] -> [h, w, c]."""
  k = augment.blur_matrix(2 * radius + 1, sigma, passes)[radius]  # an interior row
  c = img.shape[-1]
  conv = lambda x, kernel: jax.lax.conv_general_dilated(
      x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=c)
  out = conv(img[None], jnp.tile(k[:, None, None, None], (1, 1, 1, c)))
  return conv(out, jnp.tile(k[None, :, None, None], (1, 1, 1, c)))[0]


def device_rows(args) -> list[tuple[str, float]]:
  """(name, ms per batch) of the on-device augmentation and of the two blur formulations."""
  cfg = config_lib.augment_recipe("official", image_size=args.size)
  rng = np.random.default_rng(0)
  shape = (args.device_batch, args.size, args.size, 3)
  view_a, view_b = (jnp.asarray(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(2))
  key = jax.random.key(0)
  pair = jax.jit(lambda k, a, b: augment.augment_pair(k, a, b, cfg))
  passes = cfg.view_a.blur_passes
  # Support of the widest kernel (largest sigma): passes boxes of floor(radius) + 1 taps a side.
  box = float(augment.box_radius(jnp.float32(max(cfg.view_a.blur_sigma)), passes))
  radius = passes * (int(box) + 1)
  images = augment.to_float(view_a)
  sigmas = jnp.asarray(rng.uniform(*cfg.view_a.blur_sigma, args.device_batch), jnp.float32)
  rows = []
  for name, fn in (("augment_pair (2 views)", lambda: pair(key, view_a, view_b)),
                   ("blur: dense matmuls", jax.jit(jax.vmap(
                       lambda x, s: augment.gaussian_blur(x, s, passes)))),
                   ("blur: depthwise conv", jax.jit(jax.vmap(
                       lambda x, s: blur_depthwise(x, s, passes, radius))))):
    call = fn if name.startswith("augment") else (lambda f=fn: f(images, sigmas))
    jax.block_until_ready(call())  # compile
    rows.append((name, median_ms(call, args.repeats)))
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--device_only", action="store_true",
                      help="only the device stage (does not import TensorFlow)")
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--device_batch", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--images", type=int, default=64)
  parser.add_argument("--jpeg_width", type=int, default=400)
  parser.add_argument("--jpeg_height", type=int, default=350)
  parser.add_argument("--host_batch", type=int, default=32)
  parser.add_argument("--host_batches", type=int, default=20)
  args = parser.parse_args()

  cores = os.cpu_count()
  if not args.device_only:
    print(f"Host stage: decode + 2 crops at {args.size} px of {args.jpeg_width}x"
          f"{args.jpeg_height} JPEGs ({cores} CPU cores visible)")
    print(f"{'pipeline':>28} {'threads':>8} {'pairs/s':>9} {'pairs/s/core':>13}")
    with tempfile.TemporaryDirectory() as root:
      paths = write_jpegs(root, args.images, args.jpeg_width, args.jpeg_height)
      rates = {threads: host_pairs_per_s(root, threads, args) for threads in sorted({1, cores})}
      host_rate_1 = rates[1]
      for threads, rate in rates.items():
        print(f"{'tf.data (crops only)':>28} {threads:>8} {rate:>9.1f} {rate / threads:>13.1f}")
      tv_rate = torchvision_pairs_per_s(paths, args)
      if tv_rate is None:
        print(f"{'torchvision + PIL':>28}   (torchvision not importable: skipped)")
      else:
        print(f"{'torchvision + PIL (full)':>28} {1:>8} {tv_rate:>9.1f} {tv_rate:>13.1f}")
        print(f"tf.data crops / torchvision full recipe, 1 core: "
              f"{host_rate_1 / tv_rate:.2f}x (colour ops run on the device here)")

  backend = jax.devices()[0].device_kind
  print(f"\nDevice stage on {backend}: batch of {args.device_batch} at {args.size} px, "
        f"median of {args.repeats}")
  print(f"{'op':>28} {'ms/batch':>9} {'items/s':>9}   (items: pairs, or images for blur)")
  for name, ms in device_rows(args):
    print(f"{name:>28} {ms:>9.1f} {1e3 * args.device_batch / ms:>9.0f}")


if __name__ == "__main__":
  main()
