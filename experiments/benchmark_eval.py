"""Times the evaluation steps (linear probe, fine-tuning, scoring) and prints a table.

Usage:
  python experiments/benchmark_eval.py                                    # ResNet-50, 224 px
  python experiments/benchmark_eval.py --config configs/demo.py --batch_per_device 32

The steps are the ones ``python -m vicreg_jax.evaluate`` runs (``evaluate.classifier``): the
frozen-encoder probe step (encoder in eval mode, head SGD), the fine-tuning step (encoder in
train mode, both trained) and the scoring step, on uint8 labelled batches already on the
devices (the input pipeline is excluded). Reports compile seconds, median ms per step and
images per second.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from timing import median_ms
from vicreg_jax import models, optim, parallel
from vicreg_jax.config import load_config_file
from vicreg_jax.evaluate import classifier, run

NUM_CLASSES = 1000


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/imagenet_resnet50.py:ep100")
  parser.add_argument("--batch_per_device", type=int, default=256)
  parser.add_argument("--dtype", default=None, help="override config.model.dtype")
  parser.add_argument("--steps", type=int, default=20)
  args = parser.parse_args()

  config = load_config_file(args.config)
  if args.dtype is not None:
    config.model.dtype = args.dtype
  mesh = parallel.make_mesh()
  batch_size = args.batch_per_device * mesh.devices.size
  size = config.eval.transform.image_size
  backbone = models.create_backbone(config.model)
  variables = run.random_encoder(backbone, 0)
  rng = np.random.default_rng(0)
  batch = parallel.host_to_global(mesh, {
      "image": rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
      "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32),
      "weight": np.ones(batch_size, np.float32)})
  dim = classifier.representation_width(backbone, variables)
  head = classifier.init_head(jax.random.key(0), dim, NUM_CLASSES, 0.01)

  print(f"{config.model.arch} {config.model.dtype} {size}px, batch {batch_size} on "
        f"{mesh.devices.size} x {jax.devices()[0].device_kind}")
  print(f"{'step':>10} {'compile s':>10} {'ms/step':>9} {'images/s':>10}")
  for name, backbone_lr, finetune in (("probe", None, False), ("finetune", 0.01, True)):
    tx = optim.classifier_sgd(0.1, backbone_lr, momentum=0.9, weight_decay=0.0,
                                   epochs=10, steps_per_epoch=100)
    state = classifier.create_state(variables, head, tx, mesh)
    train_step, eval_step = classifier.make_steps(
        backbone, tx, finetune=finetune, mean=config.augment.mean, std=config.augment.std,
        mesh=mesh)
    start = time.perf_counter()
    state, _ = jax.block_until_ready(train_step(state, batch))
    compile_s = time.perf_counter() - start
    holder = [state]

    def one_step():
      holder[0], metrics = train_step(holder[0], batch)
      return metrics

    ms = median_ms(one_step, args.steps)
    print(f"{name:>10} {compile_s:>10.1f} {ms:>9.1f} {batch_size / ms * 1e3:>10.0f}")
    if name == "probe":
      start = time.perf_counter()
      jax.block_until_ready(eval_step(holder[0], batch))
      compile_s = time.perf_counter() - start
      ms = median_ms(lambda: eval_step(holder[0], batch), args.steps)
      print(f"{'score':>10} {compile_s:>10.1f} {ms:>9.1f} {batch_size / ms * 1e3:>10.0f}")


if __name__ == "__main__":
  main()
