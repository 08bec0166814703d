"""Exclusive use of a workdir: a lock file so that two runs never write the same checkpoints.

Process 0 of a run holds ``workdir/run.lock`` (host name and PID) while it trains. A second
run pointed at the same workdir refuses to start; a lock left behind by a process that no
longer exists on this host (crash, SIGKILL) is taken over with a warning. ``check_writable``
tells, before anything is created, whether a run could write there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import tempfile
from typing import Iterator

from vicreg_jax import signals

LOCK_FILE = "run.lock"
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # gs://, s3://, hdfs://, ...


class WorkdirBusyError(RuntimeError):
  """Another live run holds the workdir."""


def require_local(path: str, flag: str = "--workdir") -> None:
  """Raises ValueError naming ``flag`` when ``path`` is a URL (``gs://``, ``s3://``, ...).

  Workdirs are read and written with local file operations: a bucket URL would otherwise
  become a local folder named ``gs:`` on one host, where the other hosts and a later resume
  on another machine would not find the checkpoints.
  """
  if URL_SCHEME.match(str(path)):
    raise ValueError(
        f"{flag} {path}: cloud-storage URLs are not supported as {flag} yet (the run would "
        "write to a local folder named after the URL on one host). Use a directory on a "
        "filesystem every host mounts (NFS, Filestore, Lustre, a gcsfuse/mountpoint-s3 "
        "mount) and copy the results to the bucket afterwards.")


def check_writable(path: str, flag: str = "--workdir") -> None:
  """Raises PermissionError naming ``flag`` unless ``path`` can be created and written
  (ValueError for a URL, :func:`require_local`).

  Creates nothing: it probes (with a temporary file, removed at once) ``path`` if it exists,
  else its deepest existing ancestor, in which the missing folders would be created.
  """
  require_local(path, flag)
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  reason = "" if os.path.isdir(existing) else f"{existing} is not a directory"
  if not reason:
    try:
      with tempfile.TemporaryFile(dir=existing):
        pass
    except OSError as err:
      reason = f"{existing}: {err.strerror}"
  if reason:
    raise PermissionError(f"{flag} {path} is not writable ({reason}); choose a directory you "
                          "can write to.")


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
  def release():
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)

  try:
    with signals.on_abort(release):  # a signal that exits at once still frees the workdir
      yield
  finally:
    release()
