"""Command line: ``python -m vicreg_jax.main --config configs/<recipe>.py --workdir <dir>``.

Kept short on purpose; everything it calls is a library function (``train_and_evaluate``).
Override any knob from the command line, e.g. ``--config.optim.base_lr=0.3``. Rerunning the
same command resumes from the latest checkpoint in the workdir.
"""

from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

from vicreg_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the exported backbone.")
config_flags.DEFINE_config_file(
    "config", None, "Recipe file, optionally with a variant: configs/demo.py or configs/demo.py:tiny.",
    lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])

def check_workdir_writable(workdir: str) -> None:
  """Raises PermissionError naming the workdir if it cannot be created or written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_test")
    with open(probe, "w", encoding="utf-8") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as err:
    raise PermissionError(f"--workdir {workdir} is not writable ({err.strerror}); choose a "
                          "directory you can write to.") from err


def run() -> None:
  """Pretrains (resuming if it can), then compares with a random encoder if asked."""
  # Imported here so that --help and flag errors do not pay for initialising JAX.
  import jax  # pylint: disable=g-import-not-at-top
  from vicreg_jax import train  # pylint: disable=g-import-not-at-top
  from vicreg_jax.evaluate import report  # pylint: disable=g-import-not-at-top
  check_workdir_writable(FLAGS.workdir)
  result = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  if FLAGS.config.eval.compare_random:
    # The mesh training ran on: its state is replicated there.
    mesh = jax.tree.leaves(result.state)[0].sharding.mesh
    report.compare_with_random_init(FLAGS.config, FLAGS.workdir, result, mesh)


if __name__ == "__main__":
  app.run(cli.user_errors_main(run))
