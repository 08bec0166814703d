"""Exclusive use of a workdir: a lock file so that two runs never write the same checkpoints.

Process 0 of a run holds ``workdir/run.lock`` (host name and PID) while it trains. A second
run pointed at the same workdir refuses to start; a lock left behind by a process that no
longer exists on this host (crash, SIGKILL) is taken over with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from typing import Iterator

LOCK_FILE = "run.lock"


class WorkdirBusyError(RuntimeError):
  """Another live run holds the workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # exists, owned by someone else
  return True


def _read_owner(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _try_create(path: str) -> bool:
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
  except FileExistsError:
    return False
  with os.fdopen(fd, "w", encoding="utf-8") as f:
    json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)
  return True


@contextlib.contextmanager
def exclusive(workdir: str, enabled: bool = True) -> Iterator[None]:
  """Holds the workdir lock for the duration of the ``with`` block (no-op if not enabled).

  Raises:
    WorkdirBusyError: another live run holds the lock; names its host and PID.
  """
  if not enabled:
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  if not _try_create(path):
    owner = _read_owner(path)
    same_host = owner.get("host") == socket.gethostname()
    if same_host and isinstance(owner.get("pid"), int) and not _alive(owner["pid"]):
      logging.warning("Taking over the stale lock of PID %d (no longer running) in %s.",
                      owner["pid"], workdir)
      os.remove(path)
    if not _try_create(path):
      raise WorkdirBusyError(
          f"Another run (host {owner.get('host', '?')}, PID {owner.get('pid', '?')}) is using "
          f"--workdir {workdir}. Wait for it to finish, stop it, or choose another workdir. "
          f"If no such run exists, delete {path}.")
  try:
    yield
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)
