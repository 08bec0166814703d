"""Paths that are local files or objects in a bucket (``gs://``, ``s3://``): one set of helpers.

Every file the program reads or writes goes through these functions. A local path behaves
exactly as with ``os``/``open`` (absolute paths, atomic replace of rewritten files). A URL is
never passed through ``os.path`` (``os.path.abspath("gs://b/run")`` would become a local
folder ``.../gs:/b/run``); it is read and written with ``fsspec`` (``gcsfs`` for ``gs://``,
``s3fs`` for ``s3://``), the same backends ``etils.epath`` (used by Orbax) picks for these
schemes. Object stores have no folders (a "directory" is a key prefix) and no append: callers
that append rewrite the whole object (:class:`TextAppender`).
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import IO

URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# scheme -> (fsspec implementation package, pip extra of this project).
SUPPORTED_SCHEMES = {"gs": ("gcsfs", "gcs"), "s3": ("s3fs", "s3")}


def scheme(path: str) -> str | None:
  """``"gs"``/``"s3"``/... for a URL, None for a local path."""
  match = URL.match(os.fspath(path))
  return match.group(1).lower() if match else None


def is_url(path: str) -> bool:
  """Whether ``path`` is a URL (``gs://``, ``s3://``, ...) rather than a local path."""
  return scheme(path) is not None


def check_supported(path: str, flag: str = "--workdir") -> None:
  """Raises ValueError naming ``flag`` for a URL whose scheme is not ``gs://`` or ``s3://``."""
  s = scheme(path)
  if s is not None and s not in SUPPORTED_SCHEMES:
    raise ValueError(f"{flag} {path}: unsupported URL scheme {s}://; use a local path, "
                     "gs://bucket/... or s3://bucket/....")


def _filesystem(path: str):
  """The fsspec filesystem of a URL; ImportError naming the pip extra if it is missing."""
  s = scheme(path)
  check_supported(path, "path")
  package, extra = SUPPORTED_SCHEMES[s]
  import fsspec  # pylint: disable=g-import-not-at-top
  try:
    return fsspec.filesystem(s)
  except ImportError as err:
    raise ImportError(f"{path}: reading and writing {s}:// needs {package}; install it with "
                      f"pip install 'vicreg_jax[{extra}]'.") from err


def bucket(url: str) -> str:
  """The bucket of a URL, with its scheme: ``bucket("gs://b/run/x")`` is ``"gs://b"``."""
  prefix, _, rest = url.partition("://")
  return f"{prefix}://{rest.split('/', 1)[0]}"


def absolute(path: str) -> str:
  """A local path made absolute; a URL as given (without a trailing slash)."""
  path = os.fspath(path)
  return path.rstrip("/") if is_url(path) else os.path.abspath(path)


def join(path: str, *parts: str) -> str:
  """``os.path.join`` for local paths, ``/``-joining for URLs."""
  return posixpath.join(path, *parts) if is_url(path) else os.path.join(path, *parts)


def dirname(path: str) -> str:
  """The parent of ``path`` (a URL's parent stays a URL)."""
  return posixpath.dirname(path.rstrip("/")) if is_url(path) else os.path.dirname(path)


def basename(path: str) -> str:
  """The last component of ``path``."""
  return posixpath.basename(path.rstrip("/")) if is_url(path) else os.path.basename(path)


def exists(path: str) -> bool:
  """Whether a file, folder or (for a URL) object or key prefix exists at ``path``."""
  return _filesystem(path).exists(path) if is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  """Whether ``path`` is a folder (for a URL: a key prefix with objects under it)."""
  return _filesystem(path).isdir(path) if is_url(path) else os.path.isdir(path)


def isfile(path: str) -> bool:
  """Whether ``path`` is a file (for a URL: an object)."""
  return _filesystem(path).isfile(path) if is_url(path) else os.path.isfile(path)


def listdir(path: str) -> list[str]:
  """The names (not paths) of the entries of folder ``path``, like ``os.listdir``."""
  if not is_url(path):
    return os.listdir(path)
  own = path.split("://", 1)[1].rstrip("/")
  return [posixpath.basename(p.rstrip("/")) for p in _filesystem(path).ls(path, detail=False)
          if p.rstrip("/") != own]


def makedirs(path: str) -> None:
  """Creates folder ``path`` and its parents if missing (nothing to do for a URL: object
  stores create key prefixes with the first object under them)."""
  if not is_url(path):
    os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
  """Deletes file (object) ``path``; FileNotFoundError if it does not exist."""
  if is_url(path):
    fs = _filesystem(path)
    if not fs.exists(path):
      raise FileNotFoundError(path)
    fs.rm_file(path)
  else:
    os.remove(path)


def move(source: str, destination: str) -> None:
  """Renames a file or folder (``os.replace`` locally; copy then delete in a bucket)."""
  if is_url(source):
    _filesystem(source).mv(source, destination, recursive=True)
  else:
    os.replace(source, destination)


def open_file(path: str, mode: str = "r") -> IO:
  """Opens ``path`` like ``open`` (text modes in UTF-8); ``"a"`` is local only."""
  text = "b" not in mode
  if is_url(path):
    if "a" in mode:
      raise ValueError(f"{path}: objects in a bucket cannot be appended to; use TextAppender.")
    return _filesystem(path).open(path, mode, **({"encoding": "utf-8"} if text else {}))
  return open(path, mode, **({"encoding": "utf-8"} if text else {}))  # pylint: disable=unspecified-encoding


def read_text(path: str) -> str:
  with open_file(path) as f:
    return f.read()


def read_bytes(path: str) -> bytes:
  with open_file(path, "rb") as f:
    return f.read()


def write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path``, whole: a reader never sees a partial file (locally via a
  ``.tmp`` file and ``os.replace``; an object upload is atomic by itself)."""
  write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically (see :func:`write_text`)."""
  if is_url(path):
    _filesystem(path).pipe_file(path, data)
    return
  with open(path + ".tmp", "wb") as f:
    f.write(data)
  os.replace(path + ".tmp", path)


def create_exclusive(path: str, text: str) -> bool:
  """Creates ``path`` holding ``text`` only if nothing exists there; False if it did.

  Local: ``O_CREAT | O_EXCL``. Bucket: a conditional upload that the store refuses if the
  object exists (GCS ``ifGenerationMatch=0``, S3 ``If-None-Match: *``), so of two racing
  creators exactly one succeeds.
  """
  if is_url(path):
    try:
      _filesystem(path).pipe_file(path, text.encode("utf-8"), mode="create")
    except FileExistsError:
      return False
    return True
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
  except FileExistsError:
    return False
  with os.fdopen(fd, "w", encoding="utf-8") as f:
    f.write(text)
  return True


def upload(local_path: str, url: str) -> None:
  """Copies local file ``local_path`` to ``url`` (replacing it)."""
  _filesystem(url).put_file(local_path, url)


class TextAppender:
  """A text file appended to line by line, also in a bucket (where each :meth:`flush`
  rewrites the whole object: metrics files are small, one line per logged step)."""

  def __init__(self, path: str):
    self._path = path
    if is_url(path):
      self._file = None
      self._text = read_text(path) if exists(path) else ""
    else:
      self._file = open(path, "a", encoding="utf-8")

  def write(self, text: str) -> None:
    if self._file is not None:
      self._file.write(text)
    else:
      self._text += text

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()
    else:
      write_text(self._path, self._text)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    else:
      self.flush()



def append_text(path: str, text: str) -> None:
  """Appends ``text`` to ``path`` (created if missing); in a bucket, rewrites the object."""
  if is_url(path):
    write_text(path, (read_text(path) if exists(path) else "") + text)
    return
  with open(path, "a", encoding="utf-8") as f:
    f.write(text)
