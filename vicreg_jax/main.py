"""Command line: ``python -m vicreg_jax.main --config configs/<recipe>.py --workdir <dir>``.

Kept short on purpose; everything it calls is a library function (``train_and_evaluate``).
Override any knob from the command line, e.g. ``--config.optim.base_lr=0.3``; every
``--config.*`` key is documented in ``vicreg_jax/config.py`` (README: "Pretraining").
Rerunning the same command resumes from the latest checkpoint in the workdir; rerunning a
finished run says so and changes nothing.

Stopping: the first SIGINT (Ctrl-C) or SIGTERM during training saves a checkpoint at the
next step boundary and exits with status 0 without evaluating or exporting (rerun to
resume); before the first step, after it, or a second signal: exits at once with status
128 + signal (130 for Ctrl-C, 143 for SIGTERM). Errors: one line, status 1 (2 for flags).
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from vicreg_jax import cli
from vicreg_jax import paths

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the exported backbone.")
config_flags.DEFINE_config_file(
    "config", None, "Recipe file, optionally with a variant: configs/demo.py or configs/demo.py:tiny.",
    lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main() -> None:
  """Pretrains (resuming if it can), then compares with a random encoder if asked."""
  # Imported here so that --help and flag errors do not pay for initialising JAX.
  from vicreg_jax import checkpoint, train  # pylint: disable=g-import-not-at-top
  from vicreg_jax.evaluate import report  # pylint: disable=g-import-not-at-top
  config, workdir = FLAGS.config, FLAGS.workdir
  cli.enable_compilation_cache(config.compilation_cache_dir)
  result = train.train_and_evaluate(config, workdir)
  if not result.finished:
    print(f"Stopped at step {result.step} of {result.total_steps}: no evaluation and no "
          "export; rerun the same command to resume.", flush=True)
    return
  if not config.eval.compare_random:
    return
  eval_file = paths.join(workdir, report.EVAL_FILE)
  if result.state is None and paths.exists(eval_file):
    print(f"The comparison with a random encoder is in {eval_file}.", flush=True)
    return
  if result.state is None:  # finished earlier, but its evaluation never completed
    variables, _, _ = checkpoint.restore_variables(workdir, result.step, result.mesh)
  else:
    variables = {"params": result.state.params, "batch_stats": result.state.batch_stats}
  report.compare_with_random_init(config, workdir, variables, result.mesh)


if __name__ == "__main__":
  cli.run(main)
