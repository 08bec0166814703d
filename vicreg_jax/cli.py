"""What the command lines share: the user errors they report and the absl ``main`` around them.

Errors that carry a message for the user (what is wrong and what to do) end the program with
``error: <message>`` and exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable

from absl import app
from absl import logging as absl_logging

from vicreg_jax import workdir as workdir_lib

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, FloatingPointError,
               PermissionError, ImportError, workdir_lib.WorkdirBusyError)


def user_errors_main(body: Callable[[], None]) -> Callable[[list[str]], None]:
  """An absl ``main(argv)`` that runs ``body()``: it refuses positional arguments, keeps
  Orbax's INFO logs (every checkpoint phase, through absl) off the console, and turns
  :data:`USER_ERRORS` into ``error: <message>`` with exit code 1."""
  def main(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
      body()
    except USER_ERRORS as err:
      sys.exit(f"error: {err}")
  return main
