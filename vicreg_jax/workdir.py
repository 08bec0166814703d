"""Exclusive use of a workdir: a lock so that two runs never write the same checkpoints.

Process 0 of a run holds ``workdir/run.lock`` (host name and PID) while it trains. A second
run pointed at the same workdir refuses to start; a lock left behind by a process that no
longer exists on this host (crash, SIGKILL) is taken over with a warning. In a bucket
(``gs://``, ``s3://``) the lock is an object created only if absent (a conditional upload the
store refuses when the object exists), so of two runs started at once exactly one proceeds; a
lock left by a killed process on another host cannot be checked, and the error names the
object to delete. ``check_writable`` tells, before anything is created, whether a run could
write there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
from typing import Iterator

from vicreg_jax import paths
from vicreg_jax import signals

LOCK_FILE = "run.lock"


class WorkdirBusyError(RuntimeError):
  """Another live run holds the workdir."""


def check_writable(path: str, flag: str = "--workdir") -> None:
  """Raises PermissionError naming ``flag`` unless ``path`` can be created and written
  (ValueError for an unsupported URL scheme; FileNotFoundError for a missing bucket).

  Creates nothing: it probes (with a temporary file, removed at once) ``path`` if it exists,
  else its deepest existing ancestor, in which the missing folders would be created. For a
  bucket URL it checks that the bucket exists (write permission shows at the first write).
  """
  paths.check_supported(path, flag)
  if paths.is_url(path):
    bucket = paths.bucket(path)
    if not paths.exists(bucket):
      raise FileNotFoundError(f"{flag} {path}: bucket {bucket} does not exist (or cannot be "
                              "listed with these credentials); create it first.")
    return
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
    return json.loads(paths.read_text(path))
  except (OSError, ValueError):
    return {}


def _try_create(path: str) -> bool:
  return paths.create_exclusive(
      path, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))


def _delete_hint(path: str) -> str:
  command = {"gs": "gcloud storage rm", "s3": "aws s3 rm"}.get(paths.scheme(path))
  return f" ({command} {path})" if command else ""


@contextlib.contextmanager
def exclusive(workdir: str, enabled: bool = True) -> Iterator[None]:
  """Holds the workdir lock for the duration of the ``with`` block (no-op if not enabled).

  Raises:
    WorkdirBusyError: another live run holds the lock; names its host and PID.
  """
  if not enabled:
    yield
    return
  path = paths.join(workdir, LOCK_FILE)
  if not _try_create(path):
    owner = _read_owner(path)
    same_host = owner.get("host") == socket.gethostname()
    if same_host and isinstance(owner.get("pid"), int) and not _alive(owner["pid"]):
      logging.warning("Taking over the stale lock of PID %d (no longer running) in %s.",
                      owner["pid"], workdir)
      paths.remove(path)
    if not _try_create(path):
      raise WorkdirBusyError(
          f"Another run (host {owner.get('host', '?')}, PID {owner.get('pid', '?')}) is using "
          f"--workdir {workdir}. Wait for it to finish, stop it, or choose another workdir. "
          f"If no such run exists (a killed run cannot be checked from another host or in a "
          f"bucket), delete {path}{_delete_hint(path)}.")
  def release():
    with contextlib.suppress(FileNotFoundError):
      paths.remove(path)

  try:
    with signals.on_abort(release):  # a signal that exits at once still frees the workdir
      yield
  finally:
    release()
