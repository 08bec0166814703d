"""``python -m vicreg_jax.evaluate --config <recipe> --workdir W --protocols knn,linear,finetune``.

Evaluates the encoder saved in a pretraining workdir (see :mod:`vicreg_jax.evaluate.run`);
results go to ``W/eval/<protocol>.json``, or under ``--output_dir`` (a workdir that is not
yours: the workdir is only read). Override any knob as in training, e.g.
``--config.eval.linear.epochs=10`` or ``--config.eval.finetune.subset_file=1percent.txt``.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from vicreg_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Pretraining workdir (or one made by export "
                    "--import_weights); only read.")
flags.DEFINE_string("output_dir", None, "Folder for the results (<protocol>.json, .jsonl, "
                    "_state/, finetune_export/); default <workdir>/eval.")
config_flags.DEFINE_config_file(
    "config", None, "Recipe file (data, augment and eval sections are used; the "
    "architecture comes from the checkpoint).", lock_config=True)
flags.DEFINE_list("protocols", ["knn", "linear"], "Any of knn, linear, finetune.")
flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: latest).")
flags.DEFINE_bool("random_init", False, "Evaluate a randomly initialised encoder of the same "
                  "architecture instead (baseline); results are named <protocol>_random.")
flags.mark_flags_as_required(["config", "workdir"])


def run() -> None:
  """Joins the distributed run, builds the program's mesh and evaluates the workdir."""
  # Imported here so that --help and flag errors do not pay for initialising JAX.
  from vicreg_jax import parallel  # pylint: disable=g-import-not-at-top
  from vicreg_jax.evaluate import run as run_lib  # pylint: disable=g-import-not-at-top
  cli.enable_compilation_cache(FLAGS.config.compilation_cache_dir)
  parallel.initialize_distributed(**FLAGS.config.distributed)
  run_lib.evaluate_workdir(FLAGS.config, FLAGS.workdir, FLAGS.protocols,
                           mesh=parallel.make_mesh(), step=FLAGS.step,
                           random_init=FLAGS.random_init, output_dir=FLAGS.output_dir)


if __name__ == "__main__":
  cli.run(run)
