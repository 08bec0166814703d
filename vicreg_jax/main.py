"""Command line: ``python -m vicreg_jax.main --config configs/<recipe>.py --workdir <dir>``.

Kept short on purpose; everything it calls is a library function (``train_and_evaluate``).
Override any knob from the command line, e.g. ``--config.optim.base_lr=0.3``. Rerunning the
same command resumes from the latest checkpoint in the workdir.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from vicreg_jax import workdir as workdir_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the exported backbone.")
config_flags.DEFINE_config_file(
    "config", None, "Recipe file, optionally with a variant: configs/demo.py or configs/demo.py:tiny.",
    lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])

# Errors that carry a message for the user (what is wrong and what to do); anything else is a
# bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, PermissionError,
               workdir_lib.WorkdirBusyError)


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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Imported here so that --help and flag errors do not pay for initialising JAX.
  from vicreg_jax import report, train  # pylint: disable=g-import-not-at-top
  # Orbax logs every checkpoint phase at INFO through absl; keep the console to our lines.
  absl_logging.set_verbosity(absl_logging.WARNING)
  try:
    check_workdir_writable(FLAGS.workdir)
    result = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    if FLAGS.config.eval.compare_random:
      report.compare_with_random_init(FLAGS.config, FLAGS.workdir, result)
  except USER_ERRORS as err:
    sys.exit(f"error: {err}")


if __name__ == "__main__":
  app.run(main)
