"""``python -m vicreg_jax.evaluate --config <recipe> --workdir W --protocols knn,linear,finetune``.

Evaluates the encoder saved in a pretraining workdir (see :mod:`vicreg_jax.evaluate.run`);
results go to ``W/eval/<protocol>.json``. Override any knob as in training, e.g.
``--config.eval.linear.epochs=10`` or ``--config.eval.finetune.subset_file=1percent.txt``.
"""

from __future__ import annotations

import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Pretraining workdir (or one made by export "
                    "--import_weights); results are written to <workdir>/eval/.")
config_flags.DEFINE_config_file(
    "config", None, "Recipe file (data, augment and eval sections are used; the "
    "architecture comes from the checkpoint).", lock_config=True)
flags.DEFINE_list("protocols", ["knn", "linear"], "Any of knn, linear, finetune.")
flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: latest).")
flags.DEFINE_bool("random_init", False, "Evaluate a randomly initialised encoder of the same "
                  "architecture instead (baseline); results are named <protocol>_random.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from vicreg_jax.evaluate import run  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.WARNING)
  try:
    run.evaluate_workdir(FLAGS.config, FLAGS.workdir, FLAGS.protocols, step=FLAGS.step,
                         random_init=FLAGS.random_init)
  except (ValueError, FileNotFoundError, FloatingPointError) as err:
    sys.exit(f"error: {err}")


if __name__ == "__main__":
  app.run(main)
