"""``python -m vicreg_jax.export --workdir W [--step N] [--branch a] [--out DIR]``, and import.

Exports a workdir's backbone (:mod:`vicreg_jax.export`), or with ``--import_weights
resnet50.pth --arch resnet50`` converts released weights into step 0 of ``--workdir`` (or the
export files in ``--out``). The architecture of ``--import_weights`` is read from the
``backbone.json`` beside it when it lies in an export folder of this package; ``--arch``,
``--width_multiplier``, ``--base_width`` and ``--small_stem`` given explicitly win.
"""

from __future__ import annotations

import json
import os

import ml_collections
from absl import flags

from vicreg_jax import cli, models, parallel, paths
from vicreg_jax import config as config_lib
from vicreg_jax import export

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Pretraining workdir to export from (with "
                    "--import_weights: the workdir to import into).")
flags.DEFINE_integer("step", None, "Checkpoint step to export (default: latest).")
flags.DEFINE_string("branch", "a", "Branch whose backbone to export ('a' or 'b').")
flags.DEFINE_string("out", None, "Output folder (default: <workdir>/export).")
flags.DEFINE_string("import_weights", None, "A .pth/.safetensors ResNet to import instead.")
flags.DEFINE_string("arch", "resnet50", "Architecture of --import_weights (resnet18 ... "
                    "resnet200).")
flags.DEFINE_integer("width_multiplier", 1, "Width multiplier of --import_weights.")
flags.DEFINE_integer("base_width", config_lib.base_config().model.base_width,
                     "Stage-1 width (before the multiplier) of --import_weights.")
flags.DEFINE_bool("small_stem", False, "--import_weights has the small-image stem (3x3 "
                  "stride 1, no max-pool).")
ARCH_FLAGS = ("arch", "width_multiplier", "base_width", "small_stem")


def import_config(path: str) -> ml_collections.ConfigDict:
  """The config to import ``path`` with: ``base_config()`` with the backbone of the
  ``backbone.json`` beside ``path`` (an export folder), if any, and the explicit flags."""
  config = config_lib.base_config()
  meta_path = os.path.join(os.path.dirname(os.path.abspath(path)), "backbone.json")
  if os.path.isfile(meta_path):
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
    saved = ml_collections.ConfigDict(meta["model"])
    config.model.update(models.backbone_options(saved, meta["branch"]), dtype=saved.dtype)
  for name in ARCH_FLAGS:
    if FLAGS[name].present or not os.path.isfile(meta_path):
      config.model[name] = FLAGS[name].value
  return config


def run() -> None:
  """Exports or imports as the flags say; prints what it wrote."""
  if not FLAGS.workdir and not FLAGS.out:
    raise ValueError("pass --workdir (or --out for --import_weights).")
  if FLAGS.import_weights:
    config = import_config(FLAGS.import_weights)
    if not FLAGS.out:
      written = export.import_into_workdir(FLAGS.import_weights, config, FLAGS.workdir)
      print(f"Wrote step 0 of {written}; evaluate it with python -m vicreg_jax.evaluate "
            f"--config <recipe> --workdir {FLAGS.workdir}")
      return
    written = export.import_weights(FLAGS.import_weights, config.model, FLAGS.out)
  else:
    out_dir = FLAGS.out or paths.join(FLAGS.workdir, export.EXPORT_DIR)
    written = export.export_from_workdir(FLAGS.workdir, FLAGS.step, out_dir, FLAGS.branch,
                                         parallel.make_mesh())
  print(f"Wrote backbone.msgpack, backbone.safetensors and backbone.json to {written}")


if __name__ == "__main__":
  cli.run(run)
