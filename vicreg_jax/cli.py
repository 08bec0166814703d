"""The frame shared by the command-line programs: flag and user errors as one line, signals.

``run(main)`` replaces ``absl.app.run(main)``: stop signals go to
:mod:`vicreg_jax.signals`; a flag that cannot be parsed (unknown ``--config.*`` key, missing
recipe file, bad value) and any of ``USER_ERRORS`` raised by ``main`` print one line
``error: ...`` and exit with status 1 (2 for flag errors); ``--help`` exits 0. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Callable

from absl import app, flags
from absl import logging as absl_logging

from vicreg_jax import signals
from vicreg_jax import workdir as workdir_lib

# Errors that carry a message for the user (what is wrong and what to do).
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, FloatingPointError,
               PermissionError, NotADirectoryError, ImportError, workdir_lib.WorkdirBusyError)
HELP_FLAGS = ("--help", "-help", "--helpshort", "-?", "-h")
CONFIG_KEYS_DOC = ("every --config.* key is documented in vicreg_jax/config.py (README: "
                   "'Pretraining', 'Evaluate and export')")
FLAG_ERROR_STATUS = 2
# config.compilation_cache_dir = "auto" without $JAX_COMPILATION_CACHE_DIR.
DEFAULT_COMPILATION_CACHE = os.path.join("~", ".cache", "vicreg_jax", "xla")


def enable_compilation_cache(setting: str) -> str | None:
  """Turns on JAX's persistent compilation cache as ``config.compilation_cache_dir`` says;
  returns the folder used (None: off).

  ``"auto"``: ``$JAX_COMPILATION_CACHE_DIR`` when set, else ``~/.cache/vicreg_jax/xla``;
  ``""``: off; anything else: that folder. Programs that take longer than JAX's
  ``jax_persistent_cache_min_compile_time_secs`` (1 s by default) to compile are stored, so a
  resumed run, an evaluation or an export of the same shapes loads them instead.
  """
  if not setting:
    return None
  if setting == "auto":
    setting = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.expanduser(
        DEFAULT_COMPILATION_CACHE)
  import jax  # pylint: disable=g-import-not-at-top  (--help must not initialise JAX)
  jax.config.update("jax_compilation_cache_dir", setting)
  return setting


def flag_error_message(err: Exception, argv: list[str]) -> str:
  """One line for a flag that failed to parse (absl error, ``--config.*`` key or value)."""
  text = str(err)
  if isinstance(err, (KeyError, AttributeError)):  # ml_collections: unknown --config.* key
    key = re.search(r"[A-Za-z_]\w*", text.split("Did you mean")[0]).group(0)
    hint = re.search(r"Did you mean \W*\"?(\w+)", text)
    given = [a.split("=")[0] for a in argv
             if a.startswith("--config.") and key in a.split("=")[0].split(".")]
    return (f"{given[0] if given else '--config'}: unknown key {key!r}"
            + (f"; did you mean {hint.group(1)!r}?" if hint else ".")
            + f" ({CONFIG_KEYS_DOC})")
  if "Traceback" in text:  # the recipe's get_config raised: keep its last line
    text = text.strip().splitlines()[-1]
  return " ".join(text.split())


def _check_recipe(argv: list[str]) -> None:
  """Exits with one line if ``--config`` names a recipe file that does not exist.

  ``ml_collections`` reports a missing file only when the config is first used, as two
  chained tracebacks.
  """
  for i, arg in enumerate(argv):
    value = arg.split("=", 1)[1] if arg.startswith("--config=") else (
        argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
    if value is not None and not os.path.isfile(value.split(":")[0]):
      print(f"error: --config: no such recipe file {value.split(':')[0]!r} (from "
            f"{os.getcwd()}); pass one of configs/*.py, e.g. --config=configs/demo.py:tiny",
            file=sys.stderr)
      sys.exit(FLAG_ERROR_STATUS)


def parse_flags(argv: list[str]) -> list[str]:
  """``FLAGS(argv)`` with one-line errors; ``--help`` exits 0 (absl exits 1)."""
  _check_recipe(argv)
  try:
    return flags.FLAGS(argv)
  except SystemExit:
    if any(arg in HELP_FLAGS for arg in argv[1:]):
      print(f"\nConfig keys: {CONFIG_KEYS_DOC}.")
      sys.exit(0)
    raise
  except (flags.Error, KeyError, AttributeError, OSError, ValueError, TypeError) as err:
    print(f"error: {flag_error_message(err, argv)}", file=sys.stderr)
    sys.exit(FLAG_ERROR_STATUS)


def run(main: Callable[[], None]) -> None:
  """Runs ``main()`` like ``absl.app.run`` (see the module docstring).

  Positional arguments are refused, and Orbax's INFO logs (every checkpoint phase, through
  absl) are kept off the console.
  """
  signals.install()

  def guarded(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
      main()
    except USER_ERRORS as err:
      sys.exit(f"error: {err}")

  app.run(guarded, flags_parser=parse_flags)
